#!/usr/bin/env bash
# install-deps.sh — install what rlrun needs to build and test, and nothing else.
#
# Idempotent and non-interactive: every step first checks whether its part is
# already present, so a second run does no network work and takes about a second.
#   scripts/install-deps.sh           install what is missing
#   scripts/install-deps.sh --check   report what is missing, install nothing (exit 1 if any)
set -euo pipefail

check_only=0
[ "${1:-}" = "--check" ] && check_only=1

# Debian packages: C toolchain, the four libraries rlrun links statically,
# clang (libFuzzer targets, `make fuzz`) and GNU time (peak-memory tests).
apt_pkgs=(build-essential pkg-config time libyaml-dev libsqlite3-dev liblua5.4-dev libjansson-dev clang)
# Python test oracles (never runtime dependencies of rlrun itself).
py_mods=(numpy ml_dtypes safetensors)

missing_apt=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing_apt+=("$p")
done

PY=${PYTHON:-python3}
missing_py=()
for m in "${py_mods[@]}"; do
  "$PY" -c "import $m" >/dev/null 2>&1 || missing_py+=("$m")
done

if [ $check_only = 1 ]; then
  [ ${#missing_apt[@]} -eq 0 ] && [ ${#missing_py[@]} -eq 0 ] && { echo "install-deps: all present"; exit 0; }
  echo "install-deps: missing apt: ${missing_apt[*]:-none}; missing python: ${missing_py[*]:-none}"
  exit 1
fi

SUDO=
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 && SUDO=sudo || { echo "install-deps: not root and no sudo; install as root: ${missing_apt[*]}" >&2; exit 1; }
fi

if [ ${#missing_apt[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing_apt[@]}"
fi

if [ ${#missing_py[@]} -gt 0 ]; then
  echo "install-deps: pip install ${missing_py[*]}"
  "$PY" -m pip install -q --disable-pip-version-check "${missing_py[@]}"
fi

# Confirm the static archives the Makefile links are really there.
for a in libyaml.a libsqlite3.a liblua5.4.a libjansson.a; do
  f=$(gcc -print-file-name=$a)
  [ -f "$f" ] || { echo "install-deps: $a not found after install" >&2; exit 1; }
done
echo "install-deps: all present"
