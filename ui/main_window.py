"""The main window: the job form on the left, preview / player in the middle, queue and history on
the right, system status below. Widgets only bind to the view-models (viewmodels.py)."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QSize, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QColor,
    QGuiApplication,
    QIcon,
    QKeySequence,
    QPixmap,
    QShortcut,
)
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QStyle,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from wan_desktop.errors import WanError

from . import system_info
from .gpu_selector import GpuPoller, GpuQuery, GpuSelector, VramStatus
from .library import ModelEntry
from .long_video_form import continues_note, progress_text
from .long_video_panel import LongVideoPanel
from .media_inputs import offered, remove_saved_inputs, split_key, task_choices, task_key
from .path_dialog import PathDialog, open_path
from .paths import log_dir
from .player import VideoPlayer
from .review_bar import ReviewBar, drop_refused_review, fit_review_check, review_checkbox
from .settings import BACKENDS, PRECISIONS, VRAM_PLANS, AppSettings, save_settings
from .vace_panel import VacePanel
from .viewmodels import (
    TASKS,
    FormModel,
    FormState,
    Progress,
    QueueModel,
    frames_for_seconds,
    preset_warning,
    presets,
    resumed_text,
    seconds_for_frames,
)
from .widgets import CloseQuestion, DropZone, LoraRow

if TYPE_CHECKING:
    from .paths import DataDirProblem
    from .service import GpuService, JobResult, PreviewFrames, UserError

log = logging.getLogger(__name__)
# a form field a refused job points at (FormModel.invalid): a red border
_INVALID_STYLE = '*[invalid="true"] { border: 2px solid #c62828; }'
# a paused queue: the Pause button (checked) and the queue's status-bar line stand out
_PAUSED_STYLE = "QPushButton:checked { background: #f9a825; color: black; font-weight: bold; }"

SAMPLERS = ("unipc", "dpm++", "euler", "rcm")  # rcm: the turbo preset's stochastic update
LORA_FILTER = "LoRA (*.safetensors *.sft)"
BACKEND_LABELS = {
    "torch": "PyTorch",
    "onnxruntime": "ONNX Runtime engine",
    "tensorrt": "TensorRT engine",
}
PLAN_LABELS = {"auto": "Auto", "8": "8 GB", "12": "12 GB", "16": "16 GB", "24": "24 GB"}


def _extras(options: dict) -> str:
    """ " · Fast (4 steps) · 2 LoRAs · tiny VAE" for a queue / history line ("" when none)."""
    from wan_desktop.presets import PRESETS

    out = []
    preset = PRESETS.get(options.get("preset") or "")
    if preset is not None:
        out.append(preset.label)
    n = len(options.get("loras") or ()) + len(options.get("loras_low") or ())
    if n:
        out.append(f"{n} LoRA{'s' if n > 1 else ''}")
    if options.get("tiny_vae"):
        out.append("tiny VAE")
    if (options.get("parallel") or 1) > 1:  # the GPUs selector (gpu_selector.py)
        out.append(f"{options['parallel']} GPUs ({options.get('parallel_mode') or 'auto'})")
    return "".join(f" · {x}" for x in out)


def _clock(seconds: float) -> str:
    m, s = divmod(max(0, round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class MainWindow(QMainWindow):
    models_changed = Signal()  # the picker was refilled (on the GUI thread)

    def __init__(
        self,
        service: GpuService,
        queue: QueueModel,
        settings: AppSettings,
        *,
        gpus: GpuQuery | None = None,  # the device list (tests inject one): nvidia-smi's
    ) -> None:
        super().__init__()
        self.setWindowTitle("Wan Desktop")
        self.service = service
        self.queue = queue
        self.settings = settings
        self.form = FormModel(memory=settings.forms)  # the form as last used with each model
        self.form.update(
            backend=settings.backend, precision=settings.precision, vram_plan=settings.vram_plan
        )
        self.models: tuple[ModelEntry, ...] = ()
        self.engine_folders: dict[str, str] = {}  # backend -> engine folder for this model
        self.last_result: JobResult | None = None
        self.last_error: UserError | None = None
        self.error_box: QMessageBox | None = None
        self.data_dir_box: QMessageBox | None = None  # the data dir cannot be written
        self.data_label: QLabel | None = None  # what was wrong with the data files at start
        self.path_dialog: PathDialog | None = None  # a path no desktop app could open
        self._preview_job: str | None = None
        self.video_loader = VideoLoader()
        self._build()
        self._bind()
        self._init_queue_state()
        self._render(self.form.state)
        self._refresh_queue()
        self._refresh_history()
        # the GPUs selector, the VRAM of each GPU and the status line (gpu_selector.py): the
        # devices are read every 3 s on Qt's thread pool, never on the GUI thread
        self.gpu_poller = GpuPoller(gpus or system_info.visible_gpus)
        self.status_timer = self.gpu_poller.timer
        self.gpu_poller.gpus_read.connect(self.gpu_selector.set_gpus)
        self.gpu_poller.gpus_read.connect(self.vram_status.show_gpus)
        self.gpu_poller.gpus_read.connect(self._show_system)
        self.gpu_poller.start()
        self.rescan()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        # --- form (left)
        self.model_combo = QComboBox()
        self.model_combo.setMinimumWidth(200)
        self.add_folder_button = QPushButton("Add folder…")
        self.rescan_button = QToolButton(text="⟳", toolTip="Scan the model folders again")
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.rescan_button)
        model_row.addWidget(self.add_folder_button)
        # the candidates that could not be loaded, each with its reason (hidden when none)
        self.unusable_button = QToolButton(text="⚠", visible=False)
        model_row.addWidget(self.unusable_button)

        self.task_combo = QComboBox()
        for t in TASKS:
            self.task_combo.addItem(t.upper(), t)
        for label, key in task_choices():  # V2V and the VACE uses (media_inputs.py)
            self.task_combo.addItem(label, key)
        self.vace_panel = VacePanel(self.form)  # their inputs; its strip goes by the preview
        self.first_frame = DropZone("First frame")
        self.last_frame = DropZone("Last frame")
        frames_row = QHBoxLayout()
        frames_row.addWidget(self.first_frame)
        frames_row.addWidget(self.last_frame)

        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setPlaceholderText("Describe the video…")
        self.prompt_edit.setMinimumHeight(90)
        self.prompt_edit.setMaximumHeight(200)
        self.negative_edit = QPlainTextEdit()
        self.negative_edit.setMinimumHeight(56)
        self.negative_edit.setMaximumHeight(110)

        self.preset_combo = QComboBox()
        self.width_spin = QSpinBox(minimum=16, maximum=4096, singleStep=16)
        self.height_spin = QSpinBox(minimum=16, maximum=4096, singleStep=16)
        size_row = QHBoxLayout()
        size_row.addWidget(self.preset_combo, 1)
        size_row.addWidget(self.width_spin)
        size_row.addWidget(QLabel("×"))
        size_row.addWidget(self.height_spin)

        self.seconds_spin = QDoubleSpinBox(  # past one window: consecutive windows
            minimum=0.0, maximum=120.0, singleStep=0.25, decimals=2, suffix=" s"
        )
        self.frames_spin = QSpinBox(minimum=1, maximum=2881, singleStep=4, suffix=" frames")
        duration_row = QHBoxLayout()
        duration_row.addWidget(self.seconds_spin)
        duration_row.addWidget(self.frames_spin)
        self.long_panel = LongVideoPanel()  # long_video_panel.py: windows, DF settings
        duration_row.addWidget(self.long_panel.duration_label)

        self.steps_spin = QSpinBox(minimum=1, maximum=200)
        self.guidance_spin = QDoubleSpinBox(minimum=0.0, maximum=30.0, singleStep=0.5, decimals=2)
        self.shift_spin = QDoubleSpinBox(minimum=0.1, maximum=30.0, singleStep=0.5, decimals=2)
        self.sampler_combo = QComboBox()
        self.sampler_combo.addItems(SAMPLERS)
        sampling_row = QHBoxLayout()
        for label, w in (
            ("Steps", self.steps_spin),
            ("CFG", self.guidance_spin),
            ("Shift", self.shift_spin),
        ):
            sampling_row.addWidget(QLabel(label))
            sampling_row.addWidget(w)
        sampling_row.addWidget(self.sampler_combo)

        self.speed_combo = QComboBox()
        self.speed_combo.setToolTip(
            "A preset fills steps, CFG, shift and sampler (you can still "
            "change them); Fast and Turbo need a distilled model or LoRA"
        )
        self.speed_combo.addItem("Custom", "")
        from wan_desktop.presets import PRESETS

        for p in PRESETS.values():
            self.speed_combo.addItem(p.label, p.name)
            self.speed_combo.setItemData(
                self.speed_combo.count() - 1, p.description, Qt.ItemDataRole.ToolTipRole
            )
        self.tiny_vae_check = QCheckBox("Fast final decode with the tiny VAE")
        speed_row = QHBoxLayout()
        speed_row.addWidget(self.speed_combo, 1)
        speed_row.addWidget(self.tiny_vae_check)

        self.lora_rows: list[LoraRow] = []
        self.lora_list = QVBoxLayout()
        self.lora_list.setContentsMargins(0, 0, 0, 0)
        self.add_lora_button = QPushButton("Add LoRA…")
        lora_col = QVBoxLayout()
        lora_col.addLayout(self.lora_list)
        lora_col.addWidget(self.add_lora_button, 0, Qt.AlignmentFlag.AlignLeft)

        self.seed_spin = QSpinBox(minimum=0, maximum=2**31 - 1)
        self.random_seed = QCheckBox("Random")
        self.dice_button = QToolButton(text="⚄", toolTip="Roll a new seed (and keep it fixed)")
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed_spin, 1)
        seed_row.addWidget(self.dice_button)
        seed_row.addWidget(self.random_seed)

        self.backend_combo = QComboBox()
        self.precision_combo = QComboBox()
        for p in PRECISIONS:
            self.precision_combo.addItem(p.upper() if p != "bf16" else "BF16", p)
        self.vram_combo = QComboBox()
        for p in VRAM_PLANS:
            self.vram_combo.addItem(PLAN_LABELS[p], p)
        self.backend_combo.setToolTip(
            "What runs the model: PyTorch always; an ONNX Runtime or TensorRT engine once one "
            "built for this model and GPU exists (Tools → Engines…)"
        )
        self.precision_combo.setToolTip(
            "Precision of the transformer's weights: BF16 is the reference; FP8 and INT8 halve "
            "the VRAM they take, at a small cost in quality"
        )
        self.vram_combo.setToolTip(
            "Memory plan: how much VRAM the job may use. Auto plans for what the GPU has free; "
            "a smaller figure keeps room for other apps (weights are swapped in and out, slower)"
        )
        self.precision_label = QLabel("Precision")
        self.precision_label.setBuddy(self.precision_combo)
        self.vram_label = QLabel("Memory")
        self.vram_label.setBuddy(self.vram_combo)
        run_row = QHBoxLayout()
        run_row.addWidget(self.backend_combo, 1)
        precision_row = QHBoxLayout()
        precision_row.addWidget(self.precision_combo)
        precision_row.addWidget(self.vram_label)
        precision_row.addWidget(self.vram_combo)
        precision_row.addStretch(1)

        self.generate_button = QPushButton("Add to queue")
        self.generate_button.setDefault(True)
        self.generate_button.setMinimumHeight(36)

        form = QFormLayout()
        form.addRow("Model", model_row)
        form.addRow("Task", self.task_combo)
        form.addRow("Images", frames_row)
        form.addRow("Inputs", self.vace_panel)
        self._form_layout = form
        form.addRow("Prompt", self.prompt_edit)
        form.addRow("Negative", self.negative_edit)
        form.addRow("Size", size_row)
        form.addRow("Duration", duration_row)
        form.addRow("", self.long_panel)
        form.addRow("Preset", speed_row)
        form.addRow("Sampling", sampling_row)
        form.addRow("LoRAs", lora_col)
        form.addRow("Seed", seed_row)
        form.addRow("Run on", run_row)
        form.addRow(self.precision_label, precision_row)
        self.gpu_selector = GpuSelector(self.form)  # shown with two or more GPUs
        form.addRow("GPUs", self.gpu_selector)
        form.setRowVisible(self.gpu_selector, False)
        self.gpu_selector.available.connect(lambda on: form.setRowVisible(self.gpu_selector, on))
        form_page = QWidget()
        form_page_lay = QVBoxLayout(form_page)
        form_page_lay.addLayout(form)
        form_page_lay.addStretch(1)
        # a small screen (1024×600): the form scrolls, the Add button under it stays in view
        self.form_scroll = QScrollArea()
        self.form_scroll.setWidgetResizable(True)
        self.form_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.form_scroll.setWidget(form_page)
        left = QWidget()
        left_lay = QVBoxLayout(left)
        left_lay.setContentsMargins(0, 0, 4, 4)
        left_lay.addWidget(self.form_scroll, 1)
        self.review_check = review_checkbox(self.form)  # review_bar.py: Review before decode
        left_lay.addWidget(self.review_check)
        left_lay.addWidget(self.generate_button)

        # --- preview / player (middle)
        self.preview_player = VideoPlayer("The live preview appears here while a job runs")
        self.video_player = VideoPlayer("The finished video plays here")
        self.view_tabs = QTabWidget()
        self.view_tabs.addTab(self.preview_player, "Live preview")
        self.view_tabs.addTab(self.video_player, "Video")
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%v / %m")
        self.stage_label = QLabel("Idle")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.stage_label)
        progress_row.addWidget(self.progress_bar, 1)
        progress_row.addWidget(self.cancel_button)
        self.open_file_button = QPushButton("Open file")
        self.open_folder_button = QPushButton("Open folder")
        self.copy_settings_button = QPushButton("Copy settings")
        for b in (self.open_file_button, self.open_folder_button, self.copy_settings_button):
            b.setEnabled(False)
        result_row = QHBoxLayout()
        result_row.addStretch(1)
        for b in (self.open_file_button, self.open_folder_button, self.copy_settings_button):
            result_row.addWidget(b)
        middle = QWidget()
        mid_lay = QVBoxLayout(middle)
        view_row = QHBoxLayout()  # the control frames (VACE / V2V) beside the live preview
        view_row.addWidget(self.view_tabs, 1)
        view_row.addWidget(self.vace_panel.strip)
        mid_lay.addLayout(view_row, 1)
        self.review_bar = ReviewBar()  # under the preview while a job waits at review
        mid_lay.addWidget(self.review_bar)
        mid_lay.addLayout(progress_row)
        mid_lay.addLayout(result_row)

        # --- queue and history (right)
        self.queue_list = QListWidget()
        self.queue_list.setAlternatingRowColors(True)
        self.queue_list.setWordWrap(True)  # preset / LoRA notes make the lines long
        self.queue_list.setSpacing(2)
        self.up_button = QToolButton(text="▲", toolTip="Move up")
        self.down_button = QToolButton(text="▼", toolTip="Move down")
        self.cancel_job_button = QPushButton("Cancel job")
        self.cancel_all_button = QPushButton("Cancel all")
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.setToolTip("Finish the running job, then wait (the queue is kept)")
        qbuttons = QHBoxLayout()
        for b in (self.up_button, self.down_button, self.pause_button):
            qbuttons.addWidget(b)
        qbuttons.addStretch(1)
        qbuttons2 = QHBoxLayout()
        for b in (self.cancel_job_button, self.cancel_all_button):
            qbuttons2.addWidget(b)
        qbuttons2.addStretch(1)
        queue_box = self.queue_box = QGroupBox("Queue")  # its title: paused, N waiting
        qlay = QVBoxLayout(queue_box)
        qlay.addWidget(self.queue_list)
        qlay.addLayout(qbuttons)
        qlay.addLayout(qbuttons2)
        self.history_list = QListWidget()
        self.history_list.setIconSize(QSize(64, 36))
        self.history_list.setWordWrap(True)
        self.history_list.setAlternatingRowColors(True)
        self.history_list.setSpacing(2)
        self.reuse_button = QPushButton("Reuse settings")
        self.play_history_button = QPushButton("Play")
        hbuttons = QHBoxLayout()
        hbuttons.addWidget(self.play_history_button)
        hbuttons.addWidget(self.reuse_button)
        history_box = QGroupBox("History")
        hlay = QVBoxLayout(history_box)
        hlay.addWidget(self.history_list)
        hlay.addLayout(hbuttons)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(queue_box)
        right.addWidget(history_box)

        split = QSplitter()
        split.addWidget(left)
        split.addWidget(middle)
        split.addWidget(right)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setStretchFactor(2, 0)
        split.setCollapsible(1, False)  # the side panels fold away on a small screen
        bar = self.form_scroll.verticalScrollBar().sizeHint().width()
        form_width = form_page.sizeHint().width() + bar
        split.setSizes([form_width, 560, 240])
        self.setCentralWidget(split)

        # --- menus and status bar
        file_menu = self.menuBar().addMenu("&File")
        self.add_folder_action = QAction("Add model folder…", self)
        file_menu.addAction(self.add_folder_action)
        self.models_action = QAction("Download models…", self)
        file_menu.addAction(self.models_action)
        self.settings_action = QAction("Settings…", self)
        file_menu.addAction(self.settings_action)
        file_menu.addSeparator()
        quit_action = QAction("Quit", self)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)
        tools = self.menuBar().addMenu("&Tools")
        self.engines_action = QAction("Engines…", self)
        tools.addAction(self.engines_action)
        help_menu = self.menuBar().addMenu("&Help")
        self.log_action = QAction("Open log folder", self)
        help_menu.addAction(self.log_action)
        self.about_action = QAction("About Wan Desktop", self)
        help_menu.addAction(self.about_action)
        self.system_label = QLabel()
        self.statusBar().addPermanentWidget(self.system_label)
        self.vram_status = VramStatus()  # used / total of each GPU, with two or more
        self.statusBar().addPermanentWidget(self.vram_status)
        self.queue_label = QLabel()  # "resumed N queued jobs", "⏸ paused · 2 waiting"
        self.statusBar().insertPermanentWidget(0, self.queue_label)
        screen = self.screen().availableGeometry()  # a 1024×600 laptop: no bigger than it
        self.resize(min(1360, screen.width()), min(820, screen.height()))
        self._bind_keys()

    # ------------------------------------------------------------------ binding

    def _bind(self) -> None:
        f = self.form
        self.model_combo.currentIndexChanged.connect(self._model_picked)
        self.add_folder_button.clicked.connect(self.add_folder_dialog)
        self.add_folder_action.triggered.connect(self.add_folder_dialog)
        self.rescan_button.clicked.connect(self.rescan)
        self.unusable_button.clicked.connect(self._show_unusable)
        self.task_combo.currentIndexChanged.connect(self._task_picked)
        self.first_frame.path_changed.connect(lambda p: f.update(image=p))
        self.last_frame.path_changed.connect(lambda p: f.update(last_image=p))
        self.prompt_edit.textChanged.connect(
            lambda: f.update(prompt=self.prompt_edit.toPlainText())
        )
        self.negative_edit.textChanged.connect(
            lambda: f.update(negative_prompt=self.negative_edit.toPlainText())
        )
        self.preset_combo.activated.connect(self._preset_picked)
        self.width_spin.valueChanged.connect(lambda v: f.update(width=v))
        self.height_spin.valueChanged.connect(lambda v: f.update(height=v))
        self.seconds_spin.valueChanged.connect(self._seconds_edited)
        self.frames_spin.editingFinished.connect(self._frames_edited)
        self.frames_spin.valueChanged.connect(self._frames_stepped)
        self.steps_spin.valueChanged.connect(lambda v: f.update(steps=v))
        self.guidance_spin.valueChanged.connect(lambda v: f.update(guidance=v))
        self.shift_spin.valueChanged.connect(lambda v: f.update(shift=v))
        self.sampler_combo.currentTextChanged.connect(lambda t: f.update(sampler=t))
        self.speed_combo.activated.connect(
            lambda i: f.apply_preset(self.speed_combo.itemData(i) or "")
        )
        self.tiny_vae_check.toggled.connect(lambda on: f.update(tiny_vae=on))
        self.add_lora_button.clicked.connect(self.add_lora_dialog)
        self.seed_spin.valueChanged.connect(lambda v: f.update(seed=v))
        self.random_seed.toggled.connect(lambda on: f.update(random_seed=on))
        self.dice_button.clicked.connect(
            lambda: f.update(seed=secrets.randbelow(2**31), random_seed=False)
        )
        self.backend_combo.currentIndexChanged.connect(self._backend_picked)
        self.precision_combo.currentIndexChanged.connect(
            lambda _i: f.update(precision=self.precision_combo.currentData())
        )
        self.vram_combo.currentIndexChanged.connect(
            lambda _i: f.update(vram_plan=self.vram_combo.currentData())
        )
        self.generate_button.clicked.connect(self.enqueue)
        f.changed.connect(self._render)
        f.invalid.connect(self._mark_field)
        self.long_panel.bind(f)

        q = self.queue
        self.cancel_button.clicked.connect(self.cancel_running)
        self.up_button.clicked.connect(lambda: self._move_selected(-1))
        self.down_button.clicked.connect(lambda: self._move_selected(1))
        self.cancel_job_button.clicked.connect(self._cancel_selected)
        self.cancel_all_button.clicked.connect(q.cancel_all)
        self.pause_button.toggled.connect(q.set_paused)
        self.pause_button.setStyleSheet(_PAUSED_STYLE)
        self.pause_button.toggled.connect(
            lambda on: self.pause_button.setText("Resume" if on else "Pause")
        )
        self.reuse_button.clicked.connect(self.reuse_selected)
        self.play_history_button.clicked.connect(self.play_selected)
        self.history_list.itemDoubleClicked.connect(lambda _item: self.play_selected())
        self.history_list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.history_list.customContextMenuRequested.connect(self._history_menu)
        self.open_file_button.clicked.connect(self.open_file)
        self.open_folder_button.clicked.connect(self.open_folder)
        self.copy_settings_button.clicked.connect(self.copy_settings)
        self.log_action.triggered.connect(self.open_log_folder)
        self.about_action.triggered.connect(self.open_about_dialog)
        self.engines_action.triggered.connect(self.open_engines_dialog)
        self.models_action.triggered.connect(self.open_models_dialog)
        self.settings_action.triggered.connect(self.open_settings_dialog)
        q.queue_changed.connect(self._refresh_queue)
        q.history_changed.connect(self._refresh_history)
        q.progress.connect(self._on_progress)
        q.preview.connect(self._on_preview)
        q.finished.connect(self._on_finished)
        q.failed.connect(self._on_failed)
        q.cancelled.connect(self._on_cancelled)
        self.review_bar.bind(q, self.preview_player, self.view_tabs, self.stage_label)
        self.service.models_scanned.connect(self._on_models)
        self.service.scan_progress.connect(self._on_scan_progress)  # a method: queued to here
        self.video_loader.loaded.connect(self._on_video_loaded)

    def _render(self, s: FormState) -> None:
        """Model → widgets, with the widgets' own signals blocked (no feedback loop)."""
        widgets = (
            self.task_combo,
            self.prompt_edit,
            self.negative_edit,
            self.width_spin,
            self.height_spin,
            self.seconds_spin,
            self.frames_spin,
            self.steps_spin,
            self.guidance_spin,
            self.shift_spin,
            self.sampler_combo,
            self.seed_spin,
            self.random_seed,
            self.backend_combo,
            self.precision_combo,
            self.vram_combo,
            self.model_combo,
            self.speed_combo,
            self.tiny_vae_check,
        )
        for w in widgets:
            w.blockSignals(True)
        try:
            self._set_combo_data(self.task_combo, task_key(s.task, s.media))
            if self.prompt_edit.toPlainText() != s.prompt:
                self.prompt_edit.setPlainText(s.prompt)
            if self.negative_edit.toPlainText() != s.negative_prompt:
                self.negative_edit.setPlainText(s.negative_prompt)
            self.width_spin.setValue(s.width)
            self.height_spin.setValue(s.height)
            self.frames_spin.setValue(s.frames)
            self.seconds_spin.setValue(seconds_for_frames(s.frames, s.fps))
            self.steps_spin.setValue(s.steps)
            self.guidance_spin.setValue(s.guidance)
            self.shift_spin.setValue(s.shift)
            self.sampler_combo.setCurrentText(s.sampler)
            self.seed_spin.setValue(s.seed)
            self.random_seed.setChecked(s.random_seed)
            self.seed_spin.setEnabled(not s.random_seed)
            self._fill_backends(s)
            self._set_combo_data(self.precision_combo, s.precision)
            self._set_combo_data(self.vram_combo, s.vram_plan)
            self._set_combo_data(self.speed_combo, s.preset)
            self.tiny_vae_check.setChecked(s.tiny_vae)
            idx = next((i for i, e in enumerate(self.models) if e.path == s.model), -1)
            self.model_combo.setCurrentIndex(idx)  # -1: the placeholder says what is wrong
            missing = self.form.missing_model
            self.model_combo.setPlaceholderText(
                f"model not found: {missing}" if missing else "no Wan model found: Add folder…"
            )
        finally:
            for w in widgets:
                w.blockSignals(False)
        entry = self.form.entry
        tasks = offered(entry) if entry and entry.tasks else TASKS
        for i in range(self.task_combo.count()):  # only the model's tasks can be chosen
            item = self.task_combo.model().item(i)
            item.setEnabled(split_key(self.task_combo.itemData(i))[0] in tasks)
        self._form_layout.setRowVisible(self.vace_panel, bool(s.media.fields_for(s.task)))
        self._form_layout.setRowVisible(2, s.task in ("i2v", "flf2v", "ti2v"))
        self.first_frame.setVisible(s.task in ("i2v", "flf2v", "ti2v"))
        self.last_frame.setVisible(s.task == "flf2v")
        self.first_frame.set_path(s.image)
        self.last_frame.set_path(s.last_image)
        self._fill_presets(s)
        has_tae = bool(self.settings.preview_decoder)
        self.tiny_vae_check.setEnabled(has_tae or s.tiny_vae)
        self.tiny_vae_check.setToolTip(
            f"Decode with {Path(self.settings.preview_decoder).name}: much faster, lower quality"
            if has_tae
            else "Set a Preview decoder (taew2_1 / taew2_2) in Settings first"
        )
        self._render_loras(s)
        self.long_panel.render(s, self.form.entry)
        fit_review_check(self.review_check, s, self.form.entry)  # one window only

    def _render_loras(self, s: FormState) -> None:
        """One LoraRow per LoRA; rebuilt only when the list of files changes, so a strength
        being typed keeps its focus."""
        experts = self.form.experts
        if [r.path for r in self.lora_rows] != [c.path for c in s.loras]:
            for r in self.lora_rows:
                self.lora_list.removeWidget(r)
                r.deleteLater()
            self.lora_rows = []
            for i, c in enumerate(s.loras):
                row = LoraRow(c.path, c.strength, c.expert, experts=experts)
                row.strength_changed.connect(lambda v, i=i: self.form.set_lora(i, strength=v))
                row.expert_changed.connect(lambda e, i=i: self.form.set_lora(i, expert=e))
                row.removed.connect(lambda i=i: self.form.remove_lora(i))
                self.lora_list.addWidget(row)
                row.show()  # the layout alone would show it only on the next event loop turn
                self.lora_rows.append(row)
        else:
            for row, c in zip(self.lora_rows, s.loras, strict=True):
                row.show_values(c.strength, c.expert, experts=experts)

    def add_lora_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add a LoRA", "", LORA_FILTER)
        if path:
            self.form.add_lora(path)

    @staticmethod
    def _set_combo_data(combo: QComboBox, value: object) -> None:
        i = combo.findData(value)
        if i >= 0:
            combo.setCurrentIndex(i)

    def _fill_presets(self, s: FormState) -> None:
        self.preset_combo.blockSignals(True)
        self.preset_combo.clear()
        match = -1
        for i, (label, w, h) in enumerate(presets(self.form.entry)):
            self.preset_combo.addItem(label, (w, h))
            if (w, h) == (s.width, s.height):
                match = i
        self.preset_combo.addItem("Custom", None)
        self.preset_combo.setCurrentIndex(match if match >= 0 else self.preset_combo.count() - 1)
        self.preset_combo.blockSignals(False)

    def _fill_backends(self, s: FormState) -> None:
        """PyTorch always; an engine backend only when engines exist for this model and GPU."""
        available = ["torch", *self.engine_folders]
        if s.backend not in available:
            available.append(s.backend)  # keep what a reused job asked for visible
        self.backend_combo.clear()
        for b in BACKENDS:
            if b in available:
                self.backend_combo.addItem(BACKEND_LABELS[b], b)
        self._set_combo_data(self.backend_combo, s.backend)

    def _backend_picked(self, _index: int) -> None:
        backend = self.backend_combo.currentData() or "torch"
        self.form.update(backend=backend, engines=self.engine_folders.get(backend, ""))

    def refresh_engines(self) -> None:
        """Look for engines that fit the selected model (after a model change or a build)."""
        self.engine_folders = usable_engine_folders(self.settings, self.form.entry)
        s = self.form.state
        if s.backend != "torch" and s.backend not in self.engine_folders:
            self.form.update(backend="torch", engines="")
        elif s.backend != "torch":
            self.form.update(engines=self.engine_folders[s.backend])
        self._render(self.form.state)

    def _preset_picked(self, index: int) -> None:
        data = self.preset_combo.itemData(index)
        if data:
            self.form.set_size(*data)

    def _temporal(self) -> int:
        return self.form.entry.temporal_factor if self.form.entry else 4

    def _seconds_edited(self, seconds: float) -> None:
        s = self.form.state
        self.form.update(frames=frames_for_seconds(seconds, s.fps, self._temporal()))

    def _frames_edited(self) -> None:
        t = self._temporal()
        n = self.frames_spin.value()
        self.form.update(frames=max(0, round((n - 1) / t)) * t + 1)  # snap to 4n+1

    def _frames_stepped(self, n: int) -> None:
        t = self._temporal()
        if (n - 1) % t == 0:
            self.form.update(frames=n)

    # ------------------------------------------------------------------ models

    def rescan(self) -> None:
        self.statusBar().showMessage("Scanning model folders…", 3000)
        self.service.request_scan(scan_folders(self.settings))

    def add_model_folder(self, folder: str | Path) -> None:
        self.settings = self.settings.with_model_dir(folder)
        save_settings(self.settings)
        self.rescan()

    def add_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of models")
        if folder:
            self.add_model_folder(folder)

    def _on_models(self, entries: tuple[ModelEntry, ...]) -> None:
        """Only usable models go in the picker; the rest behind the ⚠ button with a reason."""
        self.models = tuple(e for e in entries if e.ok)
        unusable = [e for e in entries if not e.ok]
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for e in self.models:
            self.model_combo.addItem(e.label, e.path)
        self.model_combo.setPlaceholderText("no Wan model found: Add folder…")
        self.model_combo.blockSignals(False)
        self.form.set_models([e.path for e in self.models])
        self.unusable_button.setVisible(bool(unusable))
        self.unusable_button.setText(f"⚠ {len(unusable)}")
        self.unusable_button.setToolTip("\n".join(f"{e.name}: {e.reason}" for e in unusable))
        want = self.form.state.model or self.settings.last_model
        idx = next((i for i, e in enumerate(self.models) if e.path == want), -1)
        if idx < 0:
            idx = next((i for i, e in enumerate(self.models) if e.ok), -1)
        if idx >= 0:
            self.model_combo.setCurrentIndex(idx)
            self._model_picked(idx)
        else:
            self._render(self.form.state)  # the form's model is gone: the picker says so
        nothing = [e.error for e in unusable if e.error.startswith("no Wan model found")]
        found = f"{len(self.models)} model(s) found, {len(unusable)} could not load"
        self.statusBar().showMessage(found if self.models else "; ".join(nothing) or found, 10_000)
        self.models_changed.emit()

    def _on_scan_progress(self, folders: int, folder: str) -> None:
        self.statusBar().showMessage(f"Scanning… {folders} folder(s): {folder}")

    def _show_unusable(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Information, "Could not load", "", parent=self)
        box.setText(self.unusable_button.toolTip())
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def _task_picked(self, _index: int) -> None:
        task, use = split_key(self.task_combo.currentData())
        if use is None:
            self.form.update(task=task)
        else:  # a VACE use: the vace task, and which of its inputs the panel shows
            from dataclasses import replace

            self.form.update(task=task, media=replace(self.form.state.media, use=use))

    def _model_picked(self, index: int) -> None:
        if not (0 <= index < len(self.models)):
            return
        entry = self.models[index]
        if self.form.entry is not None and self.form.entry.path == entry.path:
            return
        self.form.set_model(entry)
        self.refresh_engines()
        from dataclasses import replace

        self.settings = replace(self.settings, last_model=entry.path, forms=dict(self.form.memory))
        save_settings(self.settings)

    # ------------------------------------------------------------------ jobs

    def enqueue(self) -> None:
        try:
            job = self.form.make_job(self.settings)
        except WanError as e:
            from .service import UserError

            self.show_error(UserError.from_wan(e))
            return
        from dataclasses import replace

        self.settings = replace(
            self.settings,
            backend=self.form.state.backend,
            precision=self.form.state.precision,
            vram_plan=self.form.state.vram_plan,
        )
        self.remember_form()
        s = self.form.state
        note = preset_warning(s.model, s.preset, s.loras)
        if note:  # a hint, not a refusal: the user may know better (a merged distill)
            log.warning("%s", note)
            self.statusBar().showMessage(f"Note: {note}", 10_000)
        self.queue.add(job)

    def cancel_running(self) -> None:
        if self.queue.running:
            self.stage_label.setText("Cancelling…")
            self.queue.cancel(self.queue.running)

    def _selected_job(self) -> str | None:
        item = self.queue_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    def _move_selected(self, delta: int) -> None:
        job_id = self._selected_job()
        if job_id:
            self.queue.move(job_id, delta)
            self._select(self.queue_list, job_id)

    def _cancel_selected(self) -> None:
        job_id = self._selected_job()
        if job_id:
            self.queue.cancel(job_id)

    def _bind_keys(self) -> None:
        """Ctrl+Enter adds the job (from anywhere, the prompt included); Delete in the queue
        cancels the selected queued job; Space in the player plays / pauses it."""
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self, self.enqueue)
        delete = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.queue_list)
        delete.setContext(Qt.ShortcutContext.WidgetShortcut)
        delete.activated.connect(self._delete_pressed)
        space = QShortcut(QKeySequence(Qt.Key.Key_Space), self.view_tabs)
        space.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        space.activated.connect(self._space_pressed)
        self.generate_button.setToolTip("Add to queue (Ctrl+Enter)")

    def _space_pressed(self) -> None:
        player = self.view_tabs.currentWidget()
        if isinstance(player, VideoPlayer):
            player.toggle()

    def _delete_pressed(self) -> None:
        """Delete cancels a queued job; the running one only with its Cancel button."""
        job = self.queue.job(self._selected_job() or "")
        if job is not None and job.id != self.queue.running:
            self.queue.cancel(job.id)

    def _model_name(self, options: dict) -> str:
        """The model a job runs, as the picker names it (the folder's name when not listed)."""
        path = str(options.get("model") or "")
        entry = next((m for m in self.models if m.path == path), None)
        return (entry.name if entry is not None else "") or Path(path).name or "?"

    @staticmethod
    def _select(lst: QListWidget, key: str) -> None:
        for i in range(lst.count()):
            if lst.item(i).data(Qt.ItemDataRole.UserRole) == key:
                lst.setCurrentRow(i)
                return

    def _refresh_queue(self) -> None:
        keep = self._selected_job()
        self.queue_list.clear()
        for j in self.queue.jobs:
            r = j.request
            state = {"running": "▶ running", "copying": "copying inputs…"}.get(j.state, "queued")
            state += " (recovered after a crash)" if j.recovered else ""
            text = (
                f"{state} · {r.get('width')}×{r.get('height')} · {r.get('frames')} f · "
                f"{r.get('steps')} steps · seed {j.seed}{_extras(j.options)}{continues_note(r)}\n"
                f"{self._model_name(j.options)} · {j.prompt[:60]}"
            )
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, j.id)
            self.queue_list.addItem(item)
        if keep:
            self._select(self.queue_list, keep)
        self.cancel_button.setEnabled(self.queue.running is not None)
        self._show_queue_state()

    def _refresh_history(self) -> None:
        self.history_list.clear()
        for e in reversed(self.queue.history):
            r = e.request
            took = f"{e.seconds:.1f} s" if e.seconds is not None else "—"
            vram = f"{e.peak_vram_gb:.1f} GB" if e.peak_vram_gb is not None else "CPU"
            head = (
                {
                    "done": "✔",
                    "failed": "✖ failed",
                    "cancelled": "⊘ cancelled",
                    "discarded": "⊘ discarded",
                }[e.status]
                if e.status in ("done", "failed", "cancelled", "discarded")
                else e.status
            )
            text = (
                f"{head} · seed {e.seed} · {r.get('width')}×{r.get('height')}×"
                f"{r.get('frames')} · {r.get('steps')} steps · {took} · {vram}"
                f"{_extras(e.options)}{continues_note(r)}\n"
                f"{self._model_name(e.options)} · {e.prompt[:70]}"
            )
            item = QListWidgetItem(text)
            if e.thumbnail and Path(e.thumbnail).is_file():
                item.setIcon(QIcon(QPixmap(e.thumbnail)))
            if e.error:
                item.setToolTip(e.error)
            if e.status == "failed":  # the badge: what happened and what to do, in the tooltip
                item.setForeground(QColor("#c62828"))
                if item.icon().isNull():
                    icon = QStyle.StandardPixmap.SP_MessageBoxWarning
                    item.setIcon(self.style().standardIcon(icon))
            item.setData(Qt.ItemDataRole.UserRole, e.id)
            self.history_list.addItem(item)

    def _selected_history(self):
        item = self.history_list.currentItem()
        if item is None and self.history_list.count():
            item = self.history_list.item(0)
        return self.queue.history_entry(item.data(Qt.ItemDataRole.UserRole)) if item else None

    def reuse_selected(self) -> None:
        e = self._selected_history()
        if e is not None:
            self.form.reuse(e.request, e.options, self.models, review=e.review)
            self.refresh_engines()

    def play_selected(self) -> None:
        """Play a history entry: the mp4 is decoded on a pool thread (a 720p clip takes seconds),
        then shown here."""
        e = self._selected_history()
        if e is None or not e.out or not Path(e.out).is_file():
            return
        self.statusBar().showMessage(f"Loading {Path(e.out).name}…", 3000)
        self.video_loader.load(e.out, (e.request, e.options))

    def _history_menu(self, pos) -> None:
        """Right-click on a history entry: Reuse settings, Open, Open folder, Delete…."""
        item = self.history_list.itemAt(pos)
        e = self.queue.history_entry(item.data(Qt.ItemDataRole.UserRole)) if item else None
        if e is None:
            return
        self.history_list.setCurrentItem(item)
        out = Path(e.out) if e.out else None
        menu = QMenu(self)
        menu.addAction("Reuse settings", self.reuse_selected)
        go_on = menu.addAction("Continue this video", lambda: self.continue_video(e.id))
        go_on.setEnabled(out is not None and out.is_file())  # a new job: extend = this video
        for text, path, what in (
            ("Open", out, "video"),
            ("Open folder", out.parent if out else None, "folder"),
        ):
            action = menu.addAction(text, lambda p=path, w=what: self._open_path(p, w))
            action.setEnabled(out is not None and out.is_file())
        menu.addSeparator()
        menu.addAction("Delete…", lambda: self.delete_history(e.id))
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.history_menu = menu
        menu.popup(self.history_list.viewport().mapToGlobal(pos))

    def continue_video(self, job_id: str) -> None:
        """A new job that continues a history entry's video (its last frames condition the
        next windows): the entry's settings, ``extend`` = its video; once queued, the form no
        longer continues it. A refused job leaves it in the form, the field marked. The entry's
        Review before decode goes with it where the job takes one (a SkyReels-V2 DF model);
        sliding windows would refuse it: it is turned off, and the status bar says so."""
        from dataclasses import replace

        e = self.queue.history_entry(job_id)
        if e is None or not e.out or not Path(e.out).is_file():
            return
        self.form.reuse(e.request, e.options, self.models, review=e.review)
        self.refresh_engines()
        self.form.update(long_video=replace(self.form.state.long_video, extend=e.out))
        dropped = drop_refused_review(self.form)  # sliding windows: "" for a DF model
        before = [j.id for j in self.queue.jobs]
        self.enqueue()
        if [j.id for j in self.queue.jobs] != before:  # accepted
            self.form.update(long_video=replace(self.form.state.long_video, extend=""))
            said = f"Continuing {Path(e.out).name}: job added"
            self.statusBar().showMessage(f"{said}. {dropped}" if dropped else said, 15_000)
        elif dropped:
            self.statusBar().showMessage(dropped, 15_000)

    def delete_history(self, job_id: str) -> None:
        """Remove a history entry, asking whether its video (on disk) goes too."""
        e = self.queue.history_entry(job_id)
        if e is None:
            return
        out = Path(e.out) if e.out and Path(e.out).is_file() else None
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Delete from history",
            f"Remove “{e.prompt[:60]}” from the history?",
            parent=self,
        )
        also = None
        if out is not None:
            box.setInformativeText(f"Its video {out.name} (in {out.parent}) can be deleted too.")
            also = box.addButton("Delete the video too", QMessageBox.ButtonRole.DestructiveRole)
        keep = box.addButton(
            "Keep the video" if out else "Remove", QMessageBox.ButtonRole.AcceptRole
        )
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(keep)
        box.buttonClicked.connect(
            lambda b: (
                self._remove_history(job_id, delete_video=b is also) if b in (keep, also) else None
            )
        )
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()
        self.delete_box = box

    def _remove_history(self, job_id: str, *, delete_video: bool) -> None:
        e = self.queue.remove_history(job_id)
        if e is None:
            return
        files = [Path(e.thumbnail)] if e.thumbnail else []  # the app's own copy
        out = Path(e.out) if e.out else None
        if delete_video and out is not None:
            files += [out, out.with_name(out.name + ".json")]  # the video and its settings
            if getattr(self, "_shown", None) and self._shown[0] == out:
                self.video_player.clear()
                for b in (self.open_file_button, self.open_folder_button):
                    b.setEnabled(False)
        for f in files:
            try:
                f.unlink(missing_ok=True)
            except OSError as err:
                log.warning("cannot delete %s: %s", f, err)
                self.statusBar().showMessage(f"Cannot delete {f}: {err.strerror}", 10_000)
                return
        if delete_video or out is None or not out.is_file():  # no video names its inputs now
            remove_saved_inputs(e.request, e.id)
        said = f"Deleted {out.name}" if delete_video and out else "Removed from the history"
        self.statusBar().showMessage(said, 5000)

    def _on_video_loaded(self, path: str, frames, fps: int, context) -> None:
        if frames:
            request, options = context
            self._show_video(Path(path), frames, fps, request, options)
        else:
            self.statusBar().showMessage(f"Cannot read {path}", 5000)

    # ------------------------------------------------------------------ progress and results

    def _on_progress(self, p: Progress) -> None:
        if not p.total:  # a stage starts: the ETA times each window's encode and decode
            self.long_panel.eta.stage(p.job_id, p.stage, window=p.window, windows=p.windows)
        if p.stage == "start":
            self._preview_job = p.job_id
            self.preview_player.clear()
            self.view_tabs.setCurrentWidget(self.preview_player)
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0)
            self.stage_label.setText("Starting…")
        elif p.stage == "denoise" and p.total:
            self.progress_bar.setRange(0, p.total)
            self.progress_bar.setValue(p.step)
            where = progress_text(p.window, p.windows, p.step, p.total)  # window 3/8 · step 12/30
            eta = self.long_panel.eta(
                p.job_id, window=p.window, windows=p.windows, step=p.step, total=p.total, eta=p.eta
            )
            self.stage_label.setText(f"Denoising · {where} · ETA {_clock(eta)}")
            self._show_job_progress(p.job_id, where)
        else:
            names = {
                "load": "Loading model…",
                "encode": "Encoding prompt…",
                "denoise": "Denoising…",
                "decode": "Decoding video…",
            }
            text = names.get(p.stage, p.stage)
            window = f"window {p.window}/{p.windows} · " if p.windows > 1 else ""
            self.stage_label.setText(window + text)
        self.cancel_button.setEnabled(True)

    def _show_job_progress(self, job_id: str, where: str) -> None:
        """The running job's queue line says where it is: "▶ running · window 3/8 · step 12/30"."""
        role = Qt.ItemDataRole.UserRole + 1  # the line as _refresh_queue wrote it
        for i in range(self.queue_list.count()):
            item = self.queue_list.item(i)
            if item.data(Qt.ItemDataRole.UserRole) == job_id:
                base = item.data(role) or item.text()
                item.setData(role, base)
                head, sep, rest = base.partition(" · ")
                item.setText(f"{head} · {where}{sep}{rest}")
                return

    def _on_preview(self, job_id: str, preview: PreviewFrames) -> None:
        if job_id != self._preview_job:
            return
        self.preview_player.set_frames(preview.frames, fps=preview.fps)
        how = "tiny VAE" if preview.decoder == "tiny-vae" else "latent→RGB, no VAE"
        window = f"window {preview.window}/{preview.windows}, " if preview.windows > 1 else ""
        self.preview_player.view.setToolTip(
            f"x0 prediction of {window}step {preview.step}/{preview.total} ({how})"
        )

    def _on_finished(self, job_id: str, result: JobResult) -> None:
        # jobs waiting on a pause: say so, not "Done"
        self.stage_label.setText(self.queue.idle_note() or f"Done in {result.seconds:.1f} s")
        self.progress_bar.setValue(self.progress_bar.maximum())
        job_entry = self.queue.history_entry(job_id)
        self._show_video(
            result.out,
            result.frames,
            result.fps,
            result.request,
            job_entry.options if job_entry else {},
        )
        self.last_result = result

    def _show_video(self, out: Path, frames, fps: int, request: dict, options: dict) -> None:
        self._shown = (Path(out), request, options)
        self.video_player.set_frames(frames, fps)
        self.view_tabs.setCurrentWidget(self.video_player)
        for b in (self.open_file_button, self.open_folder_button, self.copy_settings_button):
            b.setEnabled(True)

    def _on_failed(self, job_id: str, error: UserError) -> None:
        """A job that failed while running: a badge on its history line (the message and what to
        do in its tooltip) and the status bar say it; no dialog takes the focus."""
        self.last_error = error
        self.stage_label.setText(f"Failed: {error.title}")
        what = f" — What to do: {error.remedy}" if error.remedy else ""
        self.statusBar().showMessage(f"Job failed: {error.message}{what}", 60_000)

    def _field_widgets(self) -> dict[str, tuple[QWidget, ...]]:
        """The widgets of each form field a refused job can point at (viewmodels.FIELDS)."""
        return {
            "model": (self.model_combo,),
            "prompt": (self.prompt_edit,),
            "task": (self.task_combo,),
            "image": (self.first_frame,),
            "last_image": (self.last_frame,),
            "size": (self.width_spin, self.height_spin),
            "frames": (self.frames_spin, self.seconds_spin),
            "steps": (self.steps_spin,),
            "guidance": (self.guidance_spin,),
            "shift": (self.shift_spin,),
            "seed": (self.seed_spin,),
            "review": (self.review_check,),
            **self.vace_panel.field_widgets(),
            **self.long_panel.field_widgets(),
        }

    def _mark_field(self, field: str, message: str) -> None:
        """Bound to FormModel.invalid: the field at fault gets a red border and the message as
        its tooltip; every other field's mark goes."""
        for name, widgets in self._field_widgets().items():
            for w in widgets:
                bad = name == field
                was = bool(w.property("invalid"))
                if bad and not was:
                    w.setProperty("tooltip_before", w.toolTip())
                    if _INVALID_STYLE not in w.styleSheet():
                        w.setStyleSheet(w.styleSheet() + _INVALID_STYLE)
                if bad:
                    w.setToolTip(message)
                elif was:
                    w.setToolTip(str(w.property("tooltip_before") or ""))
                if bad != was:
                    w.setProperty("invalid", bad)
                    w.style().unpolish(w)
                    w.style().polish(w)

    def _on_cancelled(self, job_id: str) -> None:
        if job_id == self._preview_job:  # its last preview is not a result: it goes
            self.preview_player.clear()
            self.preview_player.view.setToolTip("")
        self.stage_label.setText("Cancelled — nothing was written")
        self.progress_bar.setValue(0)
        self.cancel_button.setEnabled(self.queue.running is not None)

    def show_error(self, error: UserError) -> None:
        """A readable, non-blocking message box: what happened and what to do next."""
        self.last_error = error
        if self.error_box is not None:
            self.error_box.close()
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            error.title,
            error.message,
            QMessageBox.StandardButton.Ok,
            self,
        )
        if error.remedy:
            box.setInformativeText(f"What to do: {error.remedy}")
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()
        self.error_box = box

    def show_data_notes(self, notes: list[str] | tuple[str, ...]) -> None:
        """What was wrong with the data files at start (a damaged file moved aside, the data dir
        not writable): kept in the status bar until the app closes, every line in its tooltip."""
        if not notes:
            return
        if self.data_label is None:
            self.data_label = QLabel()
            self.statusBar().insertPermanentWidget(0, self.data_label)
        lines = [*(self.data_label.toolTip().splitlines()), *notes]
        more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
        text = (
            self.data_label.fontMetrics().elidedText(
                f"⚠ {lines[0]}", Qt.TextElideMode.ElideRight, 560 - 8 * len(more)
            )
            + more
        )
        self.data_label.setText(text)
        self.data_label.setToolTip("\n".join(lines))

    def show_data_dir_problem(self, problem: DataDirProblem) -> None:
        """The data dir cannot be written: a non-blocking dialog (the app runs on, saving
        nothing), and a line in the status bar."""
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "Your data folder cannot be used",
            problem.message,
            QMessageBox.StandardButton.Ok,
            self,
        )
        box.setInformativeText(f"What to do: {problem.remedy}")
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()
        self.data_dir_box = box
        self.show_data_notes([f"Not saving: {problem.folder} cannot be used ({problem.reason})"])

    # ------------------------------------------------------------------ result buttons

    def open_file(self) -> None:
        if getattr(self, "_shown", None):
            self._open_path(self._shown[0], "video")

    def open_folder(self) -> None:
        if getattr(self, "_shown", None):
            self._open_path(self._shown[0].parent, "folder")

    def _open_path(self, path: Path, what: str) -> None:
        """Open in the desktop's app; where none answers, a dialog shows the path to copy."""
        if self.path_dialog is not None:
            self.path_dialog.close()
        self.path_dialog = open_path(path, what, self)

    def copy_settings(self) -> None:
        if getattr(self, "_shown", None):
            out, request, options = self._shown
            text = json.dumps(
                {"request": request, "options": options, "out": str(out)},
                indent=2,
                ensure_ascii=False,
            )
            QGuiApplication.clipboard().setText(text)
            self.statusBar().showMessage("Settings copied to the clipboard", 3000)

    def open_log_folder(self) -> None:
        self._open_path(log_dir(), "log folder")

    def open_about_dialog(self) -> None:
        from .about_dialog import AboutDialog

        self.about_dialog = AboutDialog(self)
        self.about_dialog.open()

    def open_engines_dialog(self) -> None:
        from .engines_dialog import EnginesDialog

        self.engines_dialog = EnginesDialog(
            self.settings, self.form.entry, self.service, parent=self
        )
        self.engines_dialog.finished.connect(lambda _r: self.refresh_engines())
        self.engines_dialog.built.connect(lambda _path: self.refresh_engines())
        self.engines_dialog.open()

    def open_settings_dialog(self) -> None:
        from .settings_dialog import SettingsDialog

        self.settings_dialog = SettingsDialog(self.settings, parent=self)
        self.settings_dialog.accepted.connect(self._settings_saved)
        self.settings_dialog.open()

    def _settings_saved(self) -> None:
        self.settings = self.settings_dialog.settings
        self.service.set_preview_decoder(self.settings.preview_decoder)
        if not self.settings.preview_decoder and self.form.state.tiny_vae:
            self.form.update(tiny_vae=False)
        self._render(self.form.state)
        self.rescan()  # the model folders may have changed
        self.refresh_engines()

    def open_models_dialog(self) -> None:
        from .first_run import ModelsDialog

        self.models_dialog = ModelsDialog(self.settings, parent=self)
        self.models_dialog.folder_added.connect(self.add_model_folder)
        self.models_dialog.open()

    # ------------------------------------------------------------------ status

    def refresh_status(self) -> None:
        """Read the devices again, on Qt's thread pool; the status line follows them."""
        self.gpu_poller.poll()

    def _show_system(self, gpus: tuple[system_info.GpuMemory, ...]) -> None:
        self.system_label.setText(system_info.status_text(gpus))

    # ------------------------------------------------------------------ queue state, closing

    def _init_queue_state(self) -> None:
        self._close_how = ""  # the answer to the close question: "keep" | "cancel" | "finish"
        self.close_question: CloseQuestion | None = None
        self._resumed = resumed_text(self.queue.resumed)  # shown for a minute, then dropped
        if self._resumed:
            log.info("%s from the last session", self._resumed)
            QTimer.singleShot(60_000, self._drop_resumed_note)
        self.remember_timer = QTimer(self, singleShot=True, interval=2000)
        self.remember_timer.timeout.connect(self.remember_form)  # the form, 2 s after an edit
        self.form.changed.connect(lambda _s: self.remember_timer.start())
        self.queue.finished.connect(self._close_if_done)
        self.queue.failed.connect(self._close_if_done)
        self.queue.cancelled.connect(self._close_if_done)
        self.queue.discarded.connect(self._close_if_done)  # a job discarded at review
        self._show_queue_state()

    def _drop_resumed_note(self) -> None:
        self._resumed = ""
        self._show_queue_state()

    def _show_queue_state(self) -> None:
        """The queue's header, its status-bar line and the Pause button say whether it is
        paused and how many jobs wait; with nothing running, so does the progress line."""
        q = self.queue
        summary = q.summary()
        self.queue_box.setTitle(f"Queue — {summary}" if summary else "Queue")
        text = " · ".join(x for x in (self._resumed, summary) if x)
        self.queue_label.setText(text)
        self.queue_label.setVisible(bool(text))
        self.pause_button.blockSignals(True)
        self.pause_button.setChecked(q.paused)
        self.pause_button.setText("Resume" if q.paused else "Pause")
        self.pause_button.blockSignals(False)
        if q.idle_note():
            self.stage_label.setText(q.idle_note())
        elif q.running is None and self.stage_label.text().startswith("⏸ Paused"):
            self.stage_label.setText("Idle")  # the waiting jobs were cancelled, or resumed

    def remember_form(self) -> None:
        """The form's values for its model go into the settings file (restored at start and
        when that model is picked again)."""
        self.remember_timer.stop()
        self.form.remember()
        if self.form.memory != self.settings.forms:
            from dataclasses import replace

            self.settings = replace(self.settings, forms=dict(self.form.memory))
        save_settings(self.settings)

    def _ask_before_closing(self) -> None:
        job = self.queue.job(self.queue.running or "")
        if self.close_question is not None:
            self.close_question.close()
        box = CloseQuestion(job.prompt if job else "", self.queue.waiting, self)
        box.answered.connect(self._close_answered)
        box.open()
        self.close_question = box

    def _close_answered(self, answer: str) -> None:
        if answer == "finish":  # nothing else starts; the window closes when the job ends
            self._close_how = "finish"
            self.queue.set_paused(True)
            self.statusBar().showMessage("Closing when the running job is done…")
            self._close_if_done()
        elif answer in ("keep", "cancel"):
            self._close_how = answer
            self.close()

    def _close_if_done(self, *_args: object) -> None:
        if self._close_how == "finish" and self.queue.running is None:
            self.close()

    def closeEvent(self, event) -> None:
        if self.queue.running and not self.queue.closing and self._close_how in ("", "finish"):
            event.ignore()  # asked first: finish it, stop it and keep it queued, or cancel it
            self._ask_before_closing()
            return
        self.remember_form()
        self.status_timer.stop()
        self.gpu_poller.stop()
        self.queue.shutdown(cancel_running=self._close_how == "cancel")
        # the window's helpers on Qt's thread pool (GPU list, video decode, input copies, About
        # facts) emit into objects that go with the window: let them end before it does
        QThreadPool.globalInstance().waitForDone(10_000)
        super().closeEvent(event)


class VideoLoader(QObject):
    """Decodes an mp4 to QImages on Qt's thread pool; ``loaded`` arrives on the GUI thread."""

    loaded = Signal(str, object, int, object)  # path, frames (() on failure), fps, context

    def load(self, path: str, context: object = None) -> None:
        QThreadPool.globalInstance().start(lambda: self._decode(path, context))

    def _decode(self, path: str, context: object) -> None:
        import imageio.v3 as iio

        from .service import qimage_from_rgb

        try:
            frames = tuple(qimage_from_rgb(f) for f in iio.imread(path))
            fps = round(float(iio.immeta(path).get("fps", 16)))
        except Exception:  # a deleted or damaged file: say so in the status bar
            log.exception("cannot decode %s", path)
            frames, fps = (), 16
        self.loaded.emit(path, frames, fps, context)


def scan_folders(settings: AppSettings) -> tuple[str, ...]:
    """The user's model folders, plus the model manager's download folder when it exists."""
    from wan_desktop.model_manager import default_models_dir

    folders = list(settings.model_dirs)
    managed = default_models_dir()
    if managed.is_dir() and str(managed) not in folders:
        folders.append(str(managed))
    return tuple(folders)


def usable_engine_folders(settings: AppSettings, entry: ModelEntry | None) -> dict[str, str]:
    """backend -> engine folder that fits ``entry`` on this machine (empty on any trouble: a broken
    engine folder must never break the window)."""
    if entry is None or not entry.ok:
        return {}
    try:
        from .engine_folders import usable_engines

        return usable_engines(settings.engines, entry)
    except Exception:
        log.exception("listing engines failed")
        return {}
