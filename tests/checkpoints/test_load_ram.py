"""Host RAM while a DiT checkpoint loads (wan_desktop/checkpoints): the private memory the load
takes is the model's size, whatever dtype the file holds — the file is memory-mapped, converted
tensor by tensor, never read whole into private memory (a 28 GB fp16 14B file must load on a
32 GB machine). A real file of the 1.3B architecture with 6 of its 30 blocks (0.5 GB in bf16),
loaded in a fresh process that samples its anonymous (private) resident memory. Linux only."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wan_desktop.variants import get_variant

pytestmark = [
    pytest.mark.skipif(
        not Path("/proc/self/status").exists(), reason="reads /proc/self/status (Linux)"
    ),
    pytest.mark.slow,  # writes a 0.5 GB checkpoint and loads it in fresh processes
]

_PROBE = r"""
import json, sys, threading, time, torch
def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
peak, done = [0], []
def sample():
    while not done:
        peak[0] = max(peak[0], anon())
        time.sleep(0.002)
from wan_desktop.checkpoints import load
from wan_desktop.checkpoints.detect import detect_model
files = detect_model(sys.argv[1])
th = threading.Thread(target=sample, daemon=True)
base = anon()
th.start()
model = load.load_dit(files, dtype=torch.bfloat16)
done.append(1)
th.join()
peak[0] = max(peak[0], anon())
after = anon()
size = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"model": size, "peak_growth": peak[0] - base, "after_growth": after - base}))
"""


@pytest.fixture(scope="module")
def dit_files(tmp_path_factory):
    from wan_desktop.checkpoints.materialize import weights_on_meta
    from wan_desktop.models.dit import WanModel

    cfg = replace(get_variant("t2v-1.3B").dit, num_layers=6)
    with weights_on_meta():
        shapes = {k: p.shape for k, p in WanModel(cfg).state_dict().items()}
    root = tmp_path_factory.mktemp("ram")
    g = torch.Generator().manual_seed(0)
    base = {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}
    out = {}
    for name, dt in (("fp16", torch.float16), ("fp32", torch.float32), ("bf16", torch.bfloat16)):
        path = root / f"wan_1.3B_6blocks_{name}.safetensors"  # a ComfyUI single file
        save_file({f"model.diffusion_model.{k}": v.to(dt) for k, v in base.items()}, str(path))
        out[name] = path
    return out


@pytest.mark.parametrize("stored", ["fp16", "fp32", "bf16"])
def test_loading_takes_the_model_size_in_private_ram(dit_files, stored):
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, str(dit_files[stored])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout.strip().splitlines()[-1])
    gb = 1e9
    print(
        f"{stored} file -> bf16 model of {d['model'] / gb:.2f} GB: private RAM peak "
        f"+{d['peak_growth'] / gb:.2f} GB, after +{d['after_growth'] / gb:.2f} GB"
    )
    assert d["model"] > 0.5e9
    # a converted file: the bf16 model plus at most one tensor in flight (the largest ~13 MB);
    # a bf16 file: zero-copy views of the mapping (measured +0.07 of 0.64 GB private: the few
    # tensors that are converted)
    limit = 0.15 * d["model"] if stored == "bf16" else 1.05 * d["model"] + 64e6
    assert d["peak_growth"] <= limit
