#!/usr/bin/env bash
# install-deps.sh — install what rlrun needs to build and test, and nothing else.
#
# Idempotent and non-interactive: every step first checks whether its part is
# already present, so a second run does no network work and takes about a second.
#   scripts/install-deps.sh                     install what is missing (exit 1 if any part failed)
#   scripts/install-deps.sh --check             report what is missing, install nothing (exit 1 if any)
#   scripts/install-deps.sh --oracles           only the Python test oracles (`make test` runs this)
#   scripts/install-deps.sh --oracles-optional  everything, but failing to get the Python oracles is
#                                               a warning, not an error (`make run` runs this)
#   scripts/install-deps.sh --python            print the Python that runs the oracle tests
#
# The Python test oracles (numpy, ml_dtypes, safetensors, tokenizers) are never runtime
# dependencies of rlrun. They are used from $PYTHON (default python3) when it
# already has them; otherwise they go into a project-local venv, .venv-oracles/
# (RLRUN_ORACLE_VENV), made from $PYTHON, so pip never touches the system
# Python — Debian 12's is externally managed (PEP 668) and refuses `pip install`.
# Once the venv exists it is the oracles' Python (`--python` prints it; the
# Makefile and the C tests use it); delete it to go back to $PYTHON.
set -euo pipefail

mode=install
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  --oracles) mode=oracles ;;
  --oracles-optional) mode=optional ;;
  --python) mode=python ;;
  *) echo "install-deps: unknown option '$1' (use --check, --oracles, --oracles-optional or --python)" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${RLRUN_ORACLE_VENV:-$root/.venv-oracles}
BASE_PY=${PYTHON:-python3}

# The interpreter the oracle tests run with.
oracle_py() {
  if [ -x "$VENV/bin/python3" ]; then echo "$VENV/bin/python3"
  else command -v "$BASE_PY" 2>/dev/null || echo "$BASE_PY"; fi
}
if [ $mode = python ]; then oracle_py; exit 0; fi

# Debian packages: C toolchain, the four libraries rlrun links statically,
# clang (libFuzzer targets, `make fuzz`) and GNU time (peak-memory tests).
apt_pkgs=(build-essential pkg-config time libyaml-dev libsqlite3-dev liblua5.4-dev libjansson-dev clang)
# Python test oracles (never runtime dependencies of rlrun itself).
py_mods=(numpy ml_dtypes safetensors tokenizers)

apt_missing() {  # the packages of "$@" that dpkg does not have installed
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
py_missing() {  # the oracle modules interpreter $1 cannot import
  local m
  for m in "${py_mods[@]}"; do
    "$1" -c "import $m" >/dev/null 2>&1 || echo "$m"
  done
}

apt_updated=0
apt_install() {
  local sudo=
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo=sudo
    else echo "install-deps: not root and no sudo; install as root: apt-get install $*" >&2; return 1; fi
  fi
  echo "install-deps: apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  if [ $apt_updated = 0 ]; then $sudo apt-get update -qq && apt_updated=1 || return 1; fi
  $sudo apt-get install -y -qq --no-install-recommends "$@"
}

oracle_fail() {
  echo "install-deps: could not install the Python test oracles (${py_mods[*]}): $1." >&2
  echo "install-deps: rlrun itself does not need them; \`make test\` does. Fix the above and run scripts/install-deps.sh --oracles," >&2
  echo "install-deps: or point PYTHON at a Python that has them (and remove $VENV if it exists)." >&2
  return 1
}

# The Python oracles: present in the oracles' Python, else into the project venv.
install_oracles() {
  local missing
  missing=$(py_missing "$(oracle_py)")
  [ -z "$missing" ] && return 0
  if [ ! -x "$VENV/bin/python3" ] || ! "$VENV/bin/python3" -m pip --version >/dev/null 2>&1; then
    # Debian's python3 makes venvs only with python3-venv (ensurepip); it brings python3 too.
    if ! "$BASE_PY" -c "import ensurepip, venv" >/dev/null 2>&1 && [ -n "$(apt_missing python3-venv)" ] &&
       command -v apt-get >/dev/null 2>&1; then
      apt_install python3-venv || { oracle_fail "apt-get install python3-venv failed"; return 1; }
    fi
    command -v "$BASE_PY" >/dev/null 2>&1 || { oracle_fail "no Python interpreter '$BASE_PY' (set PYTHON)"; return 1; }
    echo "install-deps: python venv $VENV (from $BASE_PY)"
    rm -rf "$VENV"
    if ! "$BASE_PY" -m venv "$VENV"; then
      rm -rf "$VENV"
      oracle_fail "'$BASE_PY -m venv $VENV' failed (on Debian/Ubuntu: apt-get install python3-venv)"
      return 1
    fi
  fi
  echo "install-deps: pip install ${py_mods[*]} into $VENV"
  "$VENV/bin/python3" -m pip install -q --disable-pip-version-check "${py_mods[@]}" ||
    { oracle_fail "pip install into $VENV failed (network? see pip's message above)"; return 1; }
  missing=$(py_missing "$VENV/bin/python3")
  [ -z "$missing" ] || { oracle_fail "still missing after pip install: ${missing//$'\n'/ }"; return 1; }
}

if [ $mode = oracles ]; then install_oracles; exit $?; fi

missing_apt=$(apt_missing "${apt_pkgs[@]}")
missing_py=$(py_missing "$(oracle_py)")

if [ $mode = check ]; then
  [ -z "$missing_apt" ] && [ -z "$missing_py" ] && { echo "install-deps: all present"; exit 0; }
  missing_apt=${missing_apt//$'\n'/ } missing_py=${missing_py//$'\n'/ }
  echo "install-deps: missing apt: ${missing_apt:-none}; missing python ($(oracle_py)): ${missing_py:-none}"
  exit 1
fi

if [ -n "$missing_apt" ]; then
  # shellcheck disable=SC2086  # one package name a line
  apt_install $missing_apt || { echo "install-deps: apt-get install failed" >&2; exit 1; }
fi

# Confirm the static archives the Makefile links are really there.
for a in libyaml.a libsqlite3.a liblua5.4.a libjansson.a; do
  f=$(gcc -print-file-name=$a)
  [ -f "$f" ] || { echo "install-deps: $a not found after install" >&2; exit 1; }
done

if ! install_oracles; then
  if [ $mode = optional ]; then
    echo "install-deps: warning: build dependencies present, Python test oracles missing (only \`make test\` needs them)" >&2
    exit 0
  fi
  exit 1
fi
echo "install-deps: all present"
