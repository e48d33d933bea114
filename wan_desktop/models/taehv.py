# Port of madebyollin/taehv@1f14a56 taehv.py (MIT): TAEHV, the tiny autoencoder for Wan's latent
# spaces — ``taew2_1`` (Wan2.1 VAE, z=16, 8×, also Wan2.2 A14B) and ``taew2_2`` (Wan2.2 VAE, z=48,
# 16× with a 2×2 pixel shuffle). Attribute names equal the keys of the released files
# (``encoder.N.*`` / ``decoder.N.*``, nn.Sequential indices), so they load strictly.
# Deviations:
# - Widths, latent channels, patch size and the temporal strides are read from the file's tensor
#   shapes (TaeConfig.from_shapes), not from its file name; lightx2v's "lighttae" files with the
#   same layout load too.
# - One time-parallel pass per chunk with the causal memory carried between chunks (``Memory``),
#   instead of upstream's parallel / frame-by-frame work queue: any chunk size gives the same frames.
# - Latents and video use Wan's layouts: [B, z, T, h, w] in, [B, 3, F, H, W] in [-1, 1] out (upstream
#   takes NTCHW and returns [0, 1]). TAEHV reads the diffusion model's (normalized) latents directly:
#   no latents_mean / std.
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError


def _conv(n_in: int, n_out: int, **kw) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kw)


class Clamp(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3  # soft clamp of the latents to about ±3


class MemBlock(nn.Module):
    """Residual 3-conv block that also sees the previous frame's input (its causal memory)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(n_in * 2, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out)
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: Tensor, past: Tensor) -> Tensor:
        return self.act(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class TPool(nn.Module):
    """Merge ``stride`` consecutive frames into one (channels stacked, 1×1 conv)."""

    def __init__(self, n_f: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n_f * stride, n_f, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # [N·T, C, H, W] -> [N·T/stride, C, H, W]
        _, c, h, w = x.shape
        return self.conv(x.reshape(-1, self.stride * c, h, w))


class TGrow(nn.Module):
    """Split each frame into ``stride`` frames (1×1 conv to stride·C channels)."""

    def __init__(self, n_f: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n_f, n_f * stride, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # [N·T, C, H, W] -> [N·T·stride, C, H, W]
        _, c, h, w = x.shape
        return self.conv(x).reshape(-1, c, h, w)


@dataclass(frozen=True, kw_only=True)
class TaeConfig:
    latent_channels: int = 16
    patch_size: int = 1
    widths: tuple[int, int, int, int] = (256, 128, 64, 64)  # decoder stages
    encoder_width: int = 64
    decoder_time_upscale: tuple[bool, bool, bool] = (False, True, True)
    encoder_time_downscale: tuple[bool, bool, bool] = (True, True, False)
    has_encoder: bool = True

    @property
    def spatial_factor(self) -> int:
        return 8 * self.patch_size

    @property
    def t_upscale(self) -> int:
        return 2 ** sum(self.decoder_time_upscale)

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, tuple[int, ...]], name: str = "file") -> TaeConfig:
        """The architecture of a TAEHV state dict, from its tensor shapes alone."""
        if "super" in name.lower():  # taew2_2_super, taehv1_5_super: another, larger decoder
            raise CheckpointError(
                f"{name}: the super variant is not supported",
                remedy="Use taew2_1 (Wan2.1 / Wan2.2 A14B) or taew2_2 (Wan2.2 5B) from "
                "madebyollin/taehv.",
            )
        try:
            n0, z = shapes["decoder.1.weight"][:2]
            n1 = shapes["decoder.8.weight"][0]
            n2 = shapes["decoder.14.weight"][0]
            n3 = shapes["decoder.20.weight"][0]
            out = shapes["decoder.22.weight"][0]
            grow = tuple(
                shapes[f"decoder.{i}.conv.weight"][0] // n for i, n in ((7, n0), (13, n1), (19, n2))
            )
        except (KeyError, IndexError):
            raise CheckpointError(
                f"{name}: not a TAEHV (taew2_1 / taew2_2) decoder: expected "
                "decoder.1 ... decoder.22 tensors",
                remedy="Use taew2_1 (Wan2.1 / Wan2.2 A14B) or taew2_2 (Wan2.2 "
                "5B) from madebyollin/taehv.",
            ) from None
        patch = round((out / 3) ** 0.5)
        if 3 * patch * patch != out:
            raise CheckpointError(f"{name}: decoder output has {out} channels, not 3·p²")
        enc = "encoder.0.weight" in shapes
        p2, p7, p12 = (
            shapes.get(f"encoder.{i}.conv.weight", (64, 128))[1]
            // shapes.get(f"encoder.{i}.conv.weight", (64, 128))[0]
            for i in (2, 7, 12)
        )
        return cls(
            latent_channels=z,
            patch_size=patch,
            widths=(n0, n1, n2, n3),
            encoder_width=shapes["encoder.0.weight"][0] if enc else 64,
            # a file may store a 2× TGrow where we (and upstream) run 1×: handled on load
            decoder_time_upscale=(False, grow[1] >= 2, grow[2] >= 2),
            encoder_time_downscale=(p2 >= 2, p7 >= 2, p12 >= 2) if enc else (True, True, False),
            has_encoder=enc,
        )


class Memory:
    """The causal state of one pass: for every MemBlock, the last frame of its previous input."""

    def __init__(self) -> None:
        self.last: dict[int, Tensor] = {}


def _run(seq: nn.Sequential, x: Tensor, memory: Memory) -> Tensor:
    """x [N, T, C, H, W] through ``seq`` in parallel over T; ``memory`` carries each MemBlock's
    previous frame across calls (zeros before the first), so chunked runs equal one whole run."""
    n, t = x.shape[:2]
    h = x.reshape(n * t, *x.shape[2:])
    for i, block in enumerate(seq):
        if isinstance(block, MemBlock):
            frames = h.reshape(n, -1, *h.shape[1:])
            first = memory.last.get(i, torch.zeros_like(frames[:, :1]))
            past = torch.cat([first, frames[:, :-1]], dim=1)
            memory.last[i] = frames[:, -1:]
            h = block(h, past.reshape(h.shape))
        else:
            h = block(h)
    return h.reshape(n, -1, *h.shape[1:])


class TAEHV(nn.Module):
    """Tiny VAE: ``decode`` latents to video and ``encode`` video to latents, both causal."""

    def __init__(self, cfg: TaeConfig = TaeConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        p, z = cfg.patch_size, cfg.latent_channels
        if cfg.has_encoder:
            e = cfg.encoder_width
            s = [2 if d else 1 for d in cfg.encoder_time_downscale]
            self.encoder = nn.Sequential(
                _conv(3 * p * p, e), nn.ReLU(),
                TPool(e, s[0]), _conv(e, e, stride=2, bias=False), MemBlock(e, e), MemBlock(e, e),
                MemBlock(e, e),
                TPool(e, s[1]), _conv(e, e, stride=2, bias=False), MemBlock(e, e), MemBlock(e, e),
                MemBlock(e, e),
                TPool(e, s[2]), _conv(e, e, stride=2, bias=False), MemBlock(e, e), MemBlock(e, e),
                MemBlock(e, e),
                _conv(e, z),
            )  # fmt: skip
        n = cfg.widths
        g = [2 if u else 1 for u in cfg.decoder_time_upscale]
        self.decoder = nn.Sequential(
            Clamp(), _conv(z, n[0]), nn.ReLU(),
            MemBlock(n[0], n[0]), MemBlock(n[0], n[0]), MemBlock(n[0], n[0]),
            nn.Upsample(scale_factor=2), TGrow(n[0], g[0]), _conv(n[0], n[1], bias=False),
            MemBlock(n[1], n[1]), MemBlock(n[1], n[1]), MemBlock(n[1], n[1]),
            nn.Upsample(scale_factor=2), TGrow(n[1], g[1]), _conv(n[1], n[2], bias=False),
            MemBlock(n[2], n[2]), MemBlock(n[2], n[2]), MemBlock(n[2], n[2]),
            nn.Upsample(scale_factor=2), TGrow(n[2], g[2]), _conv(n[2], n[3], bias=False),
            nn.ReLU(), _conv(n[3], 3 * p * p),
        )  # fmt: skip

    def decode(self, latents: Tensor, *, chunk: int | None = None) -> Tensor:
        """[B, z, T, h, w] latents (as the DiT sees them) -> [B, 3, t_up·(T−1)+1, h·s, w·s] in
        [-1, 1]. ``chunk`` latent frames per pass (None: all at once; less memory when set)."""
        return torch.cat(list(self.decode_chunks(latents, chunk=chunk)), dim=2)

    def decode_chunks(self, latents: Tensor, *, chunk: int | None = None) -> Iterator[Tensor]:
        """:meth:`decode` one pass at a time: [B, 3, n, h·s, w·s] pieces in [-1, 1] whose
        concatenation along frames is the decode (callers stream them off the GPU)."""
        x = latents.transpose(1, 2)  # [B, T, z, h, w]
        mem = Memory()
        step = chunk or x.shape[1]
        skip = self.cfg.t_upscale - 1  # the first latent frame is one video frame (causal VAE)
        for i in range(0, x.shape[1], step):
            y = _run(self.decoder, x[:, i : i + step], mem)
            if self.cfg.patch_size > 1:
                y = F.pixel_shuffle(y.flatten(0, 1), self.cfg.patch_size).unflatten(0, y.shape[:2])
            if i == 0:
                y = y[:, skip:]
            yield (y.clamp(0, 1) * 2 - 1).transpose(1, 2)

    def encode(self, video: Tensor) -> Tensor:
        """[B, 3, F, H, W] in [-1, 1] -> latents [B, z, T, H/s, W/s]; frames padded (last repeated)
        to a multiple of the temporal stride."""
        if not self.cfg.has_encoder:
            raise CheckpointError("this tiny VAE file has no encoder (decoder only)")
        x = ((video + 1) / 2).transpose(1, 2)  # [B, F, 3, H, W] in [0, 1]
        if self.cfg.patch_size > 1:
            x = F.pixel_unshuffle(x.flatten(0, 1), self.cfg.patch_size).unflatten(0, x.shape[:2])
        stride = 2 ** sum(self.cfg.encoder_time_downscale)
        if x.shape[1] % stride:
            x = torch.cat([x, x[:, -1:].expand(-1, stride - x.shape[1] % stride, -1, -1, -1)], 1)
        return _run(self.encoder, x, Memory()).transpose(1, 2)


def fit_state_dict(model: TAEHV, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A file's TGrow conv may hold more output channels than the model runs (trained with 2× where
    the preview decoder runs 1×): keep the last-timestep channels, as upstream does."""
    own = model.state_dict()
    out = dict(state)
    for i, layer in enumerate(model.decoder):
        key = f"decoder.{i}.conv.weight"
        if isinstance(layer, TGrow) and key in out and out[key].shape[0] > own[key].shape[0]:
            out[key] = out[key][-own[key].shape[0] :]
    if not model.cfg.has_encoder:
        out = {k: v for k, v in out.items() if not k.startswith("encoder.")}
    return out
