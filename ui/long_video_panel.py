"""The form's collapsible "Long video" group (issue 17 §5): per-window prompts, the colour match
of image-conditioned continuation, the video being continued, the window size of sliding-window
models, and a SkyReels-V2 Diffusion Forcing model's settings (schedule, windows, carried-over
frames, their noise, fps), the model's recommended values until edited. Also the "12.0 s · 3
windows" label the window puts beside the duration.

A widget module: it binds to the FormModel (viewmodels.py) and reads long_video_form.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .long_video_form import (
    ASYNC_AR_STEP,
    ASYNC_BLOCK,
    WindowsEta,
    duration_text,
    prompt_note,
    shown,
    windows_for,
)

if TYPE_CHECKING:
    from .library import ModelEntry
    from .viewmodels import FormModel, FormState


class LongVideoPanel(QWidget):
    """Collapsed to its header until opened; opens by itself when a SkyReels-V2 DF model is
    picked or a video is being continued."""

    def __init__(self) -> None:
        super().__init__()
        self.form: FormModel | None = None
        self.duration_label = QLabel()  # beside the duration: "12.0 s · 3 windows"
        self.duration_label.setToolTip(
            "Longer videos run as consecutive windows, each continuing the one before"
        )
        self.header = QToolButton(text="Long video", checkable=True)
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setArrowType(Qt.ArrowType.RightArrow)
        self.header.setStyleSheet("QToolButton { border: none; font-weight: bold; }")
        self.body = QWidget()
        self.body.setVisible(False)

        self.per_window_check = QCheckBox("One prompt per line = one per window")
        self.per_window_check.setToolTip(
            "Each line of the prompt is the prompt of one window; the last line repeats. "
            "Off: the whole text is every window's prompt"
        )
        self.prompt_note = QLabel()
        self.prompt_note.setWordWrap(True)
        self.color_check = QCheckBox("Match colours to the first window")
        self.extend_label = QLabel()
        self.extend_label.setWordWrap(True)
        self.extend_clear = QToolButton(text="✕", toolTip="Do not continue that video")
        extend_row = QHBoxLayout()
        extend_row.setContentsMargins(0, 0, 0, 0)
        extend_row.addWidget(self.extend_label, 1)
        extend_row.addWidget(self.extend_clear)
        self.extend_box = QWidget()
        self.extend_box.setLayout(extend_row)

        # sliding windows (every model but SkyReels-V2 DF)
        self.window_spin = QSpinBox(minimum=5, maximum=241, singleStep=4, suffix=" frames")
        self.window_spin.setToolTip("Frames per window (4n+1); the model's own by default")
        self.overlap_spin = QSpinBox(minimum=1, maximum=60, suffix=" latent")
        self.overlap_spin.setToolTip("Latent frames each window carries over from the one before")
        windows_row = QHBoxLayout()
        windows_row.setContentsMargins(0, 0, 0, 0)
        windows_row.addWidget(QLabel("Window"))
        windows_row.addWidget(self.window_spin)
        windows_row.addWidget(QLabel("overlap"))
        windows_row.addWidget(self.overlap_spin)
        windows_row.addStretch(1)
        self.windows_box = QWidget()
        self.windows_box.setLayout(windows_row)

        # SkyReels-V2 Diffusion Forcing
        self.schedule_combo = QComboBox()
        self.schedule_combo.addItem("Synchronous (ar_step 0)", "sync")
        self.schedule_combo.addItem(f"Asynchronous (ar_step {ASYNC_AR_STEP})", "async")
        self.schedule_combo.setToolTip(
            "Synchronous: every frame of a window denoises together. Asynchronous: each block of "
            "frames lags ar_step steps behind the one before (more consistent motion, slower)"
        )
        self.ar_step_spin = QSpinBox(minimum=0, maximum=50)
        self.block_spin = QSpinBox(minimum=1, maximum=32)
        self.block_spin.setToolTip("Latent frames per causal attention block")
        self.base_spin = QSpinBox(minimum=5, maximum=257, singleStep=4, suffix=" frames")
        self.base_spin.setToolTip("Frames per window (4n+1)")
        self.history_spin = QSpinBox(minimum=1, maximum=253, singleStep=4, suffix=" frames")
        self.history_spin.setToolTip("Frames each window carries over (4n+1)")
        self.addnoise_spin = QDoubleSpinBox(minimum=0.0, maximum=999.0, singleStep=5.0, decimals=1)
        self.addnoise_spin.setToolTip(
            "Noise on the carried-over frames (a timestep; 20 is recommended, at most about 50)"
        )
        self.fps_spin = QSpinBox(minimum=1, maximum=240, suffix=" fps")
        self.fps_spin.setToolTip("The model's fps embedding and the video's frame rate")
        df = QFormLayout()
        df.setContentsMargins(0, 0, 0, 0)
        df.addRow("Schedule", self.schedule_combo)
        steps_row = QHBoxLayout()
        steps_row.addWidget(QLabel("ar_step"))
        steps_row.addWidget(self.ar_step_spin)
        steps_row.addWidget(QLabel("block"))
        steps_row.addWidget(self.block_spin)
        steps_row.addStretch(1)
        df.addRow("", steps_row)
        df.addRow("Window", self.base_spin)
        df.addRow("Overlap", self.history_spin)
        df.addRow("Add noise", self.addnoise_spin)
        df.addRow("Frame rate", self.fps_spin)
        self.df_box = QWidget()
        self.df_box.setLayout(df)

        body = QVBoxLayout(self.body)
        body.setContentsMargins(12, 0, 0, 0)
        for w in (
            self.extend_box,
            self.per_window_check,
            self.prompt_note,
            self.color_check,
            self.windows_box,
            self.df_box,
        ):
            body.addWidget(w)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.header, 0, Qt.AlignmentFlag.AlignLeft)
        lay.addWidget(self.body)
        self.header.toggled.connect(self.set_open)
        self._variant = ""
        self.eta = WindowsEta()  # the progress line's ETA over every window left

    # ------------------------------------------------------------------ binding

    def set_open(self, on: bool) -> None:
        self.header.blockSignals(True)
        self.header.setChecked(on)
        self.header.blockSignals(False)
        self.header.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.body.setVisible(on)

    def _edit(self, **changes: Any) -> None:
        if self.form is not None:
            lv = self.form.state.long_video
            self.form.update(long_video=replace(lv, **changes))

    def bind(self, form: FormModel) -> None:
        self.form = form
        self.per_window_check.toggled.connect(lambda on: self._edit(per_window_prompts=on))
        self.color_check.toggled.connect(lambda on: self._edit(color_match=on))
        self.extend_clear.clicked.connect(lambda: self._edit(extend=""))
        self.window_spin.editingFinished.connect(
            lambda: self._edit(window_frames=self.window_spin.value())
        )
        self.window_spin.valueChanged.connect(
            lambda v: self._edit(window_frames=v) if (v - 1) % 4 == 0 else None
        )
        self.overlap_spin.valueChanged.connect(lambda v: self._edit(window_overlap=v))
        self.schedule_combo.activated.connect(self._schedule_picked)
        self.ar_step_spin.valueChanged.connect(lambda v: self._edit(ar_step=v))
        self.block_spin.valueChanged.connect(lambda v: self._edit(causal_block_size=v))
        self.base_spin.valueChanged.connect(lambda v: self._edit(base_frames=v))
        self.history_spin.valueChanged.connect(lambda v: self._edit(overlap_history=v))
        self.addnoise_spin.valueChanged.connect(lambda v: self._edit(addnoise_condition=v))
        self.fps_spin.valueChanged.connect(lambda v: form.update(fps=v))

    def _schedule_picked(self, index: int) -> None:
        if self.schedule_combo.itemData(index) == "async":
            self._edit(ar_step=ASYNC_AR_STEP, causal_block_size=ASYNC_BLOCK)
        else:
            self._edit(ar_step=0, causal_block_size=1)

    def field_widgets(self) -> dict[str, tuple[QWidget, ...]]:
        """The widgets of each long-video request field a refused job can point at."""
        return {
            "extend": (self.extend_label,),
            "window_frames": (self.window_spin,),
            "window_overlap": (self.overlap_spin,),
            "color_match": (self.color_check,),
            "base_frames": (self.base_spin,),
            "overlap_history": (self.history_spin,),
            "ar_step": (self.ar_step_spin, self.schedule_combo),
            "causal_block_size": (self.block_spin,),
            "addnoise_condition": (self.addnoise_spin,),
            "fps": (self.fps_spin,),
        }

    # ------------------------------------------------------------------ rendering

    def render(self, s: FormState, entry: ModelEntry | None) -> None:
        """Model → widgets (signals blocked), the duration label and which parts show."""
        variant = entry.variant if entry is not None else ""
        windows = windows_for(
            variant,
            task=s.task,
            frames=s.frames,
            fps=s.fps,
            lv=s.long_video,
            image=s.image,
            last_image=s.last_image,
        )
        lv = shown(s.long_video, variant)
        df = lv.base_frames is not None
        self.duration_label.setText(duration_text(s.frames, s.fps, windows))
        widgets = (
            self.per_window_check,
            self.color_check,
            self.window_spin,
            self.overlap_spin,
            self.schedule_combo,
            self.ar_step_spin,
            self.block_spin,
            self.base_spin,
            self.history_spin,
            self.addnoise_spin,
            self.fps_spin,
        )
        for w in widgets:
            w.blockSignals(True)
        try:
            self.per_window_check.setChecked(lv.per_window_prompts)
            self.color_check.setChecked(lv.color_match)
            self.window_spin.setValue(lv.window_frames or _model_window(variant) or 81)
            self.overlap_spin.setValue(lv.window_overlap or 2)
            if df:
                self.schedule_combo.setCurrentIndex(1 if lv.ar_step else 0)
                self.ar_step_spin.setValue(lv.ar_step or 0)
                self.block_spin.setValue(lv.causal_block_size or 1)
                self.base_spin.setValue(lv.base_frames or 5)
                self.history_spin.setValue(lv.overlap_history or 1)
                self.addnoise_spin.setValue(lv.addnoise_condition or 0.0)
                self.fps_spin.setValue(s.fps)
        finally:
            for w in widgets:
                w.blockSignals(False)
        self.df_box.setVisible(df)
        self.windows_box.setVisible(not df)
        self.ar_step_spin.setEnabled(bool(lv.ar_step))
        self.block_spin.setEnabled(bool(lv.ar_step))
        self.per_window_check.setEnabled(not df)
        self.per_window_check.setToolTip(
            "Diffusion Forcing models take one prompt for the whole video"
            if df
            else "Each line of the prompt is the prompt of one window; the last line repeats. "
            "Off: the whole text is every window's prompt"
        )
        pixels = not df and (s.task in ("i2v", "flf2v") or bool(lv.extend))
        self.color_check.setEnabled(pixels)
        self.color_check.setToolTip(
            "Windows continued through their last frames (I2V / FLF2V, or a continued video) "
            "drift in colour a little each time; this matches each window's colours to the first"
            if pixels
            else "Only for continuation through frames: I2V / FLF2V models or a continued video"
        )
        note = prompt_note(s.prompt, lv.per_window_prompts and not df, windows)
        self.prompt_note.setText(note)
        self.prompt_note.setVisible(bool(note))
        self.extend_box.setVisible(bool(lv.extend))
        self.extend_label.setText(f"Continues {Path(lv.extend).name}" if lv.extend else "")
        self.extend_label.setToolTip(lv.extend)
        if variant != self._variant:  # a DF model opens the group
            self._variant = variant
            if df:
                self.set_open(True)
        if lv.extend and not self.header.isChecked():
            self.set_open(True)


def _model_window(variant: str) -> int | None:
    """The model's own window (its default frame count), None when unknown."""
    from .long_video_form import variant_of

    v = variant_of(variant)
    return v.defaults.frames if v is not None else None
