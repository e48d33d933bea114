"""The figures of tests/gpu/run_issue5.sh beside issue 5's targets: ``python tests/gpu/summarize.py
OUTDIR`` reads OUTDIR/NAME.json (bench output) and writes OUTDIR/summary.json. A run that left no
JSON is quoted from the end of its log."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# name: (what, seconds limit or None, GB limit or None)
TARGETS: dict[str, tuple[str, float | None, float | None]] = {
    "dit_1p3b": ("T2V-1.3B 832x480x81 DiT cond+uncond step, bf16, vs diffusers", 0.95, None),
    "sweep_1p3b": ("T2V-1.3B DiT step in each fast mode (fastest fp8)", 0.85, None),
    "dit_1p3b_onepass": ("T2V-1.3B DiT step without token chunks (their time cost)", None, None),
    "vae21_480p81": ("Wan2.1 VAE decode 832x480x81 tiled", 2.5, 1.5),
    "vae22_704p121": ("Wan2.2 VAE decode 1280x704x121 tiled", 8.0, 3.0),
    "plan_1p3b_8gb": ("T2V-1.3B 832x480x81 on the 8 GB plan", None, 6.5),
    "plan_14b_16gb": ("T2V-14B 832x480x81 on the 16 GB plan", None, 15.0),
    "plan_5b_12gb": ("TI2V-5B 1280x704x121 on the 12 GB plan", None, 12.0),
    "plan_a14b_24gb": ("Wan2.2 T2V-A14B 1280x720x81 on the 24 GB plan", None, 22.0),
    "e2e_1p3b": ("50-step T2V-1.3B 832x480x81 end to end (exact; step cache <= 30 s)", 55.0, None),
}


def _le(value: float | None, limit: float | None) -> bool | None:
    return None if value is None or limit is None else value <= limit


def _row(name: str, d: dict[str, Any], t_max: float | None, gb_max: float | None) -> dict[str, Any]:
    if "sweep" in d:
        modes = [
            {
                k: m.get(k)
                for k in (
                    "precision",
                    "attention",
                    "backend",
                    "dit_step_s",
                    "velocity_error",
                    "peak_allocated_gb",
                    "error",
                )
            }
            for m in d["sweep"]
        ]
        fp8 = [m["dit_step_s"] for m in modes if m["precision"] == "fp8" and m["dit_step_s"]]
        best = min(fp8) if fp8 else None
        return {"modes": modes, "fastest_fp8_step_s": best, "time_ok": _le(best, t_max)}
    if "vae_tiling" in d:
        v = d["vae_tiling"]
        keep = (
            "tile",
            "overlap",
            "tiled_s",
            "tiled_peak_gb",
            "untiled_s",
            "untiled_peak_gb",
            "predicted_tiled_gib",
            "predicted_untiled_gib",
            "psnr_db_tiled_vs_untiled",
        )
        return {
            **{k: v.get(k) for k in keep},
            "time_ok": _le(v["tiled_s"], t_max),
            "memory_ok": _le(v["tiled_peak_gb"], gb_max),
        }
    if "planned" in d:
        p = d["planned"]
        keep = (
            "plan_text",
            "peak_allocated_gb",
            "predicted_peak_gib",
            "predicted_phases_gib",
            "attempts",
            "warnings",
            "e2e_s",
        )
        return {
            "plan": p["plan"]["name"],
            **{k: p.get(k) for k in keep},
            "steps": d["steps"],
            "memory_ok": _le(p["peak_allocated_gb"], gb_max),
        }
    ours, theirs = d["ours"], d.get("diffusers_components") or {}
    keep = (
        "t5_encode_s",
        "dit_first_call_s",
        "dit_step_s",
        "vae_decode_s",
        "e2e_s",
        "peak_allocated_gb",
    )
    row: dict[str, Any] = {
        "ours": {k: ours.get(k) for k in keep},
        "diffusers": {k: theirs.get(k) for k in keep} if theirs else None,
        "ratios": d.get("ratios"),
    }
    if name.startswith("e2e"):
        cached = ours.get("step_cache_stats") or {}
        row["step_cache"] = {k: cached.get(k) for k in ("e2e_s", "psnr_db_vs_exact", "speedup")}
        row["time_ok"] = _le(ours.get("e2e_s"), t_max)
        row["cached_time_ok"] = _le(cached.get("e2e_s"), 30.0)
    else:
        row["time_ok"] = _le(ours.get("dit_step_s"), t_max)
    return row


def summarize(out: Path) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for name, (what, t_max, gb_max) in TARGETS.items():
        f, log = out / f"{name}.json", out / f"{name}.log"
        if f.exists():
            row = {"what": what, **_row(name, json.loads(f.read_text()), t_max, gb_max)}
        else:
            row = {"what": what, "error": log.read_text()[-2000:] if log.exists() else "not run"}
        row["targets"] = {"seconds": t_max, "gb": gb_max}
        rows[name] = row
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    for name, r in summarize(Path(sys.argv[1])).items():
        print(name, {k: r[k] for k in ("time_ok", "memory_ok", "error") if k in r})
