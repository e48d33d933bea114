"""The VACE DiT exported to ONNX: its extra inputs (the VACE context and the scale) in the spec and
the graph, ONNX Runtime equal to torch at two shapes and scales, the ORT denoiser feeding them, and
an engine manifest that keeps the VACE architecture."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from wan_desktop.export import onnx_export

from tests.export.conftest import random_module, rel_err, session
from tests.vace_models import tiny_vace_variant
from wan_desktop import specs

pytestmark = pytest.mark.slow  # the dynamo exporter traces the graph for seconds

RTOL = 1e-4


@pytest.fixture(scope="module")
def vace_graph(tmp_path_factory):
    from wan_desktop.models.vace import VaceWanModel

    v = tiny_vace_variant("vace-1.3B")
    model = random_module(lambda: VaceWanModel(v.dit), seed=9).eval()
    path = onnx_export.export_dit(model, v, tmp_path_factory.mktemp("vace") / "dit.onnx")
    return v, model, path


def test_the_spec_has_the_vace_context_and_scale():
    spec = specs.dit_spec(tiny_vace_variant("vace-1.3B"))
    dims = {x.name: x.dims for x in spec.inputs}
    assert dims["vace"] == ("B", 96, "T", "H", "W") and dims["vace_scale"] == ()
    v = tiny_vace_variant()
    plain = replace(v, dit=replace(v.dit, vace_in_dim=None, vace_layers=()))
    assert "vace" not in {x.name for x in specs.dit_spec(plain).inputs}


def test_onnxruntime_equals_torch_at_two_shapes_and_scales(vace_graph):
    v, model, path = vace_graph
    s = session(path)
    assert {i.name for i in s.get_inputs()} >= {"vace", "vace_scale"}
    for latent, batch, scale in (((3, 10, 14), 2, 1.0), ((2, 6, 4), 1, 0.4)):
        spec, args = onnx_export.dit_example(v, latent)
        kw = dict(zip([x.name for x in spec.inputs], args, strict=True))
        kw = {
            k: (a[:batch] if a.dim() and spec.inputs[i].dims[:1] == ("B",) else a)
            for i, (k, a) in enumerate(kw.items())
        }
        kw["vace_scale"] = torch.tensor(scale)
        with torch.no_grad():
            ref = model(
                kw["latents"], kw["timestep"], kw["context"], vace=kw["vace"], vace_scale=scale
            )
            no_hint = model(
                kw["latents"], kw["timestep"], kw["context"], vace=kw["vace"], vace_scale=0.0
            )
        (out,) = s.run(None, {k: a.numpy() for k, a in kw.items()})
        err = rel_err(out, ref)
        print(f"VACE DiT ONNX Runtime vs torch {latent} B={batch} scale {scale}: {err:.2e}")
        assert err < RTOL
        assert rel_err(no_hint, ref) > 1e-2  # the scale input is live in the graph


def test_the_ort_denoiser_feeds_the_context_and_scale(vace_graph):
    from wan_desktop.engines.onnxruntime_backend import OrtDenoiser, OrtGraph

    from wan_desktop.errors import ConfigError

    v, model, path = vace_graph
    den = OrtDenoiser(OrtGraph(path, specs.dit_spec(v)), v)
    den.load(torch.device("cpu"))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 16, 2, 6, 4, generator=g)
    ctx = torch.randn(1, v.dit.text_len, v.dit.text_dim, generator=g)
    vace = torch.randn(1, 96, 2, 6, 4, generator=g)
    t = torch.tensor([500.0])
    with torch.no_grad():
        ref = model(x, t, ctx, vace=vace, vace_scale=0.7)
    assert rel_err(den(x, t, ctx, vace=vace, vace_scale=0.7), ref) < RTOL
    with pytest.raises(ConfigError, match="needs vace"):
        den(x, t, ctx)


def test_the_manifest_keeps_the_vace_architecture():
    from wan_desktop.engines.cache import variant_from_dict, variant_to_dict

    from wan_desktop.variants import VARIANTS

    for name in ("vace-1.3B", "vace-14B", "vace-A14B"):
        v = VARIANTS[name]
        back = variant_from_dict(variant_to_dict(v))
        assert back == v and back.dit.vace_layers == v.dit.vace_layers and back.dit.is_vace
    d = variant_to_dict(VARIANTS["vace-14B"])
    d["dit"]["vace_layers"] = [3, 5]  # a hint layer list without block 0 is not a VACE model
    from wan_desktop.errors import EngineError

    with pytest.raises(EngineError, match="VACE layers"):
        variant_from_dict(d)


def test_an_onnx_engine_folder_runs_a_vace_job_like_torch(tmp_path, cli):
    """`export` of a VACE model writes the VAE encoder too (the context is encoded), and
    `generate --backend onnxruntime` makes the torch backend's frames."""
    import json

    import imageio.v3 as iio
    import numpy as np

    from tests.numerics import psnr_uint8
    from tests.vace_models import FRAMES, build_tiny_vace_model, write_inputs

    m = build_tiny_vace_model(tmp_path / "m")
    (tmp_path / "in").mkdir()
    paths, _ = write_inputs(tmp_path / "in")
    r = cli(["export", "--model", m.official, "--out", tmp_path / "eng"])
    assert r.code == 0, r.err
    names = {
        e["component"]
        for e in json.loads((tmp_path / "eng" / "manifest.json").read_text())["entries"]
    }
    assert {"vae_encoder_first", "vae_encoder_step", "dit"} <= names
    common = ["--prompt", "a cat", "--size", "64x32", "--frames", str(FRAMES), "--steps", "3"]
    common += ["--seed", "3", "--device", "cpu", "--dtype", "float32", "--no-progress"]
    common += ["--control-video", paths["control_video"], "--mask-video", paths["mask_video"]]
    common += ["--ref-image", paths["ref_images"][0], "--model", m.official]
    assert cli(["generate", *common, "--out", tmp_path / "a"]).code == 0
    ort = ["--backend", "onnxruntime", "--engines", tmp_path / "eng"]
    r = cli(["generate", *common, *ort, "--out", tmp_path / "b"])
    assert r.code == 0, r.err
    a, b = (
        torch.from_numpy(np.stack([iio.imread(d / f"{i:05d}.png") for i in range(FRAMES)]))
        for d in (tmp_path / "a", tmp_path / "b")
    )
    p = psnr_uint8(a, b)
    print(f"VACE job, onnxruntime engines vs torch: PSNR {p:.1f} dB")
    assert p >= 40.0
