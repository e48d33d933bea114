"""The CLI's speed levers in the window, on the tiny model: sampling presets, LoRAs (checked
against the checkpoint headers when the job is added, saved with the queue), the tiny-VAE (TAEHV)
live preview and fast final decode; and an I2V job from a dropped first frame."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from tests.gui.conftest import click, fill_form
from tests.lora_files import lowrank, official_layout, save
from tests.taehv_files import random_tae_file


def _sidecar(out) -> dict:
    return json.loads(Path(str(out) + ".json").read_text())


def _steps_of(d, job_id: str) -> list[int]:
    return [s for _t, j, s in d.service.step_log if j == job_id]


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory):
    """A rank-4 LoRA on every attention / FFN linear of the tiny DiT, and one whose
    blocks.1.ffn.0 up matrix is 3 rows short (a LoRA made for another model size)."""
    root = tmp_path_factory.mktemp("gui_loras")
    good = save(root, "good.safetensors", official_layout(lowrank(3)))
    pairs = lowrank(4)
    down, up, _ = pairs[(1, "ffn.0")]
    pairs[(1, "ffn.0")] = (down, up[:-3], None)
    bad = save(root, "bad.safetensors", official_layout(pairs))
    return good, bad


def test_fast_preset_fills_the_form_and_the_job_runs_its_four_distilled_steps(
    make_desktop, tiny, qtbot, home
):
    from wan_desktop.presets import LIGHTX2V_SHIFT, LIGHTX2V_STEPS, lightx2v_sigmas

    d = make_desktop([tiny.official])
    w = d.window
    labels = [w.speed_combo.itemText(i) for i in range(w.speed_combo.count())]
    assert labels == ["Custom", "Fast (4 steps)", "Turbo (rCM, 4 steps)", "Quality (full)"]
    # the user picks "Fast": the form shows the preset's values, still editable
    i = w.speed_combo.findData("fast")
    w.speed_combo.setCurrentIndex(i)
    w.speed_combo.activated.emit(i)
    assert (
        w.steps_spin.value(),
        w.guidance_spin.value(),
        w.shift_spin.value(),
        w.sampler_combo.currentText(),
    ) == (4, 1.0, 5.0, "euler")
    assert w.form.state.preset == "fast"
    # "Quality" is the variant's own values (t2v-1.3B: 50 UniPC steps, CFG 5, shift 3 at 480p)
    i = w.speed_combo.findData("quality")
    w.speed_combo.activated.emit(i)
    assert (w.form.state.steps, w.form.state.guidance, w.form.state.sampler) == (50, 5.0, "unipc")
    w.speed_combo.activated.emit(w.speed_combo.findData("fast"))
    assert w.speed_combo.currentText() == "Fast (4 steps)"

    fill_form(w, qtbot, "a fox, fast", seed=7, steps=4)
    previews = []
    d.queue.preview.connect(lambda _j, p: previews.append(p.step))
    with qtbot.waitSignal(d.queue.finished, timeout=60_000) as sig:
        click(qtbot, w.generate_button)
    job_id, result = sig.args
    assert previews == [1, 2, 3, 4] and _steps_of(d, job_id) == [1, 2, 3, 4]
    # a base model without a distill LoRA: the CLI's warning, as a status-bar note
    assert (
        "fast preset expects a step-distilled model"
        in (home / "logs" / "wan-desktop.log").read_text()
    )
    side = _sidecar(result.out)
    assert side["options"]["preset"] == "fast"
    r = side["request"]
    assert (r["steps"], r["guidance"], r["shift"], r["sampler"]) == (4, 1.0, 5.0, "euler")
    # the lightx2v grid (timesteps 1000, 937.5, 833.3, 625), not UniPC's from steps/shift
    assert r["sigmas"] == pytest.approx(lightx2v_sigmas(LIGHTX2V_STEPS, LIGHTX2V_SHIFT))
    assert r["sigmas"][0] == 1.0 and r["sigmas"][3] == pytest.approx(0.625)
    assert "Fast (4 steps)" in w.history_list.item(0).text()
    # Reuse brings the preset back, and "Custom" keeps the values without a preset
    w.speed_combo.activated.emit(0)
    assert w.form.state.preset == "" and w.form.state.steps == 4
    w.history_list.setCurrentRow(0)
    click(qtbot, w.reuse_button)
    assert w.form.state.preset == "fast" and w.speed_combo.currentData() == "fast"
    # Turbo runs 1-4 steps: 6 (a reused Turbo job's; the steps box would make it Custom) is
    # refused when the job is added, not after loading
    w.form.update(preset="turbo", steps=6)
    click(qtbot, w.generate_button)
    assert "1 to 4 steps" in w.last_error.message and d.queue.jobs == []


def test_lora_strength_zero_is_bit_identical_to_none_and_one_changes_the_video(
    make_desktop, tiny, lora_files, qtbot, home, monkeypatch
):
    from wan_desktop.engines import factory

    good, _bad = lora_files
    builds, relora = [], []
    real_build, real_set = factory.build_components, factory.set_run_loras

    def build(*a, **k):
        builds.append(1)
        return real_build(*a, **k)

    def set_loras(comps, options):
        relora.append(tuple(options.loras))
        return real_set(comps, options)

    monkeypatch.setattr(factory, "build_components", build)
    monkeypatch.setattr(factory, "set_run_loras", set_loras)
    d = make_desktop([tiny.official])
    w = d.window
    fill_form(w, qtbot, "a lighthouse", seed=99, steps=2)
    click(qtbot, w.generate_button)  # no LoRA
    w.form.add_lora(str(good))  # what "Add LoRA…" does with the picked file
    assert len(w.lora_rows) == 1 and w.lora_rows[0].name.text() == "good.safetensors"
    assert w.lora_rows[0].isVisible() and w.lora_rows[0].strength.isVisible()
    assert not w.lora_rows[0].expert.isVisibleTo(w)  # one DiT: no expert choice
    w.lora_rows[0].strength.setValue(0.0)  # the row's spin box drives the form
    assert w.form.state.loras[0].strength == 0.0
    click(qtbot, w.generate_button)
    w.lora_rows[0].strength.setValue(1.0)
    click(qtbot, w.generate_button)
    assert "1 LoRA" in w.queue_list.item(2).text()
    qtbot.waitUntil(lambda: sum(e.status == "done" for e in d.queue.history) == 3, timeout=120_000)
    none, zero, one = (iio.imread(e.out) for e in d.queue.history)
    assert np.array_equal(none, zero)  # strength 0 merges nothing: the same bits
    diff = np.abs(one.astype(int) - none.astype(int))
    print(f"LoRA at strength 1: mean |Δ| {diff.mean():.2f}, max {diff.max()} (0-255)")
    assert diff.mean() > 1.0
    sides = [_sidecar(e.out)["options"] for e in d.queue.history]
    assert [s["loras"] for s in sides] == [[], [f"{good}:0.0"], [f"{good}:1.0"]]
    # Reuse restores the LoRA list; ✕ removes it
    w.form.remove_lora(0)
    assert w.lora_rows == []
    w.history_list.setCurrentRow(0)  # the newest: strength 1
    click(qtbot, w.reuse_button)
    assert [(r.path, r.strength.value()) for r in w.lora_rows] == [(str(good), 1.0)]
    click(qtbot, w.lora_rows[0].remove)
    assert w.form.state.loras == () and w.lora_rows == []
    # only the DiT was read again for each LoRA change (not the text encoder and VAE), and back
    # without the LoRA the video is the first one bit for bit
    click(qtbot, w.generate_button)
    qtbot.waitUntil(lambda: sum(e.status == "done" for e in d.queue.history) == 4, timeout=120_000)
    assert np.array_equal(iio.imread(d.queue.history[-1].out), none)
    assert builds == [1] and relora == [(f"{good}:0.0",), (f"{good}:1.0",), ()]


def test_a_lora_of_the_wrong_shape_is_a_message_box_naming_the_tensor_before_any_job(
    make_desktop, tiny, lora_files, qtbot, home
):
    good, bad = lora_files
    d = make_desktop([tiny.official])
    w = d.window
    fill_form(w, qtbot, "refused", seed=1)
    w.form.add_lora(str(bad))
    click(qtbot, w.generate_button)
    err = w.last_error
    assert err.title == "Bad model" and w.error_box.isVisible()
    assert "bad.safetensors" in err.message
    assert "diffusion_model.blocks.1.ffn.0.lora_down.weight" in err.message
    assert d.queue.jobs == [] and d.queue.running is None and list(d.service.step_log) == []
    assert (
        not (home / "queue.json").exists()
        or json.loads((home / "queue.json").read_text())["jobs"] == []
    )
    w.error_box.close()
    # a vanished file, and a low-noise-expert LoRA on a one-DiT model, are refused the same way
    w.form.remove_lora(0)
    w.form.add_lora(str(good.with_name("gone.safetensors")))
    click(qtbot, w.generate_button)
    assert w.last_error.message.startswith("LoRA file not found") and d.queue.jobs == []
    w.form.remove_lora(0)
    w.form.add_lora(str(good))
    w.form.entry = replace(w.form.entry, variant="t2v-A14B")  # as an A14B entry shows it
    w.form.set_lora(0, expert="low")
    w._render(w.form.state)
    assert w.lora_rows[0].expert.isVisibleTo(w)
    assert w.lora_rows[0].expert.currentData() == "low"
    click(qtbot, w.generate_button)
    assert "low-noise expert" in w.last_error.message and d.queue.jobs == []


@pytest.mark.slow  # a GUI restart
def test_a_saved_queue_with_loras_survives_a_restart_and_runs_them(
    make_desktop, tiny, lora_files, qtbot, home
):
    from wan_desktop.ui.store import Job, JobStore

    good, _bad = lora_files
    d1 = make_desktop([tiny.official])
    w = d1.window
    click(qtbot, w.pause_button)
    fill_form(w, qtbot, "with a lora", seed=5, steps=2)
    w.form.add_lora(str(good), strength=0.5)
    click(qtbot, w.generate_button)
    saved = d1.queue.jobs[0]
    assert saved.options["loras"] == [f"{good}:0.5"] and saved.options["loras_low"] == []
    assert d1.shutdown(10_000)
    d1.window.close()
    # a job saved by a version without LoRAs / presets (no such keys) is queued behind it
    old = Job(
        id="old",
        request={
            "prompt": "old job",
            "width": 64,
            "height": 32,
            "frames": 9,
            "steps": 1,
            "seed": 2,
        },
        options={"model": str(tiny.official)},
        out=str(home / "outputs" / "old.mp4"),
    )
    JobStore(home).save_queue([*JobStore(home).load_queue(), old])

    d2 = make_desktop([tiny.official])
    assert [j.id for j in d2.queue.jobs] == [saved.id, "old"]
    assert list(d2.queue.jobs[0].options["loras"]) == [f"{good}:0.5"]
    qtbot.waitUntil(lambda: sum(e.status == "done" for e in d2.queue.history) == 2, timeout=90_000)
    first, second = d2.queue.history
    assert _sidecar(first.out)["options"]["loras"] == [f"{good}:0.5"]
    assert _sidecar(second.out)["options"]["loras"] == []
    d2.window.history_list.setCurrentRow(1)  # the LoRA job (the list is newest first)
    click(qtbot, d2.window.reuse_button)
    assert [(c.path, c.strength) for c in d2.window.form.state.loras] == [(str(good), 0.5)]


def test_tiny_vae_preview_every_step_at_video_size_with_fast_decode_and_fallback(
    make_desktop, tiny, qtbot, home, tmp_path
):
    tae21 = tmp_path / "taew2_1.safetensors"
    random_tae_file(tae21, z=16, patch=1, seed=1)
    tae22 = tmp_path / "taew2_2.safetensors"  # 48 latent channels: not this model's
    random_tae_file(tae22, z=48, patch=2, seed=2)
    d = make_desktop([tiny.official])
    w = d.window
    assert not w.tiny_vae_check.isEnabled()  # no decoder file yet

    def set_decoder(path: Path) -> None:  # through File → Settings…
        w.open_settings_dialog()
        w.settings_dialog.preview_edit.setText(str(path))
        w.settings_dialog.accept()

    previews = []
    d.queue.preview.connect(lambda _j, p: previews.append(p))
    # the wrong file: one warning, the linear preview every step (3 latent frames of 8×4)
    set_decoder(tae22)
    for seed in (1, 2):
        fill_form(w, qtbot, "linear preview", seed=seed, steps=2)
        click(qtbot, w.generate_button)
    qtbot.waitUntil(lambda: len(d.queue.history) == 2, timeout=90_000)
    assert [p.step for p in previews] == [1, 2, 1, 2]
    assert all(
        p.decoder == "linear"
        and len(p.frames) == 3
        and (p.frames[0].width(), p.frames[0].height()) == (8, 4)
        for p in previews
    )
    log = (home / "logs" / "wan-desktop.log").read_text()
    assert log.count("preview decoder not used") == 1
    assert "16-channel latents; this model makes" not in log and "decodes 48-channel" in log

    # taew2_1: a video-size preview each step (TAEHV: 8× up, 4× in time minus 3) + fast decode
    set_decoder(tae21)
    assert w.settings.preview_decoder == str(tae21) and w.tiny_vae_check.isEnabled()
    w.tiny_vae_check.setChecked(True)
    previews.clear()
    fill_form(w, qtbot, "linear preview", seed=1, steps=2)
    with qtbot.waitSignal(d.queue.finished, timeout=60_000) as sig:
        click(qtbot, w.generate_button)
    result = sig.args[1]
    assert [p.step for p in previews] == [1, 2]
    for p in previews:
        assert p.decoder == "tiny-vae" and p.fps == 16 and len(p.frames) == 9
        assert all((f.width(), f.height()) == (64, 32) for f in p.frames)
    a, b = (np.frombuffer(p.frames[4].constBits(), np.uint8) for p in previews)
    assert not np.array_equal(a, b)  # the x0 estimate moved between the steps
    assert "tiny VAE" in w.preview_player.view.toolTip()
    side = _sidecar(result.out)
    assert side["options"]["tiny_vae"] == str(tae21)
    assert side["model"]["tiny_vae"] == "taew2_1.safetensors"
    fast, full = iio.imread(result.out), iio.imread(d.queue.history[0].out)  # same seed
    assert fast.shape == full.shape == (9, 32, 64, 3) and not np.array_equal(fast, full)
    assert "tiny VAE" in w.history_list.item(0).text()


def test_i2v_from_a_dropped_first_frame_previews_each_step_and_records_the_image(
    make_desktop, tiny_i2v, qtbot, home, tmp_path
):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent, QImage

    d = make_desktop([tiny_i2v.official])
    w = d.window
    assert w.models[0].variant == "i2v-14B" and w.form.state.task == "i2v"
    assert w.first_frame.isVisible() and not w.last_frame.isVisible()
    img = tmp_path / "first.png"
    q = QImage(64, 32, QImage.Format.Format_RGB888)
    q.fill(Qt.GlobalColor.darkYellow)
    assert q.save(str(img))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(img))])
    w.first_frame.dropEvent(
        QDropEvent(
            QPointF(5, 5),
            Qt.DropAction.CopyAction,
            mime,
            Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier,
        )
    )
    assert w.form.state.image == str(img)
    fill_form(w, qtbot, "the field moves in the wind", seed=3, steps=2)
    previews = []
    d.queue.preview.connect(lambda _j, p: previews.append(p))
    with qtbot.waitSignal(d.queue.finished, timeout=90_000) as sig:
        click(qtbot, w.generate_button)
    job_id, result = sig.args
    assert [p.step for p in previews] == [1, 2] and _steps_of(d, job_id) == [1, 2]
    assert all(
        len(p.frames) == 3 and (p.frames[0].width(), p.frames[0].height()) == (8, 4)
        for p in previews
    )
    assert iio.imread(result.out).shape == (9, 32, 64, 3)
    side = _sidecar(result.out)
    copy = home / "outputs" / "inputs" / job_id / "image.png"  # the job's own copy
    assert side["request"]["task"] == "i2v" and side["request"]["image"] == str(copy)
    assert copy.read_bytes() == img.read_bytes()
    assert side["variant"] == "i2v-14B"

    # the original image goes: Reuse settings names the copy, and the job runs again from it
    img.unlink()
    w.form.update(image="")
    w.history_list.setCurrentRow(0)
    click(qtbot, w.reuse_button)
    assert w.form.state.image == str(copy)
    with qtbot.waitSignal(d.queue.finished, timeout=90_000) as sig:
        click(qtbot, w.generate_button)
    again_id, again = sig.args
    assert np.array_equal(iio.imread(again.out), iio.imread(result.out))  # the same video
    assert _sidecar(again.out)["request"]["image"] == str(
        home / "outputs" / "inputs" / again_id / "image.png"
    )


def test_a14b_loras_go_to_the_expert_chosen_per_lora_and_fast_sets_the_boundary(
    make_desktop, tiny_a14b, lora_files, qtbot, home, tmp_path
):
    good, bad = lora_files
    low = save(tmp_path, "low.safetensors", official_layout(lowrank(9)))
    d = make_desktop([tiny_a14b.official])
    w = d.window
    assert w.models[0].variant == "t2v-A14B" and w.form.experts == 2
    fill_form(w, qtbot, "two experts", seed=4, steps=4)
    w.speed_combo.activated.emit(w.speed_combo.findData("fast"))
    w.form.add_lora(str(good))
    w.form.add_lora(str(bad))
    assert all(r.expert.isVisible() for r in w.lora_rows)  # A14B: a per-LoRA expert choice
    w.lora_rows[1].expert.setCurrentIndex(w.lora_rows[1].expert.findData("low"))
    assert w.form.state.loras[1].expert == "low"
    # the wrong LoRA on the low-noise expert is checked against that expert's own header
    click(qtbot, w.generate_button)
    assert "blocks.1.ffn.0.lora_down.weight" in w.last_error.message and d.queue.jobs == []
    w.error_box.close()
    click(qtbot, w.lora_rows[1].remove)
    w.form.add_lora(str(low), strength=0.5)
    w.lora_rows[1].expert.setCurrentIndex(1)
    with qtbot.waitSignal(d.queue.finished, timeout=90_000) as sig:
        click(qtbot, w.generate_button)
    job_id, result = sig.args
    assert _steps_of(d, job_id) == [1, 2, 3, 4]
    side = _sidecar(result.out)
    assert side["options"]["loras"] == [f"{good}:1.0"]
    assert side["options"]["loras_low"] == [f"{low}:0.5"]
    # lightx2v's Wan2.2 recipe: the low-noise expert from step 2 (of 4), no CFG on either
    assert side["request"]["boundary_step"] == 2 and side["request"]["guidance_low"] == 1.0
    w.form.update(loras=())
    w.history_list.setCurrentRow(0)
    click(qtbot, w.reuse_button)
    assert [(c.path, c.strength, c.expert) for c in w.form.state.loras] == [
        (str(good), 1.0, "high"),
        (str(low), 0.5, "low"),
    ]


def test_lora_choices_round_trip_through_run_options_strings():
    from wan_desktop.ui.viewmodels import LoraChoice, lora_options, loras_from_options

    choices = (
        LoraChoice(path="/m/a.safetensors", strength=1.0),
        LoraChoice(path="C:\\loras\\b.safetensors", strength=-0.25, expert="low"),
        LoraChoice(path="/m/c:d.safetensors", strength=0.1 + 0.2, expert="high"),
    )
    high, low = lora_options(choices)
    assert high == ("/m/a.safetensors:1.0", f"/m/c:d.safetensors:{0.1 + 0.2!r}")
    assert low == ("C:\\loras\\b.safetensors:-0.25",)
    back = loras_from_options({"loras": list(high), "loras_low": list(low)})
    assert back == (choices[0], choices[2], choices[1])  # high first, then low; floats exact
    assert loras_from_options({"model": "/m"}) == ()  # a job saved before LoRAs existed


def test_a_failing_tiny_vae_preview_falls_back_to_the_linear_map_and_the_job_finishes(
    make_desktop, tiny, qtbot, home, tmp_path, monkeypatch
):
    import torch
    from wan_desktop.engines.preview import TaePreview

    tae = tmp_path / "taew2_1.safetensors"
    random_tae_file(tae, z=16, patch=1, seed=1)
    real = TaePreview.__call__
    calls = []

    def oom_on_second(self, latents):  # a CPU cannot run out of VRAM: raise what CUDA raises
        calls.append(1)
        if len(calls) == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real(self, latents)

    monkeypatch.setattr(TaePreview, "__call__", oom_on_second)
    d = make_desktop([tiny.official])
    d.service.set_preview_decoder(str(tae))
    fill_form(d.window, qtbot, "preview trouble", seed=1, steps=3)
    previews = []
    d.queue.preview.connect(lambda _j, p: previews.append((p.step, p.decoder, len(p.frames))))
    with qtbot.waitSignal(d.queue.finished, timeout=60_000):
        click(qtbot, d.window.generate_button)
    assert previews == [(1, "tiny-vae", 9), (2, "linear", 3), (3, "linear", 3)]
    assert len(calls) == 2  # not retried within the job
    assert "tiny-VAE preview failed" in (home / "logs" / "wan-desktop.log").read_text()
