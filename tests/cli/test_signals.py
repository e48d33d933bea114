"""SIGTERM is handled like Ctrl-C: the cancel token is set, the run stops within one step, nothing
is written, and the exit status is 143 (130 for Ctrl-C), as a shell reports a death by either
signal. Before, SIGTERM killed the process on the spot (status -15), and a run killed while encoding
left its ``.partial.mp4`` behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from wan_desktop.errors import Cancelled


def test_sigterm_sets_the_cancel_token_and_a_second_one_interrupts_with_143():
    """The mechanism, in-process: SIGTERM only sets the token, with its own reason; a second
    SIGTERM interrupts (main() turns it into 143); both old handlers come back afterwards."""
    from wan_desktop.cli import _install_sigint

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    token, restore = _install_sigint()
    try:
        assert signal.getsignal(signal.SIGTERM) is signal.getsignal(signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs between bytecodes of the main thread
        with pytest.raises(Cancelled, match=r"^terminated \(SIGTERM\)$"):
            token.check()
        with pytest.raises(KeyboardInterrupt) as e:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
        assert type(e.value).__name__ == "_Terminated"
    finally:
        restore()
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.parametrize(
    "reason,code", [("terminated (SIGTERM)", 143), ("interrupted (Ctrl-C)", 130)]
)
def test_main_exits_143_for_sigterm_and_130_for_ctrl_c(reason, code, capsys, monkeypatch):
    """main()'s mapping of the cancel reason to the exit status, with the one line it prints."""
    import wan_desktop.cli as cli

    def cancelled(args):
        raise Cancelled(reason)

    monkeypatch.setattr(cli, "_cmd_inspect", cancelled)
    assert cli.main(["inspect", "nowhere"]) == code
    assert capsys.readouterr().err == f"cancelled: {reason}; nothing was written\n"


@pytest.mark.slow  # the CLI in a fresh process
@pytest.mark.parametrize(
    "sig,code,last_line",
    [
        (signal.SIGINT, 130, "cancelled: interrupted (Ctrl-C); nothing was written"),
        (signal.SIGTERM, 143, "cancelled: terminated (SIGTERM); nothing was written"),
    ],
)
def test_a_signal_cancels_a_real_run_within_a_step_and_leaves_nothing(
    t2v, tmp_path, sig, code, last_line
):
    out = tmp_path / "t.mp4"
    # 256x256x33 on the tiny model, 400 steps: still denoising when the signal lands
    args = ["--model", str(t2v.official), "--prompt", "x", "--size", "256x256", "--frames", "33"]
    args += ["--steps", "400", "--device", "cpu", "--dtype", "float32", "--seed", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "wan_desktop.cli", "generate", *args, "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"WAN_PROGRESS": "1"},
    )
    try:
        buf = ""
        deadline = time.time() + 120
        while "denoise 1/" not in buf and time.time() < deadline:
            ch = proc.stderr.read(1)
            if not ch:
                break
            buf += ch
        assert "denoise 1/" in buf, buf
        t_sig = time.perf_counter()
        proc.send_signal(sig)
        rest = proc.stderr.read()
        proc.wait(timeout=60)
        dt = time.perf_counter() - t_sig
    finally:
        if proc.poll() is None:
            proc.kill()
    steps = [int(s) for s in re.findall(r"denoise (\d+)/400", buf + rest)]
    print(
        f"{sig.name} after step {steps[0]}: stopped after step {steps[-1]} of 400, exit "
        f"{proc.returncode} {dt:.2f} s after the signal"
    )
    assert proc.returncode == code, buf + rest
    assert (buf + rest).replace("\r", "\n").strip().splitlines()[-1] == last_line
    assert "Traceback" not in rest and steps[-1] <= steps[0] + 1  # within one step
    assert list(tmp_path.iterdir()) == []
