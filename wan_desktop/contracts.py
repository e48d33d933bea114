"""Component interfaces owned by the core and implemented by every backend (torch, ONNX Runtime,
TensorRT). The generation loop in pipeline.py talks only to these.

All tensors in and out are torch tensors on the component's device (TensorRT binds ``data_ptr()``,
ONNX Runtime uses IO binding), so the loop is identical for every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch is heavy: only for annotations
    import torch
    from torch import Tensor

    from .variants import Variant


@dataclass(frozen=True, kw_only=True)
class TensorSpec:
    """One graph input or output: name, dims (ints or symbolic names) and dtype name."""

    name: str
    dims: tuple[int | str, ...]
    dtype: str = "float32"


@dataclass(frozen=True, kw_only=True)
class ComponentSpec:
    """The export/runtime contract of one component: drives ONNX export, engine build, buffer
    allocation and validation. ``rtol`` is the parity tolerance of an fp32 export against torch."""

    name: str  # "t5" | "dit" | "vae_decoder" | "vae_encoder" | "clip"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    rtol: float = 1e-4


@runtime_checkable
class Component(Protocol):
    def load(self, device: torch.device) -> None:
        """Put weights / engines on ``device``. Idempotent."""

    def unload(self) -> None:
        """Free every device buffer this component holds. Idempotent."""


@runtime_checkable
class TextEncoder(Component, Protocol):
    def encode(self, prompts: Sequence[str]) -> list[Tensor]:
        """Clean, tokenize (512 tokens) and encode. Returns one [L_i, text_dim] tensor per prompt,
        trimmed to its real tokens (EOS kept); the pipeline zero-pads to text_len."""


@runtime_checkable
class Velocity(Protocol):
    """What the denoising loop needs of a model: its velocity (any callable of this form)."""

    def __call__(
        self,
        latents: Tensor,
        timestep: Tensor,
        context: Tensor,
        *,
        y: Tensor | None = None,
        clip_fea: Tensor | None = None,
    ) -> Tensor:
        """One DiT forward.

        latents:  [B, z, T, H, W] noisy latents
        timestep: [B] or, per token (TI2V), [B, L] values in [0, 1000]
        context:  [B, text_len, text_dim] text embeddings zero-padded to text_len
        y:        [B, 4 + z, T, H, W] mask + encoded conditioning frames (I2V / FLF2V)
        clip_fea: [B, 257·n, 1280] CLIP features of n images (Wan2.1 I2V n=1, FLF2V n=2)
        returns   [B, z, T, H, W] velocity, float32
        """


@runtime_checkable
class Denoiser(Component, Velocity, Protocol):
    """One DiT (one Wan2.2 expert) of a backend."""

    def begin(self, timesteps: Sequence[float]) -> None:
        """Start of a run, with its model timesteps in order (``pipeline.begin_run``). The torch
        backend's step cache resets and learns the last step (always computed); a no-op for
        backends without a step cache."""


@runtime_checkable
class VaeDecoder(Component, Protocol):
    def decode(self, latents: Tensor) -> Tensor:
        """Normalized latents [B, z, T, H, W] -> video [B, 3, 4(T-1)+1, H·s, W·s] in [-1, 1]."""

    def decode_frames(self, latents: Tensor) -> Tensor:
        """Normalized latents [1, z, T, H, W] -> uint8 frames [4(T-1)+1, H·s, W·s, 3] on the CPU,
        streamed chunk by chunk (a generation never holds its video in float), equal to
        ``video.to_uint8_frames(decode(latents))``."""


@runtime_checkable
class VaeEncoder(Component, Protocol):
    def encode(self, video: Tensor) -> Tensor:
        """Video [B, 3, F, H, W] in [-1, 1] (F = 4n+1) -> normalized latent mean [B, z, T, h, w].
        A uint8 video (0..255) is taken too: each chunk becomes [-1, 1] floats only as it is
        encoded (engines/vae_tiling.encode_tiled), so a whole float copy never exists."""


@runtime_checkable
class ImageEncoder(Component, Protocol):
    def encode(self, images: Tensor) -> Tensor:
        """Images [N, 3, H, W] in [-1, 1], any size -> CLIP features [N, 257, 1280]."""


@dataclass(kw_only=True)
class Components:
    """What one generation needs, whatever backend built it."""

    variant: Variant
    text_encoder: TextEncoder
    denoisers: tuple[Denoiser, ...]  # (model,) or, for Wan2.2 A14B, (high_noise, low_noise)
    vae_decoder: VaeDecoder
    vae_encoder: VaeEncoder | None = None
    image_encoder: ImageEncoder | None = None
    boundary: float | None = None  # Wan2.2: expert switch at boundary·1000 (from the model files)
    info: dict[str, object] = field(default_factory=dict)  # model path, format, random-weights flag


class Elsewhere:
    """A component this process does not hold because another one runs it: a parallel run's
    rank > 0 leaves the prompt and image encoders, the VAE encoder and a decoder whose work is
    not shared to rank 0 (parallel/ranked.py never calls them there). Loading and unloading do
    nothing; a call is a bug, named."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"Elsewhere({self.what!r})"

    def load(self, device: torch.device) -> None:
        return None

    def unload(self) -> None:
        return None

    def _refuse(self, *args: object, **kw: object) -> Tensor:
        raise RuntimeError(f"the {self.what} runs on rank 0 of a parallel run, not here")

    encode = decode = decode_frames = _refuse
