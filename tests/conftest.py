import os

# Before any QApplication exists: the CI machine has no display.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from dataclasses import dataclass

import pytest


@pytest.fixture(autouse=True)
def _seed_torch():
    import torch

    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session", autouse=True)
def _user_cache_dir(tmp_path_factory):
    """$WAN_DESKTOP_CACHE of the session (file hashes, prompt embeddings): never the user's own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WAN_DESKTOP_CACHE", str(tmp_path_factory.mktemp("user_cache")))
        yield


@pytest.fixture(scope="session")
def t2v_model(tmp_path_factory):
    """The tiny T2V model in every layout (tests/fixtures_models.py), for the export tests."""
    from tests.fixtures_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("export_t2v"), "t2v-1.3B")


@pytest.fixture(scope="session")
def t2v_engines(t2v_model, tmp_path_factory):
    """`wan-desktop export --model <official> --out <dir>`, in-process, once per session: the
    ONNX folder of the export tests (tests/export) and the TensorRT ones (tests/engines)."""
    from wan_desktop.cli import main

    out = tmp_path_factory.mktemp("export_t2v_engines") / "engines"
    code = main(["export", "--model", str(t2v_model.official), "--out", str(out), "--no-progress"])
    assert code == 0
    return out


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Every test runs torch on one thread: tiny models and small 3D convolutions run faster on one
    thread than on two (more so when the CPUs are shared), and no test's speed depends on whether
    an earlier test changed the thread count."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


@pytest.fixture
def cli(capsys):
    """``cli([...])`` runs ``main`` in-process; argparse's SystemExit becomes the exit code."""
    from wan_desktop.cli import main

    def run(args: list[str]) -> Result:
        capsys.readouterr()  # drop whatever fixtures printed (diffusers' save bars)
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        cap = capsys.readouterr()
        return Result(code, cap.out, cap.err)

    return run
