"""The dependency direction and import purity of the core (STYLE.md, 'Enforcing the direction')."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mirror_namespace(tmp: Path) -> Path:
    """The installed shape of the package (export/, engines/, ui/ inside wan_desktop/), made of
    symlinks: import-linter scans the package directory and cannot follow pyproject's mapping."""
    pkg = tmp / "wan_desktop"
    pkg.mkdir()
    for item in (ROOT / "wan_desktop").iterdir():
        if item.name != "__pycache__":
            (pkg / item.name).symlink_to(item)
    for folder in ("export", "engines", "ui"):
        (pkg / folder).symlink_to(ROOT / folder)
    return tmp


def test_import_contracts_hold(tmp_path):
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e .[dev])")
    mirror = _mirror_namespace(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(mirror)}
    r = subprocess.run(
        [exe, str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=mirror,
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "BROKEN" not in r.stdout and "KEPT" in r.stdout


def test_core_import_is_light():
    code = (
        "import sys\n"
        "import wan_desktop, wan_desktop.pipeline, wan_desktop.contracts, wan_desktop.variants\n"
        "import wan_desktop.cli, wan_desktop.video, wan_desktop.errors, wan_desktop.cancel\n"
        "heavy = [m for m in ('torch', 'PySide6', 'tensorrt', 'tensorrt_rtx', 'onnx', 'onnxruntime',\n"
        "                     'diffusers', 'transformers') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "", f"heavy modules imported at core import time: {r.stdout}"


def test_models_import_does_not_touch_cuda():
    code = (
        "import torch\n"
        "import wan_desktop.models.dit, wan_desktop.checkpoints.load, wan_desktop.engines\n"
        "print(torch.cuda.is_initialized())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_every_module_of_the_package_has_a_layer():
    """import-linter checks only the modules a layers contract names: a new module must be placed
    (ARCHITECTURE.md's arrow), or nothing would check what it imports."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    layers = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    named = {
        m.strip().removeprefix("wan_desktop.")
        for layer in layers["layers"]
        for m in layer.replace(":", "|").split("|")
    }
    present = {p.stem for p in (ROOT / "wan_desktop").glob("*.py") if p.stem != "__init__"}
    present |= {p.name for p in (ROOT / "wan_desktop").iterdir() if (p / "__init__.py").is_file()}
    present |= {"export", "engines", "ui"}
    assert present - named == set(), "modules without a layer in pyproject.toml"
    assert named - present == set(), "layers naming modules that do not exist"
