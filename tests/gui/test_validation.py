"""A job is checked when it is added, by the run owner's own checks (``run.prepare``): a value the
run would refuse is refused at once, with the form field at fault named (so the window marks it),
in the app's words (no CLI flags); nothing is queued."""

from __future__ import annotations

import pytest

from wan_desktop.errors import ConfigError, WanError


@pytest.fixture
def form(qtbot, home):
    from wan_desktop.ui.viewmodels import FormModel

    f = FormModel()
    marks: list[tuple[str, str]] = []
    f.invalid.connect(lambda field, message: marks.append((field, message)))
    f.marks = marks  # type: ignore[attr-defined]
    return f


def _refused(form, **values) -> WanError:
    from wan_desktop.ui.settings import load_settings

    form.update(**values)
    with pytest.raises(WanError) as info:
        form.make_job(load_settings())
    return info.value


T2V_CASES = {
    # name: (form values, words of the message, field)
    "size_100x999": (dict(width=100, height=999), "size 100x999 is not a multiple of 16", "size"),
    "frames_30": (dict(frames=30), "frames must be 4n+1", "frames"),
    "steps_0": (dict(steps=0), "steps must be at least 1, got 0", "steps"),
    "guidance_150": (dict(guidance=150.0), "guidance must be at most 100", "guidance"),
    "shift_0": (dict(shift=0.0), "shift must be a positive number", "shift"),
    "i2v_on_a_t2v_model": (dict(task="i2v", image="x.png"), "cannot do i2v", "task"),
}


@pytest.mark.parametrize("case", T2V_CASES, ids=list(T2V_CASES))
def test_a_value_the_run_would_refuse_is_refused_when_added_naming_its_field(
    form, tiny, home, case
):
    values, words, field = T2V_CASES[case]
    good = dict(model=str(tiny.official), prompt="a fox", width=64, height=32, frames=9, steps=3)
    good |= dict(guidance=5.0, shift=5.0, task="t2v", image="")
    error = _refused(form, **(good | values))
    assert isinstance(error, ConfigError) and words in error.message
    assert error.field == field and "--" not in error.one_line()
    assert form.marks == [(field, error.one_line())]
    assert not (home / "queue.json").exists()  # nothing was queued
    form.update(**good)  # fixed: accepted, and the mark goes
    from wan_desktop.ui.settings import load_settings

    job = form.make_job(load_settings())
    assert job.request["width"] == 64 and form.marks[-1] == ("", "")


def test_the_form_own_checks_name_the_model_and_the_prompt(form, tiny):
    assert _refused(form, prompt="a fox").field == "model"
    error = _refused(form, model=str(tiny.official), prompt="   ")
    assert error.message == "the prompt is empty" and form.marks[-1][0] == "prompt"


def test_an_image_task_without_its_image_or_with_a_missing_file_is_refused_at_once(
    form, tiny_i2v, tmp_path
):
    base = dict(model=str(tiny_i2v.official), prompt="a boat", width=64, height=32, frames=9)
    error = _refused(form, task="i2v", **base)
    assert error.message == "task i2v needs an input image" and error.field == "image"
    assert form.marks[-1] == ("image", error.one_line())
    gone = tmp_path / "gone.png"
    error = _refused(form, task="i2v", image=str(gone), **base)
    assert error.message == f"image not found: {gone}" and form.marks[-1][0] == "image"


def test_the_request_messages_use_the_app_words_not_cli_flags():
    from wan_desktop.request import GenerationRequest
    from wan_desktop.variants import get_variant

    flf2v, t2v = get_variant("flf2v-14B"), get_variant("t2v-1.3B")
    cases = [
        (GenerationRequest(prompt="p", task="flf2v"), flf2v, "task flf2v needs an input image"),
        (
            GenerationRequest(prompt="p", task="flf2v", image="a.png"),
            flf2v,
            "task flf2v needs a last frame",
        ),
        (
            GenerationRequest(prompt="p", task="t2v", image="a.png"),
            t2v,
            "task t2v takes no input image; choose the task i2v or ti2v",
        ),
        (
            GenerationRequest(prompt="p", task="t2v", last_image="b.png"),
            t2v,
            "a last frame is only used by the flf2v task",
        ),
    ]
    fields = []
    for request, variant, message in cases:
        with pytest.raises(ConfigError) as info:
            request.resolve(variant)
        assert info.value.message == message and "--" not in info.value.one_line()
        fields.append(info.value.field)
    assert fields == ["image", "last_image", "image", "last_image"]


# --- Reuse settings shows exactly what the next job runs (issue 16, item 4)


def _history_of(home, model, **request) -> None:
    """A history with one finished job of ``model``, saved before the app starts."""
    from wan_desktop.ui.store import HistoryEntry, JobStore

    saved = dict(prompt="a boat at dawn", width=64, height=32, frames=9, steps=2, seed=11)
    entry = HistoryEntry(
        id="h1", status="done", request=saved | request, options={"model": str(model)}
    )
    JobStore(home).save_history([entry])


def test_reuse_of_a_job_whose_model_is_gone_names_it_and_queues_nothing_until_one_is_picked(
    make_desktop, tiny, qtbot, home, tmp_path
):
    from tests.gui.conftest import click

    gone = tmp_path / "Wan2.1-I2V-14B-480P"  # the folder was removed from the settings since
    _history_of(home, gone, task="i2v", image=str(tmp_path / "first.png"))
    d = make_desktop([tiny.official])
    w = d.window
    assert w.model_combo.currentData() == str(tiny.official)  # a T2V model is picked
    w.history_list.setCurrentRow(0)
    click(qtbot, w.reuse_button)
    # the picker does not pretend: the job's model is named, missing, and marked
    assert (w.form.state.model, w.form.state.task) == (str(gone), "i2v")
    assert w.model_combo.currentIndex() == -1
    assert w.model_combo.placeholderText() == f"model not found: {gone}"
    assert w.model_combo.property("invalid") is True
    assert w.model_combo.toolTip() == f"model not found: {gone}"
    click(qtbot, w.generate_button)  # refused: neither the gone model nor the shown one runs
    assert d.queue.jobs == [] and w.last_error.message == f"model not found: {gone}"
    assert w.last_error.remedy.startswith("Pick a model in the list")

    # a model picked in its place: the mark goes, the reused values stay (the task one this
    # model does), and that model is what the job runs
    w.model_combo.setCurrentIndex(0)
    assert w.model_combo.property("invalid") is False and w.form.missing_model == ""
    assert (w.form.state.model, w.form.state.task) == (str(tiny.official), "t2v")
    assert (w.steps_spin.value(), w.seed_spin.value()) == (2, 11)
    click(qtbot, w.pause_button)  # queued only
    click(qtbot, w.generate_button)
    [job] = d.queue.jobs
    assert job.options["model"] == str(tiny.official) and job.request["task"] == "t2v"


def test_reuse_switches_the_picker_to_the_model_that_made_the_job(
    make_desktop, tiny, tiny_ti2v, qtbot, home
):
    from tests.gui.conftest import click

    _history_of(home, tiny.official, task="t2v")
    d = make_desktop([tiny_ti2v.official, tiny.official])
    w = d.window
    w.model_combo.setCurrentIndex(w.model_combo.findData(str(tiny_ti2v.official)))
    assert w.form.entry.path == str(tiny_ti2v.official)
    w.history_list.setCurrentRow(0)
    click(qtbot, w.reuse_button)
    # picker, form model and the entry the form's checks use: all the job's model
    assert w.model_combo.currentData() == str(tiny.official)
    assert w.form.state.model == w.form.entry.path == str(tiny.official)
    assert w.model_combo.property("invalid") is not True
    assert (w.steps_spin.value(), w.seed_spin.value()) == (2, 11)
    click(qtbot, w.pause_button)
    click(qtbot, w.generate_button)
    [job] = d.queue.jobs
    assert job.options["model"] == str(tiny.official)
    assert (job.request["steps"], job.request["seed"]) == (2, 11)


def test_a_reused_job_whose_model_folder_is_added_back_keeps_its_values(
    make_desktop, tiny, tiny_i2v, qtbot, home, tmp_path
):
    from PIL import Image

    from tests.gui.conftest import click

    first = tmp_path / "first.png"
    Image.new("RGB", (64, 32), (200, 90, 40)).save(first)
    _history_of(home, tiny_i2v.official, task="i2v", image=str(first))
    d = make_desktop([tiny.official])  # the I2V model's folder is not in the settings
    w = d.window
    w.history_list.setCurrentRow(0)
    click(qtbot, w.reuse_button)
    assert w.model_combo.placeholderText() == f"model not found: {tiny_i2v.official}"
    with qtbot.waitSignal(w.models_changed, timeout=30_000):
        w.add_model_folder(tiny_i2v.official)
    assert w.model_combo.currentData() == str(tiny_i2v.official)
    assert w.model_combo.property("invalid") is False
    assert (w.form.state.task, w.form.state.image, w.steps_spin.value()) == ("i2v", str(first), 2)
