"""The process group's waits (wan_desktop/parallel/group.py), on 2 gloo processes joined the way a
parallel run joins them: a rank that fails ends the other's wait with its one-line message; rank
0's cancel reaches the other rank at its next sync; a rank 0 that is gone is noticed."""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.multiprocessing as mp

from wan_desktop.cancel import CancelToken
from wan_desktop.errors import Cancelled
from wan_desktop.parallel.errors import RankFailed
from wan_desktop.parallel.group import RankEnv, join
from wan_desktop.parallel.launch import free_port
from wan_desktop.parallel.layout import Layout


def _rank(rank: int, port: int, case: str, out: str) -> None:
    env = RankEnv(rank=rank, world=2, local_rank=rank, master_addr="127.0.0.1", master_port=port)
    group = join(env, Layout(world=2, cfg=2, seq=1), device=torch.device("cpu"))
    token = CancelToken()
    t0 = time.monotonic()
    result = "finished"
    try:
        group.sync(token)  # both here
        if case == "fail" and rank == 1:
            group.tell_failure("ValueError: a broken weight")
            result = "failed"
        elif case == "cancel" and rank == 0:
            token.cancel("stopped by the user")
            group.sync(token)
        elif case == "exit" and rank == 0:
            os._exit(0)  # rank 0 (the store) disappears without a word
        else:
            time.sleep(0.5)
            group.sync(token)
    except (RankFailed, Cancelled) as e:
        result = f"{type(e).__name__}: {e.message}"
    with open(f"{out}/{rank}", "w") as f:
        f.write(f"{time.monotonic() - t0:.2f} {result}")
    if rank == 0:  # the store is rank 0's: it stays until rank 1 is done (as the launcher waits)
        deadline = time.monotonic() + 30
        while not os.path.exists(f"{out}/1") and time.monotonic() < deadline:
            time.sleep(0.05)
    group.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "rank", "expected"),
    [
        ("fail", 0, "RankFailed: rank 1: ValueError: a broken weight"),
        ("cancel", 1, "Cancelled: stopped by the user"),
        ("exit", 1, "RankFailed: rank 0 stopped: lost the connection to it"),
    ],
)
def test_one_rank_ends_the_others_wait(tmp_path, case, rank, expected):
    ctx = mp.start_processes(
        _rank, args=(free_port(), case, str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 60
    while not all(p.exitcode is not None for p in ctx.processes):
        assert time.monotonic() < deadline, "a rank hangs"
        time.sleep(0.1)
    took, _, result = (tmp_path / str(rank)).read_text().partition(" ")
    print(f"\n{case}: rank {rank} ended {took} s into its wait: {result}")
    assert result.startswith(expected)
    assert float(took) < 5.0
