"""TensorRT backend: prebuilt engines behind the component Protocols of wan_desktop/contracts.py.

``tensorrt`` when installed, else TensorRT for RTX (``tensorrt_rtx``; same Python API for what is
used here). Engines are built ahead of time by export/build.py, one per graph and preset, and
described by a manifest in the engine folder; loading refuses an engine built for another variant,
precision, GPU or runtime with the reason, before TensorRT sees it.

I/O is bound to torch CUDA tensors (``data_ptr()``) and every engine is enqueued on torch's current
stream, so the denoising loop never copies through the host: inputs arrive as CUDA tensors, outputs
are allocated by torch on the same device and returned as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from wan_desktop import specs
from wan_desktop.errors import ConfigError, EngineError

if TYPE_CHECKING:
    from wan_desktop.contracts import Components, ComponentSpec
    from wan_desktop.text import Tokenizer
    from wan_desktop.variants import Variant

log = logging.getLogger(__name__)

_TORCH_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}


def import_trt(prefer: str = "auto") -> tuple[Any, str]:
    """(module, name) of the TensorRT runtime: ``tensorrt`` if installed, else ``tensorrt_rtx``."""
    import importlib

    order = {
        "auto": ("tensorrt", "tensorrt_rtx"),
        "tensorrt": ("tensorrt",),
        "tensorrt_rtx": ("tensorrt_rtx",),
    }.get(prefer)
    if order is None:
        raise ConfigError(
            f"unknown TensorRT runtime {prefer!r}; expected auto, tensorrt or tensorrt_rtx"
        )
    for name in order:
        try:
            return importlib.import_module(name), name
        except ImportError:
            continue
    raise EngineError(
        "TensorRT backend selected but neither 'tensorrt' nor 'tensorrt_rtx' is installed",
        remedy="Choose the PyTorch backend, or install TensorRT for RTX: "
        'pip install -e ".[tensorrt]".',
    )


class _ErrorLog:
    """Collects TensorRT's error messages so a failure can say why (TRT returns None)."""

    def __init__(self, trt: Any) -> None:
        outer = self

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                    outer.errors.append(msg)
                log.debug("TensorRT [%s]: %s", severity, msg)

        self.errors: list[str] = []
        self.logger = _Logger()

    def reason(self) -> str:
        # TensorRT repeats one cause through its call stack; the first line names it
        return self.errors[0] if self.errors else "no reason given"


# ----------------------------------------------------------------------------- shapes


def bind_sizes(spec: ComponentSpec, shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """The sizes ``spec``'s dims name (B, T, H, W, h, w, ...), bound from the input shapes in spec
    order. A missing input, a wrong rank or an inconsistent dim is an EngineError naming it."""
    sizes: dict[str, int] = {}
    for t in spec.inputs:
        if t.name not in shapes:
            raise EngineError(f"{spec.name}: input {t.name} is missing")
        reason = specs.match_sizes(t, tuple(shapes[t.name]), sizes)
        if reason:
            raise EngineError(f"{spec.name}: {reason}")
    return sizes


def binding_shapes(
    spec: ComponentSpec, shapes: Mapping[str, Sequence[int]]
) -> dict[str, tuple[int, ...]]:
    """Output shapes of ``spec``'s graph for the given input shapes (no GPU needed)."""
    sizes = bind_sizes(spec, shapes)
    try:
        return {t.name: specs.resolve_dims(t, sizes) for t in spec.outputs}
    except ConfigError as e:
        raise EngineError(f"{spec.name}: output shape undetermined ({e.message})") from None


def profile_reason(entry: Any, sizes: Mapping[str, int]) -> str | None:
    """None if a profile of the manifest entry covers ``sizes``, else which dims do not fit."""
    from .cache import in_profile

    if not entry.profiles or any(in_profile(p, sizes) for p in entry.profiles):
        return None
    parts = []
    for p in entry.profiles:
        bad = [
            f"{k}={sizes[k]} not in {lo}..{hi}"
            for k, (lo, _o, hi) in p.get("dims", {}).items()
            if k in sizes and not lo <= sizes[k] <= hi
        ]
        parts.append(f"{p.get('name')}: {', '.join(bad)}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- one engine


def load_engine_file(path: str | Path, *, runtime: str = "auto") -> tuple[Any, Any, Any, Any]:
    """Read and deserialise an engine: (trt module, IRuntime, ICudaEngine, error log).
    EngineError with TensorRT's own reason when it refuses (no usable GPU, another GPU
    generation, another runtime version, a damaged file)."""
    trt, _ = import_trt(runtime)
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise EngineError(f"cannot read engine {path}: {e.strerror or e}") from None
    if not data:
        raise EngineError(f"engine {path} is empty (an interrupted build?)")
    errors = _ErrorLog(trt)
    rt = trt.Runtime(errors.logger)
    engine = rt.deserialize_cuda_engine(data) if rt is not None else None
    if engine is None:
        raise EngineError(f"TensorRT cannot load {path.name}: {errors.reason()}")
    return trt, rt, engine, errors


class TrtEngine:
    """A deserialised engine and its execution context; I/O as torch CUDA tensors.

    ``load`` reads and deserialises the file (the clean EngineError without a usable GPU comes from
    here), ``unload`` frees context and engine. ``run`` checks the shapes against the profiles,
    allocates the outputs with torch, binds every tensor by ``data_ptr()`` and enqueues on torch's
    current stream of the device (no synchronisation, no host copies).
    """

    def __init__(self, entry: Any, folder: str | Path, *, runtime: str = "auto") -> None:
        self.entry = entry  # engines/cache.py EngineEntry
        self.spec: ComponentSpec = specs.spec_from_dict(entry.spec)
        self.path = Path(folder) / entry.file
        self.runtime = runtime
        self._engine: Any = None
        self._context: Any = None
        self._trt: Any = None
        self.device: torch.device | None = None

    @property
    def loaded(self) -> bool:
        return self._context is not None

    def load(self, device: torch.device) -> None:
        device = torch.device(device)
        if self.loaded and device == self.device:
            return
        if device.type != "cuda":
            raise EngineError(
                f"TensorRT engines run on a CUDA GPU, not on {device}",
                remedy="Use --device cuda, or choose the PyTorch or ONNX Runtime backend.",
            )
        trt, runtime, engine, errors = load_engine_file(self.path, runtime=self.runtime)
        context = engine.create_execution_context()
        if context is None:
            raise EngineError(
                f"TensorRT cannot create a context for {self.path.name}: "
                f"{errors.reason()} (out of GPU memory?)"
            )
        self._trt, self._runtime, self._engine, self._context = trt, runtime, engine, context
        self.device = device

    def unload(self) -> None:
        # the context before the engine, the engine before the runtime (TensorRT's ownership)
        self._context = None
        self._engine = None
        self._runtime = None
        self.device = None

    def run(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Inputs by spec name (CUDA tensors) -> outputs by spec name (new CUDA tensors)."""
        if not self.loaded:
            raise EngineError(f"engine {self.spec.name} is not loaded", remedy="Call load().")
        spec = self.spec
        shapes = {k: tuple(v.shape) for k, v in inputs.items()}
        reason = profile_reason(self.entry, bind_sizes(spec, shapes))
        if reason:
            raise EngineError(
                f"{spec.name}: the request does not fit the engine ({reason})",
                remedy="Build engines for this size (wan-desktop export), or use "
                "the PyTorch backend.",
            )
        out_shapes = binding_shapes(spec, shapes)
        ctx = self._context
        dev = self.device
        keep = []  # contiguous / cast copies must outlive the enqueue
        for t in spec.inputs:
            x = inputs[t.name].to(dev, _TORCH_DTYPES[t.dtype]).contiguous()
            keep.append(x)
            ctx.set_input_shape(t.name, tuple(x.shape))
            ctx.set_tensor_address(t.name, x.data_ptr())
        outputs = {}
        for t in spec.outputs:
            y = torch.empty(out_shapes[t.name], dtype=_TORCH_DTYPES[t.dtype], device=dev)
            outputs[t.name] = y
            ctx.set_tensor_address(t.name, y.data_ptr())
        stream = torch.cuda.current_stream(dev)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise EngineError(f"TensorRT failed to run {spec.name}")
        # torch's caching allocator must not reuse the input copies before the kernels ran
        for x in keep:
            x.record_stream(stream)
        return outputs


# ----------------------------------------------------------------------------- components


class TrtTextEncoder:
    def __init__(
        self, engine: TrtEngine, tokenizer: Tokenizer, warn: Callable[[str], None] | None = None
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.warn = warn

    def load(self, device: torch.device) -> None:
        self.engine.load(device)

    def unload(self) -> None:
        self.engine.unload()

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str]) -> list[Tensor]:
        batch = self.tokenizer(list(prompts))
        if batch.any_truncated and self.warn is not None:
            self.warn(f"prompt longer than {self.tokenizer.max_length} tokens: the end was cut off")
        dev = self.engine.device
        out = self.engine.run({"ids": batch.ids.to(dev), "mask": batch.mask.to(dev)})["hidden"]
        return [out[i, :n].float() for i, n in enumerate(batch.lengths)]


class TrtDenoiser:
    """One DiT engine (one Wan2.2 expert). RoPE tables are built on the GPU once per latent grid;
    a [B] timestep of TI2V is expanded to its per-token form."""

    def __init__(self, engine: TrtEngine, variant: Variant) -> None:
        self.engine = engine
        self.variant = variant
        self._rope: dict[tuple[int, int, int], tuple[Tensor, Tensor]] = {}

    def load(self, device: torch.device) -> None:
        self.engine.load(device)

    def unload(self) -> None:
        self.engine.unload()
        self._rope.clear()

    def begin(self, timesteps: Sequence[float]) -> None:
        """Start of a run: nothing to reset (no step cache in this backend)."""

    def rope(self, latent_thw: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
        from wan_desktop.models.rope import rope_cos_sin

        if latent_thw not in self._rope:
            pt, ph, pw = self.variant.dit.patch_size
            t, h, w = latent_thw
            grid = (t // pt, h // ph, w // pw)
            self._rope[latent_thw] = rope_cos_sin(
                grid, self.variant.dit.head_dim, device=self.engine.device
            )
        return self._rope[latent_thw]

    def inputs(
        self,
        latents: Tensor,
        timestep: Tensor,
        context: Tensor,
        *,
        y: Tensor | None = None,
        clip_fea: Tensor | None = None,
        vace: Tensor | None = None,
        vace_scale: float = 1.0,
    ) -> dict[str, Tensor]:
        """The engine's input tensors by name (the spec decides which exist)."""
        names = [t.name for t in self.engine.spec.inputs]
        thw = tuple(latents.shape[2:])
        cos, sin = self.rope(thw)  # type: ignore[arg-type]
        if "timestep" in names and self.variant.dit.model_type == "ti2v" and timestep.dim() == 1:
            timestep = timestep[:, None].expand(-1, cos.shape[0])
        feed = {
            "latents": latents,
            "timestep": timestep,
            "context": context,
            "y": y,
            "clip_fea": clip_fea,
            "vace": vace,  # VACE: the context and its scale (0-d)
            "vace_scale": None
            if vace is None
            else torch.tensor(float(vace_scale), device=latents.device),
            "rope_cos": cos,
            "rope_sin": sin,
        }
        missing = [n for n in names if feed.get(n) is None]
        if missing:
            raise ConfigError(f"the {self.variant.name} DiT engine needs {', '.join(missing)}")
        return {n: feed[n] for n in names}  # type: ignore[misc]

    @torch.inference_mode()
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
        if self.variant.forcing is not None:  # SkyReels DF: what the graph was built from
            from .ort_forcing import check_graph, check_settings

            onnx_file = getattr(self.engine.entry, "onnx_file", None)
            built = getattr(self.engine.entry, "extra", None) or {}
            if "causal_block_size" in built:  # recorded by the build (export/build.py)
                check_settings(
                    self.engine.path.name,
                    int(built["causal_block_size"]),
                    int(built["fps"]),
                    causal_block_size=causal_block_size,
                    fps=fps,
                    has_fps_embedding=self.variant.dit.inject_sample_info,
                )
            elif onnx_file:
                check_graph(
                    self.engine.path.with_name(onnx_file),
                    causal_block_size=causal_block_size,
                    fps=fps,
                    has_fps_embedding=self.variant.dit.inject_sample_info,
                )
            timestep = timestep.float()
        feed = self.inputs(
            latents, timestep, context, y=y, clip_fea=clip_fea, vace=vace, vace_scale=vace_scale
        )
        return self.engine.run(feed)["velocity"]


def _cache_names(spec: ComponentSpec, prefix: str) -> list[str]:
    return [t.name for t in spec.inputs + spec.outputs if t.name.startswith(prefix)]


class _ChunkEngines:
    """A causal VAE half as two engines: the first chunk on an empty cache, then the step engine
    with the cache passed from outputs to inputs; loaded and freed together."""

    def __init__(self, first: TrtEngine, step: TrtEngine) -> None:
        self.first = first
        self.step = step

    def load(self, device: torch.device) -> None:
        self.first.load(device)
        self.step.load(device)

    def unload(self) -> None:
        self.first.unload()
        self.step.unload()

    def chunk_step(
        self, inp: str, out: str
    ) -> Callable[[Tensor, dict[str, Tensor] | None], tuple[Tensor, dict[str, Tensor]]]:
        """The tiler's chunk step (engines/vae_tiling.py): ``inp`` -> ``out`` through the first
        engine on an empty cache, then the step engine with the cache outputs fed back in."""
        slots = _cache_names(self.first.spec, "cache_out_")

        def run(x: Tensor, cache: dict[str, Tensor] | None) -> tuple[Tensor, dict[str, Tensor]]:
            res = self.first.run({inp: x}) if cache is None else self.step.run({inp: x} | cache)
            return res[out], {n.replace("cache_out_", "cache_in_"): res[n] for n in slots}

        return run


class TrtVaeDecoder(_ChunkEngines):
    """The causal decoder (export/onnx_export.py): the first latent frame, then one latent frame
    per step, driven by the tiler of engines/vae_tiling.py over whole frames (the engines are
    built for one preset's frame size, so a memory plan's tiles do not apply)."""

    def __init__(
        self, first: TrtEngine, step: TrtEngine, *, spatial_factor: int, temporal_factor: int
    ) -> None:
        super().__init__(first, step)
        self.spatial_factor, self.temporal_factor = spatial_factor, temporal_factor

    def _run(self, fn: Callable[..., Tensor], latents: Tensor) -> Tensor:
        return fn(
            self.chunk_step("latents", "video"),
            latents,
            spatial_factor=self.spatial_factor,
            temporal_factor=self.temporal_factor,
            tiling=None,
        )

    @torch.inference_mode()
    def decode(self, latents: Tensor) -> Tensor:
        from .vae_tiling import decode_tiled

        return self._run(decode_tiled, latents)

    @torch.inference_mode()
    def decode_frames(self, latents: Tensor) -> Tensor:
        from .vae_tiling import decode_tiled_frames

        return self._run(decode_tiled_frames, latents)


class TrtVaeEncoder(_ChunkEngines):
    """The causal encoder: frame 0, then 4 frames per step with the cache, through
    engines/vae_tiling.encode_tiled over whole frames (engines of one frame size)."""

    def __init__(
        self, first: TrtEngine, step: TrtEngine, temporal_factor: int = 4, *, spatial_factor: int
    ) -> None:
        super().__init__(first, step)
        self.tf, self.spatial_factor = temporal_factor, spatial_factor

    @torch.inference_mode()
    def encode(self, video: Tensor) -> Tensor:
        from .vae_tiling import encode_tiled

        f = video.shape[2]
        if (f - 1) % self.tf:
            raise ConfigError(f"VAE input frames must be {self.tf}n+1, got {f}")
        return encode_tiled(
            self.chunk_step("video", "latents"),
            video,
            tiling=None,
            spatial_factor=self.spatial_factor,
            temporal_factor=self.tf,
        )


class TrtImageEncoder:
    def __init__(self, engine: TrtEngine) -> None:
        self.engine = engine

    def load(self, device: torch.device) -> None:
        self.engine.load(device)

    def unload(self) -> None:
        self.engine.unload()

    @torch.inference_mode()
    def encode(self, images: Tensor) -> Tensor:
        return self.engine.run({"images": images})["features"]


# ----------------------------------------------------------------------------- composition


def _gpu_capability(device: torch.device) -> str | None:
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    a, b = torch.cuda.get_device_capability(device)
    return f"{a}.{b}"


def select_entry(
    folder: str | Path,
    manifest: Any,
    component: str,
    *,
    runtime: str,
    runtime_version: str,
    compute_capability: str | None,
    preset: str | None,
    expert: int | None = None,
    hashes: Any = None,
) -> Any:
    """The manifest entry of ``component`` built by ``runtime`` for ``preset`` (None: the only
    one), checked by engines/cache.py (path inside the folder, size and sha256 — hashed once per
    file version through ``hashes``, the user's hash cache by default —, GPU, runtime version):
    EngineError with the reason."""
    from . import cache

    cands = [
        e
        for e in manifest.entries
        if e.component == component
        and e.runtime == runtime
        and (expert is None or e.expert == expert)
    ]
    if not cands:
        have = sorted({f"{e.component}/{e.runtime}" for e in manifest.entries}) or ["nothing"]
        raise EngineError(
            f"engine folder {folder} has no {runtime} engine for {component}"
            + (f" (expert {expert})" if expert is not None else "")
            + f" (it has {', '.join(have)})",
            remedy=f"Build it: {manifest.rebuild}"
            if manifest.rebuild
            else "Build the engines (wan-desktop export --engine tensorrt).",
        )
    names = sorted({str(p.get("name")) for e in cands for p in e.profiles})
    if preset is not None:
        cands = [
            e for e in cands if not e.profiles or any(p.get("name") == preset for p in e.profiles)
        ]
        if not cands:
            raise EngineError(
                f"no {component} engine for {preset} in {folder} (built for {', '.join(names)})",
                remedy="Choose one of those sizes, or build engines for this one.",
            )
    elif len(cands) > 1:
        raise EngineError(
            f"{folder} has {component} engines for {', '.join(names)}: choose one",
            remedy="Pass the preset (the video size) to load.",
        )
    entry = cands[0]
    refusal = cache.check_entry(
        folder,
        manifest,
        entry,
        runtime_version=runtime_version,
        compute_capability=compute_capability,
        verify_hash=True,
        hashes=hashes,
    )
    if refusal is not None:
        log.warning("engine %s refused: %s", entry.file, refusal.reason)
        raise refusal.error()
    return entry


def build_tensorrt_components(
    variant: Variant,
    engines_dir: str | Path,
    device: torch.device,
    *,
    tokenizer: Tokenizer,
    preset: str | None = None,
    precision: str | None = None,
    runtime: str = "auto",
    warn: Callable[[str], None] | None = None,
    load: bool = True,
    lead: bool = True,
) -> Components:
    """Every component of ``variant`` from the engines in ``engines_dir`` (engines/cache.py
    manifest), for one ``preset`` ("832x480x81"; None when the folder has one).

    The folder must be for this variant (same architecture), each engine for this runtime's
    version and this GPU's compute capability, the DiT for ``precision`` when given — otherwise
    EngineError with the reason, before TensorRT reads a file. ``load`` deserialises every engine
    on ``device`` now. ``lead`` False (a parallel run's rank > 0): the DiT engines only; the
    others run on rank 0 (``contracts.Elsewhere`` here, never read).
    """
    from wan_desktop.contracts import Components, Elsewhere

    from . import cache

    folder = Path(engines_dir)
    manifest = cache.read_manifest(folder)
    if manifest.variant != variant:
        raise EngineError(
            f"the engines in {folder} are for {manifest.variant.name} "
            f"({manifest.variant.dit.dim}-dim DiT), not this {variant.name}",
            remedy="Build engines for this model (wan-desktop export).",
        )
    trt, name = import_trt(runtime)
    cc = _gpu_capability(torch.device(device))
    hashes = cache.HashCache()

    def engine(component: str, expert: int | None = None) -> TrtEngine:
        entry = select_entry(
            folder,
            manifest,
            component,
            runtime=name,
            runtime_version=trt.__version__,
            compute_capability=cc,
            preset=preset,
            expert=expert,
            hashes=hashes,
        )
        return TrtEngine(entry, folder, runtime=runtime)

    dits = []
    for expert in range(variant.experts):
        e = engine(specs.DIT, expert if variant.experts > 1 else None)
        if precision is not None and e.entry.precision != precision:
            raise EngineError(
                f"the DiT engine in {folder} is {e.entry.precision}, {precision} was asked for",
                remedy=f"Build {precision} engines, or drop --precision.",
            )
        dits.append(TrtDenoiser(e, variant))
    has = {e.component for e in manifest.entries if e.runtime == name}
    text: Any = Elsewhere("text encoder")
    decoder: Any = Elsewhere("VAE decoder")
    encoder: Any = Elsewhere("VAE encoder") if specs.VAE_ENCODER_FIRST in has else None
    image: Any = Elsewhere("image encoder") if specs.CLIP in has else None
    if lead:
        text = TrtTextEncoder(engine(specs.T5), tokenizer, warn)
        decoder = TrtVaeDecoder(
            engine(specs.VAE_DECODER_FIRST),
            engine(specs.VAE_DECODER_STEP),
            spatial_factor=variant.vae.spatial_factor,
            temporal_factor=variant.vae.temporal_factor,
        )
        if encoder is not None:
            encoder = TrtVaeEncoder(
                engine(specs.VAE_ENCODER_FIRST),
                engine(specs.VAE_ENCODER_STEP),
                variant.vae.temporal_factor,
                spatial_factor=variant.vae.spatial_factor,
            )
        if image is not None:
            image = TrtImageEncoder(engine(specs.CLIP))
    comps = [text, *dits, decoder, *([encoder] if encoder else []), *([image] if image else [])]
    if load:
        for c in comps:
            c.load(torch.device(device))
    info = {
        "backend": "tensorrt",
        "runtime": name,
        "runtime_version": trt.__version__,
        "engines": str(folder),
        "variant": variant.name,
        "preset": preset,
        "precision": dits[0].engine.entry.precision,
    }
    return Components(
        variant=variant,
        text_encoder=text,
        denoisers=tuple(dits),
        vae_decoder=decoder,
        vae_encoder=encoder,
        image_encoder=image,
        boundary=manifest.boundary,
        info=info,
    )
