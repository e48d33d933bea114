# Port of Wan-Video/Wan2.2@42bf4cf wan/modules/vae2_2.py (Apache-2.0): the Wan2.2 VAE of TI2V-5B
# (z=48, 4×16×16: a 2×2 pixel patchify around a 4×8×8 causal VAE with residual up/down stages).
# Attribute names equal the keys of Wan2.2_VAE.pth. Primitives and the chunk drivers come from
# vae21.py; its header lists the deviations (explicit uniform cache, 'Rep' as zeros).
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..variants import VaeConfig
from . import vae21
from .layers import Ops
from .vae21 import (
    CausalCache,
    CausalConv3d,
    CausalVAE,
    Resample,
    ResidualBlock,
    register_scale,
    run_cached,
)


def patchify(x: Tensor, p: int) -> Tensor:
    """[B, C, F, H, W] -> [B, C·p·p, F, H/p, W/p]; channel index c·p² + r·p + q (r: column offset,
    q: row offset), as einops 'b c f (h q) (w r) -> b (c r q) f h w' upstream."""
    b, c, f, h, w = x.shape
    x = x.reshape(b, c, f, h // p, p, w // p, p)  # [b, c, f, h, q, w, r]
    return x.permute(0, 1, 6, 4, 2, 3, 5).reshape(b, c * p * p, f, h // p, w // p)


def unpatchify(x: Tensor, p: int) -> Tensor:
    b, cpp, f, h, w = x.shape
    x = x.reshape(b, cpp // (p * p), p, p, f, h, w)  # [b, c, r, q, f, h, w]
    return x.permute(0, 1, 4, 5, 3, 6, 2).reshape(b, cpp // (p * p), f, h * p, w * p)


class AvgDown3D(nn.Module):
    """Parameter-free shortcut of a downsampling stage: fold ft×fs×fs neighbours into channels,
    then average groups of channels down to ``out_dim``. Front zero-padding in time per chunk."""

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        self.out_dim, self.ft, self.fs = out_dim, factor_t, factor_s
        self.group = in_dim * factor_t * factor_s * factor_s // out_dim

    def forward(self, x: Tensor) -> Tensor:
        ft, fs = self.ft, self.fs
        pad = (ft - x.shape[2] % ft) % ft
        if pad:
            x = torch.cat([x.new_zeros(*x.shape[:2], pad, *x.shape[3:]), x], dim=2)
        b, c, t, h, w = x.shape
        x = x.reshape(b, c, t // ft, ft, h // fs, fs, w // fs, fs)
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # [b, c, ft, fs, fs, t', h', w']
        x = x.reshape(b, self.out_dim, self.group, t // ft, h // fs, w // fs)
        return x.mean(dim=2)


class DupUp3D(nn.Module):
    """Parameter-free shortcut of an upsampling stage: repeat channels, unfold them into
    ft×fs×fs neighbours. On the first chunk the first ft−1 frames are dropped (1 frame → 1)."""

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        self.out_dim, self.ft, self.fs = out_dim, factor_t, factor_s
        self.repeats = out_dim * factor_t * factor_s * factor_s // in_dim

    def forward(self, x: Tensor, first_chunk: bool) -> Tensor:
        ft, fs = self.ft, self.fs
        b, _, t, h, w = x.shape
        x = x.repeat_interleave(self.repeats, dim=1).reshape(b, self.out_dim, ft, fs, fs, t, h, w)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, self.out_dim, t * ft, h * fs, w * fs)
        return x[:, :, ft - 1 :] if first_chunk else x


class Down_ResidualBlock(nn.Module):
    takes_cache = True

    def __init__(
        self, in_dim: int, out_dim: int, num_res_blocks: int, temporal: bool, down_flag: bool
    ) -> None:
        super().__init__()
        self.avg_shortcut = AvgDown3D(in_dim, out_dim, 2 if temporal else 1, 2 if down_flag else 1)
        layers: list[nn.Module] = []
        for _ in range(num_res_blocks):
            layers.append(ResidualBlock(in_dim, out_dim))
            in_dim = out_dim
        if down_flag:
            layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        return run_cached(self.downsamples, x, cache) + self.avg_shortcut(x)


class Up_ResidualBlock(nn.Module):
    takes_cache = True

    def __init__(
        self, in_dim: int, out_dim: int, num_res_blocks: int, temporal: bool, up_flag: bool
    ) -> None:
        super().__init__()
        self.avg_shortcut = DupUp3D(in_dim, out_dim, 2 if temporal else 1, 2) if up_flag else None
        layers: list[nn.Module] = []
        for _ in range(num_res_blocks + 1):
            layers.append(ResidualBlock(in_dim, out_dim))
            in_dim = out_dim
        if up_flag:
            layers.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", out_dim))
        self.upsamples = nn.Sequential(*layers)

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        first = cache.first  # read before the stage writes its slots
        y = run_cached(self.upsamples, x, cache)
        return y + self.avg_shortcut(x, first) if self.avg_shortcut is not None else y


class Encoder3d(vae21.Encoder3d):
    @staticmethod
    def stages(cfg: VaeConfig, dims: list[int]) -> nn.Sequential:
        """Wan2.2: one Down_ResidualBlock per stage (with an AvgDown3D shortcut)."""
        n = len(cfg.dim_mult)
        return nn.Sequential(
            *(
                Down_ResidualBlock(
                    dims[i],
                    dims[i + 1],
                    cfg.num_res_blocks,
                    temporal=i < n - 1 and cfg.temporal_downsample[i],
                    down_flag=i != n - 1,
                )
                for i in range(n)
            )
        )


class Decoder3d(vae21.Decoder3d):
    @staticmethod
    def stages(cfg: VaeConfig, dims: list[int]) -> nn.Sequential:
        """Wan2.2: one Up_ResidualBlock per stage (with a DupUp3D shortcut); channels kept."""
        temporal_up = cfg.temporal_downsample[::-1]
        n = len(cfg.dim_mult)
        return nn.Sequential(
            *(
                Up_ResidualBlock(
                    dims[i],
                    dims[i + 1],
                    cfg.num_res_blocks,
                    temporal=i < n - 1 and temporal_up[i],
                    up_flag=i != n - 1,
                )
                for i in range(n)
            )
        )


class WanVAE22(CausalVAE):
    """The Wan2.2 VAE (z=48, 4×16×16)."""

    def __init__(self, cfg: VaeConfig, ops: type[Ops] = Ops) -> None:
        super().__init__()
        if cfg.version != "2.2":
            raise ConfigError(f"WanVAE22 needs a 2.2 VAE config, got {cfg.version}")
        self.cfg = cfg
        channels = 3 * cfg.patch_size**2
        self.encoder = Encoder3d(cfg, channels)
        self.conv1 = CausalConv3d(2 * cfg.z_dim, 2 * cfg.z_dim, 1)
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder3d(cfg, channels)
        register_scale(self, cfg)

    def _to_channels(self, video: Tensor) -> Tensor:
        return patchify(video, self.cfg.patch_size)

    def _from_channels(self, x: Tensor) -> Tensor:
        return unpatchify(x, self.cfg.patch_size)
