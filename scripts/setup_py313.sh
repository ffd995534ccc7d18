#!/usr/bin/env bash
# Create (or refresh) .venv313/: Python 3.13 with the newest TensorFlow from PyPI (Keras 3), a
# stand-in for Google Colab's default runtime. The course's non-TFF code (data_utils and the
# notebooks that do not need TensorFlow Federated) is tested there too (`make test-py313`), and
# the TFF notebooks' training is run from there through the side-environment runner
# (data_utils/sidecar.py), which starts it in the Python 3.11 stack of .venv/.
#
# Idempotent: with nothing changed it returns in about a second. TensorFlow is not pinned here on
# purpose (the point is "today's TensorFlow"); it is fixed at the first build. To take a newer
# release: rm -rf .venv313 && make py313.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV313:-$ROOT/.venv313}"
UV_VERSION="0.13.8"
# tensorflow-cpu: the same TensorFlow without the CUDA libraries (about 250 MB instead of 600 MB).
# dp-accounting: data_utils.privacy; ipywidgets: tqdm's notebook progress bars, as in Colab.
# flwr: Flower, notebook 10's networked clients (data_utils/flower_fl.py). It cannot live in .venv
# (its grpcio >= 1.70 / protobuf >= 5.28 exclude TFF 0.87's TensorFlow 2.14); pinned because its
# CLI flags and app API change between releases. 1.42.0 brings protobuf 6.33 (TensorFlow 2.21
# accepts >= 6.31.1, < 8) and grpcio >= 1.70 (checked with uv pip install --dry-run, 2026-11-30).
PACKAGES=(tensorflow-cpu dp-accounting matplotlib scikit-learn tqdm ipywidgets papermill nbval ipykernel
          pytest pytest-xdist hypothesis "flwr==1.42.0")
cd "$ROOT"
# Colab-style constraints (or a user's) would pin TensorFlow to something else.
unset UV_CONSTRAINT UV_BUILD_CONSTRAINT PIP_CONSTRAINT

log() { printf '[setup-py313] %s\n' "$*"; }

STAMP="$VENV/.course-stamp"
want_stamp="$( { cat "$0" "$ROOT/scripts/compile_bytecode.sh"; printf '%s\n' "${PACKAGES[@]}"; } | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ]; then
  log ".venv313 is up to date ($("$VENV/bin/python" --version), $(cat "$VENV/.course-tf-version" 2>/dev/null))"
  exit 0
fi

find_python313() {
  local candidates=("${PYTHON313:-}")
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)/versions/3.13.0/bin/python3" "$(pyenv root)/versions/3.13"*/bin/python3)
  fi
  candidates+=(python3.13 /usr/bin/python3.13 /usr/local/bin/python3.13)
  for c in "${candidates[@]}"; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && \
       "$c" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 13) else 1)' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

find_uv() {
  if [ -x "$ROOT/.venv/bin/uv" ]; then echo "$ROOT/.venv/bin/uv"; return 0; fi
  return 1
}

if ! PY313="$(find_python313)"; then
  log "no Python 3.13 found (pyenv's 3.13.0, python3.13); trying: uv python install 3.13"
  UVBIN="$(find_uv)" || { python3 -m pip install -q --user "uv==$UV_VERSION" && UVBIN="$HOME/.local/bin/uv"; } || true
  if [ -n "${UVBIN:-}" ] && "$UVBIN" python install 3.13; then PY313="$("$UVBIN" python find 3.13)"; fi
  if [ -z "${PY313:-}" ]; then
    log "ERROR: install Python 3.13 (pyenv install 3.13.0, 'uv python install 3.13', or your OS"
    log "       package) and re-run, or point PYTHON313=/path/to/python3.13 at it."
    exit 1
  fi
fi
log "using $PY313 ($("$PY313" --version))"

if [ ! -x "$VENV/bin/python" ] || \
   ! "$VENV/bin/python" -c 'import sys; sys.exit(0 if sys.version_info[:2]==(3,13) else 1)' 2>/dev/null; then
  rm -rf "$VENV"
  "$PY313" -m venv "$VENV"
fi
if ! UVBIN="$(find_uv)"; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
  UVBIN="$VENV/bin/uv"
fi
log "installing ${PACKAGES[*]} (newest releases)"
"$UVBIN" pip install --python "$VENV/bin/python" -q "${PACKAGES[@]}"
log "compiling the installed packages to bytecode (once; later runs only check)"
bash "$ROOT/scripts/compile_bytecode.sh" "$VENV"
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 \
  --display-name "Python 3.13 (course .venv313, Keras 3)" >/dev/null
tf_version="$("$VENV/bin/python" -c 'from importlib.metadata import version as v
print("TensorFlow", v("tensorflow-cpu") + ", Keras", v("keras"))')"
echo "$tf_version" > "$VENV/.course-tf-version"
echo "$want_stamp" > "$STAMP"
log "done: $tf_version"
