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
