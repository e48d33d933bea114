"""The known Wan releases: where they live on the Hugging Face Hub, what to fetch, how big, how much VRAM.

Every entry is a frozen dataclass. A release names one model variant (``variants.py``) in one
layout (``official`` Wan folder, ``diffusers`` folder, ``comfyui`` single files, ``gguf`` single
quantized files) and the files it needs, as exact repo paths (ComfyUI, GGUF) or as allow-patterns
(repos with many shards). Besides the Wan2.1/2.2 models: the VACE models (``--task vace``), the
SkyReels-V2 Diffusion Forcing models (long videos) and GGUF quants of the 14B / A14B models.

Sizes. Where the Hub page shows a figure (searched 2026-11-24: the repos' "Files" pages and LFS
pointers) it is used and ``size_source`` says "published"; otherwise the size is computed from the
parameter counts of shared/wan-spec.md §3.1 (DiT) and §2/§4/§5 (T5, VAE, CLIP) and the storage dtype,
and ``size_source`` says "computed". File names that could not be seen on a Hub page are marked
``# unconfirmed`` where they are declared.

VRAM. Every VRAM figure (GiB) is an *estimate* from a formula (``_estimate``), not a measurement: weights
at their runtime precision + the DiT's largest activation working set at the release's default size
+ the VAE decode working set + 1 GB of CUDA context. ``memory.py`` plans the real placement.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from dataclasses import dataclass, field

from .errors import ConfigError
from .variants import Variant, get_variant

GB = 1_000_000_000  # download sizes are decimal, as the Hub shows them
GIB = 2**30  # VRAM figures are GiB, as nvidia-smi and GPU boxes count them


class Layout(enum.Enum):
    OFFICIAL = "official"
    DIFFUSERS = "diffusers"
    COMFYUI = "comfyui"
    GGUF = "gguf"  # single GGUF files (city96's and others'): DiT(s), umT5 encoder; ComfyUI VAE


class Plan(enum.Enum):
    """How the components share the GPU; ordered fastest first."""

    RESIDENT = "resident"  # every weight stays on the GPU
    OFFLOAD = "offload"  # one component at a time on the GPU (T5 on the CPU, experts swapped)
    BLOCK_SWAP = "block_swap"  # DiT blocks streamed from pinned RAM, tiled VAE decode

    @property
    def rank(self) -> int:
        return list(Plan).index(self)


@dataclass(frozen=True)
class Pin:
    """What an LFS pointer on the Hub page showed for one file: its sha256 and, where the pointer's
    byte count was seen (not a rounded "GB" figure), its exact size. A download must match both."""

    sha256: str
    size: int | None = None


@dataclass(frozen=True, kw_only=True)
class CatalogFile:
    """One file (or a set of files, when ``path`` has wildcards) of a release, within one Hub repo."""

    path: str  # repo path or fnmatch pattern ('*' does not cross '/')
    role: str  # "dit" | "dit_low" | "vae" | "t5" | "clip" | "tokenizer" | "config" | "image_processor"
    size: int  # bytes, the sum over all files the pattern matches (an estimate unless exact_size)
    sha256: str | None = None  # pinned: LFS sha256 seen on the Hub page; a download must match it
    exact_size: int | None = None  # pinned: the LFS pointer's byte count; a download must match it
    required: bool = True  # a pattern that must match at least one file

    def __post_init__(self) -> None:
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"{self.path}: pinned sha256 must be 64 lower-case hex digits")
        if (self.sha256 or self.exact_size) and self.is_pattern:
            raise ValueError(f"{self.path}: a pattern cannot be pinned")

    @property
    def is_pattern(self) -> bool:
        return any(c in self.path for c in "*?[")

    def matches(self, repo_path: str) -> bool:
        return match_path(self.path, repo_path)


@dataclass(frozen=True, kw_only=True)
class RepoFiles:
    """The files a release takes from one Hub repository."""

    repo_id: str
    files: tuple[CatalogFile, ...]
    revision: str = "main"

    @property
    def folder(self) -> str:
        """Folder name under the models folder (several releases can share one repo's folder)."""
        return self.repo_id.replace("/", "--")

    def wanted(self, repo_path: str) -> CatalogFile | None:
        return next((f for f in self.files if f.matches(repo_path)), None)


@dataclass(frozen=True, kw_only=True)
class Release:
    name: str  # CLI name, e.g. "wan2.1-t2v-1.3b-diffusers"
    title: str
    variant: str  # key of variants.VARIANTS
    layout: Layout
    sources: tuple[RepoFiles, ...]  # first one holds the diffusion model
    precision: str  # storage precision of the DiT file(s): "fp32" | "bf16" | "fp16" | "fp8"
    runtime_precision: str  # what the DiT runs in: fp32 files are cast to bf16 on load
    size_source: str  # "published" | "computed" | "mixed"
    default_size: tuple[int, int, int]  # (width, height, frames) the VRAM estimate assumes
    vram_gb: tuple[tuple[Plan, float], ...] = field(default=())  # estimates, filled by _release
    notes: str = ""

    @property
    def repo_id(self) -> str:
        return self.sources[0].repo_id

    @property
    def download_bytes(self) -> int:
        return sum(f.size for s in self.sources for f in s.files)

    @property
    def variant_config(self) -> Variant:
        return get_variant(self.variant)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t.value for t in self.variant_config.tasks)

    @property
    def quality_tier(self) -> int:
        """Coarse ranking used by the recommendation: bigger models first (1.3B, 5B, 14B, A14B)."""
        v = self.variant_config
        if v.experts == 2:
            return 4
        return 1 if v.dit.dim <= 1536 else 2 if v.dit.dim <= 3072 else 3

    @property
    def fidelity(self) -> int:
        """How close the DiT weights are to the released ones: 2 for bf16/fp16/fp32/fp8 files and
        GGUF Q8_0, 1 for Q6_K/Q5_K_*, 0 for the 4-bit and smaller GGUF quants."""
        if self.layout is not Layout.GGUF:
            return 2
        quant = self.precision.upper()
        return 2 if quant.startswith("Q8") else 1 if quant[:2] in ("Q5", "Q6") else 0

    def vram_for(self, plan: Plan) -> float:
        return dict(self.vram_gb)[plan]

    def best_plan(self, vram_gb: float, *, headroom: float = 0.92) -> Plan | None:
        """The fastest plan whose estimate fits in ``headroom`` × the GPU's memory."""
        for plan, need in self.vram_gb:
            if need <= vram_gb * headroom:
                return plan
        return None


def match_path(pattern: str, path: str) -> bool:
    """fnmatch on each '/'-separated part, so 'google/umt5-xxl/*' matches no deeper folder and a
    pattern without '/' only matches files at the repo root. A path that is not a safe relative
    path (:func:`path_problem`) matches nothing."""
    if path_problem(path) is not None:
        return False
    pp, sp = pattern.split("/"), path.split("/")
    return len(pp) == len(sp) and all(
        fnmatch.fnmatchcase(s, p) for p, s in zip(pp, sp, strict=True)
    )


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def path_problem(path: object) -> str | None:
    """Why ``path`` (a file name from the Hub, a key of index.json) is not a plain relative path
    with '/' separators that stays inside the folder it is joined to, on every OS (None: it is).

    Refused: empty names and parts ('a//b', a trailing '/'), '.' and '..' parts, absolute paths,
    backslashes (a separator on Windows), colons (drive letters, NTFS streams), control
    characters."""
    if not isinstance(path, str):
        return f"not a string ({type(path).__name__})"
    if not path:
        return "an empty name"
    if path.startswith("/"):
        return "an absolute path"
    if "\\" in path:
        return "a backslash (a folder separator on Windows)"
    if ":" in path:
        return "a colon (a drive letter or stream on Windows)"
    if _CONTROL.search(path):
        return "a control character"
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "an empty, '.' or '..' part (it could leave its folder)"
    return None


# ----------------------------------------------------------------------------- sizes

# Parameter counts (shared/wan-spec.md §3.1): DiT per expert.
_PARAMS = {
    "t2v-1.3B": 1_418_996_800,
    "t2v-14B": 14_288_491_584,
    "i2v-14B": 16_394_878_784,
    "flf2v-14B": 16_395_536_704,
    "t2v-A14B": 14_288_491_584,
    "i2v-A14B": 14_288_901_184,
    "ti2v-5B": 4_999_787_712,
    # the T2V DiT plus its VACE branch (memory.dit_params; the test checks these against it)
    "vace-1.3B": 2_153_972_032,
    "vace-14B": 17_337_592_896,
    "vace-A14B": 17_337_592_896,
    # SkyReels-V2 DF: the Wan2.1 DiTs; the 1.3B adds the fps embedding (counted on the model)
    "skyreels-v2-df-1.3B-540P": 1_435_525_696,
    "skyreels-v2-df-14B-540P": 14_288_491_584,
    "skyreels-v2-df-14B-720P": 14_288_491_584,
}
_VACE_BRANCH = {  # parameters of the VACE branch alone (vace_blocks, vace_patch_embedding)
    "vace-1.3B": 2_153_972_032 - 1_418_996_800,
    "vace-14B": 17_337_592_896 - 14_288_491_584,
    "vace-A14B": 17_337_592_896 - 14_288_491_584,
}
_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}

# Component files seen on Hub pages (published sizes, rounded as the Hub shows them).
T5_PTH = 11_400_000_000  # models_t5_umt5-xxl-enc-bf16.pth, "11.4 GB"
T5_FP16 = 11_366_399_385  # Comfy umt5_xxl_fp16.safetensors (LFS pointer)
T5_FP8 = 6_735_906_897  # Comfy umt5_xxl_fp8_e4m3fn_scaled.safetensors (LFS pointer)
T5_DIFFUSERS_FP32 = 22_730_000_000  # Wan2.1 *-Diffusers text_encoder/, 5 shards, "22.7 GB"
T5_DIFFUSERS_BF16 = 11_360_000_000  # Wan2.2-TI2V-5B-Diffusers text_encoder/, 3 shards, "11.4 GB"
VAE21_PTH = 508_000_000  # Wan2.1_VAE.pth and diffusers vae/, "508 MB" (fp32)
VAE21_COMFY = 254_000_000  # Comfy wan_2.1_vae.safetensors, "254 MB" (bf16)
VAE22_FP32 = (
    2_820_000_000  # Wan2.2 VAE fp32, "2.82 GB" (a diffusers copy; official .pth unconfirmed)
)
VAE22_COMFY = 1_410_000_000  # computed: half of the fp32 VAE (bf16); size not seen
CLIP_PTH = 4_770_000_000  # computed: 2 × Kijai's 2.39 GB fp16 copy of the same open-clip model
CLIP_VISION_H = 1_264_000_000  # computed: ViT-H/14 visual tower, 632 M params × 2 bytes
CLIP_DIFFUSERS = 2_528_000_000  # computed: the same visual tower stored fp32 (image_encoder/)
TOKENIZER_UMT5 = 21_500_000  # google/umt5-xxl/ and diffusers tokenizer/, "21.5 MB"
TOKENIZER_XLMR = 22_000_000  # computed: xlm-roberta-large/ tokenizer files (not seen)
SMALL = 100_000  # config / index json files


def _dit_bytes(variant: str, precision: str, experts: int = 1) -> int:
    return _PARAMS[variant] * _BYTES[precision] * experts


# ----------------------------------------------------------------------------- VRAM estimates

_CONTEXT_GB = 1.0  # CUDA context + allocator slack


def _activations_gb(v: Variant, width: int, height: int, frames: int) -> float:
    """Largest DiT working set of one forward (CFG passes run one after the other): the FFN's
    hidden pair (2·ffn_dim) and ~6 hidden-width tensors per token, bf16."""
    tokens = v.seq_len(width, height, frames)
    return tokens * (2 * v.dit.ffn_dim + 6 * v.dit.dim) * 2 / GIB


def _vae_decode_gb(v: Variant, width: int, height: int, tiled: bool) -> float:
    """Working set of one causal decode chunk (4 output frames): ~8 live fp32 feature maps of the
    decoder's full-resolution level (96 channels). Calibrated so that 832×480 gives ≈4.6 GiB, which
    keeps the official README's 8.19 GB peak for the 1.3B model (offload, T5 on CPU) plausible; a
    tiled decode caps the chunk at a 256 px tile."""
    if tiled:
        width, height = min(width, 256), min(height, 256)
    return 4 * 96 * width * height * 4 * 8 / GIB


def _estimate(
    variant: str,
    dit_precision: str,
    t5_bytes: int,
    vae_bytes: int,
    clip_bytes: int,
    size: tuple[int, int, int],
    *,
    expert_bytes: int | None = None,
) -> tuple[tuple[Plan, float], ...]:
    """``expert_bytes``: one expert's DiT as it sits in VRAM when that is not parameters × the
    precision's bytes: a GGUF file, whose blocks stay quantized on the GPU (the file's size)."""
    v = get_variant(variant)
    w, h, f = size
    if expert_bytes is not None:
        one_expert = expert_bytes / GIB
    else:
        one_expert = _PARAMS[variant] * _BYTES[dit_precision] / GIB
    dit_all = one_expert * v.experts
    t5 = (t5_bytes if t5_bytes < T5_DIFFUSERS_FP32 else t5_bytes / 2) / GIB  # fp32 T5 runs in bf16
    act = _activations_gb(v, w, h, f)
    vae_w = vae_bytes / GIB
    clip = clip_bytes / GIB
    resident = t5 + dit_all + vae_w + clip + max(act, _vae_decode_gb(v, w, h, tiled=False))
    offload = max(one_expert + act, vae_w + _vae_decode_gb(v, w, h, tiled=False), clip)
    # block swap: 4 of the DiT's blocks resident (+ embeddings/head ≈ 2 %), tiled VAE decode; a
    # VACE branch is never streamed (memory.py keeps it resident, its linears bf16)
    branch = _VACE_BRANCH.get(variant, 0)
    streamed = one_expert * (1 - branch / _PARAMS[variant])
    blocks = streamed * (4 / v.dit.num_layers + 0.02) + branch * 2 / GIB
    swap = max(blocks + act, vae_w + _vae_decode_gb(v, w, h, tiled=True))
    return tuple(
        (p, round(x + _CONTEXT_GB, 1))
        for p, x in ((Plan.RESIDENT, resident), (Plan.OFFLOAD, offload), (Plan.BLOCK_SWAP, swap))
    )


# ----------------------------------------------------------------------------- the releases

_480P = (832, 480, 81)
_720P = (1280, 720, 81)
_5B = (1280, 704, 121)
_SKY540 = (960, 544, 97)  # SkyReels-V2's recommended sizes (variants.py)
_SKY720 = (1280, 720, 121)

_DIFFUSERS_TOKENIZER = RepoFiles(
    repo_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    files=(CatalogFile(path="tokenizer/*", role="tokenizer", size=TOKENIZER_UMT5),),
)


def _official(
    *,
    name: str,
    repo: str,
    variant: str,
    title: str,
    size: tuple[int, int, int],
    i2v_clip: bool = False,
    experts: int = 1,
    vae22: bool = False,
    size_source: str = "computed",
    dit_pattern: str = "diffusion_pytorch_model*.safetensors*",
    config_required: bool = True,
) -> Release:
    """An official Wan-AI repo: DiT shards in fp32 (the 1.3B file is 5.68 GB = 1.42 B × 4 bytes;
    fp32 for the others is assumed), T5 .pth in bf16, VAE .pth, tokenizer folder(s)."""
    files: list[CatalogFile] = [
        CatalogFile(path="models_t5_umt5-xxl-enc-bf16.pth", role="t5", size=T5_PTH),
        CatalogFile(path="google/umt5-xxl/*", role="tokenizer", size=TOKENIZER_UMT5),
        CatalogFile(
            path="Wan2.2_VAE.pth" if vae22 else "Wan2.1_VAE.pth",
            role="vae",
            size=VAE22_FP32 if vae22 else VAE21_PTH,
        ),
    ]
    if experts == 2:
        per = _dit_bytes(variant, "fp32")
        files += [
            CatalogFile(path="high_noise_model/*", role="dit", size=per + SMALL),
            CatalogFile(path="low_noise_model/*", role="dit_low", size=per + SMALL),
        ]
    else:
        files += [
            CatalogFile(path="config.json", role="config", size=SMALL, required=config_required),
            CatalogFile(
                path=dit_pattern,
                role="dit",
                size=_dit_bytes(variant, "fp32"),
            ),
        ]
    if i2v_clip:
        files += [
            CatalogFile(
                path="models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
                role="clip",
                size=CLIP_PTH,
            ),
            CatalogFile(
                path="xlm-roberta-large/*", role="tokenizer", size=TOKENIZER_XLMR, required=False
            ),
        ]
    t5, vae = T5_PTH, (VAE22_FP32 if vae22 else VAE21_PTH)
    return Release(
        name=name,
        title=title,
        variant=variant,
        layout=Layout.OFFICIAL,
        sources=(RepoFiles(repo_id=repo, files=tuple(files)),),
        precision="fp32",
        runtime_precision="bf16",
        size_source=size_source,
        default_size=size,
        vram_gb=_estimate(variant, "bf16", t5, vae, CLIP_VISION_H if i2v_clip else 0, size),
    )


def _diffusers(
    *,
    name: str,
    repo: str,
    variant: str,
    title: str,
    size: tuple[int, int, int],
    image_encoder: bool = False,
    experts: int = 1,
    t5_bytes: int = T5_DIFFUSERS_FP32,
    vae_bytes: int = VAE21_PTH,
    size_source: str = "computed",
) -> Release:
    """A Wan-AI *-Diffusers repo: model_index.json + one folder per component."""
    per = _dit_bytes(variant, "fp32")
    files = [
        CatalogFile(path="model_index.json", role="config", size=SMALL),
        CatalogFile(path="scheduler/*", role="config", size=SMALL),
        CatalogFile(path="tokenizer/*", role="tokenizer", size=TOKENIZER_UMT5),
        CatalogFile(path="text_encoder/*", role="t5", size=t5_bytes),
        CatalogFile(path="vae/*", role="vae", size=vae_bytes),
        CatalogFile(path="transformer/*", role="dit", size=per),
    ]
    if experts == 2:
        files.append(CatalogFile(path="transformer_2/*", role="dit_low", size=per))
    if image_encoder:
        files += [
            CatalogFile(path="image_encoder/*", role="clip", size=CLIP_DIFFUSERS),
            CatalogFile(path="image_processor/*", role="image_processor", size=SMALL),
        ]
    return Release(
        name=name,
        title=title,
        variant=variant,
        layout=Layout.DIFFUSERS,
        sources=(RepoFiles(repo_id=repo, files=tuple(files)),),
        precision="fp32",
        runtime_precision="bf16",
        size_source=size_source,
        default_size=size,
        vram_gb=_estimate(
            variant, "bf16", t5_bytes, vae_bytes, CLIP_VISION_H if image_encoder else 0, size
        ),
    )


_C21 = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
_C22 = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"


_ComfyFile = tuple[str, int, Pin | None]  # repo path, size (estimate), what the Hub page pinned


def _comfy_file(f: _ComfyFile, role: str) -> CatalogFile:
    path, size, pin = f
    return CatalogFile(
        path=path,
        role=role,
        size=size,
        sha256=pin.sha256 if pin else None,
        exact_size=pin.size if pin else None,
    )


def _comfy(
    *,
    name: str,
    repo: str,
    variant: str,
    title: str,
    size: tuple[int, int, int],
    dit: tuple[_ComfyFile, ...],
    precision: str,
    t5: _ComfyFile,
    vae: _ComfyFile,
    clip: _ComfyFile | None = None,
    size_source: str = "mixed",
    notes: str = "",
) -> Release:
    """ComfyUI repackaged single files (split_files/...), plus the umT5 tokenizer, which the ComfyUI
    files do not carry, from the 1.3B diffusers repo (21.5 MB)."""
    files = [_comfy_file(f, "dit" if i == 0 else "dit_low") for i, f in enumerate(dit)]
    files += [_comfy_file(t5, "t5"), _comfy_file(vae, "vae")]
    if clip is not None:
        files.append(_comfy_file(clip, "clip"))
    t5_bytes = t5[1]
    return Release(
        name=name,
        title=title,
        variant=variant,
        layout=Layout.COMFYUI,
        sources=(RepoFiles(repo_id=repo, files=tuple(files)), _DIFFUSERS_TOKENIZER),
        precision=precision,
        runtime_precision=precision,
        size_source=size_source,
        default_size=size,
        notes=notes,
        vram_gb=_estimate(variant, precision, t5_bytes, vae[1], clip[1] if clip else 0, size),
    )


_DM = "split_files/diffusion_models/"
_T5_FP8_21: _ComfyFile = (
    "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    T5_FP8,
    Pin("c3355d30191f1f066b26d93fba017ae9809dce6c627dda5f6a66eaa651204f68", T5_FP8),
)
_T5_FP16_21: _ComfyFile = (
    "split_files/text_encoders/umt5_xxl_fp16.safetensors",
    T5_FP16,
    Pin("7b8850f1961e1cf8a77cca4c964a358d303f490833c6c087d0cff4b2f99db2af", T5_FP16),
)
# The 2.2 repo holds its own copies (seen on its text_encoders/ page; same sizes shown, hashes not seen).
_T5_FP8_22: _ComfyFile = (
    "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    T5_FP8,
    None,
)
_VAE21_21: _ComfyFile = ("split_files/vae/wan_2.1_vae.safetensors", VAE21_COMFY, None)
# unconfirmed in the 2.2 repo
_VAE21_22: _ComfyFile = ("split_files/vae/wan_2.1_vae.safetensors", VAE21_COMFY, None)
_VAE22_22: _ComfyFile = ("split_files/vae/wan2.2_vae.safetensors", VAE22_COMFY, None)
_CLIP_H: _ComfyFile = ("split_files/clip_vision/clip_vision_h.safetensors", CLIP_VISION_H, None)
_14B_FP16 = 28_600_000_000  # "28.6 GB"
_14B_FP8 = 14_300_000_000  # "14.3 GB"
_I2V14B_FP16 = 32_800_000_000  # "32.8 GB"
_I2V14B_FP8 = 16_400_000_000  # "16.4 GB"

# ----------------------------------------------------------------------------- GGUF files
# city96's GGUF conversions of the Wan2.1 14B models (a file per quant at the repo root, official
# key names), bullerwins' of the Wan2.2 A14B experts (named ..._high_noise_14B_<quant>.gguf /
# ..._low_noise_14B_<quant>.gguf side by side, the names checkpoints/detect.py pairs), and city96's
# umT5-XXL encoder GGUFs. Blocks stay quantized on the GPU, so a file's size is what its DiT takes
# in VRAM. Sizes "published" were seen on the repos' file pages (searched 2026-12-05); the others
# are approximate: parameters × the bytes per parameter of city96's Wan2.1-T2V-14B file of the
# same quant (Q4_K_M 10.1 GB, Q5_K_M 11.3 GB for 14.29 B parameters; Q8_0: 34 bytes per 32
# weights, 1.0625).


@dataclass(frozen=True)
class _GgufQuant:
    """One GGUF quant: the DiT's bytes per parameter, the size of city96's umT5 encoder file of that
    quant (umt5-xxl-encoder-<quant>.gguf) and the encoder quant a DiT of this quant is paired with."""

    dit_bytes_per_param: float
    umt5_bytes: int
    umt5_quant: str


# One line per quant. umT5 sizes: "3.66 GB", "4.15 GB", "6.04 GB" on city96's files page. city96's
# README advises Q5_K_M or larger for the encoder (no imatrix for T5): a Q4_K_M DiT gets the
# Q5_K_M encoder, the others their own quant.
_GGUF_QUANTS = {
    "Q4_K_M": _GgufQuant(10.1e9 / 14_288_491_584, 3_660_000_000, umt5_quant="Q5_K_M"),
    "Q5_K_M": _GgufQuant(11.3e9 / 14_288_491_584, 4_150_000_000, umt5_quant="Q5_K_M"),
    "Q8_0": _GgufQuant(34 / 32, 6_040_000_000, umt5_quant="Q8_0"),
}
GGUF_QUANTS = tuple(_GGUF_QUANTS)
UMT5_GGUF = {q: g.umt5_bytes for q, g in _GGUF_QUANTS.items()}
_UMT5_GGUF_REPO = "city96/umt5-xxl-encoder-gguf"


def gguf_dit_bytes(variant: str, quant: str) -> int:
    """Approximate size of one expert's GGUF file (see above)."""
    return round(_PARAMS[variant] * _GGUF_QUANTS[quant].dit_bytes_per_param)


@dataclass(frozen=True, kw_only=True)
class _GgufModel:
    """One model's GGUF repo, a release per quant of ``GGUF_QUANTS``: ``file`` is the DiT path with
    ``{q}`` for the quant (and ``{e}`` for the expert of an A14B pair: high_noise, low_noise)."""

    name: str  # release names: <name>-<quant, lower case>
    repo: str
    variant: str
    title: str
    size: tuple[int, int, int]
    file: str
    published: dict[str, int] = field(default_factory=dict)  # path -> size seen on the Hub
    clip: bool = False  # I2V: the ComfyUI CLIP vision file too

    def dit_paths(self, quant: str) -> tuple[str, ...]:
        """The DiT file(s) of ``quant``, high-noise expert first."""
        if "{e}" not in self.file:
            return (self.file.format(q=quant),)
        return tuple(self.file.format(q=quant, e=e) for e in ("high_noise", "low_noise"))


def _gguf(m: _GgufModel, quant: str) -> Release:
    """``m``'s GGUF DiT file(s) of ``quant``, city96's umT5 GGUF, the ComfyUI VAE (and CLIP vision
    for I2V) and the umT5 tokenizer folder (the GGUF encoder holds no tokenizer: ``--tokenizer``)."""
    dit = m.dit_paths(quant)
    # the two experts of an A14B pair have the same shapes: one seen size stands for both
    seen = next((m.published[p] for p in dit if p in m.published), None)
    approx = seen or gguf_dit_bytes(m.variant, quant)
    dit_files = tuple(
        CatalogFile(path=p, role="dit" if i == 0 else "dit_low", size=m.published.get(p, approx))
        for i, p in enumerate(dit)
    )
    t5_quant = _GGUF_QUANTS[quant].umt5_quant
    t5 = CatalogFile(path=f"umt5-xxl-encoder-{t5_quant}.gguf", role="t5", size=UMT5_GGUF[t5_quant])
    comfy = [_comfy_file(_VAE21_21, "vae")] + ([_comfy_file(_CLIP_H, "clip")] if m.clip else [])
    expert = max(f.size for f in dit_files)
    exact = seen is not None
    return Release(
        name=f"{m.name}-{quant.lower()}",
        title=f"{m.title} GGUF {quant}",
        variant=m.variant,
        layout=Layout.GGUF,
        sources=(
            RepoFiles(repo_id=m.repo, files=dit_files),
            RepoFiles(repo_id=_UMT5_GGUF_REPO, files=(t5,)),
            RepoFiles(repo_id=_C21, files=tuple(comfy)),
            _DIFFUSERS_TOKENIZER,
        ),
        precision=quant,
        runtime_precision=quant,  # dequantized per linear as it runs; the weights stay quantized
        size_source="mixed" if exact else "computed",
        default_size=m.size,
        notes=(
            f"GGUF {quant}: weights stay quantized on the GPU; umT5 encoder GGUF {t5_quant}"
            + ("" if exact else "; DiT size approximate (not seen on the Hub page)")
        ),
        vram_gb=_estimate(
            m.variant,
            "bf16",
            UMT5_GGUF[t5_quant],
            VAE21_COMFY,
            CLIP_VISION_H if m.clip else 0,
            m.size,
            expert_bytes=expert,
        ),
    )


_GGUF_MODELS = (
    _GgufModel(
        name="gguf-wan2.1-t2v-14b",
        repo="city96/Wan2.1-T2V-14B-gguf",
        variant="t2v-14B",
        title="Wan2.1 T2V 14B",
        size=_720P,
        file="wan2.1-t2v-14b-{q}.gguf",
        # "10.1 GB" on city96's page; Q5_K_M "11.3 GB" on a verbatim copy's page (calcuis/wan-gguf)
        published={
            "wan2.1-t2v-14b-Q4_K_M.gguf": 10_100_000_000,
            "wan2.1-t2v-14b-Q5_K_M.gguf": 11_300_000_000,
        },
    ),
    _GgufModel(
        name="gguf-wan2.1-i2v-14b-480p",
        repo="city96/Wan2.1-I2V-14B-480P-gguf",
        variant="i2v-14B",
        title="Wan2.1 I2V 14B 480p",
        size=_480P,
        file="wan2.1-i2v-14b-480p-{q}.gguf",
        published={"wan2.1-i2v-14b-480p-Q4_K_M.gguf": 11_300_000_000},
        clip=True,
    ),
    _GgufModel(
        name="gguf-wan2.1-i2v-14b-720p",
        repo="city96/Wan2.1-I2V-14B-720P-gguf",
        variant="i2v-14B",
        title="Wan2.1 I2V 14B 720p",
        size=_720P,
        file="wan2.1-i2v-14b-720p-{q}.gguf",
        published={"wan2.1-i2v-14b-720p-Q4_K_M.gguf": 11_300_000_000},
        clip=True,
    ),
    # unconfirmed: the T2V file names (bullerwins' I2V repo names them wan2.2_i2v_<expert>_14B_<q>)
    _GgufModel(
        name="gguf-wan2.2-t2v-a14b",
        repo="bullerwins/Wan2.2-T2V-A14B-GGUF",
        variant="t2v-A14B",
        title="Wan2.2 T2V A14B",
        size=_720P,
        file="wan2.2_t2v_{e}_14B_{q}.gguf",
    ),
    _GgufModel(
        name="gguf-wan2.2-i2v-a14b",
        repo="bullerwins/Wan2.2-I2V-A14B-GGUF",
        variant="i2v-A14B",
        title="Wan2.2 I2V A14B",
        size=_720P,
        file="wan2.2_i2v_{e}_14B_{q}.gguf",
        # the LFS pointer of a verbatim copy (Isi99999/Wan2.2BasedModels) showed 9651728896 bytes
        published={"wan2.2_i2v_low_noise_14B_Q4_K_M.gguf": 9_651_728_896},
    ),
)
_GGUF_RELEASES: tuple[Release, ...] = tuple(_gguf(m, q) for m in _GGUF_MODELS for q in GGUF_QUANTS)

_RELEASES: tuple[Release, ...] = (
    # --- official Wan layout
    _official(
        name="wan2.1-t2v-1.3b",
        repo="Wan-AI/Wan2.1-T2V-1.3B",
        variant="t2v-1.3B",
        title="Wan2.1 T2V 1.3B",
        size=_480P,
        size_source="published",
    ),
    _official(
        name="wan2.1-t2v-14b",
        repo="Wan-AI/Wan2.1-T2V-14B",
        variant="t2v-14B",
        title="Wan2.1 T2V 14B",
        size=_720P,
    ),
    _official(
        name="wan2.1-i2v-14b-480p",
        repo="Wan-AI/Wan2.1-I2V-14B-480P",
        variant="i2v-14B",
        title="Wan2.1 I2V 14B 480p",
        size=_480P,
        i2v_clip=True,
    ),
    _official(
        name="wan2.1-i2v-14b-720p",
        repo="Wan-AI/Wan2.1-I2V-14B-720P",
        variant="i2v-14B",
        title="Wan2.1 I2V 14B 720p",
        size=_720P,
        i2v_clip=True,
    ),
    _official(
        name="wan2.1-flf2v-14b-720p",
        repo="Wan-AI/Wan2.1-FLF2V-14B-720P",
        variant="flf2v-14B",
        title="Wan2.1 FLF2V 14B 720p",
        size=_720P,
        i2v_clip=True,
    ),
    _official(
        name="wan2.2-ti2v-5b",
        repo="Wan-AI/Wan2.2-TI2V-5B",
        variant="ti2v-5B",
        title="Wan2.2 TI2V 5B",
        size=_5B,
        vae22=True,
    ),
    _official(
        name="wan2.2-t2v-a14b",
        repo="Wan-AI/Wan2.2-T2V-A14B",
        variant="t2v-A14B",
        title="Wan2.2 T2V A14B (MoE)",
        size=_720P,
        experts=2,
    ),
    _official(
        name="wan2.2-i2v-a14b",
        repo="Wan-AI/Wan2.2-I2V-A14B",
        variant="i2v-A14B",
        title="Wan2.2 I2V A14B (MoE)",
        size=_720P,
        experts=2,
    ),
    # --- diffusers layout (the Wan-AI "-Diffusers" twins)
    _diffusers(
        name="wan2.1-t2v-1.3b-diffusers",
        repo="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        variant="t2v-1.3B",
        title="Wan2.1 T2V 1.3B (diffusers)",
        size=_480P,
        size_source="published",
    ),
    _diffusers(
        name="wan2.1-t2v-14b-diffusers",
        repo="Wan-AI/Wan2.1-T2V-14B-Diffusers",
        variant="t2v-14B",
        title="Wan2.1 T2V 14B (diffusers)",
        size=_720P,
    ),
    _diffusers(
        name="wan2.1-i2v-14b-480p-diffusers",
        repo="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
        variant="i2v-14B",
        title="Wan2.1 I2V 14B 480p (diffusers)",
        size=_480P,
        image_encoder=True,
    ),
    _diffusers(
        name="wan2.1-i2v-14b-720p-diffusers",
        repo="Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",
        variant="i2v-14B",
        title="Wan2.1 I2V 14B 720p (diffusers)",
        size=_720P,
        image_encoder=True,
    ),
    # unconfirmed: the FLF2V twin's exact repo id (its casing was not seen on a Hub page)
    _diffusers(
        name="wan2.1-flf2v-14b-720p-diffusers",
        repo="Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers",
        variant="flf2v-14B",
        title="Wan2.1 FLF2V 14B 720p (diffusers)",
        size=_720P,
        image_encoder=True,
    ),
    _diffusers(
        name="wan2.2-ti2v-5b-diffusers",
        repo="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        variant="ti2v-5B",
        title="Wan2.2 TI2V 5B (diffusers)",
        size=_5B,
        t5_bytes=T5_DIFFUSERS_BF16,
        vae_bytes=VAE22_FP32,
    ),
    _diffusers(
        name="wan2.2-t2v-a14b-diffusers",
        repo="Wan-AI/Wan2.2-T2V-A14B-Diffusers",
        variant="t2v-A14B",
        title="Wan2.2 T2V A14B (diffusers)",
        size=_720P,
        experts=2,
        t5_bytes=T5_DIFFUSERS_BF16,
    ),  # bf16 text encoder assumed as in the 5B twin
    _diffusers(
        name="wan2.2-i2v-a14b-diffusers",
        repo="Wan-AI/Wan2.2-I2V-A14B-Diffusers",
        variant="i2v-A14B",
        title="Wan2.2 I2V A14B (diffusers)",
        size=_720P,
        experts=2,
        t5_bytes=T5_DIFFUSERS_BF16,
    ),
    # --- ComfyUI repackaged single files
    _comfy(
        name="comfy-wan2.1-t2v-1.3b-fp16",
        repo=_C21,
        variant="t2v-1.3B",
        title="Wan2.1 T2V 1.3B fp16 (ComfyUI)",
        size=_480P,
        precision="fp16",
        dit=(
            (
                _DM + "wan2.1_t2v_1.3B_fp16.safetensors",
                2_838_104_528,
                Pin(
                    "be531024cd9018cb5b48c40cfbb6a6191645b1c792eb8bf4f8c1c6e10f924dc5",
                    2_838_104_528,
                ),
            ),
        ),
        t5=_T5_FP8_21,
        vae=_VAE21_21,
        size_source="published",
    ),
    _comfy(
        name="comfy-wan2.1-t2v-14b-fp16",
        repo=_C21,
        variant="t2v-14B",
        title="Wan2.1 T2V 14B fp16 (ComfyUI)",
        size=_720P,
        precision="fp16",
        dit=((_DM + "wan2.1_t2v_14B_fp16.safetensors", _14B_FP16, None),),
        t5=_T5_FP16_21,
        vae=_VAE21_21,
    ),
    _comfy(
        name="comfy-wan2.1-t2v-14b-fp8",
        repo=_C21,
        variant="t2v-14B",
        title="Wan2.1 T2V 14B fp8 (ComfyUI)",
        size=_720P,
        precision="fp8",
        dit=((_DM + "wan2.1_t2v_14B_fp8_e4m3fn.safetensors", _14B_FP8, None),),
        t5=_T5_FP8_21,
        vae=_VAE21_21,
    ),
    _comfy(
        name="comfy-wan2.1-i2v-14b-480p-fp16",
        repo=_C21,
        variant="i2v-14B",
        title="Wan2.1 I2V 14B 480p fp16 (ComfyUI)",
        size=_480P,
        precision="fp16",
        dit=(
            (
                _DM + "wan2.1_i2v_480p_14B_fp16.safetensors",
                _I2V14B_FP16,  # size rounded
                Pin("27988f6b510eb8d5fdd7485671b54897f8683f2bba7a772c5671be21d3491253"),
            ),
        ),
        t5=_T5_FP16_21,
        vae=_VAE21_21,
        clip=_CLIP_H,
    ),
    _comfy(
        name="comfy-wan2.1-i2v-14b-480p-fp8",
        repo=_C21,
        variant="i2v-14B",
        title="Wan2.1 I2V 14B 480p fp8 (ComfyUI)",
        size=_480P,
        precision="fp8",
        dit=((_DM + "wan2.1_i2v_480p_14B_fp8_scaled.safetensors", _I2V14B_FP8, None),),
        t5=_T5_FP8_21,
        vae=_VAE21_21,
        clip=_CLIP_H,
    ),
    _comfy(
        name="comfy-wan2.1-i2v-14b-720p-fp8",
        repo=_C21,
        variant="i2v-14B",
        title="Wan2.1 I2V 14B 720p fp8 (ComfyUI)",
        size=_720P,
        precision="fp8",
        dit=((_DM + "wan2.1_i2v_720p_14B_fp8_scaled.safetensors", _I2V14B_FP8, None),),
        t5=_T5_FP8_21,
        vae=_VAE21_21,
        clip=_CLIP_H,
    ),
    _comfy(
        name="comfy-wan2.1-flf2v-14b-720p-fp8",
        repo=_C21,
        variant="flf2v-14B",
        title="Wan2.1 FLF2V 14B 720p fp8 (ComfyUI)",
        size=_720P,
        precision="fp8",
        dit=(
            (
                _DM + "wan2.1_flf2v_720p_14B_fp8_e4m3fn.safetensors",
                16_397_952_536,
                Pin(
                    "d68ca694a695274e48e00974128337e06e497d95a1dc09e86fd2a01a405f455f",
                    16_397_952_536,
                ),
            ),
        ),
        t5=_T5_FP8_21,
        vae=_VAE21_21,
        clip=_CLIP_H,
    ),
    _comfy(
        name="comfy-wan2.2-ti2v-5b-fp16",
        repo=_C22,
        variant="ti2v-5B",
        title="Wan2.2 TI2V 5B fp16 (ComfyUI)",
        size=_5B,
        precision="fp16",
        dit=((_DM + "wan2.2_ti2v_5B_fp16.safetensors", _dit_bytes("ti2v-5B", "fp16"), None),),
        t5=_T5_FP8_22,
        vae=_VAE22_22,
        size_source="computed",
    ),
    _comfy(
        name="comfy-wan2.2-t2v-a14b-fp8",
        repo=_C22,
        variant="t2v-A14B",
        title="Wan2.2 T2V A14B fp8 (ComfyUI)",
        size=_720P,
        precision="fp8",
        dit=(
            (_DM + "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", _14B_FP8, None),
            (_DM + "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", _14B_FP8, None),
        ),
        t5=_T5_FP8_22,
        vae=_VAE21_22,
    ),
    _comfy(
        name="comfy-wan2.2-t2v-a14b-fp16",
        repo=_C22,
        variant="t2v-A14B",
        title="Wan2.2 T2V A14B fp16 (ComfyUI)",
        size=_720P,
        precision="fp16",
        dit=(
            (_DM + "wan2.2_t2v_high_noise_14B_fp16.safetensors", _14B_FP16, None),
            (_DM + "wan2.2_t2v_low_noise_14B_fp16.safetensors", _14B_FP16, None),
        ),
        t5=_T5_FP8_22,
        vae=_VAE21_22,
    ),
    _comfy(
        name="comfy-wan2.2-i2v-a14b-fp8",
        repo=_C22,
        variant="i2v-A14B",
        title="Wan2.2 I2V A14B fp8 (ComfyUI)",
        size=_720P,
        precision="fp8",
        dit=(
            (_DM + "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", _14B_FP8, None),
            (_DM + "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors", _14B_FP8, None),
        ),
        t5=_T5_FP8_22,
        vae=_VAE21_22,
    ),
    _comfy(
        name="comfy-wan2.2-i2v-a14b-fp16",
        repo=_C22,
        variant="i2v-A14B",
        title="Wan2.2 I2V A14B fp16 (ComfyUI)",
        size=_720P,
        precision="fp16",
        dit=(
            (_DM + "wan2.2_i2v_high_noise_14B_fp16.safetensors", _14B_FP16, None),
            (_DM + "wan2.2_i2v_low_noise_14B_fp16.safetensors", _14B_FP16, None),
        ),
        t5=_T5_FP8_22,
        vae=_VAE21_22,
    ),
    # --- VACE (control, inpainting, outpainting, reference, extension: --task vace)
    _official(
        name="wan2.1-vace-1.3b",
        repo="Wan-AI/Wan2.1-VACE-1.3B",
        variant="vace-1.3B",
        title="Wan2.1 VACE 1.3B",
        size=_480P,
    ),
    _official(
        name="wan2.1-vace-14b",
        repo="Wan-AI/Wan2.1-VACE-14B",
        variant="vace-14B",
        title="Wan2.1 VACE 14B",
        size=_720P,
    ),
    # unconfirmed: that alibaba-pai's repo keeps the Wan2.2 A14B folder layout (high_noise_model/,
    # low_noise_model/, the .pth T5 and VAE); it has no diffusers twin
    _official(
        name="wan2.2-vace-fun-a14b",
        repo="alibaba-pai/Wan2.2-VACE-Fun-A14B",
        variant="vace-A14B",
        title="Wan2.2 VACE-Fun A14B (MoE)",
        size=_720P,
        experts=2,
    ),
    _diffusers(
        name="wan2.1-vace-1.3b-diffusers",
        repo="Wan-AI/Wan2.1-VACE-1.3B-diffusers",
        variant="vace-1.3B",
        title="Wan2.1 VACE 1.3B (diffusers)",
        size=_480P,
    ),
    _diffusers(
        name="wan2.1-vace-14b-diffusers",
        repo="Wan-AI/Wan2.1-VACE-14B-diffusers",
        variant="vace-14B",
        title="Wan2.1 VACE 14B (diffusers)",
        size=_720P,
    ),
    # unconfirmed in the Comfy-Org repo: the VACE file names (ComfyUI's VACE examples name them)
    _comfy(
        name="comfy-wan2.1-vace-1.3b-fp16",
        repo=_C21,
        variant="vace-1.3B",
        title="Wan2.1 VACE 1.3B fp16 (ComfyUI)",
        size=_480P,
        precision="fp16",
        dit=((_DM + "wan2.1_vace_1.3B_fp16.safetensors", _dit_bytes("vace-1.3B", "fp16"), None),),
        t5=_T5_FP8_21,
        vae=_VAE21_21,
        size_source="computed",
    ),
    _comfy(
        name="comfy-wan2.1-vace-14b-fp16",
        repo=_C21,
        variant="vace-14B",
        title="Wan2.1 VACE 14B fp16 (ComfyUI)",
        size=_720P,
        precision="fp16",
        dit=((_DM + "wan2.1_vace_14B_fp16.safetensors", _dit_bytes("vace-14B", "fp16"), None),),
        t5=_T5_FP16_21,
        vae=_VAE21_21,
        size_source="computed",
    ),
    # --- SkyReels-V2 Diffusion Forcing (long videos: --frames beyond one window, --extend)
    # unconfirmed: the DiT file names of Skywork's own folders (model.safetensors or shards) and
    # their storage dtype (fp32 assumed, as the official Wan repos); config.json may be absent
    *(
        _official(
            name=f"skyreels-v2-df-{size_name.lower()}",
            repo=f"Skywork/SkyReels-V2-DF-{size_name}",
            variant=f"skyreels-v2-df-{size_name}",
            title=f"SkyReels-V2 DF {size_name.replace('-', ' ')}",
            size=size,
            dit_pattern="*.safetensors*",
            config_required=False,
        )
        for size_name, size in (
            ("1.3B-540P", _SKY540),
            ("14B-540P", _SKY540),
            ("14B-720P", _SKY720),
        )
    ),
    *(
        _diffusers(
            name=f"skyreels-v2-df-{size_name.lower()}-diffusers",
            repo=f"Skywork/SkyReels-V2-DF-{size_name}-Diffusers",
            variant=f"skyreels-v2-df-{size_name}",
            title=f"SkyReels-V2 DF {size_name.replace('-', ' ')} (diffusers)",
            size=size,
        )
        for size_name, size in (
            ("1.3B-540P", _SKY540),
            ("14B-540P", _SKY540),
            ("14B-720P", _SKY720),
        )
    ),
)

CATALOG: dict[str, Release] = {r.name: r for r in (*_RELEASES, *_GGUF_RELEASES)}


def get_release(name: str, catalog: dict[str, Release] | None = None) -> Release:
    catalog = CATALOG if catalog is None else catalog
    try:
        return catalog[name]
    except KeyError:
        close = [n for n in catalog if name.lower() in n]
        hint = f"; did you mean {', '.join(close[:3])}?" if close else ""
        raise ConfigError(
            f"unknown model {name!r}{hint} (`wan-desktop models list` shows them)",
            remedy="Use a name from `wan-desktop models list`.",
        ) from None


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    release: Release
    plan: Plan | None  # None: does not fit even with block swapping
    vram_needed_gb: float | None  # the estimate of that plan


def recommend(
    vram_gb: float,
    *,
    task: str | None = None,
    layout: Layout | None = None,
    catalog: dict[str, Release] | None = None,
) -> list[Recommendation]:
    """Every release, best first for a GPU with ``vram_gb`` GB (estimates; see the module doc).

    Order: releases that fit without block swapping first, bigger models before smaller, faster
    plans before slower, closer to the released weights before more quantized (a GGUF Q4_K_M
    after a Q8_0 or fp8 file that runs the same plan), smaller downloads before larger; then
    block-swap-only fits; then the rest. A GGUF file counts its quantized bytes (they stay
    quantized on the GPU), so on a small card its 14B model can run a faster plan than the fp8 file.
    """
    out = []
    for r in (CATALOG if catalog is None else catalog).values():
        if task is not None and task not in r.tasks:
            continue
        if layout is not None and r.layout is not layout:
            continue
        plan = r.best_plan(vram_gb)
        out.append(
            Recommendation(release=r, plan=plan, vram_needed_gb=r.vram_for(plan) if plan else None)
        )

    def key(rec: Recommendation) -> tuple[int, int, int, int, int]:
        r = rec.release
        tier = 2 if rec.plan is None else int(rec.plan is Plan.BLOCK_SWAP)
        plan = rec.plan.rank if rec.plan else 0
        return (tier, -r.quality_tier, plan, -r.fidelity, r.download_bytes)

    return sorted(out, key=key)
