"""A GGUF release of the catalog, installed as the model manager lays it out (each repo's files in
its own folder), is what the CLI runs: ``generate_args`` names the DiT file, the umT5 GGUF, the VAE
and the tokenizer folder, and detection reads them back as a GGUF model (the A14B pair found by its
file names)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.fixtures_models import build_tiny_model, official_dit_state
from tests.gguf_files import t5_gguf, write_gguf
from wan_desktop.catalog import Layout, get_release
from wan_desktop.checkpoints.detect import detect_model
from wan_desktop.model_manager import InstalledFile, InstalledModel

pytest.importorskip("gguf")


def _install(release_name: str, root: Path, model) -> InstalledModel:
    """Tiny files at the paths a download of ``release_name`` writes, and its index entry."""
    release = get_release(release_name)
    states = [official_dit_state(model.refs[k]) for k in ("transformer", "transformer_2")]
    files = []
    for src in release.sources:
        for f in src.files:
            dest = root / src.folder / ("tokenizer/spiece.model" if f.is_pattern else f.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if f.role in ("dit", "dit_low"):
                write_gguf(dest, states[f.role == "dit_low"], release.precision.removesuffix("_M"))
            elif f.role == "t5":
                shutil.copy(t5_gguf(model, "Q8_0"), dest)
            elif f.role == "vae":
                shutil.copy(model.comfy_vae, dest)
            elif f.role == "tokenizer":
                shutil.copytree(model.tokenizer, dest.parent, dirs_exist_ok=True)
            key = f"{src.folder}/{dest.relative_to(root / src.folder).as_posix()}"
            files.append(
                InstalledFile(
                    key=key,
                    repo_id=src.repo_id,
                    path=key.split("/", 1)[1],
                    role=f.role,
                    size=dest.stat().st_size,
                    sha256="0" * 64,
                    hub_sha256=None,
                    hub_git_sha1=None,
                    state="ok",
                )
            )
    return InstalledModel(
        name=release.name,
        layout=release.layout.value,
        variant=release.variant,
        repo_id=release.repo_id,
        revision="main",
        source="hub:test",
        complete=True,
        installed_at="2026-12-05T00:00:00Z",
        root=root,
        files=tuple(files),
    )


@pytest.mark.slow
def test_an_installed_gguf_pair_is_what_the_cli_runs(tmp_path):
    model = build_tiny_model(tmp_path / "tiny", "t2v-A14B")
    inst = _install("gguf-wan2.2-t2v-a14b-q8_0", tmp_path / "models", model)
    args = inst.generate_args()
    repo = tmp_path / "models" / "bullerwins--Wan2.2-T2V-A14B-GGUF"
    assert inst.layout == Layout.GGUF.value
    assert args["model"] == repo / "wan2.2_t2v_high_noise_14B_Q8_0.gguf"
    assert args["text_encoder"].name == "umt5-xxl-encoder-Q8_0.gguf"
    assert args["vae"].name == "wan_2.1_vae.safetensors" and args["tokenizer"].is_dir()
    found = detect_model(args["model"], **{k: v for k, v in args.items() if k != "model"})
    assert found.format == "gguf" and found.variant.experts == 2
    assert [e.files[0].name for e in found.experts] == [
        "wan2.2_t2v_high_noise_14B_Q8_0.gguf",
        "wan2.2_t2v_low_noise_14B_Q8_0.gguf",
    ]
    assert found.text_encoder is not None and found.text_encoder.files[0] == args["text_encoder"]
    assert found.tokenizer == args["tokenizer"]
