"""How to run a generation (not what to make): model files, backend, device, precision, memory.

Shared by the run owner (run.py), the backends' factory (engines/factory.py) and the app's saved
jobs, so it lives below all of them: it imports nothing of the project but dataclasses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to run (not what to make): model files, backend, device, precision, memory plan."""

    model: str | None = None
    vae: str | None = None
    text_encoder: str | None = None
    tokenizer: str | None = None
    random_weights: str | None = None  # a variant name: full-size model with random weights
    device: str | None = None  # "cpu" | "cuda"; None: cuda when available
    dtype: str | None = None  # "float32" | "bfloat16" | "float16"; None: bf16 on GPU, fp32 on CPU
    backend: str = "torch"  # "torch" | "onnxruntime" | "tensorrt"
    engines: str | None = None
    precision: str | None = None  # "bf16" | "fp8" | "int8"; None: weights as stored
    vram_budget_gb: float | None = None
    attention: str = "sdpa"  # "sdpa" | "sage" | "sdpa-<kernel>"
    compile: bool = False  # torch.compile the DiT blocks
    step_cache: float | None = None  # TeaCache-style threshold; None: every step computed
    swap_blocks: int = 0  # DiT blocks streamed from pinned CPU memory (the planner's decision)
    loras: tuple[str, ...] = ()  # "FILE[:STRENGTH]" merged into the (high-noise / only) DiT
    loras_low: tuple[str, ...] = ()  # the same for Wan2.2's low-noise expert
    preset: str | None = None  # presets.PRESETS name; already applied to the request
    tiny_vae: str | None = None  # a TAEHV taew2_x file: fast final decode (and previews)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunOptions:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
