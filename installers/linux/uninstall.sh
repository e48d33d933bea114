#!/usr/bin/env bash
# Wan Desktop uninstaller for Linux: removes exactly what install.sh listed in
# PREFIX/install-manifest.txt (the environment, launcher, icon, desktop entry, command link) and then
# the folders of PREFIX that became empty. Files you added, and the downloaded models (in
# $WAN_DESKTOP_MODELS or ~/.local/share/wan-desktop/models), are kept.
#
# Usage: uninstall.sh [--prefix DIR] [-h]
#   (PREFIX/uninstall.sh, the copy install.sh leaves, knows its prefix.)
#
# Exit status: 0 ok, 2 usage or nothing installed there. A manifest line that points outside what
# install.sh may create is skipped with a warning, never followed.
set -Eeuo pipefail

die() {
    local code=$1
    shift
    printf 'error: %s\n' "$*" >&2
    exit "$code"
}
warn() { printf 'warning: %s\n' "$*" >&2; }

HERE=$(cd "$(dirname "$0")" && pwd)
if [ -f "$HERE/install-manifest.txt" ]; then
    PREFIX=$HERE
else
    PREFIX="${WAN_DESKTOP_PREFIX:-$HOME/.local/opt/wan-desktop}"
fi
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix)
            [ $# -ge 2 ] || die 2 "--prefix needs a value"
            PREFIX=$2
            shift 2
            ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        -h | --help) sed -n '2,/^set -Eeuo/{/^set/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) die 2 "unknown option '$1' (see --help)" ;;
    esac
done
[ -d "$PREFIX" ] || die 2 "nothing to uninstall: $PREFIX does not exist"
PREFIX=$(cd "$PREFIX" && pwd)
MANIFEST="$PREFIX/install-manifest.txt"
[ -f "$MANIFEST" ] || die 2 "nothing to uninstall in $PREFIX: no install-manifest.txt (was Wan Desktop installed there?)"

inside() { case "$1" in "$PREFIX"/*) return 0 ;; *) return 1 ;; esac; }
removed=0
last=()
while read -r kind path; do
    case "$kind" in '' | '#'*) continue ;; esac
    case "$path" in
        /*) ;;
        *) warn "skipping '$kind $path': not an absolute path"; continue ;;
    esac
    case "$path" in *'/../'* | *'/..') warn "skipping $path: contains '..'"; continue ;; esac
    case "$kind" in
        d)
            if ! inside "$path"; then warn "skipping folder $path: outside $PREFIX"; continue; fi
            if [ -d "$path" ]; then rm -rf -- "$path"; removed=$((removed + 1)); fi
            ;;
        f)
            # files outside the prefix: only the desktop entry install.sh writes
            if ! inside "$path" && [ "${path##*/}" != wan-desktop.desktop ]; then
                warn "skipping $path: outside $PREFIX"
                continue
            fi
            if [ "$path" = "$MANIFEST" ] || [ "$path" = "$PREFIX/uninstall.sh" ]; then
                last+=("$path") # at the end, so a failure above leaves a usable uninstaller
                continue
            fi
            if [ -f "$path" ] || [ -L "$path" ]; then rm -f -- "$path"; removed=$((removed + 1)); fi
            ;;
        l)
            # the command link: only if it still points at our launcher
            if [ -L "$path" ] && [ "$(readlink "$path")" = "$PREFIX/bin/wan-desktop" ]; then
                rm -f -- "$path"
                removed=$((removed + 1))
            elif [ -e "$path" ] || [ -L "$path" ]; then
                warn "keeping $path: it no longer points at $PREFIX/bin/wan-desktop"
            fi
            ;;
        *) warn "skipping unknown manifest line '$kind $path'" ;;
    esac
done < <(cat -- "$MANIFEST")

for path in "${last[@]}"; do
    rm -f -- "$path"
    removed=$((removed + 1))
done

# folders install.sh made, if now empty (never anything else)
for d in "$PREFIX/share/icons" "$PREFIX/share" "$PREFIX/bin" "$PREFIX"; do
    if [ -d "$d" ]; then rmdir -- "$d" 2>/dev/null || true; fi
done

printf '==> removed %d installed items from %s\n' "$removed" "$PREFIX"
if [ -d "$PREFIX" ]; then
    printf '==> kept %s: it holds files Wan Desktop did not install\n' "$PREFIX"
fi
models="${WAN_DESKTOP_MODELS:-${XDG_DATA_HOME:-$HOME/.local/share}/wan-desktop/models}"
if [ -d "$models" ]; then
    printf '==> downloaded models were kept in %s (delete that folder to free the space)\n' "$models"
fi
