# Port of Wan-Video/Wan2.1@9737cba wan/modules/vae.py (Apache-2.0): the Wan2.1 causal 3D VAE (z=16,
# 4×8×8). Attribute names equal the keys of Wan2.1_VAE.pth.
# Deviations:
# - The causal feature cache is an explicit CausalCache object (no mutable default argument, no
#   hidden module state) whose slots always hold 2 frames (1 for the stride-2 time convs), zeros
#   standing for "nothing yet": numerically identical to the upstream cache, and every chunk after
#   the first has the same tensor shapes, so one ONNX graph decodes any length (export/).
# - The upstream 'Rep' marker of the temporal upsampler equals a zero cache and is stored as one.
# - Nearest 2× upsampling uses mode "nearest" (equal to "nearest-exact" at an integer scale, and
#   exportable by every ONNX path).
# - ``decode`` may run several latent frames per chunk after the first (identical results; bigger
#   convolutions for GPUs), default 1 as upstream.
from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..variants import VaeConfig
from .layers import Ops

CACHE_T = 2  # frames a 3-tap causal conv needs from the previous chunk


class CausalCache:
    """The state a causal pass carries from one chunk to the next: one slot per cached op, in
    execution order. ``first`` is True while the first chunk runs (slots are being created)."""

    def __init__(self, slots: list[Tensor] | None = None) -> None:
        self.slots: list[Tensor] = list(slots) if slots is not None else []
        self.first = slots is None
        self._i = 0

    def begin(self) -> None:
        """Start a chunk: the ops read their slots again from the first."""
        self._i = 0

    def end(self) -> None:
        if not self.first and self._i != len(self.slots):
            raise RuntimeError(f"cache has {len(self.slots)} slots, the chunk used {self._i}")
        self.first = False

    def read(self) -> Tensor | None:
        return None if self.first else self.slots[self._i]

    def write(self, t: Tensor) -> None:
        if self.first:
            self.slots.append(t)
        else:
            self.slots[self._i] = t
        self._i += 1


class CausalConv3d(nn.Conv3d):
    """Conv3d whose temporal padding is all in front (2·pad_t frames): frame t sees only ≤ t."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size, stride=1, padding=0) -> None:
        super().__init__(in_dim, out_dim, kernel_size, stride=stride, padding=0)
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        self._pad = (pw, pw, ph, ph, 2 * pt, 0)

    def forward(self, x: Tensor, prev: Tensor | None = None) -> Tensor:
        """x: [B, C, T, H, W]; prev: the last frames of the previous chunk (replace front padding)."""
        pad = list(self._pad)
        if prev is not None and pad[4] > 0:
            x = torch.cat([prev.to(x.dtype), x], dim=2)
            pad[4] -= prev.shape[2]
        return super().forward(F.pad(x, pad))


def cached_conv(conv: CausalConv3d, x: Tensor, cache: CausalCache) -> Tensor:
    """Run a 3-tap causal conv chunk-wise: the previous 2 input frames (zeros at the start, which
    equals upstream's zero padding) come from the cache, this chunk's last 2 go back into it."""
    prev = cache.read()
    if prev is None:
        prev = x.new_zeros(x.shape[0], x.shape[1], CACHE_T, *x.shape[3:])
    cache.write(torch.cat([prev.to(x.dtype), x], dim=2)[:, :, -CACHE_T:])
    return conv(x, prev)


class RMS_norm(nn.Module):
    """L2-normalise over channels, then ·√dim·gamma (F.normalize eps 1e-12, as upstream)."""

    def __init__(self, dim: int, images: bool = True) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1) if images else (1, 1, 1))))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class ResidualBlock(nn.Module):
    takes_cache = True

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            RMS_norm(in_dim, images=False),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMS_norm(out_dim, images=False),
            nn.SiLU(),
            nn.Dropout(0.0),
            CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        h = self.shortcut(x)
        for layer in self.residual:
            x = cached_conv(layer, x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame."""

    takes_cache = True  # (unused: attention is per frame)

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMS_norm(dim)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        identity = x
        b, c, t, h, w = x.shape
        x = x.transpose(1, 2).reshape(b * t, c, h, w)
        q, k, v = (
            self.to_qkv(self.norm(x)).reshape(b * t, 1, 3 * c, h * w).transpose(2, 3).chunk(3, -1)
        )
        x = F.scaled_dot_product_attention(q, k, v)  # [BT, 1, HW, C]
        x = self.proj(x.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w))
        return x.reshape(b, t, c, h, w).transpose(1, 2) + identity


def _per_frame(fn, x: Tensor) -> Tensor:
    """Apply a 2D module to every frame of [B, C, T, H, W]."""
    b, c, t, h, w = x.shape
    y = fn(x.transpose(1, 2).reshape(b * t, c, h, w))
    return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


class Upsample2x(nn.Module):
    """Nearest 2× spatial upsampling in fp32 (upstream computes it in fp32 too)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x.float(), scale_factor=2.0, mode="nearest").to(x.dtype)


class Resample(nn.Module):
    """Spatial ×2 up/down sampling per frame, plus a temporal ×2 stage for the "3d" modes."""

    takes_cache = True

    def __init__(self, dim: int, mode: str, out_dim: int | None = None) -> None:
        super().__init__()
        self.mode = mode
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.Sequential(
                Upsample2x(), nn.Conv2d(dim, out_dim or dim // 2, 3, padding=1)
            )
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Sequential(
                nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2))
            )
            if mode == "downsample3d":
                self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))
        else:
            raise ValueError(f"unknown resample mode {mode}")

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        if self.mode == "upsample3d":
            if cache.first:
                # the first latent frame makes one video frame: no temporal upsampling; the next
                # chunk's time conv starts from zeros (upstream: the 'Rep' marker)
                cache.write(x.new_zeros(*x.shape[:2], CACHE_T, *x.shape[3:]))
            else:
                b, c, t, h, w = x.shape
                x = cached_conv(self.time_conv, x, cache)  # [B, 2C, T, H, W]
                # channel halves are the two output frames of each input frame: interleave in time
                x = x.reshape(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
        x = _per_frame(self.resample, x)
        if self.mode == "downsample3d":
            prev = cache.read()
            cache.write(x[:, :, -1:])
            if prev is not None:  # first chunk (1 frame) stays 1 frame
                x = self.time_conv(torch.cat([prev.to(x.dtype), x], dim=2))
        return x


def run_cached(layers: nn.Sequential, x: Tensor, cache: CausalCache) -> Tensor:
    """Run a Sequential whose members may need the cache (3-tap convs, blocks that hold them)."""
    for layer in layers:
        if isinstance(layer, CausalConv3d):
            x = cached_conv(layer, x, cache)
        elif getattr(layer, "takes_cache", False):
            x = layer(x, cache)
        else:
            x = layer(x)
    return x


def middle_blocks(dim: int) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(dim, dim), AttentionBlock(dim), ResidualBlock(dim, dim))


def head_blocks(dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        RMS_norm(dim, images=False), nn.SiLU(), CausalConv3d(dim, out_dim, 3, padding=1)
    )


class Encoder3d(nn.Module):
    """conv1 → downsampling stages → middle → head (2·z channels: mean ‖ log-variance)."""

    def __init__(self, cfg: VaeConfig, in_channels: int = 3) -> None:
        super().__init__()
        dims = [cfg.base_dim * u for u in (1, *cfg.dim_mult)]
        self.conv1 = CausalConv3d(in_channels, dims[0], 3, padding=1)
        self.downsamples = self.stages(cfg, dims)
        self.middle = middle_blocks(dims[-1])
        self.head = head_blocks(dims[-1], 2 * cfg.z_dim)

    @staticmethod
    def stages(cfg: VaeConfig, dims: list[int]) -> nn.Sequential:
        """Wan2.1: one flat Sequential of residual blocks and resamplers (official indices)."""
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i != len(cfg.dim_mult) - 1:
                layers.append(
                    Resample(
                        out_dim, "downsample3d" if cfg.temporal_downsample[i] else "downsample2d"
                    )
                )
        return nn.Sequential(*layers)

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        x = cached_conv(self.conv1, x, cache)
        x = run_cached(self.downsamples, x, cache)
        x = run_cached(self.middle, x, cache)
        return run_cached(self.head, x, cache)


class Decoder3d(nn.Module):
    """conv1 → middle → upsampling stages → head."""

    def __init__(self, cfg: VaeConfig, out_channels: int = 3) -> None:
        super().__init__()
        mult = cfg.dim_mult
        dims = [cfg.decoder_base_dim * u for u in (mult[-1], *mult[::-1])]
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = middle_blocks(dims[0])
        self.upsamples = self.stages(cfg, dims)
        self.head = head_blocks(dims[-1], out_channels)

    @staticmethod
    def stages(cfg: VaeConfig, dims: list[int]) -> nn.Sequential:
        """Wan2.1: one flat Sequential; upsampling convs halve the channels."""
        temporal_up = cfg.temporal_downsample[::-1]
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
            if i > 0:
                in_dim //= 2  # the previous stage's upsampling conv halved the channels
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i != len(cfg.dim_mult) - 1:
                layers.append(Resample(out_dim, "upsample3d" if temporal_up[i] else "upsample2d"))
        return nn.Sequential(*layers)

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        x = cached_conv(self.conv1, x, cache)
        x = run_cached(self.middle, x, cache)
        x = run_cached(self.upsamples, x, cache)
        return run_cached(self.head, x, cache)


class CausalVAE(nn.Module):
    """Chunked encode/decode drivers shared by the Wan2.1 and Wan2.2 VAEs. Subclasses build
    ``encoder``, ``conv1``, ``conv2``, ``decoder`` and may map pixels to model channels.
    ``encode``/``decode`` work on normalised latents ((mu − mean)/std)."""

    FP32_MODULES = ()
    cfg: VaeConfig
    encoder: Encoder3d
    conv1: CausalConv3d
    conv2: CausalConv3d
    decoder: Decoder3d
    latents_mean: Tensor
    latents_inv_std: Tensor

    def _to_channels(self, video: Tensor) -> Tensor:
        return video

    def _from_channels(self, x: Tensor) -> Tensor:
        return x

    # ------------------------------------------------------------------ chunk steps

    def encode_step(self, video: Tensor, cache: CausalCache) -> Tensor:
        """One encoder chunk: the first frame alone on a new cache, then 4k frames per call.
        video [B, 3, F, H, W] in [-1, 1] -> normalised latent mean [B, z, F', H/s, W/s]."""
        cache.begin()
        out = self.encoder(self._to_channels(video), cache)
        cache.end()
        mu = self.conv1(out)[:, : self.cfg.z_dim]
        return (mu - self.latents_mean.to(mu.dtype)) * self.latents_inv_std.to(mu.dtype)

    def decode_step(self, z: Tensor, cache: CausalCache) -> Tensor:
        """One decoder chunk: the first latent frame alone on a new cache (→ 1 frame), then any
        number of latent frames per call (→ 4 frames each). z: normalised [B, z, T, h, w]."""
        z = z / self.latents_inv_std.to(z.dtype) + self.latents_mean.to(z.dtype)
        cache.begin()
        x = self.decoder(self.conv2(z), cache)
        cache.end()
        return self._from_channels(x).clamp(-1.0, 1.0)

    # ------------------------------------------------------------------ whole videos

    def check_video(self, video: Tensor) -> None:
        s, tf = self.cfg.spatial_factor, self.cfg.temporal_factor
        if video.dim() != 5 or video.shape[1] != 3:
            raise ConfigError(f"VAE input must be [B, 3, F, H, W], got {tuple(video.shape)}")
        f, h, w = video.shape[2:]
        if (f - 1) % tf:
            raise ConfigError(f"VAE input frames must be {tf}n+1, got {f}")
        if h % s or w % s:
            raise ConfigError(f"VAE input size {w}x{h} is not a multiple of {s}")

    def encode(self, video: Tensor) -> Tensor:
        """[B, 3, F=4n+1, H, W] in [-1, 1] -> normalised latent mean [B, z, n+1, H/s, W/s]."""
        self.check_video(video)
        tf = self.cfg.temporal_factor
        cache = CausalCache()
        out = [self.encode_step(video[:, :, :1], cache)]
        for i in range(1, video.shape[2], tf):
            out.append(self.encode_step(video[:, :, i : i + tf], cache))
        return torch.cat(out, dim=2)

    def decode_chunks(self, z: Tensor, frames_per_chunk: int = 1) -> Iterator[Tensor]:
        """Decode chunk by chunk (first latent frame, then ``frames_per_chunk`` at a time),
        yielding [B, 3, F_chunk, H, W] in [-1, 1] so a caller can stream frames out."""
        if z.dim() != 5 or z.shape[1] != self.cfg.z_dim:
            raise ConfigError(
                f"VAE latents must be [B, {self.cfg.z_dim}, T, h, w], got {tuple(z.shape)}"
            )
        cache = CausalCache()
        yield self.decode_step(z[:, :, :1], cache)
        for i in range(1, z.shape[2], frames_per_chunk):
            yield self.decode_step(z[:, :, i : i + frames_per_chunk], cache)

    def decode(self, z: Tensor, frames_per_chunk: int = 1) -> Tensor:
        """Normalised latents [B, z, T, h, w] -> video [B, 3, 4(T−1)+1, h·s, w·s] in [-1, 1]."""
        return torch.cat(list(self.decode_chunks(z, frames_per_chunk)), dim=2)


class WanVAE21(CausalVAE):
    """The Wan2.1 VAE (z=16, 4×8×8)."""

    def __init__(self, cfg: VaeConfig, ops: type[Ops] = Ops) -> None:
        super().__init__()
        if cfg.version != "2.1":
            raise ConfigError(f"WanVAE21 needs a 2.1 VAE config, got {cfg.version}")
        self.cfg = cfg
        self.encoder = Encoder3d(cfg)
        self.conv1 = CausalConv3d(2 * cfg.z_dim, 2 * cfg.z_dim, 1)
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder3d(cfg)
        register_scale(self, cfg)


def register_scale(module: nn.Module, cfg: VaeConfig) -> None:
    """Per-channel latent mean and 1/std: constants of the release, not in the checkpoint."""
    mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
    module.register_buffer("latents_mean", mean, persistent=False)
    module.register_buffer("latents_inv_std", inv_std, persistent=False)
