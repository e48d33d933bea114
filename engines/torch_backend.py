"""PyTorch backend: our own modules behind the component Protocols of wan_desktop/contracts.py.

Each component keeps its module on the CPU between uses and moves it to the device in ``load``;
``unload`` moves it back and frees the device memory. Which components are resident, and when,
is the memory planner's decision (wan_desktop/memory.py), not this file's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from wan_desktop.checkpoints.detect import ModelFiles
    from wan_desktop.contracts import Components
    from wan_desktop.lora import LoraFile, LoraSpec
    from wan_desktop.text import Tokenizer
    from wan_desktop.variants import Variant

    LoraPairs = Sequence[tuple[LoraFile, float]]

log = logging.getLogger(__name__)


def _move(module: nn.Module, device: torch.device) -> None:
    module.to(device)


def _free(module: nn.Module) -> None:
    had_cuda = any(p.is_cuda for p in module.parameters())
    module.to("cpu")
    if had_cuda:
        torch.cuda.empty_cache()


class _Resident:
    """load/unload of one module (a free-standing helper, not a base class of the components)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.device = torch.device("cpu")

    def load(self, device: torch.device) -> None:
        device = torch.device(device)
        if device != self.device:
            _move(self.module, device)
            self.device = device

    def unload(self) -> None:
        if self.device.type != "cpu":
            _free(self.module)
            self.device = torch.device("cpu")


class TorchTextEncoder:
    """umT5 behind the TextEncoder Protocol. ``rebuild`` (optional) makes the model again (from its
    memory-mapped checkpoint, or random weights from their seed) after ``release_ram`` dropped it
    from host memory: the memory plan does that when RAM cannot hold it beside the DiT."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        warn: Callable[[str], None] | None = None,
        rebuild: Callable[[], nn.Module] | None = None,
    ) -> None:
        self._res = _Resident(model)
        self.model = model
        self.tokenizer = tokenizer
        self.warn = warn
        self.rebuild = rebuild
        self.released = False

    def release_ram(self) -> bool:
        """Unload and drop the weights from host memory (False: no way to make them again)."""
        if self.released:
            return True
        if self.rebuild is None:
            return False
        self.unload()
        self.model.to("meta")
        self.released = True
        return True

    def materialize(self) -> None:
        """Make the weights again after ``release_ram`` (on the CPU; ``load`` does it too)."""
        if self.released:
            assert self.rebuild is not None
            self.model = self.rebuild()
            self._res = _Resident(self.model)
            self.released = False

    def load(self, device: torch.device) -> None:
        self.materialize()
        self._res.load(device)

    def unload(self) -> None:
        self._res.unload()

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str]) -> list[Tensor]:
        batch = self.tokenizer(list(prompts))
        if batch.any_truncated and self.warn is not None:
            self.warn(f"prompt longer than {self.tokenizer.max_length} tokens: the end was cut off")
        dev = self._res.device
        hidden = self.model(batch.ids.to(dev), batch.mask.to(dev))
        return [hidden[i, :n].float() for i, n in enumerate(batch.lengths)]


def _lora_key(pairs: Sequence[tuple[LoraFile, float]]) -> list[tuple[str, str, float]]:
    return [(str(f.path), f.sha256, float(st)) for f, st in pairs]


class TorchDenoiser:
    """One DiT (or Wan2.2 expert) behind the Denoiser Protocol.

    swap_blocks: how many of the last blocks stream from pinned CPU memory (engines/block_swap.py;
      the planner chooses the number); 0 keeps the whole model resident.
    compile: torch.compile each block (regional compilation: the blocks share one graph, so start-up
      costs about one block's compile); ``compile_mode`` as torch.compile's ``mode``.
    step_cache: a threshold (or a StepCacheConfig) for TeaCache-style step skipping
      (engines/step_cache.py); None or 0 runs every step. ``begin(timesteps)`` before a generation
      lets it always run the final step; ``cache_stats`` reports what was skipped.
    sequence_group: set by a parallel run (wan_desktop/parallel/ranked.py) while it calls: the
      process group whose ranks share the tokens (Ulysses, models/sequence_parallel.py), and
      ``sequence_guard``, called before each of its exchanges.
    """

    sequence_group: object = None
    sequence_guard: Callable[[], None] | None = None

    def __init__(
        self,
        model: nn.Module,
        *,
        swap_blocks: int = 0,
        compile: bool = False,
        compile_mode: str | None = None,
        step_cache: object = None,
        rebuild: Callable[[LoraPairs], nn.Module] | None = None,
        released: bool = False,
        loras: LoraPairs = (),
    ) -> None:
        from .step_cache import StepCache, StepCacheConfig

        self._res = _Resident(model)
        self.model = model
        self.swap_blocks = swap_blocks
        self.compile = compile
        self.compile_mode = compile_mode
        if isinstance(step_cache, (int, float)) and step_cache > 0:
            step_cache = StepCacheConfig(threshold=float(step_cache))
        self.cache = StepCache(step_cache) if isinstance(step_cache, StepCacheConfig) else None
        self._swap = None
        self.pin = True  # streamed blocks in page-locked host memory (set_swap_blocks)
        self._runners: list[Callable[..., Tensor]] | None = None
        self._device = torch.device("cpu")
        self.lora = None  # without ``rebuild``: the LoraMerge (originals kept) of set_loras
        # ``rebuild(loras)`` makes the model again from its memory-mapped checkpoint with those
        # (LoraFile, strength) pairs merged (before any runtime quantization); ``loras``: the
        # pairs ``model`` already has. It serves the host-RAM release (memory plan: one Wan2.2
        # expert in RAM) and LoRA changes, so no copy of the base weights is ever kept.
        # ``released``: only a meta-device shell is kept until the first load.
        self.rebuild = rebuild
        self.loras = tuple(loras)
        self.released = released and rebuild is not None

    def release_ram(self) -> bool:
        """Unload, then drop the weights from host memory too; the next ``load`` rebuilds them
        (with the same LoRAs). Returns whether they are released (not without ``rebuild``)."""
        if self.released:
            return True
        if self.rebuild is None:
            return False
        self.unload()
        self._swap = None  # its pinned host buffers hold the streamed blocks
        self._runners = None
        self.model.to("meta")
        self.released = True
        return True

    def _materialize(self) -> None:
        if not self.released:
            return
        assert self.rebuild is not None
        model = self.rebuild(self.loras)
        self.model = model
        self._res = _Resident(model)
        self.released = False

    def set_loras(self, loras: Sequence[tuple[LoraFile, float]]) -> None:
        """Merge ``(LoraFile, strength)`` pairs instead of the current ones (none: base weights).

        With ``rebuild`` the model is read again from its checkpoint with the new pairs merged
        (exact, and no copy of the base weights in host RAM; the old weights leave memory first)
        and goes back where it was. Without it (a model made in memory) the previous LoRAs are
        unmerged from the originals the merge kept, bit for bit: a resident model is merged where
        it lives (on the GPU: fast); a block-swapped one is unloaded, merged on the CPU and
        re-packed, since the swapper's pinned buffers hold the old tensors.
        """
        from wan_desktop.lora import merge_loras

        pairs = tuple(loras)
        if self.rebuild is not None:
            if _lora_key(pairs) == _lora_key(self.loras):
                return
            device = self._device
            was_released = self.released
            self.release_ram()
            self.loras = pairs
            if not was_released and device.type != "cpu":
                self.load(device)
            elif not was_released:
                self._materialize()
            return
        device, swapped = self._device, self._swap is not None
        if swapped:
            self.unload()
            self._swap = None
        if self.lora is not None:
            self.lora.unmerge()
            self.lora = None
        if pairs:
            self.lora = merge_loras(self.model, pairs)
        self.loras = pairs
        if swapped and device.type != "cpu":
            self.load(device)

    def _wrap(self, block: nn.Module) -> Callable[..., Tensor]:
        if not self.compile:
            return block
        return torch.compile(block, mode=self.compile_mode, dynamic=False)

    def load(self, device: torch.device) -> None:
        from .torch_ops import warm_capabilities

        device = torch.device(device)
        warm_capabilities(device)
        self._materialize()
        if self.swap_blocks:
            from .block_swap import BlockSwap

            if self._swap is None:
                self._swap = BlockSwap(
                    self.model, self.swap_blocks, wrap_block=self._wrap, pin=self.pin
                )
            self._swap.load(device)
        else:
            self._res.load(device)
            if self._runners is None:
                self._runners = [self._wrap(b) for b in self.model.blocks]
        self._device = device

    def unload(self) -> None:
        if self._swap is not None:
            self._swap.unload()
        else:
            self._res.unload()
        self._device = torch.device("cpu")

    def set_swap_blocks(self, n: int, *, pin: bool = True) -> None:
        """Stream the last ``n`` blocks from now on (the memory plan's choice; clamped to the
        model's blocks), from page-locked host memory unless ``pin`` is False. Unloads first;
        the next ``load`` places the model anew."""
        n = max(0, min(int(n), len(self.model.blocks)))
        if n == self.swap_blocks and pin == self.pin:
            return
        self.unload()
        self.swap_blocks = n
        self.pin = pin
        self._swap = None
        self._runners = None

    def begin(self, timesteps: Sequence[float] | None = None) -> None:
        """Start of a run (Denoiser.begin): resets the step cache and gives it the schedule."""
        if self.cache is not None:
            self.cache.begin(timesteps)

    @property
    def cache_stats(self) -> dict[str, object] | None:
        return self.cache.stats.as_dict() if self.cache is not None else None

    def _run_blocks(self, x: Tensor, state) -> Tensor:
        if self._swap is not None:
            return self._swap.run_blocks(x, state)
        from .block_swap import run_resident_blocks

        return run_resident_blocks(self.model, x, state, self._runners)

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
        dev = self._device
        model = self.model
        timestep = timestep.to(dev)
        extra = {} if vace is None else {"vace": vace.to(dev), "vace_scale": vace_scale}  # VACE
        if fps is not None or causal_block_size > 1:  # SkyReels DF (diffusion_forcing.py)
            extra |= {"fps": fps, "causal_block_size": causal_block_size}
        if self.sequence_group is not None:  # every rank of the group computes its tokens' share
            from ..models.sequence_parallel import sequence_parallel_forward

            return sequence_parallel_forward(
                model,
                self.sequence_group,  # type: ignore[arg-type]
                latents.to(dev),
                timestep,
                context.to(dev),
                y=None if y is None else y.to(dev),
                clip_fea=None if clip_fea is None else clip_fea.to(dev),
                run_blocks=self._run_blocks,
                guard=self.sequence_guard,
                **extra,
            )
        state = model.prepare(
            latents.to(dev),
            timestep,
            context.to(dev),
            y=None if y is None else y.to(dev),
            clip_fea=None if clip_fea is None else clip_fea.to(dev),
            **extra,
        )
        if self.cache is not None:
            h = self.cache(model, state, timestep, self._run_blocks)
        else:
            h = self._run_blocks(state.x, state)
        return model.finish(h, state)


class TorchVae:
    """Both VAE roles (decoder and encoder) over one module.

    ``tiling`` / ``encode_tiling`` (engines/vae_tiling.py, set from the memory plan): spatial
    tiles for the decode / the I2V conditioning encode; None runs whole frames. Either way each
    decoded chunk goes straight to the CPU (as uint8 frames for a generation), so the GPU never
    holds the whole video.
    ``decode_group``: set by a parallel run (wan_desktop/parallel/ranked.py) while every rank
    calls ``decode_frames``: the tiles are dealt over the group (engines/vae_tiles_parallel.py),
    rank 0 gets the frames, the other ranks None; ``decode_guard`` is called before each
    exchange of decoded tiles.
    """

    decode_group: object = None
    decode_guard: Callable[[], None] | None = None

    def __init__(
        self, model: nn.Module, tiling: object = None, encode_tiling: object = None
    ) -> None:
        self._res = _Resident(model)
        self.model = model
        self.tiling = tiling
        self.encode_tiling = encode_tiling

    def load(self, device: torch.device) -> None:
        self._res.load(device)

    def unload(self) -> None:
        self._res.unload()

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _decode(self, fn: Callable[..., Tensor], latents: Tensor, tiles: object) -> Tensor:
        from .vae_tiling import torch_decode_step

        cfg = self.model.cfg
        return fn(
            torch_decode_step(self.model),
            latents.to(self._res.device, self._dtype()),
            spatial_factor=cfg.spatial_factor,
            temporal_factor=cfg.temporal_factor,
            tiling=tiles if tiles is not None else self.tiling,
        )

    @torch.inference_mode()
    def decode(self, latents: Tensor, tiles: object = None) -> Tensor:
        """latents [B, z, T, h, w] -> video [B, 3, F, H, W] float32 on the CPU; ``tiles`` (a
        Tiling) overrides ``self.tiling`` for this call."""
        from .vae_tiling import decode_tiled

        return self._decode(decode_tiled, latents, tiles)

    @torch.inference_mode()
    def decode_frames(self, latents: Tensor, tiles: object = None) -> Tensor:
        """latents [1, z, T, h, w] -> uint8 frames [F, H, W, 3] on the CPU, streamed per chunk."""
        from .vae_tiling import decode_tiled_frames

        if self.decode_group is not None:
            from functools import partial

            from .vae_tiles_parallel import decode_tiled_frames_parallel

            fn = partial(
                decode_tiled_frames_parallel, group=self.decode_group, guard=self.decode_guard
            )
            return self._decode(fn, latents, tiles)  # type: ignore[arg-type]  # None: rank > 0
        return self._decode(decode_tiled_frames, latents, tiles)

    @torch.inference_mode()
    def encode(self, video: Tensor, tiles: object = None) -> Tensor:
        """video [B, 3, F, H, W] -> normalised latent mean, float32; ``tiles`` (a Tiling, else
        ``self.encode_tiling``) encodes spatial tiles and blends their latents."""
        from .vae_tiling import encode_tiled, torch_encode_step

        if video.dtype == torch.uint8:  # v2v frames: made [-1, 1] chunk by chunk (encode_tiled)
            video = video.to(self._res.device)
        else:
            video = video.to(self._res.device, self._dtype())
        self.model.check_video(video)
        cfg = self.model.cfg
        return encode_tiled(
            torch_encode_step(self.model),
            video,
            spatial_factor=cfg.spatial_factor,
            temporal_factor=cfg.temporal_factor,
            tiling=tiles if tiles is not None else self.encode_tiling,
        )


class TorchImageEncoder:
    def __init__(self, model: nn.Module) -> None:
        self._res = _Resident(model)
        self.model = model

    def load(self, device: torch.device) -> None:
        self._res.load(device)

    def unload(self) -> None:
        self._res.unload()

    @torch.inference_mode()
    def encode(self, images: Tensor) -> Tensor:
        return self.model.encode(images.to(self._res.device, torch.float32)).float()


# ----------------------------------------------------------------------------- random weights


def randomize(
    module: nn.Module, *, dtype: torch.dtype, device: torch.device | str, seed: int = 0
) -> nn.Module:
    """Give a module built with ``weights_on_meta`` random weights in place, on ``device``.

    For benchmarks (speed and memory do not depend on weight values): matrices ~ N(0, 1/fan_in),
    norm scales 1, biases 0, so activations stay O(1) through deep stacks. FP32_MODULES stay fp32.
    """
    from wan_desktop.models.layers import in_modules

    fp32 = tuple(getattr(module, "FP32_MODULES", ()))
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, p in list(module.named_parameters()):
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        target = torch.float32 if in_modules(name, fp32) else dtype
        t = torch.empty(p.shape, dtype=torch.float32, device=device)
        if p.ndim >= 2:
            fan_in = math.prod(p.shape[1:])
            t.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=gen)
        elif leaf in ("weight", "gamma") or "norm" in owner_name:
            t.fill_(1.0)
        elif leaf == "bias":
            t.zero_()
        else:  # modulation tables, embeddings of other ranks
            t.normal_(0.0, 0.02, generator=gen)
        owner._parameters[leaf] = nn.Parameter(t.to(target), requires_grad=False)
    for name, b in list(module.named_buffers()):
        if b is not None and b.device != torch.device(device):
            owner_name, _, leaf = name.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            owner._buffers[leaf] = b.to(device)
    return module.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- composition


def build_torch_components(
    variant: Variant,
    files: ModelFiles | None,
    *,
    device: torch.device,
    dtype: torch.dtype,
    warn: Callable[[str], None] | None = None,
    precision: str | None = None,
    attention: str = "sdpa",
    compile: bool = False,
    step_cache: float | None = None,
    swap_blocks: int = 0,
    loras: Sequence[LoraSpec | str] = (),
    load: bool = True,
    lazy_experts: bool = False,
    encoders: bool = True,
    vae: bool = True,
) -> Components:
    """Every component of ``variant`` as torch modules, loaded onto ``device``
    (``load=False``: all left on the CPU, for a memory plan to place: engines/residency.py).
    ``lazy_experts`` (Wan2.2): only the first expert is made now; the other is read from
    its memory-mapped file (random weights: made again from their seed) at its first use, and
    either can leave host RAM again (``TorchDenoiser.release_ram``): never both in RAM.

    ``files`` None: full-size random weights (benchmarks), marked as such in ``info``.
    The VAE runs in fp32 on the CPU and in bf16/fp16 on a GPU (as the field does for speed).
    DiT options (engines/torch_ops.py, block_swap.py, step_cache.py):
    precision: None keeps weights as stored (an fp8 checkpoint runs in FP8 where the GPU can);
      "bf16"/"fp16" dequantize fp8 weights to ``dtype``; "fp8"/"int8" quantize the block linears.
    attention: "sdpa" (torch picks cuDNN/flash), "sage", or "sdpa-<kernel>".
    compile: torch.compile each DiT block. step_cache: TeaCache threshold (None/0: off).
    swap_blocks: the last N DiT blocks stream from pinned CPU memory.
    loras: wan_desktop.lora.LoraSpec items, checked against the model's shapes before anything is
      read, merged into their expert's weights as it is read (before any runtime quantization:
      one rounding, and no copy of the base weights is kept; a later change re-reads the
      expert: TorchDenoiser.set_loras); recorded in ``info["loras"]``.
    encoders False (a parallel run's rank > 0): neither umT5 nor CLIP is read, and the VAE keeps
      only its decoder half (its tiles are shared); ``vae`` False: no VAE at all (a tiny VAE
      decodes on rank 0). What is not read is ``contracts.Elsewhere``.
    """
    from wan_desktop.checkpoints.materialize import weights_on_meta
    from wan_desktop.contracts import Components, Elsewhere
    from wan_desktop.models.clip import ClipVisionEncoder
    from wan_desktop.models.t5 import T5Encoder
    from wan_desktop.models.vace import make_dit as WanModel  # VaceWanModel too
    from wan_desktop.text import Tokenizer

    from .torch_ops import make_ops

    vae_dtype = dtype if device.type == "cuda" else torch.float32
    info: dict[str, object] = {}
    if files is None:
        home = device if load else torch.device("cpu")

        def rand(m: nn.Module, dt: torch.dtype, seed: int) -> nn.Module:
            return randomize(m, dtype=dt, device=home, seed=seed)

        dit_ops = make_ops(precision, attention)
        lazy_home = swap_blocks or lazy_experts

        def read_dit(i: int, pairs: LoraPairs = ()) -> nn.Module:  # the same weights each time
            with weights_on_meta():
                m = WanModel(variant.dit, dit_ops)
            # a swapped model is placed by the swapper: random weights start on the CPU
            m = randomize(m, dtype=dtype, device="cpu" if lazy_home else home, seed=i)
            return _finish_dit(m, pairs, precision)

        def read_t5() -> nn.Module:  # the same weights each time (seeded, same device)
            with weights_on_meta():
                m = T5Encoder(variant.t5)
            return rand(m, dtype, 10)

        def read_vae() -> nn.Module:
            with weights_on_meta():
                m = _vae_class(variant)(variant.vae)
            return rand(m, vae_dtype, 11)

        def read_clip() -> nn.Module | None:
            if not variant.clip:
                return None
            with weights_on_meta():
                m = ClipVisionEncoder(variant.clip)
            return rand(m, dtype, 12)

        def read_tokenizer() -> Tokenizer:
            return Tokenizer.for_random_weights(variant.t5.vocab_size)

        boundary = variant.defaults.boundary
        info.update(random_weights=True, variant=variant.name)
    else:
        from wan_desktop.checkpoints import load

        dit_ops = make_ops(precision, attention)

        def read_dit(i: int, pairs: LoraPairs = ()) -> nn.Module:
            m = load.load_dit(
                files, i, dtype=dtype, ops=dit_ops, keep_fp8=precision not in ("bf16", "fp16")
            )
            return _finish_dit(m, pairs, precision)

        def read_t5() -> nn.Module:
            return load.load_t5(files, dtype=dtype)

        def read_vae() -> nn.Module:
            return load.load_vae(files, dtype=vae_dtype)

        def read_clip() -> nn.Module | None:
            if not variant.dit.has_image_embedding:
                return None
            return load.load_clip(files, dtype=dtype)

        def read_tokenizer() -> Tokenizer:
            return load.load_tokenizer(files)

        boundary = files.boundary
        info.update(
            path=str(files.path), format=files.format, variant=variant.name, random_weights=False
        )
        if files.text_encoder is not None:  # the prompt-embedding cache's key (residency.py)
            info["text_encoder_files"] = [str(f) for f in files.text_encoder.files]
    n_experts = variant.experts if files is None else len(files.experts)
    lazy = lazy_experts and n_experts > 1
    with weights_on_meta():  # shells of the structure: LoRA checks need only shapes
        shells = [WanModel(variant.dit, dit_ops) for _ in range(n_experts)]
    lora_pairs = _read_loras(shells, loras)
    rebuilds = [(lambda pairs, i=i: read_dit(i, pairs)) for i in range(n_experts)]
    if lazy:  # the other experts stay shells until their first use
        dits = [read_dit(0, lora_pairs[0]), *shells[1:]]
    else:
        dits = [read_dit(i, lora_pairs[i]) for i in range(n_experts)]
    info.update(
        precision=precision or "as stored",
        attention=attention,
        compile=compile,
        step_cache=step_cache,
        swap_blocks=swap_blocks,
    )
    if loras:
        from wan_desktop.lora import EXPERTS, lora_records

        info["loras"] = [
            r for i, pairs in enumerate(lora_pairs) for r in lora_records(pairs, expert=EXPERTS[i])
        ]
    text: Any = Elsewhere("text encoder")
    image: Any = None
    if encoders:
        text = TorchTextEncoder(read_t5(), read_tokenizer(), warn, rebuild=read_t5)
        clip = read_clip()
        image = TorchImageEncoder(clip) if clip is not None else None
    elif variant.dit.has_image_embedding:
        image = Elsewhere("image encoder")
    vae_c: Any = Elsewhere("VAE")
    vae_enc: Any = vae_c
    if vae:
        vae_c = TorchVae(read_vae() if encoders else _decoder_only(read_vae()))
        vae_enc = vae_c if encoders else Elsewhere("VAE encoder")
    released = [lazy and i > 0 for i in range(len(dits))]
    denoisers = tuple(
        TorchDenoiser(
            m,
            swap_blocks=swap_blocks,
            compile=compile,
            step_cache=step_cache,
            rebuild=rebuilds[i],
            released=released[i],
            loras=lora_pairs[i],
        )
        for i, m in enumerate(dits)
    )
    if load:
        for c in (text, *denoisers, vae_c, *([image] if image else [])):
            c.load(device)
    return Components(
        variant=variant,
        text_encoder=text,
        denoisers=denoisers,
        vae_decoder=vae_c,
        vae_encoder=vae_enc,
        image_encoder=image,
        boundary=boundary,
        info=info,
    )


def _finish_dit(model: nn.Module, pairs: LoraPairs, precision: str | None) -> nn.Module:
    """A DiT just read: its LoRAs merged (nothing kept to unmerge: a change reads the file
    again), then the runtime quantization of ``precision`` fp8/int8 — once, of merged weights."""
    from .torch_ops import quantize_linears

    if pairs:
        from wan_desktop.lora import merge_loras

        merge_loras(model, pairs, keep_originals=False)
    if precision in ("fp8", "int8"):
        quantize_linears(model, precision)
    return model


def _read_loras(
    dits: Sequence[nn.Module], loras: Sequence[LoraSpec | str]
) -> list[list[tuple[LoraFile, float]]]:
    """Each expert's (LoraFile, strength) pairs, read and checked before any weight changes."""
    from wan_desktop.errors import ConfigError
    from wan_desktop.lora import EXPERTS, LoraSpec, load_loras

    specs = [s if isinstance(s, LoraSpec) else LoraSpec.parse(str(s)) for s in loras]
    if len(dits) < 2 and any(s.expert == "low" for s in specs):
        raise ConfigError(
            "--lora-low is for the low-noise expert of Wan2.2 A14B; this model has "
            "one diffusion model",
            remedy="Give the LoRA with --lora instead.",
        )
    return [load_loras(m, [s for s in specs if s.expert == EXPERTS[i]]) for i, m in enumerate(dits)]


def _decoder_only(vae: nn.Module) -> nn.Module:
    """``vae`` without its encoder half (``encoder`` and its output projection ``conv1``): a
    parallel run's rank > 0 decodes its share of the tiles and never encodes."""
    vae.encoder = None
    vae.conv1 = None
    return vae


def _vae_class(variant: Variant) -> type[nn.Module]:
    if variant.vae.version == "2.2":
        from wan_desktop.models.vae22 import WanVAE22

        return WanVAE22
    from wan_desktop.models.vae21 import WanVAE21

    return WanVAE21
