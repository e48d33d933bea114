"""The first-run model dialog (catalog, what fits this GPU, a real download from a local fake Hub
with progress, Add folder…) and the engines dialog."""

from __future__ import annotations

from pathlib import Path

from tests.gui.conftest import click


def test_first_run_opens_the_model_dialog_and_add_folder_finds_the_model(
    make_desktop, tiny, qtbot, home, monkeypatch
):
    from PySide6.QtWidgets import QFileDialog

    from wan_desktop.catalog import CATALOG
    from wan_desktop.model_manager import detect_vram_gb

    d = make_desktop([], first_run=True)
    qtbot.waitUntil(
        lambda: d.models_dialog is not None and d.models_dialog.isVisible(), timeout=10_000
    )
    dlg = d.models_dialog
    assert dlg.table.rowCount() == len(CATALOG)
    titles = {dlg.table.item(i, 0).text() for i in range(dlg.table.rowCount())}
    assert titles == {r.title for r in CATALOG.values()}
    sizes = [dlg.table.item(i, 2).text() for i in range(dlg.table.rowCount())]
    assert all(s.endswith(" GB") for s in sizes)
    if detect_vram_gb() is None:  # this CPU machine: said plainly, in the label and every row
        assert "CPU only" in dlg.gpu_label.text()
        assert {dlg.table.item(i, 4).text() for i in range(dlg.table.rowCount())} == {"CPU only"}

    # "Add folder…" with models the user already has
    monkeypatch.setattr(
        QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(tiny.official))
    )
    with qtbot.waitSignal(d.window.models_changed, timeout=30_000):
        click(qtbot, dlg.add_folder_button)
    assert not dlg.isVisible()
    qtbot.waitUntil(lambda: d.window.form.state.model == str(tiny.official), timeout=10_000)
    from wan_desktop.ui.settings import load_settings

    assert load_settings().model_dirs == (str(tiny.official),)  # remembered for the next start


def test_download_from_the_dialog_with_progress_then_it_is_installed(qtbot, hub, mm, home):
    from wan_desktop.ui.first_run import ModelsDialog
    from wan_desktop.ui.settings import AppSettings

    dlg = ModelsDialog(AppSettings(), manager=mm, vram_gb=None)
    qtbot.addWidget(dlg)
    dlg.show()
    names = [st.release.name for st in dlg.rows]
    assert sorted(names) == ["tiny-comfy-a", "tiny-comfy-b", "tiny-official"]
    dlg.select("tiny-official")
    values = []
    dlg.progress.valueChanged.connect(values.append)
    with qtbot.waitSignal(dlg.folder_added, timeout=60_000) as sig:
        click(qtbot, dlg.download_button)
    folder = Path(sig.args[0])
    assert folder == mm.models_dir / "test-org--Tiny-Wan2.1-T2V"
    assert (folder / "diffusion_pytorch_model.safetensors").is_file()
    assert dlg.installed.complete
    # progress moved forward in several steps and ended full
    assert len(values) >= 3 and values == sorted(values)
    assert values[-1] == dlg.progress.maximum() > 0
    row = next(i for i, st in enumerate(dlg.rows) if st.release.name == "tiny-official")
    assert dlg.table.item(row, 5).text() == "installed"
    assert dlg.download_button.isEnabled() and not dlg.cancel_button.isEnabled()
    assert "Installed tiny-official" in dlg.status.text()


def test_download_error_is_shown_with_its_remedy(qtbot, mm, home, monkeypatch):
    from wan_desktop.ui.first_run import ModelsDialog
    from wan_desktop.ui.settings import AppSettings

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: the manager refuses with a remedy
    dlg = ModelsDialog(AppSettings(), manager=mm, vram_gb=12.0)
    qtbot.addWidget(dlg)
    dlg.select("tiny-official")
    click(qtbot, dlg.download_button)
    qtbot.waitUntil(lambda: dlg.error is not None, timeout=30_000)
    assert dlg.error.title == "Download failed" and "offline" in dlg.error.message
    assert "HF_HUB_OFFLINE" in dlg.error.remedy and dlg.download_button.isEnabled()
    fits = {dlg.table.item(i, 4).text() for i in range(dlg.table.rowCount())}
    assert fits and all(f.startswith(("fits", "★", "too big")) for f in fits)


def test_engines_dialog_lists_what_exists_and_never_breaks_the_window(
    make_desktop, tiny, qtbot, home
):
    d = make_desktop([tiny.official])
    w = d.window
    w.engines_action.trigger()
    dlg = w.engines_dialog
    assert dlg.isVisible() and dlg.table.rowCount() == 0  # no engine built yet
    assert "t2v-1.3B" in dlg.findChildren(type(dlg.stage))[0].text()
    dlg.close()
    # no engine for this model: only PyTorch is offered
    assert [w.backend_combo.itemData(i) for i in range(w.backend_combo.count())] == ["torch"]


def _engine_folder(
    root: Path,
    name: str,
    variant,
    records,
    *,
    runtime="onnxruntime",
    version=None,
    tamper=False,
    cc=(),
):
    """An engine folder written with the cache's own manifest writer, over small stand-in files
    (a real export takes ~30 s per graph on these CPUs; the listing reads only the manifest,
    the files' presence and sizes)."""
    from wan_desktop.engines.cache import EngineEntry, Manifest, sha256_file, write_manifest
    from wan_desktop.ui.engine_folders import installed_runtime_version

    folder = root / name
    folder.mkdir(parents=True)
    entries = []
    for comp in ("t5", "dit", "vae_decoder_first", "vae_decoder_step"):
        f = folder / (f"{comp}.onnx" if runtime == "onnxruntime" else f"{comp}.engine")
        f.write_bytes(bytes(range(256)) * 4)
        entries.append(
            EngineEntry(
                component=comp,
                file=f.name,
                runtime=runtime,
                runtime_version=version or installed_runtime_version("onnxruntime") or "1.0",
                precision="fp32",
                spec={},
                sha256=sha256_file(f),
                size=f.stat().st_size,
                compute_capabilities=cc,
                exact_runtime=runtime != "onnxruntime",
                profiles=({"name": "832x480x81", "dims": {}},) if runtime != "onnxruntime" else (),
            )
        )
        if tamper and comp == "dit":
            f.write_bytes(b"changed")
    write_manifest(
        folder,
        Manifest(
            variant=variant,
            entries=tuple(entries),
            model={"path": "x", "files": records},
            rebuild=f"wan-desktop export --out {folder}",
        ),
    )
    return folder


def test_engines_are_listed_with_the_caches_verdict_and_offered_as_a_backend(
    make_desktop, tiny, qtbot, home, tmp_path
):
    from dataclasses import replace

    from wan_desktop.engines.cache import model_file_records
    from wan_desktop.ui.settings import load_settings, save_settings

    from wan_desktop.checkpoints.detect import detect_model

    files = detect_model(tiny.official)
    paths = [p for c in (*files.experts, files.vae, files.text_encoder) for p in c.files]
    records = model_file_records(paths, hash_files=False)
    root = tmp_path / "engines"
    good = _engine_folder(root, "a-good", files.variant, records)
    _engine_folder(root, "b-changed", files.variant, records, tamper=True)
    _engine_folder(
        root,
        "c-other-model",
        files.variant,
        [{"name": "other.safetensors", "size": 1, "sha256": "ab" * 32}],
    )
    _engine_folder(
        root,
        "d-tensorrt",
        files.variant,
        records,
        runtime="tensorrt_rtx",
        version="1.7.1",
        cc=("8.9",),
    )
    (root / "e-broken").mkdir()
    (root / "e-broken" / "manifest.json").write_text('{"format": "wan-desktop-engines", "entr')
    save_settings(replace(load_settings(), engines_dir=str(root)))

    d = make_desktop([tiny.official])
    w = d.window
    w.engines_action.trigger()
    dlg = w.engines_dialog
    verdict = {
        dlg.table.item(i, 0).text(): dlg.table.item(i, 5).text()
        for i in range(dlg.table.rowCount())
    }
    assert verdict["a-good"] == "yes"
    assert "changed since it was made" in verdict["b-changed"]
    assert "other model files" in verdict["c-other-model"]
    assert (
        "needs an NVIDIA GPU" in verdict["d-tensorrt"] or "not installed" in verdict["d-tensorrt"]
    )
    assert verdict["e-broken"].startswith("no — ")
    assert dlg.table.item(0, 1).text() == "t5, dit, vae_decoder_first, vae_decoder_step"
    dlg.close()

    # only the folder that fits is offered, and a job on it carries that folder
    backends = [w.backend_combo.itemData(i) for i in range(w.backend_combo.count())]
    assert backends == ["torch", "onnxruntime"]
    w.backend_combo.setCurrentIndex(1)
    assert w.form.state.backend == "onnxruntime" and w.form.state.engines == str(good)
    qtbot.keyClicks(w.prompt_edit, "a cat")
    job = w.form.make_job(w.settings)
    assert job.options["backend"] == "onnxruntime" and job.options["engines"] == str(good)


def test_an_engine_build_can_be_cancelled_and_leaves_nothing(
    make_desktop, tiny, qtbot, home, tmp_path
):
    from dataclasses import replace

    from wan_desktop.ui.engine_folders import export_available
    from wan_desktop.ui.settings import load_settings, save_settings

    if not export_available():
        import pytest

        pytest.skip("the export extra is not installed")
    root = tmp_path / "engines"
    save_settings(replace(load_settings(), engines_dir=str(root)))
    d = make_desktop([tiny.official])
    d.window.engines_action.trigger()
    dlg = d.window.engines_dialog
    assert dlg.build_button.isEnabled()
    job = dlg.make_job()
    assert job.model == str(tiny.official) and job.components == ("t5", "dit", "vae")
    assert job.presets == ("832x480x81", "480x832x81") and job.engine == "onnx"
    # the build goes to the GPU service's queue; cancelled at once, it never starts
    with qtbot.waitSignal(d.service.export_cancelled, timeout=60_000) as sig:
        click(qtbot, dlg.build_button)
        build_id = dlg.build_id
        assert build_id is not None and not dlg.build_button.isEnabled()
        click(qtbot, dlg.cancel_button)
    assert sig.args == [build_id]
    qtbot.waitUntil(lambda: dlg.build_id is None, timeout=10_000)
    assert dlg.stage.text() == "Cancelled."
    assert sorted(p.name for p in root.iterdir()) == []  # no folder, no partial one
    assert dlg.build_button.isEnabled() and dlg.table.rowCount() == 0


def test_settings_dialog_saves_folders_and_device_and_jobs_follow_them(
    make_desktop, tiny, qtbot, home, tmp_path
):
    from PySide6.QtWidgets import QDialogButtonBox
    from wan_desktop.ui.settings import load_settings

    d = make_desktop([tiny.official])
    w = d.window
    w.settings_action.trigger()
    dlg = w.settings_dialog
    assert [dlg.model_list.item(i).text() for i in range(dlg.model_list.count())] == [
        str(tiny.official)
    ]
    out2 = tmp_path / "my-videos"
    dlg.outputs_edit.setText(str(out2))
    dlg.device_combo.setCurrentIndex(dlg.device_combo.findData("cpu"))
    dlg.dtype_combo.setCurrentIndex(dlg.dtype_combo.findData("float32"))
    with qtbot.waitSignal(w.models_changed, timeout=30_000):  # saving rescans the folders
        click(qtbot, dlg.buttons.button(QDialogButtonBox.StandardButton.Save))
    saved = load_settings()
    assert (saved.outputs_dir, saved.device, saved.dtype) == (str(out2), "cpu", "float32")
    assert w.settings == saved
    qtbot.keyClicks(w.prompt_edit, "a cat")
    job = w.form.make_job(w.settings)
    assert Path(job.out).parent == out2 and job.options["device"] == "cpu"
    assert job.options["dtype"] == "float32"
