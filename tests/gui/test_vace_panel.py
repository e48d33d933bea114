"""The VACE uses and video-to-video in the window: the task list offers them for the models that
can run them, the inputs panel shows the inputs of the chosen use, the control strip shows the
preprocessed control frames (read off the GUI thread), a job's input files are copied into its own
folder (Reuse works after the originals are gone), and bad inputs are refused when the job is
added, with the field marked."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.gui.conftest import click, fill_form

W, H, FRAMES = 64, 32, 9  # the form size of fill_form (SMALL)


@pytest.fixture(scope="session")
def tiny_vace(tmp_path_factory):
    """Wan2.1-VACE-1.3B at tiny size (tests/vace_models.py), official layout."""
    from tests.vace_models import build_tiny_vace_model

    return build_tiny_vace_model(tmp_path_factory.mktemp("gui_vace"), "vace-1.3B")


def _frames_folder(folder: Path, n: int = FRAMES, size: tuple[int, int] = (W, H)) -> Path:
    """A PNG frames folder: a moving bright square on a gradient (edges to find)."""
    folder.mkdir(parents=True)
    for i in range(n):
        arr = np.zeros((size[1], size[0], 3), np.uint8)
        arr[..., 0] = np.linspace(0, 200, size[0], dtype=np.uint8)[None, :]
        arr[size[1] // 4 : size[1] // 4 + 12, 4 + 3 * i : 16 + 3 * i] = 250
        Image.fromarray(arr).save(folder / f"{i:05d}.png")
    return folder


def _mask_folder(folder: Path, n: int = FRAMES, size: tuple[int, int] = (W, H)) -> Path:
    folder.mkdir(parents=True)
    for _ in range(n):
        arr = np.zeros((size[1], size[0], 3), np.uint8)
        arr[4:28, 10:40] = 255
        Image.fromarray(arr).save(folder / f"{_:05d}.png")
    return folder


def _ref_image(path: Path, seed: int = 5) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path)
    return path


def _pick(window, key: str) -> None:
    """Choose a task list entry as the user does ("v2v", "vace:inpaint", ...)."""
    combo = window.task_combo
    i = combo.findData(key)
    assert i >= 0 and combo.model().item(i).isEnabled(), key
    combo.setCurrentIndex(i)


def _enabled(window) -> list[str]:
    combo = window.task_combo
    return [combo.itemData(i) for i in range(combo.count()) if combo.model().item(i).isEnabled()]


# ----------------------------------------------------------------------------- panel and tasks


def test_each_use_shows_only_its_inputs_and_the_request_gets_only_those(qtbot, home):
    from dataclasses import replace

    from wan_desktop.ui.media_inputs import USE_FIELDS, MediaInputs, request_fields
    from wan_desktop.ui.vace_panel import VacePanel
    from wan_desktop.ui.viewmodels import FormModel

    form = FormModel()
    panel = VacePanel(form)
    qtbot.addWidget(panel)
    panel.show()
    every = MediaInputs(
        control_video="c.mp4",
        mask_video="m.mp4",
        ref_images=("a.png", "b.png"),
        outpaint=(16, 0, 16, 0),
        first_clip="f.mp4",
        last_clip="l.mp4",
        preprocess="edges",
        control_scale=1.5,
        video="v.mp4",
        strength=0.6,
    )
    shown = {}
    for use in ("control", "inpaint", "outpaint", "extend", "reference"):
        form.update(task="vace", media=replace(every, use=use))
        shown[use] = {k for k, w in panel.rows.items() if w.isVisible()}
        assert set(request_fields("vace", form.state.media)) == shown[use]
    form.update(task="v2v")
    shown["v2v"] = {k for k, w in panel.rows.items() if w.isVisible()}
    assert shown == {k: set(v) for k, v in USE_FIELDS.items()}
    assert request_fields("v2v", form.state.media) == {"video": "v.mp4", "strength": 0.6}
    assert request_fields("vace", replace(every, use="inpaint")) == {
        "control_video": "c.mp4",
        "mask_video": "m.mp4",
        "ref_images": ("a.png", "b.png"),
        "control_scale": 1.5,
    }
    form.update(task="t2v")  # no video inputs: no panel, no request fields
    assert not panel.isVisible() and request_fields("t2v", form.state.media) == {}

    # the widgets write the form: paths, several references, margins, preprocessor, scale
    form.update(task="vace", media=MediaInputs(use="control"))
    panel.control.choose("/x/control")
    panel.refs.add("/x/a.png", "/x/b.png")
    panel.refs.add("/x/c.png")
    panel.refs.remove(1)
    panel.preprocess.setCurrentIndex(panel.preprocess.findData("gray"))
    panel.scale.setValue(0.5)
    panel.margins[2].setValue(32)
    m = form.state.media
    assert (m.control_video, m.ref_images) == ("/x/control", ("/x/a.png", "/x/c.png"))
    assert (m.preprocess, m.control_scale, m.outpaint) == ("gray", 0.5, (0, 0, 32, 0))
    assert panel.refs.list.count() == 2


def test_a_t2v_model_offers_v2v_and_no_vace_use(make_desktop, tiny, qtbot, home):
    d = make_desktop([tiny.official])
    w = d.window
    assert _enabled(w) == ["t2v", "v2v"]
    _pick(w, "v2v")
    assert w.form.state.task == "v2v" and w.vace_panel.isVisible()
    assert w.vace_panel.video.isVisible() and not w.vace_panel.control.isVisible()
    _pick(w, "t2v")
    assert not w.vace_panel.isVisible() and not w.vace_panel.strip.isVisible()


@pytest.mark.slow
def test_a_vace_model_offers_its_five_uses_and_nothing_else(make_desktop, tiny_vace, qtbot, home):
    d = make_desktop([tiny_vace.official])
    w = d.window
    assert [m.variant for m in w.models] == ["vace-1.3B"]
    uses = ["vace:control", "vace:inpaint", "vace:outpaint", "vace:extend", "vace:reference"]
    assert _enabled(w) == uses and w.task_combo.currentData() == "vace:control"
    _pick(w, "vace:inpaint")
    s = w.form.state
    assert (s.task, s.media.use) == ("vace", "inpaint") and w.vace_panel.mask_field.isVisible()


# ----------------------------------------------------------------------------- control strip


def test_the_strip_shows_the_control_through_the_preprocessor_read_off_the_gui_thread(
    make_desktop, tiny, qtbot, home, tmp_path, monkeypatch
):
    from wan_desktop.ui import media_inputs

    from wan_desktop.vace_inputs import edges
    from wan_desktop.video_input import fit_frame

    threads = []
    real = media_inputs.read_control_frames

    def recorded(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(media_inputs, "read_control_frames", recorded)
    d = make_desktop([tiny.official])
    w = d.window
    panel = w.vace_panel
    fill_form(w, qtbot, "a fox")
    src = _frames_folder(tmp_path / "control")
    from dataclasses import replace

    # the form of a VACE model is not needed to see the strip: the panel renders the form state
    w.form.update(task="vace", media=replace(w.form.state.media, use="control"))
    panel.control.choose(str(src))
    panel.preprocess.setCurrentIndex(panel.preprocess.findData("edges"))
    qtbot.waitUntil(
        lambda: (
            panel.strip.shown is not None
            and panel.strip.shown.key[:2] == (str(src), "edges")
            and len(panel.strip.shown.frames) == 4
        ),
        timeout=10_000,
    )
    assert threads and all(t is not threading.main_thread() for t in threads)
    assert panel.strip.isVisible() and panel.strip.title.text() == "Control (edges)"
    assert not panel.strip.image.pixmap().isNull()
    # frames 0, 2, 4, 6 of 9 (4 spread over the first 9), each exactly vace_inputs' edge map
    for k, shown in zip((0, 2, 4, 6), panel.strip.shown.frames, strict=True):
        want = edges(fit_frame(Image.open(src / f"{k:05d}.png"), W, H))
        assert np.array_equal(shown, want)
    assert set(np.unique(panel.strip.shown.frames[0])) <= {0, 255}
    assert panel.strip.shown.frames[0].max() == 255  # the square's border is found
    # an unreadable control: the strip says why, the window goes on
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    panel.control.choose(str(bad))
    qtbot.waitUntil(
        lambda: panel.strip.shown.key[0] == str(bad) and bool(panel.strip.shown.error),
        timeout=10_000,
    )
    assert "cannot read" in panel.strip.image.text()
    # extending a clip: the strip shows the clip
    clip = _frames_folder(tmp_path / "clip", n=5)
    w.form.update(media=replace(w.form.state.media, use="extend", last_clip=str(clip)))
    qtbot.waitUntil(lambda: panel.strip.shown.key[0] == str(clip), timeout=10_000)
    assert panel.strip.title.text() == "Last clip"
    assert len(panel.strip.shown.frames) == 3  # frames 0, 2, 4: the clip has 5


# ----------------------------------------------------------------------------- add-time checks


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [
        "mask_frames",
        "mask_size",
        "control_unreadable",
        "ref_unreadable",
        "mask_without_control",
        "outpaint_no_margin",
    ],
)
def test_bad_vace_inputs_are_refused_when_added_with_the_field_marked(
    make_desktop, tiny_vace, qtbot, home, tmp_path, case
):
    d = make_desktop([tiny_vace.official])
    w = d.window
    p = w.vace_panel
    fill_form(w, qtbot, "a dancer", seed=3)
    _pick(w, "vace:inpaint")
    control = _frames_folder(tmp_path / "control")
    p.control.choose(str(control))
    p.mask_field.choose(str(_mask_folder(tmp_path / "mask")))
    p.refs.add(str(_ref_image(tmp_path / "ref.png")))
    field, words = {
        "mask_frames": ("mask_video", "has 5 frame(s), the control video control 9"),
        "mask_size": ("mask_video", "is 32x16, the control video control 64x32"),
        "control_unreadable": ("control_video", "cannot read the control video bad.mp4"),
        "ref_unreadable": ("ref_images", "cannot read reference image bad.png"),
        "mask_without_control": ("mask_video", "a mask video needs the control video"),
        "outpaint_no_margin": ("outpaint", "outpaint adds no pixel"),
    }[case]
    if case == "mask_frames":
        p.mask_field.choose(str(_mask_folder(tmp_path / "short", n=5)))
    elif case == "mask_size":
        p.mask_field.choose(str(_mask_folder(tmp_path / "small", size=(32, 16))))
    elif case == "control_unreadable":
        (tmp_path / "bad.mp4").write_bytes(b"not a video")
        p.control.choose(str(tmp_path / "bad.mp4"))
    elif case == "ref_unreadable":
        (tmp_path / "bad.png").write_bytes(b"not an image")
        p.refs.add(str(tmp_path / "bad.png"))
    elif case == "outpaint_no_margin":
        _pick(w, "vace:outpaint")  # the control video to extend, but every margin 0
    else:
        p.control.edit.clear()  # cleared by the user: the form forgets it
        assert w.form.state.media.control_video == ""
    click(qtbot, w.generate_button)
    assert w.last_error is not None and words in w.last_error.message, w.last_error
    assert w.error_box.isVisible() and d.queue.jobs == [] and d.queue.history == []
    marked = p.field_widgets()[field]
    assert all(x.property("invalid") is True for x in marked)
    assert words in marked[0].toolTip() and "--" not in marked[0].toolTip()  # the app's words
    others = [x for k, ws in w._field_widgets().items() if k != field for x in ws]
    assert not any(x.property("invalid") for x in others)
    assert not (home / "outputs" / "inputs").exists()  # nothing copied for a refused job


def test_a_v2v_source_video_that_cannot_be_read_is_refused_when_added(
    make_desktop, tiny, qtbot, home, tmp_path
):
    d = make_desktop([tiny.official])
    w = d.window
    fill_form(w, qtbot, "a fox", seed=2)
    _pick(w, "v2v")
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    w.vace_panel.video.choose(str(tmp_path / "clip.mp4"))
    click(qtbot, w.generate_button)
    assert "cannot read the video clip.mp4" in w.last_error.message
    assert w.vace_panel.video.property("invalid") is True and d.queue.jobs == []
    short = _frames_folder(tmp_path / "short", n=5)  # 5 frames, 9 needed
    w.vace_panel.video.choose(str(short))
    click(qtbot, w.generate_button)
    assert "has 5 frame(s), 9 needed" in w.last_error.message and d.queue.jobs == []
    assert w.last_error.remedy == "Use 5 frames (or fewer), or a longer video."  # no CLI flag
    assert w.vace_panel.video.property("invalid") is True


# ----------------------------------------------------------------------------- the job's copies


@pytest.mark.slow
def test_a_v2v_job_runs_on_its_own_copy_and_reuse_works_after_the_original_is_deleted(
    make_desktop, tiny, qtbot, home, tmp_path
):
    import json

    d = make_desktop([tiny.official])
    w = d.window
    fill_form(w, qtbot, "a fox", seed=11, steps=4)
    _pick(w, "v2v")
    src = _frames_folder(tmp_path / "source")
    originals = {f.name: f.read_bytes() for f in src.iterdir()}
    w.vace_panel.video.choose(str(src))
    w.vace_panel.strength.setValue(0.5)
    with qtbot.waitSignal(d.queue.finished, timeout=60_000) as sig:
        click(qtbot, w.generate_button)
    job_id, result = sig.args
    copy = home / "outputs" / "inputs" / job_id / "video"
    assert {f.name: f.read_bytes() for f in copy.iterdir()} == originals
    side = json.loads(Path(str(result.out) + ".json").read_text())
    assert side["request"]["video"] == str(copy) and side["request"]["strength"] == 0.5
    first = np.asarray(Image.open(copy / "00000.png"))

    shutil.rmtree(src)  # the original goes
    w.form.update(task="t2v", media=w.form.state.media.__class__())  # the form moves on
    w.history_list.setCurrentRow(0)
    click(qtbot, w.reuse_button)
    s = w.form.state
    assert (s.task, s.media.video, s.media.strength) == ("v2v", str(copy), 0.5)
    assert w.task_combo.currentData() == "v2v" and w.vace_panel.video.path == str(copy)
    with qtbot.waitSignal(d.queue.finished, timeout=60_000) as sig:
        click(qtbot, w.generate_button)  # accepted and run from the job's copy
    again = sig.args[1]
    assert np.array_equal(np.asarray(Image.open(copy / "00000.png")), first)
    import imageio.v3 as iio

    # the same settings, seed and source: the same video
    assert np.array_equal(iio.imread(again.out), iio.imread(result.out))
    # the second job has its own copy (of the first one's): deleting the first entry with its
    # video deletes the first copy only
    second = home / "outputs" / "inputs" / sig.args[0] / "video"
    assert {f.name: f.read_bytes() for f in second.iterdir()} == originals
    w._remove_history(job_id, delete_video=True)
    assert not copy.parent.exists() and not Path(result.out).exists() and second.is_dir()


@pytest.mark.slow
def test_a_vace_job_copies_control_mask_and_references_and_reuse_survives_their_deletion(
    make_desktop, tiny_vace, qtbot, home, tmp_path
):
    d = make_desktop([tiny_vace.official])
    w = d.window
    p = w.vace_panel
    fill_form(w, qtbot, "a dancer", seed=5)
    _pick(w, "vace:inpaint")
    given = tmp_path / "given"
    control = _frames_folder(given / "control")
    mask = _mask_folder(given / "mask")
    refs = [_ref_image(given / "a.png", 1), _ref_image(given / "b.png", 2)]
    p.control.choose(str(control))
    p.mask_field.choose(str(mask))
    p.refs.add(*map(str, refs))
    p.scale.setValue(0.75)
    w.pause_button.setChecked(True)  # the job waits: only its add-time copy matters here
    click(qtbot, w.generate_button)
    assert w.last_error is None and len(d.queue.jobs) == 1
    qtbot.waitUntil(lambda: d.queue.jobs[0].state == "queued")  # copied on the thread pool
    job = d.queue.jobs[0]
    folder = home / "outputs" / "inputs" / job.id
    r = job.request
    assert r["control_video"] == str(folder / "control_video")
    assert r["mask_video"] == str(folder / "mask_video")
    assert list(r["ref_images"]) == [str(folder / f"ref_images_{i}.png") for i in (0, 1)]
    assert (folder / "ref_images_1.png").read_bytes() == refs[1].read_bytes()
    assert sorted(f.name for f in (folder / "mask_video").iterdir()) == sorted(
        f.name for f in mask.iterdir()
    )
    d.queue.cancel(job.id)  # into the history, with its request
    shutil.rmtree(given)

    w.form.update(task="vace", media=w.form.state.media.__class__(use="reference"))
    w.history_list.setCurrentRow(0)
    click(qtbot, w.reuse_button)
    m = w.form.state.media
    assert (m.use, m.control_video, m.mask_video) == (
        "inpaint",
        r["control_video"],
        r["mask_video"],
    )
    assert m.ref_images == tuple(r["ref_images"]) and m.control_scale == 0.75
    assert w.task_combo.currentData() == "vace:inpaint" and p.refs.list.count() == 2
    click(qtbot, w.generate_button)  # the copies pass every add-time check
    assert w.last_error is None and len(d.queue.jobs) == 1
    qtbot.waitUntil(lambda: d.queue.jobs[0].state == "queued")  # its own copies made
    second = Path(d.queue.jobs[0].request["mask_video"])
    assert second.parent.parent == folder.parent and second.is_dir()
    w._remove_history(job.id, delete_video=False)  # an entry without a video: its copies go
    assert not folder.exists() and second.is_dir()


@pytest.mark.slow
def test_a_vace_control_job_runs_from_the_window_with_its_control_beside_the_preview(
    make_desktop, tiny_vace, qtbot, home, tmp_path
):
    import json

    import imageio.v3 as iio

    d = make_desktop([tiny_vace.official])
    w = d.window
    p = w.vace_panel
    fill_form(w, qtbot, "a dancer", seed=9)
    _pick(w, "vace:control")
    control = _frames_folder(tmp_path / "control")
    p.control.choose(str(control))
    p.preprocess.setCurrentIndex(p.preprocess.findData("gray"))
    p.refs.add(str(_ref_image(tmp_path / "ref.png")))
    qtbot.waitUntil(lambda: p.strip.shown is not None and len(p.strip.shown.frames) == 4)
    # the strip stands to the right of the live preview, in the same row
    assert p.strip.isVisible() and p.strip.parent() is w.view_tabs.parent()
    assert p.strip.geometry().left() >= w.view_tabs.geometry().right()
    assert p.strip.title.text() == "Control (grayscale)"
    frame = p.strip.shown.frames[0]
    assert (frame[..., 0] == frame[..., 1]).all() and (frame[..., 1] == frame[..., 2]).all()
    previews = []
    d.queue.preview.connect(lambda job_id, pf: previews.append(pf))
    with qtbot.waitSignal(d.queue.finished, timeout=60_000) as sig:
        click(qtbot, w.generate_button)
    job_id, result = sig.args
    assert previews and p.strip.isVisible()  # the control stayed beside the live preview
    assert iio.imread(result.out).shape == (FRAMES, H, W, 3)
    side = json.loads(Path(str(result.out) + ".json").read_text())["request"]
    folder = home / "outputs" / "inputs" / job_id
    assert (side["task"], side["preprocess"]) == ("vace", "gray")
    assert side["control_video"] == str(folder / "control_video")
    assert side["ref_images"] == [str(folder / "ref_images_0.png")]
    assert side.get("mask_video") is None  # the control use takes no mask
