"""Screenshots of the real app for the docs, taken offscreen on a tiny random-weight model:

- ``main-window.png``: the main window after two finished jobs (history with thumbnails, the video
  in the player, the queue empty);
- ``engines-dialog.png``: Tools → Engines… after an ONNX Runtime build for the model, listed as
  fitting ("Fits here: yes");
- ``add-time-validation.png``: a size of 100×999 refused when the job is added, the fields marked
  in red and the message (with what to do) over the window.

Run from the repository root (about a minute on two CPU cores, most of it the engine build):

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots.py [--out docs/screenshots]

The model is made here: the tiny configs and tokenizer of the tests (tests/tiny.py,
tests/fixtures_text.py, which need no test-only package) and random weights in our own modules
(``wan_desktop.models``), saved in the official Wan layout, whose key names are our modules'. The
app gets a data folder of its own (WAN_DESKTOP_HOME) in a temporary folder: nothing of the user's
is read or written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINDOW_SIZE = (1280, 760)


def build_tiny_t2v(folder: Path, seed: int = 0) -> Path:
    """A Wan2.1 T2V-1.3B-shaped model at tiny size in the official layout (DiT safetensors with
    its config.json, Wan2.1_VAE.pth, the umT5 .pth, google/umt5-xxl/spiece.model)."""
    import torch
    from safetensors.torch import save_file

    from tests.fixtures_text import make_tiny_tokenizer
    from tests.tiny import tiny_variant
    from wan_desktop.models.dit import WanModel
    from wan_desktop.models.t5 import T5Encoder
    from wan_desktop.models.vae21 import WanVAE21

    variant = tiny_variant("t2v-1.3B")
    cfg = variant.dit
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    dit = {k: v.contiguous() for k, v in WanModel(cfg).state_dict().items()}
    save_file(dit, folder / "diffusion_pytorch_model.safetensors")
    config = {
        "_class_name": "WanModel",
        "model_type": cfg.model_type,
        "dim": cfg.dim,
        "ffn_dim": cfg.ffn_dim,
        "freq_dim": cfg.freq_dim,
        "in_dim": cfg.in_dim,
        "num_heads": cfg.num_heads,
        "num_layers": cfg.num_layers,
        "out_dim": cfg.out_dim,
        "text_len": cfg.text_len,
        "eps": cfg.eps,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    torch.save(WanVAE21(variant.vae).state_dict(), folder / "Wan2.1_VAE.pth")
    torch.save(T5Encoder(variant.t5).state_dict(), folder / "models_t5_umt5-xxl-enc-bf16.pth")
    make_tiny_tokenizer(folder / "google" / "umt5-xxl")
    return folder


def wait_until(app, done: Callable[[], bool], timeout_s: float, what: str) -> None:
    from PySide6.QtCore import QEventLoop

    end = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)


def settle(app, seconds: float = 0.3) -> None:
    """Let layouts, pixmaps and queued signals land before a grab."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def save(widget_or_pixmap, path: Path) -> None:
    pixmap = widget_or_pixmap if hasattr(widget_or_pixmap, "save") else widget_or_pixmap.grab()
    if not pixmap.save(str(path)):
        raise OSError(f"could not write {path}")
    print(f"wrote {path} ({pixmap.width()}×{pixmap.height()})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = Path(tempfile.mkdtemp(prefix="wan-desktop-screenshots-"))
    os.environ["WAN_DESKTOP_HOME"] = str(tmp / "home")
    os.environ["WAN_DESKTOP_MODELS"] = str(tmp / "downloads")
    sys.path.insert(0, str(ROOT))
    model = build_tiny_t2v(tmp / "models" / "Wan2.1-T2V-tiny")

    from dataclasses import replace

    from PySide6.QtGui import QPainter
    from PySide6.QtWidgets import QApplication
    from wan_desktop.ui.app import setup_logging
    from wan_desktop.ui.desktop import Desktop
    from wan_desktop.ui.settings import load_settings

    app = QApplication([sys.argv[0]])
    app.setApplicationName("Wan Desktop")
    setup_logging()
    settings = replace(load_settings(), model_dirs=(str(model),), preview_interval_s=0.0)
    d = Desktop(settings)
    scanned: list[bool] = []
    d.window.models_changed.connect(lambda: scanned.append(True))
    d.start(first_run_dialog=False)
    w = d.window
    w.resize(*WINDOW_SIZE)
    try:
        wait_until(app, lambda: bool(scanned) and bool(w.models), 60, "the model scan")

        # (a) the main window after finished jobs
        finished: list[str] = []
        d.queue.finished.connect(lambda job_id, _result: finished.append(job_id))
        jobs = (
            ("a lighthouse on a rocky coast at dusk, waves breaking, cinematic", 7),
            ("a red fox running through fresh snow at golden hour, slow motion", 42),
        )
        for i, (prompt, seed) in enumerate(jobs):
            w.prompt_edit.setPlainText(prompt)
            w.width_spin.setValue(128)
            w.height_spin.setValue(64)
            w.frames_spin.setValue(17)
            w.steps_spin.setValue(4)
            w.random_seed.setChecked(False)
            w.seed_spin.setValue(seed)
            w.generate_button.click()
            wait_until(app, lambda i=i: len(finished) > i, 180, f"job {i + 1}")
        wait_until(app, lambda: len(w.video_player.frames) == 17, 30, "the video in the player")
        w.video_player.pause()
        w.video_player.seek(8)
        w.history_list.setCurrentRow(0)
        settle(app)
        save(w, out / "main-window.png")

        # (b) Tools → Engines… with an engine built here, for this model, that fits
        w.engines_action.trigger()
        dlg = w.engines_dialog
        dlg.precision_combo.setCurrentText("fp32")
        dlg.kind_combo.setCurrentIndex(dlg.kind_combo.findData("onnx"))
        dlg.build_button.click()
        wait_until(app, lambda: dlg.build_id is None, 600, "the engine build")
        if dlg.error is not None:
            raise RuntimeError(f"the engine build failed: {dlg.error.message}")
        wait_until(app, lambda: dlg.table.rowCount() == 1, 30, "the engine listed")
        fits = dlg.table.item(0, 5).text()
        if fits != "yes":
            raise RuntimeError(f"the engine built here does not fit: {fits}")
        dlg.log_view.moveCursor(dlg.log_view.textCursor().MoveOperation.End)
        settle(app)
        save(dlg, out / "engines-dialog.png")
        dlg.close()

        # (c) add-time validation: a size the model cannot make, refused when added
        w.prompt_edit.setPlainText("a paper boat on a rainy street")
        w.width_spin.setValue(100)
        w.height_spin.setValue(999)
        w.generate_button.click()
        wait_until(app, lambda: w.error_box is not None and w.error_box.isVisible(), 10, "refusal")
        if not w.width_spin.property("invalid"):
            raise RuntimeError("the size fields were not marked")
        settle(app)
        shot = w.grab()
        box = w.error_box.grab()
        painter = QPainter(shot)  # the message box over the window, as the user sees it
        painter.drawPixmap(
            (shot.width() - box.width()) // 2, (shot.height() - box.height()) // 3, box
        )
        painter.end()
        save(shot, out / "add-time-validation.png")
    finally:
        d.shutdown(10_000)
        w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
