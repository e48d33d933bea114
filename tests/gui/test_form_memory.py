"""The form remembers (issue 16, items 6 and 8): the values last used with each model come back
after a restart and when that model is picked again (kept in settings.json, as Wan2GP keeps one
settings file per model), and a sampling preset whose values were edited shows "Custom"."""

from __future__ import annotations

import json

import pytest

from tests.gui.conftest import click, fill_form


def _values(w) -> tuple:
    return (
        w.prompt_edit.toPlainText(),
        w.width_spin.value(),
        w.height_spin.value(),
        w.frames_spin.value(),
        w.steps_spin.value(),
        w.seed_spin.value(),
        w.random_seed.isChecked(),
    )


def test_the_form_comes_back_after_a_restart(make_desktop, tiny, qtbot, home):
    d = make_desktop([tiny.official])
    w = d.window
    fill_form(w, qtbot, "a red kite over the dunes", seed=42, width=96, height=48, frames=13)
    w.steps_spin.setValue(7)
    before = _values(w)
    assert before == ("a red kite over the dunes", 96, 48, 13, 7, 42, False)
    w.close()  # as the app ends: the window closes first, then the GPU thread stops
    assert d.shutdown(10_000)
    saved = json.loads((home / "settings.json").read_text())["forms"][str(tiny.official)]
    assert (saved["prompt"], saved["width"], saved["steps"], saved["seed"]) == (
        "a red kite over the dunes",
        96,
        7,
        42,
    )

    w2 = make_desktop([tiny.official]).window
    assert _values(w2) == before


def test_each_model_gets_back_its_own_values_when_picked_again(
    make_desktop, tiny, tiny_ti2v, qtbot
):
    d = make_desktop([tiny.official, tiny_ti2v.official])
    w = d.window

    def pick(model) -> None:
        w.model_combo.setCurrentIndex(w.model_combo.findData(str(model)))
        assert w.form.entry.path == str(model)

    pick(tiny.official)
    fill_form(w, qtbot, "a lighthouse in fog", seed=5, width=96, height=48, frames=13, steps=7)
    pick(tiny_ti2v.official)  # never used: its own defaults; the prompt being written stays
    assert w.prompt_edit.toPlainText() == "a lighthouse in fog"
    assert w.frames_spin.value() == 121 and w.steps_spin.value() == 50  # TI2V-5B's defaults
    w.steps_spin.setValue(9)
    w.frames_spin.setValue(25)
    pick(tiny.official)
    assert _values(w)[1:] == (96, 48, 13, 7, 5, False)
    pick(tiny_ti2v.official)
    assert (w.frames_spin.value(), w.steps_spin.value()) == (25, 9)


def test_remembered_values_of_the_wrong_type_are_left_out_not_trusted():
    from wan_desktop.ui.settings import AppSettings
    from wan_desktop.ui.viewmodels import FormState, LoraChoice, recalled, remembered

    state = FormState(
        model="/m", prompt="p", width=96, steps=7, preset="fast", loras=(LoraChoice(path="a"),)
    )
    memory = remembered(state)
    back = recalled(json.loads(json.dumps(memory)))  # through the settings file
    assert back["width"] == 96 and back["preset"] == "fast" and back["loras"] == state.loras
    assert AppSettings.from_dict({"forms": {"/m": memory, "/x": 3}}).forms == {"/m": memory}
    hand_edited = {"width": "wide", "steps": 7, "preset": "warp", "loras": [{"path": 1}], "x": 1}
    assert recalled(hand_edited) == {"steps": 7}


# --- a preset whose values were edited is Custom (item 8)

EDITS = {
    "steps": lambda w: w.steps_spin.setValue(150),
    "guidance": lambda w: w.guidance_spin.setValue(3.5),
    "shift": lambda w: w.shift_spin.setValue(8.0),
    "sampler": lambda w: w.sampler_combo.setCurrentText("unipc"),
}


@pytest.mark.parametrize("edit", EDITS, ids=list(EDITS))
def test_editing_a_value_the_preset_set_switches_it_to_custom(make_desktop, tiny, qtbot, edit):
    d = make_desktop([tiny.official])
    w = d.window
    fill_form(w, qtbot, "a heron", seed=3)
    i = w.speed_combo.findData("fast")
    w.speed_combo.setCurrentIndex(i)
    w.speed_combo.activated.emit(i)  # as a click on the menu item
    assert (w.steps_spin.value(), w.guidance_spin.value(), w.sampler_combo.currentText()) == (
        4,
        1.0,
        "euler",
    )
    w.preset_combo.activated.emit(w.preset_combo.count() - 2)  # another size: the preset stays
    assert w.speed_combo.currentText() == "Fast (4 steps)" and w.shift_spin.value() == 5.0

    EDITS[edit](w)
    assert w.form.state.preset == "" and w.speed_combo.currentText() == "Custom"
    click(qtbot, w.pause_button)
    click(qtbot, w.generate_button)
    [job] = d.queue.jobs
    assert job.options["preset"] is None
    assert "Fast" not in w.queue_list.item(0).text()


def test_vace_inputs_and_the_gpu_count_are_remembered_per_model(
    make_desktop, tiny, tiny_ti2v, qtbot, tmp_path, home
):
    from wan_desktop.ui.media_inputs import MediaInputs
    from wan_desktop.ui.system_info import GpuMemory

    d = make_desktop([tiny.official, tiny_ti2v.official])
    w = d.window
    qtbot.waitUntil(lambda: w.gpu_poller.gpus is not None, timeout=10_000)
    w.gpu_poller.stop()  # two GPUs from here on (this machine has none)
    w.gpu_selector.set_gpus([GpuMemory(index=i, name="g", used_gb=0, total_gb=24) for i in (0, 1)])

    def pick(model) -> None:
        w.model_combo.setCurrentIndex(w.model_combo.findData(str(model)))
        assert w.form.entry.path == str(model)

    media = MediaInputs(
        use="outpaint",
        control_video=str(tmp_path / "pose.mp4"),
        ref_images=(str(tmp_path / "a.png"), str(tmp_path / "b.png")),
        outpaint=(16, 0, 16, 8),
        preprocess="edges",
        control_scale=0.7,
    )
    pick(tiny.official)
    w.form.update(media=media, parallel=2)
    pick(tiny_ti2v.official)
    w.form.update(media=MediaInputs(video=str(tmp_path / "v.mp4"), strength=0.5), parallel=1)
    pick(tiny.official)
    assert w.form.state.media == media and w.form.state.parallel == 2
    pick(tiny_ti2v.official)
    assert w.form.state.media.video == str(tmp_path / "v.mp4") and w.form.state.parallel == 1

    w.close()  # through settings.json: the same inputs after a restart
    assert d.shutdown(10_000)
    saved = json.loads((home / "settings.json").read_text())["forms"][str(tiny.official)]
    assert saved["parallel"] == 2 and saved["media"]["outpaint"] == [16, 0, 16, 8]
    w2 = make_desktop([tiny.official, tiny_ti2v.official]).window
    w2.model_combo.setCurrentIndex(w2.model_combo.findData(str(tiny.official)))
    assert w2.form.state.media == media
    # (the GPUs row then caps the count at the GPUs this machine has: none here)


def test_remembered_inputs_of_the_wrong_type_are_left_out():
    from wan_desktop.ui.media_inputs import MediaInputs
    from wan_desktop.ui.viewmodels import recalled

    hand_edited = {
        "parallel": "two",
        "media": {"use": "warp", "ref_images": "a.png", "outpaint": [1, 2], "control_scale": 0.5},
    }
    assert recalled(hand_edited) == {"media": MediaInputs(control_scale=0.5)}
