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
