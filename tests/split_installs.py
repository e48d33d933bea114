"""Tiny models whose parts are separate files, laid out as users have them: a catalog GGUF release
installed by the model manager (each repo's files in its own folder, listed in index.json), and
a ComfyUI models folder (models/diffusion_models or models/unet, models/vae, models/text_encoders,
models/clip_vision)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.fixtures_models import TinyModel, official_dit_state
from tests.gguf_files import t5_gguf, write_gguf
from wan_desktop.catalog import get_release
from wan_desktop.model_manager import INDEX_FORMAT, INDEX_NAME, ModelManager


def install_release(release_name: str, models_dir: Path, model: TinyModel) -> Path:
    """Tiny files at the paths a download of ``release_name`` writes into ``models_dir``, listed
    in the manager's index.json as a complete install; returns the install's ``--model`` path."""
    release = get_release(release_name)
    keys = ("transformer", "transformer_2")
    states = [official_dit_state(model.refs[k]) for k in keys if k in model.refs]
    index_path = models_dir / INDEX_NAME
    data = (
        json.loads(index_path.read_text())
        if index_path.is_file()
        else {"format": INDEX_FORMAT, "models": {}}
    )
    files = {}
    for src in release.sources:
        for f in src.files:
            dest = models_dir / src.folder / ("tokenizer/spiece.model" if f.is_pattern else f.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if f.role in ("dit", "dit_low"):
                qtype = release.precision.removesuffix("_M")
                write_gguf(dest, states[f.role == "dit_low"], qtype)
            elif f.role == "t5":
                shutil.copy(t5_gguf(model, "Q8_0"), dest)
            elif f.role == "vae":
                shutil.copy(model.comfy_vae, dest)
            elif f.role == "clip":
                assert model.comfy_clip is not None
                shutil.copy(model.comfy_clip, dest)
            elif f.role == "tokenizer":
                shutil.copytree(model.tokenizer, dest.parent, dirs_exist_ok=True)
            key = f"{src.folder}/{dest.relative_to(models_dir / src.folder).as_posix()}"
            files[key] = {
                "repo_id": src.repo_id,
                "path": key.split("/", 1)[1],
                "role": f.role,
                "size": dest.stat().st_size,
                "sha256": "0" * 64,
                "state": "ok",
            }
    data["models"][release.name] = {
        "layout": release.layout.value,
        "variant": release.variant,
        "repo_id": release.repo_id,
        "revision": "main",
        "source": "hub:test",
        "complete": True,
        "installed_at": "2026-12-05T00:00:00+00:00",
        "files": files,
    }
    index_path.write_text(json.dumps(data, indent=1))
    return ModelManager(models_dir).get_installed(release.name).model_path


def comfy_folder(model: TinyModel, models_dir: Path, *, dit_folder: str = "unet") -> Path:
    """``model``'s ComfyUI files in a fresh ComfyUI models folder, its DiT as a Q8_0 GGUF in
    models/<dit_folder>/ (city96's name); returns that DiT file."""
    shutil.copytree(model.comfy_dit.parent.parent, models_dir)
    shutil.rmtree(models_dir / "diffusion_models")
    (models_dir / dit_folder).mkdir()
    dit = models_dir / dit_folder / f"wan2.1-{model.name}-Q8_0.gguf"
    write_gguf(dit, official_dit_state(model.refs["transformer"]), "Q8_0")
    return dit
