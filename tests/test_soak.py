"""Soak: many generations in one process neither leak memory nor drift (issue 15, item 9).

100 tiny text-to-video runs through the run owner, as the app runs them (one ComponentCache kept
between jobs, a new output each time): the resident set after the third run may grow by at most
5 %, and every output is a complete PNG folder."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest
from wan_desktop.engines.factory import EngineFactory

from tests.fixtures_models import build_tiny_model
from wan_desktop import run
from wan_desktop.options import RunOptions
from wan_desktop.request import GenerationRequest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_100_generations_in_one_process_keep_the_resident_set_flat(tmp_path):
    model = build_tiny_model(tmp_path / "model", "t2v-1.3B")
    factory = EngineFactory(prompt_cache_dir=tmp_path / "cache")
    cache = run.ComponentCache(factory)
    options = RunOptions(model=str(model.official), device="cpu", dtype="float32")
    rss: list[float] = []
    for i in range(100):
        request = GenerationRequest(
            prompt=f"a red fox, take {i % 7}", width=64, height=32, frames=5, steps=2, seed=i
        )
        out = tmp_path / "out" / f"{i:03d}"
        out.parent.mkdir(exist_ok=True)
        result = run.execute(
            run.prepare(request, options, out=out, factory=factory), components=cache
        )
        assert sorted(p.name for p in result.out.iterdir()) == [
            f"{f:05d}.png" for f in range(5)
        ] + ["settings.json"]
        gc.collect()
        rss.append(_rss_mib())
    growth = rss[-1] / rss[2] - 1
    print(
        f"RSS after run 3: {rss[2]:.1f} MiB, after run 100: {rss[-1]:.1f} MiB "
        f"(+{100 * growth:.2f} %), max {max(rss):.1f} MiB; builds {cache.builds}"
    )
    assert cache.builds == 1
    assert growth <= 0.05
