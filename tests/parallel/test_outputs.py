"""Only rank 0 writes: a 2-process run leaves exactly one output (the frames and one
settings.json at ``--out``) and the other rank writes nothing at all: no output, no sidecar, no
scratch or temporary folder (its temporary directory, watched during the run, stays empty)."""

from __future__ import annotations

import threading

import pytest

from tests.fixtures_models import build_tiny_model
from tests.parallel_runs import generate


@pytest.mark.slow
def test_a_two_process_run_leaves_one_output_and_rank_1_writes_nothing(tmp_path, monkeypatch):
    t2v = build_tiny_model(tmp_path / "model", "t2v-1.3B")
    worker_tmp = tmp_path / "worker-tmp"  # the worker's TMPDIR (this process has its own)
    worker_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(worker_tmp))
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:  # everything that appears in the worker's temporary directory
        while not done.is_set():
            seen.update(p.name for p in worker_tmp.iterdir())
            done.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        outcome = generate(t2v, tmp_path / "out", parallel=2, mode="cfg", review=False)
    finally:
        done.set()
        watcher.join()
    frames = outcome.frames.shape[0]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    print(f"\n2 processes: {len(written)} files at --out, worker temp entries seen: {sorted(seen)}")
    assert written == [f"{i:05d}.png" for i in range(frames)] + ["settings.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out", "worker-tmp"]
    assert seen == set()  # no scratch output, no temporary file on rank 1
