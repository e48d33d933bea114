#!/usr/bin/env bash
# Every GPU figure of the GPU-figures issue (#13), on one CUDA GPU, as JSON, in at most two calls of
# the device machine (each under TOTAL_S, default 400 s: a run gets at most what is left, later ones
# are skipped and the summary says so). Random full-size weights: speed and memory do not depend on
# the values. diffusers' figure for the same work comes from the same call.
#   PART=1  (speed)  T2V-1.3B 832x480x81, bf16:
#     dit_e2e_1p3b     T5 encode, DiT cond+uncond step, VAE decode (untiled and tiled for 1.5 GiB),
#                      50-step end to end exact and with the step cache (PSNR vs exact), ours and
#                      diffusers' (WanTransformer3DModel, AutoencoderKLWan, WanPipeline)
#     dit_1p3b_fp8     the DiT step with --precision fp8, its velocity error vs bf16
#     vae21_720p81     Wan2.1 VAE decode 1280x720x81, untiled and tiled for 3 GiB
#     dit_1p3b_compile the DiT step with --compile (compile time = dit_first_call_s)
#   PART=2  (memory and 14B)
#     dit_14b_resident / dit_14b_swap32_pinned / dit_14b_swap32_pageable
#                      T2V-14B 480p DiT step fully resident vs 32/40 blocks streamed (the 16 GB
#                      plan's), from pinned and from pageable host memory
#     e2e_14b_fast     T2V-14B 832x480x81 --preset fast (4 steps, no CFG) end to end
#     plan_*           the README's memory-plan rows, each a whole generation under its plan with
#                      the process capped at the budget (max_memory_reserved vs the prediction)
#                      (the I2V-14B row needs CLIP, which the bench does not build: not measured)
#     ort_cuda         ONNX Runtime's CUDA provider: measured only where onnxruntime-gpu is
#                      installed; otherwise the JSON says why not
# Usage: PART=1 bash tests/gpu/measure_gpu_figures.sh [OUTDIR]   (default $OUT, else ./gpu-figures)
# then  python tests/gpu/summarize.py OUTDIR [OUTDIR2] --write docs/performance/NAME.json
# (both calls' folders; summarize.py writes the committed results file and OUTDIR/summary.json).
# ONLY=name,name runs just those. A run that failed or timed out keeps its log (OUTDIR/NAME.log).
# On the device machine (no network) diffusers travels as wheels, fetched here once:
#   echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps --only-binary=:all: \
#     --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 -d .whl \
#     diffusers==0.42.1 importlib_metadata==10.2.0 ftfy==6.3.1 wcwidth==0.2.13   (7 MB)
# and the call carries it: run(carry=[".whl"], command="PART=1 bash tests/gpu/measure_gpu_figures.sh $OUT").
# TINY=1: the same runs on tiny configs on the CPU (tests/memory/test_gpu_script.py keeps this script
# and the summary working); the figures mean nothing.
set -u
OUTDIR="${1:-${OUT:-gpu-figures}}"
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
TINY="${TINY:-0}"
if [ "$TINY" = 1 ]; then
    EXTRA=(--tiny --device cpu)
    P480=(--size 64x32 --frames 5)
    P704=(--size 64x32 --frames 5)
    P720=(--size 64x32 --frames 5)
    STEPS50=(--steps 3)
    SWAP=(--swap-blocks 1)
    TINY_FLAG=--tiny
else
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU')" \
        || exit 1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
        > "$OUTDIR/gpu.txt" 2>&1
    EXTRA=()
    P480=(--size 832x480 --frames 81)
    P704=(--size 1280x704 --frames 121)
    P720=(--size 1280x720 --frames 81)
    STEPS50=(--steps 50)
    SWAP=(--swap-blocks 32)
fi
"$PY" -c "import torch; print(torch.__version__)" > "$OUTDIR/torch.txt" 2>&1
date -u +%Y-%m-%d > "$OUTDIR/date.txt"

TOTAL_S="${TOTAL_S:-400}"
PART="${PART:-all}"
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

if [ "$PART" = 1 ] || [ "$PART" = all ]; then
    run dit_e2e_1p3b 300 --variant t2v-1.3B "${P480[@]}" "${STEPS50[@]}" --step-cache 0.1 \
        --warmup 1 --repeat 3
    run dit_1p3b_fp8 90 --variant t2v-1.3B "${P480[@]}" --precision fp8 --no-diffusers \
        --no-e2e --dit-only
    run vae21_720p81 80 --vae-only --no-diffusers --variant t2v-1.3B "${P720[@]}" \
        --vae-budget 3 --warmup 1 --repeat 1
    run dit_1p3b_compile 240 --variant t2v-1.3B "${P480[@]}" --compile --no-diffusers --no-e2e \
        --dit-only
fi
if [ "$PART" = 2 ] || [ "$PART" = all ]; then
    run dit_14b_resident 90 --variant t2v-14B "${P480[@]}" --no-diffusers --no-e2e --dit-only
    run dit_14b_swap32_pinned 90 --variant t2v-14B "${P480[@]}" "${SWAP[@]}" --no-diffusers \
        --no-e2e --dit-only
    run dit_14b_swap32_pageable 120 --variant t2v-14B "${P480[@]}" "${SWAP[@]}" --pageable \
        --no-diffusers --no-e2e --dit-only
    run e2e_14b_fast 150 --variant t2v-14B "${P480[@]}" --preset fast --no-diffusers
    run plan_1p3b_8gb 90 --plan --no-diffusers --variant t2v-1.3B "${P480[@]}" --steps 2 \
        --vram-budget 8
    run plan_14b_16gb 120 --plan --no-diffusers --variant t2v-14B "${P480[@]}" --steps 2 \
        --vram-budget 16
    run plan_5b_12gb 90 --plan --no-diffusers --variant ti2v-5B "${P704[@]}" --steps 2 \
        --vram-budget 12
    run plan_5b_8gb 100 --plan --no-diffusers --variant ti2v-5B "${P704[@]}" --steps 2 \
        --vram-budget 8
    run plan_a14b_24gb 180 --plan --no-diffusers --variant t2v-A14B "${P720[@]}" --steps 3 \
        --vram-budget 24
    if [ -z "${ONLY:-}" ] || [[ ",$ONLY," == *",ort_cuda,"* ]]; then
        "$PY" tests/gpu/ort_cuda.py "$OUTDIR/ort_cuda.json" ${TINY_FLAG:-} > "$OUTDIR/ort_cuda.log" 2>&1
        echo "ort_cuda: exit $?"
    fi
fi

"$PY" tests/gpu/summarize.py "$OUTDIR"
