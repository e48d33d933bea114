"""Our T5Encoder against transformers' UMT5EncoderModel on the same random weights (CPU).

The transformers state dict is renamed with checkpoints.keymap_t5 and loaded strictly, so the test
also proves the key map complete. Inputs come from the tiny sentencepiece tokenizer: a padded batch
of two prompts of different lengths, the long one past max_distance (128) so every bucket is used.
"""

from __future__ import annotations

import pytest
import torch

from tests.fixtures_text import make_tiny_tokenizer
from tests.numerics import rel_err
from tests.tiny import TINY_T5
from wan_desktop.checkpoints.keymap_t5 import make_renamer, official_key
from wan_desktop.models.t5 import T5Encoder, relative_position_bucket
from wan_desktop.text import Tokenizer
from wan_desktop.variants import NEGATIVE_PROMPT

transformers = pytest.importorskip("transformers")

PROMPTS = [
    " ".join(["Two anthropomorphic cats in comfy boxing gear fight intensely on a stage."] * 12),
    NEGATIVE_PROMPT,
]


def _hf_model(cfg=TINY_T5):
    hf_cfg = transformers.UMT5Config(
        vocab_size=cfg.vocab_size,
        d_model=cfg.dim,
        d_kv=cfg.dim_attn // cfg.num_heads,
        num_heads=cfg.num_heads,
        d_ff=cfg.dim_ffn,
        num_layers=cfg.num_layers,
        relative_attention_num_buckets=cfg.num_buckets,
        relative_attention_max_distance=cfg.max_distance,
        layer_norm_epsilon=cfg.eps,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
    )
    # What the diffusers Wan pipeline loads (google/umt5-xxl): gated tanh-GELU on wi_0.
    assert hf_cfg.is_gated_act and hf_cfg.dense_act_fn == "gelu_new"
    hf_cfg._attn_implementation = "eager"
    model = transformers.UMT5EncoderModel(hf_cfg).eval()
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if "layer_norm" in name:
                p.copy_(1.0 + 0.3 * r)  # not the ones init: a skipped or swapped norm must show
            elif "relative_attention_bias" in name or "shared" in name:
                p.copy_(r)
            else:
                p.copy_(r / p.shape[1] ** 0.5)
    return model


def _ours_from(hf_model, dtype=torch.float32) -> T5Encoder:
    state = hf_model.state_dict()
    rename = make_renamer(state)
    ours = {}
    for k, v in state.items():
        new = rename(k)
        if new is not None:
            ours[new] = v
    model = T5Encoder(TINY_T5).eval()
    model.load_state_dict(ours, strict=True)
    return model.to(dtype)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    folder = make_tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    tok = Tokenizer.from_folder(folder)
    out = tok(PROMPTS)
    assert out.lengths[0] > 2 * TINY_T5.max_distance and out.lengths[1] < 200
    return out


def test_state_dict_maps_completely():
    hf = _hf_model()
    keys = list(hf.state_dict())
    assert "shared.weight" in keys
    mapped = {official_key(k) for k in keys} - {None}
    assert mapped == set(T5Encoder(TINY_T5).state_dict())


def test_matches_umt5_encoder_fp32(batch):
    torch.manual_seed(0)
    hf = _hf_model()
    ours = _ours_from(hf)
    with torch.no_grad():
        ref = hf(input_ids=batch.ids, attention_mask=batch.mask).last_hidden_state
        got = ours(batch.ids, batch.mask)
    assert got.shape == (2, 512, TINY_T5.dim) and got.dtype == torch.float32
    real = batch.mask.bool()
    err_real = rel_err(got[real], ref[real])
    err_all = rel_err(got, ref)
    per_prompt = [rel_err(got[i, :n], ref[i, :n]) for i, n in enumerate(batch.lengths)]
    print(
        f"T5 fp32 vs UMT5EncoderModel: real tokens {err_real:.2e} (per prompt "
        f"{per_prompt[0]:.2e}, {per_prompt[1]:.2e}), padded rows included {err_all:.2e}"
    )
    assert err_real <= 1e-5
    # Padded rows attend to the real tokens only, in both implementations: they match as well.
    assert err_all <= 1e-5


def test_matches_umt5_encoder_bf16(batch):
    """bf16 weights: the same ops in the same order as transformers (and the official code) — fp32
    norm statistics and softmax, GELU written out — so on the CPU the outputs are bit-identical."""
    hf = _hf_model()
    ours32 = _ours_from(hf)
    ours16 = _ours_from(hf, torch.bfloat16)
    hf16 = hf.to(torch.bfloat16)
    with torch.no_grad():
        ref = hf16(input_ids=batch.ids, attention_mask=batch.mask).last_hidden_state
        got = ours16(batch.ids, batch.mask)
        exact = ours32(batch.ids, batch.mask)
    assert got.dtype == torch.bfloat16
    real = batch.mask.bool()
    err_hf, err_fp32 = rel_err(got[real], ref[real]), rel_err(got[real], exact[real])
    print(
        f"T5 bf16: vs UMT5 bf16 {err_hf:.2e} (identical: {torch.equal(got, ref)}); "
        f"vs our fp32 {err_fp32:.2e}"
    )
    assert torch.equal(got, ref)
    assert 1e-4 < err_fp32 < 5e-2  # really ran in bf16, and still close


def test_buckets_match_transformers():
    hf = _hf_model()
    attn = hf.encoder.block[0].layer[0].SelfAttention
    rel = torch.arange(-700, 701)[None, :]
    assert torch.equal(relative_position_bucket(rel), attn._relative_position_bucket(rel))
