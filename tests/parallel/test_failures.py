"""A parallel run never hangs: a cancel on rank 0 ends every rank within one step with nothing
written; a killed rank ends the run within 30 s with one error line and a non-zero exit status;
a process count the job cannot use is refused before anything loads (exit 2, one line)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures_models import TinyModel, build_tiny_model
from tests.parallel_runs import generate
from wan_desktop import pipeline
from wan_desktop.cancel import CancelToken
from wan_desktop.errors import Cancelled

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def t2v(tmp_path_factory) -> TinyModel:
    return build_tiny_model(tmp_path_factory.mktemp("parallel-t2v"), "t2v-1.3B")


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids += [int(k) for k in text]
    return kids


@pytest.mark.slow
def test_cancel_reaches_every_rank_within_one_step(t2v, tmp_path):
    token = CancelToken()

    def cancel_after_first_step(event: pipeline.Event) -> None:
        if isinstance(event, pipeline.StepDone) and event.step == 1:
            token.cancel("cancelled by the test")

    out = tmp_path / "out"
    before = set(_children(os.getpid()))  # earlier tests' helpers (torch.compile's workers, ...)
    t0 = time.monotonic()
    with pytest.raises(Cancelled, match="cancelled by the test"):
        generate(
            t2v, out, parallel=2, mode="cfg", steps=20, cancel=token, emit=cancel_after_first_step
        )
    took = time.monotonic() - t0
    print(f"\ncancelled 2-process run ended in {took:.1f} s")
    assert not out.exists()  # nothing written
    # the worker ended too (the launcher waited for it): no child process is left that the run made
    assert set(_children(os.getpid())) - before == set()


def _signal_rank_1(t2v: TinyModel, out: Path, sig: int, env: dict[str, str]) -> tuple:
    """Start a 2-process CLI run, send ``sig`` to its worker (rank 1) once both ranks are busy;
    returns (seconds from the signal to the CLI's exit, its exit status, its stderr lines)."""
    args = [sys.executable, "-m", "wan_desktop", "generate", "--model", str(t2v.official)]
    args += ["--prompt", "a fox", "--device", "cpu", "--size", "64x32", "--frames", "5"]
    args += ["--steps", "400", "--guidance", "5", "--no-progress", "--parallel", "2"]
    cli = subprocess.Popen(
        [*args, "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
    )
    worker = None
    try:
        deadline = time.monotonic() + 120
        while not _children(cli.pid):  # the worker (rank 1) is started
            assert cli.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(8)  # both ranks are loading or stepping
        assert cli.poll() is None, cli.stderr.read() if cli.stderr else ""
        worker = _children(cli.pid)[0]
        os.kill(worker, sig)
        sent = time.monotonic()
        _, err = cli.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if cli.poll() is None:
            cli.kill()
        if worker is not None and sig == signal.SIGSTOP:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
    return took, cli.returncode, [ln for ln in err.splitlines() if ln.strip()]


@pytest.mark.slow
def test_a_killed_rank_ends_the_run_with_one_error(t2v, tmp_path):
    out = tmp_path / "out.mp4"
    took, code, lines = _signal_rank_1(t2v, out, signal.SIGKILL, {})
    print(f"\nkilled rank 1: the run ended {took:.1f} s later, exit {code}: {lines}")
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: rank 1 stopped (killed by SIGKILL)")
    assert not out.exists()


@pytest.mark.slow
def test_a_hung_rank_ends_the_run_after_the_timeout(t2v, tmp_path):
    """A rank that stops answering (SIGSTOP: alive, silent) is named once its heartbeat has not
    moved for the collective timeout (here 5 s, WAN_DESKTOP_PARALLEL_TIMEOUT)."""
    out = tmp_path / "out.mp4"
    took, code, lines = _signal_rank_1(
        t2v, out, signal.SIGSTOP, {"WAN_DESKTOP_PARALLEL_TIMEOUT": "5"}
    )
    print(f"\nstopped rank 1: the run ended {took:.1f} s later, exit {code}: {lines}")
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: rank 1 stopped answering")
    assert took < 30 and not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--parallel", "5", "--parallel-mode", "sequence"],
            "the model's 12 attention heads do "
            "not divide over 5 sequence-parallel ranks; valid process counts: 2, 3, 4, 6, 12",
        ),
        (["--parallel", "4", "--parallel-mode", "cfg"], "exactly 2 processes, got 4"),
        (["--parallel", "2", "--parallel-mode", "cfg", "--guidance", "1"], "needs classifier-free"),
        (["--parallel", "0"], "parallel is a process count of at least 1, got 0"),
    ],
)
def test_invalid_process_counts_are_one_line_and_exit_2(cli, tmp_path, flags, message):
    t0 = time.monotonic()
    base = ["generate", "--random-weights", "t2v-1.3B", "--device", "cpu", "--prompt", "a fox"]
    r = cli([*base, *flags, "--out", tmp_path / "x.mp4"])
    assert r.code == 2 and len(r.err_lines) == 1, r.err
    assert r.err_lines[0].startswith("error: ") and message in r.err_lines[0]
    assert time.monotonic() - t0 < 5  # refused before anything loads
    assert not (tmp_path / "x.mp4").exists()
