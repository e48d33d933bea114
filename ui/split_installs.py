"""Models whose parts are separate files: a GGUF or ComfyUI diffusion-model file needs a VAE, a
umT5 text encoder (and a tokenizer folder when that encoder holds none) and, for Wan2.1 I2V /
FLF2V, a CLIP vision file. The picker's entry carries them (``Parts``), so a job runs with the same
files as ``wan-desktop generate --model X --vae V --text-encoder T --tokenizer D --clip C``.

Two places know the parts: the model manager's index (``installed_parts``: a catalog release it
installed, every file with its role) and a ComfyUI models folder (``comfy_parts``: models/vae,
models/text_encoders, models/clip_vision beside models/diffusion_models or models/unet), where a
file is paired by what the variant needs: the Wan2.1 or Wan2.2 VAE (its latent channels), a umT5 of
the DiT's text width, a CLIP of its image width. A part that is not found, or that two files could
each be, is named in ``Parts.missing``; nothing here raises for a bad file."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wan_desktop.variants import Variant

log = logging.getLogger(__name__)

DIT_FOLDERS = ("diffusion_models", "unet")  # ComfyUI's folders of diffusion-model files
DIT_SUFFIXES = (".safetensors", ".gguf")
# role -> ComfyUI folders that hold it ("clip" is ComfyUI's old name for text_encoders)
PART_FOLDERS = {
    "vae": ("vae",),
    "text_encoder": ("text_encoders", "clip"),
    "clip": ("clip_vision",),
}
PART_SUFFIXES = {
    "vae": (".safetensors", ".pth"),
    "text_encoder": (".safetensors", ".gguf"),
    "clip": (".safetensors",),
}
# the names ComfyUI's Wan workflows use: among several files that fit, these win
STANDARD_NAMES = {
    "vae": ("wan_2.1_vae", "wan2.1_vae", "wan2.2_vae", "wan_2.2_vae"),
    "text_encoder": ("umt5",),
    "clip": ("clip_vision_h",),
}
PART_WORDS = {"vae": "VAE", "text_encoder": "text encoder", "clip": "CLIP vision", "tokenizer": ""}
MANAGER_DEPTH = 6  # how far above a file its models folder (with the manager's index) may lie


@dataclass(frozen=True, kw_only=True)
class Parts:
    """The files a split model needs beside its diffusion-model file ("" where the model's own
    layout, or the text encoder's embedded tokenizer, provides it); ``missing``: role -> why."""

    vae: str = ""
    text_encoder: str = ""
    tokenizer: str = ""
    clip: str = ""
    missing: tuple[tuple[str, str], ...] = ()
    unfinished: str = ""  # a model-manager install whose download is not complete: why

    def overrides(self) -> dict[str, str]:
        """detect_model's keyword arguments for the parts that are known."""
        names = ("vae", "text_encoder", "tokenizer", "clip")
        return {k: getattr(self, k) for k in names if getattr(self, k)}


# ----------------------------------------------------------------------------- model manager


def _manager_installs(models_dir: Path) -> list:
    """The installs listed in ``models_dir``'s index.json ([] when there is none or it is not
    the manager's)."""
    from wan_desktop.errors import WanError
    from wan_desktop.model_manager import INDEX_NAME, ModelManager

    if not (models_dir / INDEX_NAME).is_file():
        return []
    try:
        return list(ModelManager(models_dir).installed().values())
    except WanError as e:
        log.warning("%s: model index not read: %s", models_dir, e.message)
        return []


def managed_models(folder: Path) -> list[Path] | None:
    """The ``--model`` path of each install the manager's index in ``folder`` lists (an
    unfinished one too: its entry says so), or None when ``folder`` is not a models folder of the
    manager."""
    installs = _manager_installs(folder)
    if not installs:
        return None
    return [i.model_path for i in installs]


def installed_parts(model: Path) -> Parts | None:
    """The parts the model manager installed with ``model`` (an install's ``--model`` path), or
    None when no index above it lists it."""
    want = _resolved(model)
    for root in list(model.parents)[:MANAGER_DEPTH]:
        for inst in _manager_installs(root):
            if _resolved(inst.model_path) != want:
                continue
            args = inst.generate_args()
            unfinished = ""
            if not inst.complete or any(f.state != "ok" for f in inst.files):
                bad = sum(f.state != "ok" for f in inst.files)
                unfinished = (
                    f"download of {inst.name} not complete ({bad} of {len(inst.files)} files "
                    "to fetch or check): resume it with File → Download models…"
                )
            return Parts(
                **{k: str(v) for k, v in args.items() if k != "model"}, unfinished=unfinished
            )
    return None


def _resolved(p: Path) -> Path:
    try:
        return p.resolve()
    except OSError:
        return p


# ----------------------------------------------------------------------------- ComfyUI folders


def is_dit_folder(folder: Path) -> bool:
    return folder.name in DIT_FOLDERS


def _part_candidates(dit: Path, role: str) -> list[Path]:
    """Files that could play ``role`` for ``dit``: everything in models/<folder>/ (one level of
    subfolders too, as ComfyUI lists them) and, beside the DiT, files whose name says the role."""
    out: list[Path] = []
    models = dit.parent.parent if is_dit_folder(dit.parent) else None
    for name in PART_FOLDERS[role] if models is not None else ():
        d = models / name
        if d.is_dir():
            out += [f for f in sorted(d.rglob("*")) if f.suffix.lower() in PART_SUFFIXES[role]]
    hint = {"vae": ("vae",), "text_encoder": ("umt5", "t5"), "clip": ("clip_vision",)}[role]
    for f in sorted(dit.parent.iterdir()) if dit.parent.is_dir() else ():
        if f.suffix.lower() in PART_SUFFIXES[role] and any(h in f.name.lower() for h in hint):
            out.append(f)
    return list(dict.fromkeys(out))


def _fits(path: Path, role: str, variant: Variant) -> bool:
    """Whether ``path`` is the ``role`` part ``variant`` needs (its headers read, no weights)."""
    from wan_desktop.checkpoints import detect

    kind = {"vae": "vae", "text_encoder": "t5", "clip": "clip"}[role]
    try:
        if path.suffix.lower() == ".gguf":
            from wan_desktop.checkpoints.gguf_reader import check_architecture

            check_architecture(path, kind)
        comp = detect._component([path], kind)
        shapes = detect.official_shapes(comp, kind)
        if role == "vae":
            return detect.vae_config(shapes, str(path), comp.config).z_dim == variant.vae.z_dim
        if role == "text_encoder":
            return detect.t5_config(shapes, str(path)).dim == variant.dit.text_dim
        clip = detect.clip_config(shapes, str(path), comp.config)
        return variant.dit.image_dim is None or clip.dim == variant.dit.image_dim
    except Exception:  # not this part (or not readable): it is simply not a candidate
        log.debug("%s is not a %s for %s", path, role, variant.name, exc_info=True)
        return False


def _pick(dit: Path, role: str, variant: Variant) -> tuple[str, str]:
    """(the file, "") or ("", why none is taken) for one part."""
    fits = [f for f in _part_candidates(dit, role) if _fits(f, role, variant)]
    if len(fits) > 1:
        standard = [f for f in fits if f.name.lower().startswith(STANDARD_NAMES[role])]
        fits = standard[:1] if standard else fits
    if len(fits) == 1:
        return str(fits[0]), ""
    word = PART_WORDS[role]
    if role == "vae":
        word = f"Wan{variant.vae.version} VAE"
    if fits:
        names = ", ".join(f.name for f in fits[:3])
        return "", f"{word} (ambiguous: {len(fits)} files fit: {names})"
    where = f"models/{PART_FOLDERS[role][0]}" if is_dit_folder(dit.parent) else "beside the model"
    return "", f"{word} (none in {where})"


def _tokenizer_folder(dit: Path) -> str:
    """A tokenizer folder (spiece.model / tokenizer.json) in models/text_encoders/ or beside."""
    places = [dit.parent]
    if is_dit_folder(dit.parent):
        places += [dit.parent.parent / name for name in PART_FOLDERS["text_encoder"]]
    for d in places:
        for sub in sorted(d.rglob("*")) if d.is_dir() else ():
            if sub.is_dir() and any(
                (sub / n).is_file() for n in ("spiece.model", "tokenizer.json")
            ):
                return str(sub)
    return ""


def comfy_parts(dit: Path, variant: Variant) -> Parts:
    """The VAE, umT5 (and tokenizer folder) and, when the variant has image conditioning with
    CLIP, the CLIP vision file for the ComfyUI or GGUF diffusion-model file ``dit``."""
    found: dict[str, str] = {}
    missing: list[tuple[str, str]] = []
    roles = ["vae", "text_encoder"] + (["clip"] if variant.clip is not None else [])
    for role in roles:
        path, why = _pick(dit, role, variant)
        if path:
            found[role] = path
        else:
            missing.append((role, why))
    te = found.get("text_encoder", "")
    if te.lower().endswith(".gguf") and (tok := _tokenizer_folder(dit)):
        found["tokenizer"] = tok  # a GGUF umT5 holds no tokenizer
    return Parts(**found, missing=tuple(missing))


def missing_words(missing: tuple[str, ...], parts: Parts | None) -> tuple[str, ...]:
    """inspect's missing component names ("vae", "text_encoder", "image_encoder", "tokenizer")
    as the picker says them, with why where the pairing knows."""
    why = dict(parts.missing) if parts is not None else {}
    names = {"image_encoder": "clip", "tokenizer": "tokenizer"}
    out = []
    for m in missing:
        role = names.get(m, m)
        if role in why:
            out.append(why[role])
        elif role == "tokenizer":
            out.append("tokenizer (a folder with spiece.model or tokenizer.json)")
        else:
            out.append(PART_WORDS.get(role) or m)
    return tuple(out)
