"""The export/runtime contract of every graph: one ComponentSpec per graph, built from the variant.

ONNX export names graph inputs/outputs and their dims from these specs, the engine builders derive
their optimisation profiles from them, and the runtime backends bind tensors by these names.
Symbolic dims are small expressions over the dims the caller knows ("B", "T", "H", "W", "S", ...):
``"T*(H//2)*(W//2)"`` is the DiT's token count, ``"h*8"`` a VAE pixel size. ``resolve_dims`` evaluates
them, so a shape is given by a handful of sizes.

The VAE graphs carry the causal cache explicitly (models/vae21.py ``CausalCache``): their slot
shapes depend on the module's structure, which the core does not import, so the exporter measures
them once and passes them in (they are stored in the engine manifest with the spec).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping, Sequence
from typing import Any

from .contracts import ComponentSpec, TensorSpec
from .errors import ConfigError
from .variants import Variant

# graph names (one graph each; a Wan2.2 A14B model has one "dit" graph per expert)
T5 = "t5"
DIT = "dit"
VAE_DECODER_FIRST = "vae_decoder_first"
VAE_DECODER_STEP = "vae_decoder_step"
VAE_ENCODER_FIRST = "vae_encoder_first"
VAE_ENCODER_STEP = "vae_encoder_step"
CLIP = "clip"
GRAPHS = (T5, DIT, VAE_DECODER_FIRST, VAE_DECODER_STEP, VAE_ENCODER_FIRST, VAE_ENCODER_STEP, CLIP)

Dims = tuple[int | str, ...]


def _f32(name: str, dims: Dims) -> TensorSpec:
    return TensorSpec(name=name, dims=dims, dtype="float32")


# ----------------------------------------------------------------------------- per component


def t5_spec(variant: Variant) -> ComponentSpec:
    """umT5 encoder: token ids and mask [B, S] (S = 512 at run time) -> hidden [B, S, dim]."""
    return ComponentSpec(
        name=T5,
        inputs=(
            TensorSpec(name="ids", dims=("B", "S"), dtype="int64"),
            TensorSpec(name="mask", dims=("B", "S"), dtype="int64"),
        ),
        outputs=(_f32("hidden", ("B", "S", variant.t5.dim)),),
    )


def dit_tokens(variant: Variant) -> str:
    """The DiT's token count as an expression of the latent dims T, H, W."""
    pt, ph, pw = variant.dit.patch_size
    return "*".join(f"({d}//{p})" if p != 1 else d for d, p in (("T", pt), ("H", ph), ("W", pw)))


def dit_spec(variant: Variant) -> ComponentSpec:
    """One DiT forward (one expert). RoPE comes in as real cos/sin tables (rope_cos_sin of the patch
    grid): no complex or float64 op in the graph. TI2V takes per-token timesteps [B, L] (a [B]
    timestep is expanded by the runtime); the others take [B]."""
    cfg = variant.dit
    lat = ("T", "H", "W")
    L = dit_tokens(variant)
    inputs = [
        _f32("latents", ("B", cfg.out_dim, *lat)),
        _f32(
            "timestep",
            ("B", L)
            if cfg.model_type == "ti2v"
            else ("B", "T")  # SkyReels-V2 DF: a timestep per latent frame
            if variant.forcing is not None
            else ("B",),
        ),
        _f32("context", ("B", cfg.text_len, cfg.text_dim)),
    ]
    if cfg.model_type in ("i2v", "flf2v"):
        inputs.append(_f32("y", ("B", cfg.in_dim - cfg.out_dim, *lat)))
    if cfg.image_dim is not None:
        inputs.append(_f32("clip_fea", ("B", clip_tokens(variant), cfg.image_dim)))
    if cfg.vace_in_dim is not None:  # VACE: the context (models/vace.py) and its scale (0-d)
        inputs += [_f32("vace", ("B", cfg.vace_in_dim, *lat)), _f32("vace_scale", ())]
    half = cfg.head_dim // 2
    inputs += [_f32("rope_cos", (L, half)), _f32("rope_sin", (L, half))]
    return ComponentSpec(
        name=DIT, inputs=tuple(inputs), outputs=(_f32("velocity", ("B", cfg.out_dim, *lat)),)
    )


def clip_tokens(variant: Variant) -> int:
    """CLIP tokens the DiT's image embedding takes: 257 per image (FLF2V: two images)."""
    if variant.clip is None:
        raise ConfigError(f"{variant.name} has no CLIP image encoder")
    per_image = variant.clip.num_patches + 1
    return variant.dit.image_pos_len or per_image


def clip_spec(variant: Variant) -> ComponentSpec:
    """CLIP image encoder including Wan's preprocessing: images [N, 3, H, W] in [-1, 1], any size ->
    features [N, 257, dim] (the bicubic resize to the CLIP input size is inside the graph)."""
    if variant.clip is None:
        raise ConfigError(f"{variant.name} has no CLIP image encoder")
    c = variant.clip
    return ComponentSpec(
        name=CLIP,
        inputs=(_f32("images", ("N", 3, "H", "W")),),
        outputs=(_f32("features", ("N", c.num_patches + 1, c.dim)),),
    )


def _cache(prefix: str, slots: Sequence[Dims]) -> tuple[TensorSpec, ...]:
    return tuple(_f32(f"{prefix}_{i}", tuple(d)) for i, d in enumerate(slots))


def vae_decoder_specs(
    variant: Variant, cache: Sequence[Dims]
) -> tuple[ComponentSpec, ComponentSpec]:
    """The causal decoder as two graphs over normalised latents [1, z, 1, h, w] (batch 1: the
    pipeline decodes one video; a static batch also keeps the export's shape reasoning small):
    first: the first latent frame on an empty cache -> 1 video frame + the cache;
    step:  one more latent frame + the cache -> 4 video frames + the updated cache.
    ``cache``: the dims of each slot (from the exporter's measurement)."""
    v = variant.vae
    s = v.spatial_factor
    z = _f32("latents", (1, v.z_dim, 1, "h", "w"))
    px = (f"h*{s}", f"w*{s}")
    first = ComponentSpec(
        name=VAE_DECODER_FIRST,
        inputs=(z,),
        outputs=(_f32("video", (1, 3, 1, *px)), *_cache("cache_out", cache)),
    )
    step = ComponentSpec(
        name=VAE_DECODER_STEP,
        inputs=(z, *_cache("cache_in", cache)),
        outputs=(_f32("video", (1, 3, v.temporal_factor, *px)), *_cache("cache_out", cache)),
    )
    return first, step


def vae_encoder_specs(
    variant: Variant, cache: Sequence[Dims]
) -> tuple[ComponentSpec, ComponentSpec]:
    """The causal encoder as two graphs: first: video frame 0 [B, 3, 1, H, W] -> latent frame 0 +
    cache; step: 4 more frames + cache -> one latent frame + cache. Latents are the normalised
    mean; pixel sizes are written h*s, w*s (s = the VAE's spatial factor)."""
    v = variant.vae
    s = v.spatial_factor
    px = (f"h*{s}", f"w*{s}")
    lat = _f32("latents", (1, v.z_dim, 1, "h", "w"))
    first = ComponentSpec(
        name=VAE_ENCODER_FIRST,
        inputs=(_f32("video", (1, 3, 1, *px)),),
        outputs=(lat, *_cache("cache_out", cache)),
    )
    step = ComponentSpec(
        name=VAE_ENCODER_STEP,
        inputs=(_f32("video", (1, 3, v.temporal_factor, *px)), *_cache("cache_in", cache)),
        outputs=(lat, *_cache("cache_out", cache)),
    )
    return first, step


# ----------------------------------------------------------------------------- dims


_OPS = {
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Add: operator.add,
    ast.Sub: operator.sub,
}


def eval_dim(dim: int | str, sizes: Mapping[str, int]) -> int:
    """Value of one dim: an int, a name in ``sizes``, or + - * // of those (no other syntax)."""
    if isinstance(dim, int):
        return dim

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in sizes:
                raise ConfigError(f"dim {dim!r} needs the size {node.id!r}")
            return int(sizes[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ConfigError(f"unsupported dim expression {dim!r}")

    try:
        tree = ast.parse(dim, mode="eval")
    except SyntaxError:
        raise ConfigError(f"unsupported dim expression {dim!r}") from None
    return ev(tree.body)


def resolve_dims(tensor: TensorSpec, sizes: Mapping[str, int]) -> tuple[int, ...]:
    """The concrete shape of ``tensor`` for the given symbolic sizes."""
    return tuple(eval_dim(d, sizes) for d in tensor.dims)


def dim_names(dims: Dims) -> set[str]:
    """The size names a dims tuple depends on."""
    out: set[str] = set()
    for d in dims:
        if isinstance(d, str):
            out |= {n.id for n in ast.walk(ast.parse(d, mode="eval")) if isinstance(n, ast.Name)}
    return out


def match_sizes(tensor: TensorSpec, shape: Sequence[int], sizes: dict[str, int]) -> str | None:
    """Check ``shape`` against ``tensor``'s dims, binding bare names into ``sizes`` as they are first
    seen; returns what does not fit (None when it fits). Expressions are checked once their names
    are bound, so call it input by input in spec order."""
    if len(shape) != len(tensor.dims):
        return f"{tensor.name}: rank {len(shape)}, expected {len(tensor.dims)} {tensor.dims}"
    for d, n in zip(tensor.dims, shape, strict=True):
        if isinstance(d, str) and d.isidentifier() and d not in sizes:
            sizes[d] = int(n)
    for i, (d, n) in enumerate(zip(tensor.dims, shape, strict=True)):
        if dim_names((d,)) <= sizes.keys() and eval_dim(d, sizes) != n:
            return (
                f"{tensor.name}: dim {i} is {n}, expected {d} = {eval_dim(d, sizes)} "
                f"(shape {tuple(shape)}, dims {tensor.dims})"
            )
    return None


# ----------------------------------------------------------------------------- presets


def parse_preset(text: str) -> tuple[int, int, int]:
    """ "832x480x81" -> (width, height, frames)."""
    try:
        w, h, f = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise ConfigError(
            f"preset must be WIDTHxHEIGHTxFRAMES, e.g. 832x480x81, got {text!r}"
        ) from None
    if min(w, h, f) <= 0:
        raise ConfigError(f"preset sizes must be positive, got {text!r}")
    return w, h, f


def check_preset(variant: Variant, preset: str) -> tuple[int, int, int]:
    w, h, f = parse_preset(preset)
    m = variant.spatial_multiple
    if w % m or h % m:
        raise ConfigError(
            f"preset {preset}: width and height must be multiples of {m} for {variant.name}"
        )
    if (f - 1) % variant.vae.temporal_factor:
        raise ConfigError(f"preset {preset}: frames must be {variant.vae.temporal_factor}n+1")
    return w, h, f


def profile_presets(variant: Variant, profile: str) -> tuple[str, ...]:
    """--profile 480p / 720p -> the variant's sizes of that class at its default frame count."""
    frames = variant.defaults.frames
    area = {"480p": 832 * 480, "720p": 1280 * 720}.get(profile)
    if area is None:
        raise ConfigError(f"unknown profile {profile!r}; expected 480p or 720p")
    sizes = [(w, h) for w, h in variant.defaults.sizes if abs(w * h - area) <= 0.15 * area]
    if not sizes:
        known = ", ".join(f"{w}x{h}" for w, h in variant.defaults.sizes)
        raise ConfigError(f"{variant.name} has no {profile} sizes (it makes {known})")
    return tuple(f"{w}x{h}x{frames}" for w, h in sizes)


def preset_sizes(variant: Variant, graph: str, preset: str) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) of every size name ``graph`` uses, for a video preset: what an engine builder
    turns into an optimisation profile. Batches are 1..2 where CFG batches cond and uncond."""
    width, height, frames = check_preset(variant, preset)
    _, t, lh, lw = variant.latent_shape(width, height, frames)
    if graph == DIT:
        return {"B": (1, 2, 2), "T": (t, t, t), "H": (lh, lh, lh), "W": (lw, lw, lw)}
    if graph == T5:
        n = variant.t5.text_len
        return {"B": (1, 2, 2), "S": (n, n, n)}
    if graph == CLIP:
        return {"N": (1, 2, 2), "H": (height,) * 3, "W": (width,) * 3}
    if graph in (VAE_DECODER_FIRST, VAE_DECODER_STEP, VAE_ENCODER_FIRST, VAE_ENCODER_STEP):
        return {"h": (lh, lh, lh), "w": (lw, lw, lw)}
    raise ConfigError(f"unknown graph {graph!r}; known: {', '.join(GRAPHS)}")


# ----------------------------------------------------------------------------- (de)serialisation


def spec_to_dict(spec: ComponentSpec) -> dict[str, Any]:
    def t(x: TensorSpec) -> dict[str, Any]:
        return {"name": x.name, "dims": list(x.dims), "dtype": x.dtype}

    return {
        "name": spec.name,
        "inputs": [t(x) for x in spec.inputs],
        "outputs": [t(x) for x in spec.outputs],
        "rtol": spec.rtol,
    }


def spec_from_dict(data: Mapping[str, Any]) -> ComponentSpec:
    try:

        def t(x: Mapping[str, Any]) -> TensorSpec:
            return TensorSpec(name=str(x["name"]), dims=tuple(x["dims"]), dtype=str(x["dtype"]))

        return ComponentSpec(
            name=str(data["name"]),
            inputs=tuple(t(x) for x in data["inputs"]),
            outputs=tuple(t(x) for x in data["outputs"]),
            rtol=float(data.get("rtol", 1e-4)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"malformed component spec ({e})") from None
