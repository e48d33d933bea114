"""How ``wan-desktop bench`` measures: median call time, peak memory per phase, numeric error.

Shared by both sides of the benchmark (ours in ``bench.py``, diffusers' in ``bench_reference.py``)
so that their figures are taken the same way: CUDA events around each call on a GPU (perf_counter on
the CPU), after ``warmup`` untimed calls, median of ``repeat``; memory is torch's allocator peak and
reserved peak plus the device's used memory, reset at the start of every phase.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

GB = 1024**3


class Clock:
    """Median wall time of a callable: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: Any, warmup: int, repeat: int) -> None:
        self.device = device
        self.warmup = warmup
        self.repeat = repeat

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def once(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        """One timed call (the first call of a compiled model: compile and autotuning land here)."""
        import torch

        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.sync()
            start.record()
            out = fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0, out
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out

    def median(self, fn: Callable[[], Any], *, warmup: int | None = None) -> tuple[float, Any]:
        """``warmup`` untimed calls (default: the clock's), then the median of ``repeat`` timed
        ones; returns it with the last call's output."""
        out = None
        for _ in range(self.warmup if warmup is None else warmup):
            out = fn()
        times = []
        for _ in range(max(1, self.repeat)):
            t, out = self.once(fn)
            times.append(t)
        return statistics.median(times), out


class Memory:
    """Peak memory per phase: torch's allocator peak, its reserved peak, the device's used memory."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.phases: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        import torch

        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        yield
        if cuda:
            torch.cuda.synchronize(self.device)
            free, total = torch.cuda.mem_get_info(self.device)
            self.phases[name] = {
                "peak_allocated_gb": torch.cuda.max_memory_allocated(self.device) / GB,
                "peak_reserved_gb": torch.cuda.max_memory_reserved(self.device) / GB,
                "device_used_gb": (total - free) / GB,
            }

    def summary(self) -> dict[str, Any]:
        """The peaks over all phases, and each phase's (None on the CPU: no figures there)."""
        if not self.phases:
            return {
                "peak_allocated_gb": None,
                "peak_reserved_gb": None,
                "device_used_gb": None,
                "phases_gb": {},
            }
        keys = ("peak_allocated_gb", "peak_reserved_gb", "device_used_gb")
        out: dict[str, Any] = {k: round(max(p[k] for p in self.phases.values()), 3) for k in keys}
        out["phases_gb"] = {
            n: {k: round(v, 3) for k, v in p.items()} for n, p in self.phases.items()
        }
        return out


def rel_errors(fast: Any, ref: Any) -> dict[str, float]:
    """max |a−b| / max |b| (the tests' rel_err) and ||a−b|| / ||b|| (relative L2)."""
    a, b = fast.double(), ref.double()
    d = a - b
    return {
        "max_rel": float(d.abs().max() / b.abs().max().clamp_min(1e-30)),
        "rel_l2": float(d.norm() / b.norm().clamp_min(1e-30)),
    }


def psnr(a: Any, b: Any) -> float | None:
    """PSNR in dB of two 8-bit videos; None when they are identical."""
    mse = float((a.double() - b.double()).pow(2).mean())
    return None if mse == 0 else 10 * math.log10(255.0**2 / mse)


def free(device: Any) -> None:
    """Drop what the last figure left behind, so the next one starts from a clean allocator."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
