#!/usr/bin/env bash
# Create (or refresh) the course's Python 3.11 virtual environment in .venv/ and make the
# offline Fashion-MNIST dataset available. Idempotent: with nothing changed it returns in seconds.
#
# Why not `pip install -r requirements.txt`? tensorflow-federated 0.87.0 (the newest release)
# pins jaxlib==0.4.14, which PyPI no longer has, so pip cannot resolve it anywhere. We install with
# uv and the overrides in requirements-overrides.txt (jax/jaxlib 0.4.13, a newer typing-extensions
# for the Jupyter stack, setuptools<81 for tensorboard), from the exact pins in requirements-lock.txt.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
UV_VERSION="0.13.8"
cd "$ROOT"

log() { printf '[setup] %s\n' "$*"; }

find_python311() {
  local candidates=("${PYTHON311:-}" python3.11)
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)/versions/3.11"*/bin/python3.11)
  fi
  candidates+=(/usr/bin/python3.11 /usr/local/bin/python3.11 python3)
  for c in "${candidates[@]}"; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && \
       "$c" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  if command -v uv >/dev/null 2>&1; then
    uv python find 3.11 2>/dev/null && return 0
  fi
  return 1
}

# ---- 1. the dataset (Debian's dataset-fashion-mnist; Keras reads the same four files) -----------
ensure_dataset() {
  local dir=/usr/share/datasets/fashion-mnist
  if [ -f "$dir/train-images-idx3-ubyte.gz" ]; then
    return 0
  fi
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing the offline Fashion-MNIST dataset (apt-get install dataset-fashion-mnist, ~31 MB)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
        log "WARNING: apt-get could not install dataset-fashion-mnist; the course will try Keras's download."
    fi
  else
    log "NOTE: the offline dataset is missing and apt-get is not usable here (not root or no apt)."
    log "      Either run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or be online:"
    log "      Keras then downloads Fashion-MNIST into ~/.keras/datasets on first use."
  fi
}
ensure_dataset

# ---- 2. the virtual environment ----------------------------------------------------------------
STAMP="$VENV/.course-stamp"
want_stamp="$(cat requirements-lock.txt requirements-overrides.txt "$0" scripts/compile_bytecode.sh | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ]; then
  log ".venv is up to date ($($VENV/bin/python --version))"
  exit 0
fi

if ! PY311="$(find_python311)"; then
  log "No Python 3.11 found. TensorFlow Federated 0.87 (the newest release) needs Python 3.9-3.11."
  if command -v uv >/dev/null 2>&1 || python3 -m pip install -q --user "uv==$UV_VERSION" 2>/dev/null; then
    log "trying: uv python install 3.11"
    UVBIN="$(command -v uv || echo "$HOME/.local/bin/uv")"
    if "$UVBIN" python install 3.11; then PY311="$("$UVBIN" python find 3.11)"; fi
  fi
  if [ -z "${PY311:-}" ]; then
    log "ERROR: install Python 3.11 (pyenv install 3.11, 'uv python install 3.11', or your OS package)"
    log "       and re-run 'make setup', or point PYTHON311=/path/to/python3.11 at it."
    exit 1
  fi
fi
log "using $PY311 ($("$PY311" --version))"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(0 if sys.version_info[:2]==(3,11) else 1)'; then
  rm -rf "$VENV"
  "$PY311" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION" 2>&1 | grep -v '^WARNING: Location' || true
log "installing the pinned stack (requirements-lock.txt with requirements-overrides.txt)"
# uv pip sync removes anything not in the lock, so a re-run always lands on exactly the same set.
"$VENV/bin/uv" pip sync --python "$VENV/bin/python" -q requirements-lock.txt
"$VENV/bin/uv" pip install --python "$VENV/bin/python" -q "uv==$UV_VERSION"
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (course .venv)" >/dev/null
log "compiling the installed packages to bytecode (once; later runs only check)"
bash scripts/compile_bytecode.sh "$VENV"
echo "$want_stamp" > "$STAMP"
log "done: $("$VENV/bin/python" -c 'import tensorflow as tf; print("TensorFlow", tf.__version__)' 2>/dev/null)"
