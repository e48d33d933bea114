"""What the status bar shows: GPU name and VRAM (from nvidia-smi, so the GUI thread never touches
CUDA), and system RAM. Cheap enough for a timer every few seconds. And what Help → About shows:
the app's version, the GPU and the runtimes installed, read from package metadata (never by
importing torch, onnxruntime or TensorRT)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata


@dataclass(frozen=True)
class SystemStatus:
    gpu_name: str | None  # None: no NVIDIA GPU (CPU only)
    vram_used_gb: float | None
    vram_total_gb: float | None
    ram_used_gb: float | None
    ram_total_gb: float | None

    def text(self) -> str:
        if self.gpu_name is None:
            gpu = "CPU only (no NVIDIA GPU found)"
        else:
            gpu = f"{self.gpu_name}  VRAM {self.vram_used_gb:.1f} / {self.vram_total_gb:.1f} GB"
        ram = (
            ""
            if self.ram_total_gb is None
            else f"  ·  RAM {self.ram_used_gb:.1f} / {self.ram_total_gb:.1f} GB"
        )
        return gpu + ram


def _gpu() -> tuple[str, float, float] | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.used,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=3,
            check=True,
        ).stdout
        name, used, total = (x.strip() for x in out.splitlines()[0].split(","))
        return name, float(used) / 1024, float(total) / 1024  # MiB -> GiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class GpuMemory:
    """One CUDA device as the status bar and the GPUs selector see it. ``index`` is its CUDA
    index in this process (after CUDA_VISIBLE_DEVICES), which is what ``--parallel`` ranks use."""

    index: int
    name: str
    used_gb: float
    total_gb: float

    def text(self) -> str:
        return f"GPU {self.index}  {self.used_gb:.1f} / {self.total_gb:.1f} GB"


def parse_gpus(csv: str, visible: str | None) -> tuple[GpuMemory, ...]:
    """nvidia-smi's ``index,uuid,name,memory.used,memory.total`` lines (MiB) -> the devices CUDA
    will show this process. ``visible`` is CUDA_VISIBLE_DEVICES (None: unset, all of them): a
    list of indices or UUIDs (prefixes accepted, as CUDA does), in the order CUDA numbers them;
    the list stops at the first entry that names no device, as CUDA's does. Assumes
    CUDA_DEVICE_ORDER=PCI_BUS_ID numbering, nvidia-smi's own (the same on one-model machines)."""
    rows = []
    for line in csv.splitlines():
        parts = [x.strip() for x in line.split(",")]
        if len(parts) != 5:
            continue
        try:
            rows.append((int(parts[0]), parts[1], parts[2], float(parts[3]), float(parts[4])))
        except ValueError:
            continue
    if visible is not None:
        chosen = []
        for entry in (e.strip() for e in visible.split(",")):
            row = next(
                (
                    r
                    for r in rows
                    if (entry.isdigit() and r[0] == int(entry))
                    or (entry.startswith("GPU-") and r[1].startswith(entry))
                ),
                None,
            )
            if row is None or row in chosen:
                break
            chosen.append(row)
        rows = chosen
    return tuple(
        GpuMemory(index=i, name=name, used_gb=used / 1024, total_gb=total / 1024)
        for i, (_smi, _uuid, name, used, total) in enumerate(rows)
    )


def visible_gpus() -> tuple[GpuMemory, ...]:
    """The CUDA devices this process can use, with their VRAM in use (every process's) and in
    total, from nvidia-smi: no CUDA in this process, so any thread may call it (it takes up to a
    few hundred ms: not on the GUI thread). Empty without nvidia-smi or an NVIDIA driver."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ()
    try:
        out = subprocess.run(
            [
                exe,
                "--query-gpu=index,uuid,name,memory.used,memory.total",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=3,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return parse_gpus(out, os.environ.get("CUDA_VISIBLE_DEVICES"))


def _ram() -> tuple[float, float] | None:
    if sys.platform.startswith("linux"):
        try:
            info = {}
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    key, value = line.split(":", 1)
                    info[key] = int(value.split()[0])  # kB
            total = info["MemTotal"] / 2**20
            return total - info.get("MemAvailable", info.get("MemFree", 0)) / 2**20, total
        except (OSError, KeyError, ValueError):
            return None
    if sys.platform == "win32":
        import ctypes

        class _Mem(ctypes.Structure):
            _fields_ = [
                ("dwLength", ctypes.c_ulong),
                ("dwMemoryLoad", ctypes.c_ulong),
                ("ullTotalPhys", ctypes.c_ulonglong),
                ("ullAvailPhys", ctypes.c_ulonglong),
                ("ullTotalPageFile", ctypes.c_ulonglong),
                ("ullAvailPageFile", ctypes.c_ulonglong),
                ("ullTotalVirtual", ctypes.c_ulonglong),
                ("ullAvailVirtual", ctypes.c_ulonglong),
                ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
            ]

        m = _Mem()
        m.dwLength = ctypes.sizeof(_Mem)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(m)):  # type: ignore[attr-defined]
            total = m.ullTotalPhys / 2**30
            return total - m.ullAvailPhys / 2**30, total
        return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        return None if total <= 0 else (float("nan"), total)
    except (ValueError, OSError, AttributeError):
        return None


def snapshot() -> SystemStatus:
    gpu = _gpu()
    ram = _ram()
    return SystemStatus(
        gpu_name=gpu[0] if gpu else None,
        vram_used_gb=gpu[1] if gpu else None,
        vram_total_gb=gpu[2] if gpu else None,
        ram_used_gb=ram[0] if ram else None,
        ram_total_gb=ram[1] if ram else None,
    )


def status_text(gpus: tuple[GpuMemory, ...] | list[GpuMemory]) -> str:
    """The status line from the GPU poller's device list (gpu_selector.GpuPoller: read on Qt's
    thread pool) and the system RAM (/proc/meminfo: no subprocess). One GPU: its name and VRAM;
    two or more: their count only, as the VRAM of each shows beside it (VramStatus)."""
    ram = _ram()
    tail = "" if ram is None else f"  ·  RAM {ram[0]:.1f} / {ram[1]:.1f} GB"
    if not gpus:
        return "CPU only (no NVIDIA GPU found)" + tail
    if len(gpus) == 1:
        g = gpus[0]
        return f"{g.name}  VRAM {g.used_gb:.1f} / {g.total_gb:.1f} GB" + tail
    return f"{len(gpus)} GPUs" + tail


# ----------------------------------------------------------------------------- Help → About


@dataclass(frozen=True)
class AboutFacts:
    version: str  # wan_desktop.__version__
    gpu: str  # "NVIDIA GeForce RTX 4090 · 24.0 GB VRAM", or "no CUDA GPU"
    torch: str | None  # installed versions (None: not installed), e.g. "2.8.0+cu128"
    onnxruntime: str | None
    tensorrt_rtx: str | None
    tensorrt: str | None
    python: str


def installed_version(module: str) -> str | None:
    """The version of the distribution that provides the import name ``module`` (e.g.
    "tensorrt_rtx" comes from the wheel "tensorrt_rtx_cu12"), from its metadata: nothing is
    imported. None when it is not installed."""
    names = metadata.packages_distributions().get(module) or [module]
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def gpu_text(torch_version: str | None) -> str:
    """The GPU as About shows it. nvidia-smi finds the card; a CPU-only PyTorch build cannot use
    it, which is said too."""
    gpu = _gpu()
    if gpu is None:
        return "no CUDA GPU"
    name, _used, total = gpu
    text = f"{name} · {total:.1f} GB VRAM"
    if torch_version is not None and torch_version.endswith("+cpu"):
        text += " (this PyTorch build has no CUDA: jobs run on the CPU)"
    return text


def about_facts() -> AboutFacts:
    """Takes up to a few seconds (nvidia-smi, package metadata): call it off the GUI thread."""
    import platform

    from wan_desktop import __version__

    torch = installed_version("torch")
    return AboutFacts(
        version=__version__,
        gpu=gpu_text(torch),
        torch=torch,
        onnxruntime=installed_version("onnxruntime"),
        tensorrt_rtx=installed_version("tensorrt_rtx"),
        tensorrt=installed_version("tensorrt"),
        python=platform.python_version(),
    )
