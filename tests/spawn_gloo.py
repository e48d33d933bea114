"""Run a function on N CPU processes joined in a gloo process group (torch.multiprocessing spawn,
a free local port, a timeout on every collective and on the whole run) and collect what each
rank returns. The function must be importable (a module-level function of a tests module) and
return tensors, numbers or strings (they come back through torch.save)."""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

COLLECTIVE_TIMEOUT_S = 60
RUN_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(
    rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple, out: Path
) -> None:
    torch.set_num_threads(1)  # N processes share the machine's cores
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    # an error is raised as it is (spawn reports it); the group is then left to the process's
    # end: destroying it after a failure can abort the process in gloo's teardown, hiding it
    result = fn(rank, world, *args)
    torch.save(result, out / f"{rank}.pt")
    dist.barrier()  # every rank is past its last collective before the group goes
    dist.destroy_process_group()


def run_gloo(
    world: int, fn: Callable[..., Any], *args: Any, timeout: float = RUN_TIMEOUT_S
) -> list[Any]:
    """``[fn(rank, world, *args) for each rank]``, each computed in its own process of a gloo
    group of ``world``. A rank's exception fails the call (the others are ended); so does a run
    longer than ``timeout`` seconds."""
    return _spawn(_entry, world, fn, args, timeout)


def _rank_entry(
    rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple, out: Path
) -> None:
    import os

    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.save(fn(rank, world, *args), out / f"{rank}.pt")


def run_ranks(
    world: int, fn: Callable[..., Any], *args: Any, timeout: float = RUN_TIMEOUT_S
) -> list[Any]:
    """``[fn(rank, world, *args) for each rank]``, each in its own process started as torchrun
    starts one (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR / MASTER_PORT set; no process group
    yet: the run owner joins it). ``fn`` returns what torch.save can write without pickling
    code (tensors, numbers, strings, lists and dicts of them)."""
    return _spawn(_rank_entry, world, fn, args, timeout)


def _spawn(
    entry: Callable[..., None], world: int, fn: Callable[..., Any], args: tuple, timeout: float
) -> list[Any]:
    """``entry(rank, world, port, fn, args, out)`` in ``world`` spawned processes; what each
    saved in ``out``, in rank order."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        ctx = mp.start_processes(
            entry,
            args=(world, free_port(), fn, args, out),
            nprocs=world,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=1.0):
                if time.monotonic() > deadline:
                    for p in ctx.processes:
                        p.kill()
                    raise TimeoutError(f"{world} processes still running after {timeout} s")
        except mp.ProcessExitedException as e:
            # every rank wrote its result: the crash was in the processes' teardown (gloo's,
            # seen as SIGABRT "terminate called without an active exception" under load)
            if not all((out / f"{r}.pt").exists() for r in range(world)):
                raise
            print(f"every rank returned; then {e}")
        return [torch.load(out / f"{r}.pt", weights_only=True) for r in range(world)]
