"""Tiny-VAE (TAEHV) decoding for live previews and a fast final decode.

``TaePreview`` is what the GUI's worker calls on each ``StepDone.preview`` (the current x0 estimate,
[z, T, h, w]) to get real frames instead of a linear latent→RGB projection; ``TinyVaeDecoder`` puts
the same model behind the VaeDecoder Protocol for ``--tiny-vae`` (a fast, lower-quality decode).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from wan_desktop.errors import ConfigError


def _check_z(model: torch.nn.Module, z_dim: int | None, path: Path) -> None:
    z = model.cfg.latent_channels
    if z_dim is not None and z != z_dim:
        want = "taew2_2 (Wan2.2 5B)" if z_dim == 48 else "taew2_1 (Wan2.1, Wan2.2 A14B)"
        raise ConfigError(
            f"tiny VAE {path.name} decodes {z}-channel latents; this model makes "
            f"{z_dim}-channel latents",
            remedy=f"Use {want}.",
        )


class TinyVaeDecoder:
    """The VaeDecoder Protocol over a TAEHV: normalized latents -> video in [-1, 1]."""

    def __init__(
        self,
        path: str | Path,
        *,
        z_dim: int | None = None,
        dtype: torch.dtype = torch.float32,
        chunk: int | None = 4,
    ) -> None:
        from wan_desktop.checkpoints.load import load_taehv

        self.path = Path(path)
        self.model = load_taehv(self.path, dtype=dtype)
        _check_z(self.model, z_dim, self.path)
        self.dtype = dtype
        self.chunk = chunk  # latent frames per pass: bounds activation memory at 720p
        self.device = torch.device("cpu")

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, *, dtype: torch.dtype = torch.float32, chunk: int | None = 4
    ) -> TinyVaeDecoder:
        """Over a TAEHV module already built (benchmarks with random weights, tests)."""
        self = cls.__new__(cls)
        self.path, self.model, self.dtype, self.chunk = Path("(in memory)"), model, dtype, chunk
        self.device = torch.device("cpu")
        return self

    def load(self, device: torch.device) -> None:
        device = torch.device(device)
        if device != self.device:
            self.model.to(device)
            self.device = device

    def unload(self) -> None:
        if self.device.type != "cpu":
            self.model.to("cpu")
            self.device = torch.device("cpu")
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def decode(self, latents: Tensor, *, tiles: object = None) -> Tensor:
        """``tiles`` (the big VAE's spatial tiling) is accepted and not needed: the tiny VAE's
        activations are small, and it bounds them with temporal chunks instead."""
        x = latents.to(self.device, self.dtype)
        return self.model.decode(x, chunk=self.chunk).float()

    @torch.inference_mode()
    def decode_frames(self, latents: Tensor) -> Tensor:
        """uint8 frames [F, H, W, 3] on the CPU, each pass quantized on the device as it comes."""
        from wan_desktop.video import to_uint8_frames

        if latents.shape[0] != 1:
            raise ConfigError(
                f"decoding to frames takes one video, got latents {tuple(latents.shape)}"
            )
        x = latents.to(self.device, self.dtype)
        return torch.cat(
            [to_uint8_frames(part).cpu() for part in self.model.decode_chunks(x, chunk=self.chunk)]
        )


class TaePreview:
    """Previews for the GUI: ``preview(latents [z, T, h, w]) -> uint8 [F, H, W, 3]`` on the CPU."""

    def __init__(
        self,
        path: str | Path,
        *,
        z_dim: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> None:
        device = torch.device(device)
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        self.decoder = TinyVaeDecoder(path, z_dim=z_dim, dtype=dtype, chunk=None)
        self.decoder.load(device)

    def __call__(self, latents: Tensor) -> Tensor:
        if latents.ndim != 4:
            raise ConfigError(f"preview latents must be [z, T, h, w], got {list(latents.shape)}")
        return self.decoder.decode_frames(latents[None])
