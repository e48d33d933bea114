"""``wan-desktop models list|download|verify|remove``: the model manager on the command line.

A subcommand module in the layout of ``cli_args.py``: ``cli.py`` calls ``add_parser(subparsers)``
while building its parser and ``run(args)`` for the ``models`` command. Errors follow cli.py: one
line on stderr, exit status 2; Ctrl-C during a download stops it cleanly (exit 130) and the partial
file resumes on the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .cancel import CancelToken
from .catalog import Plan
from .cli_args import Parser
from .errors import Cancelled, WanError
from .model_manager import (
    MODELS_ENV,
    DownloadProgress,
    IntegrityError,
    ModelError,
    ModelManager,
    ModelStatus,
    default_models_dir,
    detect_vram_gb,
)


def add_parser(subparsers: Any) -> None:
    """Add the ``models`` command (and its sub-commands) to ``subparsers``."""
    p = subparsers.add_parser(
        "models",
        help="list, download, verify or remove Wan models",
        description="Manage the Wan models in the models folder "
        f"(${MODELS_ENV}, default {default_models_dir()}).",
    )
    p.add_argument(
        "--models-dir",
        type=Path,
        metavar="DIR",
        help=f"models folder (default: ${MODELS_ENV} or the user data folder)",
    )
    sub = p.add_subparsers(
        dest="models_command",
        parser_class=Parser,
        required=True,
        metavar="{list,download,verify,remove}",
    )

    ls = sub.add_parser("list", help="known releases with size, VRAM estimates and install state")
    ls.add_argument(
        "--vram",
        type=float,
        metavar="GB",
        help="rank for this much GPU memory (default: detected with nvidia-smi)",
    )
    ls.add_argument("--task", choices=["t2v", "i2v", "flf2v", "ti2v"])
    ls.add_argument("--installed", action="store_true", help="only installed models")
    ls.add_argument("--json", action="store_true", help="machine-readable output")

    dl = sub.add_parser(
        "download",
        help="download (or resume) a model; checks every file against its "
        "published hash (files without one: size and format, shown unverified)",
    )
    dl.add_argument("name")
    dl.add_argument(
        "--from",
        dest="source",
        type=Path,
        metavar="DIR",
        help="install from a local folder instead of the Hub (offline)",
    )
    dl.add_argument("--endpoint", metavar="URL", help="Hub endpoint (default: $HF_ENDPOINT)")
    dl.add_argument("--force", action="store_true", help="download every file again")
    dl.add_argument("--no-progress", action="store_true")

    vf = sub.add_parser("verify", help="re-hash an installed model against the Hub's sha256")
    vf.add_argument("name", nargs="?")
    vf.add_argument("--all", action="store_true", help="every installed model")
    vf.add_argument("--no-progress", action="store_true")

    rm = sub.add_parser("remove", help="delete an installed model's files")
    rm.add_argument("name")


class _Bar:
    """One-line stderr progress: bytes, rate, ETA, file (only on a terminal or WAN_PROGRESS=1)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and (sys.stderr.isatty() or os.environ.get("WAN_PROGRESS") == "1")
        self.t0 = time.monotonic()
        self.d0: int | None = None
        self.shown = False

    def __call__(self, ev: DownloadProgress) -> None:
        if not self.enabled:
            return
        if self.d0 is None or ev.stage == "check":
            self.d0, self.t0 = ev.done, time.monotonic()
        dt = time.monotonic() - self.t0
        rate = (ev.done - self.d0) / dt if dt > 0 else 0.0
        total = ev.total or 0
        frac = ev.done / total if total else 0.0
        width = 24
        bar = "█" * round(width * frac) + "░" * (width - round(width * frac))
        eta = time.strftime("%H:%M:%S", time.gmtime((total - ev.done) / rate)) if rate > 0 else "--"
        name = ev.file if len(ev.file) <= 40 else "…" + ev.file[-39:]
        sys.stderr.write(
            f"\r{ev.stage} {_gb(ev.done)}/{_gb(total)} |{bar}| {rate / 1e6:6.1f} MB/s "
            f"ETA {eta} {name}\033[K"
        )
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _keys(keys: Any, most: int = 3) -> str:
    keys = list(keys)
    more = f" and {len(keys) - most} more" if len(keys) > most else ""
    return ", ".join(keys[:most]) + more


def _gb(n: int | float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _with_sigint(fn: Any) -> Any:
    """Run ``fn(token)`` with Ctrl-C mapped to the token (a second Ctrl-C interrupts at once)."""
    token = CancelToken()

    def handler(signum: int, frame: Any) -> None:
        if token.cancelled:
            raise KeyboardInterrupt
        token.cancel("interrupted (Ctrl-C)")

    try:
        old = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (tests, GUI): no handler
        return fn(token)
    try:
        return fn(token)
    finally:
        signal.signal(signal.SIGINT, old)


def _status_json(s: ModelStatus) -> dict[str, Any]:
    r = s.release
    out: dict[str, Any] = {
        "name": r.name,
        "title": r.title,
        "variant": r.variant,
        "layout": r.layout.value,
        "tasks": list(r.tasks),
        "repo_ids": [src.repo_id for src in r.sources],
        "precision": r.precision,
        "download_bytes": r.download_bytes,
        "size_source": r.size_source,
        "vram_gb_estimate": {p.value: g for p, g in r.vram_gb},
        "plan": s.plan.value if s.plan else None,
        "recommended": s.recommended,
        "state": s.state,
    }
    if s.installed is not None:
        out["revision"] = s.installed.revision
        out["generate_args"] = {k: str(v) for k, v in s.installed.generate_args().items()}
        out["unverified_files"] = [f.key for f in s.installed.unverified]
    return out


def _cmd_list(mm: ModelManager, args: argparse.Namespace) -> int:
    vram = args.vram if args.vram is not None else detect_vram_gb()
    rows = mm.list_models(vram, task=args.task)
    if args.installed:
        rows = [s for s in rows if s.installed is not None]
    if args.json:
        print(
            json.dumps(
                {
                    "models_dir": str(mm.models_dir),
                    "vram_gb": vram,
                    "models": [_status_json(s) for s in rows],
                },
                indent=2,
            )
        )
        return 0
    gpu = f"{vram:g} GB GPU" if vram is not None else "no NVIDIA GPU detected (give --vram GB)"
    print(
        f"models folder: {mm.models_dir}   ranking for: {gpu}   VRAM figures are estimates in GiB"
    )
    head = (
        f"  {'NAME':34} {'LAYOUT':9} {'DOWNLOAD':>9} {'RESIDENT':>8} {'OFFLOAD':>7} "
        f"{'SWAP':>5}  {'FITS':10} STATE"
    )
    print(head)
    for s in rows:
        r = s.release
        mark = "*" if s.recommended else " "
        fits = (s.plan.value if s.plan else "no") if vram is not None else "?"
        print(
            f"{mark} {r.name:34} {r.layout.value:9} {_gb(r.download_bytes):>9} "
            f"{r.vram_for(Plan.RESIDENT):8.1f} {r.vram_for(Plan.OFFLOAD):7.1f} "
            f"{r.vram_for(Plan.BLOCK_SWAP):5.1f}  {fits:10} {s.state}"
        )
    if any(s.recommended for s in rows):
        print("* recommended for this GPU")
    return 0


def _cmd_download(mm: ModelManager, args: argparse.Namespace) -> int:
    bar = _Bar(not args.no_progress)
    try:
        inst = _with_sigint(
            lambda tok: mm.download(
                args.name, progress=bar, cancel=tok, source=args.source, force=args.force
            )
        )
    finally:
        bar.close()
    n = len(inst.files)
    size = sum(f.size for f in inst.files)
    unverified = inst.unverified
    if unverified:
        print(
            f"installed {inst.name}: {n} files, {_gb(size)}, in {inst.folder}; "
            f"{n - len(unverified)} verified, {len(unverified)} UNVERIFIED (no published hash: "
            f"{_keys(f.path for f in unverified)})"
        )
        print(
            f"warning: {len(unverified)} file(s) of {inst.name} could not be checked against a "
            "published hash (only their size and format were checked)",
            file=sys.stderr,
        )
    else:
        kinds = " and ".join(
            k
            for k, has in (
                ("sha256", any(f.hub_sha256 for f in inst.files)),
                ("git sha1", any(f.hub_git_sha1 and not f.hub_sha256 for f in inst.files)),
            )
            if has
        )
        print(f"installed {inst.name}: {n} files, {_gb(size)}, verified ({kinds}) in {inst.folder}")
    gen = inst.generate_args()
    opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in gen.items())
    print(f"use: wan-desktop generate {opts} --prompt ... --out out.mp4")
    return 0


def _cmd_verify(mm: ModelManager, args: argparse.Namespace) -> int:
    if args.all == (args.name is not None):
        raise ModelError(
            "give a model name or --all", remedy="e.g. `wan-desktop models verify --all`."
        )
    names = sorted(mm.installed()) if args.all else [args.name]
    bad_total: list[str] = []
    for name in names:
        bar = _Bar(not args.no_progress)
        try:
            rep = _with_sigint(
                lambda tok, name=name, bar=bar: mm.verify(name, progress=bar, cancel=tok)
            )
        finally:
            bar.close()
        if rep.ok and rep.unverified:
            print(
                f"ok: {name} ({rep.checked} files; {len(rep.unverified)} UNVERIFIED: unchanged "
                f"since install, but no published hash to check: {_keys(rep.unverified)})"
            )
        elif rep.ok:
            print(f"ok: {name} ({rep.checked} files)")
        for key, reason in rep.bad:
            print(f"corrupt: {key}: {reason}", file=sys.stderr)
            bad_total.append(f"{name}: {key}")
    if bad_total:
        first = bad_total[0]
        more = f" and {len(bad_total) - 1} more" if len(bad_total) > 1 else ""
        raise IntegrityError(
            f"{len(bad_total)} file(s) failed verification: {first}{more}",
            remedy="Run `wan-desktop models download NAME` to replace them.",
        )
    return 0


def _cmd_remove(mm: ModelManager, args: argparse.Namespace) -> int:
    removed = mm.remove(args.name)
    print(f"removed {args.name}: {len(removed)} files deleted from {mm.models_dir}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``models`` command; returns the exit status (0, 2 on error, 130 on Ctrl-C)."""
    mm = ModelManager(args.models_dir, endpoint=getattr(args, "endpoint", None))
    cmd = {
        "list": _cmd_list,
        "download": _cmd_download,
        "verify": _cmd_verify,
        "remove": _cmd_remove,
    }[args.models_command]
    try:
        return cmd(mm, args)
    except Cancelled as e:
        print(
            f"cancelled: {e.message}; the partial download is kept and resumes next time",
            file=sys.stderr,
        )
        return 130
    except WanError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; partial downloads are kept", file=sys.stderr)
        return 130


__all__ = ["add_parser", "run"]
