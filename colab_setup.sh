#!/usr/bin/env bash
# Make a Google Colab runtime ready for this course. Every notebook's setup cell runs it (in Colab
# only); running it again is safe and quick.
#
#   Python 3.11 runtime (Runtime -> Change runtime type -> Runtime version 2025.07):
#       installs the course's pinned stack (TensorFlow 2.14, TFF 0.87) into the runtime's Python,
#       with the same uv + requirements-lock.txt/requirements-overrides.txt as `make setup`.
#   Python 3.12/3.13 (Colab's default runtime, TensorFlow with Keras 3):
#       leaves Colab's TensorFlow alone; for a notebook that needs TFF it builds a Python 3.11
#       side environment (`uv python install 3.11` + the pinned lock) in /content/tff-venv, where
#       data_utils.sidecar runs the TFF work.
#   Anything else: says exactly what to click.
#
# Exit codes: 0 ready; 1 this runtime cannot run the course (the message says what to do);
#             2 ready except TFF (the side environment could not be built);
#             3 ready after a restart (an install replaced a package the kernel had loaded).
# Environment (the setup cell sets them): COURSE_PYTHON (the kernel's interpreter, default
# python3), COURSE_NEEDS_TFF (1/0, default 1), COURSE_LOADED_MODULES (the kernel's loaded
# top-level modules, comma-separated), COURSE_SIDE_VENV (default /content/tff-venv).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${COURSE_PYTHON:-python3}"
NEEDS_TFF="${COURSE_NEEDS_TFF:-1}"
SIDE_VENV="${COURSE_SIDE_VENV:-/content/tff-venv}"
UV_VERSION="0.13.8"
CLICK="Runtime -> Change runtime type -> Runtime version 2025.07 (Python 3.11), then Runtime -> Run all"
# Colab sets these to pin its own packages; they would fight the course's pins.
unset UV_CONSTRAINT UV_BUILD_CONSTRAINT PIP_CONSTRAINT

say() { printf '[colab_setup] %s\n' "$*"; }
# The kernel's PYTHONPATH (Colab sets one) belongs to the kernel's Python, not to the side one.
side() { env -u PYTHONPATH "$@"; }

# uv: Colab preinstalls it on PATH; elsewhere pip (which Colab also has) installs it.
find_uv() {
  if command -v uv >/dev/null 2>&1; then command -v uv; return 0; fi
  "$PY" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION" >/dev/null 2>&1 || return 1
  "$PY" -c 'import uv, sys; sys.stdout.write(uv.find_uv_bin())'
}
# What to tell the learner when find_uv failed: which of the two installers is missing.
no_uv_message() {
  if "$PY" -m pip --version >/dev/null 2>&1; then
    say "ERROR: uv is not on PATH and 'pip install uv==$UV_VERSION' failed for $PY (offline, or PyPI unreachable)."
  else
    say "ERROR: neither uv (not on PATH) nor pip (not in $PY) is here, so nothing can be installed."
  fi
  say "Colab has both: Runtime -> Disconnect and delete runtime, then Run all. Elsewhere: put uv on PATH"
  say "(https://docs.astral.sh/uv/getting-started/installation/) or run '$PY -m ensurepip', then run this again."
}

# ---- is this Colab, and which Python? ----------------------------------------------------------
# An absolute path: uv given a bare name like "python3" may pick a nearby virtual environment.
if ! PY="$(command -v "$PY")" || [ -z "$PY" ]; then
  say "No Python interpreter found at ${COURSE_PYTHON:-python3}."
  exit 1
fi
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
if ! "$PY" -c 'import google.colab' >/dev/null 2>&1; then
  say "This is not a Google Colab runtime ($PY cannot import google.colab): colab_setup.sh only prepares Colab."
  say "On your own machine run: make setup"
  exit 1
fi
if ! PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"; then
  say "Could not start $PY."
  exit 1
fi

# ---- installing into the kernel's own Python ---------------------------------------------------
# The course's requirements minus what Colab brings itself (Jupyter) or only CI needs.
course_requirements() {
  grep -v -E '^[[:space:]]*(#|$)' "$ROOT/requirements.txt" \
    | grep -v -x -E '(jupyter|ipykernel|papermill|nbval|pytest|pytest-xdist|hypothesis)'
}

# kernel_install ARGS...: `uv pip install ARGS` into $PY; sets RESTART=1 when it replaced a
# package the kernel had loaded ($COURSE_LOADED_MODULES), comparing freezes before and after.
RESTART=0
kernel_install() {
  local uv tmp code
  if ! uv="$(find_uv)"; then
    no_uv_message
    return 1
  fi
  tmp="$(mktemp -d)"
  "$uv" pip freeze --python "$PY" > "$tmp/before.txt" 2>/dev/null
  if ! "$uv" pip install --python "$PY" --break-system-packages -q "$@"; then
    rm -rf "$tmp"
    return 1
  fi
  "$uv" pip freeze --python "$PY" > "$tmp/after.txt" 2>/dev/null
  # colab.py as a plain script (-P: not its folder on sys.path): it needs only the standard library
  "$PY" -P "$ROOT/data_utils/colab.py" restart-check "$tmp/before.txt" "$tmp/after.txt"
  code=$?
  rm -rf "$tmp"
  if [ "$code" = 3 ]; then
    RESTART=1
  elif [ "$code" != 0 ]; then
    say "WARNING: could not tell whether a restart is needed (exit code $code); if imports fail, Runtime -> Restart session."
  fi
  return 0
}

# ---- Python 3.11: the pinned stack in the runtime's own Python ---------------------------------
install_pinned_stack() {
  say "Python 3.11 runtime: installing the course's pinned stack (TensorFlow 2.14, TFF 0.87) into $PY;"
  say "a minute or two the first time. (TFF 0.87 pins jax/jaxlib 0.4.14, which PyPI no longer has: the"
  say "course installs 0.4.13 instead, see requirements-overrides.txt; pip check will name that pin.)"
  local reqs
  reqs="$(mktemp)"
  course_requirements > "$reqs"
  # -c lock: every package that is installed or changed gets exactly the version `make setup` uses.
  if ! kernel_install -r "$reqs" -c "$ROOT/requirements-lock.txt" --override "$ROOT/requirements-overrides.txt"; then
    rm -f "$reqs"
    say "ERROR: installing the pinned stack failed (the message above says why)."
    say "If Colab's Python is not 3.11 any more: $CLICK"
    return 1
  fi
  rm -f "$reqs"
  if ! "$PY" - <<'EOF'
from importlib.metadata import PackageNotFoundError, version
def v(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return "(not installed)"
tf, tff = v("tensorflow"), v("tensorflow-federated")
ok = tf.startswith("2.14.") and tff == "0.87.0"
print(f"[colab_setup] installed: TensorFlow {tf}, TensorFlow Federated {tff}" + ("" if ok else " (not the course's versions)"))
raise SystemExit(0 if ok else 1)
EOF
  then
    say "ERROR: pip fell back to another TensorFlow Federated than 0.87.0; the course needs the pinned stack. $CLICK"
    return 1
  fi
  if [ "$RESTART" = 1 ]; then
    say "Restart needed: the install replaced packages this runtime had already loaded."
    return 3
  fi
  say "Ready: every notebook runs here as it does locally."
  return 0
}

# ---- Python 3.12/3.13: Colab's TensorFlow, plus a Python 3.11 side environment for TFF ----------
build_side_env() {
  local uv py311 stamp want
  stamp="$SIDE_VENV/.course-stamp"
  want="$(cat "$ROOT/requirements-lock.txt" "$ROOT/requirements-overrides.txt" | sha256sum | cut -d' ' -f1)"
  if [ -x "$SIDE_VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    say "Side environment for TFF ready: $SIDE_VENV (Python 3.11, TensorFlow 2.14, TFF 0.87)."
    return 0
  fi
  say "Building the Python 3.11 side environment for TFF in $SIDE_VENV (uv python install 3.11 and the"
  say "course's pinned stack; about a minute, once per Colab session). Colab's own TensorFlow is not touched."
  if ! uv="$(find_uv)"; then no_uv_message; return 1; fi
  if ! py311="$(side "$uv" python find --no-project 3.11 2>/dev/null)"; then
    side "$uv" python install -q 3.11 || { say "uv python install 3.11 failed."; return 1; }
    py311="$(side "$uv" python find --no-project 3.11)" || return 1
  fi
  side "$uv" venv -q --clear --python "$py311" "$SIDE_VENV" || { say "could not create $SIDE_VENV."; return 1; }
  side "$uv" pip sync -q --python "$SIDE_VENV/bin/python" "$ROOT/requirements-lock.txt" \
    || { say "installing the pinned stack into $SIDE_VENV failed."; return 1; }
  side "$SIDE_VENV/bin/python" -c 'from importlib.metadata import version as v
assert v("tensorflow-federated") == "0.87.0" and v("tensorflow").startswith("2.14."), "wrong versions"' \
    || { say "the side environment has the wrong TFF/TensorFlow versions."; return 1; }
  echo "$want" > "$stamp"
  say "Side environment for TFF ready: $SIDE_VENV."
  return 0
}

# What the course needs besides TensorFlow and TFF (e.g. dp-accounting), installed into Colab's
# newer Python when missing, at the newest releases (the 3.11 lock does not apply there).
ensure_extras() {
  local missing=() name
  for name in $(course_requirements | sed -E 's/[<>=!~;[ ].*//' | grep -v -x -E '(tensorflow|tensorflow-federated)'); do
    "$PY" -c 'import sys; from importlib.metadata import version; version(sys.argv[1])' "$name" >/dev/null 2>&1 \
      || missing+=("$name")
  done
  [ "${#missing[@]}" = 0 ] && return 0
  say "Installing what the course needs besides TensorFlow: ${missing[*]}"
  kernel_install "${missing[@]}" || { say "ERROR: installing ${missing[*]} failed (the message above says why)."; return 1; }
}

default_runtime() {
  local tf
  if ! tf="$("$PY" -c 'from importlib.metadata import PackageNotFoundError as E, version as v
for name in ("tensorflow", "tensorflow-cpu"):
    try:
        print(v(name)); break
    except E:
        pass
else:
    raise SystemExit(1)' 2>/dev/null)"; then
    say "Python $PYVER runtime without TensorFlow: Runtime -> Disconnect and delete runtime, then Run all (or $CLICK)."
    return 1
  fi
  say "Python $PYVER runtime with Colab's TensorFlow $tf: the course's code runs on it as it is."
  ensure_extras || return 1
  local done_code=0
  if [ "$NEEDS_TFF" != 1 ]; then
    say "This notebook does not need TensorFlow Federated: no side environment needed."
  elif build_side_env; then
    say "This notebook runs its TFF work in the side environment (data_utils.sidecar); the rest runs here."
  else
    say "The TFF parts of this notebook will be skipped with a note; everything else runs."
    say "To run the TFF parts too: $CLICK"
    done_code=2
  fi
  if [ "$RESTART" = 1 ]; then
    say "Restart needed: the install replaced packages this runtime had already loaded."
    return 3
  fi
  return "$done_code"
}

case "$PYVER" in
  3.11) install_pinned_stack ;;
  3.12|3.13) default_runtime ;;
  *)
    say "This runtime has Python $PYVER. The course runs on Python 3.11 (TensorFlow Federated's last release needs 3.9-3.11),"
    say "or on Colab's default Python 3.12/3.13 with TFF in a side environment; not on $PYVER."
    say "Click: $CLICK"
    exit 1 ;;
esac
exit $?
