"""Build ``Components`` for a run: the composition of detection, loading and a backend.

Only the composition roots (the CLI, the GUI's GPU service) call this.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from wan_desktop.contracts import Components, VaeDecoder
from wan_desktop.errors import ConfigError, EngineError
from wan_desktop.options import Backend, RunOptions
from wan_desktop.variants import Variant, get_variant

if TYPE_CHECKING:
    import torch

    from wan_desktop.checkpoints.detect import ModelFiles
    from wan_desktop.lora import LoraSpec
    from wan_desktop.memory import Plan

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def detect_for_options(options: RunOptions) -> tuple[Variant, ModelFiles | None]:
    """The variant to run (and the detected files, unless random weights): cheap, reads headers."""
    if options.random_weights:
        if options.model:
            raise ConfigError("give either --model or --random-weights, not both")
        return get_variant(options.random_weights), None
    if not options.model and options.backend is not Backend.TORCH and options.engines:
        # an engine folder is self-contained: its manifest records the model it was made from
        from .cache import read_manifest

        return read_manifest(options.engines).variant, None
    if not options.model:
        raise ConfigError("no model given")
    from wan_desktop.checkpoints.detect import detect_model

    files = detect_model(
        options.model,
        vae=options.vae,
        text_encoder=options.text_encoder,
        tokenizer=options.tokenizer,
        clip=options.clip,
    )
    return files.variant, files


def resolve_device(options: RunOptions) -> tuple[torch.device, torch.dtype]:
    import torch

    want = options.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda: no CUDA GPU is available",
            remedy="Use --device cpu, or install the CUDA build of PyTorch.",
        )
    device = torch.device(want or ("cuda" if torch.cuda.is_available() else "cpu"))
    if options.dtype:
        dtype = getattr(torch, _DTYPES[options.dtype])
    else:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return device, dtype


def build_components(
    options: RunOptions,
    variant: Variant,
    files: ModelFiles | None,
    *,
    warn: Callable[[str], None] | None = None,
    plan: Plan | None = None,
    size: str | None = None,
    lead: bool = True,
) -> tuple[Components, torch.device]:
    """Load (or randomly initialise) every component the variant needs, on ``options``' device.

    ``size`` ("832x480x81", the run's width, height and frames) picks the TensorRT engines built
    for that preset when a folder holds several.

    With a memory ``plan`` nothing is put on the device yet: the components stay on the CPU for
    engines/residency.apply_plan to place (block streaming as planned, unless the options set it).

    ``lead`` False (a parallel run's rank > 0): only what that rank runs is read (run.py
    ``ComponentFactory.build``): the denoisers, and the torch VAE's decoder, whose tiles the ranks
    share, unless a tiny VAE decodes on rank 0; the rest is ``contracts.Elsewhere``.
    """
    device, dtype = resolve_device(options)
    if options.backend is not Backend.TORCH:
        comps = _build_engine_components(options, variant, files, device, warn, size, lead=lead)
        return comps, device
    from .torch_backend import build_torch_components

    comps = build_torch_components(
        variant,
        files,
        device=device,
        dtype=dtype,
        warn=warn,
        precision=options.precision_name,
        attention=options.attention,
        compile=options.compile,
        step_cache=options.step_cache,
        swap_blocks=options.swap_blocks or (plan.dit.swap_blocks if plan is not None else 0),
        loras=lora_specs(options),
        load=plan is None,
        lazy_experts=plan is not None and plan.ram.experts_in_ram == 1,
        encoders=lead,
        vae=lead or not options.tiny_vae,
    )
    return comps, device


def set_run_loras(components: Components, options: RunOptions) -> bool:
    """Give built torch components ``options``' LoRAs (strengths, files) without building the
    rest again: each expert whose LoRAs changed is read again with them merged
    (TorchDenoiser.set_loras). False where that cannot be done (engines have their LoRAs merged
    at export): build anew."""
    from wan_desktop.lora import EXPERTS, lora_records

    from .torch_backend import TorchDenoiser, _read_loras

    dens = components.denoisers
    if options.backend is not Backend.TORCH or not all(isinstance(d, TorchDenoiser) for d in dens):
        return False
    pairs = _read_loras([d.model for d in dens], lora_specs(options))  # checked before any change
    for den, p in zip(dens, pairs, strict=True):
        den.set_loras(p)
    records = [r for i, p in enumerate(pairs) for r in lora_records(p, expert=EXPERTS[i])]
    components.info.pop("loras", None)
    if records:
        components.info["loras"] = records
    return True


def lora_specs(options: RunOptions) -> list[LoraSpec]:
    """RunOptions' "FILE[:STRENGTH]" strings as LoraSpec items (--lora: high-noise / only DiT)."""
    from wan_desktop.lora import run_specs

    return run_specs(options.loras, options.loras_low)


def _build_engine_components(
    options: RunOptions,
    variant: Variant,
    files: ModelFiles | None,
    device: torch.device,
    warn: Callable[[str], None] | None,
    size: str | None = None,
    *,
    lead: bool = True,
) -> Components:
    """Components from an engine folder (wan-desktop export); the backends are imported lazily.
    ``lead`` False: the denoisers only (an engine decoder runs on rank 0 alone)."""
    if not options.engines:
        raise ConfigError(f"--backend {options.backend.value} needs --engines DIR")
    from wan_desktop.lora import lora_manifest

    # the engines' merged LoRAs must be exactly the run's (sha256 prefix, strength, expert)
    loras = lora_manifest(lora_specs(options))
    if options.backend is Backend.ONNXRUNTIME:
        from .onnxruntime_backend import build_ort_components

        return build_ort_components(
            None if files is None else variant,
            options.engines,
            device=device,
            warn=warn,
            files=files,
            loras=loras,
            lead=lead,
        )
    try:
        from .tensorrt_backend import build_tensorrt_components
    except ImportError as e:
        raise EngineError(
            f"the TensorRT backend is not available ({e})",
            remedy="Install the tensorrt extra (pip install 'wan-desktop[tensorrt]'), "
            "or use --backend onnxruntime / torch.",
        ) from None
    from .cache import model_file_records, read_manifest, require_entry
    from .onnxruntime_backend import engine_tokenizer

    manifest = read_manifest(options.engines)
    # the same model/LoRA refusals as the ONNX Runtime backend, on the folder's DiT entries: the
    # checkpoint by sha256 (hashed once per file version, engines/file_hashes.py)
    paths = (
        []
        if files is None
        else [
            p
            for c in (*files.experts, files.vae, files.text_encoder, files.image_encoder)
            if c is not None
            for p in c.files
        ]
    )
    records = model_file_records(paths) if paths else None
    for i in range(manifest.variant.experts):
        require_entry(options.engines, manifest, "dit", expert=i, loras=loras, model_files=records)
    return build_tensorrt_components(
        variant if files is not None else manifest.variant,
        options.engines,
        device,
        warn=warn,
        tokenizer=engine_tokenizer(options.engines, manifest),
        precision=options.precision_name,
        preset=size,
        lead=lead,
    )


class EngineFactory:
    """The backends as the run owner (wan_desktop/run.py ``ComponentFactory``) sees them: the
    composition roots (the CLI, the app's GPU service) hand one to ``run.execute``. The module
    functions are looked up at each call, so a test can replace one of them."""

    def __init__(self, *, prompt_cache_dir: Path | None = None) -> None:
        self.prompt_cache_dir = prompt_cache_dir  # None: the user cache dir

    def detect(self, options: RunOptions) -> tuple[Variant, ModelFiles | None]:
        return detect_for_options(options)

    def device(self, options: RunOptions) -> torch.device:
        return resolve_device(options)[0]

    def build(
        self,
        options: RunOptions,
        variant: Variant,
        files: ModelFiles | None,
        *,
        plan: Plan | None,
        size: str,
        warn: Callable[[str], None],
        lead: bool = True,
    ) -> Components:
        return build_components(
            options, variant, files, warn=warn, plan=plan, size=size, lead=lead
        )[0]

    def set_loras(self, components: Components, options: RunOptions) -> bool:
        return set_run_loras(components, options)

    def tiny_vae(self, path: str, *, z_dim: int, device: torch.device) -> VaeDecoder:
        from .preview import TinyVaeDecoder

        decoder = TinyVaeDecoder(path, z_dim=z_dim)
        decoder.load(device)
        return decoder

    def place(self, components: Components, plan: Plan, device: torch.device) -> Components:
        from .residency import PromptCache, apply_plan, default_cache_dir, text_model_key

        root = self.prompt_cache_dir if self.prompt_cache_dir is not None else default_cache_dir()
        cache = PromptCache(root, text_model_key(components, plan.text.precision))
        return apply_plan(components, plan, device, cache=cache)

    def release(self, components: Components) -> None:
        from .residency import release

        release(components)
