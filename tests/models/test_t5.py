"""T5Encoder on its own: official key names and shapes, position buckets, masking, dtypes."""

from __future__ import annotations

import pytest
import torch

from tests.numerics import rel_err
from tests.tiny import TINY_T5
from wan_desktop.checkpoints.keymap_t5 import hf_key, make_renamer, official_key
from wan_desktop.models.t5 import T5Encoder, relative_position_bucket
from wan_desktop.variants import T5Config


def _official_table(cfg: T5Config) -> dict[str, tuple[int, ...]]:
    """Spec §2.5, written out."""
    d, a, f, h = cfg.dim, cfg.dim_attn, cfg.dim_ffn, cfg.num_heads
    table = {"token_embedding.weight": (cfg.vocab_size, d), "norm.weight": (d,)}
    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        table |= {
            p + "norm1.weight": (d,),
            p + "norm2.weight": (d,),
            p + "attn.q.weight": (a, d),
            p + "attn.k.weight": (a, d),
            p + "attn.v.weight": (a, d),
            p + "attn.o.weight": (d, a),
            p + "ffn.gate.0.weight": (f, d),
            p + "ffn.fc1.weight": (f, d),
            p + "ffn.fc2.weight": (d, f),
            p + "pos_embedding.embedding.weight": (cfg.num_buckets, h),
        }
    return table


def _random_model(cfg=TINY_T5, seed: int = 0) -> T5Encoder:
    model = T5Encoder(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            p.copy_(
                1 + 0.3 * r
                if "norm" in name
                else r
                if p.shape[1] != cfg.dim or "embedding" in name
                else r / cfg.dim**0.5
            )
    return model


@pytest.mark.parametrize("cfg", [TINY_T5, T5Config()], ids=["tiny", "umt5-xxl"])
def test_keys_and_shapes_are_official(cfg):
    with torch.device("meta"):
        model = T5Encoder(cfg)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == _official_table(cfg)
    if cfg == T5Config():
        assert sum(v.numel() for v in model.state_dict().values()) == 5_680_910_336  # spec §2.1


def test_bucket_values_of_the_spec():
    spec = {
        -200: 15,
        -64: 14,
        -32: 12,
        -16: 10,
        -8: 8,
        -7: 7,
        -1: 1,
        0: 0,
        1: 17,
        8: 24,
        16: 26,
        64: 30,
        127: 31,
        128: 31,
        511: 31,
    }
    rel = torch.tensor(list(spec))
    assert relative_position_bucket(rel).tolist() == list(spec.values())
    # every bucket but 16 (rel > 0 with |rel| = 0) is used, monotone on each side
    full = relative_position_bucket(torch.arange(-600, 601))
    assert set(full.tolist()) == set(range(32)) - {16}
    assert (full[:600].diff() <= 0).all() and (full[601:].diff() >= 0).all()


def test_padding_does_not_change_real_tokens():
    """A prompt alone (no padding) and the same prompt padded in a batch give the same rows."""
    model = _random_model()
    g = torch.Generator().manual_seed(1)
    n = 150  # past max_distance
    ids = torch.randint(3, TINY_T5.vocab_size, (2, 200), generator=g)
    mask = torch.ones(2, 200, dtype=torch.int64)
    mask[1, n:] = 0
    with torch.no_grad():
        batch = model(ids, mask)
        alone = model(ids[1:, :n])
        other = model(ids[:1])  # mask=None means every token is real
    err = rel_err(batch[1, :n], alone[0])
    print(f"T5 padded vs unpadded prompt: {err:.2e}")
    assert err <= 1e-6
    assert rel_err(batch[0], other[0]) <= 1e-6
    # the padded rows differ from what they would be unmasked: the mask did act
    with torch.no_grad():
        unmasked = model(ids[1:])
    assert rel_err(batch[1, :n], unmasked[0, :n]) > 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights(dtype):
    model = _random_model()
    ids = torch.randint(3, TINY_T5.vocab_size, (2, 40))
    mask = torch.ones_like(ids)
    mask[0, 25:] = 0
    with torch.no_grad():
        ref = model(ids, mask)
        got = model.to(dtype)(ids, mask)
    assert model.compute_dtype == dtype and got.dtype == dtype
    err = rel_err(got, ref)
    print(f"T5 {dtype} vs fp32: {err:.2e}")
    assert torch.isfinite(got).all() and 1e-5 < err < 5e-2


def test_keymap_rules():
    assert official_key("shared.weight") == "token_embedding.weight"
    assert official_key("encoder.embed_tokens.weight") is None  # tied copy of shared.weight
    assert official_key("spiece_model") is None  # ComfyUI's embedded tokenizer
    assert official_key("decoder.block.0.layer.0.SelfAttention.q.weight") is None
    assert (
        official_key("encoder.block.7.layer.1.DenseReluDense.wi_0.weight")
        == "blocks.7.ffn.gate.0.weight"
    )
    assert (
        official_key("encoder.block.3.layer.0.SelfAttention.relative_attention_bias.weight")
        == "blocks.3.pos_embedding.embedding.weight"
    )
    with pytest.raises(KeyError):
        official_key("encoder.block.0.layer.0.SelfAttention.q.bias")
    with pytest.raises(KeyError):
        official_key("model.diffusion_model.blocks.0.self_attn.q.weight")
    # A file with only the tied name still provides the embedding.
    rename = make_renamer(["encoder.embed_tokens.weight", "encoder.final_layer_norm.weight"])
    assert rename("encoder.embed_tokens.weight") == "token_embedding.weight"
    assert (
        make_renamer(["shared.weight", "encoder.embed_tokens.weight"])(
            "encoder.embed_tokens.weight"
        )
        is None
    )
    # inverse
    for k in _official_table(TINY_T5):
        assert official_key(hf_key(k)) == k
