"""The app's list of engine folders reads no model, graph or engine file: its verdict compares
names and sizes, and sha256s where the hash cache has them (a run does the full check). No Qt."""

from __future__ import annotations

import os
import shutil

import pytest
from wan_desktop.engines import cache, file_hashes
from wan_desktop.ui.engine_folders import list_engine_rows, usable_engines
from wan_desktop.ui.library import ModelEntry

from wan_desktop.checkpoints.detect import detect_model

RUN_COMPONENTS = ("t5", "dit", "vae_decoder_first", "vae_decoder_step")  # what a run loads


def _checkpoint_files(model_dir, components=RUN_COMPONENTS):
    """The checkpoint files of ``components``, as the export records them."""
    files = detect_model(model_dir)
    of = {"t5": files.text_encoder, "dit": files.experts[0]}
    return sorted({p for c in components for p in of.get(c, files.vae).files})


def _engine_folder(root, model_dir, components=RUN_COMPONENTS, name="t2v"):
    """An ONNX Runtime folder with ``components`` over stand-in graph files, whose manifest
    records the files of those components of ``model_dir`` as an export does (name, size,
    sha256): a DiT-only build records only the DiT's files."""
    folder = root / "engines" / name
    folder.mkdir(parents=True)
    entries = []
    for c in components:
        graph = folder / f"{c}.onnx"
        graph.write_bytes(c.encode() * 100)
        entries.append(
            cache.EngineEntry(
                component=c,
                file=graph.name,
                runtime="onnxruntime",
                runtime_version="1.0",
                precision="fp32",
                spec={},
                sha256=cache.sha256_file(graph),
                size=graph.stat().st_size,
                expert=0 if c == "dit" else None,
            )
        )
    cache.write_manifest(
        folder,
        cache.Manifest(
            variant=detect_model(model_dir).variant,
            entries=tuple(entries),
            model={
                "path": str(model_dir),
                "files": cache.model_file_records(_checkpoint_files(model_dir, components)),
            },
            rebuild=f"wan-desktop export --model {model_dir} --out {folder}",
        ),
    )
    return folder


@pytest.fixture
def reads(monkeypatch, tmp_path):
    """A fresh hash cache; the files whose bytes get hashed, in order."""
    monkeypatch.setenv("WAN_DESKTOP_CACHE", str(tmp_path / "user-cache"))
    seen = []
    real = file_hashes.sha256_file
    monkeypatch.setattr(
        file_hashes, "sha256_file", lambda p: seen.append(os.path.basename(p)) or real(p)
    )
    return seen


def test_the_listing_reads_no_file_and_uses_the_hashes_a_run_left(tiny, tmp_path, reads):
    folder = _engine_folder(tmp_path, tiny.official)
    # another model: the same files (names, sizes), one byte of the DiT's weights changed
    other = tmp_path / "other" / "official"
    shutil.copytree(tiny.official, other)
    dit = other / "diffusion_pytorch_model.safetensors"
    data = bytearray(dit.read_bytes())
    data[-1] ^= 0x01
    dit.write_bytes(data)
    reads.clear()  # the export hashed the model's files

    def verdict(model_dir):
        (row,) = list_engine_rows(
            tmp_path / "engines",
            ModelEntry(path=str(model_dir), variant="t2v-1.3B"),
            compute_capability=None,
        )
        return row.reason or "fits"

    assert verdict(tiny.official) == "fits"
    assert verdict(other) == "fits"  # names and sizes agree; its hashes are not known yet
    assert reads == []
    # a run hashed the other model's files (once): the listing now knows
    for p in _checkpoint_files(other):
        file_hashes.HashCache().sha256(p)
    assert "same size but other contents (sha256)" in verdict(other)
    assert verdict(tiny.official) == "fits"
    assert len(reads) == 3 and folder.is_dir()


def test_a_folder_fits_the_model_it_was_made_from_whatever_components_it_records(
    tiny, tmp_path, reads
):
    """The manifest records the files of the components it has (a DiT-only build: the DiT's):
    those alone are compared. A folder fits when it has every component a run loads."""
    model = ModelEntry(path=str(tiny.official), variant="t2v-1.3B")
    dit_only = _engine_folder(tmp_path, tiny.official, ("dit",), name="dit-only")
    full = _engine_folder(tmp_path, tiny.official, name="full")
    rows = {
        r.name: r for r in list_engine_rows(tmp_path / "engines", model, compute_capability=None)
    }

    assert (
        rows["full"].ok and rows["full"].reason == "" and rows["full"].backends == ("onnxruntime",)
    )
    # not "made from other model files": the DiT it records is this model's; what it lacks is
    # what a run loads besides the DiT
    assert not rows["dit-only"].ok
    assert rows["dit-only"].reason.startswith("it has no t5, vae_decoder_first, vae_decoder_step: ")
    assert usable_engines(tmp_path / "engines", model) == {"onnxruntime": str(full)}
    assert dit_only.is_dir()
    # another model with the same file names and sizes but another DiT: refused by the DiT's
    # recorded sha256 once the hash cache knows the other model's files
    other = tmp_path / "other" / "official"
    shutil.copytree(tiny.official, other)
    dit = other / "diffusion_pytorch_model.safetensors"
    data = bytearray(dit.read_bytes())
    data[-1] ^= 0x01
    dit.write_bytes(data)
    for p in _checkpoint_files(other):
        file_hashes.HashCache().sha256(p)
    other_entry = ModelEntry(path=str(other), variant="t2v-1.3B")
    assert usable_engines(tmp_path / "engines", other_entry) == {}
