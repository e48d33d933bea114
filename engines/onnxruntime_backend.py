"""ONNX Runtime backend: the exported graphs (export/onnx_export.py) behind the component Protocols.

Torch tensors in and out. On a CUDA device with onnxruntime-gpu installed, inputs and outputs are
bound in place with IO binding (outputs preallocated as torch CUDA tensors from the spec's dims,
so nothing crosses the PCIe bus); otherwise the CPU provider runs on numpy views of CPU tensors.
Every input is checked against the graph's ComponentSpec (from the engine manifest) before a run,
so a wrong shape is a ConfigError naming the tensor, not an ORT stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from wan_desktop import specs
from wan_desktop.contracts import ComponentSpec
from wan_desktop.errors import ConfigError, EngineError

from . import cache

if TYPE_CHECKING:
    from wan_desktop.checkpoints.detect import ModelFiles
    from wan_desktop.contracts import Components
    from wan_desktop.text import Tokenizer
    from wan_desktop.variants import Variant

log = logging.getLogger(__name__)

RUNTIME = "onnxruntime"
_NP_DTYPES = {"float32": "float32", "float16": "float16", "int64": "int64", "int32": "int32"}
_TORCH_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise EngineError(
            "onnxruntime is not installed",
            remedy="pip install onnxruntime (or onnxruntime-gpu), or use --backend torch.",
        ) from None
    return onnxruntime


def runtime_version() -> str:
    return str(_ort().__version__)


class OrtGraph:
    """One graph: a lazily created InferenceSession plus its spec. ``run`` maps names to tensors."""

    def __init__(self, path: Path, spec: ComponentSpec, *, threads: int | None = None) -> None:
        self.path = path
        self.spec = spec
        self.threads = threads
        self.session: Any = None
        self.device = torch.device("cpu")

    def load(self, device: torch.device) -> None:
        device = torch.device(device)
        if self.session is not None and device == self.device:
            return
        ort = _ort()
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise EngineError(
                    "onnxruntime has no CUDA provider (the CPU-only package is installed)",
                    remedy="pip install onnxruntime-gpu, or run with --device cpu.",
                )
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # ORT's warnings about unused initializers are not actionable
        if self.threads:
            opts.intra_op_num_threads = self.threads
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=opts, providers=providers
            )
        except Exception as e:  # ORT raises its own exception types (InvalidGraph, Fail, ...)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EngineError(f"{self.path.name}: onnxruntime cannot load it: {first}") from e
        self.device = device

    def unload(self) -> None:
        self.session = None

    def _sizes(self, feeds: dict[str, Tensor]) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for t in self.spec.inputs:
            if t.name not in feeds:
                raise ConfigError(f"{self.spec.name}: input {t.name} is missing")
            problem = specs.match_sizes(t, tuple(feeds[t.name].shape), sizes)
            if problem is not None:
                raise ConfigError(f"{self.spec.name}: {problem}")
        return sizes

    def run(self, feeds: dict[str, Tensor]) -> list[Tensor]:
        if self.session is None:
            raise EngineError(f"{self.spec.name}: run before load()")
        sizes = self._sizes(feeds)
        typed = {
            t.name: feeds[t.name].to(self.device, _TORCH_DTYPES[t.dtype]).contiguous()
            for t in self.spec.inputs
        }
        if self.device.type == "cuda":
            return self._run_bound(typed, sizes)
        out = self.session.run(
            [t.name for t in self.spec.outputs], {k: v.numpy() for k, v in typed.items()}
        )
        return [torch.from_numpy(o) for o in out]

    def _run_bound(self, feeds: dict[str, Tensor], sizes: dict[str, int]) -> list[Tensor]:
        """IO binding on torch CUDA memory: inputs and outputs never leave the GPU."""
        import numpy as np

        binding = self.session.io_binding()
        dev = self.device.index or 0
        for t in self.spec.inputs:
            x = feeds[t.name]
            binding.bind_input(
                t.name, "cuda", dev, np.dtype(_NP_DTYPES[t.dtype]), tuple(x.shape), x.data_ptr()
            )
        outs = []
        for t in self.spec.outputs:
            y = torch.empty(
                specs.resolve_dims(t, sizes), dtype=_TORCH_DTYPES[t.dtype], device=self.device
            )
            binding.bind_output(
                t.name, "cuda", dev, np.dtype(_NP_DTYPES[t.dtype]), tuple(y.shape), y.data_ptr()
            )
            outs.append(y)
        torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch kernels
        self.session.run_with_iobinding(binding)
        return outs


class _Graphs:
    """load/unload of several graphs together (a free helper, not a base class)."""

    def __init__(self, *graphs: OrtGraph) -> None:
        self.graphs = graphs
        self.device = torch.device("cpu")

    def load(self, device: torch.device) -> None:
        for g in self.graphs:
            g.load(device)
        self.device = torch.device(device)

    def unload(self) -> None:
        for g in self.graphs:
            g.unload()


class OrtTextEncoder:
    def __init__(
        self, graph: OrtGraph, tokenizer: Tokenizer, warn: Callable[[str], None] | None = None
    ) -> None:
        self.graph = graph
        self.tokenizer = tokenizer
        self.warn = warn

    def load(self, device: torch.device) -> None:
        self.graph.load(device)

    def unload(self) -> None:
        self.graph.unload()

    def encode(self, prompts: Sequence[str]) -> list[Tensor]:
        batch = self.tokenizer(list(prompts))
        if batch.any_truncated and self.warn is not None:
            self.warn(f"prompt longer than {self.tokenizer.max_length} tokens: the end was cut off")
        (hidden,) = self.graph.run({"ids": batch.ids, "mask": batch.mask})
        return [hidden[i, :n].float() for i, n in enumerate(batch.lengths)]


class OrtDenoiser:
    """One DiT graph. RoPE tables are computed per patch grid (cached: the grid is fixed for a run)
    and passed in; TI2V graphs take per-token timesteps, so a [B] timestep is expanded."""

    def __init__(self, graph: OrtGraph, variant: Variant) -> None:
        self.graph = graph
        self.variant = variant
        self._rope: tuple[tuple[int, int, int], Tensor, Tensor] | None = None

    def load(self, device: torch.device) -> None:
        self.graph.load(device)

    def unload(self) -> None:
        self.graph.unload()
        self._rope = None

    def begin(self, timesteps: Sequence[float]) -> None:
        """Start of a run: nothing to reset (no step cache in this backend)."""

    def _rope_for(self, grid: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
        if self._rope is None or self._rope[0] != grid:
            from wan_desktop.models.rope import rope_cos_sin

            cos, sin = rope_cos_sin(grid, self.variant.dit.head_dim, device=self.graph.device)
            self._rope = (grid, cos, sin)
        return self._rope[1], self._rope[2]

    def __call__(
        self,
        latents: Tensor,
        timestep: Tensor,
        context: Tensor,
        *,
        y: Tensor | None = None,
        clip_fea: Tensor | None = None,
        vace: Tensor | None = None,
        vace_scale: float = 1.0,
        fps: int | None = None,
        causal_block_size: int = 1,
    ) -> Tensor:
        cfg = self.variant.dit
        if latents.dim() != 5:
            raise ConfigError(f"DiT input must be [B, C, T, H, W], got {tuple(latents.shape)}")
        if self.variant.forcing is not None:  # SkyReels DF: what the graph was exported for
            from .ort_forcing import check_graph

            check_graph(
                self.graph.path,
                causal_block_size=causal_block_size,
                fps=fps,
                has_fps_embedding=cfg.inject_sample_info,
            )
            timestep = timestep.float()
        pt, ph, pw = cfg.patch_size
        b, _, t, h, w = latents.shape
        grid = (t // pt, h // ph, w // pw)
        cos, sin = self._rope_for(grid)
        tokens = grid[0] * grid[1] * grid[2]
        if cfg.model_type == "ti2v" and timestep.dim() == 1:
            timestep = timestep[:, None].expand(b, tokens)  # same numbers as the broadcast form
        feeds = {
            "latents": latents,
            "timestep": timestep,
            "context": context,
            "rope_cos": cos,
            "rope_sin": sin,
        }
        names = {x.name for x in self.graph.spec.inputs}
        if vace is not None and "vace" in names:  # VACE: the context and its scale (0-d)
            feeds["vace_scale"] = torch.tensor(float(vace_scale), device=latents.device)
        for name, value in (("y", y), ("clip_fea", clip_fea), ("vace", vace)):
            if name in names:
                if value is None:
                    raise ConfigError(f"the {cfg.model_type} DiT needs {name}")
                feeds[name] = value
            elif value is not None:
                raise ConfigError(f"this {cfg.model_type} DiT takes no {name}")
        (velocity,) = self.graph.run(feeds)
        return velocity.float()


def _cache_feeds(outs: list[Tensor]) -> dict[str, Tensor]:
    return {f"cache_in_{i}": t for i, t in enumerate(outs)}


def _chunk_step(
    first: OrtGraph, step: OrtGraph, name: str
) -> Callable[[Tensor, list[Tensor] | None], tuple[Tensor, list[Tensor]]]:
    """The tiler's chunk step (engines/vae_tiling.py) over a first/step graph pair whose input is
    ``name``: the first chunk on an empty cache, then the cache outputs fed back as inputs."""

    def run(x: Tensor, cache: list[Tensor] | None) -> tuple[Tensor, list[Tensor]]:
        if cache is None:
            out, *slots = first.run({name: x})
        else:
            out, *slots = step.run({name: x} | _cache_feeds(cache))
        return out, slots

    return run


class OrtVaeDecoder:
    """The causal decoder: the first latent frame through the 'first' graph, then one latent frame
    per 'step' graph call, carrying the cache tensors from call to call, driven by the tiler of
    engines/vae_tiling.py (the graphs take any size: ``tiling`` from the memory plan applies)."""

    def __init__(
        self, first: OrtGraph, step: OrtGraph, *, spatial_factor: int, temporal_factor: int
    ) -> None:
        self._g = _Graphs(first, step)
        self.first, self.step = first, step
        self.spatial_factor, self.temporal_factor = spatial_factor, temporal_factor
        self.tiling: Any = None
        self._chunk = _chunk_step(first, step, "latents")

    def load(self, device: torch.device) -> None:
        self._g.load(device)

    def unload(self) -> None:
        self._g.unload()

    def _run(self, fn: Callable[..., Tensor], z: Tensor, tiles: Any) -> Tensor:
        if z.dim() != 5:
            raise ConfigError(f"VAE latents must be [B, z, T, h, w], got {tuple(z.shape)}")
        return fn(
            self._chunk,
            z,
            spatial_factor=self.spatial_factor,
            temporal_factor=self.temporal_factor,
            tiling=tiles if tiles is not None else self.tiling,
        )

    def decode(self, latents: Tensor, tiles: Any = None) -> Tensor:
        from .vae_tiling import decode_tiled

        # batch items in turn (the graphs run one video's cache at a time)
        return torch.cat(
            [self._run(decode_tiled, latents[b : b + 1], tiles) for b in range(latents.shape[0])]
        )

    def decode_frames(self, latents: Tensor, tiles: Any = None) -> Tensor:
        from .vae_tiling import decode_tiled_frames

        return self._run(decode_tiled_frames, latents, tiles)


class OrtVaeEncoder:
    """The causal encoder: frame 0 through 'first', then 4 frames per 'step' with the cache,
    driven by engines/vae_tiling.encode_tiled (``encode_tiling`` from the memory plan applies)."""

    def __init__(
        self, first: OrtGraph, step: OrtGraph, temporal_factor: int, *, spatial_factor: int
    ) -> None:
        self._g = _Graphs(first, step)
        self.first, self.step = first, step
        self.tf, self.spatial_factor = temporal_factor, spatial_factor
        self.encode_tiling: Any = None
        self._chunk = _chunk_step(first, step, "video")

    def load(self, device: torch.device) -> None:
        self._g.load(device)

    def unload(self) -> None:
        self._g.unload()

    def encode(self, video: Tensor, tiles: Any = None) -> Tensor:
        from .vae_tiling import encode_tiled

        if video.dim() != 5 or (video.shape[2] - 1) % self.tf:
            raise ConfigError(
                f"VAE input must be [B, 3, {self.tf}n+1, H, W], got {tuple(video.shape)}"
            )
        tiling = tiles if tiles is not None else self.encode_tiling
        # batch items in turn (the graphs run one video's cache at a time)
        return torch.cat(
            [
                encode_tiled(
                    self._chunk,
                    video[b : b + 1],
                    tiling=tiling,
                    spatial_factor=self.spatial_factor,
                    temporal_factor=self.tf,
                )
                for b in range(video.shape[0])
            ]
        )


class OrtImageEncoder:
    def __init__(self, graph: OrtGraph) -> None:
        self.graph = graph

    def load(self, device: torch.device) -> None:
        self.graph.load(device)

    def unload(self) -> None:
        self.graph.unload()

    def encode(self, images: Tensor) -> Tensor:
        (features,) = self.graph.run({"images": images})
        return features.float()


# ----------------------------------------------------------------------------- composition


def engine_tokenizer(folder: str | Path, manifest: cache.Manifest) -> Tokenizer:
    """The tokenizer an engine folder carries (copied beside the T5 graph at export)."""
    from wan_desktop.text import Tokenizer

    folder = Path(folder)
    if manifest.tokenizer == "bytes":
        return Tokenizer.for_random_weights(manifest.variant.t5.vocab_size)
    if not manifest.tokenizer:
        raise EngineError(
            f"engine folder {folder}: no tokenizer recorded",
            remedy=f"Export the text encoder again: {manifest.rebuild}",
        )
    return Tokenizer.from_folder(cache.folder_path(folder, manifest.tokenizer, "tokenizer"))


def entry_spec(folder: Path, manifest: cache.Manifest, entry: cache.EngineEntry) -> ComponentSpec:
    """The ComponentSpec an entry records; a malformed one is an EngineError naming the file."""
    try:
        return specs.spec_from_dict(entry.spec)
    except ConfigError as e:
        raise EngineError(
            f"{folder / cache.MANIFEST}: {entry.component} ({entry.file}): {e.message}",
            remedy=f"Rebuild the engines: {manifest.rebuild}"
            if manifest.rebuild
            else "Export the engines again.",
        ) from None


def build_ort_components(
    variant: Variant | None,
    engines_dir: str | Path,
    *,
    device: torch.device | str = "cpu",
    warn: Callable[[str], None] | None = None,
    files: ModelFiles | None = None,
    loras: Sequence[dict[str, Any]] | None = None,
    threads: int | None = None,
    lead: bool = True,
) -> Components:
    """Components from the ONNX graphs of an engine folder, loaded onto ``device``.

    ``variant``: the detected model's (None: the manifest's); a different architecture is refused.
    ``files``: the checkpoint the user named, checked against the one the graphs came from (names,
    sizes and sha256). Every graph is checked against its manifest sha256 before it is loaded;
    both hashes are computed once per file version (engines/file_hashes.py).
    ``loras``: the LoRAs the run asks for (lora_records); None skips the check.
    ``lead`` False (a parallel run's rank > 0): the DiT graphs only; the text, image and VAE
    graphs run on rank 0 (``contracts.Elsewhere`` here, never read).
    """
    from wan_desktop.contracts import Components, Elsewhere

    folder = Path(engines_dir).expanduser()
    manifest = cache.read_manifest(folder)
    v = manifest.variant
    if variant is not None and (variant.dit != v.dit or variant.vae.z_dim != v.vae.z_dim):
        raise EngineError(
            f"the engines in {folder} are for {v.name}, the model is {variant.name} "
            "(another architecture)",
            remedy="Export engines for this model: wan-desktop export --model ... --out DIR",
        )
    version = runtime_version()
    # checkpoints by sha256, each graph against its manifest sha256: hashed once per file version
    hashes = cache.HashCache()
    model_files = None
    if files is not None:
        paths = [
            p
            for c in (*files.experts, files.vae, files.text_encoder, files.image_encoder)
            if c is not None
            for p in c.files
        ]
        model_files = cache.model_file_records(paths, hashes=hashes)
    checks: dict[str, Any] = {"runtime_version": version, "verify_hash": True, "hashes": hashes}

    def graph(component: str, expert: int | None = None) -> OrtGraph:
        entry = cache.require_entry(
            folder, manifest, component, expert=expert, runtime=RUNTIME, **checks
        )
        return OrtGraph(folder / entry.file, entry_spec(folder, manifest, entry), threads=threads)

    # the model/LoRA checks once, on the DiT (the files the graphs came from)
    dit_checks = {"model_files": model_files, "loras": loras}
    denoisers = []
    for i in range(v.experts):
        entry = cache.require_entry(
            folder, manifest, specs.DIT, expert=i, runtime=RUNTIME, **checks, **dit_checks
        )
        denoisers.append(
            OrtDenoiser(
                OrtGraph(folder / entry.file, entry_spec(folder, manifest, entry), threads=threads),
                v,
            )
        )
    text: Any = Elsewhere("text encoder")
    decoder: Any = Elsewhere("VAE decoder")
    encoder: Any = None
    image: Any = None
    has_encoder = manifest.entry(specs.VAE_ENCODER_FIRST, runtime=RUNTIME) is not None
    if not lead:
        encoder = Elsewhere("VAE encoder") if has_encoder else None
        image = Elsewhere("image encoder") if v.dit.has_image_embedding else None
    else:
        text = OrtTextEncoder(graph(specs.T5), engine_tokenizer(folder, manifest), warn)
        decoder = OrtVaeDecoder(
            graph(specs.VAE_DECODER_FIRST),
            graph(specs.VAE_DECODER_STEP),
            spatial_factor=v.vae.spatial_factor,
            temporal_factor=v.vae.temporal_factor,
        )
        if has_encoder:
            encoder = OrtVaeEncoder(
                graph(specs.VAE_ENCODER_FIRST),
                graph(specs.VAE_ENCODER_STEP),
                v.vae.temporal_factor,
                spatial_factor=v.vae.spatial_factor,
            )
        if v.dit.has_image_embedding:
            image = OrtImageEncoder(graph(specs.CLIP))
    dev = torch.device(device)
    for c in (
        text,
        *denoisers,
        decoder,
        *([encoder] if encoder else []),
        *([image] if image else []),
    ):
        c.load(dev)
    info: dict[str, object] = {
        "backend": RUNTIME,
        "engines": str(folder),
        "variant": v.name,
        "onnxruntime": version,
        "precision": ",".join(
            sorted({e.precision for e in manifest.entries if e.runtime == RUNTIME})
        ),
        "random_weights": bool(manifest.model.get("random_weights")),
    }
    return Components(
        variant=v,
        text_encoder=text,
        denoisers=tuple(denoisers),
        vae_decoder=decoder,
        vae_encoder=encoder,
        image_encoder=image,
        boundary=manifest.boundary,
        info=info,
    )
