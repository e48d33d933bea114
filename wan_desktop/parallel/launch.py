"""Starting the worker processes of a parallel run from this process (which becomes rank 0):
a free local port, rank 0's rendezvous store, one ``python -m wan_desktop.rank_worker JOB``
process per other rank with torchrun's environment variables, and their supervision
(:meth:`Workers.watch`: a worker that exits early is named, with its exit status).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LaunchError
from .group import JOIN_TIMEOUT_S, JOINED, RankEnv, connect_store


def free_port() -> int:
    """A TCP port free on this machine now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(kw_only=True)
class Workers:
    """The processes of ranks 1 … N−1 (``procs[i]`` is rank i + 1) and their folder."""

    procs: list[subprocess.Popen[bytes]]
    folder: Path
    logs: list[Path] = field(default_factory=list)
    done: bool = False  # the run finished: exits are expected now

    def watch(self) -> str | None:
        """A line naming the first worker that has exited (None: all are running)."""
        for rank, p in enumerate(self.procs, start=1):
            code = p.poll()
            if code is not None and not (self.done and code == 0):
                return f"rank {rank} stopped ({exit_text(code)}){self._tail(rank)}"
        return None

    def _tail(self, rank: int) -> str:
        try:
            lines = self.logs[rank - 1].read_text(errors="replace").strip().splitlines()
        except (OSError, IndexError):
            return ""
        return f": {lines[-1][:300]}" if lines else ""

    def finish(self, timeout_s: float = 20.0) -> None:
        """Wait for every worker to exit (they do once the run ends or fails), kill those that do
        not within ``timeout_s``, and remove the folder."""
        end = time.monotonic() + timeout_s
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def exit_text(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit status {code}"


def launch(job: dict[str, Any], world: int) -> tuple[RankEnv, Any, Workers]:
    """Start ranks 1 … ``world``−1 on ``job`` (JSON: the request, the options, ...) and wait
    until each has reached rank 0's store. Returns (rank 0's env, the store, the workers)."""
    folder = Path(tempfile.mkdtemp(prefix="wan-parallel-"))
    job_file = folder / "job.json"
    job_file.write_text(json.dumps(job))
    env0 = RankEnv(rank=0, world=world, local_rank=0, master_addr="127.0.0.1", master_port=0)
    for _attempt in range(3):  # the free port may be taken between the look-up and the bind
        env0 = RankEnv(
            rank=0, world=world, local_rank=0, master_addr="127.0.0.1", master_port=free_port()
        )
        try:
            store = connect_store(env0, is_master=True)
            break
        except LaunchError:
            continue
    else:
        shutil.rmtree(folder, ignore_errors=True)
        raise LaunchError("no free local port for the rendezvous of the parallel run")
    workers = Workers(procs=[], folder=folder)
    try:
        for rank in range(1, world):
            log = folder / f"rank{rank}.log"
            workers.logs.append(log)
            env = {
                **os.environ,
                "RANK": str(rank),
                "WORLD_SIZE": str(world),
                "LOCAL_RANK": str(rank),
                "LOCAL_WORLD_SIZE": str(world),
                "MASTER_ADDR": env0.master_addr,
                "MASTER_PORT": str(env0.master_port),
                "PYTHONUNBUFFERED": "1",
            }
            with log.open("wb") as err:
                workers.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "wan_desktop.rank_worker", str(job_file)],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        env=env,
                    )
                )
        _wait_joined(store, workers, world)
    except BaseException:
        for p in workers.procs:
            p.kill()
        workers.finish()
        raise
    return env0, store, workers


def _wait_joined(store: Any, workers: Workers, world: int) -> None:
    end = time.monotonic() + JOIN_TIMEOUT_S
    while store.add(JOINED, 0) < world - 1:
        stopped = workers.watch()
        if stopped is not None:
            raise LaunchError(f"a worker process did not start: {stopped}")
        if time.monotonic() > end:
            raise LaunchError(f"the worker processes did not join within {JOIN_TIMEOUT_S:.0f} s")
        time.sleep(0.01)
