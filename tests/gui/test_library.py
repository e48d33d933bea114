"""The model scan behind the picker: in a folder full of things that are not Wan models it finds
the one that is, names it by its folder, gives every other candidate a one-line reason a user can
read, stays within its depth and time bounds, reports progress, and says when nothing was found."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from wan_desktop.ui.library import scan

from tests.gui.conftest import click

PYTHON_ERROR = re.compile(r"\b\w*(Error|Exception)\b|Traceback|\bNone\b")


def _junk_tree(root: Path, model: Path) -> Path:
    """A "Downloads"-like folder: one real Wan model among folders that only look like models."""
    shutil.copytree(model, root / "wan-small")
    (root / "empty").mkdir()
    (root / "empty2" / "nothing").mkdir(parents=True)
    rng = np.random.default_rng(0)
    # an LLM folder: config.json and real safetensors, but not a Wan model
    (root / "bert").mkdir()
    (root / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden": 8}))
    weights = {"encoder.w": rng.standard_normal((4, 4), dtype=np.float32)}
    save_file(weights, str(root / "bert" / "model.safetensors"))
    # a diffusers index with the wrong types in it
    (root / "badindex").mkdir()
    (root / "badindex" / "model_index.json").write_text(
        json.dumps(
            {"_class_name": 5, "transformer": "x", "vae": [1, 2, 3, 4], "text_encoder": None}
        )
    )
    # random tensors lying around (no config: not even a candidate)
    (root / "loose").mkdir()
    save_file(
        {"a": rng.standard_normal(3, dtype=np.float32)}, str(root / "loose" / "r.safetensors")
    )
    # a text file named *.safetensors next to a config.json, and one in a ComfyUI folder
    (root / "fake").mkdir()
    (root / "fake" / "config.json").write_text("{}")
    (root / "fake" / "weights.safetensors").write_text("these are not weights")
    (root / "comfy" / "diffusion_models").mkdir(parents=True)
    (root / "comfy" / "diffusion_models" / "wan.safetensors").write_text("hello")
    # safetensors whose header is valid JSON of the wrong shape (a list; an entry that is a number)
    for name, header in (("listheader", b"[1, 2]   "), ("numheader", b'{"w": 5}')):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps({"model_type": "t2v", "dim": "x"}))
        blob = len(header).to_bytes(8, "little") + header
        (root / name / "diffusion_pytorch_model.safetensors").write_bytes(blob)
    # a tree deeper than the scan goes, with a model at its bottom
    deep = root / "d1" / "d2" / "d3" / "d4" / "d5"
    shutil.copytree(model, deep / "deep-model")
    return root


def test_a_junk_folder_yields_only_the_real_model_and_a_reason_for_every_other_candidate(
    tiny, tmp_path
):
    root = _junk_tree(tmp_path / "downloads", tiny.official)
    entries = scan([str(root)])
    usable = [e for e in entries if e.ok]
    assert [(e.name, e.path, e.variant) for e in usable] == [
        ("wan-small", str(root / "wan-small"), "t2v-1.3B")
    ]
    assert usable[0].label.startswith("wan-small — t2v-1.3B, fp32, ")
    bad = {e.name: e.reason for e in entries if not e.ok}
    # the candidates: folders with a model_index.json or config.json + safetensors, ComfyUI files
    assert set(bad) == {"bert", "badindex", "fake", "wan.safetensors", "listheader", "numheader"}
    for name, reason in bad.items():
        assert reason and "\n" not in reason and len(reason) < 200, (name, reason)
        assert not PYTHON_ERROR.search(reason), (name, reason)
        assert str(root) not in reason, (name, reason)  # the picker shows the name already


def test_a_folder_with_no_model_says_so_and_a_missing_folder_is_not_found(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    (tmp_path / "notes" / "sub").mkdir()
    seen: list[tuple[int, str]] = []
    entries = scan(
        [str(tmp_path / "notes"), str(tmp_path / "gone")],
        progress=lambda n, folder: seen.append((n, folder)),
    )
    assert [(e.path, e.reason, e.ok) for e in entries] == [
        (str(tmp_path / "notes"), f"no Wan model found in {tmp_path / 'notes'}", False),
        (str(tmp_path / "gone"), "folder not found", False),
    ]
    # progress: one call per folder entered, counting up
    assert seen == [(1, str(tmp_path / "notes")), (2, str(tmp_path / "notes" / "sub"))]


def test_the_scan_stops_at_its_depth_limit_and_says_how_deep_it_looked(tiny, tmp_path):
    folder = tmp_path / "top"
    at_4 = folder / "a" / "b" / "c" / "m4"
    at_5 = folder / "x" / "y" / "z" / "w" / "m5"
    shutil.copytree(tiny.official, at_4)
    shutil.copytree(tiny.official, at_5)
    deep = scan([str(folder)], max_depth=4)
    assert [e.path for e in deep if e.ok] == [str(at_4)]
    assert not any("no Wan model" in e.reason for e in deep)  # found one: no message
    only_deep = scan([str(folder / "x")], max_depth=3)
    assert [e.reason for e in only_deep] == [
        f"no Wan model found in {folder / 'x'} (searched 3 folders deep; add the model's own folder)"
    ]
    assert [e.path for e in scan([str(folder)], max_depth=5) if e.ok] == [str(at_4), str(at_5)]


def test_the_scan_stops_entering_folders_after_its_time_limit(tmp_path):
    import time

    for i in range(30):
        (tmp_path / "big" / f"f{i:02d}").mkdir(parents=True)
    seen: list[int] = []

    def slow(n: int, _folder: str) -> None:
        seen.append(n)
        time.sleep(0.01)

    t0 = time.monotonic()
    entries = scan([str(tmp_path / "big")], time_limit_s=0.05, progress=slow)
    assert time.monotonic() - t0 < 0.5
    assert 1 <= len(seen) < 31  # 31 folders in all; the walk stopped part way
    assert [e.reason for e in entries] == [
        f"no Wan model found in {tmp_path / 'big'} (scan stopped after 0.05 s; "
        "add the model's own folder)"
    ]


def test_two_models_with_the_same_folder_name_are_told_apart_by_their_parent(tiny, tmp_path):
    shutil.copytree(tiny.official, tmp_path / "a" / "wan")
    shutil.copytree(tiny.official, tmp_path / "b" / "wan")
    shutil.copytree(tiny.official, tmp_path / "c" / "wan-1.3b")
    entries = scan([str(tmp_path)])
    assert [e.name for e in entries if e.ok] == ["a/wan", "b/wan", "wan-1.3b"]
    # a folder given twice (or inside another given one) lists its model once, and is no miss
    again = scan([str(tmp_path), str(tmp_path / "a")])
    assert [(e.name, e.ok) for e in again] == [("a/wan", True), ("b/wan", True), ("wan-1.3b", True)]
    # a layout word alone ("official", "diffusers") is no name: the parent goes with it
    names = sorted(e.name for e in scan([str(tiny.root)]) if e.ok)
    parent = tiny.root.name
    assert names == [f"{parent}/diffusers", f"{parent}/official", tiny.comfy_dit.name]


def test_the_picker_lists_only_usable_models_and_the_rest_behind_the_warning(
    make_desktop, tiny, tmp_path, qtbot
):
    root = _junk_tree(tmp_path / "downloads", tiny.official)
    (tmp_path / "notes").mkdir()
    d = make_desktop([root, tmp_path / "notes"])
    w = d.window
    assert [w.model_combo.itemText(i).split(" — ")[0] for i in range(w.model_combo.count())] == [
        "wan-small"
    ]
    assert [m.name for m in w.models] == ["wan-small"]
    assert w.unusable_button.isVisibleTo(w) and w.unusable_button.text() == "⚠ 7"
    lines = w.unusable_button.toolTip().splitlines()
    assert len(lines) == 7 and lines[-1] == f"notes: no Wan model found in {tmp_path / 'notes'}"
    assert w.statusBar().currentMessage() == "1 model(s) found, 7 could not load"
    from PySide6.QtWidgets import QMessageBox

    click(qtbot, w.unusable_button)
    box = w.findChild(QMessageBox)
    assert box.isVisible() and box.text() == w.unusable_button.toolTip()
    box.close()


def test_scan_progress_reaches_the_status_bar(make_desktop, tmp_path, qtbot):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    d = make_desktop([tmp_path / "empty"])
    messages: list[str] = []
    d.window.statusBar().messageChanged.connect(messages.append)
    with qtbot.waitSignal(d.window.models_changed, timeout=30_000):
        d.window.rescan()
    assert f"Scanning… 2 folder(s): {tmp_path / 'empty' / 'sub'}" in messages
    assert messages[-1] == f"no Wan model found in {tmp_path / 'empty'}"


@pytest.mark.parametrize("up", [False, True])
def test_a_model_folder_given_itself_or_its_parent_is_found_by_its_name(tiny, tmp_path, up):
    shutil.copytree(tiny.official, tmp_path / "m")
    entries = scan([str(tmp_path if up else tmp_path / "m")])
    assert [(e.name, e.ok) for e in entries] == [("m", True)]
