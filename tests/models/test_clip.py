"""CLIP vision tower on its own: official keys, Wan's preprocessing, the tap, official-file loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.numerics import rel_err
from tests.tiny import TINY_CLIP
from wan_desktop.checkpoints.keymap_clip import load_clip_visual
from wan_desktop.errors import CheckpointError, ConfigError
from wan_desktop.models.clip import ClipVisionEncoder, preprocess, visual_state
from wan_desktop.variants import ClipConfig


def _official_table(cfg: ClipConfig) -> dict[str, tuple[int, ...]]:
    """Spec §5 / wan/modules/clip.py VisionTransformer, written out."""
    d, h, p = cfg.dim, cfg.mlp_width, cfg.patch_size
    t = {
        "visual.patch_embedding.weight": (d, 3, p, p),
        "visual.cls_embedding": (1, 1, d),
        "visual.pos_embedding": (1, cfg.num_patches + 1, d),
        "visual.head": (d, cfg.out_dim),
    }
    for n in ("pre_norm", "post_norm"):
        t |= {f"visual.{n}.weight": (d,), f"visual.{n}.bias": (d,)}
    for i in range(cfg.num_layers):
        b = f"visual.transformer.{i}."
        t |= {
            b + "norm1.weight": (d,),
            b + "norm1.bias": (d,),
            b + "norm2.weight": (d,),
            b + "norm2.bias": (d,),
            b + "attn.to_qkv.weight": (3 * d, d),
            b + "attn.to_qkv.bias": (3 * d,),
            b + "attn.proj.weight": (d, d),
            b + "attn.proj.bias": (d,),
            b + "mlp.0.weight": (h, d),
            b + "mlp.0.bias": (h,),
            b + "mlp.2.weight": (d, h),
            b + "mlp.2.bias": (d,),
        }
    return t


def _random_model(cfg=TINY_CLIP, seed=0) -> ClipVisionEncoder:
    model = ClipVisionEncoder(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            p.copy_(
                1 + 0.3 * r
                if "norm" in name and name.endswith("weight")
                else 0.2 * r
                if p.dim() == 1
                else r / p[0].numel() ** 0.5
                if p.dim() == 2
                else r
            )
    return model


@pytest.mark.parametrize("cfg", [TINY_CLIP, ClipConfig()], ids=["tiny", "vit-h-14"])
def test_keys_and_shapes_are_official(cfg):
    with torch.device("meta"):
        model = ClipVisionEncoder(cfg)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == _official_table(cfg)
    if cfg == ClipConfig():
        assert model.visual.transformer[0].attn.head_dim == 80
        assert _official_table(cfg)["visual.transformer.0.attn.to_qkv.weight"] == (3840, 1280)


def test_preprocess_is_wans():
    cfg = TINY_CLIP
    # a constant image stays constant through the bicubic resize: exact normalised values
    c = torch.tensor([-1.0, 0.2, 0.9]).view(1, 3, 1, 1).expand(2, 3, 41, 67)
    out = preprocess(c, cfg)
    assert out.shape == (2, 3, cfg.image_size, cfg.image_size) and out.dtype == torch.float32
    want = (torch.tensor([0.0, 0.6, 0.95]) - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    assert torch.allclose(out, want.view(1, 3, 1, 1).expand_as(out), atol=1e-6)
    # an image already at the input size is not resampled; a non-square one is squeezed, not cropped
    x = torch.rand(1, 3, cfg.image_size, cfg.image_size) * 2 - 1
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    assert torch.allclose(preprocess(x, cfg), (x * 0.5 + 0.5 - mean) / std, atol=1e-6)
    wide = torch.zeros(1, 3, 28, 280)
    wide[..., 140:] = (
        1.0  # right half white: after squeezing, the right half of the output is white
    )
    out = preprocess(wide, cfg)[0, 0]
    assert (out[:, -5:] > out[:, :5]).all()
    # bicubic overshoot is kept (no clamp), as in Wan
    edge = torch.full((1, 3, 56, 56), -1.0)
    edge[..., 28:] = 1.0
    ref = F.interpolate(edge, size=(28, 28), mode="bicubic", align_corners=False)
    assert ref.max() > 1.0 and torch.allclose(preprocess(edge, cfg), (ref * 0.5 + 0.5 - mean) / std)


def test_forward_is_the_tap_and_encode_chains():
    model = _random_model()
    images = torch.rand(2, 3, 50, 30) * 2 - 1
    pixels = preprocess(images, TINY_CLIP)
    with torch.no_grad():
        tap = model(pixels)
        two = model.visual(pixels, num_blocks=2)
        three = model.visual(pixels, num_blocks=3)
        enc = model.encode(images)
    assert torch.equal(tap, two) and torch.equal(enc, tap)
    assert rel_err(tap, three) > 1e-2
    with pytest.raises(ConfigError, match="28"):
        model(torch.zeros(1, 3, 30, 30))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights(dtype):
    model = _random_model()
    pixels = preprocess(torch.rand(2, 3, 28, 28) * 2 - 1, TINY_CLIP)
    with torch.no_grad():
        ref = model(pixels)
        got = model.to(dtype)(pixels)
    err = rel_err(got, ref)
    print(f"CLIP {dtype} vs fp32: {err:.2e}")
    assert got.dtype == dtype and model.compute_dtype == dtype and 1e-5 < err < 5e-2


def test_loads_official_pth_with_text_tower(tmp_path):
    model = _random_model()
    state = dict(model.state_dict())
    # the rest of XLMRobertaCLIP's state dict: ignored, not an error
    state["textual.token_embedding.weight"] = torch.randn(11, 8)
    state["textual.head.0.weight"] = torch.randn(8, 8)
    state["log_scale"] = torch.tensor(2.6592)
    path = tmp_path / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
    torch.save({k: v.half() for k, v in state.items()}, path)  # the official file is fp16

    loaded = load_clip_visual([path], TINY_CLIP)
    pixels = preprocess(torch.rand(1, 3, 40, 40) * 2 - 1, TINY_CLIP)
    with torch.no_grad():
        err = rel_err(loaded(pixels), model.half().float()(pixels))
    assert err <= 1e-6
    assert set(visual_state(state)) == set(model.state_dict())

    ClipVisionEncoder(TINY_CLIP).load_state_dict(visual_state(torch.load(path)), strict=True)

    del state["visual.transformer.1.attn.to_qkv.bias"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="missing"):
        load_clip_visual([path], TINY_CLIP)
    torch.save({"log_scale": torch.tensor(1.0)}, path)
    with pytest.raises(CheckpointError, match="visual"):
        load_clip_visual([path], TINY_CLIP)
