"""Telling SkyReels-V2 models (Skywork) from the Wan2.1 releases they are built on.

A SkyReels-V2 DiT has the Wan2.1 structure; only DF-1.3B carries something of its own, the fps
embedding (``fps_embedding`` / ``fps_projection``, SkyReels' ``inject_sample_info``). Everything
else is told by what the files say about themselves, never by a guess from the weights:

* ``-Diffusers`` folders: the transformer's class ``SkyReelsV2Transformer3DModel`` and the
  pipeline class in model_index.json (``SkyReelsV2DiffusionForcing*`` = Diffusion Forcing);
* official folders and ComfyUI files: the release name users download them under
  (``SkyReels-V2-DF-14B-720P``, ``Wan2_1-SkyReels-V2-DF-14B-540P_fp16.safetensors``): "skyreels",
  "DF", "720P" in the folder or file name.

The official folders name their DiT ``model.safetensors`` / ``model-0000N-of-0000M.safetensors``
instead of Wan's ``diffusion_pytorch_model*``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..variants import DiTConfig

_DF_NAME = re.compile(r"(^|[^a-z0-9])df([^a-z0-9]|$)")
_MODEL_SHARD = re.compile(r"^model(-\d+-of-\d+)?\.safetensors$")


@dataclass(frozen=True)
class SkyReelsHints:
    """What a model's names and config files say: SkyReels at all, Diffusion Forcing, 720P."""

    skyreels: bool = False
    diffusion_forcing: bool = False
    p720: bool = False


def hints_for(path: Path, dit_config: dict[str, Any]) -> SkyReelsHints:
    """The hints of a model folder or ComfyUI file (its name, its diffusers class names)."""
    name = path.name.lower()
    index: dict[str, Any] = {}
    if path.is_dir() and (path / "model_index.json").is_file():
        try:
            loaded = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
            index = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            index = {}  # detect_model reports a broken index itself
    pipeline_class = str(index.get("_class_name", ""))
    model_class = str(dit_config.get("_class_name", ""))
    by_class = model_class.startswith("SkyReelsV2") or pipeline_class.startswith("SkyReelsV2")
    return SkyReelsHints(
        skyreels=by_class or "skyreels" in name,
        diffusion_forcing="DiffusionForcing" in pipeline_class
        or ("skyreels" in name and _DF_NAME.search(name) is not None),
        p720="720p" in name,
    )


def skyreels_variant(dit: DiTConfig, experts: int, hints: SkyReelsHints) -> str | None:
    """The SkyReels-V2 variant name for this DiT, or None when it is not one (a Wan release)."""
    if experts != 1 or not (hints.skyreels or dit.inject_sample_info):
        return None
    size = "1.3B" if dit.dim <= 1536 else "14B"
    if dit.model_type == "t2v" and (hints.diffusion_forcing or dit.inject_sample_info):
        # of the DF releases exactly the 1.3B has the fps table (diffusers' conversion configs)
        size = "1.3B" if dit.inject_sample_info else "14B"
        res = "720P" if hints.p720 and size == "14B" else "540P"
        return f"skyreels-v2-df-{size}-{res}"
    res = "720P" if hints.p720 and size == "14B" else "540P"
    if dit.model_type == "t2v":
        return f"skyreels-v2-t2v-{size}-{res}"
    if dit.model_type == "i2v" and dit.has_image_embedding:
        return f"skyreels-v2-i2v-{size}-{res}"
    return None


def official_dit_shards(folder: Path) -> list[Path]:
    """SkyReels' own DiT file names in an official folder: model.safetensors or its shards."""
    from .reader import safetensors_shards

    if (folder / "model.safetensors.index.json").is_file():
        return safetensors_shards(folder, "model")
    return sorted(p for p in folder.glob("model*.safetensors") if _MODEL_SHARD.match(p.name))
