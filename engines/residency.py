"""Apply a memory plan (wan_desktop/memory.py) to built components.

The generation loop only calls ``encode`` / ``__call__`` / ``decode``; the wrappers here decide
when each component is on the GPU, in the order the plan's phases assume:
- text encoder: loaded for the encode and released right after (or run on the CPU), prompt
  embeddings served from a small disk cache keyed by model and prompt (a hit never loads it);
- DiT experts: loaded at their first call; with ``experts_resident == 1`` loading one expert first
  unloads the other (Wan2.2's two 14B experts are never both on the GPU); block streaming as
  planned (engines/block_swap.py);
- VAE: loaded for encode/decode; before the decode the DiTs leave the GPU if the plan says so; the
  decode is tiled as planned (engines/vae_tiling.py).
The run owner (wan_desktop/run.py) chooses the plans and moves to the next one after a CUDA
out-of-memory error; this module only places components as one plan says.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from wan_desktop.contracts import Components

if TYPE_CHECKING:
    from wan_desktop.memory import Plan

log = logging.getLogger(__name__)

CACHE_FORMAT = "1"  # bump when the stored layout changes


# ----------------------------------------------------------------------------- prompt cache


def default_cache_dir() -> Path:
    """The prompt embeddings' folder in the user cache dir (file_hashes.cache_root)."""
    from .file_hashes import cache_root

    return cache_root() / "prompt-embeddings"


class PromptCache:
    """Text embeddings on disk, one safetensors file per (model, prompt), at most ``max_entries``
    (least recently used go first). ``model_key`` names the text encoder exactly (its files, their
    sizes and times, the precision it runs in): another model never reads these entries."""

    def __init__(self, root: Path, model_key: str, *, max_entries: int = 256) -> None:
        self.root = Path(root)
        self.model_key = model_key
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def _path(self, prompt: str) -> Path:
        h = hashlib.sha256(f"{CACHE_FORMAT}\0{self.model_key}\0{prompt}".encode()).hexdigest()
        return self.root / f"{h[:32]}.safetensors"

    def get(self, prompt: str) -> Tensor | None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self._path(prompt)
        try:
            data = load_file(str(path))
            emb = data["embedding"]
        except FileNotFoundError:
            self.misses += 1
            return None
        except (SafetensorError, KeyError, OSError, ValueError) as e:  # a damaged entry: recompute
            log.warning("prompt cache entry %s unreadable (%s): recomputing", path.name, e)
            self.misses += 1
            return None
        os.utime(path)  # recently used
        self.hits += 1
        return emb

    def put(self, prompt: str, embedding: Tensor) -> None:
        from safetensors.torch import save_file

        path = self._path(prompt)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            save_file(
                {"embedding": embedding.detach().float().cpu().contiguous()},
                str(tmp),
                metadata={"model": self.model_key[:200]},
            )
            os.replace(tmp, path)  # atomic: a reader never sees half a file
            self._prune()
        except OSError as e:  # a full or read-only disk costs speed, not the run
            log.warning("prompt cache not written (%s)", e)

    def _prune(self) -> None:
        files = sorted(self.root.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
        for old in files[: max(0, len(files) - self.max_entries)]:
            old.unlink(missing_ok=True)


def text_model_key(components: Components, precision: str) -> str:
    """What decides the embeddings: the text encoder's files (path, size, mtime) or, for random
    weights, the variant; the precision it runs in; the text length."""
    v = components.variant
    info = components.info
    parts = [v.name, f"t5={v.t5}", f"text_len={v.dit.text_len}", f"precision={precision}"]
    files = info.get("text_encoder_files")
    if info.get("random_weights"):
        parts.append("random-weights")
    elif isinstance(files, (list, tuple)):
        for f in files:
            try:
                st = Path(f).stat()
                parts.append(f"{Path(f).resolve()}:{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                parts.append(str(f))
    else:
        parts.append(f"path={info.get('path')}")
    return "|".join(parts)


# ----------------------------------------------------------------------------- wrappers


def _device_of(device: torch.device | str) -> torch.device:
    return torch.device(device)


class _Group:
    """The denoisers and the VAE of one run: who is on the GPU, as the plan allows."""

    def __init__(
        self,
        denoisers: Sequence[Any],
        device: torch.device,
        *,
        exclusive: bool,
        release_before_decode: bool,
        release_ram: bool = False,
    ) -> None:
        self.denoisers = list(denoisers)
        self.device = device
        self.exclusive = exclusive
        self.release_ram = release_ram  # an unloaded expert leaves host RAM too (re-read later)
        self.release_before_decode = release_before_decode
        self.loaded: set[int] = set()

    def activate(self, i: int) -> None:
        if i in self.loaded:
            return
        if self.exclusive:
            for j in sorted(self.loaded):
                self.denoisers[j].unload()
                self.loaded.discard(j)
            _free_cuda(self.device)
        if self.release_ram and len(self.denoisers) > 1:
            for j, den in enumerate(self.denoisers):
                drop = getattr(den, "release_ram", None)
                if j != i and j not in self.loaded and callable(drop):
                    drop()
            gc.collect()
        self.denoisers[i].load(self.device)
        self.loaded.add(i)

    def release_all(self) -> None:
        for j in sorted(self.loaded):
            self.denoisers[j].unload()
        self.loaded.clear()
        _free_cuda(self.device)


class PlannedTextEncoder:
    """TextEncoder on the plan's device for the encode only, with the prompt cache in front."""

    def __init__(
        self,
        inner: Any,
        device: torch.device,
        *,
        cache: PromptCache | None,
        int8: bool = False,
        release_ram: bool = False,
    ) -> None:
        self.inner = inner
        self.device = device
        self.cache = cache
        self.int8 = int8  # weight-only int8 linears (re-applied after a rebuild)
        self.release_ram = release_ram  # dropped from host RAM after encoding
        self.encoded: list[str] = []  # prompts the encoder really ran on (tests, logs)

    def load(self, device: torch.device) -> None:  # loads lazily, at encode time
        return None

    def unload(self) -> None:
        self.inner.unload()

    def encode(self, prompts: Sequence[str]) -> list[Tensor]:
        out: list[Tensor | None] = [self.cache.get(p) if self.cache else None for p in prompts]
        todo = [i for i, e in enumerate(out) if e is None]
        if todo:
            materialize = getattr(self.inner, "materialize", None)
            if callable(materialize):
                materialize()  # on the CPU, before any quantization
            if self.int8:
                _quantize_text_encoder(self.inner)
            self.inner.load(self.device)
            try:
                fresh = self.inner.encode([prompts[i] for i in todo])
            finally:
                if self.device.type != "cpu":
                    self.inner.unload()  # released: the DiT gets the memory
                    _free_cuda(self.device)
                drop = getattr(self.inner, "release_ram", None)
                if self.release_ram and callable(drop):
                    drop()
                    gc.collect()
            for i, e in zip(todo, fresh, strict=True):
                e = e.float().cpu()
                out[i] = e
                self.encoded.append(prompts[i])
                if self.cache is not None:
                    self.cache.put(prompts[i], e)
        return [e for e in out if e is not None]


class PlannedDenoiser:
    """One expert: on the GPU from its first call; its start-of-run hook and other attributes
    (cache_stats, model) pass on."""

    def __init__(self, inner: Any, group: _Group, index: int) -> None:
        self.inner = inner
        self._group = group
        self._index = index

    def load(self, device: torch.device) -> None:
        self._group.activate(self._index)

    def unload(self) -> None:
        self.inner.unload()
        self._group.loaded.discard(self._index)

    def begin(self, timesteps: Sequence[float]) -> None:
        self.inner.begin(timesteps)

    def __call__(self, latents: Tensor, timestep: Tensor, context: Tensor, **kw: Any) -> Tensor:
        self._group.activate(self._index)
        return self.inner(latents, timestep, context, **kw)

    def __getattr__(self, name: str) -> Any:  # cache_stats, model, set_loras ...
        return getattr(self.inner, name)


class PlannedVae:
    """VaeDecoder + VaeEncoder: loaded for each use; the DiTs released before a decode if planned."""

    def __init__(self, inner: Any, group: _Group, tiling: Any, encode_tiling: Any = None) -> None:
        self.inner = inner
        self._group = group
        self.tiling = tiling
        self.encode_tiling = encode_tiling

    def load(self, device: torch.device) -> None:
        self.inner.load(self._group.device)

    def unload(self) -> None:
        self.inner.unload()

    def encode(self, video: Tensor) -> Tensor:
        """I2V / TI2V conditioning, before the denoise: the VAE leaves the GPU afterwards (the
        plan's denoise phase counts no VAE weights; the decode loads it again)."""
        self.inner.load(self._group.device)
        try:
            if self.encode_tiling is not None and hasattr(self.inner, "encode_tiling"):
                return self.inner.encode(video, tiles=self.encode_tiling)
            return self.inner.encode(video)
        finally:
            if self._group.device.type != "cpu":
                self.inner.unload()
                _free_cuda(self._group.device)

    def _decode(self, method: str, latents: Tensor) -> Tensor:
        if self._group.release_before_decode:
            self._group.release_all()
        self.inner.load(self._group.device)
        fn = getattr(self.inner, method)
        if self.tiling is not None and hasattr(self.inner, "tiling"):
            return fn(latents, tiles=self.tiling)
        return fn(latents)

    def decode(self, latents: Tensor) -> Tensor:
        return self._decode("decode", latents)

    def decode_frames(self, latents: Tensor) -> Tensor:
        return self._decode("decode_frames", latents)


class PlannedImageEncoder:
    def __init__(self, inner: Any, device: torch.device) -> None:
        self.inner = inner
        self.device = device

    def load(self, device: torch.device) -> None:
        return None

    def unload(self) -> None:
        self.inner.unload()

    def encode(self, images: Tensor) -> Tensor:
        self.inner.load(self.device)
        try:
            return self.inner.encode(images)
        finally:
            if self.device.type != "cpu":
                self.inner.unload()
                _free_cuda(self.device)


def _tiling(tile: tuple[int, int] | None, overlap: int) -> Any:
    if tile is None:
        return None
    from .vae_tiling import Tiling

    return Tiling(tile=tile, overlap=overlap)


def apply_plan(
    raw: Components, plan: Plan, device: torch.device | str, *, cache: PromptCache | None = None
) -> Components:
    """``raw`` (built with nothing loaded, or everything unloaded) wrapped to follow ``plan``.
    Torch components are reconfigured in place: block streaming (``swap_blocks``), int8 T5."""
    dev = _device_of(device)
    for c in (
        raw.text_encoder,
        *raw.denoisers,
        raw.vae_decoder,
        raw.vae_encoder,
        raw.image_encoder,
    ):
        if c is not None:
            c.unload()
    _free_cuda(dev)
    for den in raw.denoisers:
        set_swap = getattr(den, "set_swap_blocks", None)
        if callable(set_swap):
            set_swap(plan.dit.swap_blocks, pin=plan.ram.pin)
    text_dev = dev if plan.text.where == "gpu" else torch.device("cpu")
    group = _Group(
        raw.denoisers,
        dev,
        exclusive=plan.dit.experts_resident == 1,
        release_before_decode=plan.dit.release_before_decode,
        release_ram=plan.ram.experts_in_ram == 1,
    )
    enc_tiles = _tiling(plan.vae.encode_tile, plan.vae.encode_overlap)
    vae = PlannedVae(raw.vae_decoder, group, _tiling(plan.vae.tile, plan.vae.overlap), enc_tiles)
    # a separate encoder (e.g. the decoder was swapped for a preview VAE) keeps its own wrapper
    encoder = (
        None
        if raw.vae_encoder is None
        else (
            vae
            if raw.vae_encoder is raw.vae_decoder
            else PlannedVae(raw.vae_encoder, group, None, enc_tiles)
        )
    )
    info = dict(raw.info)
    info.update(plan=plan.name, plan_predicted_peak_gib=round(plan.predicted.peak_gib, 3))
    return Components(
        variant=raw.variant,
        text_encoder=PlannedTextEncoder(
            raw.text_encoder,
            text_dev,
            cache=cache if plan.text.cache else None,
            int8=plan.text.precision == "int8",
            release_ram=not plan.ram.t5_in_ram,
        ),
        denoisers=tuple(PlannedDenoiser(d, group, i) for i, d in enumerate(raw.denoisers)),
        vae_decoder=vae,
        vae_encoder=encoder,
        image_encoder=(
            PlannedImageEncoder(raw.image_encoder, dev) if raw.image_encoder is not None else None
        ),
        boundary=raw.boundary,
        info=info,
    )


def _quantize_text_encoder(text: Any) -> None:
    """Weight-only int8 linears for the torch umT5 (engines/torch_ops.py); the embedding table
    stays in its dtype. Idempotent; other backends bring their own precision."""
    model = getattr(text, "model", None)
    if model is None or getattr(model, "_wan_int8", False):
        return
    from .torch_ops import quantize_linears

    quantize_linears(model, "int8")
    model._wan_int8 = True


def release(components: Components) -> None:
    """Every component off the GPU (after a run, or a failed attempt)."""
    dev = None
    for c in (
        components.text_encoder,
        *components.denoisers,
        components.vae_decoder,
        components.vae_encoder,
        components.image_encoder,
    ):
        if c is not None:
            c.unload()
            dev = getattr(getattr(c, "_group", None), "device", dev)
    if dev is not None:
        _free_cuda(dev)


# ----------------------------------------------------------------------------- helpers


def _free_cuda(device: torch.device | None = None) -> None:
    if device is not None and device.type != "cuda":
        return
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
