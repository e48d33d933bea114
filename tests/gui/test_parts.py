"""The pieces under the window, with numbers: latent→RGB preview, duration ↔ frames, presets, the
atomic queue/history files, settings, and how `wan-desktop` degrades without PySide6 or a display."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from wan_desktop.ui.preview import WAN21_BIAS, WAN21_RGB, WAN22_BIAS, WAN22_RGB, latent_to_rgb


def _u8(x: float) -> int:
    return round((min(1.0, max(-1.0, x)) + 1.0) * 127.5)


@pytest.mark.parametrize(
    "z, table, bias", [(16, WAN21_RGB, WAN21_BIAS), (48, WAN22_RGB, WAN22_BIAS)]
)
def test_preview_is_the_published_linear_map(z, table, bias):
    assert len(table) == z and all(len(r) == 3 for r in table) and len(bias) == 3
    # one latent pixel per channel k set to 2.0: its RGB is 2·F[k] + bias
    lat = np.zeros((z, 2, 3, z), np.float32)  # [z, T, h, w]
    for k in range(z):
        lat[k, 1, 2, k] = 2.0
    rgb = latent_to_rgb(lat)
    assert rgb.shape == (2, 3, z, 3) and rgb.dtype == np.uint8
    for k in range(z):
        want = [_u8(2.0 * table[k][c] + bias[c]) for c in range(3)]
        assert rgb[1, 2, k].tolist() == want
    assert rgb[0, 0, 0].tolist() == [_u8(b) for b in bias]  # a zero latent is the bias colour
    # saturates instead of wrapping around
    big = np.full((z, 1, 1, 1), 1e3, np.float32)
    assert set(latent_to_rgb(big).ravel().tolist()) <= {0, 255}


def test_preview_refuses_an_unknown_latent_width():
    with pytest.raises(ValueError, match="16, 48"):
        latent_to_rgb(np.zeros((4, 1, 2, 2), np.float32))


def test_duration_and_frames_snap_to_4n_plus_1():
    from wan_desktop.ui.viewmodels import frames_for_seconds, seconds_for_frames

    assert frames_for_seconds(5.0, 16) == 81 and seconds_for_frames(81, 16) == 5.0
    assert frames_for_seconds(5.0, 24) == 121  # TI2V-5B: 24 fps
    assert frames_for_seconds(2.1, 16) == 33 and frames_for_seconds(0.0, 16) == 1
    assert all((frames_for_seconds(s / 10, 16) - 1) % 4 == 0 for s in range(0, 200))


def test_presets_per_variant_are_valid_sizes():
    from wan_desktop.ui.library import ModelEntry
    from wan_desktop.ui.viewmodels import presets

    from wan_desktop.variants import VARIANTS

    for name in ("t2v-1.3B", "t2v-14B", "ti2v-5B"):
        v = VARIANTS[name]
        e = ModelEntry(
            path="x", variant=name, sizes=v.defaults.sizes, spatial_multiple=v.spatial_multiple
        )
        got = presets(e)
        assert got, name
        for label, w, h in got:
            assert w % v.spatial_multiple == 0 and h % v.spatial_multiple == 0, (name, label)
        shapes = {label.split()[1] for label, _w, _h in got}
        assert shapes == {"landscape", "portrait", "square"}
    labels = [
        label
        for label, _w, _h in presets(
            ModelEntry(path="x", variant="t2v-14B", sizes=VARIANTS["t2v-14B"].defaults.sizes)
        )
    ]
    assert labels[:3] == [
        "720p landscape 1280×720",
        "720p portrait 720×1280",
        "720p square 960×960",
    ]
    assert labels[3:] == ["480p landscape 832×480", "480p portrait 480×832", "480p square 624×624"]


def test_store_recovers_a_running_job_and_survives_a_damaged_file(tmp_path):
    from wan_desktop.ui.store import HistoryEntry, Job, JobStore

    store = JobStore(tmp_path)
    jobs = [
        Job(id="a", request={"prompt": "p", "seed": 1}, options={}, out="a.mp4", state="running"),
        Job(id="b", request={"prompt": "q", "seed": 2}, options={}, out="b.mp4"),
    ]
    store.save_queue(jobs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queue.json"]  # no temp file left
    back = store.load_queue()
    assert [(j.id, j.state, j.recovered) for j in back] == [
        ("a", "queued", True),
        ("b", "queued", False),
    ]
    store.save_history(
        [HistoryEntry(id="h", status="done", request={"seed": 9}, options={}, seconds=1.5)]
    )
    assert store.load_history()[0].seed == 9
    # a file from a newer version with unknown keys still loads
    data = json.loads(store.queue_path.read_text())
    data["jobs"][0]["priority"] = 3
    store.queue_path.write_text(json.dumps(data))
    assert [j.id for j in store.load_queue()] == ["a", "b"]
    # a half-written (damaged) file: empty queue, the damaged bytes kept aside
    store.queue_path.write_text('{"format": 1, "jobs": [{"id": "a", "requ')
    assert store.load_queue() == []
    assert (tmp_path / "queue.json.bad").read_text().startswith('{"format": 1')


def test_settings_round_trip(home):
    from dataclasses import replace

    from wan_desktop.ui.settings import AppSettings, load_settings, save_settings

    assert load_settings() == AppSettings()
    s = replace(
        AppSettings().with_model_dir(home / "m").with_model_dir(home / "m"),
        vram_plan="12",
        precision="fp8",
    )
    save_settings(s)
    back = load_settings()
    assert back == s and back.model_dirs == (str((home / "m").resolve()),)
    assert AppSettings.from_dict({"vram_plan": "7", "backend": "x"}).vram_plan == "auto"


@pytest.mark.parametrize(
    "env, problem",
    [
        ({}, "no display"),
        ({"DISPLAY": ":0"}, None),
        ({"WAYLAND_DISPLAY": "wayland-0"}, None),
        ({"QT_QPA_PLATFORM": "offscreen"}, None),
        ({"QT_QPA_PLATFORM": "xcb"}, "DISPLAY is not set"),
        ({"QT_QPA_PLATFORM": "wayland", "DISPLAY": ":0"}, "WAYLAND_DISPLAY is not set"),
    ],
)
def test_display_check(env, problem):
    from wan_desktop.ui.app import display_problem

    got = display_problem(env, "linux")
    assert (got is None) if problem is None else (problem in got)
    assert display_problem({}, "win32") is None


def _run_gui_command(env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess:
    code = prelude + "import sys\nfrom wan_desktop.cli import main\nsys.exit(main([]))\n"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is Linux's")
def test_wan_desktop_without_a_display_is_one_line_and_exit_2():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")
    }
    r = _run_gui_command(env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open the desktop app: no display")
    assert "Traceback" not in r.stderr


def test_wan_desktop_without_pyside6_says_to_install_the_gui_extra():
    # PySide6 hidden from the import system, as on an install without the gui extra
    prelude = (
        "import importlib.util\n_real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, p=None: None if n == 'PySide6' "
        "else _real(n, p)\n"
    )
    r = _run_gui_command(dict(os.environ), prelude)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "PySide6" in lines[0] and "wan-desktop[gui]" in lines[0]


def test_status_text_on_a_cpu_machine():
    from wan_desktop.ui.system_info import SystemStatus, snapshot

    s = snapshot()
    assert s.ram_total_gb is None or s.ram_total_gb > 0.5
    cpu = SystemStatus(None, None, None, 3.25, 15.5)
    assert cpu.text() == "CPU only (no NVIDIA GPU found)  ·  RAM 3.2 / 15.5 GB"
    gpu = SystemStatus("NVIDIA GeForce RTX 4090", 1.5, 23.99, 8.0, 64.0)
    assert gpu.text() == "NVIDIA GeForce RTX 4090  VRAM 1.5 / 24.0 GB  ·  RAM 8.0 / 64.0 GB"


def test_model_scan_finds_every_layout_with_size_and_precision(tiny, tmp_path):
    from wan_desktop.ui.library import scan

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    entries = scan([str(tiny.root), str(tmp_path / "notes"), str(tmp_path / "gone")])
    by_format = {e.format: e for e in entries if e.ok}
    assert set(by_format) == {"official", "diffusers", "comfyui"}
    for e in by_format.values():
        assert e.variant == "t2v-1.3B" and e.tasks == ("t2v",) and e.fps == 16
        assert e.spatial_multiple == 16 and e.temporal_factor == 4
    assert by_format["comfyui"].path == str(tiny.comfy_dit)
    assert by_format["comfyui"].precision == "fp16" and by_format["official"].precision == "fp32"
    # size on disk: every component file the model uses
    official = sum(
        p.stat().st_size for p in tiny.official.rglob("*") if p.suffix in (".safetensors", ".pth")
    )
    assert by_format["official"].size_bytes == official
    assert "11.7 MB" in by_format["official"].label
    bad = [e for e in entries if not e.ok]
    assert [(e.path, e.error) for e in bad] == [
        (str(tmp_path / "notes"), f"no Wan model found in {tmp_path / 'notes'}"),
        (str(tmp_path / "gone"), "folder not found"),
    ]


def test_the_gui_entry_point_imports_nothing_heavy():
    """`wan-desktop` must be able to say "install the gui extra" or "no display" before Qt or
    torch is loaded: importing the entry point and the data modules loads neither."""
    code = (
        "import sys\n"
        "import wan_desktop.ui.app, wan_desktop.ui.store, wan_desktop.ui.settings\n"
        "import wan_desktop.ui.preview, wan_desktop.ui.paths\n"
        "print(','.join(m for m in ('PySide6', 'torch', 'numpy') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""
