"""Models whose parts are separate files, in the app: a GGUF release the model manager installed
(DiT, umT5 GGUF, VAE and tokenizer each from its own repo folder) is one model in the picker,
carrying its parts; a job made from it runs with them and keeps them across a restart. A ComfyUI
models folder's diffusion-model file is paired with the VAE, umT5 and CLIP vision files its variant
needs; a part that is missing, or that two files could each be, is named in the could-not-load
list."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.fixtures_models import official_dit_state
from tests.gguf_files import write_gguf
from tests.gui.conftest import click, fill_form
from tests.split_installs import comfy_folder, install_release
from wan_desktop.model_manager import ModelManager

pytest.importorskip("gguf")

RELEASE = "gguf-wan2.1-t2v-14b-q8_0"


def _parts(options: dict) -> dict:
    return {k: options.get(k) for k in ("vae", "text_encoder", "tokenizer", "clip")}


@pytest.mark.slow  # two app starts, and the kept job runs again
def test_a_gguf_install_is_one_model_whose_job_runs_with_its_parts_after_a_restart(
    make_desktop, tiny, qtbot, home, tmp_path
):
    downloads = tmp_path / "downloads"  # WAN_DESKTOP_MODELS: the app scans it by itself
    model = install_release(RELEASE, downloads, tiny)
    args = ModelManager(downloads).get_installed(RELEASE).generate_args()
    want = {k: str(args[k]) for k in ("vae", "text_encoder", "tokenizer")} | {"clip": None}

    d = make_desktop([])
    w = d.window
    # one model for the whole install (not one per repo folder), usable, with every part
    assert [(m.path, m.format, m.ok) for m in w.models] == [(str(model), "gguf", True)]
    assert {k: v or None for k, v in w.models[0].parts.items()} | {"clip": None} == want
    assert not w.unusable_button.isVisibleTo(w)
    assert w.form.state.model == str(model)

    done = []
    d.queue.progress.connect(lambda p: done.append(p.step) if p.step else None)
    fill_form(w, qtbot, "a fox in the snow", seed=7, steps=40)
    click(qtbot, w.generate_button)
    qtbot.waitUntil(lambda: bool(done), timeout=60_000)  # it runs: the parts were found
    job_id = d.queue.running
    w.close()
    click(qtbot, w.close_question.choices["keep"])  # stop it, keep it queued
    assert d.shutdown(10_000)
    saved = json.loads((home / "queue.json").read_text())["jobs"]
    assert [j["id"] for j in saved] == [job_id]
    assert _parts(saved[0]["options"]) == want  # the queued job carries the parts

    d2 = make_desktop([], wait_models=False)
    with qtbot.waitSignal(d2.queue.finished, timeout=120_000) as sig:
        pass
    assert sig.args[0] == job_id
    entry = d2.queue.history[-1]
    assert entry.status == "done"
    assert _parts(json.loads((home / "history.json").read_text())["entries"][-1]["options"]) == (
        want
    )
    # Reuse settings: the next job runs the same files
    w2 = d2.window
    qtbot.waitUntil(lambda: bool(w2.models), timeout=30_000)
    w2.history_list.setCurrentRow(0)
    click(qtbot, w2.reuse_button)
    assert _parts(w2.form.make_job(w2.settings).options) == want


def test_the_file_first_run_adds_is_the_install_with_its_parts_clip_too(tiny_i2v, tmp_path):
    """The first-run dialog adds an install's --model file to the picker's folders: scanned on
    its own, it is the same entry as in the models folder, parts and all (a Wan2.1 I2V GGUF
    release's CLIP vision from Comfy-Org's repo folder)."""
    from wan_desktop.ui.library import scan

    downloads = tmp_path / "downloads"
    model = install_release("gguf-wan2.1-i2v-14b-480p-q8_0", downloads, tiny_i2v)
    args = ModelManager(downloads).get_installed("gguf-wan2.1-i2v-14b-480p-q8_0").generate_args()
    want = {k: str(v) for k, v in args.items() if k != "model"}
    assert set(want) == {"vae", "text_encoder", "tokenizer", "clip"}
    (alone,) = scan([str(model)])
    (listed,) = scan([str(downloads)])
    assert alone == listed
    assert alone.ok and alone.variant == "i2v-14B" and alone.parts == want


def test_a_comfyui_folder_pairs_the_parts_the_variant_needs(tiny_i2v, tmp_path):
    from wan_desktop.ui.library import scan

    models = tmp_path / "ComfyUI" / "models"
    dit = comfy_folder(tiny_i2v, models, dit_folder="unet")
    # a Wan2.1 I2V needs the z=16 VAE, a umT5 of its text width and the CLIP vision file; a
    # second, non-Wan file in each folder is not a candidate
    shutil.copy(tiny_i2v.comfy_clip, models / "vae" / "not_a_vae.safetensors")
    shutil.copy(tiny_i2v.comfy_vae, models / "text_encoders" / "not_a_t5.safetensors")
    (entry,) = scan([str(models.parent)])
    assert entry.ok, entry.reason
    assert (entry.path, entry.format, entry.variant) == (str(dit), "gguf", "i2v-14B")
    assert entry.precision == "Q8_0" and ", Q8_0, " in entry.label  # its block type, not fp32
    assert entry.parts == {
        "vae": str(models / "vae" / "wan_2.1_vae.safetensors"),
        "text_encoder": str(models / "text_encoders" / "umt5_xxl_fp16.safetensors"),
        "clip": str(models / "clip_vision" / "clip_vision_h.safetensors"),
    }


def test_a_missing_or_ambiguous_part_is_named_in_the_could_not_load_list(
    make_desktop, tiny_i2v, qtbot, tmp_path
):
    models = tmp_path / "ComfyUI" / "models"
    comfy_folder(tiny_i2v, models, dit_folder="diffusion_models")
    (models / "clip_vision" / "clip_vision_h.safetensors").unlink()
    vae = models / "vae" / "wan_2.1_vae.safetensors"
    for name in ("my_vae_a.safetensors", "my_vae_b.safetensors"):  # no ComfyUI name: either one
        shutil.copy(vae, models / "vae" / name)
    vae.unlink()

    w = make_desktop([models.parent]).window
    assert w.models == () or not any(m.ok for m in w.models)
    assert w.unusable_button.isVisibleTo(w)
    tip = w.unusable_button.toolTip()
    assert "wan2.1-i2v-14B-Q8_0.gguf: missing " in tip
    assert "Wan2.1 VAE (ambiguous: 2 files fit: my_vae_a.safetensors, my_vae_b.safetensors)" in tip
    assert "CLIP vision (none in models/clip_vision)" in tip
    assert "Error" not in tip and "Traceback" not in tip


def test_an_unfinished_install_says_so_in_the_could_not_load_list(tiny, tmp_path):
    from wan_desktop.ui.library import scan

    downloads = tmp_path / "downloads"
    install_release(RELEASE, downloads, tiny)
    index = json.loads((downloads / "index.json").read_text())
    entry = index["models"][RELEASE]
    entry["complete"] = False
    key = next(k for k, f in entry["files"].items() if f["role"] == "dit")
    entry["files"][key]["state"] = "pending"
    (downloads / key).unlink()  # not downloaded yet
    (downloads / "index.json").write_text(json.dumps(index))
    entries = scan([str(downloads)])
    assert [e.error for e in entries if e.path.endswith(".gguf")] == [
        f"download of {RELEASE} not complete (1 of 4 files to fetch or check): resume it with "
        "File → Download models…"
    ]


@pytest.mark.slow  # a tiny TI2V-5B is built
def test_each_diffusion_model_gets_the_vae_of_its_latent_width(tiny_i2v, tiny_ti2v, tmp_path):
    """Wan2.1 I2V and Wan2.2 TI2V GGUFs in one ComfyUI folder with both VAEs: each is paired
    with its own (z 16 / z 48), whatever the files are called."""
    from wan_desktop.ui.library import scan

    models = tmp_path / "ComfyUI" / "models"
    i2v = comfy_folder(tiny_i2v, models)
    (models / "vae" / "wan_2.1_vae.safetensors").rename(models / "vae" / "vae_a.safetensors")
    ti2v = models / "unet" / "wan2.2-ti2v-5B-Q8_0.gguf"
    write_gguf(ti2v, official_dit_state(tiny_ti2v.refs["transformer"]), "Q8_0")
    shutil.copy(tiny_ti2v.comfy_vae, models / "vae" / "vae_b.safetensors")
    entries = {e.path: e for e in scan([str(models.parent)])}
    assert entries[str(i2v)].ok and entries[str(ti2v)].ok, [e.reason for e in entries.values()]
    assert entries[str(i2v)].vae == str(models / "vae" / "vae_a.safetensors")
    assert entries[str(ti2v)].vae == str(models / "vae" / "vae_b.safetensors")
    assert entries[str(ti2v)].variant == "ti2v-5B" and entries[str(ti2v)].clip == ""
