"""Every supported Wan model variant as frozen dataclasses: architecture configs and sampling defaults.

Numbers come from the official configs (Wan-Video/Wan2.1@9737cba, Wan-Video/Wan2.2@42bf4cf,
``wan/configs/*.py`` and ``generate.py``); see shared/wan-spec.md §3.1, §4, §6.7. Derive other configs
with ``dataclasses.replace`` (tests build tiny ones that way).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import ConfigError

NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


class Precision(enum.Enum):
    """The one precision switch. Maps to torch / ONNX / TensorRT types in one function per backend."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"

    @classmethod
    def parse(cls, text: str) -> Precision:
        aliases = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
        key = aliases.get(text.lower(), text.lower())
        try:
            return cls(key)
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise ConfigError(f"unknown precision {text!r}; expected one of {names}") from None


class Task(enum.Enum):
    T2V = "t2v"
    I2V = "i2v"
    FLF2V = "flf2v"
    TI2V = "ti2v"
    V2V = "v2v"  # video-to-video (SDEdit) with any T2V model (video_to_video.py)
    VACE = "vace"  # control / inpaint / outpaint / reference video (VACE models, models/vace.py)


@dataclass(frozen=True, kw_only=True)
class DiTConfig:
    """Architecture of one WanModel (one expert). Field names follow the official constructor."""

    model_type: str  # "t2v" | "i2v" | "flf2v" | "ti2v" (official model_type)
    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int
    out_dim: int
    text_dim: int = 4096
    freq_dim: int = 256
    text_len: int = 512
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    # Wan2.1 I2V/FLF2V only: CLIP feature width of img_emb and the FLF2V position table length (2·257).
    image_dim: int | None = None
    image_pos_len: int | None = None
    # TurboDiffusion rCM checkpoints: sparse-linear self-attention (models/sla.py) keeping this share
    # of key blocks for the softmax branch; None: dense attention (every other checkpoint).
    sla_topk: float | None = None
    # SkyReels-V2 DF-1.3B: an fps embedding (fps_embedding / fps_projection) added to the time
    # projection (SkyReels' inject_sample_info); absent from every Wan release.
    inject_sample_info: bool = False
    # VACE models (models/vace.py): the context's channels (96 = 16 inactive + 16 reactive latent
    # channels + the 64-channel patch-packed mask) and the main blocks that receive a VACE hint,
    # one VACE block each (official ``vace_layers``); None / (): not a VACE model.
    vace_in_dim: int | None = None
    vace_layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.vace_in_dim is not None and (
            not self.vace_layers
            or self.vace_layers[0] != 0
            or list(self.vace_layers) != sorted(set(self.vace_layers))
            or self.vace_layers[-1] >= self.num_layers
        ):
            raise ConfigError(
                f"VACE layers {list(self.vace_layers)} must be increasing block indices from 0 "
                f"below {self.num_layers}"
            )
        if self.sla_topk is not None and not 0.0 < self.sla_topk <= 1.0:
            raise ConfigError(f"SLA top-k ratio must be in (0, 1], got {self.sla_topk}")
        if self.dim % self.num_heads:
            raise ConfigError(f"DiT dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.model_type not in ("t2v", "i2v", "flf2v", "ti2v"):
            raise ConfigError(f"unknown DiT model_type {self.model_type!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def has_image_embedding(self) -> bool:
        return self.image_dim is not None

    @property
    def is_vace(self) -> bool:
        return self.vace_in_dim is not None


@dataclass(frozen=True, kw_only=True)
class VaeConfig:
    """Causal 3D VAE. version "2.1" (z16, 4×8×8) or "2.2" (z48, 4×16×16 with a 2×2 patchify)."""

    version: str
    z_dim: int
    base_dim: int
    decoder_base_dim: int
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    patch_size: int = 1
    latents_mean: tuple[float, ...] = ()
    latents_std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.version not in ("2.1", "2.2"):
            raise ConfigError(f"unknown VAE version {self.version!r}")
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            raise ConfigError(f"VAE latents_mean/std need {self.z_dim} values")

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.dim_mult) - 1) * self.patch_size


@dataclass(frozen=True, kw_only=True)
class T5Config:
    """umT5-XXL encoder (wan/modules/t5.py)."""

    vocab_size: int = 256384
    dim: int = 4096
    dim_attn: int = 4096
    dim_ffn: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32
    max_distance: int = 128
    text_len: int = 512
    eps: float = 1e-6


@dataclass(frozen=True, kw_only=True)
class ClipConfig:
    """Visual tower of open-clip xlm-roberta-large ViT-H/14 (wan/modules/clip.py)."""

    image_size: int = 224
    patch_size: int = 14
    dim: int = 1280
    mlp_ratio: int = 4
    mlp_dim: int | None = None  # MLP hidden width as read from the weights; None: dim · mlp_ratio
    num_heads: int = 16
    num_layers: int = 32
    out_dim: int = 1024
    eps: float = 1e-5
    # Wan reads the output of the first 31 of 32 blocks (penultimate), before post_norm.
    tap_layers: int = 31
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def mlp_width(self) -> int:
        return self.mlp_dim if self.mlp_dim is not None else self.dim * self.mlp_ratio


@dataclass(frozen=True, kw_only=True)
class SamplingDefaults:
    steps: int
    guidance: float  # Wan2.2 A14B: the high-noise expert's
    guidance_low: float | None = None  # Wan2.2 A14B: the low-noise expert's
    shift: float
    shift_480p: float | None = None  # Wan2.1 I2V uses 3.0 at 832×480 / 480×832
    frames: int = 81
    fps: int = 16
    size: tuple[int, int] = (832, 480)  # (width, height)
    sizes: tuple[tuple[int, int], ...] = ((832, 480), (480, 832))
    negative_prompt: str = NEGATIVE_PROMPT
    boundary: float | None = None  # Wan2.2 A14B: switch to the low-noise expert below boundary·1000
    sampler: str = "unipc"

    def shift_for(self, width: int, height: int) -> float:
        if self.shift_480p is not None and width * height <= 832 * 480:
            return self.shift_480p
        return self.shift


@dataclass(frozen=True, kw_only=True)
class ForcingDefaults:
    """A SkyReels-V2 Diffusion Forcing model's long-video settings (its README's recommended
    ones, SkyworkAI/SkyReels-V2 generate_video_df.py): windows of ``base_frames`` pixel frames,
    ``overlap_history`` frames carried over, synchronous schedule (ar_step 0, block 1),
    ``addnoise_condition`` 20 on the carried frames."""

    base_frames: int = 97  # 121 for the 720P models
    overlap_history: int = 17
    ar_step: int = 0  # 5 with causal_block_size 5: asynchronous
    causal_block_size: int = 1
    addnoise_condition: float = 20.0


@dataclass(frozen=True, kw_only=True)
class Variant:
    name: str
    family: str  # "wan2.1" | "wan2.2"
    tasks: tuple[Task, ...]
    dit: DiTConfig
    experts: int  # 2 for Wan2.2 A14B (high-noise, low-noise)
    vae: VaeConfig
    t5: T5Config = field(default_factory=T5Config)
    clip: ClipConfig | None = None
    defaults: SamplingDefaults
    forcing: ForcingDefaults | None = None  # SkyReels-V2 Diffusion Forcing models only

    @property
    def spatial_multiple(self) -> int:
        """Width and height must be multiples of this (VAE stride × DiT patch)."""
        return self.vae.spatial_factor * self.dit.patch_size[1]

    def latent_shape(self, width: int, height: int, frames: int) -> tuple[int, int, int, int]:
        """[z, T_lat, H_lat, W_lat] for a video of the given size (frames = 4n+1)."""
        s = self.vae.spatial_factor
        return (
            self.vae.z_dim,
            (frames - 1) // self.vae.temporal_factor + 1,
            height // s,
            width // s,
        )

    def seq_len(self, width: int, height: int, frames: int) -> int:
        _, t, h, w = self.latent_shape(width, height, frames)
        pt, ph, pw = self.dit.patch_size
        return (t // pt) * (h // ph) * (w // pw)


VAE21 = VaeConfig(
    version="2.1",
    z_dim=16,
    base_dim=96,
    decoder_base_dim=96,
    patch_size=1,
    latents_mean=(
        -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
        0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
    ),
    latents_std=(
        2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
        3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
    ),
)  # fmt: skip

VAE22 = VaeConfig(
    version="2.2",
    z_dim=48,
    base_dim=160,
    decoder_base_dim=256,
    patch_size=2,
    latents_mean=(
        -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
        -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
        -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
        -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
        -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
        0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
    ),
    latents_std=(
        0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
        0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
        0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
        0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
        0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
        0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
    ),
)  # fmt: skip

_SIZES_14B = ((1280, 720), (720, 1280), (832, 480), (480, 832))
_DIT_14B: dict[str, Any] = dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            name="t2v-1.3B",
            family="wan2.1",
            tasks=(Task.T2V,),
            dit=DiTConfig(model_type="t2v", dim=1536, ffn_dim=8960, num_heads=12, num_layers=30,
                          in_dim=16, out_dim=16),
            experts=1,
            vae=VAE21,
            defaults=SamplingDefaults(steps=50, guidance=5.0, shift=5.0),
        ),
        Variant(
            name="t2v-14B",
            family="wan2.1",
            tasks=(Task.T2V,),
            dit=DiTConfig(model_type="t2v", in_dim=16, out_dim=16, **_DIT_14B),
            experts=1,
            vae=VAE21,
            defaults=SamplingDefaults(steps=50, guidance=5.0, shift=5.0, size=(1280, 720),
                                      sizes=_SIZES_14B),
        ),
        Variant(
            name="i2v-14B",
            family="wan2.1",
            tasks=(Task.I2V,),
            dit=DiTConfig(model_type="i2v", in_dim=36, out_dim=16, image_dim=1280, **_DIT_14B),
            experts=1,
            vae=VAE21,
            clip=ClipConfig(),
            defaults=SamplingDefaults(steps=40, guidance=5.0, shift=5.0, shift_480p=3.0,
                                      size=(1280, 720), sizes=_SIZES_14B,
                                      negative_prompt="镜头晃动，" + NEGATIVE_PROMPT),
        ),
        Variant(
            name="flf2v-14B",
            family="wan2.1",
            tasks=(Task.FLF2V,),
            dit=DiTConfig(model_type="flf2v", in_dim=36, out_dim=16, image_dim=1280,
                          image_pos_len=514, **_DIT_14B),
            experts=1,
            vae=VAE21,
            clip=ClipConfig(),
            defaults=SamplingDefaults(steps=50, guidance=5.0, shift=16.0, size=(1280, 720),
                                      sizes=_SIZES_14B,
                                      negative_prompt="镜头切换，镜头晃动，" + NEGATIVE_PROMPT),
        ),
        Variant(
            name="t2v-A14B",
            family="wan2.2",
            tasks=(Task.T2V,),
            dit=DiTConfig(model_type="t2v", in_dim=16, out_dim=16, **_DIT_14B),
            experts=2,
            vae=VAE21,
            defaults=SamplingDefaults(steps=40, guidance=4.0, guidance_low=3.0, shift=12.0,
                                      size=(1280, 720), sizes=_SIZES_14B, boundary=0.875),
        ),
        Variant(
            name="i2v-A14B",
            family="wan2.2",
            tasks=(Task.I2V,),
            dit=DiTConfig(model_type="i2v", in_dim=36, out_dim=16, **_DIT_14B),
            experts=2,
            vae=VAE21,
            defaults=SamplingDefaults(steps=40, guidance=3.5, guidance_low=3.5, shift=5.0,
                                      size=(1280, 720), sizes=_SIZES_14B, boundary=0.900),
        ),
        Variant(
            name="ti2v-5B",
            family="wan2.2",
            tasks=(Task.T2V, Task.TI2V),
            dit=DiTConfig(model_type="ti2v", dim=3072, ffn_dim=14336, num_heads=24, num_layers=30,
                          in_dim=48, out_dim=48),
            experts=1,
            vae=VAE22,
            defaults=SamplingDefaults(steps=50, guidance=5.0, shift=5.0, frames=121, fps=24,
                                      size=(1280, 704), sizes=((1280, 704), (704, 1280))),
        ),
    )
}  # fmt: skip

# VACE (Wan2.1-VACE-1.3B / -14B, Wan2.2-VACE-Fun-A14B): the T2V DiT plus a VACE branch, one VACE
# block per listed main block (official configs: every 2nd block of 30, every 5th of 40).
for _name, _base, _layers in (
    ("vace-1.3B", "t2v-1.3B", tuple(range(0, 30, 2))),
    ("vace-14B", "t2v-14B", tuple(range(0, 40, 5))),
    ("vace-A14B", "t2v-A14B", tuple(range(0, 40, 5))),
):
    _v = VARIANTS[_base]
    VARIANTS[_name] = Variant(
        name=_name,
        family=_v.family,
        tasks=(Task.VACE,),
        dit=replace(_v.dit, vace_in_dim=96, vace_layers=_layers),
        experts=_v.experts,
        vae=_v.vae,
        # Wan2.1 generate.py: shift 16 for vace; Wan2.2 VACE-Fun keeps the A14B T2V recipe
        defaults=replace(_v.defaults, shift=16.0) if _v.family == "wan2.1" else _v.defaults,
    )


# SkyReels-V2 (Skywork): Wan2.1 DiTs with SkyReels' recipes (SkyworkAI/SkyReels-V2
# generate_video.py / generate_video_df.py: 30 steps, guidance 6, shift 8, 97 frames at 960×544,
# 24 fps). The DF models run Diffusion Forcing (diffusion_forcing.py): T2V, I2V (first frame) and
# video extension. Kept apart from VARIANTS: DF-14B and the plain T2V/I2V have the released Wan2.1
# structure, so only the files' names or diffusers classes tell them (checkpoints/skyreels.py).
_SKY = SamplingDefaults(
    steps=30, guidance=6.0, shift=8.0, frames=97, fps=24, size=(960, 544), sizes=((960, 544), (544, 960))
)  # fmt: skip
_SKY720 = replace(_SKY, frames=121, size=(1280, 720), sizes=((1280, 720), (720, 1280)))
_SKY_NEG = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, "
    "images, static, overall gray, worst quality, low quality, JPEG compression residue, ugly, "
    "incomplete, extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, "
    "misshapen limbs, fused fingers, still picture, messy background, three legs, many people "
    "in the background, walking backwards"
)  # generate_video.py's (the DF script uses Wan's Chinese one)
_DIT13 = VARIANTS["t2v-1.3B"].dit
_DIT14 = VARIANTS["t2v-14B"].dit
_DITI2V = VARIANTS["i2v-14B"].dit
SKYREELS_VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(name="skyreels-v2-df-1.3B-540P", family="skyreels-v2", tasks=(Task.T2V, Task.I2V),
                dit=replace(_DIT13, inject_sample_info=True), experts=1, vae=VAE21,
                defaults=_SKY, forcing=ForcingDefaults()),
        Variant(name="skyreels-v2-df-14B-540P", family="skyreels-v2", tasks=(Task.T2V, Task.I2V),
                dit=_DIT14, experts=1, vae=VAE21, defaults=_SKY, forcing=ForcingDefaults()),
        Variant(name="skyreels-v2-df-14B-720P", family="skyreels-v2", tasks=(Task.T2V, Task.I2V),
                dit=_DIT14, experts=1, vae=VAE21, defaults=_SKY720,
                forcing=ForcingDefaults(base_frames=121)),
        Variant(name="skyreels-v2-t2v-1.3B-540P", family="skyreels-v2", tasks=(Task.T2V,),
                dit=_DIT13, experts=1, vae=VAE21, defaults=replace(_SKY, negative_prompt=_SKY_NEG)),
        Variant(name="skyreels-v2-t2v-14B-540P", family="skyreels-v2", tasks=(Task.T2V,),
                dit=_DIT14, experts=1, vae=VAE21, defaults=replace(_SKY, negative_prompt=_SKY_NEG)),
        Variant(name="skyreels-v2-t2v-14B-720P", family="skyreels-v2", tasks=(Task.T2V,),
                dit=_DIT14, experts=1, vae=VAE21,
                defaults=replace(_SKY720, negative_prompt=_SKY_NEG)),
        Variant(name="skyreels-v2-i2v-1.3B-540P", family="skyreels-v2", tasks=(Task.I2V,),
                dit=replace(_DITI2V, dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
                experts=1, vae=VAE21, clip=ClipConfig(),
                defaults=replace(_SKY, guidance=5.0, shift=3.0, negative_prompt=_SKY_NEG)),
        Variant(name="skyreels-v2-i2v-14B-540P", family="skyreels-v2", tasks=(Task.I2V,),
                dit=_DITI2V, experts=1, vae=VAE21, clip=ClipConfig(),
                defaults=replace(_SKY, guidance=5.0, shift=3.0, negative_prompt=_SKY_NEG)),
        Variant(name="skyreels-v2-i2v-14B-720P", family="skyreels-v2", tasks=(Task.I2V,),
                dit=_DITI2V, experts=1, vae=VAE21, clip=ClipConfig(),
                defaults=replace(_SKY720, guidance=5.0, shift=3.0, negative_prompt=_SKY_NEG)),
    )
}  # fmt: skip


def get_variant(name: str) -> Variant:
    if name in SKYREELS_VARIANTS:
        return SKYREELS_VARIANTS[name]
    try:
        return VARIANTS[name]
    except KeyError:
        known = ", ".join([*VARIANTS, *SKYREELS_VARIANTS])
        raise ConfigError(f"unknown variant {name!r}; known variants: {known}") from None
