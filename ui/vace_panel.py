"""The inputs panel of the VACE uses and video-to-video, and the control strip beside the live
preview.

:class:`VacePanel` edits ``FormState.media`` (media_inputs.MediaInputs) and shows only the inputs
the chosen use takes: control video, mask video, reference images (several), outpaint margins,
first / last clip, preprocessor, control scale; for V2V the source video and the strength.
:class:`ControlStrip` shows a few frames of the control video as the run will see them (through
the preprocessor), read on Qt's thread pool by media_inputs.ControlPreviewer.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .media_inputs import PREPROCESSORS, ControlFrames, ControlPreviewer, MediaInputs

if TYPE_CHECKING:
    from .viewmodels import FormModel, FormState

VIDEO_FILTER = "Videos (*.mp4 *.mov *.mkv *.webm *.avi);;All files (*)"
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp)"
MAX_CONTROL_SCALE = 10.0  # wan_desktop.request.MAX_CONTROL_SCALE
STRIP_WIDTH = 160


class PathField(QWidget):
    """A video input: a path (typed, or chosen as a file or a folder of PNG frames)."""

    path_changed = Signal(str)

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title = title
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("an mp4, or a folder of PNG frames")
        self.edit.setClearButtonEnabled(True)
        self.file_button = QPushButton("File…")
        self.folder_button = QPushButton("Folder…")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.file_button)
        lay.addWidget(self.folder_button)
        self.edit.editingFinished.connect(lambda: self.path_changed.emit(self.edit.text()))
        self.edit.textChanged.connect(lambda t: None if t else self.path_changed.emit(""))
        self.file_button.clicked.connect(self._choose_file)
        self.folder_button.clicked.connect(self._choose_folder)

    @property
    def path(self) -> str:
        return self.edit.text()

    def set_path(self, path: str) -> None:
        if self.edit.text() != path:
            self.edit.blockSignals(True)
            self.edit.setText(path)
            self.edit.blockSignals(False)
        self.edit.setToolTip(path)

    def choose(self, path: str) -> None:
        """As if the user picked ``path``."""
        self.set_path(path)
        self.path_changed.emit(path)

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, self.title, "", VIDEO_FILTER)
        if path:
            self.choose(path)

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, f"{self.title}: folder of PNG frames")
        if path:
            self.choose(path)


class RefImages(QWidget):
    """Reference images: a list, Add… (several at once) and Remove."""

    paths_changed = Signal(tuple)

    def __init__(self) -> None:
        super().__init__()
        self.list = QListWidget()
        self.list.setMaximumHeight(72)
        self.add_button = QPushButton("Add…")
        self.remove_button = QPushButton("Remove")
        buttons = QVBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.list, 1)
        lay.addLayout(buttons)
        self.paths: tuple[str, ...] = ()
        self.add_button.clicked.connect(self._choose)
        self.remove_button.clicked.connect(self._remove_selected)

    def set_paths(self, paths: tuple[str, ...]) -> None:
        if paths != self.paths:
            self.paths = paths
            self.list.clear()
            for p in paths:
                self.list.addItem(Path(p).name)
                self.list.item(self.list.count() - 1).setToolTip(p)

    def add(self, *paths: str) -> None:
        self.set_paths((*self.paths, *paths))
        self.paths_changed.emit(self.paths)

    def remove(self, index: int) -> None:
        if 0 <= index < len(self.paths):
            self.set_paths(tuple(p for i, p in enumerate(self.paths) if i != index))
            self.paths_changed.emit(self.paths)

    def _choose(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Reference images", "", IMAGE_FILTER)
        if paths:
            self.add(*paths)

    def _remove_selected(self) -> None:
        self.remove(self.list.currentRow())


class ControlStrip(QWidget):
    """A column of a few control frames (as the run sees them), beside the live preview."""

    def __init__(self) -> None:
        super().__init__()
        self.setFixedWidth(STRIP_WIDTH)
        self.title = QLabel("Control")
        self.title.setWordWrap(True)
        self.image = QLabel()
        self.image.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignHCenter)
        self.image.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.title)
        lay.addWidget(self.image, 1)
        self.shown: ControlFrames | None = None

    def show_frames(self, result: ControlFrames, title: str) -> None:
        self.shown = result
        self.title.setText(title)
        if result.error:
            self.image.setPixmap(QPixmap())
            self.image.setText(result.error)
            return
        if not result.frames:
            self.image.setPixmap(QPixmap())
            self.image.setText("no control video")
            return
        h, w = result.frames[0].shape[:2]
        scale = (STRIP_WIDTH - 4) / w
        tw, th = STRIP_WIDTH - 4, max(1, round(h * scale))
        column = QPixmap(tw, (th + 2) * len(result.frames))
        column.fill(Qt.GlobalColor.transparent)
        from PySide6.QtGui import QPainter

        painter = QPainter(column)
        for i, frame in enumerate(result.frames):
            img = QImage(frame.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
            painter.drawImage(0, i * (th + 2), img.scaled(tw, th))
        painter.end()
        self.image.setText("")
        self.image.setPixmap(column)


class VacePanel(QWidget):
    """The inputs of the VACE uses and V2V, bound to ``form.state.media``."""

    def __init__(self, form: FormModel) -> None:
        super().__init__()
        self.form = form
        self.control = PathField("Control video")
        self.mask_field = PathField("Mask video")
        self.mask_field.edit.setPlaceholderText("white = generate, black = keep")
        self.refs = RefImages()
        self.margins = tuple(QSpinBox(minimum=0, maximum=4096, singleStep=16) for _ in range(4))
        margins_row = QWidget()
        mlay = QHBoxLayout(margins_row)
        mlay.setContentsMargins(0, 0, 0, 0)
        for label, spin in zip(("L", "T", "R", "B"), self.margins, strict=True):
            mlay.addWidget(QLabel(label))
            mlay.addWidget(spin)
        self.first_clip = PathField("First clip")
        self.last_clip = PathField("Last clip")
        self.preprocess = QComboBox()
        for p in PREPROCESSORS:
            self.preprocess.addItem({"none": "None", "gray": "Grayscale", "edges": "Edges"}[p], p)
        self.preprocess.setToolTip(
            "Turn the control video into what VACE conditions on: grayscale (to colorize) or an "
            "edge map (Canny); None uses its frames as they are (pose, depth, ...)"
        )
        self.scale = QDoubleSpinBox(minimum=0.0, maximum=MAX_CONTROL_SCALE, singleStep=0.1)
        self.scale.setToolTip("How strongly the control steers (1 is the trained strength)")
        self.video = PathField("Source video")
        self.strength = QDoubleSpinBox(minimum=0.01, maximum=1.0, singleStep=0.05, decimals=2)
        self.strength.setToolTip("How much of the source is redone: 1 redraws it all")
        self.rows: dict[str, QWidget] = {
            "control_video": self.control,
            "mask_video": self.mask_field,
            "ref_images": self.refs,
            "outpaint": margins_row,
            "first_clip": self.first_clip,
            "last_clip": self.last_clip,
            "preprocess": self.preprocess,
            "control_scale": self.scale,
            "video": self.video,
            "strength": self.strength,
        }
        labels = {
            "control_video": "Control video",
            "mask_video": "Mask video",
            "ref_images": "References",
            "outpaint": "Outpaint px",
            "first_clip": "First clip",
            "last_clip": "Last clip",
            "preprocess": "Preprocess",
            "control_scale": "Control scale",
            "video": "Source video",
            "strength": "Strength",
        }
        self.layout_ = QFormLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        for name, w in self.rows.items():
            self.layout_.addRow(labels[name], w)
        self.strip = ControlStrip()
        self.previewer = ControlPreviewer()
        self._strip_title = "Control"
        self.previewer.ready.connect(self._show_strip)
        self._bind()
        self.show_state(form.state)
        form.changed.connect(self.show_state)

    def field_widgets(self) -> dict[str, tuple[QWidget, ...]]:
        """The widgets a refused job's field marks (the request field names)."""
        out: dict[str, tuple[QWidget, ...]] = {
            k: (w,) for k, w in self.rows.items() if k != "outpaint"
        }
        out["outpaint"] = self.margins
        return out

    def _set(self, **changes: Any) -> None:
        self.form.update(media=replace(self.form.state.media, **changes))

    def _bind(self) -> None:
        self.control.path_changed.connect(lambda p: self._set(control_video=p))
        self.mask_field.path_changed.connect(lambda p: self._set(mask_video=p))
        self.refs.paths_changed.connect(lambda ps: self._set(ref_images=tuple(ps)))
        for spin in self.margins:
            spin.valueChanged.connect(
                lambda _v: self._set(outpaint=tuple(s.value() for s in self.margins))
            )
        self.first_clip.path_changed.connect(lambda p: self._set(first_clip=p))
        self.last_clip.path_changed.connect(lambda p: self._set(last_clip=p))
        self.preprocess.currentIndexChanged.connect(
            lambda _i: self._set(preprocess=self.preprocess.currentData())
        )
        self.scale.valueChanged.connect(lambda v: self._set(control_scale=v))
        self.video.path_changed.connect(lambda p: self._set(video=p))
        self.strength.valueChanged.connect(lambda v: self._set(strength=v))

    def show_state(self, s: FormState) -> None:
        m: MediaInputs = s.media
        shown = m.fields_for(s.task)
        self.setVisible(bool(shown))
        for name, w in self.rows.items():
            self.layout_.setRowVisible(w, name in shown)
        widgets = (self.preprocess, self.scale, self.strength, *self.margins)
        for w in widgets:
            w.blockSignals(True)
        try:
            self.control.set_path(m.control_video)
            self.mask_field.set_path(m.mask_video)
            self.refs.set_paths(m.ref_images)
            for spin, v in zip(self.margins, m.outpaint, strict=True):
                spin.setValue(v)
            self.first_clip.set_path(m.first_clip)
            self.last_clip.set_path(m.last_clip)
            i = self.preprocess.findData(m.preprocess)
            self.preprocess.setCurrentIndex(max(i, 0))
            self.scale.setValue(m.control_scale)
            self.video.set_path(m.video)
            self.strength.setValue(m.strength)
        finally:
            for w in widgets:
                w.blockSignals(False)
        self._update_strip(s, shown)

    def _update_strip(self, s: FormState, shown: tuple[str, ...]) -> None:
        m = s.media
        names = {"none": "Control", "gray": "Control (grayscale)", "edges": "Control (edges)"}
        if "video" in shown:
            path, pre, title = m.video, "", "Source video"
        elif "control_video" in shown:
            pre = m.preprocess if "preprocess" in shown else "none"
            path, title = m.control_video, names.get(pre, "Control")
        elif "first_clip" in shown:  # extend: the clip the result continues (or leads into)
            path, pre = m.first_clip or m.last_clip, "none"
            title = "First clip" if m.first_clip or not m.last_clip else "Last clip"
        else:
            self.strip.setVisible(False)
            return
        self.strip.setVisible(True)
        self._strip_title = title  # the previewer sends only the latest request's frames
        self.previewer.request(
            path, preprocess=pre, width=s.width, height=s.height, frames=max(1, s.frames)
        )

    def _show_strip(self, result: ControlFrames) -> None:
        self.strip.show_frames(result, self._strip_title)
