"""The SkyReels-V2 DF DiT as an ONNX graph (per-frame timesteps, the fps embedding, the
block-causal mask) runs in ONNX Runtime (CPU) within 1e-4 of our torch module at two latent shapes
(the frame count is dynamic), with its causal block size and fps in the metadata."""

from __future__ import annotations

import pytest
import torch

from tests.export.conftest import rel_err, session
from tests.skyreels_models import tiny_skyreels

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow  # the dynamo exporter traces the graph for seconds
RTOL = 1e-4  # ARCHITECTURE.md: ONNX graphs within 1e-4 of the torch modules


@pytest.mark.parametrize(
    ("name", "block", "fps"),
    [("skyreels-v2-df-1.3B-540P", 2, 16), ("skyreels-v2-df-14B-540P", 1, 24)],
    ids=["df-1.3B async block 2, fps 16", "df-14B sync"],
)
def test_df_dit_graph_matches_torch_at_two_shapes(tmp_path, name, block, fps):
    import onnx
    from wan_desktop.export.onnx_export import dit_example
    from wan_desktop.export.onnx_forcing import export_forcing_dit

    from wan_desktop.models.dit import WanModel
    from wan_desktop.models.rope import rope_cos_sin
    from wan_desktop.specs import dit_spec

    variant = tiny_skyreels(name)
    torch.manual_seed(5)
    model = WanModel(variant.dit).eval()
    with torch.no_grad():  # the tables default to randn / zeros: make every weight live
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = export_forcing_dit(
        model, variant, tmp_path / "dit.onnx", causal_block_size=block, fps=fps
    )
    spec = dit_spec(variant)
    assert [x.dims for x in spec.inputs if x.name == "timestep"] == [("B", "T")]
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert meta["wan_desktop.causal_block_size"] == str(block)
    assert meta["wan_desktop.fps"] == str(fps)
    s = session(path)
    for latent in ((6, 10, 14), (4, 6, 4)):
        _spec, args = dit_example(variant, latent)
        t, h, w = latent
        # staggered per-frame timesteps, as an asynchronous schedule makes them
        steps = torch.tensor([0.0, 20.0, 333.0, 333.0, 999.0, 999.0])[:t]
        args = (args[0], torch.stack([steps, steps.flip(0)]), *args[2:])
        cos, sin = rope_cos_sin((t, h // 2, w // 2), variant.dit.head_dim)
        args = (*args[:3], cos, sin)
        with torch.no_grad():
            ref = model(args[0], args[1], args[2], fps=fps, causal_block_size=block)
        feeds = {x.name: a.numpy() for x, a in zip(spec.inputs, args, strict=True)}
        (out,) = s.run(None, feeds)
        err = rel_err(out, ref)
        print(f"ONNX DF DiT {name} block {block} latent {latent}: rel err {err:.2e}")
        assert err < RTOL, latent


def test_a_df_run_on_onnxruntime_equals_torch_and_refuses_another_block_size(tmp_path):
    """The DF loop drives the ONNX Runtime denoiser exactly as the torch one (per-frame long
    timesteps are fed as float32): same frames; a run with another causal block size than the
    graph's is an EngineError naming the remedy."""
    from dataclasses import replace

    from wan_desktop.engines.factory import build_components
    from wan_desktop.engines.onnxruntime_backend import OrtDenoiser, OrtGraph
    from wan_desktop.export.onnx_forcing import export_forcing_dit

    from tests.numerics import psnr_uint8
    from wan_desktop import diffusion_forcing as df
    from wan_desktop.errors import EngineError
    from wan_desktop.options import RunOptions
    from wan_desktop.request import GenerationRequest
    from wan_desktop.specs import dit_spec, spec_to_dict

    variant = tiny_skyreels("skyreels-v2-df-1.3B-540P")
    options = RunOptions(device="cpu", dtype="float32", random_weights=variant.name)
    components, device = build_components(options, variant, None)
    model = components.denoisers[0].model
    path = export_forcing_dit(model, variant, tmp_path / "dit.onnx", causal_block_size=2, fps=16)
    ort = OrtDenoiser(OrtGraph(path, dit_spec(variant)), variant)
    ort.load(device)
    on_ort = replace(components, denoisers=(ort,))
    kw = dict(prompt="a swan", width=32, height=32, steps=3, seed=3, fps=16)
    r = GenerationRequest(
        frames=37, base_frames=13, overlap_history=5, ar_step=1, causal_block_size=2, **kw
    ).resolve(variant)
    want = df.generate(components, r, device=device)
    got = df.generate(on_ort, r, device=device)
    p = psnr_uint8(got, want)
    print(f"DF run (4 windows, async block 2) on ONNX Runtime vs torch: PSNR {p:.1f} dB")
    assert p >= 60.0
    with pytest.raises(EngineError, match="causal block size 2") as e:
        df.generate(on_ort, replace(r, causal_block_size=1, ar_step=0), device=device)
    assert "--causal-block-size 2" in str(e.value.remedy)
    # a TensorRT engine built from that graph refuses the same way, before any TensorRT call
    from wan_desktop.engines.cache import EngineEntry
    from wan_desktop.engines.tensorrt_backend import TrtDenoiser, TrtEngine

    entry = EngineEntry(
        component="dit",
        file="dit.engine",
        runtime="tensorrt",
        runtime_version="0",
        precision="fp32",
        spec=spec_to_dict(dit_spec(variant)),
        sha256="0" * 64,
        size=0,
        onnx_file="dit.onnx",
    )
    trt = TrtDenoiser(TrtEngine(entry, tmp_path), variant)
    with pytest.raises(EngineError, match="exported for 16 fps, the run asks for 24"):
        trt(torch.zeros(1, 16, 2, 4, 4), torch.zeros(1, 2), torch.zeros(1, 512, 32), fps=24,
            causal_block_size=2)  # fmt: skip


def test_export_cli_makes_the_df_dit_for_the_asked_block_size_and_fps(tmp_path, cli):
    """`wan-desktop export --causal-block-size 2 --fps 16` of a DF model: the DiT graph records
    them, and the manifest's rebuild command repeats them."""
    import onnx
    from wan_desktop.engines.cache import read_manifest

    from tests.skyreels_models import build_tiny_skyreels

    model = build_tiny_skyreels(tmp_path / "m", "skyreels-v2-df-1.3B-540P")
    out = tmp_path / "engines"
    args = ["export", "--model", model.official, "--out", out, "--components", "dit"]
    r = cli([*args, "--causal-block-size", "2", "--fps", "16", "--no-progress"])
    assert r.code == 0, r.err
    meta = {
        p.key: p.value
        for p in onnx.load(str(out / "dit.onnx"), load_external_data=False).metadata_props
    }
    assert (meta["wan_desktop.causal_block_size"], meta["wan_desktop.fps"]) == ("2", "16")
    manifest = read_manifest(out)
    assert manifest.variant.name == "skyreels-v2-df-1.3B-540P"
    assert "--causal-block-size 2 --fps 16" in manifest.rebuild
