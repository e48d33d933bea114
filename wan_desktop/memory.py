"""VRAM planner: where each component lives, in what precision, how much of the DiT streams from
host memory, and the VAE tile size, with a predicted peak you can check by hand.

Everything here is arithmetic over the variant's configs (no torch, no device): the composition root
reads the GPU's free memory (or takes ``--vram-budget GB``) and hands it to :func:`plan_ladder` /
:func:`plan_for`. The result is an ordered list of plans, loosest (fastest) first; a CUDA
out-of-memory error during a run moves to the next, tighter one (engines/residency.py).

Units: GiB (2^30 bytes) throughout: cards are sized in GiB ("24 GB" = 24 GiB) and torch reports
``max_memory_allocated`` in bytes. Which numbers are predictions: every ``*_gib`` figure of a
:class:`Prediction`. Parameter counts are exact (tests compare them with meta-device builds of the
full-size models). The DiT's activations are counted exactly (see ``_ACT_*``), the method checked
against measured peaks in shared/gpu-baseline*.json (diffusers' Wan modules on an H100, bf16).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

    from .variants import ClipConfig, DiTConfig, T5Config, VaeConfig, Variant

GIB = 1024**3

# ----------------------------------------------------------------------------- calibration
# DiT activations: our DiT's (models/dit.py), whose tensors are counted exactly on the meta device
# at full size (tests/live_bytes.py; tests/memory/test_dit_activations.py). A forward's peak is
#   _ACT_TOKEN·dim per token (a token = one batch row × one patch: the fp32 residual, the
#     compute-dtype block input, q/k/v and the attention output, ...)
#   + _ACT_CHUNK_FFN·ffn_dim per token of one TOKEN_CHUNK (the FFN intermediates and the fp32
#     RoPE temporaries run a chunk of tokens at a time)
#   + _ACT_PER_TOKEN_T·dim per token with TI2V's per-token timesteps (e0 [B, L, 6, dim] and e in
#     fp32 through the forward; each block makes its modulation rows a chunk at a time): counted
#     28.0 at ≤ 8,192 tokens, 35.2 at 27,280 (52.0 before the blocks took them a chunk at a time)
# fitted over 1.3B / 14B / 5B / I2V-14B at 3,000–75,600 tokens, batch 1 and 2 (within −6 % /
# +7 % of the counts), then × _ACT_MARGIN + _ACT_OVERHEAD so every count at ≥ 8,000 tokens is
# covered. The same counting applied to diffusers' WanTransformer3DModel gives its measured H100
# peaks (shared/gpu-baseline*.json: 1.657 / 3.127 / 3.636 / 8.016 GiB above the weights) within
# 0.03–0.17 GiB below: the kernels' workspaces, which _ACT_OVERHEAD covers.
_ACT_TOKEN = 16.3
_ACT_CHUNK_FFN = 3.2
_ACT_PER_TOKEN_T = 35.2
_ACT_MARGIN = 1.08
_ACT_OVERHEAD = 0.2 * GIB
DIT_TOKEN_CHUNK = 8192  # models/dit.py TOKEN_CHUNK (a test keeps them equal)
# VAE decode, per output pixel of the tile being decoded (one latent frame → 4 frames per chunk):
# the causal cache (exact: elements counted from the config by vae_cache_elements_per_pixel) and the
# chunk's activations, fitted to the untiled bf16 decodes of the baselines (peak − weights − cache
# − the decoded video diffusers keeps on the GPU): Wan2.1 480p → 6.5 KB/px, Wan2.2 720p → 7.7 KB/px
# (predicted 4.77 / 11.99 GiB against the measured 4.81 / 11.91 GiB).
_VAE_ACT_BYTES_PER_PX = {"2.1": 6.5e3, "2.2": 7.7e3}
# Outside the allocator (CUDA context, cuBLAS/cuDNN workspaces) and fragmentation of the caching
# allocator: kept free from a budget.
CONTEXT_GIB = 0.6
FRAGMENTATION = 1.08
# Pinned host memory cannot be paged out: at most this share of system RAM may be pinned.
MAX_PINNED_RAM_SHARE = 0.6


# ----------------------------------------------------------------------------- parameter counts


def dit_block_params(cfg: DiTConfig) -> int:
    """Parameters of one WanAttentionBlock (models/dit.py)."""
    d, f = cfg.dim, cfg.ffn_dim
    attn = 4 * (d * d + d) + 2 * d  # q, k, v, o with bias; RMS norm_q, norm_k
    cross = attn + (2 * (d * d + d) + d if cfg.image_dim is not None else 0)  # k_img, v_img
    return attn + cross + 2 * d + (d * f + f + f * d + d) + 6 * d  # norm3, ffn, modulation


def dit_block_linear_weights(cfg: DiTConfig) -> int:
    """Weights of a block's linears (the part FP8/INT8 store in one byte)."""
    d, f = cfg.dim, cfg.ffn_dim
    return (8 + (2 if cfg.image_dim is not None else 0)) * d * d + 2 * d * f


def dit_nonblock_params(cfg: DiTConfig) -> int:
    """Patch/text/time embeddings, time projection, head (and the image projection of I2V)."""
    d, patch = cfg.dim, math.prod(cfg.patch_size)
    n = cfg.in_dim * d * patch + d  # patch_embedding
    n += cfg.text_dim * d + d + d * d + d  # text_embedding
    n += cfg.freq_dim * d + d + d * d + d  # time_embedding
    n += d * 6 * d + 6 * d  # time_projection
    n += d * patch * cfg.out_dim + patch * cfg.out_dim + 2 * d  # head + its modulation
    if cfg.image_dim is not None:
        i = cfg.image_dim
        n += 2 * i + i * i + i + i * d + d + 2 * d + (cfg.image_pos_len or 0) * i
    return n


def dit_vace_params(cfg: DiTConfig) -> int:
    """A VACE model's branch (models/vace.py): vace_patch_embedding and one block per vace layer
    with its after_proj (and the first one's before_proj); 0 for other models."""
    if cfg.vace_in_dim is None:
        return 0
    d, n = cfg.dim, len(cfg.vace_layers)
    patch = cfg.vace_in_dim * d * math.prod(cfg.patch_size) + d
    return patch + n * (dit_block_params(cfg) + d * d + d) + d * d + d


def dit_params(cfg: DiTConfig) -> int:
    return dit_nonblock_params(cfg) + cfg.num_layers * dit_block_params(cfg) + dit_vace_params(cfg)


def t5_params(cfg: T5Config) -> int:
    """umT5 encoder (models/t5.py): embedding, per layer 2 norms + attention + gated FFN + its own
    relative position table, final norm."""
    per_layer = (
        2 * cfg.dim
        + 4 * cfg.dim * cfg.dim_attn
        + 3 * cfg.dim * cfg.dim_ffn
        + cfg.num_buckets * cfg.num_heads
    )
    return cfg.vocab_size * cfg.dim + cfg.num_layers * per_layer + cfg.dim


def t5_embedding_params(cfg: T5Config) -> int:
    return cfg.vocab_size * cfg.dim


def clip_params(cfg: ClipConfig) -> int:
    """Visual tower of open-clip ViT-H/14 (models/clip.py)."""
    d, h = cfg.dim, cfg.mlp_width
    n = (
        3 * cfg.patch_size**2 * d + d + (cfg.num_patches + 1) * d + 2 * d
    )  # patches, cls, pos, pre_norm
    n += cfg.num_layers * (4 * d + 3 * d * d + 3 * d + d * d + d + d * h + h + h * d + d)
    return n + 2 * d + d * cfg.out_dim  # post_norm, head


def _res_block(i: int, o: int) -> int:
    n = i + 27 * i * o + o + o + 27 * o * o + o  # RMS γ, conv 3³, RMS γ, conv 3³
    return n + (i * o + o if i != o else 0)  # 1×1×1 shortcut


def _vae_attn(d: int) -> int:
    return d + 3 * d * d + 3 * d + d * d + d


def vae_params(cfg: VaeConfig) -> int:
    """Encoder + decoder + the two 1×1×1 convs of the Wan2.1 / Wan2.2 VAE (models/vae21.py, vae22.py)."""
    z, nres, mult = cfg.z_dim, cfg.num_res_blocks, cfg.dim_mult
    cin = 3 * cfg.patch_size**2
    wide = cfg.version == "2.2"
    # encoder
    dims = [cfg.base_dim * u for u in (1, *mult)]
    n = 27 * cin * dims[0] + dims[0]
    for i in range(len(mult)):
        a, b = dims[i], dims[i + 1]
        for _ in range(nres):
            n += _res_block(a, b)
            a = b
        if i != len(mult) - 1:
            n += 9 * b * b + b  # 3×3 stride-2 conv
            if cfg.temporal_downsample[i]:
                n += 3 * b * b + b  # time conv
    top = dims[-1]
    n += 2 * _res_block(top, top) + _vae_attn(top) + top + 27 * top * 2 * z + 2 * z
    n += (2 * z) ** 2 + 2 * z + z * z + z  # conv1, conv2
    # decoder
    dd = [cfg.decoder_base_dim * u for u in (mult[-1], *mult[::-1])]
    n += 27 * z * dd[0] + dd[0] + 2 * _res_block(dd[0], dd[0]) + _vae_attn(dd[0])
    t_up = cfg.temporal_downsample[::-1]
    for i in range(len(mult)):
        a, b = dd[i], dd[i + 1]
        if i > 0 and not wide:
            a //= 2  # Wan2.1: the previous upsampling conv halved the channels
        for _ in range(nres + 1):
            n += _res_block(a, b)
            a = b
        if i != len(mult) - 1:
            out = b if wide else b // 2
            n += 9 * b * out + out
            if t_up[i]:
                n += 3 * b * 2 * b + 2 * b
    return n + dd[-1] + 27 * dd[-1] * cin + cin


def vae_cache_elements_per_pixel(cfg: VaeConfig) -> float:
    """Elements the decoder's causal cache holds per output pixel (batch 1): every 3-tap causal
    conv keeps 2 input frames (the temporal upsamplers' slots too), at its level's resolution."""
    mult, nres = cfg.dim_mult, cfg.num_res_blocks
    wide = cfg.version == "2.2"
    dd = [cfg.decoder_base_dim * u for u in (mult[-1], *mult[::-1])]
    levels = len(mult) - 1
    s0 = 4.0**levels  # output pixels per latent pixel ÷ patch²
    total = cfg.z_dim / s0 + 2 * 2 * dd[0] / s0  # conv1 input, middle: 2 res blocks × 2 convs
    for i in range(len(mult)):
        px = 4.0**i / s0
        a, b = dd[i], dd[i + 1]
        if i > 0 and not wide:
            a //= 2
        for _ in range(nres + 1):
            total += (a + b) * px
            a = b
        if i != levels and cfg.temporal_downsample[::-1][i]:
            total += b * px  # time conv input
    total += dd[-1]  # head conv input, full resolution
    return 2 * total / cfg.patch_size**2  # 2 cached frames; Wan2.2's decoder runs at half size


# ----------------------------------------------------------------------------- plans


@dataclass(frozen=True, kw_only=True)
class TextPlan:
    where: str  # "gpu": on the GPU for the encode, released after; "cpu": encode on the CPU
    precision: str  # "bf16" | "int8" (weight-only linears; the embedding table stays bf16)
    cache: bool = True  # prompt embeddings cached on disk (a hit never loads the encoder)


@dataclass(frozen=True, kw_only=True)
class DiTPlan:
    precision: str  # "bf16" | "fp8" | "int8"
    # last N blocks streamed from pinned host memory, block i+1 prefetched (N > 0: a VACE model's
    # VACE blocks too, streamed_vace_blocks)
    swap_blocks: int
    experts_resident: int  # Wan2.2 A14B: 2 both on the GPU; 1 one at a time
    batch_cfg: bool  # cond + uncond as one batch of 2
    release_before_decode: bool  # DiT(s) leave the GPU before the VAE decodes
    fsdp_shards: int = 1  # >1: the blocks fully_shard'ed over that many ranks (parallel/fsdp.py)


@dataclass(frozen=True, kw_only=True)
class VaePlan:
    tile: tuple[int, int] | None  # latent (h, w) of a decode tile; None: whole frames
    overlap: int  # latent pixels shared by neighbouring tiles (blended linearly)
    # the I2V / FLF2V / TI2V conditioning encode's tiles (same units); None: whole frames
    encode_tile: tuple[int, int] | None = None
    encode_overlap: int = 0


@dataclass(frozen=True, kw_only=True)
class RamPlan:
    experts_in_ram: int  # Wan2.2 A14B: 1 = the idle expert is dropped and re-read (memory-mapped)
    t5_in_ram: bool  # False: the text encoder is dropped after encoding and re-read when needed
    pinned_gib: float  # host memory the streamed blocks take (page-locked when ``pin``)
    # page-locked (fast copies); False when pinning that much would starve the OS: the blocks
    # then stream from pageable memory, which it can still page out (copies ~3× slower)
    pin: bool = True


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """Predicted allocator peaks per phase (GiB), the peak over the run, and host RAM."""

    encode_gib: float
    denoise_gib: float
    decode_gib: float
    peak_gib: float
    ram_gib: float
    h2d_gib_per_step: float  # bytes streamed for block swapping per denoising step


@dataclass(frozen=True, kw_only=True)
class Workload:
    variant: Variant
    width: int
    height: int
    frames: int
    task: str = "t2v"
    precision: str = "bf16"  # the user's choice; the planner does not change DiT precision
    guidance: bool = True  # classifier-free guidance (2 forwards a step)
    token_shards: int = 1  # sequence-parallel ranks sharing the tokens (parallel/): one rank's plan
    weight_shards: int = 1  # ranks the DiT's blocks may be sharded over (FSDP2: parallel/fsdp.py)

    @property
    def tokens(self) -> int:
        return -(-self.variant.seq_len(self.width, self.height, self.frames) // self.token_shards)


@dataclass(frozen=True, kw_only=True)
class Plan:
    name: str
    text: TextPlan
    dit: DiTPlan
    vae: VaePlan
    ram: RamPlan
    predicted: Prediction
    budget_gib: float
    variant: str = ""
    experts: int = 1  # the variant's (Wan2.2 A14B: 2)
    vace_blocks: int = 0  # a VACE variant's VACE blocks (streamed with the blocks when any is)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line per component and the predicted peaks (printed by ``--print-plan`` / -v)."""
        t, d, v, p = self.text, self.dit, self.vae, self.predicted
        tile = (
            "whole frames"
            if v.tile is None
            else f"tiles {v.tile[0]}x{v.tile[1]} latent px, overlap {v.overlap}"
        )
        if v.encode_tile is not None:
            tile += (
                f"; conditioning encode in tiles {v.encode_tile[0]}x{v.encode_tile[1]}, "
                f"overlap {v.encode_overlap}"
            )
        experts = (
            ", one expert on the GPU at a time"
            if self.experts == 2 and d.experts_resident == 1
            else ""
        )
        vace = (
            f" (+{self.vace_blocks} VACE blocks; {p.h2d_gib_per_step:.1f} GiB a step)"
            if self.vace_blocks
            else f" ({p.h2d_gib_per_step:.1f} GiB a step)"
        )
        return "\n".join(
            [
                f"plan {self.name} (budget {self.budget_gib:.1f} GiB): predicted peak {p.peak_gib:.2f} GiB (encode {p.encode_gib:.2f}, "
                f"denoise {p.denoise_gib:.2f}, decode {p.decode_gib:.2f}); host RAM {p.ram_gib:.1f} GiB",
                f"  text encoder: {t.where} {t.precision}"
                + (", released after encoding" if t.where == "gpu" else "")
                + (", prompt embeddings cached on disk" if t.cache else ""),
                f"  DiT: {d.precision}, "
                + (
                    f"{d.swap_blocks} blocks streamed from pinned memory{vace}"
                    if d.swap_blocks
                    else f"blocks sharded over {d.fsdp_shards} ranks (FSDP2)"
                    if d.fsdp_shards > 1
                    else "resident"
                )
                + experts
                + (", CFG batched" if d.batch_cfg else ", CFG sequential")
                + (", released before decoding" if d.release_before_decode else ""),
                f"  VAE: {tile}",
                *(f"  note: {n}" for n in self.notes),
            ]
        )


def _bytes(precision: str) -> float:
    if precision.startswith("gguf:"):  # a GGUF file: its block linears' bits per weight
        return float(precision.removeprefix("gguf:")) / 8
    return {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0, "fp8": 1.0, "int8": 1.0}[precision]


def dit_block_bytes(cfg: DiTConfig, precision: str) -> float:
    """Bytes of one block as stored on the device: linears in ``precision`` (plus fp32 per-channel
    scales when quantized), the fp32 modulation table and norm3, the rest bf16."""
    lin = dit_block_linear_weights(cfg)
    rest = dit_block_params(cfg) - lin
    fp32 = 6 * cfg.dim + 2 * cfg.dim  # modulation, norm3 (FP32_MODULES)
    q = _bytes(precision)
    scales = 0 if q >= 2 else 4 * (10 + (2 if cfg.image_dim else 0)) * cfg.dim  # ~per out channel
    if precision.startswith("gguf:"):
        scales = 0  # GGUF blocks hold their scales: counted in the bits per weight
    return lin * q + scales + (rest - fp32) * 2 + fp32 * 4


def dit_vace_block_bytes(cfg: DiTConfig, precision: str = "bf16", *, first: bool = False) -> float:
    """Bytes of one VACE block (models/vace.py) as stored: a main block's tensors plus after_proj
    (and, ``first``, block 0's before_proj). bf16 but the fp32 modulation and norm3, whatever the
    DiT's precision (engines/torch_ops.py quantizes ``blocks.*`` only); a GGUF file keeps its
    linears quantized, like the main blocks'."""
    d, projs = cfg.dim, 2 if first else 1
    if precision.startswith("gguf:"):
        lin = dit_block_linear_weights(cfg) + projs * d * d
        return lin * _bytes(precision) + (dit_block_params(cfg) + projs * (d * d + d) - lin) * 4
    return dit_block_bytes(cfg, "bf16") + projs * (d * d + d) * 2


def dit_vace_blocks_bytes(cfg: DiTConfig, precision: str = "bf16") -> float:
    """Bytes of a VACE model's VACE blocks, the part of its branch that streams with the blocks
    (:func:`streamed_vace_blocks`); 0 for other models."""
    if cfg.vace_in_dim is None:
        return 0.0
    rest = (len(cfg.vace_layers) - 1) * dit_vace_block_bytes(cfg, precision)
    return dit_vace_block_bytes(cfg, precision, first=True) + rest


def streamed_vace_blocks(cfg: DiTConfig, swap_blocks: int) -> int:
    """VACE blocks streamed from host memory: all of them whenever any main block streams (they
    run first through the same device slots: engines/block_swap.py), else none."""
    return len(cfg.vace_layers) if swap_blocks and cfg.vace_in_dim is not None else 0


def dit_slot_bytes(cfg: DiTConfig, precision: str, swap_blocks: int) -> float:
    """One device slot of the block swapper: sized for the largest streamed block (a VACE model's
    VACE block 0, with its before_proj, outweighs a main block)."""
    blk = dit_block_bytes(cfg, precision)
    if streamed_vace_blocks(cfg, swap_blocks):
        return max(blk, dit_vace_block_bytes(cfg, precision, first=True))
    return blk


def dit_nonblock_bytes(cfg: DiTConfig, precision: str = "bf16") -> float:
    """Non-block parameters: text_embedding bf16, everything else FP32_MODULES (fp32). A GGUF
    DiT keeps the text embedding, time projection and head linears quantized (QuantLinear).
    A VACE model's whole branch is counted here: its fp32 vace_patch_embedding and its blocks
    (:func:`dit_vace_blocks_bytes`; the plan takes those out again when they stream)."""
    d = cfg.dim
    text = cfg.text_dim * d + d + d * d + d
    vace_patch = (cfg.vace_in_dim * d * math.prod(cfg.patch_size) + d) * 4 if cfg.vace_in_dim else 0
    vace = vace_patch + dit_vace_blocks_bytes(cfg, precision)
    if precision.startswith("gguf:"):
        lin = cfg.text_dim * d + d * d + 6 * d * d + d * math.prod(cfg.patch_size) * cfg.out_dim
        return lin * _bytes(precision) + (dit_nonblock_params(cfg) - lin) * 4 + vace
    return text * 2 + (dit_nonblock_params(cfg) - text) * 4 + vace


def dit_activation_bytes(cfg: DiTConfig, tokens: int, batch: int, *, per_token_t: bool) -> float:
    """Peak bytes of one DiT forward's tensors on the GPU (weights apart)."""
    d, f = cfg.dim, cfg.ffn_dim
    per = _ACT_TOKEN * d + (_ACT_PER_TOKEN_T * d if per_token_t else 0.0)
    chunk = min(tokens, DIT_TOKEN_CHUNK)
    # VACE: the hints of every VACE block (compute dtype) and the fp32 VACE stream live through
    # the main blocks (models/vace.py)
    per += len(cfg.vace_layers) * 2 * d + (4 * d if cfg.vace_layers else 0)
    return _ACT_MARGIN * batch * (tokens * per + chunk * _ACT_CHUNK_FFN * f) + _ACT_OVERHEAD


def t5_bytes(cfg: T5Config, precision: str) -> float:
    emb = t5_embedding_params(cfg)
    return emb * 2 + (t5_params(cfg) - emb) * _bytes(precision)


def vae_decode_bytes(cfg: VaeConfig, tile_px: float, dtype_bytes: float = 2.0) -> float:
    """Working set of decoding one chunk of one tile of ``tile_px`` output pixels (weights apart)."""
    cache = vae_cache_elements_per_pixel(cfg) * tile_px * dtype_bytes
    act = _VAE_ACT_BYTES_PER_PX[cfg.version] * tile_px * dtype_bytes / 2
    return cache + act


def _tile_px(v: Variant, w: Workload, tile: tuple[int, int] | None) -> int:
    """Output pixels of one VAE tile (the whole frame for None)."""
    if tile is None:
        return w.width * w.height
    s = v.vae.spatial_factor
    return min(tile[0] * s, w.height) * min(tile[1] * s, w.width)


def predict(w: Workload, text: TextPlan, dit: DiTPlan, vae: VaePlan, ram: RamPlan) -> Prediction:
    v = w.variant
    cfg = v.dit
    # encode: the text encoder alone on the GPU (the DiT is loaded after it is released)
    enc = t5_bytes(v.t5, text.precision) + 0.05 * GIB if text.where == "gpu" else 0.0
    if v.clip is not None and w.task in ("i2v", "flf2v"):
        enc = max(enc, clip_params(v.clip) * 2 + 0.2 * GIB)
    # denoise
    n = cfg.num_layers
    blk = dit_block_bytes(cfg, w.precision)
    # a VACE model's VACE blocks stream with the main blocks (streamed_vace_blocks)
    n_vace = streamed_vace_blocks(cfg, dit.swap_blocks)
    vace_streamed = dit_vace_blocks_bytes(cfg, w.precision) if n_vace else 0.0
    nonblock = dit_nonblock_bytes(cfg, w.precision)
    resident = nonblock - vace_streamed + (n - dit.swap_blocks) * blk
    if dit.fsdp_shards > 1:  # 1/N of every block, plus two gathered whole (one prefetched)
        resident = nonblock + n * blk / dit.fsdp_shards + 2 * blk
    if dit.swap_blocks:  # the two device slots of the swapper
        slot = dit_slot_bytes(cfg, w.precision, dit.swap_blocks)
        resident += min(2, dit.swap_blocks + n_vace) * slot
    experts_on_gpu = dit.experts_resident if v.experts == 2 else 1
    weights = resident * experts_on_gpu
    batch = 2 if (dit.batch_cfg and w.guidance) else 1
    # per-token timesteps only when TI2V conditions on an image (its first frame is clean)
    act = dit_activation_bytes(cfg, w.tokens, batch, per_token_t=w.task == "ti2v")
    z, t, h, wl = v.latent_shape(w.width, w.height, w.frames)
    latents = 8 * z * t * h * wl * 4  # x, velocities, sampler history (fp32)
    vae_w = vae_params(v.vae) * 2
    # I2V (and V2V: the input video) encodes a whole video before the denoise; TI2V one frame
    cond = 0.0
    if w.task in ("i2v", "flf2v", "ti2v", "v2v", "vace"):
        frames = w.frames if w.task != "ti2v" else 1
        px = _tile_px(v, w, vae.encode_tile)
        # one frame: the first chunk only (a quarter of a 4-frame chunk's activations, one cached
        # frame instead of two); a whole video: as a decode of full frames
        cache = vae_cache_elements_per_pixel(v.vae) * px * 2
        vae_act = _VAE_ACT_BYTES_PER_PX[v.vae.version] * px  # (not ``act``: the DiT's, below)
        cond = vae_w + (0.5 * cache + 0.25 * vae_act if frames == 1 else cache + vae_act)
        enc = max(enc, cond)
    denoise = weights + act + latents
    # decode: the VAE, one tile's working set, the DiT(s) unless released
    decode = vae_w + vae_decode_bytes(v.vae, _tile_px(v, w, vae.tile)) + latents
    if not dit.release_before_decode:
        decode += weights
    h2d = (dit.swap_blocks * blk + vace_streamed) * experts_on_gpu / GIB
    h2d *= 1 if batch == 2 or not w.guidance else 2  # every block (and VACE block) each forward
    peak = max(enc, denoise, decode)
    # host RAM: everything not on the GPU lives in (private) RAM; pinned blocks count in full
    dit_total = dit_nonblock_bytes(cfg, w.precision) + n * blk
    ram_b = (
        dit_total * ram.experts_in_ram
        + (t5_bytes(v.t5, text.precision) if ram.t5_in_ram else 0)
        + vae_w
    )
    if v.clip is not None:
        ram_b += clip_params(v.clip) * 2
    return Prediction(
        encode_gib=enc / GIB,
        denoise_gib=denoise / GIB,
        decode_gib=decode / GIB,
        peak_gib=peak / GIB,
        ram_gib=ram_b / GIB,
        h2d_gib_per_step=h2d,
    )


# ----------------------------------------------------------------------------- choosing

BUDGETS_GIB = {"8gb": 8.0, "12gb": 12.0, "16gb": 16.0, "24gb": 24.0}
# Each fallback plan is planned for this share of the previous plan's budget.
FALLBACK_STEP = 0.85


def usable_gib(budget_gib: float) -> float:
    """What the allocator may use out of a card's memory: minus the context, minus fragmentation."""
    return (budget_gib - CONTEXT_GIB) / FRAGMENTATION


def vae_tile_options(v: Variant, width: int, height: int) -> list[VaePlan]:
    """Whole frames, then square tiles from 768 down to 128 output pixels (latent units in the
    plan), each smaller than the frame; the overlap is 64 output pixels of linear blending."""
    s = v.vae.spatial_factor
    h, w = height // s, width // s
    overlap = max(2, 64 // s)
    out = [VaePlan(tile=None, overlap=0)]
    for side_px in (768, 512, 384, 320, 256, 192, 128):
        side = side_px // s
        if side <= overlap * 2 or (side >= h and side >= w):
            continue
        out.append(VaePlan(tile=(min(side, h), min(side, w)), overlap=overlap))
    return out


def _ram_plan(w: Workload, text: TextPlan, dit: DiTPlan, ram_gib: float) -> RamPlan:
    v = w.variant
    two = v.experts == 2
    blk = dit_block_bytes(v.dit, w.precision)
    dit_total = dit_nonblock_bytes(v.dit, w.precision) + v.dit.num_layers * blk
    t5 = t5_bytes(v.t5, text.precision)
    room = 0.8 * ram_gib * GIB  # the OS, the app and the page cache need the rest
    experts = 2 if two and 2 * dit_total + vae_params(v.vae) * 2 < room else 1
    n_vace = streamed_vace_blocks(v.dit, dit.swap_blocks)
    vace = dit_vace_blocks_bytes(v.dit, w.precision) if n_vace else 0.0
    streamed = (dit.swap_blocks * blk + vace) * experts / GIB
    return RamPlan(
        experts_in_ram=experts,
        t5_in_ram=experts * dit_total + t5 < room,
        pinned_gib=streamed,
        pin=streamed <= MAX_PINNED_RAM_SHARE * ram_gib,
    )


def plan_for(
    w: Workload, budget_gib: float, *, ram_gib: float | None = None, name: str | None = None
) -> Plan:
    """The fastest plan whose predicted peak fits ``budget_gib``: each phase (encode, denoise,
    decode) runs alone on the GPU, so each component takes its loosest option that fits on its own.
    Falls back to the tightest option of a phase when none fits."""
    v = w.variant
    n = v.dit.num_layers
    ram = ram_gib if ram_gib is not None else 64.0
    room = usable_gib(budget_gib)
    two = v.experts == 2
    probe_ram = RamPlan(experts_in_ram=1, t5_in_ram=True, pinned_gib=0.0)

    def pred(text: TextPlan, dit: DiTPlan, vae: VaePlan) -> Prediction:
        return predict(w, text, dit, vae, probe_ram)

    base_dit = DiTPlan(
        precision=w.precision,
        swap_blocks=0,
        experts_resident=2 if two else 1,
        batch_cfg=True,
        release_before_decode=True,
    )
    whole = VaePlan(tile=None, overlap=0)
    # text encoder: bf16 on the GPU, int8 on the GPU, on the CPU
    texts = [
        TextPlan(where="gpu", precision="bf16"),
        TextPlan(where="gpu", precision="int8"),
        TextPlan(where="cpu", precision="bf16"),
    ]
    tiles = vae_tile_options(v, w.width, w.height)
    # the conditioning encode (I2V: a whole video) in its smallest tiles while the text encoder is
    # chosen, then in the largest tiles that fit beside nothing (it runs alone)
    conditioned = w.task in ("i2v", "flf2v", "ti2v", "v2v", "vace")
    small = (
        whole
        if not conditioned or tiles[-1].tile is None
        else replace(whole, encode_tile=tiles[-1].tile, encode_overlap=tiles[-1].overlap)
    )
    text = next((t for t in texts if pred(t, base_dit, small).encode_gib <= room), texts[-1])
    if text.where == "gpu" and pred(texts[-1], base_dit, small).encode_gib > room:
        text = texts[-1]  # the image conditioning alone overflows: keep the GPU for it
    enc = whole
    if conditioned:
        encs = [replace(whole, encode_tile=t.tile, encode_overlap=t.overlap) for t in tiles]
        enc = next((e for e in encs if pred(text, base_dit, e).encode_gib <= room), encs[-1])
    # DiT: both experts resident, then one at a time; CFG batched, then sequential; the fewest
    # streamed blocks that fit
    dit_opts: list[DiTPlan] = []
    for batch_cfg in (True, False):
        for experts in (2, 1) if two else (1,):
            if experts == 2 and not batch_cfg:
                continue
            dit_opts.append(replace(base_dit, experts_resident=experts, batch_cfg=batch_cfg))
    dit = None
    for opt in dit_opts:
        # both experts on the GPU only when both fit whole: never both streamed
        for k in range(1) if opt.experts_resident == 2 else range(n + 1):
            cand = replace(opt, swap_blocks=k)
            if pred(text, cand, enc).denoise_gib <= room:
                dit = cand
                break
            # a parallel run: 1/N of the blocks a rank (FSDP2) before any block is streamed
            sharded = replace(opt, fsdp_shards=w.weight_shards)
            if k == 0 and w.weight_shards > 1 and pred(text, sharded, enc).denoise_gib <= room:
                dit = sharded
                break
        if dit is not None:
            break
    if dit is None:
        dit = replace(dit_opts[-1], swap_blocks=n)
    # decode: keep the DiT on the GPU if it fits beside a whole-frame decode, else release it and
    # take the largest tile that fits
    kept = replace(dit, release_before_decode=False)
    if pred(text, kept, enc).decode_gib <= room:  # enc: whole-frame decode, the chosen encode
        dit, vae = kept, enc
    else:
        opts = [
            replace(t, encode_tile=enc.encode_tile, encode_overlap=enc.encode_overlap)
            for t in tiles
        ]
        vae = next((t for t in opts if pred(text, dit, t).decode_gib <= room), opts[-1])
    rp = _ram_plan(w, text, dit, ram)
    return Plan(
        name=name or f"{budget_gib:g}gb",
        text=text,
        dit=dit,
        vae=vae,
        ram=rp,
        predicted=predict(w, text, dit, vae, rp),
        budget_gib=budget_gib,
        variant=v.name,
        experts=v.experts,
        vace_blocks=streamed_vace_blocks(v.dit, dit.swap_blocks),
        notes=_notes(w, dit, rp, ram),
    )


def _notes(w: Workload, dit: DiTPlan, rp: RamPlan, ram_gib: float) -> tuple[str, ...]:
    notes = []
    n_vace = streamed_vace_blocks(w.variant.dit, dit.swap_blocks)
    vace = f" (+{n_vace} VACE blocks)" if n_vace else ""
    if not rp.pin:
        notes.append(
            f"streaming {dit.swap_blocks} blocks{vace} from pageable memory: pinning their "
            f"{rp.pinned_gib:.1f} GiB of {ram_gib:.0f} GiB RAM would starve the system "
            "(copies are slower); --precision fp8 halves "
            + ("the main blocks' (the VACE blocks stay bf16)" if n_vace else "it")
        )
    if w.variant.experts == 2 and rp.experts_in_ram == 1:
        notes.append(
            "one Wan2.2 expert in RAM at a time: the other is re-read from its "
            "memory-mapped file at the switch"
        )
    return tuple(notes)


def plan_ladder(w: Workload, budget_gib: float, *, ram_gib: float | None = None) -> list[Plan]:
    """The plans to try under ``budget_gib``, loosest first: the plan for the budget, then plans
    for ever smaller shares of it (``FALLBACK_STEP``) until the tightest plan, without repeats.
    Every plan predicts a peak ≤ the one before (tests check it). A CUDA out-of-memory error moves
    the run to the next one (engines/residency.py)."""
    if not (budget_gib > 0 and math.isfinite(budget_gib)):
        raise ConfigError(f"VRAM budget must be a positive number of GB, got {budget_gib}")
    out: list[Plan] = []
    b = budget_gib
    while True:
        p = plan_for(
            w,
            b,
            ram_gib=ram_gib,
            name=f"{budget_gib:g}gb" if not out else f"{budget_gib:g}gb-fallback{len(out)}",
        )
        key = (p.text, p.dit, p.vae)
        if not out or key != (out[-1].text, out[-1].dit, out[-1].vae):
            if out and p.predicted.peak_gib > out[-1].predicted.peak_gib:
                p = replace(p, text=out[-1].text)  # never loosen a phase on the way down
                p = replace(p, predicted=predict(w, p.text, p.dit, p.vae, p.ram))
            out.append(p)
        if usable_gib(b) <= 0.5 or len(out) >= 12:
            break
        b = CONTEXT_GIB + (b - CONTEXT_GIB) * FALLBACK_STEP
    return out


def auto_budget_gib(free_gib: float) -> float:
    """The "auto" budget: what is free on the device now (plus our context, already allocated)."""
    return free_gib + CONTEXT_GIB


def is_gguf_precision(precision: str) -> bool:
    """Whether ``precision`` is "gguf:<bits per weight>" (run.stored_precision of a GGUF DiT)."""
    bits = precision.removeprefix("gguf:")
    try:
        return bits != precision and 1.0 <= float(bits) <= 32.0
    except ValueError:
        return False


def workload_for(
    variant: Variant,
    width: int,
    height: int,
    frames: int,
    *,
    task: str = "t2v",
    precision: str | None = None,
    guidance: bool = True,
    token_shards: int = 1,
    weight_shards: int = 1,
) -> Workload:
    prec = precision or "bf16"
    if prec not in ("bf16", "fp16", "fp8", "int8") and not is_gguf_precision(prec):
        raise ConfigError(f"unknown DiT precision {prec!r} for the planner")
    return Workload(
        variant=variant,
        width=width,
        height=height,
        frames=frames,
        task=task,
        precision=prec,
        guidance=guidance,
        token_shards=token_shards,
        weight_shards=weight_shards,
    )


def free_vram_gib(device: torch.device | str | int | None = None) -> float:
    """Free memory of the CUDA device now (the "auto" budget), plus what this process already holds
    in torch's cache (reusable by us)."""
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return (free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)) / GIB


def system_ram_gib() -> float | None:
    """Physical memory of this machine (None where it cannot be read)."""
    try:
        import psutil

        return psutil.virtual_memory().total / GIB
    except ImportError:
        pass
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (AttributeError, ValueError, OSError):
        return None
