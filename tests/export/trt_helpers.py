"""Tiny models, their ONNX graphs and calibration data for the quantize / build / TensorRT backend
tests, each made once per test process (the exports take seconds) in one temporary folder.

The DiT graph is exported unslimmed (``slim=False``): quantize.py tells the block linears from the
embeddings by the module scopes torch.onnx records on each node, which onnxslim drops. The VAE of
the build tests has one res block per stage instead of two (same module code, same exporter, half
the causal convs to trace: the export dominates these tests' time).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.tiny import tiny_variant

PROMPTS = ("a cat walks on the grass", "a red car on a coastal road at sunset")
SIZE = dict(width=64, height=64, frames=9)  # latent 3×8×8: 48 DiT tokens
STEPS = 4


@functools.cache
def work_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="wan-trt-tests-"))
    atexit.register(shutil.rmtree, d, True)
    return d


@functools.cache
def t2v() -> tuple[Any, Any]:
    """(tiny t2v-1.3B variant, its random-weight torch components on the CPU in fp32)."""
    from wan_desktop.engines.torch_backend import build_torch_components

    v = tiny_variant("t2v-1.3B")
    comps = build_torch_components(v, None, device=torch.device("cpu"), dtype=torch.float32)
    return v, comps


def requests() -> list[Any]:
    from wan_desktop.request import GenerationRequest

    return [GenerationRequest(prompt=p, steps=STEPS, seed=i, **SIZE) for i, p in enumerate(PROMPTS)]


@functools.cache
def dit_graph() -> Path:
    from wan_desktop.export.onnx_export import export_dit

    v, comps = t2v()
    return export_dit(comps.denoisers[0].model, v, work_dir() / "dit.onnx", slim=False)


@functools.cache
def calibration() -> Any:
    """DiT inputs of every step of two real generations (CFG batch 2): 8 samples."""
    from wan_desktop.export.quantize import record_calibration

    _, comps = t2v()
    return record_calibration(comps, requests())


@functools.cache
def quantized(precision_value: str) -> Any:
    from wan_desktop.export.quantize import quantize_dit

    from wan_desktop.variants import Precision

    fit, _ = calibration().split(4)
    return quantize_dit(
        dit_graph(), work_dir() / f"dit.{precision_value}.onnx", Precision(precision_value), fit
    )


@functools.cache
def small_vae_variant() -> Any:
    v = tiny_variant("t2v-1.3B")
    return replace(v, vae=replace(v.vae, num_res_blocks=1))


@functools.cache
def component_graphs() -> dict[str, Path]:
    """Every non-DiT graph: t5, clip (from the tiny I2V model), the VAE chunk graphs (static at a
    4×4 latent: engines are built per preset shape)."""
    from wan_desktop.engines.torch_backend import _vae_class, randomize
    from wan_desktop.export import onnx_export as E

    from wan_desktop.checkpoints.materialize import weights_on_meta
    from wan_desktop.models.clip import ClipVisionEncoder

    d = work_dir() / "components"
    v, comps = t2v()
    out = {"t5": E.export_t5(comps.text_encoder.model, v, d / "t5.onnx")}
    vi = tiny_variant("i2v-14B")
    with weights_on_meta():
        clip = ClipVisionEncoder(vi.clip)
    out["clip"] = E.export_clip(
        randomize(clip, dtype=torch.float32, device="cpu", seed=12), vi, d / "clip.onnx"
    )
    vs = small_vae_variant()
    with weights_on_meta():
        vae = _vae_class(vs)(vs.vae)
    vae = randomize(vae, dtype=torch.float32, device="cpu", seed=11)
    first, step = E.export_vae_decoder(vae, vs, d, dynamic=False, latent_hw=(4, 4))
    out |= {"vae_decoder_first": first, "vae_decoder_step": step}
    first, step = E.export_vae_encoder(vae, vs, d, dynamic=False, latent_hw=(4, 4))
    out |= {"vae_encoder_first": first, "vae_encoder_step": step}
    return out


def graph_spec(path: Path) -> Any:
    from wan_desktop.export.job import json_spec

    from wan_desktop import specs

    return specs.spec_from_dict(json_spec(path))


# sizes of the example inputs: the VAE graphs are exported static at a 4×4 latent (32×32 px)
EXAMPLE_SIZES = {"B": 2, "S": 16, "N": 2, "H": 40, "W": 48, "h": 4, "w": 4}


def sample_inputs(path: Path, n: int = 2, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Inputs for a graph from its spec at EXAMPLE_SIZES: token ids with a full mask, images and
    videos in [-1, 1], latents ~ N(0, 1). VAE step graphs get the real cache their first graph
    leaves (ORT), not noise."""
    import onnxruntime as ort

    from wan_desktop import specs

    spec = graph_spec(path)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        feed: dict[str, np.ndarray] = {}
        for t in spec.inputs:
            dims = specs.resolve_dims(t, EXAMPLE_SIZES)
            if t.name == "ids":
                feed[t.name] = rng.integers(0, 300, dims).astype(np.int64)
            elif t.name == "mask":
                feed[t.name] = np.ones(dims, dtype=np.int64)
            elif t.name in ("images", "video"):
                feed[t.name] = rng.uniform(-1, 1, dims).astype(np.float32)
            else:
                feed[t.name] = rng.standard_normal(dims).astype(np.float32)
        out.append(feed)
    if path.stem.endswith("_step"):
        first = path.with_name(path.name.replace("_step", "_first"))
        sess = ort.InferenceSession(str(first), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        for i, feed in enumerate(out):
            res = dict(
                zip(names, sess.run(None, sample_inputs(first, 1, seed + i)[0]), strict=True)
            )
            for k in list(feed):
                if k.startswith("cache_in_"):
                    feed[k] = res[k.replace("cache_in_", "cache_out_")]
    return out
