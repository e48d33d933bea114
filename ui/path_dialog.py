"""Opening a file or folder in the desktop's own app, and what happens where there is none (a bare
window manager, a server over VNC, a container): a dialog shows the path, selectable and with a
Copy button, instead of failing silently."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)


class PathField(QWidget):
    """A path in a read-only line edit (select it, or press Copy)."""

    def __init__(self, path: str | Path = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edit = QLineEdit(str(path))
        self.edit.setReadOnly(True)
        self.edit.setCursorPosition(0)
        self.edit.setMinimumWidth(240)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the path to the clipboard")
        self.copy_button.clicked.connect(self.copy)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.copy_button)

    def text(self) -> str:
        return self.edit.text()

    def set_path(self, path: str | Path) -> None:
        self.edit.setText(str(path))
        self.edit.setCursorPosition(0)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.edit.text())
        self.copy_button.setText("Copied")


class PathDialog(QDialog):
    """No app opens it here: the path, to copy into a file manager or a terminal."""

    def __init__(self, path: str | Path, what: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Open {what}")
        self.message = QLabel(
            f"No file manager or default app answered, so the {what} cannot be opened from here. "
            "Its location:"
        )
        self.message.setWordWrap(True)
        self.field = PathField(path)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.message)
        lay.addWidget(self.field)
        lay.addWidget(buttons)
        self.resize(560, self.sizeHint().height())


def open_path(path: str | Path, what: str, parent: QWidget | None = None) -> PathDialog | None:
    """Open ``path`` (a file or a folder) with the desktop's app for it. Where nothing answers,
    a non-blocking dialog shows the path (returned; None when the desktop opened it). ``what``
    names it in the dialog: "folder", "video", "log folder"."""
    if QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
        return None
    dialog = PathDialog(path, what, parent)
    dialog.open()
    return dialog
