"""FP8 / INT8 Q/DQ of the tiny DiT's ONNX graph with ModelOpt, calibrated on real trajectories of
our pipeline, run in ONNX Runtime (CPU) and compared with the unquantized graph.

Bounds (calibrated from measured runs on this tiny random-weight DiT, 2 blocks, dim 256):
velocity error vs fp32 on held-out steps FP8 1.6–1.9 %, INT8 0.6–0.7 %; PSNR of a whole 4-step
generation FP8 ≈ 38 dB, INT8 > 40 dB. The asserted bounds leave ~2× room for other CPUs' rounding
(ORT kernels differ by ISA), and each error must also be above 1e-4: a quantizer that inserted
nothing, or Q/DQ that ORT ignored, would fail.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from tests.export import trt_helpers as H

pytest.importorskip("modelopt.onnx.quantization", reason="needs the export extra (nvidia-modelopt)")

from wan_desktop.export import quantize as Q

from wan_desktop.cancel import CancelToken
from wan_desktop.errors import Cancelled, ConfigError, EngineError
from wan_desktop.variants import Precision

pytestmark = pytest.mark.slow  # FP8/INT8 quantization of exported ONNX graphs

BLOCK_LINEARS = 2 * (4 + 4 + 2)  # tiny DiT: 2 blocks × (self q k v o, cross q k v o, ffn 0 2)
ATTENTION_MATMULS = 2 * 2 * 2  # 2 blocks × 2 attentions × (Q·Kᵀ, P·V)


def test_calibration_records_every_dit_call_of_real_generations():
    v, comps = H.t2v()
    denoisers = comps.denoisers
    cal = H.calibration()
    assert comps.denoisers is denoisers  # the recording wrapper is gone afterwards
    assert len(cal) == len(H.PROMPTS) * H.STEPS
    s = cal.samples[0]
    z, t, h, w = v.latent_shape(H.SIZE["width"], H.SIZE["height"], H.SIZE["frames"])
    assert s["latents"].shape == (2, z, t, h, w)  # CFG batch: cond + uncond
    assert s["context"].shape == (2, v.dit.text_len, v.dit.text_dim)
    assert s["rope_cos"].shape == (t * (h // 2) * (w // 2), v.dit.head_dim // 2)
    # all timesteps of each run, high noise first; both halves of the batch share them
    ts = [float(x["timestep"][0]) for x in cal.samples]
    for run in range(len(H.PROMPTS)):
        steps = ts[run * H.STEPS : (run + 1) * H.STEPS]
        assert steps == sorted(steps, reverse=True) and steps[0] > 900
    assert all(float(x["timestep"][1]) == float(x["timestep"][0]) for x in cal.samples)
    # two prompts, two seeds: the recorded latents differ between runs
    assert not np.allclose(cal.samples[0]["latents"], cal.samples[H.STEPS]["latents"])


def test_calibration_set_saves_and_loads_exactly(tmp_path):
    cal = H.calibration()
    back = Q.CalibrationSet.load(cal.save(tmp_path / "cal.npz"))
    assert len(back) == len(cal) and back.names == cal.names
    for a, b in zip(cal.samples, back.samples, strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert dict(back.meta)["variant"] == "t2v-1.3B"
    with pytest.raises(ConfigError, match="cannot read calibration"):
        Q.CalibrationSet.load(tmp_path / "missing.npz")


def test_only_the_block_linears_and_attention_are_selected():
    model = onnx.load(str(H.dit_graph()), load_external_data=False)
    linears = Q.select_dit_nodes(model, attention=False)
    both = Q.select_dit_nodes(model, attention=True)
    assert len(linears) == BLOCK_LINEARS
    assert len(both) == BLOCK_LINEARS + ATTENTION_MATMULS
    by_name = {n.name: n for n in model.graph.node}
    for name in linears:
        scope = Q.node_scopes(by_name[name])[-2]
        assert ".blocks." in scope and not any(
            s in scope for s in ("embedding", "time_projection", "head", "modulation")
        )
    keep = set(Q.fp32_nodes(model))
    sensitive = [
        n.name
        for n in model.graph.node
        if n.op_type in ("Conv", "Gemm", "MatMul")
        and any(
            s in Q.node_scopes(n)[-2]
            for s in ("patch_embedding", "time_embedding", "time_projection", "head.head")
        )
    ]
    assert len(sensitive) == 5 and set(sensitive) <= keep  # conv, 2 time gemms, projection, head
    assert not set(linears) & keep  # the block linears run in bf16 in the engine graph


@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_quantized_graph_runs_in_onnxruntime_within_bounds(precision):
    _, comps = H.t2v()
    q = H.quantized(precision)
    _, held = H.calibration().split(4)
    report = Q.evaluate_quantization(
        H.dit_graph(), q, held, components=comps, request=H.requests()[0]
    )
    print(f"\n{precision}: {report.as_dict()}")
    # what was quantized: every block linear; FP8 also the attention matmuls, INT8 not (13 %)
    assert report.quantized_nodes == BLOCK_LINEARS + (
        ATTENTION_MATMULS if precision == "fp8" else 0
    )
    assert report.attention_nodes == (ATTENTION_MATMULS if precision == "fp8" else 0)
    bound = {"fp8": 0.04, "int8": 0.015}[precision]
    assert 1e-4 < report.velocity_rel_error < bound
    assert report.velocity_max_rel_error < 1.5 * bound
    assert report.velocity_cosine > 0.999
    assert report.video_psnr_db is not None
    assert math.isfinite(report.video_psnr_db)  # not identical: the quantization is real
    assert report.video_psnr_db > {"fp8": 30.0, "int8": 34.0}[precision]
    assert report.samples == len(held) > 0


@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_qdq_types_and_scales(precision):
    """E4M3 / INT8 zero points; weights per output channel, activations per tensor."""
    model = onnx.load(str(H.quantized(precision).path))
    init = {i.name: i for i in model.graph.initializer}
    want = TensorProto.FLOAT8E4M3FN if precision == "fp8" else TensorProto.INT8
    zps = [
        init[n.input[2]]
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in init
    ]
    assert zps and all(z.data_type == want for z in zps)
    producer = {o: n for n in model.graph.node for o in n.output}
    weight_scales, act_scales = [], []
    for n in model.graph.node:
        if n.op_type != "DequantizeLinear":
            continue
        scale = onnx.numpy_helper.to_array(init[n.input[1]])
        src = producer.get(n.input[0])  # weights: stored quantized, or Q of an fp32 initializer
        weight = n.input[0] in init or (
            src is not None and src.op_type == "QuantizeLinear" and src.input[0] in init
        )
        (weight_scales if weight else act_scales).append(scale.size)
    assert weight_scales and all(s in (256, 320) for s in weight_scales)  # out features
    assert act_scales and all(s == 1 for s in act_scales)


def test_engine_graph_is_bf16_with_fp32_islands(tmp_path):
    q = H.quantized("fp8")
    out = Q.to_engine_graph(q.path, tmp_path / "dit.engine.onnx", keep_fp32=q.keep_fp32)
    model = onnx.load(str(out))
    types = {i.data_type for i in model.graph.initializer}
    assert TensorProto.BFLOAT16 in types and TensorProto.FLOAT in types
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT] * 5
    init = {i.name: i for i in model.graph.initializer}
    # the time-embedding Gemms keep fp32 weights; the block linears' weights are FP8 + Q/DQ
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert gemms and all(
        init[n.input[1]].data_type == TensorProto.FLOAT for n in gemms if n.input[1] in init
    )
    assert sum(n.op_type == "DequantizeLinear" for n in model.graph.node) >= BLOCK_LINEARS


def test_bad_requests_are_typed_errors(tmp_path):
    cal = H.calibration()
    with pytest.raises(ConfigError, match="fp8 or int8"):
        Q.quantize_dit(H.dit_graph(), tmp_path / "x.onnx", Precision.BF16, cal)
    with pytest.raises(ConfigError, match="calibration method"):
        Q.quantize_dit(H.dit_graph(), tmp_path / "x.onnx", Precision.INT8, cal, method="median")
    partial = Q.CalibrationSet(
        tuple({k: v for k, v in s.items() if k != "context"} for s in cal.samples)
    )
    with pytest.raises(ConfigError, match="lacks the graph inputs"):
        Q.quantize_dit(H.dit_graph(), tmp_path / "x.onnx", Precision.INT8, partial)
    with pytest.raises(ConfigError, match="at least one"):
        Q.CalibrationSet(())
    # a slimmed graph has lost its module scopes: refused with the remedy, not mis-quantized
    model = onnx.load(str(H.dit_graph()), load_external_data=False)
    for n in model.graph.node:
        del n.metadata_props[:]
    with pytest.raises(EngineError, match="module names") as e:
        Q.select_dit_nodes(model)
    assert "slim=False" in e.value.remedy
    assert not (tmp_path / "x.onnx").exists()


def test_cancel_stops_calibration_and_writes_nothing(tmp_path):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        Q.quantize_dit(
            H.dit_graph(), tmp_path / "c.onnx", Precision.INT8, H.calibration(), cancel=token
        )
    assert list(tmp_path.iterdir()) == []


def test_quantize_folder_rewrites_the_dit_entry_of_an_export(t2v_model, t2v_engines, tmp_path):
    """The export job's quantize step on a real export folder (tests/export/conftest.py): the
    slimmed DiT graph is refused with the remedy; with the unslimmed graph of the same checkpoint
    the entry becomes the calibrated FP8 Q/DQ graph and records its error."""
    import dataclasses
    import shutil
    from types import SimpleNamespace

    from wan_desktop.engines import cache
    from wan_desktop.export.onnx_export import export_dit

    from wan_desktop.checkpoints import load
    from wan_desktop.checkpoints.detect import detect_model

    folder = tmp_path / "engines"
    shutil.copytree(t2v_engines, folder)
    job = SimpleNamespace(
        precision="fp8", model=str(t2v_model.official), vae=None, text_encoder=None, tokenizer=None
    )
    small = dict(prompts=H.PROMPTS, size=(64, 64, 9), steps=H.STEPS)
    with pytest.raises(EngineError, match="slimmed") as e:
        Q.quantize_folder(folder, job, **small)
    assert "slim=False" in e.value.remedy

    files = detect_model(str(t2v_model.official))
    m = cache.read_manifest(folder)
    entry = m.entry("dit")
    src = folder / entry.file
    export_dit(load.load_dit(files, 0, dtype=torch.float32), m.variant, src, slim=False)
    fixed = dataclasses.replace(entry, sha256=cache.sha256_file(src), size=src.stat().st_size)
    cache.write_manifest(folder, m.with_entries([fixed if x is entry else x for x in m.entries]))
    lines: list[str] = []
    Q.quantize_folder(folder, job, log=lines.append, **small)
    q = cache.read_manifest(folder).entry("dit")
    assert q.precision == "fp8" and q.file == "dit.fp8.onnx" and not src.exists()
    assert q.sha256 == cache.sha256_file(folder / q.file)
    assert q.extra["quantized_nodes"] == BLOCK_LINEARS + ATTENTION_MATMULS
    assert q.extra["calibration"]["samples"] == 6  # 8 recorded steps, every 4th held out
    assert 1e-4 < q.extra["velocity_rel_error"] < 0.04
    assert q.extra["keep_fp32"]  # for the engine graph (build.py)
    assert any("velocity error" in line for line in lines)
    assert cache.check_entry(folder, cache.read_manifest(folder), q) is None
