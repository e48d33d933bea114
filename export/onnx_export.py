"""Our torch modules -> ONNX graphs, one function per component, each driven by its ComponentSpec
(wan_desktop/specs.py): input/output names and symbolic dims come from the spec, so the engine
builders and the runtimes bind the same names.

How (shared/FACTS.md): the dynamo exporter (``torch.onnx.export(..., dynamo=True)``), opset 20
(18–21 is what TensorRT-RTX and ModelOpt handle; opset 23's native Attention is not). Every dim the
spec names is exported dynamic (``Dim.AUTO``: torch.export infers the relations, e.g. the DiT's RoPE
table length = its token count). Example inputs use batch 2 and sizes that all differ from each other
and from the static dims, so no two dims are unified by coincidence (batch 1 with a dynamic batch
fails: "Invalid ranges [2:1]").

Memory: the graphs are traced from the module as it is (parameters are referenced, never copied;
tracing runs on fake tensors) and written tensor by tensor; graphs whose weights exceed ~1.8 GB use
ONNX external data (``<name>.onnx.data``, protobuf's 2 GB limit). Only those small enough to live
in one protobuf are slimmed with onnxslim (it holds the whole model in memory).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from wan_desktop import specs
from wan_desktop.contracts import ComponentSpec
from wan_desktop.errors import EngineError

if TYPE_CHECKING:
    from wan_desktop.variants import Variant

log = logging.getLogger(__name__)

OPSET = 20
EXTERNAL_DATA_BYTES = int(1.8 * 2**30)  # above this, weights go to <name>.onnx.data
META_PREFIX = "wan_desktop."


# ----------------------------------------------------------------------------- graph wrappers


class _DitGraph(nn.Module):
    """One DiT forward with the spec's flat inputs; RoPE tables come in as inputs."""

    varargs_at = 0  # forward(*args): torch.export sees one tuple argument

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)

    def forward(self, *args: Tensor) -> Tensor:
        kw = dict(zip(self.names, args, strict=True))
        m = self.model
        state = m.prepare(
            kw["latents"],
            kw["timestep"],
            kw["context"],
            y=kw.get("y"),
            clip_fea=kw.get("clip_fea"),
            rope=(kw["rope_cos"], kw["rope_sin"]),
            **({"vace": kw["vace"], "vace_scale": kw["vace_scale"]} if "vace" in kw else {}),
        )
        h = state.x
        for i, block in enumerate(m.blocks):  # + the VACE hints (DiTState.after_block)
            h = state.after_block(i, block(h, state.e0, state.context, state.cos, state.sin))
        return m.finish(h, state)


class _T5Graph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.model(ids, mask).float()


class _ClipGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model.encode(images).float()


class _VaeChunk(nn.Module):
    """One causal chunk of the VAE's decoder or encoder with the cache as explicit tensors:
    ``first`` starts from an empty cache, otherwise the cache slots are the inputs after the
    chunk. Returns (chunk output, *cache slots after the chunk)."""

    varargs_at = 1  # forward(x, *slots)

    def __init__(self, vae: nn.Module, *, decode: bool, first: bool) -> None:
        super().__init__()
        self.vae = vae
        self.decode = decode
        self.first = first

    def forward(self, x: Tensor, *slots: Tensor) -> tuple[Tensor, ...]:
        from wan_desktop.models.vae21 import CausalCache

        cache = CausalCache(None if self.first else list(slots))
        dtype = next(self.vae.parameters()).dtype
        x = x.to(dtype)
        out = self.vae.decode_step(x, cache) if self.decode else self.vae.encode_step(x, cache)
        return (out.float(), *(s.float() for s in cache.slots))


# ----------------------------------------------------------------------------- the exporter


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter warns about optional torchvision ops and deprecated paths on every call."""
    names = (
        "torch.onnx",
        "torch.onnx._internal.exporter._registration",
        "torch.export",
        "torch._dynamo",
        "onnxscript",
        "onnx_ir",
    )
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def weight_bytes(module: nn.Module) -> int:
    """Bytes of the module's parameters and buffers (what the graph's initializers will hold)."""
    return sum(
        t.numel() * t.element_size()
        for t in [*module.parameters(), *module.buffers()]
        if t is not None
    )


def _dynamic_shapes(
    spec: ComponentSpec, dynamic: bool, varargs_at: int | None
) -> tuple[Any, ...] | None:
    """Dim.AUTO on every symbolic dim, in the structure of forward's arguments (torch.export sees
    a ``*args`` parameter as one tuple)."""
    if not dynamic:
        return None
    auto = torch.export.Dim.AUTO
    per = tuple({i: auto for i, d in enumerate(t.dims) if isinstance(d, str)} for t in spec.inputs)
    if varargs_at is None or varargs_at >= len(per):
        return per
    return (*per[:varargs_at], per[varargs_at:])


def export_graph(
    module: nn.Module,
    spec: ComponentSpec,
    args: tuple[Tensor, ...],
    path: str | Path,
    *,
    dynamic: bool = True,
    opset: int = OPSET,
    slim: bool = True,
    metadata: dict[str, str] | None = None,
    external_data: bool | None = None,
) -> Path:
    """Export ``module(*args)`` as ``path`` with the spec's names and dims; returns ``path``.

    The graph's input/output dims are renamed to the spec's symbolic dims (``B``, ``T``, ``h*8``,
    ...), and ``metadata`` plus the spec go into the model's metadata_props. ``external_data``:
    the weights go to ``<path>.data`` (True), stay in the graph (False), or None: beside it when
    they exceed EXTERNAL_DATA_BYTES (protobuf's 2 GB limit).
    """
    import json

    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(args) != len(spec.inputs):
        raise ValueError(
            f"{spec.name}: {len(args)} example inputs for {len(spec.inputs)} spec inputs"
        )
    module = module.eval()
    external = (
        weight_bytes(module) > EXTERNAL_DATA_BYTES if external_data is None else external_data
    )
    t0 = time.perf_counter()
    with _quiet(), torch.no_grad():
        try:
            program = torch.onnx.export(
                module,
                args,
                None,
                dynamo=True,
                opset_version=opset,
                verbose=False,
                dynamic_shapes=_dynamic_shapes(spec, dynamic, getattr(module, "varargs_at", None)),
                input_names=[t.name for t in spec.inputs],
                output_names=[t.name for t in spec.outputs],
            )
        except Exception as e:  # the exporter raises many kinds; the user gets one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EngineError(
                f"ONNX export of {spec.name} failed: {first}",
                remedy="Report this with the model's inspect output; the PyTorch "
                "backend still runs the model.",
            ) from e
        assert program is not None
        if path.exists():
            path.unlink()
        data = path.with_name(path.name + ".data")
        if data.exists():
            data.unlink()
        program.save(str(path), external_data=external)
        del program  # drops the exporter's references to the weights before any reload
    log.info("exported %s in %.1f s", spec.name, time.perf_counter() - t0)

    # the proto only (external data stays where it is): rename dims, record the spec
    model = onnx.load(str(path), load_external_data=False)
    if slim and not external:
        model = _slim(model, spec.name)
    _name_dims(model, spec)
    meta = {"component": spec.name, "spec": json.dumps(specs.spec_to_dict(spec))} | (metadata or {})
    keep = [p for p in model.metadata_props if not p.key.startswith(META_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in meta.items():
        model.metadata_props.add(key=META_PREFIX + k, value=str(v))
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path))  # by path: works with external data too
    return path


def _slim(model: Any, name: str) -> Any:
    """onnxslim's constant folding and pattern fusions (fewer nodes for ORT/TRT); the original is
    kept when slimming fails (it is an optimisation, not a requirement)."""
    try:
        import onnxslim
    except ImportError:
        return model
    try:
        with _quiet(), contextlib.redirect_stdout(None):
            return onnxslim.slim(model)
    except Exception as e:  # optional pass: never fail an export over it
        log.warning("onnxslim skipped for %s: %s", name, e)
        return model


def _name_dims(model: Any, spec: ComponentSpec) -> None:
    """Write the spec's dims on the graph's inputs/outputs (the exporter names them s0, s1, ...)."""
    by_name = {t.name: t for t in (*spec.inputs, *spec.outputs)}
    for value in (*model.graph.input, *model.graph.output):
        t = by_name.get(value.name)
        if t is None:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(t.dims):
            raise EngineError(
                f"{spec.name}: graph {value.name} has rank {len(dims)}, spec {t.dims}"
            )
        for d, want in zip(dims, t.dims, strict=True):
            if isinstance(want, int):
                d.ClearField("dim_param")
                d.dim_value = want
            else:
                d.ClearField("dim_value")
                d.dim_param = want


def graph_files(path: str | Path) -> list[Path]:
    """The graph and its external data file, if any."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    return [path, data] if data.exists() else [path]


# ----------------------------------------------------------------------------- per component


def _example(
    dims: Sequence[int | str],
    sizes: dict[str, int],
    dtype: torch.dtype = torch.float32,
    gen: torch.Generator | None = None,
) -> Tensor:
    shape = tuple(specs.eval_dim(d, sizes) for d in dims)
    if dtype == torch.int64:
        return torch.randint(0, 8, shape, generator=gen)
    return torch.randn(shape, generator=gen, dtype=dtype)


def export_t5(
    module: nn.Module,
    variant: Variant,
    path: str | Path,
    *,
    seq_len: int = 11,
    dynamic: bool = True,
    **kw: Any,
) -> Path:
    """umT5 encoder; example ids [2, seq_len] (any length runs; the runtime feeds 512)."""
    spec = specs.t5_spec(variant)
    ids = torch.randint(0, min(variant.t5.vocab_size, 100), (2, seq_len))
    mask = torch.ones(2, seq_len, dtype=torch.int64)
    mask[1, seq_len // 2 :] = 0  # a padded row, so the mask path is traced with real values
    return export_graph(_T5Graph(module), spec, (ids, mask), path, dynamic=dynamic, **kw)


def dit_example(
    variant: Variant, latent: tuple[int, int, int] = (3, 10, 14)
) -> tuple[ComponentSpec, tuple[Tensor, ...]]:
    """The DiT spec and example inputs for a latent (T, H, W), batch 2 (RoPE from the real grid)."""
    from wan_desktop.models.rope import rope_cos_sin

    spec = specs.dit_spec(variant)
    t, h, w = latent
    sizes = {"B": 2, "T": t, "H": h, "W": w}
    pt, ph, pw = variant.dit.patch_size
    cos, sin = rope_cos_sin((t // pt, h // ph, w // pw), variant.dit.head_dim)
    g = torch.Generator().manual_seed(0)
    args = []
    for x in spec.inputs:
        if x.name == "rope_cos":
            args.append(cos)
        elif x.name == "rope_sin":
            args.append(sin)
        elif x.name == "timestep":
            args.append(torch.rand(specs.resolve_dims(x, sizes), generator=g) * 1000)
        else:
            args.append(_example(x.dims, sizes, gen=g))
    return spec, tuple(args)


def export_dit(
    module: nn.Module,
    variant: Variant,
    path: str | Path,
    *,
    latent: tuple[int, int, int] = (3, 10, 14),
    dynamic: bool = True,
    **kw: Any,
) -> Path:
    """One DiT expert. Example latent (T, H, W) = (3, 10, 14): 105 tokens, all dims distinct."""
    spec, args = dit_example(variant, latent)
    graph = _DitGraph(module, [t.name for t in spec.inputs])
    return export_graph(graph, spec, args, path, dynamic=dynamic, **kw)


def _symbolic_slot(shape: Sequence[int], lat_hw: tuple[int, int]) -> tuple[int | str, ...]:
    """A cache slot [1, C, t, H, W] measured at latent (h, w) as dims over h, w (slots sit at
    integer multiples of the latent size in both the decoder and the encoder)."""
    b, c, t, hh, ww = shape
    out: list[int | str] = [b, c, t]
    for size, (name, base) in zip((hh, ww), (("h", lat_hw[0]), ("w", lat_hw[1])), strict=True):
        if size % base:
            raise EngineError(f"VAE cache slot {tuple(shape)} is not a multiple of the latent size")
        r = size // base
        out.append(name if r == 1 else f"{name}*{r}")
    return tuple(out)


def vae_cache_dims(
    vae: nn.Module, variant: Variant, *, decode: bool
) -> tuple[tuple[int | str, ...], ...]:
    """Measure the cache slots of one chunk (a real run at a tiny size: latent 2×3)."""
    from wan_desktop.models.vae21 import CausalCache

    lat = (2, 3)
    s, z = variant.vae.spatial_factor, variant.vae.z_dim
    dtype = next(vae.parameters()).dtype
    cache = CausalCache()
    with torch.no_grad():
        if decode:
            vae.decode_step(torch.zeros(1, z, 1, *lat, dtype=dtype), cache)
        else:
            vae.encode_step(torch.zeros(1, 3, 1, lat[0] * s, lat[1] * s, dtype=dtype), cache)
    return tuple(_symbolic_slot(tuple(t.shape), lat) for t in cache.slots)


def _vae_examples(spec: ComponentSpec, sizes: dict[str, int]) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    # video inputs in [-1, 1]; latents and cache ~ N(0, 1)
    return tuple(
        _example(x.dims, sizes, gen=g).clamp(-1, 1)
        if x.name == "video"
        else _example(x.dims, sizes, gen=g)
        for x in spec.inputs
    )


def export_vae_decoder(
    vae: nn.Module,
    variant: Variant,
    folder: str | Path,
    *,
    latent_hw: tuple[int, int] = (5, 7),
    dynamic: bool = True,
    **kw: Any,
) -> tuple[Path, Path]:
    """The causal decoder as two graphs (first latent frame; one latent frame per step with the
    cache in and out): folder/vae_decoder_first.onnx, folder/vae_decoder_step.onnx."""
    return _export_vae_chunks(
        vae, variant, Path(folder), decode=True, latent_hw=latent_hw, dynamic=dynamic, **kw
    )


def export_vae_encoder(
    vae: nn.Module,
    variant: Variant,
    folder: str | Path,
    *,
    latent_hw: tuple[int, int] = (5, 7),
    dynamic: bool = True,
    **kw: Any,
) -> tuple[Path, Path]:
    """The causal encoder as two graphs (frame 0; 4 frames per step with the cache in and out)."""
    return _export_vae_chunks(
        vae, variant, Path(folder), decode=False, latent_hw=latent_hw, dynamic=dynamic, **kw
    )


def _export_vae_chunks(
    vae: nn.Module,
    variant: Variant,
    folder: Path,
    *,
    decode: bool,
    latent_hw: tuple[int, int],
    dynamic: bool,
    **kw: Any,
) -> tuple[Path, Path]:
    make_specs = specs.vae_decoder_specs if decode else specs.vae_encoder_specs
    first, step = make_specs(variant, vae_cache_dims(vae, variant, decode=decode))
    sizes = {"h": latent_hw[0], "w": latent_hw[1]}
    p1 = export_graph(
        _VaeChunk(vae, decode=decode, first=True),
        first,
        _vae_examples(first, sizes),
        folder / f"{first.name}.onnx",
        dynamic=dynamic,
        **kw,
    )
    p2 = export_graph(
        _VaeChunk(vae, decode=decode, first=False),
        step,
        _vae_examples(step, sizes),
        folder / f"{step.name}.onnx",
        dynamic=dynamic,
        **kw,
    )
    return p1, p2


def export_clip(
    module: nn.Module,
    variant: Variant,
    path: str | Path,
    *,
    image_hw: tuple[int, int] = (37, 45),
    dynamic: bool = True,
    **kw: Any,
) -> Path:
    """CLIP image encoder with Wan's preprocessing (bicubic resize, normalisation) in the graph."""
    spec = specs.clip_spec(variant)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, *image_hw, generator=g) * 2 - 1
    return export_graph(_ClipGraph(module), spec, (images,), path, dynamic=dynamic, **kw)


def file_mb(paths: Sequence[Path]) -> float:
    return math.fsum(p.stat().st_size for p in paths) / 2**20
