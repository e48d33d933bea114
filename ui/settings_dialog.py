"""File → Settings…: the model folders, where outputs and engines go, and the device/dtype the
jobs run on. Saved to settings.json in the data dir when accepted."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .settings import AppSettings, save_settings

DEVICES = (("Auto (GPU when available)", None), ("GPU (CUDA)", "cuda"), ("CPU", "cpu"))
DTYPES = (
    ("Auto (bf16 on GPU, fp32 on CPU)", None),
    ("bfloat16", "bfloat16"),
    ("float16", "float16"),
    ("float32", "float32"),
)


def _folder_row(edit: QLineEdit, title: str, parent: QWidget) -> QHBoxLayout:
    button = QPushButton("Browse…")

    def browse() -> None:
        folder = QFileDialog.getExistingDirectory(parent, title, edit.text())
        if folder:
            edit.setText(folder)

    button.clicked.connect(browse)
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(button)
    return row


TAE_FILTER = "Tiny VAE (taew2_1 / taew2_2) (*.safetensors *.pth)"


def _file_row(edit: QLineEdit, title: str, parent: QWidget) -> QHBoxLayout:
    button = QPushButton("Browse…")

    def browse() -> None:
        path, _ = QFileDialog.getOpenFileName(parent, title, edit.text(), TAE_FILTER)
        if path:
            edit.setText(path)

    button.clicked.connect(browse)
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(button)
    return row


class SettingsDialog(QDialog):
    def __init__(self, settings: AppSettings, parent: Any = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.resize(640, 380)
        self.settings = settings
        self.model_list = QListWidget()
        self.model_list.addItems(list(settings.model_dirs))
        add = QPushButton("Add folder…")
        remove = QPushButton("Remove")
        add.clicked.connect(self._add_model_dir)
        remove.clicked.connect(self._remove_model_dir)
        mbuttons = QVBoxLayout()
        mbuttons.addWidget(add)
        mbuttons.addWidget(remove)
        mbuttons.addStretch(1)
        models_row = QHBoxLayout()
        models_row.addWidget(self.model_list, 1)
        models_row.addLayout(mbuttons)
        self.outputs_edit = QLineEdit(str(settings.outputs))
        self.engines_edit = QLineEdit(str(settings.engines))
        self.device_combo = QComboBox()
        for label, value in DEVICES:
            self.device_combo.addItem(label, value)
        self.device_combo.setCurrentIndex(max(0, self.device_combo.findData(settings.device)))
        self.dtype_combo = QComboBox()
        for label, value in DTYPES:
            self.dtype_combo.addItem(label, value)
        self.dtype_combo.setCurrentIndex(max(0, self.dtype_combo.findData(settings.dtype)))
        self.preview_edit = QLineEdit(settings.preview_decoder)
        self.preview_edit.setPlaceholderText("none: a linear latent→RGB preview")
        self.preview_edit.setToolTip(
            "A TAEHV tiny VAE (taew2_1 for Wan2.1 / Wan2.2 A14B, taew2_2 "
            "for Wan2.2 TI2V-5B): real-looking previews every step, and "
            "the form's fast final decode"
        )
        form = QFormLayout()
        form.addRow("Model folders", models_row)
        form.addRow("Outputs", _folder_row(self.outputs_edit, "Outputs folder", self))
        form.addRow("Engines", _folder_row(self.engines_edit, "Engines folder", self))
        form.addRow("Device", self.device_combo)
        form.addRow("Compute type", self.dtype_combo)
        form.addRow("Preview decoder", _file_row(self.preview_edit, "Tiny VAE file", self))
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons = buttons
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(buttons)

    def _add_model_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of models")
        if folder and not self.model_list.findItems(folder, self._exact()):
            self.model_list.addItem(folder)

    @staticmethod
    def _exact() -> Any:
        from PySide6.QtCore import Qt

        return Qt.MatchFlag.MatchExactly

    def _remove_model_dir(self) -> None:
        for item in self.model_list.selectedItems():
            self.model_list.takeItem(self.model_list.row(item))

    def result_settings(self) -> AppSettings:
        dirs = tuple(self.model_list.item(i).text() for i in range(self.model_list.count()))
        return replace(
            self.settings,
            model_dirs=dirs,
            outputs_dir=self.outputs_edit.text().strip(),
            engines_dir=self.engines_edit.text().strip(),
            device=self.device_combo.currentData(),
            dtype=self.dtype_combo.currentData(),
            preview_decoder=self.preview_edit.text().strip(),
        )

    def accept(self) -> None:
        self.settings = self.result_settings()
        save_settings(self.settings)
        super().accept()
