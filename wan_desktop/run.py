"""The run owner: one generation job, from a request to a finished file.

:func:`prepare` does every check that needs no weights (files, values, images, LoRAs, the preset,
the memory plans), so bad input is reported in seconds; :func:`execute` builds or reuses the
components, runs the generation under the first memory plan that fits (the next, tighter plan after
a CUDA out-of-memory error) and writes the output atomically. The CLI (cli.py) and the app's GPU
service (ui/service.py) are thin adapters over these two calls: a new capability is wired here once.

The backends are injected as a :class:`ComponentFactory` (engines/factory.py implements it), so
this module and the pipeline never import an engine, and the engines never import them.
"""

from __future__ import annotations

import enum
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import pipeline
from .cancel import CancelToken
from .errors import CheckpointError, ConfigError, OutOfVram, is_cuda_oom, oom_line
from .options import Backend, RunOptions
from .request import GenerationRequest, ResolvedRequest

if TYPE_CHECKING:
    import torch

    from .checkpoints.detect import ModelFiles
    from .contracts import Components, VaeDecoder
    from .memory import Plan
    from .parallel.layout import Layout
    from .parallel.session import Ranks
    from .variants import Variant

log = logging.getLogger(__name__)
T = TypeVar("T")
Warn = Callable[[str], None]


class ComponentFactory(Protocol):
    """What a run needs from the backends (engines/factory.py: ``EngineFactory``)."""

    def detect(self, options: RunOptions) -> tuple[Variant, ModelFiles | None]:
        """The variant to run and its files (None: random weights or a self-contained engine
        folder): reads headers only."""
        ...

    def device(self, options: RunOptions) -> torch.device:
        """Where the run computes (``--device``, else CUDA when there is one)."""
        ...

    def build(
        self,
        options: RunOptions,
        variant: Variant,
        files: ModelFiles | None,
        *,
        plan: Plan | None,
        size: str,
        warn: Warn,
        lead: bool = True,
    ) -> Components:
        """Every component the variant needs; with a ``plan`` nothing is put on the GPU yet.
        ``lead`` False: a parallel run's rank > 0, which runs the denoisers and, when the VAE
        decode is shared (a torch VAE and no tiny VAE), its part of the decode: the text and
        image encoders, the VAE's encoder and any other decoder are ``contracts.Elsewhere``,
        never read (rank 0 runs them)."""
        ...

    def set_loras(self, components: Components, options: RunOptions) -> bool:
        """Give built components ``options``' LoRAs in place; False where that cannot be done."""
        ...

    def tiny_vae(self, path: str, *, z_dim: int, device: torch.device) -> VaeDecoder:
        """A TAEHV decoder, loaded on ``device``: the fast final decode."""
        ...

    def place(self, components: Components, plan: Plan, device: torch.device) -> Components:
        """``components`` wrapped to follow ``plan`` (residency, block streaming, tiles)."""
        ...

    def release(self, components: Components) -> None:
        """Every component off the GPU (after a run, or a failed attempt)."""
        ...


# ----------------------------------------------------------------------------- prepare


class Planning(enum.Enum):
    """Whether :func:`prepare` makes the memory plans (a PyTorch run's)."""

    ON_GPU = "on-gpu"  # for a run now: on a CUDA device (the GPU's free memory, or the budget)
    ALWAYS = "always"  # --print-plan: for the budget, even without a GPU
    NEVER = "never"  # a check ahead of the run (the app, when a job is added): the plans depend
    # on the free memory when the job's turn comes, and reading it would touch CUDA off its thread


@dataclass(frozen=True, kw_only=True)
class PreparedRun:
    """A checked job: everything :func:`execute` needs, nothing loaded yet."""

    request: ResolvedRequest  # every default filled in
    options: RunOptions
    variant: Variant
    files: ModelFiles | None
    device: torch.device
    plans: tuple[Plan, ...]  # the memory-plan ladder, loosest first; empty on the CPU / engines
    out: Path
    notes: tuple[str, ...] = ()  # worth telling the user before the run (one line each)
    windows: int = 1  # a long video's windows (long_video.py); 1: one window

    @property
    def size(self) -> str:
        """ "WxHxF": picks the TensorRT engines built for that preset (a long video: its window)."""
        from .long_video import one_window

        r = one_window(self.request)
        return f"{r.width}x{r.height}x{r.frames}"

    def describe_plans(self) -> str:
        return "\n".join(p.describe() for p in self.plans)


def prepare(
    request: GenerationRequest,
    options: RunOptions,
    *,
    out: str | Path,
    factory: ComponentFactory,
    planning: Planning = Planning.ON_GPU,
    review: bool = False,
) -> PreparedRun:
    """Check a job without loading any weights: the model files and variant, the output path, the
    LoRAs (against the checkpoint's headers), the preset, every request value, the input images,
    the tiny-VAE file, and the memory plans (see :class:`Planning`). ``review``: the job will be
    run with a review before decode (refused for sliding windows: long_video.refuse_review)."""
    from .lora import check_run_loras, run_specs
    from .text import check_prompt
    from .video import check_output_path

    check_prompt(request.prompt, "prompt")  # the app's prompts never pass the CLI's parser
    if request.negative_prompt is not None:
        check_prompt(request.negative_prompt, "negative prompt")
    if (
        options.model is None
        and options.random_weights is None
        and (options.backend is Backend.TORCH or options.engines is None)
    ):
        raise ConfigError(
            "no model given",
            remedy="Give --model PATH (or --random-weights VARIANT, or --backend "
            "onnxruntime --engines DIR); in the app, pick a model.",
        )
    if options.backend is not Backend.TORCH and options.engines is None:
        raise ConfigError(
            f"the {options.backend.value} backend needs an engine folder (--engines DIR)"
        )
    out = Path(out)
    check_output_path(out)
    variant, files = factory.detect(options)
    check_run_loras(run_specs(options.loras, options.loras_low), variant, files)
    if options.preset:  # before resolve: the distilled σ grid, guidance_low
        from .presets import get_preset

        request = get_preset(options.preset).apply(request, variant)
    resolved = request.resolve(variant)
    from .parallel.session import checked_options, rank_layout

    options = checked_options(options, resolved, variant)  # --parallel N: a layout, or valid Ns
    pipeline.check_images(resolved)
    from . import diffusion_forcing, long_video

    window_plan: long_video.WindowPlan | diffusion_forcing.ForcingPlan | None
    if diffusion_forcing.is_forcing(variant):  # SkyReels-V2 DF: its own windows
        df_plan = diffusion_forcing.check(resolved, variant, step_cache=options.step_cache)
        window_plan = df_plan if df_plan.count > 1 else None
    else:
        window_plan = long_video.check(resolved, variant)  # None: one window
        if review and window_plan is not None:
            long_video.refuse_review(window_plan.count)
    if options.tiny_vae is not None and not Path(options.tiny_vae).expanduser().is_file():
        raise CheckpointError(
            f"tiny VAE file not found: {options.tiny_vae}",
            remedy="Choose the TAEHV file again (--tiny-vae, or Settings).",
        )
    device = factory.device(options)
    plans: tuple[Plan, ...] = ()
    wanted = planning is Planning.ALWAYS or (planning is Planning.ON_GPU and device.type == "cuda")
    if options.backend is Backend.TORCH and wanted:
        if device.type != "cuda" and options.vram_budget_gb is None:
            raise ConfigError(
                "planning without a CUDA GPU needs a VRAM budget",
                remedy="Give the card's memory, e.g. --vram-budget 12.",
            )
        plans = tuple(
            plans_for_run(
                variant,
                (  # a long video: one window is planned
                    diffusion_forcing.one_window(resolved)
                    if diffusion_forcing.is_forcing(variant)
                    else long_video.one_window(resolved)
                ),
                device=device,
                budget_gib=options.vram_budget_gb,
                precision=options.precision_name or stored_precision(files),
                layout=rank_layout(options, resolved, variant),  # --parallel: one rank's share
            )
        )
    notes: list[str] = [] if window_plan is None else [f"long video: {window_plan.describe()}"]
    if not options.random_weights:  # random weights: benchmarks, no opinion
        from .presets import few_step_warning

        note = few_step_warning(
            options.preset,
            str(options.model or ""),
            has_loras=bool(options.loras or options.loras_low),
        )
        if note:
            notes.append(note)
    return PreparedRun(
        request=resolved,
        options=options,
        variant=variant,
        files=files,
        device=device,
        plans=plans,
        out=out,
        notes=tuple(notes),
        windows=1 if window_plan is None else window_plan.count,
    )


def stored_precision(files: ModelFiles | None) -> str | None:
    """ "fp8" when the (first) DiT's block linears are stored in fp8 (ComfyUI fp8 / fp8_scaled
    files run as stored), else None; read from the safetensors header only."""
    if files is None or not files.experts:
        return None
    from .checkpoints.reader import read_safetensors_header

    for f in files.experts[0].files:
        if Path(f).suffix.lower() == ".gguf":  # the bits per weight of its block linears
            from .checkpoints.gguf_reader import block_bits_per_weight

            return f"gguf:{block_bits_per_weight(Path(f)):.2f}"
        if Path(f).suffix != ".safetensors":
            continue
        try:
            header, _meta = read_safetensors_header(Path(f))
        except (CheckpointError, OSError):  # the loader reports a bad file with its own error
            return None
        for name, info in header.items():
            if ".ffn.0.weight" in name or ".ffn.net.0.proj.weight" in name:
                return "fp8" if info.dtype.startswith("float8") else None
    return None


def plans_for_run(
    variant: Variant,
    request: ResolvedRequest,
    *,
    device: torch.device,
    budget_gib: float | None,
    precision: str | None,
    layout: Layout | None = None,
) -> list[Plan]:
    """The fallback ladder for a run on ``device``: planned for ``budget_gib`` (``--vram-budget``)
    or, without one, for the GPU's free memory now ("auto"). ``precision``: the DiT's (--precision,
    or ``stored_precision`` of the files); None plans for bf16. ``layout``: a parallel run's, whose
    ranks each plan for their share (one CFG half, their tokens)."""
    from . import memory

    if budget_gib is None:
        if device.type != "cuda":
            raise ConfigError("no CUDA GPU to plan for", remedy="Give --vram-budget GB.")
        budget_gib = memory.auto_budget_gib(memory.free_vram_gib(device))
    work = memory.workload_for(
        variant,
        request.width,
        request.height,
        request.frames,
        task=request.task.value,
        precision=precision
        if precision in ("fp8", "int8") or memory.is_gguf_precision(precision or "")
        else "bf16",
        guidance=request.use_cfg and (layout is None or layout.cfg == 1),
        token_shards=1 if layout is None else layout.seq,
        weight_shards=1 if layout is None else layout.world,  # FSDP2 where 1/N of the DiT fits
    )
    return memory.plan_ladder(work, budget_gib, ram_gib=memory.system_ram_gib())


# ----------------------------------------------------------------------------- components


class ComponentCache:
    """The components of the last run, kept for the next one when it needs the same (the app
    keeps one for its lifetime; the CLI makes one per run). A change of LoRAs alone re-reads the
    DiT in place; any other change builds anew."""

    def __init__(self, factory: ComponentFactory) -> None:
        self.factory = factory
        self._key: str | None = None
        self._loras: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        self._components: Components | None = None
        self.builds = 0  # how many times components were built (tests, logs)

    def get(self, prepared: PreparedRun, *, warn: Warn, lead: bool = True) -> Components:
        """The components of ``prepared`` (``lead`` False: a parallel run's rank > 0's, see
        ComponentFactory.build)."""
        o = prepared.options
        plan = prepared.plans[0] if prepared.plans else None
        what = o.to_dict()
        if o.backend is Backend.TORCH:  # a LoRA change re-reads the DiT, not everything
            what.pop("loras")
            what.pop("loras_low")
        engines_size = prepared.size if o.backend is Backend.TENSORRT else None  # per size
        key = json.dumps(
            [
                what,
                None if plan is None else plan.describe(),
                engines_size,
                prepared.variant.name,
                str(prepared.device),
                lead,
            ],
            sort_keys=True,
            default=str,
        )
        loras = (tuple(o.loras), tuple(o.loras_low))
        if key == self._key and self._components is not None and loras != self._loras:
            log.info("LoRAs changed: re-reading the DiT with %s", o.loras + o.loras_low)
            try:
                changed = self.factory.set_loras(self._components, o)
            except BaseException:
                self.release()  # a half-changed model must not serve the next job
                raise
            if changed:
                self._loras = loras
            else:
                self.release()  # not torch modules: built anew below with the new LoRAs
        if key != self._key or self._components is None:
            self.release()
            comps = self.factory.build(
                o,
                prepared.variant,
                prepared.files,
                plan=plan,
                size=prepared.size,
                warn=warn,
                lead=lead,
            )
            self.builds += 1
            if o.tiny_vae and lead:  # the fast final decode: the TAEHV replaces the VAE decoder
                big = comps.vae_decoder
                comps.vae_decoder = self.factory.tiny_vae(
                    o.tiny_vae, z_dim=prepared.variant.vae.z_dim, device=prepared.device
                )
                if big is not comps.vae_encoder:
                    big.unload()  # nothing encodes with it: the full VAE leaves the GPU
                comps.info["tiny_vae"] = Path(o.tiny_vae).name
            self._components, self._key, self._loras = comps, key, loras
        return self._components

    def release(self) -> None:
        """Drop the kept components and give their memory back."""
        comps, self._components, self._key = self._components, None, None
        if comps is None:
            return
        for c in (
            comps.text_encoder,
            *comps.denoisers,
            comps.vae_decoder,
            comps.vae_encoder,
            comps.image_encoder,
        ):
            if c is not None:
                c.unload()
        _free_device_memory()


# ----------------------------------------------------------------------------- execute


@dataclass(frozen=True, kw_only=True)
class RunResult:
    out: Path
    seconds: float
    request: ResolvedRequest  # what ran (the plan's CFG batching included)
    fps: int
    plan: Plan | None  # the memory plan that ran (None: the CPU, or an engine backend)
    peak_vram_gib: float | None  # torch's peak allocation on a CUDA device


def execute(
    prepared: PreparedRun,
    *,
    components: ComponentCache,
    cancel: CancelToken | None = None,
    emit: pipeline.Emit | None = None,
    warn: Warn = log.warning,
    review: pipeline.Review | None = None,
    ranks: Ranks | None = None,
) -> RunResult:
    """Run a prepared job and write its output (nothing appears at ``prepared.out`` unless the
    whole video was made). A CUDA out-of-memory error moves to the next memory plan with one
    ``warn`` line; past the last plan (or without plans) it is :class:`OutOfVram`, and the kept
    components are released. Raises ``Cancelled`` within one step of ``cancel``.

    ``review`` (the app's "Review before decode"): called with the denoised latents before the
    VAE runs, and may wait for the user; DECODE decodes exactly what a run without review would,
    DISCARD raises ``pipeline.Discarded`` (a Cancelled) with nothing written. Asked once per
    job, even when an out-of-memory error reruns it under a tighter plan; the time it waited is
    not in ``RunResult.seconds``.

    ``options.parallel`` > 1: the job runs on that many processes (parallel/session.py; this one
    is rank 0 and writes the output), each calling execute() again with its ``ranks``."""
    cancel = cancel or CancelToken()
    emit = emit or _ignore
    from . import diffusion_forcing, long_video

    if (
        review is not None
        and prepared.windows > 1
        and not diffusion_forcing.is_forcing(prepared.variant)
    ):
        long_video.refuse_review(prepared.windows)  # never skipped in silence
    if prepared.options.parallel > 1 and ranks is None:
        from .parallel.session import run_parallel

        def body(p: PreparedRun, rk: Ranks, c: CancelToken, e: pipeline.Emit, r: Any) -> RunResult:
            return execute(
                p, components=components, cancel=c, emit=e, warn=warn, review=r, ranks=rk
            )

        return run_parallel(prepared, body, cancel=cancel, emit=emit, review=review)
    ranked = (lambda c: c) if ranks is None else ranks.wrap
    writes = ranks is None or ranks.rank == 0  # a parallel run's rank > 0 writes nothing
    asked = None if review is None else _ReviewOnce(review)
    t0 = time.perf_counter()
    torch = _torch()
    cuda = prepared.device.type == "cuda"
    try:
        cancel.check()
        if ranks is not None:  # every rank runs one ladder, the most constrained GPU's, and
            # moves down it with the others: one rank cannot retry alone (parallel/ladder.py)
            prepared = replace(prepared, plans=ranks.agree(prepared.plans))
        emit(pipeline.StageStarted("load"))
        raw = components.get(prepared, warn=warn, lead=writes)
        if cuda:
            torch.cuda.reset_peak_memory_stats(prepared.device)
        plans = prepared.plans
        if plans:

            def attempt(plan: Plan) -> tuple[Path, ResolvedRequest]:
                comps = components.factory.place(raw, plan, prepared.device)
                req = replace(prepared.request, batch_cfg=plan.dit.batch_cfg or ranks is not None)
                sharded = ranks is not None and ranks.shard(comps, plan)  # FSDP2, if planned
                try:
                    out = _generate(ranked(comps), req, prepared, cancel, emit, asked, writes)
                    return out, req
                finally:
                    components.factory.release(comps)
                    if sharded:  # tied to this run's process group: never reused
                        components.release()

            if ranks is None:
                (out, request), plan = run_with_fallback(plans, attempt, warn=warn)
            else:
                (out, request), plan = ranks.run_plans(
                    plans, attempt, warn=warn, free=_free_device_memory
                )
            log.info("ran with the plan: %s", plan.describe())
        else:  # the CPU or an engine backend: nothing to place
            request, plan = prepared.request, None
            sharded = ranks is not None and ranks.shard(raw, None)  # rank 0's FSDP choice
            try:
                out = _generate(ranked(raw), request, prepared, cancel, emit, asked, writes)
            finally:
                if sharded:
                    components.release()
    except BaseException as e:
        if not is_cuda_oom(e):
            raise
        components.release()  # give the memory back before anything else runs
        raise OutOfVram(f"out of GPU memory: {oom_line(e)}") from None
    peak = torch.cuda.max_memory_allocated(prepared.device) / 2**30 if cuda else None
    return RunResult(
        out=out,
        seconds=time.perf_counter() - t0 - (asked.waited if asked else 0.0),
        request=request,
        fps=request.fps or prepared.variant.defaults.fps,
        plan=plan,
        peak_vram_gib=None if peak is None else round(peak, 2),
    )


def _ignore(event: pipeline.Event) -> None:
    return None


class _ReviewOnce(pipeline.TimedReview):
    """The user is asked once: a rerun after an out-of-memory error (in the decode, after a
    DECODE) goes on with the verdict given."""

    verdict: pipeline.Verdict | None = None

    def __call__(self, latents: torch.Tensor) -> pipeline.Verdict:
        if self.verdict is None:
            self.verdict = super().__call__(latents)
        return self.verdict


def _generate(
    comps: Components,
    request: ResolvedRequest,
    prepared: PreparedRun,
    cancel: CancelToken,
    emit: pipeline.Emit,
    review: pipeline.Review | None = None,
    writes: bool = True,
) -> Path:
    from . import diffusion_forcing, long_video

    if not writes:
        return _generate_unwritten(comps, request, prepared, cancel, emit, review)
    if diffusion_forcing.is_forcing(prepared.variant):  # SkyReels-V2 DF (any length, one path)
        return diffusion_forcing.generate_to_file(
            comps,
            request,
            prepared.out,
            options=prepared.options,
            cancel=cancel,
            emit=emit,
            device=prepared.device,
            review=review,
        )
    if long_video.is_long(request):  # windows (each its own begin_run), written as they come
        return long_video.generate_to_file(
            comps,
            request,
            prepared.out,
            options=prepared.options,
            cancel=cancel,
            emit=emit,
            device=prepared.device,
        )
    pipeline.begin_run(comps, request)  # the step cache's start-of-run hook (a preset's grid too)
    return pipeline.generate_to_file(
        comps,
        request,
        prepared.out,
        options=prepared.options,
        cancel=cancel,
        emit=emit,
        device=prepared.device,
        review=review,
    )


def _generate_unwritten(
    comps: Components,
    request: ResolvedRequest,
    prepared: PreparedRun,
    cancel: CancelToken,
    emit: pipeline.Emit,
    review: pipeline.Review | None,
) -> Path:
    """A parallel run's rank > 0: the same calls as rank 0's :func:`_generate` (so every
    collective meets its peer), the frames dropped: no file, no settings, no temporary file
    (rank 0 writes the output). Returns the job's output path."""
    from . import diffusion_forcing, long_video

    device = prepared.device
    if diffusion_forcing.is_forcing(prepared.variant):
        diffusion_forcing.generate(
            comps, request, sink=_drop, cancel=cancel, emit=emit, device=device, review=review
        )
    elif long_video.is_long(request):
        long_video.generate_long(comps, request, _drop, cancel=cancel, emit=emit, device=device)
    else:
        pipeline.begin_run(comps, request)
        pipeline.generate(comps, request, cancel=cancel, emit=emit, device=device, review=review)
    return prepared.out


def _drop(frames: Any) -> None:
    return None


def run_with_fallback(
    plans: Sequence[Plan], attempt: Callable[[Plan], T], *, warn: Warn
) -> tuple[T, Plan]:
    """``attempt(plan)`` for each plan in order until one finishes without a CUDA out-of-memory
    error; returns (its result, the plan that worked). Each move to the next plan is one warning
    line; the last plan's OOM becomes OutOfVram. Other errors (and Cancelled) pass through."""
    if not plans:
        raise ValueError("run_with_fallback needs at least one plan")
    for i, plan in enumerate(plans):
        try:
            return attempt(plan), plan
        except BaseException as e:
            if not is_cuda_oom(e):
                raise
            first = oom_line(e)
            del e
            _free_device_memory()
            if i + 1 == len(plans):
                raise OutOfVram(
                    f"out of GPU memory: {first} (with the tightest plan, {plan.name}, "
                    f"predicted peak {plan.predicted.peak_gib:.1f} GiB)"
                ) from None
            nxt = plans[i + 1]
            warn(
                f"out of GPU memory with plan {plan.name} (predicted peak "
                f"{plan.predicted.peak_gib:.1f} GiB); retrying with plan {nxt.name} "
                f"(predicted peak {nxt.predicted.peak_gib:.1f} GiB)"
            )
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------- CUDA errors


def _torch() -> Any:
    import torch

    return torch


def _free_device_memory() -> None:
    """Collect garbage and give CUDA's cached blocks back. A process that turned automatic
    collection off collects on a thread of its choosing (the app: its GUI thread, where Qt
    objects in cycles may be deleted), so this one does not."""
    import gc
    import sys

    if gc.isenabled():
        gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
