"""Helpers of the export tests. Tiny models are exported once per session (exporting is the slow
part: the dynamo exporter's symbolic shape tracing takes seconds per graph even for tiny models).

``t2v_engines`` (tests/conftest.py, shared with the TensorRT backend tests in tests/engines): the
tiny T2V model (official layout) exported through the real CLI — its graphs also serve the T5 /
DiT t2v / Wan2.1 VAE decoder parity tests. Other graphs come from random modules exported with
the API (1-layer DiTs, VAEs of reduced depth with every kind of stage).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from tests.tiny import tiny_variant


def rel_err(got, ref) -> float:
    """max |got - ref| / max |ref| (the ONNX parity measure, ARCHITECTURE.md: ≤ 1e-4)."""
    got = torch.as_tensor(got).double()
    ref = torch.as_tensor(ref).double()
    assert got.shape == ref.shape, (tuple(got.shape), tuple(ref.shape))
    err = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
    print(f"rel_err {tuple(ref.shape)}: {err:.2e}")  # shown with -s: the figures in the README
    return err


def session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def random_module(build, seed: int):
    from wan_desktop.engines.torch_backend import randomize

    from wan_desktop.checkpoints.materialize import weights_on_meta

    with weights_on_meta():
        module = build()
    return randomize(module, dtype=torch.float32, device="cpu", seed=seed)


def small_vae_variant(name: str):
    """A variant whose VAE has fewer stages of 1 residual block (instead of 4 stages × 2) but
    every kind of op: Wan2.1 one temporal+spatial resampling stage; Wan2.2 (whose shortcut stages
    need a last stage of equal width) a spatial-only and a temporal+spatial one. Tracing dynamic
    shapes costs seconds per group of ops; the real-depth Wan2.1 decoder is covered by the CLI
    export. Temporal factor 2; spatial factor 2 (Wan2.2: 8 with its 2×2 patchify)."""
    v = tiny_variant(name)
    if v.vae.version == "2.1":
        vae = replace(v.vae, dim_mult=(1, 2), num_res_blocks=1, temporal_downsample=(True,))
    else:
        vae = replace(
            v.vae, dim_mult=(1, 2, 2), num_res_blocks=1, temporal_downsample=(False, True)
        )
    return replace(v, vae=vae)
