"""Long videos in the app (issue 17 §5), through the real window on tiny models: the duration with
its window count, progress and live preview window by window, per-window prompts, a SkyReels-V2
DF model's settings, "Continue this video" from the history, cancel, and add-time validation."""

from __future__ import annotations

import time
from pathlib import Path

import imageio.v3 as iio
import pytest

from tests.gui.conftest import click, fill_form
from wan_desktop import long_video
from wan_desktop.request import GenerationRequest


@pytest.fixture(scope="session")
def tiny_df(tmp_path_factory):
    """SkyReels-V2-DF-1.3B-540P at tiny size, in its official folder (model.safetensors)."""
    from tests.skyreels_models import build_tiny_skyreels

    return build_tiny_skyreels(tmp_path_factory.mktemp("gui_df"), "skyreels-v2-df-1.3B-540P")


def _outputs(home: Path) -> list[str]:
    d = home / "outputs"
    return sorted(p.name for p in d.rglob("*") if p.is_file()) if d.is_dir() else []


def _short_windows(w, qtbot, *, frames: int = 25, steps: int = 2, prompt: str = "a long walk"):
    """9-frame windows carrying 1 latent frame over: 25 frames are 3 windows (7 latent frames
    in windows of 3, starting at latent 0, 2 and 4)."""
    fill_form(w, qtbot, prompt, seed=3, frames=frames, steps=steps)
    click(qtbot, w.long_panel.header)
    w.long_panel.window_spin.setValue(9)
    w.long_panel.overlap_spin.setValue(1)


def _windows(request: GenerationRequest, variant) -> long_video.WindowPlan:
    return long_video.plan_windows(request.resolve(variant))


def _added(d, qtbot):
    """Add the form's job to a paused queue: it waits, its request can be read."""
    d.queue.set_paused(True)
    before = len(d.queue.jobs)
    click(qtbot, d.window.generate_button)
    assert len(d.queue.jobs) == before + 1, d.window.form.state
    return d.queue.jobs[-1]


def test_duration_up_to_60_s_shows_the_window_count(make_desktop, tiny, qtbot):
    d = make_desktop([tiny.official])
    w = d.window
    label = w.long_panel.duration_label
    assert label.text() == "5.0 s · 1 window"  # 81 frames at 16 fps: the model's one window
    assert w.seconds_spin.maximum() >= 60 and w.frames_spin.maximum() >= 60 * 24 + 1

    w.seconds_spin.setValue(60.0)
    assert w.frames_spin.value() == 961 and w.form.state.frames == 961
    n = _windows(GenerationRequest(prompt="x", frames=961), tiny.variant).count
    assert n == 13  # 241 latent frames in windows of 21 carrying 2 over
    assert label.text() == "60.0 s · 13 windows"

    w.frames_spin.setValue(161)
    assert label.text() == "10.0 s · 3 windows"
    # shorter windows: more of them, for every model (here 9-frame windows, 1 latent carried)
    click(qtbot, w.long_panel.header)
    assert w.long_panel.windows_box.isVisible() and not w.long_panel.df_box.isVisible()
    w.long_panel.window_spin.setValue(9)
    w.long_panel.overlap_spin.setValue(1)
    plan = _windows(
        GenerationRequest(prompt="x", frames=161, window_frames=9, window_overlap=1), tiny.variant
    )
    assert label.text() == f"10.0 s · {plan.count} windows" and plan.count == 20

    # a refused setting: no count rather than a wrong one (overlap must stay under a window)
    w.long_panel.window_spin.setValue(5)
    w.long_panel.overlap_spin.setValue(2)
    assert label.text() == "10.0 s · — windows"


def test_per_window_prompts_one_line_per_window(make_desktop, tiny, qtbot):
    d = make_desktop([tiny.official])
    w = d.window
    _short_windows(w, qtbot, prompt="")
    w.prompt_edit.setPlainText("a cat wakes up\na cat walks\n\na cat sleeps")
    panel = w.long_panel
    assert not panel.per_window_check.isChecked()  # off: the whole text for every window
    job = _added(d, qtbot)
    assert job.request["prompt"] == "a cat wakes up a cat walks a cat sleeps"
    prompts = [
        x.prompt for x in _windows(GenerationRequest.from_dict(job.request), tiny.variant).windows
    ]
    assert prompts == ["a cat wakes up a cat walks a cat sleeps"] * 3

    panel.per_window_check.setChecked(True)
    assert w.form.state.long_video.per_window_prompts
    assert panel.prompt_note.text() == "3 lines, one per window"
    job = _added(d, qtbot)
    assert job.request["prompt"] == "a cat wakes up\na cat walks\na cat sleeps"
    prompts = [
        x.prompt for x in _windows(GenerationRequest.from_dict(job.request), tiny.variant).windows
    ]
    assert prompts == ["a cat wakes up", "a cat walks", "a cat sleeps"]

    w.prompt_edit.setPlainText("a cat wakes up\na cat walks")  # fewer lines: the last repeats
    assert panel.prompt_note.text() == "2 line(s) for 3 windows: the last line repeats"
    job = _added(d, qtbot)
    prompts = [
        x.prompt for x in _windows(GenerationRequest.from_dict(job.request), tiny.variant).windows
    ]
    assert prompts == ["a cat wakes up", "a cat walks", "a cat walks"]

    w.frames_spin.setValue(9)  # one window: its prompt is the first line
    job = _added(d, qtbot)
    assert job.request["prompt"] == "a cat wakes up"


def test_df_model_settings_from_the_model_in_the_long_video_group(make_desktop, tiny_df, qtbot):
    d = make_desktop([tiny_df.official])
    w = d.window
    panel = w.long_panel
    assert w.form.entry.variant == "skyreels-v2-df-1.3B-540P"
    # the group opened by itself with the model's recommended settings
    assert panel.header.isChecked() and panel.df_box.isVisible()
    assert not panel.windows_box.isVisible() and not panel.per_window_check.isEnabled()
    assert panel.schedule_combo.currentData() == "sync" and not panel.ar_step_spin.isEnabled()
    values = (panel.base_spin, panel.history_spin, panel.addnoise_spin, panel.fps_spin)
    assert [s.value() for s in values] == [97, 17, 20.0, 24]
    assert panel.duration_label.text() == "4.0 s · 1 window"  # 97 frames at 24 fps

    w.seconds_spin.setValue(12.0)  # 289 frames: 73 latents in windows of 25 carrying 5
    assert w.form.state.frames == 289 and panel.duration_label.text() == "12.0 s · 4 windows"

    panel.schedule_combo.setCurrentIndex(1)
    panel.schedule_combo.activated.emit(1)  # as a click picks it
    assert (w.form.state.long_video.ar_step, w.form.state.long_video.causal_block_size) == (5, 5)
    assert panel.ar_step_spin.isEnabled() and panel.block_spin.value() == 5
    panel.addnoise_spin.setValue(0.0)
    panel.fps_spin.setValue(16)
    assert w.form.state.fps == 16 and w.seconds_spin.value() == 18.0  # (289 − 1) / 16

    fill_form(w, qtbot, "a boat on a lake", seed=1, frames=9, steps=1)
    w.frames_spin.setValue(41)
    panel.base_spin.setValue(17)
    panel.history_spin.setValue(5)
    panel.schedule_combo.setCurrentIndex(0)
    panel.schedule_combo.activated.emit(0)
    job = _added(d, qtbot)
    r = job.request
    assert (r["base_frames"], r["overlap_history"], r["ar_step"], r["causal_block_size"]) == (
        17,
        5,
        0,
        1,
    )
    assert (r["addnoise_condition"], r["fps"], r["frames"]) == (0.0, 16, 41)


def test_add_time_validation_marks_the_long_video_field(make_desktop, tiny, tiny_df, qtbot, home):
    d = make_desktop([tiny.official, tiny_df.official])
    w = d.window
    d.queue.set_paused(True)
    df = next(i for i, m in enumerate(w.models) if m.variant.startswith("skyreels"))
    w.model_combo.setCurrentIndex(df)
    fill_form(w, qtbot, "a train", seed=1, frames=41, steps=1)
    w.long_panel.history_spin.setValue(97)  # carries over a whole window
    click(qtbot, w.generate_button)
    assert d.queue.jobs == []
    spin = w.long_panel.history_spin
    assert spin.property("invalid") and "shorter than a window" in spin.toolTip()
    w.error_box.close()

    w.long_panel.history_spin.setValue(5)
    w.long_panel.base_spin.setValue(13)  # windows of 4 latent frames: blocks of 5 do not fit
    w.long_panel.schedule_combo.activated.emit(1)  # asynchronous: ar_step 5, blocks of 5
    click(qtbot, w.generate_button)
    assert d.queue.jobs == [] and not spin.property("invalid")
    assert w.frames_spin.property("invalid") and "multiple of 5" in w.frames_spin.toolTip()
    w.error_box.close()

    # the sliding windows of other models: an overlap as long as the window is refused
    w.model_combo.setCurrentIndex(1 - df)
    _short_windows(w, qtbot)
    w.long_panel.overlap_spin.setValue(3)
    click(qtbot, w.generate_button)
    assert d.queue.jobs == [] and w.long_panel.overlap_spin.property("invalid")
    assert "window overlap must be 1 to 2" in w.long_panel.overlap_spin.toolTip()
    w.error_box.close()

    # a video to continue that is not there: the "Continues" line is marked
    from dataclasses import replace

    w.long_panel.overlap_spin.setValue(1)
    gone = str(home / "gone.mp4")
    w.form.update(long_video=replace(w.form.state.long_video, extend=gone))
    assert w.long_panel.extend_label.text() == "Continues gone.mp4"
    assert w.long_panel.color_check.isEnabled()  # T2V continuing frames: colours matched
    click(qtbot, w.generate_button)
    assert d.queue.jobs == [] and w.long_panel.extend_label.property("invalid")
    w.error_box.close()
    click(qtbot, w.long_panel.extend_clear)  # ✕: not continued any more
    assert w.form.state.long_video.extend == "" and not w.long_panel.extend_box.isVisible()
    click(qtbot, w.generate_button)
    assert len(d.queue.jobs) == 1 and not w.long_panel.extend_label.property("invalid")


def test_progress_and_live_preview_window_by_window(make_desktop, tiny, qtbot, home):
    d = make_desktop([tiny.official])
    w = d.window
    _short_windows(w, qtbot)
    progress, previews, labels, lines = [], [], [], []

    def on_progress(p) -> None:
        if p.stage == "denoise" and p.step:
            progress.append((p.window, p.windows, p.step, p.total))
            labels.append(w.stage_label.text())
            lines.append(w.queue_list.item(0).text())

    d.queue.progress.connect(on_progress)
    d.queue.preview.connect(lambda _j, p: previews.append(p))
    with qtbot.waitSignal(d.queue.finished, timeout=120_000) as sig:
        click(qtbot, w.generate_button)
    job_id, result = sig.args

    assert progress == [(k, 3, s, 2) for k in (1, 2, 3) for s in (1, 2)]
    assert labels[-1].startswith("Denoising · window 3/3 · step 2/2 · ETA")
    assert lines[2].startswith("▶ running · window 2/3 · step 1/2 · 64×32 · 25 f")
    # a preview of each window's own x0 (3 latent frames) at every step (interval 0)
    assert [(p.window, p.windows, p.step) for p in previews] == [
        (k, 3, s) for k in (1, 2, 3) for s in (1, 2)
    ]
    assert all(len(p.frames) == 3 for p in previews)
    video = iio.imread(result.out)
    assert video.shape == (25, 32, 64, 3)  # the overlaps written once
    assert result.request["window_frames"] == 9 and result.request["window_overlap"] == 1
    assert w.preview_player.view.toolTip().startswith("x0 prediction of window 3/3, step 2/2")
    # the ETA timed each window's encode, and the decodes of the first two (each ends when the
    # next window's encode starts)
    timed = w.long_panel.eta
    assert len(timed.encodes[job_id]) == 3 and len(timed.decodes[job_id]) == 2
    assert all(t > 0 for t in timed.encodes[job_id] + timed.decodes[job_id])


def test_cancel_a_long_video_within_one_step_writes_nothing(make_desktop, tiny, qtbot, home):
    d = make_desktop([tiny.official])
    w = d.window
    _short_windows(w, qtbot, steps=30)
    second = []
    d.queue.progress.connect(lambda p: second.append(p) if p.window == 2 and p.step else None)
    click(qtbot, w.generate_button)
    qtbot.waitUntil(lambda: bool(second), timeout=120_000)
    job_id = d.queue.running
    job = d.queue.job(job_id)
    with qtbot.waitSignal(d.queue.cancelled, timeout=60_000):
        t_cancel = time.monotonic()
        click(qtbot, w.cancel_button)
    after = [s for t, j, s in d.service.step_log if j == job_id and t > t_cancel]
    assert len(after) <= 1  # the step in flight may finish; the next check raises
    # the first window was decoded and streamed to the writer: nothing of it is left
    assert not Path(job.out).exists() and _outputs(home) == []
    assert w.stage_label.text().startswith("Cancelled") and not w.preview_player.frames
    assert d.queue.history[-1].status == "cancelled"


def test_continue_this_video_from_the_history_menu(make_desktop, tiny, qtbot, home):
    d = make_desktop([tiny.official])
    w = d.window
    fill_form(w, qtbot, "a river", seed=7)  # 9 frames, one window
    with qtbot.waitSignal(d.queue.finished, timeout=60_000) as sig:
        click(qtbot, w.generate_button)
    first_id, first = sig.args
    source = iio.imread(first.out)
    assert source.shape[0] == 9

    item = w.history_list.item(0)
    w._history_menu(w.history_list.visualItemRect(item).center())
    actions = {a.text(): a for a in w.history_menu.actions()}
    assert actions["Continue this video"].isEnabled()
    with qtbot.waitSignal(d.queue.finished, timeout=60_000) as sig:
        actions["Continue this video"].trigger()
    w.history_menu.close()
    second_id, second = sig.args

    assert second_id != first_id and [e.id for e in d.queue.history] == [first_id, second_id]
    assert second.request["extend"] == str(first.out) and second.request["seed"] == 7
    assert second.request["prompt"] == "a river" and second.out != first.out
    video = iio.imread(second.out)
    assert video.shape == (9 + 9 - 5, 32, 64, 3)  # the video, then what is new (overlap once)
    assert abs(video[:4].astype(int) - source[:4].astype(int)).mean() < 8  # its frames first
    assert w.form.state.long_video.extend == ""  # the next job does not continue it again
    assert w.history_list.count() == 2
    assert f"continues {Path(first.out).name}" in w.history_list.item(0).text()  # newest first
    assert "continues" not in w.history_list.item(1).text()


def _reviewed_then_decoded(d, qtbot, prompt: str, *, df: bool = False, **values):
    """A job with Review before decode: it waits at review, Decode writes it; its result. A DF
    model: windows of 9 frames carrying 5 over."""
    w = d.window
    fill_form(w, qtbot, prompt, seed=7, **values)
    if df:
        w.long_panel.base_spin.setValue(9)
        w.long_panel.history_spin.setValue(5)
    w.review_check.setChecked(True)
    with qtbot.waitSignal(d.queue.review, timeout=120_000):
        click(qtbot, w.generate_button)
    with qtbot.waitSignal(d.queue.finished, timeout=120_000) as sig:
        click(qtbot, w.review_bar.decode_button)
    assert d.queue.history[-1].review
    return sig.args[1]


def _continue_paused(d):
    """ "Continue this video" on the newest history entry, the queue paused: the job it added."""
    w = d.window
    d.queue.set_paused(True)
    item = w.history_list.item(0)
    w._history_menu(w.history_list.visualItemRect(item).center())
    next(a for a in w.history_menu.actions() if a.text() == "Continue this video").trigger()
    w.history_menu.close()
    assert len(d.queue.jobs) == 1, w.form.state  # accepted, not refused
    return d.queue.jobs[0]


def test_continuing_a_reviewed_video_through_sliding_windows_turns_review_off_and_says_so(
    make_desktop, tiny, qtbot, home
):
    """Sliding windows decode each window before the next starts, so run.prepare refuses a
    review of any continued video: the job goes without it, and the status bar tells why."""
    from dataclasses import replace

    from wan_desktop.ui.review_bar import CONTINUE_TIP, REVIEW_DROPPED

    d = make_desktop([tiny.official])
    w = d.window
    first = _reviewed_then_decoded(d, qtbot, "a river")  # 9 frames, one window
    job = _continue_paused(d)
    assert job.request["extend"] == str(first.out) and not job.review
    assert not w.form.state.review and not w.review_check.isChecked()
    message = w.statusBar().currentMessage()
    assert message.startswith(f"Continuing {Path(first.out).name}: job added")
    assert REVIEW_DROPPED in message
    # a form that continues a video with this model: the checkbox says why there is no review
    w.form.update(long_video=replace(w.form.state.long_video, extend=str(first.out)))
    assert not w.review_check.isEnabled() and w.review_check.toolTip() == CONTINUE_TIP


def test_continuing_a_reviewed_video_with_a_df_model_reviews_it_again(
    make_desktop, tiny_df, qtbot, home
):
    """A SkyReels-V2 DF run decodes once at the end: the continued job keeps the review."""
    from wan_desktop.ui.review_bar import REVIEW_DROPPED

    d = make_desktop([tiny_df.official])
    w = d.window
    first = _reviewed_then_decoded(d, qtbot, "a kite", df=True, frames=9, steps=2)
    job = _continue_paused(d)
    assert job.request["extend"] == str(first.out) and job.review
    assert w.form.state.review and w.review_check.isChecked()
    assert REVIEW_DROPPED not in w.statusBar().currentMessage()
    with qtbot.waitSignal(d.queue.review, timeout=120_000) as sig:
        d.queue.set_paused(False)
    assert sig.args[0] == job.id  # it waits at review, like the video it continues
    with qtbot.waitSignal(d.queue.discarded, timeout=60_000):
        click(qtbot, w.review_bar.discard_button)
    assert [e.status for e in d.queue.history][-1] == "discarded"


@pytest.mark.slow
def test_a_df_model_runs_window_by_window_in_the_app(make_desktop, tiny_df, qtbot, home):
    d = make_desktop([tiny_df.official])
    w = d.window
    fill_form(w, qtbot, "a kite over a beach", seed=2, frames=25, steps=2)
    w.long_panel.base_spin.setValue(9)  # 3 latent frames a window, 2 carried: 5 windows
    w.long_panel.history_spin.setValue(5)
    assert w.long_panel.duration_label.text() == "1.0 s · 5 windows"  # 24 frames at 24 fps
    windows = []
    d.queue.progress.connect(
        lambda p: windows.append((p.window, p.windows)) if p.stage == "denoise" and p.step else None
    )
    with qtbot.waitSignal(d.queue.finished, timeout=120_000) as sig:
        click(qtbot, w.generate_button)
    _job_id, result = sig.args
    assert sorted(set(windows)) == [(k, 5) for k in range(1, 6)]
    assert windows == sorted(windows)  # in order, each window's calls together
    assert iio.imread(result.out).shape == (25, 32, 64, 3) and result.fps == 24
    r = result.request
    assert (r["base_frames"], r["overlap_history"], r["ar_step"], r["fps"]) == (9, 5, 0, 24)
    assert r["addnoise_condition"] == 20.0  # the model's recommended value

    # continued from the history: carried over as clean latents of its last 5 frames (t2v)
    first = result.out
    item = w.history_list.item(0)
    w._history_menu(w.history_list.visualItemRect(item).center())
    go_on = next(a for a in w.history_menu.actions() if a.text() == "Continue this video")
    with qtbot.waitSignal(d.queue.finished, timeout=120_000) as sig:
        go_on.trigger()
    w.history_menu.close()
    _job_id, second = sig.args
    assert second.request["extend"] == str(first) and second.request["task"] == "t2v"
    assert iio.imread(second.out).shape == (25 + 25 - 5, 32, 64, 3)  # the video, then the new
    assert len(d.queue.history) == 2


def test_reuse_brings_back_the_long_video_settings(make_desktop, tiny, qtbot):
    d = make_desktop([tiny.official])
    w = d.window
    _short_windows(w, qtbot, prompt="")
    w.prompt_edit.setPlainText("dawn\nnoon\ndusk")
    w.long_panel.per_window_check.setChecked(True)
    w.long_panel.color_check.setChecked(False)
    job = _added(d, qtbot)
    d.queue.cancel(job.id)  # a queued job cancelled: in the history with its settings
    assert d.queue.history[-1].request["prompt"] == "dawn\nnoon\ndusk"

    w.long_panel.window_spin.setValue(81)
    w.long_panel.per_window_check.setChecked(False)
    w.prompt_edit.setPlainText("something else")
    w.history_list.setCurrentRow(0)
    click(qtbot, w.reuse_button)
    lv = w.form.state.long_video
    assert (lv.window_frames, lv.window_overlap, lv.per_window_prompts) == (9, 1, True)
    assert not lv.color_match and not w.long_panel.color_check.isChecked()
    assert w.long_panel.window_spin.value() == 9 and w.long_panel.per_window_check.isChecked()
    assert w.prompt_edit.toPlainText() == "dawn\nnoon\ndusk"
    assert w.long_panel.duration_label.text() == "1.5 s · 3 windows"


def test_the_eta_counts_the_windows_left():
    from wan_desktop.ui.long_video_form import WindowsEta

    eta = WindowsEta()
    # window 1 of 3, step 1 of 4 done, 3 s left in it: 1 s a step, 8 more steps after it
    assert eta("j", window=1, windows=3, step=1, total=4, eta=3.0) == 3.0 + 8.0
    assert eta("j", window=1, windows=3, step=4, total=4, eta=0.0) == 8.0  # the pace is kept
    assert eta("j", window=3, windows=3, step=2, total=4, eta=4.0) == 4.0  # the last window
    assert eta("k", window=1, windows=1, step=1, total=4, eta=6.0) == 6.0  # one window: as is


def test_the_eta_counts_the_vae_encode_and_decode_of_the_windows_left():
    """3 windows of 4 steps at 1 s a step; the encodes take 2, 1, 1 s and the decodes 5, 3 s."""
    from wan_desktop.ui.long_video_form import WindowsEta

    now = [0.0]
    eta = WindowsEta(clock=lambda: now[0])

    def at(t: float, stage: str, window: int, windows: int = 3, job: str = "j") -> None:
        now[0] = t
        eta.stage(job, stage, window=window, windows=windows)

    at(0, "start", 1, 1)
    at(0, "encode", 1)
    at(2, "denoise", 1)
    # window 1: 3 s of its steps, 8 s of the later steps, its decode (none timed yet: 0) and two
    # more windows' encode (the first window's, 2 s) + decode (0)
    assert eta("j", window=1, windows=3, step=1, total=4, eta=3.0) == 3.0 + 8.0 + 0 + 2 * 2.0
    at(10, "decode", 1)
    at(15, "encode", 2)  # window 1's decode took 5 s
    at(16, "denoise", 2)  # encodes 2 and 1 s: 1.5 s
    assert eta("j", window=2, windows=3, step=2, total=4, eta=2.0) == 2.0 + 4.0 + 5.0 + 6.5
    at(30, "decode", 2)
    at(33, "encode", 3)  # decodes 5 and 3 s: 4 s
    at(34, "denoise", 3)
    assert eta("j", window=3, windows=3, step=3, total=4, eta=1.0) == 1.0 + 4.0  # its decode
    assert (eta.encodes["j"], eta.decodes["j"]) == ([2.0, 1.0, 1.0], [5.0, 3.0])

    # a SkyReels-V2 DF run: one encode before its windows (windows=1 then), none in them
    at(40, "start", 1, 1, job="d")
    assert eta.encodes == {} and eta.pace == {}  # the last job's times are gone
    at(40, "encode", 1, 1, job="d")
    at(45, "denoise", 1, 5, job="d")
    assert eta("d", window=1, windows=5, step=1, total=2, eta=1.0) == 1.0 + 8.0
    assert eta.encodes == {}


def test_long_video_settings_are_remembered_per_model(make_desktop, tiny, tiny_df, qtbot, home):
    import json

    d = make_desktop([tiny.official, tiny_df.official])
    w = d.window
    panel = w.long_panel
    df = next(i for i, m in enumerate(w.models) if m.variant.startswith("skyreels"))
    w.model_combo.setCurrentIndex(df)
    panel.base_spin.setValue(17)
    panel.schedule_combo.activated.emit(1)  # asynchronous
    w.model_combo.setCurrentIndex(1 - df)  # the T2V model: its own window, not the DF values
    assert w.form.state.long_video.base_frames is None and panel.window_spin.value() == 81
    panel.window_spin.setValue(9)
    panel.per_window_check.setChecked(True)
    w.model_combo.setCurrentIndex(df)
    lv = w.form.state.long_video
    assert (lv.base_frames, lv.ar_step, lv.causal_block_size) == (17, 5, 5)
    assert panel.base_spin.value() == 17 and panel.schedule_combo.currentData() == "async"
    w.model_combo.setCurrentIndex(1 - df)
    assert w.form.state.long_video.window_frames == 9 and panel.per_window_check.isChecked()
    w.remember_form()
    forms = json.loads((home / "settings.json").read_text())["forms"]
    assert forms[str(tiny_df.official)]["long_video"]["base_frames"] == 17
    assert "extend" not in forms[str(tiny.official)]["long_video"]
