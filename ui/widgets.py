"""Small reusable widgets: an image drop zone and a seed box with a dice button."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QFileDialog, QLabel

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
                self.setPixmap(QPixmap.fromImage(img).scaledToHeight(
                    64, Qt.TransformationMode.SmoothTransformation))
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
