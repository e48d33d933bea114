"""Our VaceWanModel against diffusers' WanVACETransformer3DModel on the same random weights (fp32,
CPU). diffusers' state dict is renamed with checkpoints.keymap_dit and loaded strictly, so the test
also proves the VACE key map (proj_in/proj_out = before_proj/after_proj) complete."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.numerics import rel_err
from tests.vace_models import diffusers_vace_transformer, tiny_vace_variant
from wan_desktop.checkpoints.keymap_dit import key_layout, official_key
from wan_desktop.errors import ConfigError
from wan_desktop.models.dit import WanModel
from wan_desktop.models.vace import VaceWanModel, make_dit

pytest.importorskip("diffusers")

B, T, H, W = 2, 3, 4, 6  # patch grid 3 × 2 × 3


def _pair(name: str = "vace-1.3B"):
    cfg = tiny_vace_variant(name).dit
    ref = diffusers_vace_transformer(cfg, seed=7)
    sd = ref.state_dict()
    ours = VaceWanModel(cfg).eval()
    ours.load_state_dict({official_key(k): v for k, v in sd.items()}, strict=True)
    return cfg, ref, ours


def _inputs(cfg, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, cfg.in_dim, T, H, W, generator=g)
    vace = torch.randn(B, cfg.vace_in_dim, T, H, W, generator=g)
    ctx = torch.randn(B, 12, cfg.text_dim, generator=g)
    t = torch.tensor([937.0, 412.0])
    return x, t, ctx, vace


@pytest.mark.parametrize("scale", [1.0, 0.6])
def test_forward_matches_diffusers(scale):
    cfg, ref, ours = _pair()
    assert key_layout(ref.state_dict()) == "diffusers"
    x, t, ctx, vace = _inputs(cfg)
    with torch.no_grad():
        want = ref(
            hidden_states=x,
            timestep=t,
            encoder_hidden_states=ctx,
            control_hidden_states=vace,
            control_hidden_states_scale=torch.full((len(cfg.vace_layers),), scale),
            return_dict=False,
        )[0]
        got = ours(x, t, ctx, vace=vace, vace_scale=scale)
    err = rel_err(got, want)
    print(f"VACE DiT vs diffusers (scale {scale}): rel err {err:.2e}")
    assert got.shape == (B, cfg.out_dim, T, H, W)
    assert err < 1e-5


def test_official_keys_before_proj_only_on_the_first_vace_block():
    cfg = tiny_vace_variant().dit
    keys = set(VaceWanModel(cfg).state_dict())
    assert "vace_blocks.0.before_proj.weight" in keys
    assert "vace_blocks.1.before_proj.weight" not in keys
    assert {"vace_blocks.1.after_proj.bias", "vace_patch_embedding.weight"} <= keys
    assert "vace_blocks.1.modulation" in keys and "vace_blocks.0.norm3.weight" in keys
    # the base model's keys are all there, unchanged
    assert set(WanModel(cfg).state_dict()) <= keys


def test_scale_zero_is_the_base_model_and_the_hint_enters_after_its_block():
    cfg, _ref, ours = _pair()
    x, t, ctx, vace = _inputs(cfg, seed=3)
    base = WanModel(cfg).eval()
    base.load_state_dict(
        {k: v for k, v in ours.state_dict().items() if not k.startswith("vace")}, strict=True
    )
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t, ctx, vace=vace, vace_scale=0.0), base(x, t, ctx))
        state = ours.prepare(x, t, ctx, vace=vace, vace_scale=1.0)
        assert state.hints is not None and sorted(state.hints) == list(cfg.vace_layers)
        # a different VACE context changes the output; the hint of block 1 only after block 1
        other = ours(x, t, ctx, vace=vace.flip(0), vace_scale=1.0)
        assert rel_err(other, ours(x, t, ctx, vace=vace, vace_scale=1.0)) > 1e-2


def test_make_dit_and_input_checks():
    cfg = tiny_vace_variant().dit
    assert type(make_dit(cfg)) is VaceWanModel
    assert type(make_dit(replace(cfg, vace_in_dim=None, vace_layers=()))) is WanModel
    model = VaceWanModel(cfg).eval()
    x, t, ctx, vace = _inputs(cfg)
    with pytest.raises(ConfigError, match="needs its VACE context"):
        model(x, t, ctx)
    with pytest.raises(ConfigError, match="VACE context must be"):
        model(x, t, ctx, vace=vace[:, :16])
    with pytest.raises(ConfigError, match="does not match the latents"):
        model(x, t, ctx, vace=vace[:, :, :2])
    with pytest.raises(ConfigError, match="VACE layers"):
        replace(cfg, vace_layers=(1,))


def test_bf16_weights_keep_the_vace_fp32_islands():
    cfg = tiny_vace_variant().dit
    model = VaceWanModel(cfg).cast_weights(torch.bfloat16)
    assert model.vace_patch_embedding.weight.dtype == torch.float32
    assert model.vace_blocks[1].modulation.dtype == torch.float32
    assert model.vace_blocks[0].before_proj.weight.dtype == torch.bfloat16
    x, t, ctx, vace = _inputs(cfg)
    with torch.no_grad():
        out = model(x, t, ctx, vace=vace, vace_scale=1.0)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
