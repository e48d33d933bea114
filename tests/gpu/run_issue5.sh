#!/usr/bin/env bash
# Issue 5 figures on one CUDA GPU (H100/H200 class), in one go: about 6.5 minutes expected, never
# more than TOTAL_S (default 470 s): each run gets at most what is left, later ones are skipped.
#   1. Wan2.1 VAE decode 832x480x81, untiled and tiled for 1.5 GB   (target: <= 2.5 s at <= 1.5 GB)
#   2. Wan2.2 VAE decode 1280x704x121, untiled and tiled for 3 GB   (target: <= 8 s at <= 3 GB)
#   3. whole generations under the memory plan of a budget, the process capped at that budget
#      (torch.cuda.set_per_process_memory_fraction), with the OOM fallback live:
#        T2V-1.3B 832x480x81 @ 8 GB (<= 6.5 GB)   T2V-14B 832x480x81 @ 16 GB (<= 15 GB)
#        TI2V-5B 1280x704x121 @ 12 GB (end to end) Wan2.2 T2V-A14B 1280x720x81 @ 24 GB (<= 22 GB)
#      Random weights (no download); few steps: the peak does not depend on the step count
#      (A14B: 3 steps, so both experts run: timesteps 999, 959 | 856 < 875).
# Usage: bash tests/gpu/run_issue5.sh [OUTDIR]   (default $OUT, else ./issue5-out)
# Every figure goes to OUTDIR/*.json; OUTDIR/summary.json puts them beside the targets and the
# planner's predictions. Set SKIP_A14B=1 to leave out the longest run (about 2.5 minutes). A run
# that failed or timed out keeps its log (OUTDIR/NAME.log); the summary quotes its end.
set -u
OUTDIR="${1:-${OUT:-issue5-out}}"
mkdir -p "$OUTDIR"
PY="${PYTHON:-python}"
if ! "$PY" -c "import wan_desktop.engines.bench" 2>/dev/null; then
    "$PY" -m pip install -q --no-deps -e . || exit 1
fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU')" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUTDIR/gpu.txt" 2>&1

TOTAL_S="${TOTAL_S:-470}"
run() {  # run NAME TIMEOUT_S ARGS...: one bench, its JSON and its log
    local name="$1" limit="$2"
    shift 2
    local left=$((TOTAL_S - SECONDS))
    if [ "$left" -lt 20 ]; then
        echo "$name: skipped (time budget spent)" | tee "$OUTDIR/$name.log"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0=$SECONDS
    timeout "$limit" "$PY" -m wan_desktop.cli bench --no-diffusers "$@" \
        --json "$OUTDIR/$name.json" > /dev/null 2> "$OUTDIR/$name.log"
    echo "$name: exit $? in $((SECONDS - t0)) s"
}

run vae21_480p81 60 --vae-only --variant t2v-1.3B --size 832x480 --frames 81 --warmup 1 --repeat 2
run vae22_704p121 90 --vae-only --variant ti2v-5B --size 1280x704 --frames 121 --warmup 1 --repeat 1
run plan_1p3b_8gb 90 --plan --variant t2v-1.3B --size 832x480 --frames 81 --steps 2 --vram-budget 8
run plan_14b_16gb 120 --plan --variant t2v-14B --size 832x480 --frames 81 --steps 2 --vram-budget 16
run plan_5b_12gb 90 --plan --variant ti2v-5B --size 1280x704 --frames 121 --steps 2 --vram-budget 12
if [ "${SKIP_A14B:-0}" != 1 ]; then
    run plan_a14b_24gb 180 --plan --variant t2v-A14B --size 1280x720 --frames 81 --steps 3 \
        --vram-budget 24
fi

"$PY" - "$OUTDIR" <<'PYEOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
targets = {  # name: (what, seconds limit or None, GB limit)
    "vae21_480p81": ("Wan2.1 VAE decode 832x480x81 tiled", 2.5, 1.5),
    "vae22_704p121": ("Wan2.2 VAE decode 1280x704x121 tiled", 8.0, 3.0),
    "plan_1p3b_8gb": ("T2V-1.3B 832x480x81 on the 8 GB plan", None, 6.5),
    "plan_14b_16gb": ("T2V-14B 832x480x81 on the 16 GB plan", None, 15.0),
    "plan_5b_12gb": ("TI2V-5B 1280x704x121 on the 12 GB plan", None, 12.0),
    "plan_a14b_24gb": ("Wan2.2 T2V-A14B 1280x720x81 on the 24 GB plan", None, 22.0),
}
rows = {}
for name, (what, t_max, gb_max) in targets.items():
    f = out / f"{name}.json"
    if not f.exists():
        rows[name] = {"what": what, "error": (out / f"{name}.log").read_text()[-2000:]
                      if (out / f"{name}.log").exists() else "not run"}
        continue
    d = json.loads(f.read_text())
    if "vae_tiling" in d:
        v = d["vae_tiling"]
        row = {"what": what, "tile": v["tile"], "overlap": v["overlap"],
               "tiled_s": v["tiled_s"], "tiled_peak_gb": v["tiled_peak_gb"],
               "untiled_s": v["untiled_s"], "untiled_peak_gb": v["untiled_peak_gb"],
               "predicted_tiled_gib": v["predicted_tiled_gib"],
               "predicted_untiled_gib": v["predicted_untiled_gib"],
               "psnr_db_tiled_vs_untiled": v["psnr_db_tiled_vs_untiled"],
               "time_ok": v["tiled_s"] <= t_max,
               "memory_ok": None if v["tiled_peak_gb"] is None else v["tiled_peak_gb"] <= gb_max}
    else:
        p = d["planned"]
        row = {"what": what, "plan": p["plan"]["name"], "plan_text": p["plan_text"],
               "peak_allocated_gb": p["peak_allocated_gb"],
               "predicted_peak_gib": p["predicted_peak_gib"],
               "predicted_phases_gib": p["predicted_phases_gib"], "attempts": p["attempts"],
               "warnings": p["warnings"], "e2e_s": p["e2e_s"], "steps": d["steps"],
               "memory_ok": None if p["peak_allocated_gb"] is None
               else p["peak_allocated_gb"] <= gb_max}
    row["targets"] = {"seconds": t_max, "gb": gb_max}
    rows[name] = row
(out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
for name, r in rows.items():
    print(name, {k: r.get(k) for k in ("tiled_s", "tiled_peak_gb", "peak_allocated_gb",
                                      "predicted_peak_gib", "memory_ok", "time_ok", "error")})
PYEOF
