"""``wan-desktop bench``: speed and memory of our components at full size, with random weights.

Builds every component of a variant (meta-device build + ``randomize``: no download), then measures
on the local GPU: the T5 encode of a prompt pair, one DiT step (cond+uncond as one batch of 2), the VAE
decode, a whole generation (``pipeline.generate``) and peak VRAM (``torch.cuda.max_memory_allocated``
and the device's used memory). With ``--precision fp8|int8`` / ``--attention`` the DiT's velocity is
compared with the bf16/SDPA velocity of the same weights; with ``--step-cache`` the generation runs
with and without the cache (time, skipped steps, PSNR of the video vs the exact one). When diffusers
is installed the same figures are taken for its components (WanTransformer3DModel, AutoencoderKLWan,
transformers' UMT5EncoderModel, WanPipeline) in the same run, with the ratios diffusers / ours.
``--sweep`` times the DiT in every fast mode instead (precision × attention), each with its error.

Timings: CUDA events around each call, after ``--warmup`` calls, median of ``--repeat``; the first
call of the DiT is reported on its own (``dit_first_call_s``: compile and autotuning land there).
``--tiny`` runs the whole thing with tiny configs on the CPU in seconds (kept working by a test).

A composition root of its own (it builds the torch engines and drives the pipeline, which
``engines/`` must never import) and a subcommand module in the layout of ``cli_args.py``:
``add_parser(subparsers)`` and ``run(args)``. How figures are taken: ``bench_measure.py``;
diffusers' side: ``bench_reference.py``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from . import bench_reference as reference
from .bench_measure import GB, Clock, Memory, free, psnr, rel_errors
from .cli_args import positive_float, size

log = logging.getLogger(__name__)

PROMPT = (
    "Two anthropomorphic cats in comfy boxing gear and bright gloves fight on a spotlighted stage."
)

# ----------------------------------------------------------------------------- command line


def add_parser(subparsers: Any) -> None:
    """Register ``bench`` on the CLI's subparsers; the CLI calls :func:`run` with the namespace."""
    b = subparsers.add_parser("bench", help="measure speed and memory with random weights (JSON)")
    b.add_argument("--variant", default="t2v-1.3B")
    b.add_argument("--size", type=size, help="WIDTHxHEIGHT (default: the variant's)")
    b.add_argument("--frames", type=int, help="4n+1 frames (default: the variant's)")
    b.add_argument(
        "--steps", type=int, help="steps of the whole generation (default: the variant's)"
    )
    b.add_argument(
        "--preset",
        choices=["fast", "turbo", "quality"],
        help="sampling preset (wan_desktop/presets.py): fast = lightx2v 4 steps, no CFG",
    )
    b.add_argument(
        "--tiny-vae",
        metavar="FILE|random",
        help="decode with a TAEHV tiny VAE (a taew2_x file, or random weights)",
    )
    b.add_argument("--precision", choices=["bf16", "fp8", "int8"], default="bf16")
    b.add_argument(
        "--attention",
        default="sdpa",
        help="sdpa | sage | sdpa-cudnn | sdpa-flash | sdpa-efficient | sdpa-math",
    )
    b.add_argument("--compile", action="store_true", help="torch.compile each DiT block")
    b.add_argument("--compile-mode", default=None, help="torch.compile mode (default: inductor's)")
    b.add_argument("--step-cache", type=positive_float, metavar="THRESH", help="TeaCache threshold")
    b.add_argument("--step-cache-signal", default="modulated", choices=["modulated", "e", "e0"])
    b.add_argument("--swap-blocks", type=int, default=0, help="DiT blocks streamed from CPU memory")
    b.add_argument(
        "--pageable",
        action="store_true",
        help="stream the --swap-blocks from pageable host memory instead of pinned (its cost)",
    )
    b.add_argument(
        "--token-chunk",
        type=int,
        metavar="N",
        help="tokens per chunk of the DiT's per-token work (models/dit.py TOKEN_CHUNK; "
        "0: one pass, the most memory)",
    )
    b.add_argument(
        "--vram-budget",
        type=positive_float,
        metavar="GB",
        help="cap this process's GPU memory (emulates a smaller card)",
    )
    b.add_argument(
        "--plan",
        action="store_true",
        help="only the whole generation under the memory plan for --vram-budget GB "
        "(the budget caps this process's GPU memory; OOM moves to the next plan)",
    )
    b.add_argument(
        "--vae-only",
        action="store_true",
        help="only the VAE decode, untiled and tiled (time, peak memory, PSNR)",
    )
    b.add_argument(
        "--vae-tile",
        type=size,
        metavar="WxH",
        help="latent tile of the tiled decode (default: the planner's for --vae-budget)",
    )
    b.add_argument(
        "--vae-budget",
        type=positive_float,
        metavar="GB",
        help="GPU memory the tiled decode may use (default 1.5, Wan2.2 VAE 3)",
    )
    b.add_argument("--no-diffusers", action="store_true", help="skip diffusers' components")
    b.add_argument("--no-e2e", action="store_true", help="skip the whole-generation runs")
    b.add_argument(
        "--dit-only",
        action="store_true",
        help="of our components only the DiT step (no T5 encode, no VAE decode figures)",
    )
    b.add_argument(
        "--sweep",
        action="store_true",
        help="time the DiT step in every precision × attention mode instead",
    )
    b.add_argument("--repeat", type=int, help="timed calls per figure (median; default 3)")
    b.add_argument("--warmup", type=int, help="untimed calls first (default 1)")
    b.add_argument("--device", choices=["cpu", "cuda"])
    b.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (a smoke test)")
    b.add_argument("--json", type=Path, help="also write the JSON here")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by ``args``; print the JSON; 0 on success."""
    result = _rounded(bench(args))
    text = json.dumps(result, indent=1)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


def _rounded(obj: Any) -> Any:
    """Floats to 6 significant digits (timings in µs, errors in ppm are plenty)."""
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------- configs


def tiny_variant(name: str):
    """``name`` with tiny DiT / VAE / T5 configs (the real structure; seconds on a CPU)."""
    from .variants import T5Config, get_variant

    v = get_variant(name)
    t5 = T5Config(vocab_size=384, dim=32, dim_attn=32, dim_ffn=48, num_heads=4, num_layers=2)
    dit = replace(
        v.dit, dim=256, ffn_dim=320, num_heads=2, num_layers=2, text_dim=t5.dim, freq_dim=16
    )
    if dit.image_dim is not None:  # the CLIP tower is not benchmarked: keep the DiT text-only
        raise_unsupported(name)
    vae = replace(v.vae, base_dim=8, decoder_base_dim=8 if v.vae.version == "2.1" else 12)
    return replace(v, dit=dit, vae=vae, t5=t5, clip=None)


def raise_unsupported(name: str) -> None:
    from .errors import ConfigError

    raise ConfigError(
        f"bench: variant {name} needs CLIP image features; benchmark a text-to-video "
        "variant (t2v-1.3B, t2v-14B, t2v-A14B, ti2v-5B)"
    )


# ----------------------------------------------------------------------------- the benchmark


def bench(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from . import __version__
    from .errors import ConfigError
    from .request import GenerationRequest
    from .variants import get_variant

    tiny = bool(args.tiny)
    want = args.device or ("cpu" if tiny or not torch.cuda.is_available() else "cuda")
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("bench --device cuda: no CUDA GPU is available")
    device = torch.device(want)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    variant = tiny_variant(args.variant) if tiny else get_variant(args.variant)
    if variant.dit.has_image_embedding:
        raise_unsupported(variant.name)
    d = variant.defaults
    width, height = args.size or ((64, 32) if tiny else d.size)
    frames = args.frames or (5 if tiny else d.frames)
    preset = getattr(args, "preset", None)
    distilled = preset in ("fast", "turbo")
    steps = args.steps or (None if distilled else (2 if tiny else d.steps))
    warmup = args.warmup if args.warmup is not None else (0 if tiny else 1)
    repeat = args.repeat or (1 if tiny else 3)
    wanted = GenerationRequest(
        prompt=PROMPT, width=width, height=height, frames=frames, steps=steps, seed=0
    )
    if preset:
        from .presets import get_preset

        wanted = get_preset(preset).apply(wanted, variant)
    request = wanted.resolve(variant)
    steps = request.steps
    cfg = request.use_cfg
    if args.vram_budget and device.type == "cuda" and not getattr(args, "plan", False):
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.vram_budget * GB / total), device)

    chunk = getattr(args, "token_chunk", None)
    if chunk is not None:
        from .models import dit

        dit.TOKEN_CHUNK = chunk if chunk > 0 else 1 << 62
    result: dict[str, Any] = {
        "what": "wan-desktop bench: full-size components with random weights"
        if not tiny
        else "wan-desktop bench --tiny: tiny configs (smoke test, numbers mean nothing)",
        "variant": variant.name,
        "size": [width, height],
        "frames": frames,
        "steps": steps,
        "preset": preset,
        "guidance": request.guidance,
        "tiny_vae": getattr(args, "tiny_vae", None),
        # DiT forwards of one video: one per step, batch 2 with CFG, batch 1 without (distilled)
        "dit_calls": steps,
        "dit_batch": 2 if cfg else 1,
        "latent": list(variant.latent_shape(width, height, frames)),
        "tokens": variant.seq_len(width, height, frames),
        "precision": args.precision,
        "attention": args.attention,
        "compile": bool(args.compile),
        "compile_mode": args.compile_mode,
        "step_cache": args.step_cache,
        "step_cache_signal": args.step_cache_signal,
        "swap_blocks": args.swap_blocks,
        "swap_pinned": bool(args.swap_blocks) and not getattr(args, "pageable", False),
        "token_chunk": _token_chunk(),
        "vram_budget_gb": args.vram_budget,
        "warmup": warmup,
        "repeat": repeat,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "wan_desktop": __version__,
        "diffusers": reference.diffusers_version(),
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    clock = Clock(device, warmup, repeat)
    inputs = _dit_inputs(variant, request, device)
    if args.sweep:
        result["sweep"] = _sweep(variant, device, dtype, clock, inputs, args)
        return result
    if getattr(args, "vae_only", False):
        result["vae_tiling"] = _vae_only(variant, device, dtype, clock, inputs, args)
        return result
    if getattr(args, "plan", False):
        result["planned"] = _planned(variant, device, dtype, request, args)
        return result
    result["ours"] = _ours(variant, device, dtype, clock, inputs, request, args)
    free(device)
    result["diffusers_components"] = None
    if not args.no_diffusers and result["diffusers"] is not None:
        result["diffusers_components"] = reference.measure(
            variant, device, dtype, clock, inputs, request, e2e=not args.no_e2e
        )
        free(device)
    result["ratios"] = reference.ratios(result["ours"], result["diffusers_components"])
    return result


def _token_chunk() -> int | None:
    from .models import dit

    return dit.TOKEN_CHUNK if dit.TOKEN_CHUNK < 1 << 62 else None


def _dit_inputs(variant, request, device) -> dict[str, Any]:
    """Fixed inputs of one cond+uncond DiT step (batch 2) and of the VAE decode."""
    import torch

    g = torch.Generator().manual_seed(1)
    z, t, h, w = variant.latent_shape(request.width, request.height, request.frames)
    text_len, text_dim = variant.dit.text_len, variant.dit.text_dim
    latents = torch.randn(1, z, t, h, w, generator=g)
    context = torch.zeros(2, text_len, text_dim)
    context[:, :40] = torch.randn(2, 40, text_dim, generator=g)  # a ~40-token prompt, zero-padded
    return {
        "latents": latents.to(device),
        "x2": latents.repeat(2, 1, 1, 1, 1).to(device),
        "t2": torch.full((2,), 900.0, device=device),
        "context": context.to(device),
    }


def _build_ours(variant, device, dtype):
    from .engines.torch_backend import build_torch_components

    return build_torch_components(variant, None, device=device, dtype=dtype)


def _tiny_vae(spec: str, variant, device, dtype):
    """A TinyVaeDecoder from a taew2_x file, or ("random") with the variant's latent channels and
    random weights: its speed does not depend on the values."""
    import torch

    from .engines.preview import TinyVaeDecoder

    z = variant.vae.z_dim
    if spec != "random":
        dec = TinyVaeDecoder(spec, z_dim=z, dtype=dtype)
    else:
        from .models.taehv import TAEHV, TaeConfig

        dec = TinyVaeDecoder.from_model(
            TAEHV(TaeConfig(latent_channels=z, patch_size=variant.vae.patch_size))
            .to(dtype)
            .eval()
            .requires_grad_(False),
            dtype=dtype,
        )
    dec.load(torch.device(device))
    return dec


def _fast_denoiser(model, args, *, step_cache):
    """Quantize / switch attention of ``model`` in place and wrap it in the options' denoiser."""
    from .engines.step_cache import StepCacheConfig
    from .engines.torch_backend import TorchDenoiser
    from .engines.torch_ops import quantize_linears, set_attention

    if args.precision in ("fp8", "int8"):
        quantize_linears(model, args.precision)
    if args.attention != "sdpa":
        set_attention(model, args.attention)
    cache = (
        StepCacheConfig(threshold=step_cache, signal=args.step_cache_signal) if step_cache else None
    )
    return TorchDenoiser(
        model,
        swap_blocks=args.swap_blocks,
        compile=args.compile,
        compile_mode=args.compile_mode,
        step_cache=cache,
    )


def _ours(variant, device, dtype, clock: Clock, inputs, request, args) -> dict[str, Any]:
    import torch

    from .pipeline import generate, run_schedule

    mem = Memory(device)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    with mem.phase("build"):
        comps = _build_ours(variant, device, dtype)
        if getattr(args, "tiny_vae", None):
            comps.vae_decoder = _tiny_vae(args.tiny_vae, variant, device, dtype)
    out["build_s"] = round(time.perf_counter() - t0, 3)

    dit_only = getattr(args, "dit_only", False)
    out["t5_encode_s"] = None
    if not dit_only:
        with mem.phase("t5"), torch.inference_mode():
            out["t5_encode_s"], _ = clock.median(
                lambda: comps.text_encoder.encode([request.prompt, "bad"])
            )

    # the reference velocity: bf16 weights, SDPA, resident, eager
    plain = comps.denoisers[0]
    x2, t2, ctx = inputs["x2"], inputs["t2"], inputs["context"]
    v_ref = plain(x2, t2, ctx).float()
    fast_mode = (
        args.precision != "bf16" or args.attention != "sdpa" or args.compile or args.swap_blocks
    )
    dens = list(comps.denoisers)
    if fast_mode or args.step_cache:
        for i, den in enumerate(dens):
            if args.swap_blocks:
                den.unload()
            dens[i] = _fast_denoiser(den.model, args, step_cache=args.step_cache)
            dens[i].pin = not getattr(args, "pageable", False)
            dens[i].load(device)
        comps.denoisers = tuple(dens)
    den = comps.denoisers[0]
    caches = [dn.cache for dn in comps.denoisers]
    for dn in comps.denoisers:
        dn.cache = None  # the step time, the error and the exact generation run every step
    with mem.phase("dit"):
        out["dit_first_call_s"], v = clock.once(lambda: den(x2, t2, ctx))
        out["dit_step_s"], v = clock.median(
            lambda: den(x2, t2, ctx), warmup=max(0, clock.warmup - 1)
        )
    out["velocity_error_vs_bf16_sdpa"] = rel_errors(v.float(), v_ref) if fast_mode else None
    del v, v_ref

    out["vae_decode_s"] = out["vae_tiling"] = None
    if not dit_only:
        with mem.phase("vae"):
            out["vae_decode_s"], video = clock.median(
                lambda: comps.vae_decoder.decode_frames(inputs["latents"])
            )
        del video
        out["vae_tiling"] = (
            None
            if getattr(args, "tiny_vae", None)
            else _vae_figures(comps.vae_decoder, inputs["latents"], variant, clock, device, args)
        )  # the big VAE's

    out["e2e_s"] = None
    out["step_cache_stats"] = None
    if not args.no_e2e:
        schedule = run_schedule(request)
        with mem.phase("e2e"):
            t_e2e, exact = clock.once(
                lambda: generate(comps, request, device=device, preview_every=0)
            )
        out["e2e_s"] = t_e2e
        if any(c is not None for c in caches):
            for dn, c in zip(comps.denoisers, caches, strict=True):
                dn.cache = c
                dn.begin(schedule.timesteps)
            with mem.phase("e2e_cached"):
                t_cached, cached = clock.once(
                    lambda: generate(comps, request, device=device, preview_every=0)
                )
            stats = [dn.cache_stats for dn in comps.denoisers]
            out["step_cache_stats"] = {
                "e2e_s": t_cached,
                "per_expert": stats,
                "psnr_db_vs_exact": psnr(cached, exact),  # None: identical videos
                "video_identical": bool(torch.equal(cached, exact)),
                "speedup": t_e2e / t_cached if t_cached > 0 else None,
            }
    out.update(mem.summary())
    return out


def _bench_tiling(variant, latents, args):
    """The tiled decode's tiles: ``--vae-tile``, else the planner's largest tile whose predicted
    peak (weights + one tile's working set) fits ``--vae-budget``; small frames: halves."""
    from . import memory as M
    from .engines.vae_tiling import Tiling

    _, _, _, h, w = latents.shape
    s = variant.vae.spatial_factor
    if getattr(args, "vae_tile", None):
        tw, th = args.vae_tile
        return Tiling(tile=(min(th, h), min(tw, w)), overlap=max(1, min(64 // s, min(th, tw) // 4)))
    budget = getattr(args, "vae_budget", None) or (3.0 if variant.vae.version == "2.2" else 1.5)
    weights = M.vae_params(variant.vae) * 2
    for opt in M.vae_tile_options(variant, w * s, h * s)[1:]:
        th, tw = opt.tile
        if (weights + M.vae_decode_bytes(variant.vae, th * s * tw * s)) / M.GIB <= budget:
            return Tiling(tile=opt.tile, overlap=opt.overlap)
    ov = 1
    return Tiling(tile=(max(3, h // 2 + ov), max(3, w // 2 + ov)), overlap=ov)


def _vae_figures(vae, latents, variant, clock: Clock, device, args) -> dict[str, Any]:
    """Untiled and tiled decode of the same latents: time, peak GPU memory over what was held
    before (plus the VAE weights: the decode's own footprint), PSNR of tiled vs untiled."""
    import torch

    from . import memory as M
    from .engines.vae_tiling import psnr_db

    tiling = _bench_tiling(variant, latents, args)
    cuda = device.type == "cuda"
    weights_gb = M.vae_params(variant.vae) * next(vae.model.parameters()).element_size() / GB
    out: dict[str, Any] = {
        "tile": list(tiling.tile),
        "overlap": tiling.overlap,
        "vae_weights_gb": round(weights_gb, 3),
    }
    videos = {}
    for name, tiles in (("untiled", None), ("tiled", tiling)):
        free(device)
        before = torch.cuda.memory_allocated(device) if cuda else 0
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        # the generation's path: uint8 frames streamed to the CPU
        t, videos[name] = clock.median(partial(vae.decode_frames, latents, tiles=tiles))
        out[f"{name}_s"] = t
        out[f"{name}_peak_gb"] = (
            ((torch.cuda.max_memory_allocated(device) - before) / GB + weights_gb) if cuda else None
        )
    h, w = latents.shape[-2:]
    s = variant.vae.spatial_factor
    th, tw = tiling.tile
    out["predicted_untiled_gib"] = (
        M.vae_params(variant.vae) * 2 + M.vae_decode_bytes(variant.vae, h * s * w * s)
    ) / M.GIB
    out["predicted_tiled_gib"] = (
        M.vae_params(variant.vae) * 2 + M.vae_decode_bytes(variant.vae, th * s * tw * s)
    ) / M.GIB
    out["psnr_db_tiled_vs_untiled"] = psnr_db(videos["tiled"], videos["untiled"])
    out["max_levels_tiled_vs_untiled"] = int(
        (videos["tiled"].int() - videos["untiled"].int()).abs().max()
    )  # in 8-bit levels
    return out


def _vae_only(variant, device, dtype, clock: Clock, inputs, args) -> dict[str, Any]:
    """Only the VAE (fast to build): the decode figures of ``_vae_figures``."""
    import torch

    from .checkpoints.materialize import weights_on_meta
    from .engines.torch_backend import TorchVae, _vae_class, randomize

    with weights_on_meta():
        model = _vae_class(variant)(variant.vae)
    vae_dtype = dtype if device.type == "cuda" else torch.float32
    vae = TorchVae(randomize(model, dtype=vae_dtype, device=device, seed=11))
    vae.load(device)
    return _vae_figures(vae, inputs["latents"], variant, clock, device, args)


def _planned(
    variant: Any, device: Any, dtype: Any, request: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """The whole generation under the memory plan for ``--vram-budget`` (default: free memory):
    components built on the device (fast random weights), moved to the CPU, the process capped
    at the budget, then placed by the plan; a CUDA OOM moves to the next plan."""
    import torch

    from . import memory as M
    from .engines.residency import apply_plan, release
    from .run import plans_for_run, run_with_fallback

    t0 = time.perf_counter()
    comps = _build_ours(variant, device, dtype)
    build_s = time.perf_counter() - t0
    for c in (comps.text_encoder, *comps.denoisers, comps.vae_decoder):
        c.unload()
    free(device)
    cuda = device.type == "cuda"
    budget = args.vram_budget
    if budget is None:
        budget = M.auto_budget_gib(M.free_vram_gib(device)) if cuda else 24.0
    plans = plans_for_run(
        variant, request, device=device, budget_gib=budget, precision=args.precision
    )
    if cuda and args.vram_budget:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, budget * GB / total), device)
    warnings: list[str] = []
    attempts: list[dict[str, Any]] = []

    def attempt(plan: Any) -> Any:
        from .pipeline import generate

        if args.precision in ("fp8", "int8"):
            from .engines.torch_ops import quantize_linears

            for d in comps.denoisers:
                if not getattr(d.model, "_bench_quantized", False):
                    quantize_linears(d.model, args.precision)
                    d.model._bench_quantized = True
        planned_comps = apply_plan(comps, plan, device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        row: dict[str, Any] = {"plan": plan.name, "predicted_peak_gib": plan.predicted.peak_gib}
        attempts.append(row)
        t = time.perf_counter()
        try:
            # the plan decides the CFG batching (as run.execute does)
            video = generate(
                planned_comps,
                replace(request, batch_cfg=plan.dit.batch_cfg),
                device=device,
                preview_every=0,
            )
        finally:
            row["seconds"] = time.perf_counter() - t
            if cuda:
                row["peak_allocated_gb"] = torch.cuda.max_memory_allocated(device) / GB
                row["peak_reserved_gb"] = torch.cuda.max_memory_reserved(device) / GB
            release(planned_comps)
        return video

    _video, used = run_with_fallback(plans, attempt, warn=warnings.append)
    if cuda:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    return {
        "budget_gb": budget,
        "build_s": build_s,
        "plan": used.to_dict(),
        "plan_text": used.describe(),
        "attempts": attempts,
        "warnings": warnings,
        "e2e_s": attempts[-1]["seconds"],
        "peak_allocated_gb": attempts[-1].get("peak_allocated_gb"),
        "predicted_peak_gib": used.predicted.peak_gib,
        "predicted_phases_gib": {
            "encode": used.predicted.encode_gib,
            "denoise": used.predicted.denoise_gib,
            "decode": used.predicted.decode_gib,
        },
    }


def _sweep(variant, device, dtype, clock: Clock, inputs, args) -> list[dict[str, Any]]:
    """DiT step time and velocity error in each precision × attention mode (same weights)."""
    import importlib.util

    import torch

    from .engines.torch_backend import TorchDenoiser
    from .engines.torch_ops import quantize_linears, set_attention

    comps = _build_ours(variant, device, dtype)
    base = comps.denoisers[0].model
    del comps
    free(device)
    x2, t2, ctx = inputs["x2"], inputs["t2"], inputs["context"]
    ref = TorchDenoiser(base)
    ref.load(device)
    v_ref = ref(x2, t2, ctx).float()
    attentions = ["sdpa", "sdpa-cudnn", "sdpa-flash"] if device.type == "cuda" else ["sdpa"]
    if importlib.util.find_spec("sageattention") is not None and device.type == "cuda":
        attentions.append("sage")
    modes = [(p, a, "ours") for p in ("bf16", "fp8", "int8") for a in attentions]
    if importlib.util.find_spec("torchao") is not None and device.type == "cuda":
        modes += [("fp8", "sdpa", "torchao"), ("int8", "sdpa", "torchao")]
    rows = []
    for precision, attention, backend in modes:
        row: dict[str, Any] = {
            "precision": precision,
            "attention": attention,
            "backend": backend,
            "compile": bool(args.compile),
        }
        try:
            model = copy.deepcopy(base)
            if precision != "bf16":
                quantize_linears(model, precision, backend=backend)
            if attention != "sdpa":
                set_attention(model, attention)
            den = TorchDenoiser(model, compile=args.compile, compile_mode=args.compile_mode)
            den.load(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            row["first_call_s"], v = clock.once(partial(den, x2, t2, ctx))
            row["dit_step_s"], v = clock.median(
                partial(den, x2, t2, ctx), warmup=max(0, clock.warmup - 1)
            )
            row["velocity_error"] = rel_errors(v.float(), v_ref)
            if device.type == "cuda":
                row["peak_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / GB, 3)
            del den, model, v
        except Exception as e:  # one failing mode must not hide the others' figures
            row["error"] = f"{type(e).__name__}: {e}"[:500]
        free(device)
        rows.append(row)
        log.info("sweep %s", row)
    return rows
