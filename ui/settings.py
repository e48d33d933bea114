"""User preferences (the fourth kind of configuration in STYLE.md): folders and defaults, saved as
JSON in the data dir. Frozen; ``dataclasses.replace`` makes a changed copy."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from .paths import data_dir, read_json, write_json_atomic

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

    def __post_init__(self) -> None:
        if self.vram_plan not in VRAM_PLANS:
            object.__setattr__(self, "vram_plan", "auto")
        if self.backend not in BACKENDS:
            object.__setattr__(self, "backend", "torch")
        if self.precision not in PRECISIONS:
            object.__setattr__(self, "precision", "bf16")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AppSettings:
        names = {f.name for f in fields(cls)}
        clean = {k: v for k, v in data.items() if k in names}
        if "model_dirs" in clean:
            clean["model_dirs"] = tuple(str(p) for p in clean["model_dirs"] or ())
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


def load_settings() -> AppSettings:
    data = read_json(settings_path(), {})
    return AppSettings.from_dict(data if isinstance(data, dict) else {})


def save_settings(settings: AppSettings) -> None:
    write_json_atomic(settings_path(), settings.to_dict())
