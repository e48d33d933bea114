"""Our CLIP vision tower against transformers' CLIPVisionModelWithProjection on the same random
weights (fp32, CPU), the weights converted with checkpoints.keymap_clip.

Wan reads the output of the penultimate block (31 of 32) before post_norm: in transformers that is
``hidden_states[-2]`` (diffusers' Wan I2V pipeline takes the same tap). TINY_CLIP taps 2 of 3 blocks.
"""

from __future__ import annotations

import pytest
import torch

from tests.numerics import rel_err
from tests.tiny import TINY_CLIP
from wan_desktop.checkpoints.keymap_clip import (
    convert_hf_state_dict,
    hf_recipes,
    load_clip_visual,
    official_key,
    official_shapes_from_hf,
)
from wan_desktop.models.clip import ClipVisionEncoder, preprocess

transformers = pytest.importorskip("transformers")


def _hf_model(cfg=TINY_CLIP):
    hf_cfg = transformers.CLIPVisionConfig(
        hidden_size=cfg.dim,
        intermediate_size=cfg.mlp_width,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        projection_dim=cfg.out_dim,
        hidden_act="gelu",  # laion/CLIP-ViT-H-14 and open-clip ViT-H: exact (erf) GELU
        layer_norm_eps=cfg.eps,
    )
    hf_cfg._attn_implementation = "eager"
    model = transformers.CLIPVisionModelWithProjection(hf_cfg).eval()
    g = torch.Generator().manual_seed(4321)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.copy_(1.0 + 0.3 * r if name.endswith("weight") else 0.2 * r)
            elif p.dim() == 1:
                p.copy_(0.2 * r if name.endswith("bias") else r)  # biases; class embedding
            elif "position_embedding" in name:
                p.copy_(r)
            else:
                p.copy_(r / p[0].numel() ** 0.5)
    return model


def _images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 37, 53, generator=g) * 2 - 1  # any size, [-1, 1]


def test_tap_matches_hidden_states_minus_2():
    hf = _hf_model()
    ours = ClipVisionEncoder(TINY_CLIP).eval()
    ours.load_state_dict(convert_hf_state_dict(hf.state_dict()), strict=True)
    pixels = preprocess(_images(), TINY_CLIP)
    with torch.no_grad():
        out = hf(pixel_values=pixels, output_hidden_states=True)
        tap = ours(pixels)
        full = ours.visual(pixels, num_blocks=TINY_CLIP.num_layers)
        v = ours.visual
        embeds = (
            torch.nn.functional.layer_norm(
                full[:, 0], (TINY_CLIP.dim,), v.post_norm.weight, v.post_norm.bias, TINY_CLIP.eps
            )
            @ v.head
        )
    assert tap.shape == (2, TINY_CLIP.num_patches + 1, TINY_CLIP.dim)
    err_tap = rel_err(tap, out.hidden_states[-2])
    err_full = rel_err(full, out.hidden_states[-1])
    err_emb = rel_err(embeds, out.image_embeds)
    print(
        f"CLIP fp32 vs CLIPVisionModelWithProjection: tap (hidden_states[-2]) {err_tap:.2e}, "
        f"all blocks {err_full:.2e}, post_norm+head vs image_embeds {err_emb:.2e}"
    )
    assert err_tap <= 1e-5 and err_full <= 1e-5 and err_emb <= 1e-5
    # the tap is not the last layer
    assert rel_err(tap, out.hidden_states[-1]) > 1e-2


@pytest.mark.parametrize("with_projection", [True, False])
def test_loader_reads_hf_files(tmp_path, with_projection):
    """Safetensors as saved by transformers 5: CLIPVisionModelWithProjection keys carry the
    ``vision_model.`` prefix, CLIPVisionModel keys do not (and have no projection / head)."""
    hf = _hf_model()
    if with_projection:
        hf.save_pretrained(tmp_path)
    else:
        base = transformers.CLIPVisionModel(hf.config).eval()
        base.load_state_dict(
            {
                k.removeprefix("vision_model."): v
                for k, v in hf.state_dict().items()
                if k.startswith("vision_model.")
            },
            strict=True,
        )
        base.save_pretrained(tmp_path)
    files = sorted(tmp_path.glob("*.safetensors"))
    ours = load_clip_visual(files, TINY_CLIP)
    pixels = preprocess(_images(), TINY_CLIP)
    with torch.no_grad():
        ref = hf(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        err = rel_err(ours(pixels), ref)
    print(f"CLIP loaded from HF safetensors (projection: {with_projection}): {err:.2e}")
    assert err <= 1e-5
    if not with_projection:
        assert not ours.visual.head.any()


def test_keymap_rules():
    hf = _hf_model()
    shapes = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    official = official_shapes_from_hf(shapes)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in ClipVisionEncoder(TINY_CLIP).state_dict().items()}
    assert official == expected
    assert (
        official_key("vision_model.encoder.layers.2.mlp.fc2.bias")
        == "visual.transformer.2.mlp.2.bias"
    )
    assert (
        official_key("encoder.layers.0.self_attn.out_proj.weight")
        == "visual.transformer.0.attn.proj.weight"
    )
    assert official_key("visual_projection.weight") == "visual.head"
    with pytest.raises(KeyError, match="to_qkv"):
        official_key("vision_model.encoder.layers.0.self_attn.q_proj.weight")
    with pytest.raises(KeyError):
        official_key("text_model.encoder.layers.0.mlp.fc1.weight")
    # ignored extras of older / full CLIP files
    extra = shapes | {
        "vision_model.embeddings.position_ids": (1, 5),
        "logit_scale": (),
        "text_model.embeddings.token_embedding.weight": (10, 8),
    }
    assert official_shapes_from_hf(extra) == official
    # an incomplete q/k/v triple or a foreign key is an error
    broken = {k: v for k, v in shapes.items() if "layers.1.self_attn.v_proj.weight" not in k}
    with pytest.raises(KeyError, match="incomplete"):
        hf_recipes(broken)
    with pytest.raises(KeyError, match=r"blocks\.0\.self_attn"):
        hf_recipes(shapes | {"blocks.0.self_attn.q.weight": (4, 4)})


def test_mlp_width_is_read_from_the_weights(tmp_path):
    """A CLIP whose MLP is 3× its width, not the 4× of ViT-H/14: detection reads the width from the
    fc1 weight, and the loaded tower matches transformers' on those weights."""
    from dataclasses import replace

    from wan_desktop.checkpoints.detect import clip_config
    from wan_desktop.memory import clip_params

    narrow = replace(TINY_CLIP, mlp_dim=3 * TINY_CLIP.dim)
    hf = _hf_model(narrow)
    hf.save_pretrained(tmp_path)
    files = sorted(tmp_path.glob("*.safetensors"))
    shapes = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    cfg = clip_config(
        official_shapes_from_hf(shapes), str(files[0]), {"num_attention_heads": TINY_CLIP.num_heads}
    )
    assert cfg.mlp_width == 3 * TINY_CLIP.dim
    ours = load_clip_visual(files, cfg)
    assert clip_params(cfg) == sum(p.numel() for p in ours.parameters())  # the memory planner's
    pixels = preprocess(_images(), cfg)
    with torch.no_grad():
        ref = hf(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        err = rel_err(ours(pixels), ref)
    assert err <= 1e-5
    # the released width is spelt as the presets spell it, so detected configs equal them
    assert (
        clip_config(
            official_shapes_from_hf(
                {k: tuple(v.shape) for k, v in _hf_model().state_dict().items()}
            ),
            str(files[0]),
            {},
        )
        == TINY_CLIP
    )
