"""LoRAs for the Wan DiT: read the key layouts in circulation, merge into the weights, undo exactly.

Layouts read (any mix in one file, after stripping ``diffusion_model.`` / ``model.diffusion_model.`` /
``transformer.`` / ``base_model.model.`` / ``lora_unet_`` / ``lora_transformer_`` prefixes):
* official module names with ``lora_down`` / ``lora_up`` (+ ``alpha``) — lightx2v, Wan2GP, musubi;
* PEFT / diffusers ``lora_A`` / ``lora_B`` on official or diffusers names (``attn1.to_q`` ...);
* Kohya / ComfyUI underscored module paths (``lora_unet_blocks_0_self_attn_q``), VideoX-Fun's
  ``lora_unet__blocks_0_…``; ComfyUI's ``{x}_lora.up/down``, PEFT's bare ``.lora_A``/``.lora_B``,
  diffusers' ``.lora_linear_layer.up/down``;
* full deltas: ``<module>.diff`` (weight, also the RMSNorm ``norm_q``/``norm_k`` weights and the
  modulation tables), ``<module>.diff_b`` (bias) — lightx2v's distill LoRAs carry both.

A low-rank pair adds ``strength · (alpha / rank) · up @ down`` (no alpha: scale 1, as PEFT and
diffusers do); a full delta adds ``strength · diff``. Merging is fp32 math cast back to the stored
dtype. A quantized weight (GGUF, fp8, int8) is never requantized: its LoRAs run unmerged beside it,
``y = x·W + s·(x·A)·B`` (models/lowrank.py), equal to the fp32 merge within fp32 rounding; a
strength change only swaps the factors. Either the original tensors are kept, so
:meth:`LoraMerge.unmerge` restores the weights bit for bit (the price is one copy of the touched
weights), or — what the torch backend does with a model read from files — nothing is kept and a
change of LoRAs reads the base weights again (engines/torch_backend.py). Keys that match no layer,
or deltas of the wrong shape, are a CheckpointError naming the tensors and the file — never a
silently ignored LoRA.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from .checkpoints.detect import ModelFiles
    from .variants import Variant

_PREFIXES = (
    "model.diffusion_model.",
    "diffusion_model.",
    "base_model.model.",
    "transformer.",
    "lora_unet_",
    "lora_transformer_",
    "unet.",
)
# suffix -> role; longest first so ".lora_A.default.weight" wins over ".weight"-style matches
_ROLES = (
    (".lora_down.weight", "down"), (".lora_up.weight", "up"),
    (".lora_A.default.weight", "down"), (".lora_B.default.weight", "up"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"),
    (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"),
    ("_lora.down.weight", "down"), ("_lora.up.weight", "up"),  # ComfyUI's "{x}_lora.up"
    (".lora_A", "down"), (".lora_B", "up"),  # PEFT factors saved without ".weight"
    (".alpha", "alpha"), (".diff_b", "diff_b"), (".diff", "diff"),
)  # fmt: skip
_UNSUPPORTED = (".lora_mid.weight", ".dora_scale", ".hada_w1_a", ".lokr_w1")
EXPERTS = ("high", "low")
# The strength range of ComfyUI's LoraLoader node (strength_model: -100 .. 100). Real LoRAs are used
# at ±0.1 .. 5; beyond 100 a merge only turns the weights into noise (or ±Inf: 1e300 overflows fp32).
MAX_STRENGTH = 100.0


@dataclass(frozen=True, kw_only=True)
class LoraSpec:
    """One LoRA the user asked for: a file, a strength and the Wan2.2 expert it goes to
    ("high": the high-noise expert, or the only model of other variants; "low": the low-noise one)."""

    path: str
    strength: float = 1.0
    expert: str = "high"

    def __post_init__(self) -> None:
        if self.expert not in EXPERTS:
            raise ConfigError(f"LoRA expert must be 'high' or 'low', got {self.expert!r}")
        if not math.isfinite(self.strength) or abs(self.strength) > MAX_STRENGTH:
            raise ConfigError(
                f"LoRA strength must be a number from {-MAX_STRENGTH:g} to "
                f"{MAX_STRENGTH:g}, got {self.strength:g} ({self.path})",
                remedy="Use a strength like 0.5 or 1 (most LoRAs work between -2 and 2).",
            )

    @classmethod
    def parse(cls, text: str, *, expert: str = "high") -> LoraSpec:
        """``FILE[:STRENGTH]``; a Windows drive letter (``C:\\x.safetensors``) is not a strength."""
        path, sep, tail = text.rpartition(":")
        strength = 1.0
        if sep and not path:
            raise ConfigError(f"LoRA {text!r}: no file name")
        if (
            sep
            and path
            and not re.fullmatch(r"[A-Za-z]", path)
            and "/" not in tail
            and "\\" not in tail
        ):
            try:
                strength = float(tail)
            except ValueError:
                raise ConfigError(
                    f"LoRA strength {tail!r} in {text!r} is not a number",
                    remedy="Write --lora FILE or --lora FILE:0.8.",
                ) from None
        else:
            path = text
        if not path:
            raise ConfigError(f"LoRA {text!r}: no file name")
        return cls(path=path, strength=strength, expert=expert)  # the range: __post_init__


@dataclass(frozen=True)
class LoraTerm:
    """The update of one model parameter from one file: a low-rank pair or a full delta (fp32)."""

    target: str  # official parameter key, e.g. "blocks.0.self_attn.q.weight"
    keys: tuple[str, ...]  # tensor names in the file (for messages)
    down: Tensor | None = None  # [rank, in] (or [rank, in, kt, kh, kw] for the patch embedding)
    up: Tensor | None = None  # [out, rank]
    scale: float = 1.0  # alpha / rank
    diff: Tensor | None = None  # full delta, the parameter's shape

    def delta(self, device: torch.device | str = "cpu") -> Tensor:
        """The fp32 update at strength 1, with the target's shape (the caller checks it), computed
        on ``device`` (the rank-r product of a 14B layer is ~1.7 GFLOP: on the GPU, not the CPU)."""
        import torch

        f32 = torch.float32
        if self.diff is not None:
            return self.diff.to(device, f32)
        assert self.up is not None and self.down is not None
        up = self.up.to(device, f32).flatten(1)
        d = up @ self.down.to(device, f32).flatten(1)
        return d.reshape(self.up.shape[0], *self.down.shape[1:]) * self.scale


@dataclass(frozen=True)
class LoraFile:
    path: Path
    sha256: str  # hex digest of the whole file
    terms: tuple[LoraTerm, ...]

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _few(names: Sequence[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _strip(key: str) -> str:
    changed = True
    while changed:  # "transformer.diffusion_model." and the like
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


class _Resolver:
    """Maps a LoRA's module path (official, diffusers, or either underscored) to an official
    parameter-owner path of the model."""

    def __init__(self, param_shapes: Mapping[str, tuple[int, ...]]) -> None:
        from .checkpoints.keymap_dit import diffusers_module_names

        self.params = dict(param_shapes)
        owners = {k.rpartition(".")[0] for k in self.params}
        self.names: dict[str, str] = {m: m for m in owners}
        # whole parameters addressed by their own name (blocks.0.modulation.diff)
        self.names.update({k: k for k in self.params if not k.endswith((".weight", ".bias"))})
        blocks = 1 + max(
            (int(k.split(".")[1]) for k in self.params if k.startswith("blocks.")), default=-1
        )
        vace = 1 + max(  # VACE models: diffusers names of the VACE blocks too
            (int(k.split(".")[1]) for k in self.params if k.startswith("vace_blocks.")), default=-1
        )
        for dname, oname in diffusers_module_names(blocks, vace).items():
            if oname in self.names:
                self.names.setdefault(dname, oname)
        self.underscored = {k.replace(".", "_"): v for k, v in self.names.items()}

    def __call__(self, module: str) -> str | None:
        # VideoX-Fun writes "lora_unet__blocks_0_…": the prefix leaves a leading underscore
        return (
            self.names.get(module)
            or self.underscored.get(module)
            or self.underscored.get(module.lstrip("_"))
        )


def read_lora(
    path: str | Path, param_shapes: Mapping[str, tuple[int, ...]], *, header_only: bool = False
) -> LoraFile:
    """Parse a LoRA file against a model's ``{official parameter key: shape}``.

    Raises CheckpointError for a missing/unreadable file, tensors that match no parameter (a few
    names and the count), an up without its down, or a delta whose shape does not fit its target.
    ``header_only``: the same checks from the safetensors header alone (meta tensors, no hash) —
    the CLI's instant check before any weights load.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"LoRA file not found: {p}", remedy="Check the path given to --lora.")
    if p.suffix.lower() not in (".safetensors", ".sft"):
        raise CheckpointError(
            f"{p.name}: LoRAs are read from .safetensors files",
            remedy="Convert the LoRA to .safetensors (ComfyUI and diffusers "
            "both save that format).",
        )
    from .checkpoints.reader import read_safetensors_header

    infos, _ = read_safetensors_header(p)  # a truncated or non-safetensors file: one clear error
    if header_only:
        import torch

        tensors = {
            k: torch.empty(i.shape, dtype=getattr(torch, i.dtype), device="meta")
            for k, i in infos.items()
        }
    else:
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(p))
        except (OSError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{p.name}: cannot read the LoRA ({e})") from None
    if not header_only:
        _check_finite(p, tensors)
    resolve = _Resolver(param_shapes)
    groups: dict[str, dict[str, tuple[str, Tensor]]] = {}
    unknown: list[str] = []
    unsupported: list[str] = []
    for key, t in tensors.items():
        if key.endswith(_UNSUPPORTED):
            unsupported.append(key)
            continue
        role = next(((s, r) for s, r in _ROLES if key.endswith(s)), None)
        if role is None:
            unknown.append(key)
            continue
        suffix, name = role
        module = resolve(_strip(key[: -len(suffix)]))
        if module is None:
            unknown.append(key)
            continue
        groups.setdefault(module, {})[name] = (key, t)
    if unsupported:
        raise CheckpointError(
            f"{p.name}: {len(unsupported)} tensor(s) of a LoRA kind we do not "
            f"merge (LoCon/DoRA/LoHa/LoKr: {_few(unsupported)})",
            remedy="Use a plain LoRA (lora_down/lora_up or lora_A/lora_B).",
        )
    if unknown:
        raise CheckpointError(
            f"{p.name}: {len(unknown)} LoRA tensor(s) match no layer of this "
            f"model ({_few(sorted(unknown))}); is it a LoRA for another model?",
            remedy="Use a LoRA made for this Wan model (size and version).",
        )
    terms: list[LoraTerm] = []
    for module, parts in sorted(groups.items()):
        terms.extend(_terms(p, module, parts, resolve.params))
    if not terms:
        raise CheckpointError(f"{p.name}: no LoRA tensors found")
    return LoraFile(path=p, sha256="" if header_only else file_sha256(p), terms=tuple(terms))


def _check_finite(p: Path, tensors: Mapping[str, Tensor]) -> None:
    """One reduction per tensor: a NaN/Inf anywhere in a LoRA would spread over the whole video."""
    import torch

    from .checkpoints.materialize import all_finite

    for key, t in tensors.items():
        if not all_finite(t):
            n = int((~torch.isfinite(t.float())).sum())
            raise CheckpointError(
                f"{p.name}: tensor {key} has {n} NaN/infinite value(s) of "
                f"{t.numel()}; the LoRA file is damaged",
                remedy="Download the LoRA again, or use another one.",
            )


def _terms(
    p: Path,
    module: str,
    parts: dict[str, tuple[str, Tensor]],
    params: Mapping[str, tuple[int, ...]],
) -> Iterable[LoraTerm]:
    def target(leaf: str) -> tuple[str, tuple[int, ...]]:
        # a whole parameter (modulation tables) is its own target; a module's is .weight/.bias
        name = module if module in params else f"{module}.{leaf}"
        if name not in params:
            key = parts.get("diff_b") if leaf == "bias" else parts.get("diff") or parts.get("down")
            raise CheckpointError(
                f"{p.name}: {key[0] if key else module} targets {name}, which "
                "this model does not have"
            )
        return name, params[name]

    def check(key: str, name: str, got: tuple[int, ...], want: tuple[int, ...]) -> None:
        if tuple(got) != tuple(want):
            raise CheckpointError(
                f"{p.name}: tensor {key} gives a {list(got)} update for {name}, "
                f"which is {list(want)} — a LoRA for another model size?",
                remedy="Use a LoRA made for this Wan model (size and version).",
            )

    if "down" in parts or "up" in parts:
        if "down" not in parts or "up" not in parts:
            have = parts["down" if "down" in parts else "up"][0]
            raise CheckpointError(
                f"{p.name}: {have} has no matching "
                f"{'up/lora_B' if 'down' in parts else 'down/lora_A'} tensor"
            )
        (kd, down), (ku, up) = parts["down"], parts["up"]
        name, want = target("weight")
        rank = down.shape[0]
        if up.ndim < 2 or up.shape[1] != rank:
            raise CheckpointError(
                f"{p.name}: {ku} has shape {list(up.shape)}, but {kd} has rank {rank}"
            )
        check(kd, name, (up.shape[0], *down.shape[1:]), want)
        scale = 1.0
        keys: tuple[str, ...] = (kd, ku)
        if "alpha" in parts:
            ka, alpha = parts["alpha"]
            scale = 1.0 if alpha.is_meta else float(alpha.float().reshape(-1)[0]) / rank
            keys = (*keys, ka)
        yield LoraTerm(target=name, keys=keys, down=down, up=up, scale=scale)
    elif "alpha" in parts and "diff" not in parts and "diff_b" not in parts:
        raise CheckpointError(f"{p.name}: {parts['alpha'][0]} has no lora_down/lora_up pair")
    if "diff" in parts:
        kd, diff = parts["diff"]
        name, want = target("weight")
        check(kd, name, tuple(diff.shape), want)
        yield LoraTerm(target=name, keys=(kd,), diff=diff)
    if "diff_b" in parts:
        kb, diff_b = parts["diff_b"]
        name, want = target("bias")
        check(kb, name, tuple(diff_b.shape), want)
        yield LoraTerm(target=name, keys=(kb,), diff=diff_b)


def param_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    from .models.quant_linear import QuantLinear

    shapes = {k: tuple(v.shape) for k, v in model.named_parameters()}
    for name, m in model.named_modules():  # GGUF weights are bytes, not parameters
        if isinstance(m, QuantLinear):
            shapes[f"{name}.weight"] = (m.out_features, m.in_features)
    return shapes


def _unmerged_dtype(owner: nn.Module) -> torch.dtype | None:
    """The compute dtype of a layer whose weight takes LoRAs unmerged (a GGUF QuantLinear, an fp8
    or int8 Linear: merging would requantize it), else None (merged into the weight)."""
    import torch

    from .models.quant_linear import QuantLinear

    if isinstance(owner, QuantLinear):
        return owner.dtype_probe.dtype
    w = owner._parameters.get("weight")
    if w is None or w.dtype not in (torch.int8, torch.float8_e4m3fn, torch.float8_e5m2):
        return None
    b = owner._parameters.get("bias")
    return b.dtype if b is not None else torch.bfloat16


# ----------------------------------------------------------------------------- merge


def _requantize(w: Tensor, like: Tensor, old_scale: Tensor | None) -> tuple[Tensor, Tensor]:
    """fp32 w -> (q in ``like``'s fp8/int8 dtype, fp32 scale), per output channel when the old
    scale was, else per tensor (a plain fp8 weight, scale-less, gets a per-tensor scale)."""
    import torch

    per_row = old_scale is not None and old_scale.numel() > 1
    amax = w.abs().amax(dim=1, keepdim=True) if per_row else w.abs().amax()
    if like.dtype == torch.int8:
        s = (amax / 127.0).clamp_min(1e-12)
        q = (w / s).round().clamp(-127, 127).to(torch.int8)
    else:
        top = torch.finfo(like.dtype).max
        s = (amax / top).clamp_min(1e-12)
        q = (w / s).clamp(-top, top).to(like.dtype)
    if old_scale is not None:  # keep the layout the layer's kernels expect
        s = s.reshape(old_scale.shape)
    return q, s.float()


class LoraMerge:
    """LoRAs merged into one model. ``unmerge()`` puts back the exact original tensors, which
    ``keep_originals`` holds (in host memory for a model on the GPU: as much as the touched
    weights, ~26 GB for a 14B bf16 model with a LoRA on every linear). Callers that can read the
    base weights again from their checkpoint pass ``keep_originals=False`` and keep nothing."""

    def __init__(
        self,
        model: nn.Module,
        loras: Sequence[tuple[LoraFile, float]],
        *,
        keep_originals: bool = True,
    ) -> None:
        self.model = model
        self.loras = tuple(loras)
        self.keep_originals = keep_originals
        self._saved: dict[str, tuple[Tensor, Tensor | None]] = {}
        self._unmerged: list[str] = []  # layers with unmerged factors (models/lowrank.py)
        self.merged_params = 0

    def _owner(self, name: str) -> tuple[nn.Module, str]:
        owner_name, _, leaf = name.rpartition(".")
        return (self.model.get_submodule(owner_name) if owner_name else self.model), leaf

    def merge(self) -> LoraMerge:
        import torch
        from torch import nn

        by_target: dict[str, list[tuple[LoraTerm, float]]] = {}
        for lora, strength in self.loras:
            if strength == 0.0:
                continue  # strength 0: the base weights, bit for bit
            for term in lora.terms:
                by_target.setdefault(term.target, []).append((term, float(strength)))
        # one parameter at a time: only one fp32 delta is ever alive (a 14B model has ~400)
        with torch.no_grad():
            for name, terms in by_target.items():
                owner, leaf = self._owner(name)
                lowrank_dtype = _unmerged_dtype(owner) if leaf == "weight" else None
                if lowrank_dtype is not None:  # y = x·W + s·(x·A)·B: no requantization
                    self._add_unmerged(owner, terms, lowrank_dtype)
                    self._unmerged.append(name.rpartition(".")[0])
                    continue
                p = getattr(owner, leaf)
                delta = sum(t.delta(p.device) * s for t, s in terms)
                assert isinstance(delta, torch.Tensor)
                scale = getattr(owner, "scale_weight", None) if leaf == "weight" else None
                quantized = p.dtype in (torch.int8, torch.float8_e4m3fn, torch.float8_e5m2)
                w = p.float() * scale.float() if (quantized and scale is not None) else p.float()
                w = w + delta.reshape(w.shape)
                if self.keep_originals:  # to host memory: an exact restore must not double VRAM
                    self._saved[name] = (p.data.cpu(), None if scale is None else scale.cpu())
                if quantized:
                    q, s = _requantize(w, p, scale)
                    owner._parameters[leaf] = nn.Parameter(q, requires_grad=False)
                    owner.scale_weight = s.to(p.device)
                else:
                    owner._parameters[leaf] = nn.Parameter(w.to(p.dtype), requires_grad=False)
        self.merged_params = len(by_target)
        return self

    @staticmethod
    def _add_unmerged(
        owner: nn.Module, terms: list[tuple[LoraTerm, float]], dtype: torch.dtype
    ) -> None:
        from .models.lowrank import add_dense, add_lowrank

        held = [*owner.parameters(), *owner.buffers()]
        device = held[0].device if held else "cpu"
        for term, strength in terms:
            if term.diff is not None:
                add_dense(owner, term.diff.to(device).float() * strength, dtype)
            else:
                assert term.down is not None and term.up is not None
                down = term.down.to(device).float().flatten(1) * (term.scale * strength)
                add_lowrank(owner, down, term.up.to(device).float().flatten(1), dtype)

    def unmerge(self) -> None:
        from torch import nn

        from .models.lowrank import remove_lowrank

        for module in self._unmerged:  # nothing of the base weights was changed
            remove_lowrank(self.model.get_submodule(module))
        if self._unmerged and len(self._unmerged) == self.merged_params:
            self._unmerged.clear()
            self.merged_params = 0
            return
        self._unmerged.clear()
        if not self.keep_originals and self.merged_params:
            raise ConfigError(
                "this LoRA merge kept no original weights to restore",
                remedy="Read the model again from its checkpoint.",
            )
        for name, (data, scale) in self._saved.items():
            owner, leaf = self._owner(name)
            dev = getattr(owner, leaf).device  # the model may have moved since the merge
            owner._parameters[leaf] = nn.Parameter(data.to(dev), requires_grad=False)
            if hasattr(owner, "scale_weight") and leaf == "weight":
                owner.register_buffer("scale_weight", None if scale is None else scale.to(dev))
        self._saved.clear()
        self.merged_params = 0


def merge_loras(
    model: nn.Module, loras: Sequence[tuple[LoraFile, float]], *, keep_originals: bool = True
) -> LoraMerge:
    """Merge ``(file, strength)`` pairs into ``model``'s weights in place (they add up)."""
    return LoraMerge(model, loras, keep_originals=keep_originals).merge()


def load_loras(model: nn.Module, specs: Sequence[LoraSpec]) -> list[tuple[LoraFile, float]]:
    """Read every spec's file against ``model`` (errors before any weight changes)."""
    shapes = param_shapes(model)
    return [(read_lora(s.path, shapes), s.strength) for s in specs]


def lora_records(
    loras: Iterable[tuple[LoraFile, float]], *, expert: str = "high"
) -> list[dict[str, object]]:
    """What a run's settings / an engine manifest record of its LoRAs: file name, sha256 prefix,
    strength, expert."""
    return [
        {"file": f.path.name, "sha256": f.short_hash, "strength": float(s), "expert": expert}
        for f, s in loras
    ]


def lora_manifest(specs: Iterable[LoraSpec]) -> list[dict[str, object]]:
    """The same records straight from the specs (hashes the files, loads nothing): what an engine
    manifest stores, so an engine built with other LoRAs or strengths is rejected."""
    out: list[dict[str, object]] = []
    for s in specs:
        p = Path(s.path).expanduser()
        if not p.is_file():
            raise CheckpointError(f"LoRA file not found: {p}", remedy="Check the LoRA path.")
        out.append(
            {
                "file": p.name,
                "sha256": file_sha256(p)[:12],
                "strength": float(s.strength),
                "expert": s.expert,
            }
        )
    return out


def run_specs(loras: Sequence[str], loras_low: Sequence[str] = ()) -> list[LoraSpec]:
    """A run's "FILE[:STRENGTH]" strings (RunOptions.loras / loras_low) as LoraSpec items:
    ``loras`` go into the only DiT (Wan2.2 A14B: the high-noise expert), ``loras_low`` into
    Wan2.2's low-noise expert."""
    return [
        *(LoraSpec.parse(t) for t in loras),
        *(LoraSpec.parse(t, expert="low") for t in loras_low),
    ]


def check_run_loras(
    specs: Sequence[LoraSpec], variant: Variant | None = None, files: ModelFiles | None = None
) -> None:
    """What a front end checks before any weights load (the CLI and the GUI alike): every LoRA
    file exists; with the ``variant``, a low-noise LoRA has a low-noise expert to go into; with
    model ``files``, every LoRA tensor fits a layer, read from the safetensors headers alone, so a
    LoRA for another model is refused in seconds."""
    for s in specs:
        if not Path(s.path).expanduser().is_file():
            raise CheckpointError(
                f"LoRA file not found: {s.path}",
                remedy="Check the LoRA's path (--lora / --lora-low, or the app's LoRA list).",
            )
    if variant is None:
        return
    if any(s.expert == "low" for s in specs) and variant.experts != 2:
        raise ConfigError(
            f"a LoRA for the low-noise expert (--lora-low) needs Wan2.2 A14B; "
            f"{variant.name} has one diffusion model",
            remedy="Give it for the high-noise (only) expert: --lora, or 'high' in the app.",
        )
    if files is None or not specs:
        return
    from .checkpoints.detect import official_shapes

    for i, comp in enumerate(files.experts):
        mine = [s for s in specs if s.expert == EXPERTS[i]]
        if mine:
            shapes = official_shapes(comp, "dit")
            for s in mine:
                read_lora(s.path, shapes, header_only=True)
