"""Engine builds run in the GPU service's queue (STYLE rule 8: one GPU thread): an ONNX export,
FP8/INT8 calibration and a TensorRT build touch CUDA, so they run on the service's thread in FIFO
order with the generation jobs, never beside one. The builds here are tiny: the umT5 graph of the
tiny test model, exported to ONNX (a few seconds on a CPU).

Every service signal is recorded where it is emitted (a direct connection runs the slot on the
emitting thread), with its thread and time: a generation's steps and a build's progress are
emitted from inside the work itself, so the records say which thread did the work, and when."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from tests.gui.conftest import click, fill_form

pytest.importorskip("PySide6")
from PySide6.QtCore import QObject, Qt, QThread, Slot

SIGNALS = (
    "job_started",
    "step_done",
    "job_finished",
    "job_failed",
    "job_cancelled",
    "export_started",
    "export_progress",
    "export_log",
    "export_finished",
    "export_failed",
    "export_cancelled",
)
BEGIN = {"job_started", "export_started"}
END = {
    "job_finished",
    "job_failed",
    "job_cancelled",
    "export_finished",
    "export_failed",
    "export_cancelled",
}
WAITING = "Waiting for the running job to finish…"
LONG = 80  # steps of a generation that is still running while the test queues more work


@dataclass(frozen=True)
class Record:
    signal: str
    id: str
    args: tuple
    thread: int  # threading.get_ident() of the emitting thread
    on_service_thread: bool  # QThread.currentThread() is the thread the service lives on
    t: float  # time.monotonic()


class Timeline:
    """Every signal of ``service`` with the thread that emitted it and when."""

    def __init__(self, service) -> None:
        self.service = service
        self.records: list[Record] = []
        for name in SIGNALS:
            getattr(service, name).connect(
                partial(self._record, name), Qt.ConnectionType.DirectConnection
            )

    def _record(self, signal: str, *args) -> None:
        self.records.append(
            Record(
                signal,
                args[0],
                args[1:],
                threading.get_ident(),
                QThread.currentThread() is self.service.thread(),
                time.monotonic(),
            )
        )

    def has(self, signal: str, id_: str) -> bool:
        return any(r.signal == signal and r.id == id_ for r in self.records)

    def bounds(self) -> list[tuple[str, str]]:
        """(signal, id) of every start and end, in the order they happened."""
        return [(r.signal, r.id) for r in self.records if r.signal in BEGIN | END]

    def span(self, id_: str) -> tuple[float, float]:
        ts = [r.t for r in self.records if r.id == id_ and r.signal in BEGIN | END]
        return min(ts), max(ts)


def _engines_root(tmp_path) -> Path:
    from dataclasses import replace

    from wan_desktop.ui.settings import load_settings, save_settings

    root = tmp_path / "engines"
    save_settings(replace(load_settings(), engines_dir=str(root)))
    return root


def _t5_export(out: Path, model: Path):
    from wan_desktop.export.job import ExportJob

    return ExportJob(out=str(out), model=str(model), components=("t5",), precision="fp32")


def _gen_job(model: Path, out_dir: Path, *, steps: int, seed: int):
    from wan_desktop.ui.store import Job, new_job_id

    from wan_desktop.options import RunOptions
    from wan_desktop.request import GenerationRequest

    job_id = new_job_id()
    request = GenerationRequest(
        prompt=f"job {seed}", width=64, height=32, frames=9, steps=steps, seed=seed
    )
    options = RunOptions(model=str(model), device="cpu", dtype="float32")
    return Job(
        id=job_id,
        request=request.to_dict(),
        options=options.to_dict(),
        out=str(out_dir / f"{job_id}.mp4"),
    )


@pytest.fixture
def gpu(qtbot, home):
    """The GPU service alone on its QThread, as desktop.py sets it up (no window, no queue)."""
    pytest.importorskip("onnx")
    from wan_desktop.ui.service import GpuService

    thread = QThread()
    thread.setObjectName("gpu")
    service = GpuService(preview_interval_s=0.0)
    service.moveToThread(thread)
    thread.start()
    yield service
    service.cancel_all()
    thread.quit()
    assert thread.wait(60_000), "the GPU thread did not stop"


@pytest.mark.slow
def test_builds_and_generations_run_one_at_a_time_in_submission_order_on_the_gpu_thread(
    gpu, tiny, qtbot, tmp_path
):
    service = gpu
    tl = Timeline(service)
    gen1 = _gen_job(tiny.official, tmp_path, steps=LONG, seed=1)
    gen2 = _gen_job(tiny.official, tmp_path, steps=2, seed=2)
    built, dropped = tmp_path / "engines" / "t5", tmp_path / "engines" / "never"

    service.submit(gen1)
    qtbot.waitUntil(lambda: tl.has("step_done", gen1.id), timeout=60_000)
    t_build_queued = time.monotonic()
    service.submit_export("build", _t5_export(built, tiny.official))  # queued behind gen1
    qtbot.waitUntil(lambda: tl.has("export_started", "build"), timeout=60_000)
    t_gen2_queued = time.monotonic()
    service.submit(gen2)  # queued during the build
    service.cancel("dropped")  # cancelled while it waits behind gen2: never starts
    service.submit_export("dropped", _t5_export(dropped, tiny.official))
    qtbot.waitUntil(lambda: tl.has("export_cancelled", "dropped"), timeout=120_000)

    # FIFO over both kinds of work (two queued signals into one thread keep their order)
    assert tl.bounds() == [
        ("job_started", gen1.id),
        ("job_finished", gen1.id),
        ("export_started", "build"),
        ("export_finished", "build"),
        ("job_started", gen2.id),
        ("job_finished", gen2.id),
        ("export_cancelled", "dropped"),
    ]
    g1, b, g2 = tl.span(gen1.id), tl.span("build"), tl.span(gen2.id)
    assert g1[0] < t_build_queued < g1[1]  # the build was queued while gen1 ran
    assert b[0] < t_gen2_queued < b[1]  # gen2 was queued while the build ran
    assert g1[1] <= b[0] and b[1] <= g2[0]  # never two at once
    # the work itself ran inside those spans, all of it on the service's thread
    steps = [r for r in tl.records if r.signal == "step_done"]
    assert [r.args[0] for r in steps if r.id == gen1.id] == list(range(1, LONG + 1))
    assert all(tl.span(r.id)[0] <= r.t <= tl.span(r.id)[1] for r in steps)
    build_work = [r for r in tl.records if r.signal in ("export_progress", "export_log")]
    assert next(r.args[0] for r in build_work if r.signal == "export_progress") == "t5"
    assert all(r.id == "build" and b[0] <= r.t <= b[1] for r in build_work)
    assert all(r.on_service_thread for r in tl.records)
    assert len({r.thread for r in tl.records}) == 1
    assert tl.records[0].thread != threading.get_ident()  # not the GUI (test) thread
    # before the build the service let go of gen1's components: gen2, with the same options,
    # had to build them again (without a build between them they would have been reused)
    assert service._cache.builds == 2
    assert sorted(p.name for p in built.iterdir()) == ["manifest.json", "t5.onnx", "tokenizer"]
    assert not dropped.exists() and Path(gen2.out).is_file()


def _open_engines_dialog(d, *, components=("t5",), precision="fp32"):
    w = d.window
    w.engines_action.trigger()
    dlg = w.engines_dialog
    for c, box in dlg.component_boxes.items():
        box.setChecked(c in components)
    dlg.precision_combo.setCurrentText(precision)
    dlg.kind_combo.setCurrentIndex(dlg.kind_combo.findData("onnx"))
    assert dlg.build_button.isEnabled()
    return dlg


class DialogView(QObject):
    """What the dialog shows after each build signal it handled: a QObject on the GUI thread
    connected after the dialog, so its slot runs right after the dialog's own for each signal."""

    def __init__(self, dlg, service) -> None:
        super().__init__()
        self.dlg = dlg
        self.progress: list[tuple[str, float, str, int]] = []  # stage, fraction, label, bar
        self.logs: list[str] = []
        service.export_progress.connect(self.on_progress)
        service.export_log.connect(self.on_log)

    @Slot(str, str, float)
    def on_progress(self, build_id: str, stage: str, fraction: float) -> None:
        self.progress.append((stage, fraction, self.dlg.stage.text(), self.dlg.progress.value()))

    @Slot(str, str)
    def on_log(self, build_id: str, line: str) -> None:
        self.logs.append(line)


@pytest.mark.slow
def test_the_dialog_waits_for_the_running_generation_then_shows_progress_and_lists_the_folder(
    make_desktop, tiny, qtbot, home, tmp_path
):
    pytest.importorskip("onnx")
    root = _engines_root(tmp_path)
    d = make_desktop([tiny.official])
    w = d.window
    tl = Timeline(d.service)
    fill_form(w, qtbot, "a long run", seed=5, steps=LONG)
    click(qtbot, w.generate_button)
    gen_id = d.queue.running
    qtbot.waitUntil(lambda: tl.has("step_done", gen_id), timeout=60_000)

    dlg = _open_engines_dialog(d)
    view = DialogView(dlg, d.service)
    click(qtbot, dlg.build_button)
    build_id = dlg.build_id
    # queued behind the generation: the dialog says so and stays usable (Cancel works)
    assert build_id is not None and not dlg.started and dlg.stage.text() == WAITING
    assert dlg.cancel_button.isEnabled() and not dlg.build_button.isEnabled()
    assert d.queue.running == gen_id and not tl.has("job_finished", gen_id)
    qtbot.waitUntil(lambda: dlg.build_id is None, timeout=120_000)

    out = root / f"{tiny.official.name}-onnx-fp32"
    finished = [r.args for r in tl.records if r.signal == "export_finished"]
    assert finished == [(str(out),)] and dlg.result_path == out
    assert tl.bounds() == [
        ("job_started", gen_id),
        ("job_finished", gen_id),
        ("export_started", build_id),
        ("export_finished", build_id),
    ]
    assert d.queue.history[-1].id == gen_id and d.queue.history[-1].status == "done"
    # the dialog showed every stage the build reported, with its fraction on the bar
    emitted = [r.args for r in tl.records if r.signal == "export_progress"]
    assert [(s, f) for s, f, _, _ in view.progress] == emitted
    assert emitted[0] == ("t5", 0.0) and emitted[-1] == ("done", 1.0)
    assert all(text == s and bar == round(f * 1000) for s, f, text, bar in view.progress)
    assert dlg.stage.text() == f"Built: {out}" and dlg.progress.value() == 1000
    log_text = dlg.log_view.toPlainText().splitlines()
    assert log_text == view.logs and log_text[0].startswith("t5.onnx: ")
    assert log_text[-1].startswith(f"engines in {out} (")
    # the finished folder is in the list; a T5 alone is not enough for a run (the DiT and the
    # VAE decoder load from the folder too), and the list says so
    assert [dlg.table.item(i, 0).text() for i in range(dlg.table.rowCount())] == [out.name]
    assert dlg.table.item(0, 1).text() == "t5"
    fits = dlg.table.item(0, 5).text()
    assert fits.startswith("no — it has no dit, vae_decoder_first, vae_decoder_step: ")
    assert dlg.build_button.isEnabled() and not dlg.cancel_button.isEnabled()


def test_a_build_waiting_for_the_generation_can_be_cancelled_and_never_starts(
    make_desktop, tiny, qtbot, home, tmp_path
):
    pytest.importorskip("onnx")
    root = _engines_root(tmp_path)
    d = make_desktop([tiny.official])
    w = d.window
    tl = Timeline(d.service)
    fill_form(w, qtbot, "a long run", seed=6, steps=LONG)
    click(qtbot, w.generate_button)
    gen_id = d.queue.running
    qtbot.waitUntil(lambda: tl.has("step_done", gen_id), timeout=60_000)

    dlg = _open_engines_dialog(d)
    click(qtbot, dlg.build_button)
    build_id = dlg.build_id
    assert dlg.stage.text() == WAITING
    click(qtbot, dlg.cancel_button)
    # at once, while the generation still runs: the service will drop the build unstarted
    assert dlg.stage.text() == "Cancelled." and dlg.build_id is None
    assert dlg.build_button.isEnabled() and not dlg.cancel_button.isEnabled()
    assert not tl.has("job_finished", gen_id)
    # recorded on the GPU thread; the queue learns of the finished job through the GUI thread
    qtbot.waitUntil(
        lambda: tl.has("export_cancelled", build_id) and d.queue.running is None, timeout=60_000
    )
    assert tl.bounds() == [
        ("job_started", gen_id),
        ("job_finished", gen_id),
        ("export_cancelled", build_id),
    ]
    assert d.queue.history[-1].status == "done"
    assert not root.exists() or sorted(root.iterdir()) == []


@pytest.mark.slow
def test_cancel_during_a_build_stops_it_and_leaves_no_engine_folder(
    make_desktop, tiny, qtbot, home, tmp_path
):
    pytest.importorskip("onnx")
    root = _engines_root(tmp_path)
    d = make_desktop([tiny.official])
    tl = Timeline(d.service)
    dlg = _open_engines_dialog(d, components=("t5", "dit"))
    partial_at_cancel: list[list[str]] = []

    def cancel_at_the_dit(build_id: str, stage: str, fraction: float) -> None:
        # on the GPU thread, between the two graphs: what the Cancel button does
        # (service.cancel sets the build's token), at a point where t5.onnx is already written
        if stage == "dit":
            partial_at_cancel.extend(
                sorted(q.name for q in p.iterdir()) for p in root.glob(".*partial*")
            )
            d.service.cancel(build_id)

    d.service.export_progress.connect(cancel_at_the_dit, Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignal(d.service.export_cancelled, timeout=120_000) as sig:
        click(qtbot, dlg.build_button)
    qtbot.waitUntil(lambda: dlg.build_id is None, timeout=10_000)

    build_id = sig.args[0]
    assert tl.bounds() == [("export_started", build_id), ("export_cancelled", build_id)]
    assert partial_at_cancel == [["t5.onnx", "tokenizer"]]  # one graph in, then cancelled
    assert dlg.stage.text() == "Cancelled." and dlg.result_path is None
    assert sorted(root.iterdir()) == []  # neither the engine folder nor the partial one
    assert dlg.table.rowCount() == 0 and dlg.build_button.isEnabled()


def test_a_failing_build_shows_its_error_and_the_service_keeps_running_jobs(
    make_desktop, tiny, qtbot, home, tmp_path
):
    pytest.importorskip("onnx")
    import shutil

    root = _engines_root(tmp_path)
    damaged = tmp_path / "damaged-model"
    shutil.copytree(tiny.official, damaged)
    d = make_desktop([damaged, tiny.official])
    w = d.window
    tl = Timeline(d.service)
    w.model_combo.setCurrentIndex(0)
    assert w.form.state.model == str(damaged)
    # the DiT file is cut short after the picker read it (a disk copy gone wrong): the build
    # is accepted, and fails on the GPU thread when it reads the weights
    dit = damaged / "diffusion_pytorch_model.safetensors"
    dit.write_bytes(dit.read_bytes()[: dit.stat().st_size // 2])
    dlg = _open_engines_dialog(d, components=("dit",), precision="bf16")
    with qtbot.waitSignal(d.service.export_failed, timeout=60_000) as sig:
        click(qtbot, dlg.build_button)
    qtbot.waitUntil(lambda: dlg.build_id is None, timeout=10_000)

    error = sig.args[1]
    assert error.title == "Bad model" and error.remedy
    assert str(dit) in error.message and "truncated" in error.message
    assert dlg.error == error
    assert dlg.stage.text() == (f"Failed: Bad model: {error.message}\nWhat to do: {error.remedy}")
    assert dlg.log_view.toPlainText() == error.text()
    assert dlg.build_button.isEnabled() and not dlg.cancel_button.isEnabled()
    assert sorted(root.iterdir()) == []  # nothing left by the failed build
    dlg.close()

    # the GPU thread is still serving: a generation on the good model runs to the end
    w.model_combo.setCurrentIndex(1)
    fill_form(w, qtbot, "after the failed build", seed=4, steps=2)
    with qtbot.waitSignal(d.queue.finished, timeout=60_000) as sig:
        click(qtbot, w.generate_button)
    assert Path(sig.args[1].out).is_file()
    build_id = tl.bounds()[0][1]
    assert tl.bounds() == [
        ("export_started", build_id),
        ("export_failed", build_id),
        ("job_started", sig.args[0]),
        ("job_finished", sig.args[0]),
    ]
    assert len({r.thread for r in tl.records}) == 1 and all(r.on_service_thread for r in tl.records)


@pytest.mark.slow
def test_an_engine_built_in_the_dialog_fits_its_model_and_runs_from_run_on_at_once(
    make_desktop, tiny, qtbot, home, tmp_path
):
    pytest.importorskip("onnxruntime")
    root = _engines_root(tmp_path)
    d = make_desktop([tiny.official])
    w = d.window
    assert [w.backend_combo.itemData(i) for i in range(w.backend_combo.count())] == ["torch"]
    w.engines_action.trigger()
    dlg = w.engines_dialog
    # what a build makes by default is what an engine backend loads: T5, DiT and the VAE
    assert {c for c, b in dlg.component_boxes.items() if b.isChecked()} == {"t5", "dit", "vae"}
    dlg.precision_combo.setCurrentText("fp32")
    dlg.kind_combo.setCurrentIndex(dlg.kind_combo.findData("onnx"))
    with qtbot.waitSignal(d.service.export_finished, timeout=300_000):
        click(qtbot, dlg.build_button)
    qtbot.waitUntil(lambda: dlg.build_id is None, timeout=10_000)

    out = root / f"{tiny.official.name}-onnx-fp32"
    assert dlg.result_path == out and dlg.table.rowCount() == 1
    assert dlg.table.item(0, 0).text() == out.name and dlg.table.item(0, 5).text() == "yes"
    # the dialog is still open: "Run on" offers the new engines already, pointing at the folder
    assert dlg.isVisible()
    backends = [w.backend_combo.itemData(i) for i in range(w.backend_combo.count())]
    assert backends == ["torch", "onnxruntime"] and w.engine_folders == {"onnxruntime": str(out)}
    dlg.close()

    w.backend_combo.setCurrentIndex(backends.index("onnxruntime"))
    assert w.form.state.backend == "onnxruntime" and w.form.state.engines == str(out)
    fill_form(w, qtbot, "on the engines built here", seed=3, steps=2)
    with qtbot.waitSignal(d.queue.finished, timeout=120_000) as sig:
        click(qtbot, w.generate_button)
    assert Path(sig.args[1].out).is_file()
    entry = d.queue.history_entry(sig.args[0])
    assert entry.status == "done"
    assert entry.options["backend"] == "onnxruntime" and entry.options["engines"] == str(out)
