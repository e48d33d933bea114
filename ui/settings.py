"""User preferences (the fourth kind of configuration in STYLE.md): folders and defaults, saved as
JSON in the data dir. Frozen; ``dataclasses.replace`` makes a changed copy.

A settings file the app cannot use as it is (not JSON, not an object, a value of the wrong type)
is moved aside to ``settings.json.bad``; the values that are intact are kept (and saved back)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from wan_desktop.errors import ConfigError

from .paths import (
    DataFileError,
    configured_data_dir,
    data_dir,
    data_dir_problem,
    field_problems,
    read_json,
    set_aside,
    write_json_atomic,
)

log = logging.getLogger(__name__)

VRAM_PLANS = ("auto", "8", "12", "16", "24")  # GB; "auto" lets the planner use what the GPU has
BACKENDS = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = ("bf16", "fp8", "int8")


@dataclass(frozen=True, kw_only=True)
class AppSettings:
    model_dirs: tuple[str, ...] = ()  # scanned for models (folders or ComfyUI models/ trees)
    outputs_dir: str = ""  # "" → <data dir>/outputs
    engines_dir: str = ""  # "" → <data dir>/engines
    backend: str = "torch"
    precision: str = "bf16"
    vram_plan: str = "auto"
    device: str | None = None  # None: CUDA when available
    dtype: str | None = None  # None: bf16 on GPU, fp32 on CPU
    preview_interval_s: float = 0.25  # at most one preview this often (the last step always)
    # a TAEHV file (taew2_1 / taew2_2): real previews, and the "fast final decode" option
    preview_decoder: str = ""
    last_model: str = ""
    # the job form as last used with each model (model path -> viewmodels.remembered(); checked
    # value by value when recalled): restored at start and when that model is picked again
    forms: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vram_plan not in VRAM_PLANS:
            object.__setattr__(self, "vram_plan", "auto")
        if self.backend not in BACKENDS:
            object.__setattr__(self, "backend", "torch")
        if self.precision not in PRECISIONS:
            object.__setattr__(self, "precision", "bf16")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AppSettings:
        """From the saved JSON; unknown keys are ignored, a value of the wrong type is a
        ConfigError naming it."""
        bad = field_problems(cls, data)
        if bad:
            name, why = next(iter(bad.items()))
            raise ConfigError(f"setting {name!r}: {why}")
        names = {f.name for f in fields(cls)}
        clean = {k: v for k, v in data.items() if k in names}
        if "model_dirs" in clean:
            clean["model_dirs"] = tuple(clean["model_dirs"])
        if "forms" in clean:  # a model's remembered form that is not an object is forgotten
            clean["forms"] = {k: v for k, v in clean["forms"].items() if isinstance(v, dict)}
        return cls(**clean)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_dirs"] = list(self.model_dirs)
        return d

    @property
    def outputs(self) -> Path:
        p = Path(self.outputs_dir).expanduser() if self.outputs_dir else data_dir() / "outputs"
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def engines(self) -> Path:
        return Path(self.engines_dir).expanduser() if self.engines_dir else data_dir() / "engines"

    def with_model_dir(self, folder: str | Path) -> AppSettings:
        folder = str(Path(folder).expanduser().resolve())
        if folder in self.model_dirs:
            return self
        return replace(self, model_dirs=(*self.model_dirs, folder))


def settings_path() -> Path:
    return data_dir() / "settings.json"


def read_settings() -> tuple[AppSettings, tuple[str, ...]]:
    """The saved settings and what was wrong with the file (lines for the status bar). A damaged
    file is moved aside; the values of the right type are kept and saved back. When this session
    cannot use the data dir, the settings found there are read (and never changed)."""
    path = settings_path()
    saved = configured_data_dir() / "settings.json"
    if data_dir_problem() is not None and not path.exists() and saved.is_file():
        path = saved
    try:
        data = read_json(path, {})
    except DataFileError as e:
        return AppSettings(), (set_aside(path, str(e)),)
    if not isinstance(data, dict):
        return AppSettings(), (set_aside(path, "is not a settings object"),)
    bad = field_problems(AppSettings, data)
    if not bad:
        return AppSettings.from_dict(data), ()
    settings = AppSettings.from_dict({k: v for k, v in data.items() if k not in bad})
    wrong = "; ".join(f"{k}: {why}" for k, why in bad.items())
    note = set_aside(
        path, f"had values of the wrong type ({wrong})", "the other settings were kept"
    )
    save_settings(settings)
    return settings, (note,)


def load_settings() -> AppSettings:
    return read_settings()[0]


def save_settings(settings: AppSettings) -> bool:
    """Save (atomically); False when the file cannot be written (logged; the app goes on)."""
    try:
        write_json_atomic(settings_path(), settings.to_dict())
    except OSError as e:
        log.warning("cannot save the settings (%s): they last until the app closes", e)
        return False
    return True
