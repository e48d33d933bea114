"""Small reusable widgets: an image drop zone, one row of the LoRA list, the question asked when
the window is closed while a job runs."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QToolButton,
    QWidget,
)

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp)"


class DropZone(QLabel):
    """Drop an image file here, or click to choose one; right-click clears it."""

    path_changed = Signal(str)

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title = title
        self.path = ""
        self.setAcceptDrops(True)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumHeight(72)
        self.setWordWrap(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setStyleSheet("QLabel { border: 2px dashed #777; border-radius: 6px; color: #999; }")
        self._show()

    def set_path(self, path: str) -> None:
        if path != self.path:
            self.path = path
            self._show()

    def _show(self) -> None:
        if self.path:
            img = QImage(self.path)
            if not img.isNull():
                self.setPixmap(
                    QPixmap.fromImage(img).scaledToHeight(
                        64, Qt.TransformationMode.SmoothTransformation
                    )
                )
                self.setToolTip(self.path)
                return
            self.setPixmap(QPixmap())
            self.setText(f"{self.title}: cannot read {Path(self.path).name}")
            return
        self.setPixmap(QPixmap())
        self.setText(f"{self.title}\ndrop an image or click")
        self.setToolTip("")

    def _accept(self, path: str) -> None:
        self.set_path(path)
        self.path_changed.emit(path)

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        urls = [u for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            self._accept(urls[0].toLocalFile())
            event.acceptProposedAction()

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.RightButton:
            self._accept("")
            return
        path, _ = QFileDialog.getOpenFileName(self, self.title, "", IMAGE_FILTER)
        if path:
            self._accept(path)


class LoraRow(QWidget):
    """One LoRA of the form: its file name, a strength box, the Wan2.2 expert, a remove button."""

    strength_changed = Signal(float)
    expert_changed = Signal(str)
    removed = Signal()

    def __init__(self, path: str, strength: float, expert: str, *, experts: int) -> None:
        super().__init__()
        self.path = path
        self.name = QLabel(Path(path).name)
        self.name.setToolTip(path)
        self.strength = QDoubleSpinBox(minimum=-4.0, maximum=4.0, singleStep=0.05, decimals=2)
        self.strength.setToolTip("LoRA strength (0: no effect)")
        self.strength.setValue(strength)
        self.expert = QComboBox()
        self.expert.addItem("high-noise expert", "high")
        self.expert.addItem("low-noise expert", "low")
        self.expert.setCurrentIndex(max(0, self.expert.findData(expert)))
        self.expert.setVisible(experts == 2)  # only Wan2.2 A14B has two diffusion models
        self.remove = QToolButton(text="✕", toolTip="Remove this LoRA")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.name, 1)
        lay.addWidget(self.expert)
        lay.addWidget(self.strength)
        lay.addWidget(self.remove)
        self.strength.valueChanged.connect(self.strength_changed)
        self.expert.currentIndexChanged.connect(
            lambda _i: self.expert_changed.emit(self.expert.currentData())
        )
        self.remove.clicked.connect(self.removed)

    def show_values(self, strength: float, expert: str, *, experts: int) -> None:
        """Model → widgets without echoing the change back."""
        for w in (self.strength, self.expert):
            w.blockSignals(True)
        self.strength.setValue(strength)
        self.expert.setCurrentIndex(max(0, self.expert.findData(expert)))
        self.expert.setVisible(experts == 2)
        for w in (self.strength, self.expert):
            w.blockSignals(False)


class CloseQuestion(QMessageBox):
    """Asked when the window is closed while a job runs (window-modal, never blocking): finish
    the job first, stop it and keep it queued, or cancel it; Escape keeps the window open.
    ``answered`` carries the choice: one of ANSWERS."""

    ANSWERS = ("finish", "keep", "cancel", "stay")
    answered = Signal(str)

    def __init__(self, prompt: str, waiting: int, parent: QWidget) -> None:
        super().__init__(QMessageBox.Icon.Question, "A job is running", "", parent=parent)
        self.setText(f"“{prompt[:60]}” is still running. What should happen to it?")
        rest = f" The {waiting} waiting job(s) stay in the queue." if waiting else ""
        self.setInformativeText(
            "A job stopped and kept in the queue runs again at the next start, from its first "
            f"step.{rest}"
        )
        role = QMessageBox.ButtonRole
        self.choices = {
            "finish": self.addButton("Finish it, then close", role.AcceptRole),
            "keep": self.addButton("Stop, keep it queued", role.DestructiveRole),
            "cancel": self.addButton("Cancel the job", role.DestructiveRole),
            "stay": self.addButton("Don't close", role.RejectRole),
        }
        self.setDefaultButton(self.choices["finish"])
        self.setEscapeButton(self.choices["stay"])
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.buttonClicked.connect(self._clicked)

    def _clicked(self, button: object) -> None:
        self.answered.emit(next(k for k, b in self.choices.items() if b is button))
