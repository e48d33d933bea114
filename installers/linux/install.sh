#!/usr/bin/env bash
# Wan Desktop installer for Linux.
#
# Makes one isolated Python environment under PREFIX with the torch build that fits this machine
# (CUDA wheels chosen by the NVIDIA driver version, or the CPU build with --cpu), TensorRT for RTX
# when the GPU supports it, Wan Desktop itself (non-editable), a launcher PREFIX/bin/wan-desktop, a
# desktop entry and an icon. Re-running upgrades in place. Everything it creates is listed in
# PREFIX/install-manifest.txt, which uninstall.sh follows to remove exactly that.
#
# Usage: install.sh [--prefix DIR] [--cpu] [--source DIR] [--wheels DIR] [--python EXE]
#                   [--no-gui] [--no-desktop] [--no-link] [--dry-run] [-v] [-h]
#
# Environment (mostly for mirrors, offline machines and tests):
#   WAN_DESKTOP_PREFIX          default prefix (else ~/.local/opt/wan-desktop)
#   WAN_DESKTOP_XDG_DATA_HOME   where applications/wan-desktop.desktop goes (else $XDG_DATA_HOME,
#                               else ~/.local/share)
#   WAN_DESKTOP_BIN_DIR         where the wan-desktop command is linked (else ~/.local/bin)
#   WAN_DESKTOP_PIP_INDEX       package index for everything but torch (else pip's configuration)
#   WAN_DESKTOP_TORCH_INDEX     index for torch (else the PyTorch index of the chosen build, e.g.
#                               https://download.pytorch.org/whl/cpu); "pip" = pip's configuration
#   WAN_DESKTOP_TORCH_VERSION   torch version to pin (default 2.13.0)
#   WAN_DESKTOP_CUDA_CHOICES    "build:min_driver ..." newest first (default below)
#   WAN_DESKTOP_MIN_FREE_MB     free space needed in PREFIX (default 4000 CPU, 12000 GPU)
#
# Exit status: 0 ok, 2 usage, 3 no usable Python, 4 NVIDIA driver/GPU, 5 disk space, 6 network,
# 7 a package failed to install, 8 the installed app does not start. Each failure is one line
# "error: ..." on stderr.
set -Eeuo pipefail

TORCH_VERSION="${WAN_DESKTOP_TORCH_VERSION:-2.13.0}"
# PyTorch wheel builds and the minimum Linux driver of their CUDA toolkit (NVIDIA CUDA release
# notes: 13.0 GA >= 580.65.06, 12.8 GA >= 570.26, 12.6 GA >= 560.28.03). Keep in step with the
# builds published for TORCH_VERSION.
CUDA_CHOICES="${WAN_DESKTOP_CUDA_CHOICES:-cu130:580.65.06 cu128:570.26 cu126:560.28.03}"
OLDEST_CUDA=${CUDA_CHOICES##* }
MIN_DRIVER=${OLDEST_CUDA#*:}
# TensorRT for RTX engines load on these compute capabilities only (shared/FACTS.md, 1.7.1.116).
TRT_RTX_CCS="${WAN_DESKTOP_TRT_CCS:-8.0 8.6 8.7 8.9 12.0 12.1}"
TRT_RTX_SPEC=">=1.7,<2"
PYTORCH_INDEX="https://download.pytorch.org/whl"

die() { # die CODE MESSAGE
    local code=$1
    shift
    printf 'error: %s\n' "$*" >&2
    exit "$code"
}
say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }

usage() {
    sed -n '2,/^set -Eeuo/{/^set/d;s/^# \{0,1\}//;p}' "$0"
}

# ---------------------------------------------------------------------------------------------- args
PREFIX="${WAN_DESKTOP_PREFIX:-$HOME/.local/opt/wan-desktop}"
MODE=gpu
SOURCE=""
WHEELS=""
PYTHON_EXE="${WAN_DESKTOP_PYTHON:-}"
GUI=1
DESKTOP=1
LINK=1
DRY_RUN=0
VERBOSE=0

trap 'die 7 "unexpected failure at line $LINENO ($BASH_COMMAND); please report it"' ERR

need_arg() { if [ $# -lt 2 ] || [ -z "$2" ]; then die 2 "$1 needs a value (see --help)"; fi; }
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) need_arg "$@"; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --source) need_arg "$@"; SOURCE=$2; shift 2 ;;
        --source=*) SOURCE=${1#*=}; shift ;;
        --wheels) need_arg "$@"; WHEELS=$2; shift 2 ;;
        --wheels=*) WHEELS=${1#*=}; shift ;;
        --python) need_arg "$@"; PYTHON_EXE=$2; shift 2 ;;
        --python=*) PYTHON_EXE=${1#*=}; shift ;;
        --cpu) MODE=cpu; shift ;;
        --no-gui) GUI=0; shift ;;
        --no-desktop) DESKTOP=0; shift ;;
        --no-link) LINK=0; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -v | --verbose) VERBOSE=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die 2 "unknown option '$1' (see --help)" ;;
    esac
done

abspath() { # absolute path of a file or folder that may not exist yet
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/$1" ;;
    esac
}
PREFIX=$(abspath "${PREFIX%/}")
case "$PREFIX" in
    / | "$HOME" | /usr | /usr/local | /opt | /etc | /bin) die 2 "refusing to install into $PREFIX: give a dedicated folder, e.g. --prefix $HOME/.local/opt/wan-desktop" ;;
    *[\\\"\`\$]*) die 2 "the prefix must not contain a backslash, quote, backtick or dollar: $PREFIX" ;;
esac
XDG_DIR="${WAN_DESKTOP_XDG_DATA_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}}"
BIN_DIR="${WAN_DESKTOP_BIN_DIR:-$HOME/.local/bin}"
VENV="$PREFIX/venv"
MANIFEST="$PREFIX/install-manifest.txt"
LOG="$PREFIX/install.log"
HERE=$(cd "$(dirname "$0")" && pwd)

# ---------------------------------------------------------------------------------------- the source
if [ -z "$SOURCE" ] && [ -z "$WHEELS" ]; then
    SOURCE=$(cd "$HERE/../.." && pwd)
fi
if [ -n "$SOURCE" ]; then
    [ -d "$SOURCE" ] || die 2 "--source $SOURCE: no such folder"
    SOURCE=$(cd "$SOURCE" && pwd)
    grep -q '^name = "wan-desktop"' "$SOURCE/pyproject.toml" 2>/dev/null ||
        die 2 "--source $SOURCE is not a Wan Desktop checkout (no pyproject.toml naming wan-desktop)"
fi
if [ -n "$WHEELS" ]; then
    [ -d "$WHEELS" ] || die 2 "--wheels $WHEELS: no such folder"
    WHEELS=$(cd "$WHEELS" && pwd)
    if [ -z "$SOURCE" ] && ! compgen -G "$WHEELS/wan_desktop-*.whl" >/dev/null; then
        die 2 "--wheels $WHEELS has no wan_desktop-*.whl; add one (pip wheel . -w DIR) or give --source"
    fi
fi

# ---------------------------------------------------------------------------------------- disk space
if [ "$MODE" = cpu ]; then need_mb="${WAN_DESKTOP_MIN_FREE_MB:-4000}"; else need_mb="${WAN_DESKTOP_MIN_FREE_MB:-12000}"; fi
probe=$PREFIX
while [ ! -d "$probe" ]; do probe=$(dirname "$probe"); done
free_kb=$(df -Pk "$probe" 2>/dev/null | awk 'NR == 2 { print $4 }')
case "$free_kb" in '' | *[!0-9]*) die 5 "cannot tell the free space of $probe (df failed)" ;; esac
if [ $((free_kb / 1024)) -lt "$need_mb" ]; then
    die 5 "not enough disk space in $probe: $((free_kb / 1024)) MB free, the $MODE install needs about $need_mb MB; free some space or choose another --prefix"
fi

# -------------------------------------------------------------------------------------------- python
# A Python >= 3.10 with venv + ensurepip; else uv (which brings its own Python) if it is on PATH.
py_version() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null; }
py_ok() { # py_ok VERSION -> 0 when >= 3.10
    local major minor
    IFS=. read -r major minor _ <<<"$1"
    [ "${major:-0}" -gt 3 ] || { [ "${major:-0}" -eq 3 ] && [ "${minor:-0}" -ge 10 ]; }
}
PY=""
PY_VERSION=""
USE_UV=0
seen=""
if [ -n "$PYTHON_EXE" ]; then
    candidates=("$PYTHON_EXE")
else
    candidates=(python3.13 python3.12 python3.11 python3.10 python3 python)
fi
for c in "${candidates[@]}"; do
    exe=$(command -v "$c" 2>/dev/null) || continue
    v=$(py_version "$exe") || continue
    seen="${seen:+$seen, }$c is $v"
    if py_ok "$v"; then
        PY=$exe
        PY_VERSION=$v
        break
    fi
done
if [ -n "$PYTHON_EXE" ] && [ -z "$PY" ]; then
    die 3 "--python $PYTHON_EXE is not a usable Python >= 3.10 (${seen:-not found})"
fi
if [ -z "$PY" ]; then
    if command -v uv >/dev/null 2>&1; then
        USE_UV=1
        PY_VERSION="3.12 (provided by uv)"
    else
        die 3 "no Python >= 3.10 found (${seen:-no python3 on PATH}); install Python 3.10-3.13 (Debian/Ubuntu: sudo apt install python3 python3-venv) or uv (https://docs.astral.sh/uv/), then run this again"
    fi
elif ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if command -v uv >/dev/null 2>&1; then
        USE_UV=1
    else
        mm=${PY_VERSION%.*}
        die 3 "$PY (Python $PY_VERSION) cannot create environments: its venv/ensurepip module is missing; install it (Debian/Ubuntu: sudo apt install python$mm-venv) or install uv, then run this again"
    fi
fi

# ----------------------------------------------------------------------------------------- GPU check
GPU_NAME=""
GPU_CC=""
DRIVER=""
CUDA_BUILD=""
TRT=0
version_ge() { # version_ge A B -> A >= B, dotted numeric
    local IFS=.
    # shellcheck disable=SC2206
    local a=($1) b=($2) i
    for i in 0 1 2; do
        local x=$((10#${a[i]:-0})) y=$((10#${b[i]:-0}))
        [ "$x" -gt "$y" ] && return 0
        [ "$x" -lt "$y" ] && return 1
    done
    return 0
}
if [ "$MODE" = gpu ]; then
    command -v nvidia-smi >/dev/null 2>&1 ||
        die 4 "no NVIDIA driver found (nvidia-smi is not on PATH); install the NVIDIA driver (>= $MIN_DRIVER) and reboot, or run with --cpu for a CPU-only install"
    if ! smi=$(nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader 2>&1); then
        die 4 "the NVIDIA driver is installed but not working (nvidia-smi: $(printf '%s' "$smi" | head -n 1)); reboot after a driver update, or run with --cpu"
    fi
    IFS=, read -r GPU_NAME GPU_CC DRIVER <<<"$(printf '%s\n' "$smi" | head -n 1)"
    GPU_NAME=$(printf '%s' "$GPU_NAME" | sed 's/^ *//; s/ *$//')
    GPU_CC=$(printf '%s' "$GPU_CC" | tr -d ' ')
    DRIVER=$(printf '%s' "$DRIVER" | tr -d ' ')
    case "$GPU_CC.$DRIVER" in
        [0-9]*.[0-9]*.[0-9]*) ;;
        *) die 4 "could not read the GPU from nvidia-smi (got '$(printf '%s' "$smi" | head -n 1)'); run with --cpu, or report this output" ;;
    esac
    version_ge "$GPU_CC" 7.5 ||
        die 4 "$GPU_NAME (compute capability $GPU_CC) is too old: Wan Desktop needs an NVIDIA GPU of the Turing generation (7.5) or newer; run with --cpu to use the processor"
    for choice in $CUDA_CHOICES; do
        if version_ge "$DRIVER" "${choice#*:}"; then
            CUDA_BUILD=${choice%%:*}
            break
        fi
    done
    [ -n "$CUDA_BUILD" ] ||
        die 4 "NVIDIA driver $DRIVER is too old: Wan Desktop needs driver >= $MIN_DRIVER (PyTorch build ${OLDEST_CUDA%%:*}); update the driver (e.g. sudo ubuntu-drivers install) and reboot, or run with --cpu"
    # Blackwell (compute capability >= 10) has kernels only in CUDA >= 12.8 builds
    if version_ge "$GPU_CC" 10.0 && [ "$CUDA_BUILD" = cu126 ]; then
        die 4 "$GPU_NAME (compute capability $GPU_CC) needs a CUDA 12.8 build, which needs driver >= 570.26; driver $DRIVER is too old: update it and reboot, or run with --cpu"
    fi
    case " $TRT_RTX_CCS " in *" $GPU_CC "*) TRT=1 ;; esac
fi

TORCH_INDEX="${WAN_DESKTOP_TORCH_INDEX:-$PYTORCH_INDEX/${CUDA_BUILD:-cpu}}"
[ "$TORCH_INDEX" = pip ] && TORCH_INDEX=""
TRT_CU=cu12
case "$CUDA_BUILD" in cu13*) TRT_CU=cu13 ;; esac
TRT_PKGS=("tensorrt-rtx-$TRT_CU-libs$TRT_RTX_SPEC" "tensorrt-rtx-$TRT_CU-bindings$TRT_RTX_SPEC" "tensorrt_rtx_$TRT_CU$TRT_RTX_SPEC")
EXTRAS=""
[ "$GUI" = 1 ] && EXTRAS="[gui]"

if [ "$MODE" = gpu ]; then
    say "GPU: $GPU_NAME (compute capability $GPU_CC), driver $DRIVER -> torch $TORCH_VERSION $CUDA_BUILD"
    if [ "$TRT" = 1 ]; then say "TensorRT for RTX: ${TRT_PKGS[*]}"; else say "TensorRT for RTX: not supported on compute capability $GPU_CC; the PyTorch backend is used"; fi
else
    say "CPU-only install: torch $TORCH_VERSION (CPU build)"
fi
if [ "$USE_UV" = 1 ]; then say "Python: uv ($(command -v uv)), Python $PY_VERSION"; else say "Python: $PY ($PY_VERSION)"; fi
say "prefix: $PREFIX"
say "torch from: ${WHEELS:-${TORCH_INDEX:-pip configuration}}; other packages from: ${WHEELS:-${WAN_DESKTOP_PIP_INDEX:-pip configuration}}"

# ------------------------------------------------------------------------------------------- network
probe_url() { # probe_url PYTHON URL -> 0 when reachable; prints the reason otherwise
    "$1" - "$2" <<'EOF'
import sys, urllib.request
url = sys.argv[1]
if url.startswith("file:"):  # a local index (mirror on disk)
    import os, urllib.parse
    path = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
    sys.exit(0 if os.path.exists(path) else (print(f"no such folder: {path}") or 1))
try:
    with urllib.request.urlopen(url, timeout=20) as r:
        r.read(1)
except Exception as e:  # one line for the shell
    reason = getattr(e, "reason", None) or e
    print(f"{type(e).__name__}: {reason}".splitlines()[0])
    sys.exit(1)
EOF
}
effective_index() { # the index pip would use for non-torch packages
    if [ -n "${WAN_DESKTOP_PIP_INDEX:-}" ]; then printf '%s\n' "$WAN_DESKTOP_PIP_INDEX"; return; fi
    if [ -n "${PIP_INDEX_URL:-}" ]; then printf '%s\n' "$PIP_INDEX_URL"; return; fi
    local v
    if v=$("$1" -m pip config get global.index-url 2>/dev/null) && [ -n "$v" ]; then printf '%s\n' "$v"; return; fi
    printf '%s\n' "https://pypi.org/simple"
}
check_network() { # check_network PYTHON
    [ -n "$WHEELS" ] && return 0
    local idx why
    idx=$(effective_index "$1")
    if ! why=$(probe_url "$1" "${idx%/}/pip/"); then
        die 6 "cannot reach the package index $idx ($why); check the network or proxy (HTTPS_PROXY), set WAN_DESKTOP_PIP_INDEX to a mirror, or install offline with --wheels DIR"
    fi
    if [ -n "$TORCH_INDEX" ] && ! why=$(probe_url "$1" "${TORCH_INDEX%/}/torch/"); then
        die 6 "cannot reach the PyTorch index $TORCH_INDEX ($why); check the network or proxy, set WAN_DESKTOP_TORCH_INDEX to a mirror, or install offline with --wheels DIR"
    fi
}
if [ "$USE_UV" = 0 ]; then check_network "$PY"; fi

if [ "$DRY_RUN" = 1 ]; then
    say "dry run: all checks passed; nothing was installed"
    exit 0
fi

# ------------------------------------------------------------------------------------------ manifest
mkdir -p "$PREFIX"
record() { # record f|d|l PATH: remember what we created, once
    [ -f "$MANIFEST" ] || printf '# Wan Desktop install manifest v1: f=file d=folder l=symlink\n' >"$MANIFEST"
    grep -qxF "$1 $2" "$MANIFEST" || printf '%s %s\n' "$1" "$2" >>"$MANIFEST"
}
record f "$MANIFEST"
record f "$LOG"
# the uninstaller goes in first, so even a failed install can be undone
cp "$HERE/uninstall.sh" "$PREFIX/uninstall.sh"
chmod 755 "$PREFIX/uninstall.sh"
record f "$PREFIX/uninstall.sh"
printf '\n=== %s install.sh %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$MODE" >>"$LOG"

fail_step() { # classify a failed pip run from its log
    local what=$1 tail
    tail=$(tail -n 40 "$LOG")
    if grep -qiE 'No space left on device' <<<"$tail"; then
        die 5 "ran out of disk space while $what; free some space and run this again (details: $LOG)"
    elif grep -qiE 'NewConnectionError|Max retries exceeded|Temporary failure in name resolution|Name or service not known|Connection refused|Network is unreachable|timed out|ProxyError|SSLError' <<<"$tail"; then
        die 6 "network error while $what; check the connection and run this again (details: $LOG)"
    elif line=$(grep -m1 -iE 'No matching distribution found for|Could not find a version that satisfies' <<<"$tail"); then
        die 7 "no matching package while $what: ${line#ERROR: } (details: $LOG)"
    fi
    die 7 "$what failed (details: $LOG)"
}
run_logged() { # run_logged "what" cmd...
    local what=$1
    shift
    printf '$ %s\n' "$*" >>"$LOG"
    if [ "$VERBOSE" = 1 ]; then
        "$@" 2>&1 | tee -a "$LOG" || fail_step "$what"
    else
        "$@" >>"$LOG" 2>&1 || fail_step "$what"
    fi
}

# ------------------------------------------------------------------------------------- environment
VPY="$VENV/bin/python"
if [ -x "$VPY" ] && py_ok "$(py_version "$VPY" || echo 0)" && "$VPY" -m pip --version >/dev/null 2>&1; then
    say "upgrading the existing environment in $VENV"
else
    rm -rf "$VENV"
    say "creating the Python environment in $VENV"
    if [ "$USE_UV" = 1 ]; then
        if [ -n "$PY" ]; then uvpy=$PY; else uvpy=3.12; fi
        run_logged "creating the environment with uv" uv venv --seed --python "$uvpy" "$VENV"
    else
        run_logged "creating the environment" "$PY" -m venv "$VENV"
    fi
fi
record d "$VENV"
if [ "$USE_UV" = 1 ]; then check_network "$VPY"; fi

PIP=("$VPY" -m pip install --disable-pip-version-check --no-input --progress-bar off)
if [ -n "$WHEELS" ]; then
    DEPS_IDX=(--no-index --find-links "$WHEELS")
    TORCH_IDX=("${DEPS_IDX[@]}")
else
    DEPS_IDX=()
    [ -n "${WAN_DESKTOP_PIP_INDEX:-}" ] && DEPS_IDX=(--index-url "$WAN_DESKTOP_PIP_INDEX")
    TORCH_IDX=()
    [ -n "$TORCH_INDEX" ] && TORCH_IDX=(--index-url "$TORCH_INDEX")
fi

# torch first, from its own index, pinned: the project's loose "torch>=..." then never pulls another
# build (an unpinned torch from PyPI is a multi-GB CUDA build on Linux).
have_torch=$("$VPY" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)
want_local=""
if [ -n "$TORCH_INDEX" ]; then want_local="+${CUDA_BUILD:-cpu}"; fi
if [ "${have_torch%%+*}" = "$TORCH_VERSION" ] && { [ -z "$want_local" ] || [ "$have_torch" = "$TORCH_VERSION$want_local" ]; }; then
    say "torch $have_torch already installed"
else
    if [ "$MODE" = gpu ]; then say "installing torch $TORCH_VERSION $CUDA_BUILD (downloads about 3 GB)"; else say "installing torch $TORCH_VERSION (CPU build)"; fi
    if [ -n "$have_torch" ]; then # another build (CPU <-> CUDA): pip would keep it as "satisfied"
        run_logged "removing torch $have_torch" "$VPY" -m pip uninstall -y torch
    fi
    run_logged "installing torch $TORCH_VERSION" "${PIP[@]}" "${TORCH_IDX[@]}" "torch==$TORCH_VERSION"
fi

if [ "$MODE" = gpu ] && [ "$TRT" = 1 ]; then
    say "installing TensorRT for RTX ($TRT_CU)"
    if ! "${PIP[@]}" "${DEPS_IDX[@]}" "${TRT_PKGS[@]}" >>"$LOG" 2>&1; then
        warn "TensorRT for RTX could not be installed (see $LOG); Wan Desktop runs with the PyTorch backend"
        TRT=0
    fi
fi

# Wan Desktop itself, from a clean copy of the source (building in place would leave build/ and
# *.egg-info in the checkout), or from the wheel in --wheels.
if [ -n "$SOURCE" ]; then
    STAGE=$(mktemp -d "${TMPDIR:-/tmp}/wan-desktop-src.XXXXXX")
    trap 'rm -rf "$STAGE"' EXIT
    tar -C "$SOURCE" --exclude=./.git --exclude=./.venv --exclude='*.egg-info' --exclude=./build \
        --exclude=./dist --exclude='__pycache__' --exclude=./.pytest_cache --exclude=./.ruff_cache \
        --exclude=./installers --exclude=./tests -cf - . | tar -C "$STAGE" -xf -
    TARGET="$STAGE$EXTRAS"
else
    TARGET="wan-desktop$EXTRAS"
fi
say "installing Wan Desktop from ${SOURCE:-$WHEELS}"
run_logged "installing Wan Desktop and its dependencies" "${PIP[@]}" "${DEPS_IDX[@]}" "$TARGET" "torch==$TORCH_VERSION"

# ------------------------------------------------------------------------------------- launcher etc.
mkdir -p "$PREFIX/bin"
cat >"$PREFIX/bin/wan-desktop" <<EOF
#!/bin/sh
# Wan Desktop launcher (written by install.sh; removed by uninstall.sh)
exec "$VENV/bin/wan-desktop" "\$@"
EOF
chmod 755 "$PREFIX/bin/wan-desktop"
record f "$PREFIX/bin/wan-desktop"

ICON_DIR="$PREFIX/share/icons"
mkdir -p "$ICON_DIR"
cp "$HERE/wan-desktop.svg" "$ICON_DIR/wan-desktop.svg"
record f "$ICON_DIR/wan-desktop.svg"
if [ -f "$HERE/wan-desktop.png" ]; then
    cp "$HERE/wan-desktop.png" "$ICON_DIR/wan-desktop.png"
    record f "$ICON_DIR/wan-desktop.png"
fi

if [ "$DESKTOP" = 1 ]; then
    APPS="$XDG_DIR/applications"
    mkdir -p "$APPS"
    # the prefix has no characters that need escaping (checked above); quoting keeps spaces
    entry=$(<"$HERE/wan-desktop.desktop")
    entry=${entry//@EXEC@/"\"$PREFIX/bin/wan-desktop\""}
    entry=${entry//@TRYEXEC@/"$PREFIX/bin/wan-desktop"}
    entry=${entry//@ICON@/"$ICON_DIR/wan-desktop.svg"}
    printf '%s\n' "$entry" >"$APPS/wan-desktop.desktop"
    chmod 644 "$APPS/wan-desktop.desktop"
    record f "$APPS/wan-desktop.desktop"
    if command -v desktop-file-validate >/dev/null 2>&1; then
        desktop-file-validate "$APPS/wan-desktop.desktop" >>"$LOG" 2>&1 || warn "the desktop entry has warnings (see $LOG)"
    fi
fi

if [ "$LINK" = 1 ]; then
    link="$BIN_DIR/wan-desktop"
    if [ -e "$link" ] && ! [ -L "$link" ]; then
        warn "$link exists and is not ours; not replacing it (run $PREFIX/bin/wan-desktop)"
    else
        mkdir -p "$BIN_DIR"
        ln -sfn "$PREFIX/bin/wan-desktop" "$link"
        record l "$link"
        case ":$PATH:" in *":$BIN_DIR:"*) ;; *) warn "$BIN_DIR is not on PATH; run $PREFIX/bin/wan-desktop or add it to PATH" ;; esac
    fi
fi

# ------------------------------------------------------------------------------------- smoke check
if ! version=$("$PREFIX/bin/wan-desktop" --version 2>>"$LOG"); then
    die 8 "Wan Desktop was installed but does not start ('wan-desktop --version' failed; details: $LOG)"
fi
torch_info=$("$VPY" -c 'import torch; print(torch.__version__, torch.cuda.is_available())' 2>>"$LOG") ||
    die 8 "torch was installed but cannot be imported (details: $LOG)"
if [ "$MODE" = gpu ] && [ "${torch_info##* }" != True ]; then
    warn "torch ${torch_info% *} does not see the GPU (CUDA unavailable); generation will run on the CPU until this is fixed (see $LOG)"
fi

WD_VERSION=$version WD_MODE=$MODE WD_TORCH=${torch_info% *} WD_TORCH_INDEX=${WHEELS:-${TORCH_INDEX:-pip}} \
    WD_CUDA=$CUDA_BUILD WD_GPU=$GPU_NAME WD_CC=$GPU_CC WD_DRIVER=$DRIVER WD_TRT=$TRT \
    WD_SOURCE=${SOURCE:-$WHEELS} "$VPY" - "$PREFIX/install-info.json" <<'EOF'
import datetime, json, os, platform, sys
e = os.environ
json.dump({
    "version": e["WD_VERSION"], "mode": e["WD_MODE"], "torch": e["WD_TORCH"],
    "torch_index": e["WD_TORCH_INDEX"], "cuda_build": e["WD_CUDA"], "gpu": e["WD_GPU"],
    "compute_capability": e["WD_CC"], "driver": e["WD_DRIVER"], "tensorrt_rtx": e["WD_TRT"] == "1",
    "python": platform.python_version(), "source": e["WD_SOURCE"],
    "installed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
}, open(sys.argv[1], "w"), indent=1)
EOF
record f "$PREFIX/install-info.json"

say "installed $version in $PREFIX (torch ${torch_info% *})"
say "run: $PREFIX/bin/wan-desktop   (uninstall: $PREFIX/uninstall.sh)"
