"""``wan-desktop`` command line. Every user error is one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, bench, model_manager_cli
from . import cli_args as _cli_args
from .cli_args import Parser as _Parser
from .cli_args import add_long_video_arguments, prompt_text
from .cli_args import add_vace_arguments as _add_vace_arguments
from .cli_args import positive_float as _positive_float
from .cli_args import size as _size
from .errors import Cancelled, ConfigError, WanError
from .options import RunOptions
from .request import GenerationRequest

if TYPE_CHECKING:
    from . import run

log = logging.getLogger("wan_desktop")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="wan-desktop", description="Offline Wan2.1 / Wan2.2 video generation.")
    p.add_argument("--version", action="version", version=f"wan-desktop {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    g = sub.add_parser("generate", help="generate a video")
    g.add_argument("--model", type=Path, help="model folder (official/diffusers) or ComfyUI file")
    g.add_argument("--prompt", help="the prompt; long videos: one per window, separated by ' | '")
    g.add_argument("--negative-prompt")
    g.add_argument("--task", choices=["t2v", "i2v", "flf2v", "ti2v", "v2v", "vace"])
    g.add_argument("--image", type=Path)
    g.add_argument("--last-image", type=Path)
    g.add_argument("--size", type=_size, help="WIDTHxHEIGHT, e.g. 832x480")
    g.add_argument("--frames", type=int, help="4n+1 frames, e.g. 81")
    g.add_argument("--steps", type=int)
    g.add_argument("--guidance", type=_positive_float)
    g.add_argument("--guidance-low", type=_positive_float, help="Wan2.2 low-noise expert guidance")
    g.add_argument("--shift", type=_positive_float)
    g.add_argument("--sampler", choices=["unipc", "dpm++", "euler", "rcm"])
    g.add_argument("--seed", type=int, help="default: random (printed and saved)")
    g.add_argument("--device", choices=["cpu", "cuda"])
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    g.add_argument("--backend", choices=["torch", "onnxruntime", "tensorrt"], default="torch")
    g.add_argument("--engines", type=Path, help="engine folder for onnxruntime/tensorrt")
    g.add_argument("--precision", choices=["bf16", "fp8", "int8"])
    g.add_argument(
        "--vram-budget",
        type=_positive_float,
        metavar="GB",
        help="plan for a card of this size (default: the GPU's free memory)",
    )
    g.add_argument(
        "--print-plan",
        action="store_true",
        help="print the memory plan and its fallbacks, then stop (nothing is loaded)",
    )
    g.add_argument(
        "--attention",
        default="sdpa",
        help="sdpa (default), sage, or sdpa-flash|cudnn|efficient|math",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the DiT blocks")
    g.add_argument(
        "--step-cache",
        type=_positive_float,
        metavar="THRESHOLD",
        help="reuse a step's residual when the input barely changed (e.g. 0.1)",
    )
    g.add_argument("--vae", type=Path, help="VAE file (ComfyUI single-file models)")
    g.add_argument("--text-encoder", type=Path, help="umT5 file (ComfyUI single-file models)")
    g.add_argument(
        "--tokenizer", type=Path, help="tokenizer folder (tokenizer.json or spiece.model)"
    )
    g.add_argument(
        "--clip", type=Path, help="CLIP vision file (Wan2.1 I2V / FLF2V: clip_vision_h.safetensors)"
    )
    g.add_argument(
        "--random-weights",
        metavar="VARIANT",
        help="full-size model with random weights (benchmarks, no download)",
    )
    g.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="FILE[:STRENGTH]",
        help="merge a LoRA (repeatable; Wan2.2 A14B: into the high-noise expert)",
    )
    g.add_argument(
        "--lora-low",
        action="append",
        default=[],
        metavar="FILE[:STRENGTH]",
        help="merge a LoRA into Wan2.2 A14B's low-noise expert (repeatable)",
    )
    from .presets import PRESETS

    g.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="; ".join(f"{k}: {p.label}" for k, p in PRESETS.items())
        + " (fast needs a 4-step distilled model or LoRA)",
    )
    g.add_argument(
        "--tiny-vae",
        type=Path,
        metavar="FILE",
        help="decode with a TAEHV tiny VAE (taew2_1 / taew2_2): fast, lower quality",
    )
    add_long_video_arguments(g)
    _cli_args.add_video_input_arguments(g)
    _cli_args.add_forcing_arguments(g)  # SkyReels-V2 DF
    _cli_args.add_parallel_arguments(g)  # more than one GPU
    _add_vace_arguments(g)
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--out", type=Path, required=True, help="out.mp4, or a folder for PNG frames")

    model_manager_cli.add_parser(sub)
    bench.add_parser(sub)
    _add_export_parser(sub)

    i = sub.add_parser("inspect", help="print what a model folder/file contains, as JSON")
    i.add_argument("path", type=Path)
    i.add_argument("--vae", type=Path)
    i.add_argument("--text-encoder", type=Path)
    i.add_argument("--tokenizer", type=Path)
    i.add_argument("--clip", type=Path)
    return p


class Progress:
    """A one-line terminal progress bar: step, it/s, ETA."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = (enabled and sys.stderr.isatty()) or os.environ.get("WAN_PROGRESS") == "1"
        self._open = False  # a bar line without its newline is on stderr

    def warn(self, message: str) -> None:
        """A warning on a line of its own (an unfinished bar line is ended first)."""
        self.close()
        print(f"warning: {message}", file=sys.stderr)

    def close(self) -> None:
        """End an unfinished bar line, so a following error or "cancelled" is a line of its own."""
        if self._open:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._open = False

    def __call__(self, event: Any) -> None:
        from .pipeline import Finished, StageStarted, StepDone

        if not self.enabled:
            return
        self._open = not isinstance(event, Finished)
        if isinstance(event, StageStarted):
            sys.stderr.write(f"\r{event.stage}...\033[K")
        elif isinstance(event, StepDone):
            width = 30
            done = round(width * event.step / event.total)
            rate = event.step / event.elapsed if event.elapsed > 0 else 0.0
            eta = _clock(event.eta)
            bar = "█" * done + "░" * (width - done)
            sys.stderr.write(
                f"\r{_window(event)}denoise {event.step}/{event.total} |{bar}| {rate:.2f} it/s "
                f"ETA {eta}\033[K"
            )
        elif isinstance(event, Finished):
            sys.stderr.write(f"\rdone in {event.seconds:.1f} s\033[K\n")
        sys.stderr.flush()


def _window(event: Any) -> str:
    """ "window 3/8 · " for a long video's events, else nothing."""
    return f"window {event.window}/{event.windows} · " if event.windows > 1 else ""


def _clock(seconds: float) -> str:
    """ETA as MM:SS, or H:MM:SS from an hour on (14B runs at 720p take longer than an hour)."""
    m, sec = divmod(max(0, round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def _add_export_parser(sub: Any) -> None:
    e = sub.add_parser("export", help="export ONNX graphs / build engines for a model")
    e.add_argument("--model", type=Path, help="model folder (official/diffusers) or ComfyUI file")
    e.add_argument("--out", type=Path, required=True, help="engine folder to create")
    e.add_argument(
        "--components",
        help="comma-separated: t5,dit,vae,clip (vae_decoder, "
        "vae_encoder); default: all the model needs",
    )
    e.add_argument("--precision", choices=["fp32", "bf16", "fp16", "fp8", "int8"], default="fp32")
    e.add_argument(
        "--profile",
        choices=["480p", "720p"],
        help="video sizes the engines are built for (shape profiles)",
    )
    e.add_argument("--engine", choices=["onnx", "tensorrt"], default="onnx")
    e.add_argument("--vae", type=Path, help="VAE file (ComfyUI single-file models)")
    e.add_argument("--text-encoder", type=Path, help="umT5 file (ComfyUI single-file models)")
    e.add_argument("--tokenizer", type=Path, help="tokenizer folder")
    e.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="FILE[:STRENGTH]",
        help="merge a LoRA into the (high-noise) DiT; repeatable",
    )
    e.add_argument(
        "--lora-low",
        action="append",
        default=[],
        metavar="FILE[:STRENGTH]",
        help="merge a LoRA into Wan2.2's low-noise expert",
    )
    e.add_argument(
        "--random-weights",
        metavar="VARIANT",
        help="full-size model with random weights (sizes and export times)",
    )
    e.add_argument("--force", action="store_true", help="replace --out if it exists")
    e.add_argument(  # SkyReels-V2 DF: a DiT graph per causal block size and fps
        "--causal-block-size", type=int, metavar="N", help="DF models: the DiT's causal block"
    )
    e.add_argument("--fps", type=int, metavar="N", help="DF models: the DiT's fps embedding")
    e.add_argument("--no-progress", action="store_true")


def _cmd_export(args: argparse.Namespace) -> int:
    from .export.job import ExportJob, run_export
    from .lora import LoraSpec

    if (args.model is None) == (args.random_weights is None):
        raise ConfigError("give either --model PATH or --random-weights VARIANT")
    comps = (
        tuple(c.strip() for c in args.components.split(",") if c.strip()) if args.components else ()
    )
    if args.components is not None and not comps:
        raise ConfigError("--components is empty; give e.g. t5,dit,vae")
    loras = [LoraSpec.parse(t) for t in args.lora] + [
        LoraSpec.parse(t, expert="low") for t in args.lora_low
    ]
    for spec in loras:
        if not Path(spec.path).expanduser().is_file():
            raise ConfigError(f"LoRA file not found: {spec.path}")
    presets: tuple[str, ...] = ()
    variant = None
    if args.profile:
        from .variants import get_variant

        if args.random_weights:
            variant = get_variant(args.random_weights)
        else:
            from .checkpoints.detect import detect_model

            variant = detect_model(
                args.model, vae=args.vae, text_encoder=args.text_encoder, tokenizer=args.tokenizer
            ).variant
        from .specs import profile_presets

        presets = profile_presets(variant, args.profile)

    def opt(p: Path | None) -> str | None:
        return None if p is None else str(p)

    job = ExportJob(
        out=str(args.out),
        model=opt(args.model),
        random_weights=args.random_weights,
        components=comps,
        precision=args.precision,
        presets=presets,
        engine=args.engine,
        vae=opt(args.vae),
        text_encoder=opt(args.text_encoder),
        tokenizer=opt(args.tokenizer),
        overwrite=args.force,
        profile=args.profile,
        loras=tuple((s.path, s.strength, s.expert) for s in loras),
        causal_block_size=args.causal_block_size,
        fps=args.fps,
    )
    show = (not args.no_progress and sys.stderr.isatty()) or os.environ.get("WAN_PROGRESS") == "1"
    state = {"open": False}

    def progress(stage: str, fraction: float) -> None:
        if show:
            sys.stderr.write(f"\rexport {stage} {100 * fraction:3.0f}%\033[K")
            sys.stderr.flush()
            state["open"] = True

    def note(message: str) -> None:
        log.info("%s", message)

    cancel, restore = _install_sigint()
    try:
        out = run_export(job, progress=progress, log=note, cancel=cancel)
    finally:
        if state["open"]:
            sys.stderr.write("\n")
            sys.stderr.flush()
        restore()
    print(out)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .checkpoints.inspect import inspect_model

    info = inspect_model(
        args.path,
        vae=args.vae,
        text_encoder=args.text_encoder,
        tokenizer=args.tokenizer,
        clip=args.clip,
    )
    print(json.dumps(info, indent=2))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from . import run
    from .engines.factory import EngineFactory

    factory = EngineFactory()
    request, options = _request(args), _options(args)
    prepared = run.prepare(
        request, options, out=args.out, factory=factory, planning=_planning(args)
    )
    if args.print_plan:
        print(prepared.describe_plans())
        return 0
    progress = Progress(not args.no_progress)
    for note in prepared.notes:
        progress.warn(note)
    if args.verbose and prepared.plans:
        print(prepared.plans[0].describe(), file=sys.stderr)
    cache, (cancel, restore) = run.ComponentCache(factory), _install_sigint()
    try:
        result = run.execute(
            prepared, components=cache, cancel=cancel, emit=progress, warn=progress.warn
        )
    finally:
        progress.close()
        restore()
    from .parallel.session import leads

    if not leads():  # torchrun: rank 0 alone prints the seed and the output path
        return 0
    if args.seed is None:
        print(f"seed: {result.request.seed}", file=sys.stderr)
    print(result.out)
    return 0


def _planning(args: argparse.Namespace) -> run.Planning:
    from .run import Planning

    return Planning.ALWAYS if args.print_plan else Planning.ON_GPU


def _request(args: argparse.Namespace) -> GenerationRequest:
    """The request the flags describe; without --seed a random one (printed after the run)."""
    import secrets

    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    width, height = args.size if args.size else (None, None)
    return GenerationRequest(
        prompt=prompt_text(args.prompt, args.prompt_file),
        negative_prompt=args.negative_prompt,
        task=args.task,
        image=_opt(args.image),
        last_image=_opt(args.last_image),
        width=width,
        height=height,
        frames=args.frames,
        steps=args.steps,
        guidance=args.guidance,
        guidance_low=args.guidance_low,
        shift=args.shift,
        sampler=args.sampler,
        seed=seed,
        control_video=_opt(args.control_video),
        mask_video=_opt(args.mask_video),
        ref_images=tuple(str(p) for p in args.ref_image),
        control_scale=args.control_scale,
        color_match=args.color_match != "off",
        extend=_opt(args.extend),
        **_cli_args.video_input_fields(args),
        **_cli_args.forcing_fields(args),
        **_cli_args.window_fields(args),
    )


def _options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        model=_opt(args.model),
        vae=_opt(args.vae),
        text_encoder=_opt(args.text_encoder),
        tokenizer=_opt(args.tokenizer),
        clip=_opt(args.clip),
        random_weights=args.random_weights,
        device=args.device,
        dtype=args.dtype,
        backend=args.backend,
        engines=_opt(args.engines),
        precision=args.precision,
        vram_budget_gb=args.vram_budget,
        attention=args.attention,
        compile=args.compile,
        step_cache=args.step_cache,
        loras=tuple(args.lora),
        loras_low=tuple(args.lora_low),
        preset=args.preset,
        tiny_vae=_opt(args.tiny_vae),
        **_cli_args.parallel_fields(args),
    )


def _opt(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _install_sigint() -> tuple[Any, Any]:
    """Ctrl-C (SIGINT) and SIGTERM set a cancel token (the loop stops within one step and writes
    nothing; main() exits 130, or 143 for SIGTERM, as a shell reports a death by either signal); a
    second one interrupts at once. Returns (token, restore): the previous handlers come back after
    the run, so ``main()`` called in-process (tests, scripts) leaves the caller's handlers alone."""
    import threading

    from .cancel import CancelToken

    token = CancelToken()
    if threading.current_thread() is not threading.main_thread():
        return token, lambda: None  # signal handlers can only be set from the main thread

    def handler(signum, frame):
        term = signum == signal.SIGTERM
        if token.cancelled:  # the second signal: stop now
            raise _Terminated if term else KeyboardInterrupt
        token.cancel(_TERMINATED if term else "interrupted (Ctrl-C)")

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old = signal.signal(sig, handler)
        previous[sig] = signal.SIG_DFL if old is None else old  # None: set outside Python

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return token, restore


_TERMINATED = "terminated (SIGTERM)"  # the cancel reason that makes main() exit 143


class _Terminated(KeyboardInterrupt):
    """A second SIGTERM while the run was already cancelling."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command is None:
            # the GUI is a composition root of its own; imported by name so the core never
            # depends on Qt
            import importlib

            return int(importlib.import_module("wan_desktop.ui.app").main() or 0)
        commands = {
            "generate": _cmd_generate,
            "export": _cmd_export,
            "inspect": _cmd_inspect,
            "models": model_manager_cli.run,
            "bench": bench.run,
        }
        return commands[args.command](args)
    except Cancelled as e:
        print(f"cancelled: {e.message}; nothing was written", file=sys.stderr)
        return 143 if e.message == _TERMINATED else 130
    except WanError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return 2
    except OSError as e:  # last resort (disk full, permissions): one line, never a traceback
        where = f": {e.filename}" if e.filename else ""
        print(
            f"error: {e.strerror or e}{where} (Check the free disk space and the permissions "
            "of the files and folders given.)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt as e:
        print("interrupted; nothing was written", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
