"""The process group of a parallel run: its ranks, the CFG and sequence sub-groups, and the one
way ranks wait for each other (:meth:`Group.sync`).

Every wait is a poll of the rendezvous store (rank 0's TCPStore) that also watches for a failed
rank, a cancel and a lost rank 0, so a rank that waits minutes for rank 0's VAE decode or for the
user's review never times out, and a rank that dies ends the others within a poll. The torch
collectives themselves run only after a sync, when every rank has arrived, under the group's
timeout (``init_process_group(timeout=...)``): a rank stuck inside one fails, never hangs.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..cancel import CancelToken
from ..errors import Cancelled
from .errors import LaunchError, PeerOutOfMemory, RankFailed
from .layout import Layout

if TYPE_CHECKING:
    import torch

# seconds a torch collective may take once every rank has arrived (gloo's and NCCL's timeout): a
# rank stuck in one (a peer died inside an NCCL call) fails within this; raise it with the variable
COLLECTIVE_TIMEOUT_S = float(os.environ.get("WAN_DESKTOP_PARALLEL_TIMEOUT", "20"))
JOIN_TIMEOUT_S = 120.0  # workers starting (importing torch) and joining the store

_FAILED, _CANCEL, _ALIVE = "wan/failed", "wan/cancel", "wan/alive"
_OOM = "wan/oom"  # + "/<attempt>": the first rank out of GPU memory in that attempt, its line
HEARTBEAT_S = 1.0
JOINED = "wan/joined"  # the store counter each rank > 0 adds 1 to once connected (launch.py)


@dataclass(frozen=True, kw_only=True)
class RankEnv:
    """Where this process stands: torchrun's environment variables (or the launcher's)."""

    rank: int
    world: int
    local_rank: int
    master_addr: str
    master_port: int
    agent_store: bool = False  # torchrun's agent serves the store (rank 0 is then a client)

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> RankEnv | None:
        """None when this process was not started by torchrun (or the launcher)."""
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env or "RANK" not in env:
            return None
        try:
            return cls(
                rank=int(env["RANK"]),
                world=int(env["WORLD_SIZE"]),
                local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
                master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
                master_port=int(env.get("MASTER_PORT", "29500")),
                agent_store=env.get("TORCHELASTIC_USE_AGENT_STORE") == "True",
            )
        except ValueError as e:
            raise LaunchError(f"bad torchrun environment variable: {e}") from None


@dataclass(kw_only=True)
class Group:
    """This rank's view of the run's processes (made by :func:`join`)."""

    rank: int
    world: int
    layout: Layout
    store: Any  # torch.distributed.Store
    device: torch.device
    cfg_group: Any = None  # dist.ProcessGroup of this rank's CFG pair (layout.cfg == 2)
    seq_group: Any = None  # dist.ProcessGroup of this rank's sequence-parallel ranks
    # rank 0 of a launched run: the worker processes' state (None while they run)
    watch: Callable[[], str | None] = field(default=lambda: None)
    syncs: int = 0
    # the memory-plan attempt in progress (run.execute's fallback ladder, ranks in step): a
    # rank's CUDA out-of-memory error is posted under it (tell_oom), and every wait of the
    # others raises PeerOutOfMemory (None: between attempts)
    attempt: int | None = None
    # whether guard() syncs: around a model's first calls of an attempt (ranked.RankedDenoiser),
    # where a rank's memory peaks, so that no rank waits inside a torch exchange for a peer
    # that ran out of memory before joining it (that exchange could only time out)
    guarding: bool = False
    _beats: dict[int, tuple[int, float]] = field(default_factory=dict)  # rank: (count, seen at)
    _checked: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _beat: threading.Thread | None = None

    @property
    def cfg_index(self) -> int:
        return self.layout.cfg_index(self.rank)

    @property
    def seq_rank(self) -> int:
        return self.layout.seq_rank(self.rank)

    # ------------------------------------------------------------------ synchronisation

    def sync(self, cancel: CancelToken | None = None) -> None:
        """Wait until every rank is here; then, when any rank's ``cancel`` was set (rank 0's:
        the user's), raise Cancelled on every rank. A failed rank raises RankFailed."""
        self.syncs += 1
        key = f"wan/sync/{self.syncs}"
        if cancel is not None and cancel.cancelled:
            self.tell_cancel(cancel.reason)
        if self._store(lambda: self.store.add(key, 1)) == self.world:
            self._store(lambda: self.store.set(key + "/all", b"1"))
        self._wait(key + "/all")
        self._raise_cancel()

    def guard(self, cancel: CancelToken | None = None) -> None:
        """A :meth:`sync` while :attr:`guarding` (before a torch exchange): a peer's
        out-of-memory error is then seen here, by the store, never inside the exchange."""
        if self.guarding:
            self.sync(cancel)

    def exchange(self, name: str, value: object) -> list[Any]:
        """Every rank's ``value`` (small, picklable), in rank order, on every rank."""
        self.syncs += 1
        key = f"wan/exchange/{self.syncs}/{name}"
        self._store(lambda: self.store.set(f"{key}/{self.rank}", pickle.dumps(value)))
        out = []
        for r in range(self.world):
            self._wait(f"{key}/{r}")
            out.append(pickle.loads(self._store(lambda: self.store.get(f"{key}/{r}"))))  # noqa: B023
        return out

    # ------------------------------------------------------------------ memory-plan attempts

    def begin_attempt(self, index: int) -> None:
        """Attempt ``index`` of the plan ladder starts on this rank: its waits count from a base
        of their own, as the ranks may have left the previous attempt at different waits."""
        self.attempt, self.syncs, self.guarding = index, (index + 1) * 1_000_000, False

    def tell_oom(self, line: str) -> None:
        """This rank ran out of GPU memory in the current attempt (the first such line wins)."""
        key = f"{_OOM}/{self.attempt}"
        with contextlib.suppress(Exception):  # the store is gone: the others see that
            self.store.compare_set(key, "", f"rank {self.rank}: {line}".encode())

    def end_attempt(self, *, broken: bool) -> tuple[str, bool]:
        """After an out-of-memory error in the current attempt (this rank's or a peer's): wait
        for every rank to leave it, then (the first rank's line, whether any rank was left inside
        a torch exchange). ``broken``: this rank's exchange failed (the group's torch state is
        then unusable, so the ranks cannot go on to a tighter plan together)."""
        index, self.attempt, self.guarding = self.attempt, None, False
        key = f"wan/attempt/{index}"
        if broken:
            self._store(lambda: self.store.set(f"{key}/broken", b"1"))
        if self._store(lambda: self.store.add(f"{key}/out", 1)) == self.world:
            self._store(lambda: self.store.set(f"{key}/all", b"1"))
        self._wait(f"{key}/all")
        line = self._store(lambda: self.store.get(f"{_OOM}/{index}")).decode()
        return line, bool(self._store(lambda: self.store.check([f"{key}/broken"])))

    def _raise_oom(self, *, broken: bool) -> None:
        if self.attempt is None:
            return
        key = f"{_OOM}/{self.attempt}"
        if self._store(lambda: self.store.check([key])):
            raise PeerOutOfMemory(self._store(lambda: self.store.get(key)).decode(), broken=broken)

    def share(self, name: str, value: object = None) -> Any:
        """Rank 0's ``value`` (a small picklable object) on every rank, through the store."""
        self.syncs += 1
        key = f"wan/share/{self.syncs}/{name}"
        if self.rank == 0:
            self._store(lambda: self.store.set(key, pickle.dumps(value)))
            return value
        self._wait(key)
        return pickle.loads(self._store(lambda: self.store.get(key)))

    def tell_cancel(self, reason: str) -> None:
        self._store(lambda: self.store.compare_set(_CANCEL, "", reason.encode() or b"cancelled"))

    def tell_failure(self, message: str) -> None:
        """Every other rank raises RankFailed with ``message`` at its next wait (the first
        failure reported wins). Never raises: the store may be gone already."""
        with contextlib.suppress(Exception):  # rank 0 (the store) is gone: the others see that
            self.store.compare_set(_FAILED, "", f"rank {self.rank}: {message}".encode())

    def collective(self, fn: Callable[[], Any]) -> Any:
        """A torch collective (every rank synced first); its error becomes RankFailed."""
        try:
            return fn()
        except RuntimeError as e:  # gloo: the peer closed; NCCL / gloo: the timeout
            if type(e).__name__ == "OutOfMemoryError":  # this rank's own (run.py reports it)
                raise
            raise self._failure(f"a collective failed ({_first_line(e)})") from None

    def _raise_cancel(self) -> None:
        if self._store(lambda: self.store.check([_CANCEL])):
            reason = self._store(lambda: self.store.get(_CANCEL)).decode()
            raise Cancelled(reason)

    def _wait(self, key: str) -> None:
        pause = 0.0002
        while True:
            if self._store(lambda: self.store.check([key])):
                return
            if self._store(lambda: self.store.check([_FAILED])):
                raise RankFailed(self._store(lambda: self.store.get(_FAILED)).decode())
            if self._store(lambda: self.store.check([_CANCEL])):
                self._raise_cancel()
            self._raise_oom(broken=False)
            stopped = self.watch() or self._silent_rank()
            if stopped is not None:
                self.tell_failure(stopped)
                raise RankFailed(stopped)
            time.sleep(pause)
            pause = min(pause * 2, 0.02)

    def _silent_rank(self) -> str | None:
        """A line naming a rank whose heartbeat has not moved for the collective timeout (a
        process that hangs or was stopped), checked about once a second while waiting."""
        now = time.monotonic()
        if now - self._checked < 1.0:
            return None
        self._checked = now
        for r in range(self.world):
            if r == self.rank:
                continue
            key = f"{_ALIVE}/{r}"
            beats = int(self._store(lambda: self.store.add(key, 0)))  # noqa: B023  called at once
            last = self._beats.get(r)
            if last is None or beats != last[0]:
                self._beats[r] = (beats, now)
            elif now - last[1] > COLLECTIVE_TIMEOUT_S:
                return f"rank {r} stopped answering (no sign of life for {now - last[1]:.0f} s)"
        return None

    def start_heartbeat(self, env: RankEnv) -> None:
        """A thread that shows this process is alive (a counter in the store, every second),
        on its own connection to the store; it ends with the process or :meth:`close`."""
        import threading

        def beat() -> None:
            try:
                store = connect_store(env, is_master=False)
                while not self._stop.wait(HEARTBEAT_S):
                    store.add(f"{_ALIVE}/{self.rank}", 1)
            except Exception:  # the store is gone: the run is ending anyway
                pass

        self._beat = threading.Thread(target=beat, name=f"wan-heartbeat-{self.rank}", daemon=True)
        self._beat.start()

    def _failure(self, what: str) -> RankFailed:
        """The clearest error for a broken connection: the failed rank's own message, or the
        launcher's word on a worker that exited, or ``what``."""
        try:
            before = {r: self.store.add(f"{_ALIVE}/{r}", 0) for r in range(self.world)}
        except Exception:  # the store is rank 0's: rank 0 is gone
            return RankFailed(f"rank 0 stopped: lost the connection to it ({what})")
        for _ in range(150):  # the failed rank's message may be a moment behind its sockets
            try:
                if self.store.check([_FAILED]):
                    return RankFailed(self.store.get(_FAILED).decode())
                oom = f"{_OOM}/{self.attempt}"
                if self.attempt is not None and self.store.check([oom]):
                    return PeerOutOfMemory(self.store.get(oom).decode(), broken=True)
            except Exception:  # the store is rank 0's: rank 0 is gone
                return RankFailed(f"rank 0 stopped: lost the connection to it ({what})")
            stopped = self.watch()
            if stopped is not None:
                self.tell_failure(stopped)
                return RankFailed(stopped)
            time.sleep(0.02)
        with contextlib.suppress(Exception):  # 3 s: a live rank's heartbeat moved meanwhile
            for r in range(self.world):
                if r != self.rank and self.store.add(f"{_ALIVE}/{r}", 0) == before[r]:
                    silent = f"rank {r} stopped answering ({what})"
                    self.tell_failure(silent)
                    return RankFailed(silent)
        return RankFailed(f"rank {self.rank}: {what}")

    def _store(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except RuntimeError as e:  # the store lives in rank 0's process (or torchrun's agent)
            raise RankFailed(
                f"rank 0 stopped: lost the connection to it ({_first_line(e)})"
            ) from None

    # ------------------------------------------------------------------ tensors

    def broadcast_from_0(self, value: Any) -> Any:
        """Rank 0's ``value`` (tensors, lists / tuples / dicts of them) on every rank, each
        tensor on this rank's device when it was on a GPU. Call on every rank after a sync."""
        import torch.distributed as dist

        box = [_to_cpu(value) if self.rank == 0 else None]
        self.collective(lambda: dist.broadcast_object_list(box, src=0))
        return value if self.rank == 0 else _to_device(box[0], self.device)

    def all_gather(self, t: torch.Tensor, group: Any) -> list[torch.Tensor]:
        """``t`` of every rank of ``group``, in rank order (one exchange)."""
        import torch
        import torch.distributed as dist

        t = t.contiguous()
        out = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
        self.collective(lambda: dist.all_gather(out, t, group=group))
        return out

    # ------------------------------------------------------------------ end

    def close(self, *, failed: bool = False) -> None:
        """Leave the process group. After a failed collective gloo's pending operation cannot be
        torn down (C++ terminate): the group is then left to the process's end."""
        import torch.distributed as dist

        self._stop.set()
        if self._beat is not None:  # its store connection must close before the process ends
            self._beat.join(timeout=5.0)
        if dist.is_initialized() and not failed:
            dist.destroy_process_group()


def join(
    env: RankEnv,
    layout: Layout,
    *,
    device: torch.device,
    store: Any = None,
    watch: Callable[[], str | None] | None = None,
    timeout_s: float = COLLECTIVE_TIMEOUT_S,
) -> Group:
    """Join the run's process group (NCCL on CUDA, gloo on the CPU) and make its sub-groups.
    ``store``: the launcher's own (rank 0 of a launched run); else the TCPStore at MASTER_ADDR."""
    import torch.distributed as dist

    if env.world != layout.world:
        raise LaunchError(f"{env.world} processes were started for a layout of {layout.world}")
    if store is None:
        store = connect_store(env, is_master=env.rank == 0 and not env.agent_store)
    if env.rank != 0:
        store.add(JOINED, 1)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
    if dist.is_initialized():  # the group a failed run left (the app's process runs on)
        dist.destroy_process_group()
    try:
        dist.init_process_group(
            backend,
            store=dist.PrefixStore("pg", store),
            rank=env.rank,
            world_size=env.world,
            timeout=timedelta(seconds=timeout_s),
        )
    except RuntimeError as e:
        raise LaunchError(f"rank {env.rank} could not join the process group: {e}") from None
    group = Group(rank=env.rank, world=env.world, layout=layout, store=store, device=device)
    if watch is not None:
        group.watch = watch
    group.start_heartbeat(env)
    # every rank makes every sub-group, in the same order (torch's rule)
    for ranks in layout.cfg_groups():
        pg = dist.new_group(ranks, timeout=timedelta(seconds=timeout_s))
        if env.rank in ranks:
            group.cfg_group = pg
    for ranks in layout.seq_groups():
        pg = dist.new_group(ranks, timeout=timedelta(seconds=timeout_s))
        if env.rank in ranks:
            group.seq_group = pg
    return group


def connect_store(env: RankEnv, *, is_master: bool) -> Any:
    import torch.distributed as dist

    try:
        return dist.TCPStore(
            env.master_addr,
            env.master_port,
            env.world,
            is_master,
            timeout=timedelta(seconds=JOIN_TIMEOUT_S),
            wait_for_workers=False,
        )
    except RuntimeError as e:
        where = f"{env.master_addr}:{env.master_port}"
        raise LaunchError(
            f"rank {env.rank} could not reach the rendezvous at {where}: {e}"
        ) from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _to_cpu(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


def _to_device(value: Any, device: torch.device) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device) if device.type == "cuda" else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value
