"""The reference side of ``wan-desktop bench``: diffusers' components with our variant's config.

diffusers' ``WanTransformer3DModel`` and ``AutoencoderKLWan``, transformers' ``UMT5EncoderModel``
and diffusers' ``WanPipeline``, built with random weights on the device and timed on the same inputs
as ours (``bench.py``), with the same clock; :func:`ratios` compares the two sides. diffusers is a
dev dependency: without it :func:`diffusers_version` is None and the bench skips this side.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from .bench_measure import Clock, Memory


def diffusers_version() -> str | None:
    try:
        import diffusers
    except ImportError:
        return None
    return diffusers.__version__


def measure(
    variant: Any,
    device: Any,
    dtype: Any,
    clock: Clock,
    inputs: dict[str, Any],
    request: Any,
    *,
    e2e: bool,
) -> dict[str, Any]:
    """diffusers' figures: build, T5 encode, DiT step (first call and median), VAE decode and,
    with ``e2e``, a whole ``WanPipeline`` generation of ``request``; peak memory per phase."""
    import torch

    mem = Memory(device)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    with mem.phase("build"):
        transformers_, vae, t5 = _modules(variant, device, dtype)
    out["build_s"] = round(time.perf_counter() - t0, 3)
    tok = _TokenizerForPipeline(variant.t5.vocab_size, variant.dit.text_len)
    batch = tok.tok([request.prompt, "bad"])
    ids, mask = batch.ids.to(device), batch.mask.to(device)
    with mem.phase("t5"), torch.inference_mode():
        out["t5_encode_s"], _ = clock.median(lambda: t5(ids, mask).last_hidden_state)

    tr = transformers_[0]
    x2 = inputs["x2"].to(dtype)
    t2 = inputs["t2"]
    ctx = inputs["context"].to(dtype)

    def step():
        with torch.inference_mode():
            return tr(hidden_states=x2, timestep=t2, encoder_hidden_states=ctx, return_dict=False)[
                0
            ]

    with mem.phase("dit"):
        out["dit_first_call_s"], _ = clock.once(step)
        out["dit_step_s"], _ = clock.median(step, warmup=max(0, clock.warmup - 1))

    # diffusers' VAE takes raw latents: undo our normalisation
    mean = torch.tensor(variant.vae.latents_mean, device=device).view(1, -1, 1, 1, 1)
    std = torch.tensor(variant.vae.latents_std, device=device).view(1, -1, 1, 1, 1)
    lat = (inputs["latents"] * std + mean).to(next(vae.parameters()).dtype)

    def decode():
        with torch.inference_mode():
            return vae.decode(lat, return_dict=False)[0]

    with mem.phase("vae"):
        out["vae_decode_s"], _ = clock.median(decode)

    out["e2e_s"] = None
    if e2e:
        from diffusers import UniPCMultistepScheduler, WanPipeline

        sched = UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            num_train_timesteps=1000,
            flow_shift=request.shift,
        )
        kw: dict[str, Any] = dict(
            tokenizer=tok, text_encoder=t5, vae=vae, scheduler=sched, transformer=tr
        )
        if len(transformers_) == 2:
            kw.update(transformer_2=transformers_[1], boundary_ratio=variant.defaults.boundary)
        if variant.dit.model_type == "ti2v":
            kw.update(expand_timesteps=True)
        pipe = WanPipeline(**kw)
        pipe.set_progress_bar_config(disable=True)
        call: dict[str, Any] = dict(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            height=request.height,
            width=request.width,
            num_frames=request.frames,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            output_type="np",
            max_sequence_length=variant.dit.text_len,
            generator=torch.Generator(device="cpu").manual_seed(0),
        )
        if len(transformers_) == 2:
            call["guidance_scale_2"] = request.guidance_low
        with mem.phase("e2e"):
            out["e2e_s"], _ = clock.once(lambda: pipe(**call))
        del pipe
    out.update(mem.summary())
    return out


def ratios(ours: dict[str, Any], theirs: dict[str, Any] | None) -> dict[str, float | None] | None:
    """diffusers time / our time (> 1: we are faster); diffusers peak / our peak for memory."""
    if theirs is None:
        return None
    out: dict[str, float | None] = {}
    for key in ("t5_encode_s", "dit_step_s", "vae_decode_s", "e2e_s", "peak_allocated_gb"):
        a, b = ours.get(key), theirs.get(key)
        out[
            key.removesuffix("_s").removesuffix("_gb") + "_speedup"
            if key.endswith("_s")
            else "peak_allocated_ratio"
        ] = round(b / a, 4) if a and b else None
    return out


def _modules(variant: Any, device: Any, dtype: Any) -> tuple[list[Any], Any, Any]:
    """diffusers' / transformers' modules with our variant's config, random weights on ``device``:
    the DiT (one per expert), the VAE and the umT5 encoder."""
    import torch
    import transformers
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from .checkpoints.materialize import weights_on_meta

    c, v, t = variant.dit, variant.vae, variant.t5
    with weights_on_meta():
        transformers_ = [
            WanTransformer3DModel(
                patch_size=c.patch_size,
                num_attention_heads=c.num_heads,
                attention_head_dim=c.head_dim,
                in_channels=c.in_dim,
                out_channels=c.out_dim,
                text_dim=c.text_dim,
                freq_dim=c.freq_dim,
                ffn_dim=c.ffn_dim,
                num_layers=c.num_layers,
                cross_attn_norm=True,
                qk_norm="rms_norm_across_heads",
                eps=c.eps,
            )
            for _ in range(variant.experts)
        ]
        vkw: dict[str, Any] = dict(
            base_dim=v.base_dim,
            z_dim=v.z_dim,
            dim_mult=list(v.dim_mult),
            num_res_blocks=v.num_res_blocks,
            temperal_downsample=list(v.temporal_downsample),
            latents_mean=list(v.latents_mean),
            latents_std=list(v.latents_std),
        )
        if v.version == "2.2":
            vkw.update(
                decoder_base_dim=v.decoder_base_dim,
                is_residual=True,
                in_channels=12,
                out_channels=12,
                patch_size=2,
                scale_factor_spatial=16,
            )
        vae = AutoencoderKLWan(**vkw)
        t5 = transformers.UMT5EncoderModel(
            transformers.UMT5Config(
                vocab_size=t.vocab_size,
                d_model=t.dim,
                d_kv=t.dim_attn // t.num_heads,
                num_heads=t.num_heads,
                d_ff=t.dim_ffn,
                num_layers=t.num_layers,
                relative_attention_num_buckets=t.num_buckets,
                relative_attention_max_distance=t.max_distance,
                layer_norm_epsilon=t.eps,
                feed_forward_proj="gated-gelu",
                dropout_rate=0.0,
            )
        )
    vae_dtype = dtype if device.type == "cuda" else torch.float32
    transformers_ = [
        _keep_fp32(_randomize_tied(m, dtype=dtype, device=device, seed=i))
        for i, m in enumerate(transformers_)
    ]
    vae = _randomize_tied(vae, dtype=vae_dtype, device=device, seed=11)
    t5 = _randomize_tied(t5, dtype=dtype, device=device, seed=10)
    return transformers_, vae, t5


def _randomize_tied(module: Any, **kw: Any) -> Any:
    """``randomize``, keeping tied parameters (T5's shared embedding) one tensor."""
    from .engines.torch_backend import randomize

    groups: dict[int, list[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    randomize(module, **kw)
    for names in groups.values():
        first = module.get_parameter(names[0])
        for name in names[1:]:
            owner_name, _, leaf = name.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            owner._parameters[leaf] = first
    return module


def _keep_fp32(model: Any) -> Any:
    """diffusers keeps ``_keep_in_fp32_modules`` in fp32 when loading in bf16: do the same."""
    import torch

    names = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, p in model.named_parameters():
        if any(part in names for part in name.split(".")):
            p.data = p.data.to(torch.float32)
    return model


class _TokenizerForPipeline:
    """What WanPipeline asks of a tokenizer, over our byte tokenizer (random weights need no vocab)."""

    def __init__(self, vocab_size: int, max_length: int) -> None:
        from .text import Tokenizer

        self.tok = Tokenizer.for_random_weights(vocab_size, max_length)

    def __call__(self, prompts: Any, **_kw: Any) -> argparse.Namespace:
        batch = self.tok(list(prompts) if not isinstance(prompts, str) else [prompts])
        return argparse.Namespace(input_ids=batch.ids, attention_mask=batch.mask)
