"""How to run a generation (not what to make): model files, backend, device, precision, memory.

Shared by the run owner (run.py), the backends' factory (engines/factory.py) and the app's saved
jobs, so it lives below all of them. Past the CLI boundary the backend and the precision are enums;
the saved form (``to_dict``: queue files, sidecars) keeps their names.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ConfigError
from .variants import Precision


class Backend(enum.Enum):
    """What runs the components: our PyTorch modules, or an engine folder (wan-desktop export)."""

    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"

    @classmethod
    def parse(cls, text: str | Backend) -> Backend:
        if isinstance(text, Backend):
            return text
        try:
            return cls(text)
        except ValueError:
            names = ", ".join(b.value for b in cls)
            raise ConfigError(f"unknown backend {text!r}; expected one of {names}") from None


class ParallelMode(enum.Enum):
    """How ``parallel`` > 1 processes share a generation (the multi-GPU issue): cond and uncond on
    different ranks (CFG), the DiT's tokens sharded across ranks (Ulysses sequence parallel), or
    AUTO: the CFG split when guidance > 1 and the count is even, sequence parallel across the rest."""

    AUTO = "auto"
    CFG = "cfg"
    SEQUENCE = "sequence"

    @classmethod
    def parse(cls, text: str | ParallelMode) -> ParallelMode:
        if isinstance(text, ParallelMode):
            return text
        try:
            return cls(text)
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ConfigError(f"unknown parallel mode {text!r}; expected one of {names}") from None


# what --precision may ask of a run (fp32 / fp16 are export precisions, not a run's)
RUN_PRECISIONS = (Precision.BF16, Precision.FP8, Precision.INT8)


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to run (not what to make): model files, backend, device, precision, memory plan."""

    model: str | None = None
    vae: str | None = None
    text_encoder: str | None = None
    tokenizer: str | None = None
    clip: str | None = None  # a CLIP vision file (Wan2.1 I2V / FLF2V: clip_vision_h)
    random_weights: str | None = None  # a variant name: full-size model with random weights
    device: str | None = None  # "cpu" | "cuda"; None: cuda when available
    dtype: str | None = None  # "float32" | "bfloat16" | "float16"; None: bf16 on GPU, fp32 on CPU
    backend: Backend = Backend.TORCH  # a name ("torch") is taken and parsed
    engines: str | None = None
    precision: Precision | None = None  # BF16 | FP8 | INT8 (or a name); None: weights as stored
    vram_budget_gb: float | None = None
    attention: str = "sdpa"  # "sdpa" | "sage" | "sdpa-<kernel>"
    compile: bool = False  # torch.compile the DiT blocks
    step_cache: float | None = None  # TeaCache-style threshold; None: every step computed
    swap_blocks: int = 0  # DiT blocks streamed from pinned CPU memory (the planner's decision)
    loras: tuple[str, ...] = ()  # "FILE[:STRENGTH]" merged into the (high-noise / only) DiT
    loras_low: tuple[str, ...] = ()  # the same for Wan2.2's low-noise expert
    preset: str | None = None  # presets.PRESETS name; already applied to the request
    tiny_vae: str | None = None  # a TAEHV taew2_x file: fast final decode (and previews)
    parallel: int = 1  # worker processes, one per GPU (gloo on --device cpu); 1: this process
    parallel_mode: ParallelMode = ParallelMode.AUTO  # a name ("cfg") is taken and parsed

    def __post_init__(self) -> None:
        # the front ends hand over names ("fp8") and JSON lists; what is stored is typed
        object.__setattr__(self, "backend", Backend.parse(self.backend))
        object.__setattr__(self, "parallel_mode", ParallelMode.parse(self.parallel_mode))
        if (
            not isinstance(self.parallel, int)
            or isinstance(self.parallel, bool)
            or self.parallel < 1
        ):
            raise ConfigError(f"parallel is a process count of at least 1, got {self.parallel!r}")
        if self.precision is not None:
            precision = (
                Precision.parse(self.precision)
                if not isinstance(self.precision, Precision)
                else self.precision
            )
            if precision not in RUN_PRECISIONS:
                names = ", ".join(p.value for p in RUN_PRECISIONS)
                raise ConfigError(f"a run's precision is one of {names}, got {precision.value}")
            object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "loras", tuple(self.loras))
        object.__setattr__(self, "loras_low", tuple(self.loras_low))

    @property
    def precision_name(self) -> str | None:
        """The precision's name ("fp8"), as the backends' builders and the planner take it."""
        return None if self.precision is None else self.precision.value

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunOptions:
        """From a saved job or sidecar: unknown keys (older or newer versions) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """JSON's types: the enums by their names, tuples as lists."""
        d = asdict(self)
        d["backend"] = self.backend.value
        d["parallel_mode"] = self.parallel_mode.value
        d["precision"] = self.precision_name
        d["loras"], d["loras_low"] = list(self.loras), list(self.loras_low)
        return d
