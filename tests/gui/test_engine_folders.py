"""The app's list of engine folders reads no model, graph or engine file: its verdict compares
names and sizes, and sha256s where the hash cache has them (a run does the full check). No Qt."""

from __future__ import annotations

import os
import shutil

import pytest
from wan_desktop.engines import cache, file_hashes
from wan_desktop.ui.engine_folders import list_engine_rows
from wan_desktop.ui.library import ModelEntry

from wan_desktop.checkpoints.detect import detect_model


def _checkpoint_files(model_dir):
    files = detect_model(model_dir)
    return [p for c in (*files.experts, files.vae, files.text_encoder) for p in c.files]


def _engine_folder(root, model_dir):
    """An ONNX Runtime folder whose manifest records ``model_dir``'s files as an export does
    (name, size, sha256), over a stand-in graph file."""
    folder = root / "engines" / "t2v"
    folder.mkdir(parents=True)
    graph = folder / "dit.onnx"
    graph.write_bytes(b"graph bytes" * 100)
    entry = cache.EngineEntry(
        component="dit",
        file="dit.onnx",
        runtime="onnxruntime",
        runtime_version="1.0",
        precision="fp32",
        spec={},
        sha256=cache.sha256_file(graph),
        size=graph.stat().st_size,
        expert=0,
    )
    cache.write_manifest(
        folder,
        cache.Manifest(
            variant=detect_model(model_dir).variant,
            entries=(entry,),
            model={
                "path": str(model_dir),
                "files": cache.model_file_records(_checkpoint_files(model_dir)),
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
