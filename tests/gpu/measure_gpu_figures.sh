#!/usr/bin/env bash
# Issue 5 figures on one CUDA GPU (H100/H200 class), in one go, most important first, never more
# than TOTAL_S (default 500 s): each run gets at most what is left, later ones are skipped.
#   1. T2V-1.3B 832x480x81: T5 encode, DiT cond+uncond step, VAE decode, ours (bf16) and diffusers'
#      in the same run, with the ratios               (target: DiT step <= 0.95 s bf16)
#   2. the same DiT step in every fast mode: bf16/fp8/int8 x SDPA backends (+ SageAttention,
#      torchao when installed), each with its velocity error vs bf16   (target: fp8 <= 0.85 s);
#      and bf16 without the token chunks (--token-chunk 0): what the chunking costs in time
#   3. Wan2.1 VAE decode 832x480x81, untiled and tiled for 1.5 GB   (target: <= 2.5 s at <= 1.5 GB)
#   4. Wan2.2 VAE decode 1280x704x121, untiled and tiled for 3 GB   (target: <= 8 s at <= 3 GB)
#   5. whole generations under the memory plan of a budget, the process capped at that budget
#      (torch.cuda.set_per_process_memory_fraction), with the OOM fallback live:
#        T2V-1.3B 832x480x81 @ 8 GB (<= 6.5 GB)   T2V-14B 832x480x81 @ 16 GB (<= 15 GB)
#        TI2V-5B 1280x704x121 @ 12 GB (end to end) Wan2.2 T2V-A14B 1280x720x81 @ 24 GB (<= 22 GB)
#      Random weights (no download); few steps: the peak does not depend on the step count
#      (A14B: 3 steps, so both experts run: timesteps 999, 959 | 856 < 875).
#   6. 50-step T2V-1.3B end to end, exact and with the step cache (targets: <= 55 s / <= 30 s)
# Usage: bash tests/gpu/run_issue5.sh [OUTDIR]   (default $OUT, else ./issue5-out)
# Every figure goes to OUTDIR/*.json; OUTDIR/summary.json puts them beside the targets and the
# planner's predictions. SKIP_A14B=1 leaves out the A14B plan (about 2.5 minutes), SKIP_E2E=1 the
# 50-step runs; ONLY=name,name runs just those (a second call for what the first had no time for;
# then `python tests/gpu/summarize.py DIR` over a folder holding both calls' JSON files). A run that failed or timed out keeps its log (OUTDIR/NAME.log); the summary quotes
# its end.
# On the device machine (no network) diffusers travels as a wheel, here, once:
#   echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps --only-binary=:all: \
#     --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 -d .whl \
#     diffusers==0.42.1 importlib_metadata==10.2.0 ftfy==6.3.1 wcwidth==0.2.13   (7 MB)
# and the run carries it: run(carry=[".whl"], command="bash tests/gpu/run_issue5.sh $OUT").
set -u
OUTDIR="${1:-${OUT:-issue5-out}}"
mkdir -p "$OUTDIR"
PY="${PYTHON:-python3}"
if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$PY" -c "import wan_desktop.bench" 2>/dev/null; then
    # offline: no build isolation (setuptools and wheel come from the machine's environment)
    "$PY" -m pip install -q --no-deps --no-index --no-build-isolation -e . || exit 1
fi
# TINY=1: the same runs on tiny configs and sizes on the CPU (a smoke test of this script and of
# the summary: tests/memory/test_gpu_script.py); the figures mean nothing
TINY="${TINY:-0}"
if [ "$TINY" = 1 ]; then
    EXTRA=(--tiny --device cpu)
    P480=(--size 64x32 --frames 5)
    P704=(--size 64x32 --frames 5)
    P720=(--size 64x32 --frames 5)
else
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU')" \
        || exit 1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUTDIR/gpu.txt" 2>&1
    EXTRA=()
    P480=(--size 832x480 --frames 81)
    P704=(--size 1280x704 --frames 121)
    P720=(--size 1280x720 --frames 81)
fi

TOTAL_S="${TOTAL_S:-500}"
run() {  # run NAME TIMEOUT_S ARGS...: one bench, its JSON and its log
    local name="$1" limit="$2"
    shift 2
    if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]]; then
        return
    fi
    local left=$((TOTAL_S - SECONDS))
    if [ "$left" -lt 20 ]; then
        echo "$name: skipped (time budget spent)" | tee "$OUTDIR/$name.log"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0=$SECONDS
    PYTHONUNBUFFERED=1 timeout "$limit" "$PY" -m wan_desktop.cli bench "${EXTRA[@]}" "$@" \
        --json "$OUTDIR/$name.json" > /dev/null 2> "$OUTDIR/$name.log"
    echo "$name: exit $? in $((SECONDS - t0)) s"
}

run dit_1p3b 150 --variant t2v-1.3B "${P480[@]}" --no-e2e
run sweep_1p3b 120 --sweep --no-diffusers --variant t2v-1.3B "${P480[@]}"
run dit_1p3b_onepass 90 --no-diffusers --no-e2e --token-chunk 0 --variant t2v-1.3B "${P480[@]}"
run vae21_480p81 60 --vae-only --no-diffusers --variant t2v-1.3B "${P480[@]}" --warmup 1 --repeat 2
run vae22_704p121 90 --vae-only --no-diffusers --variant ti2v-5B "${P704[@]}" --warmup 1 \
    --repeat 1
run plan_1p3b_8gb 90 --plan --no-diffusers --variant t2v-1.3B "${P480[@]}" --steps 2 --vram-budget 8
run plan_14b_16gb 120 --plan --no-diffusers --variant t2v-14B "${P480[@]}" --steps 2 \
    --vram-budget 16
run plan_5b_12gb 90 --plan --no-diffusers --variant ti2v-5B "${P704[@]}" --steps 2 \
    --vram-budget 12
if [ "${SKIP_A14B:-0}" != 1 ]; then
    run plan_a14b_24gb 180 --plan --no-diffusers --variant t2v-A14B "${P720[@]}" --steps 3 \
        --vram-budget 24
fi
if [ "${SKIP_E2E:-0}" != 1 ]; then
    run e2e_1p3b 200 --no-diffusers --variant t2v-1.3B "${P480[@]}" --step-cache 0.1 \
        --warmup 0 --repeat 1
fi

"$PY" tests/gpu/summarize.py "$OUTDIR"
