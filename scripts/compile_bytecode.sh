#!/usr/bin/env bash
# compile_bytecode.sh VENV: write the .pyc files of everything installed in VENV (run by
# setup_env.sh and setup_py313.sh after installing). uv does not write them, and where
# PYTHONDONTWRITEBYTECODE is set (as on the course's CI machine) Python never does either, so every
# process compiled TensorFlow and TFF from source again: `import tensorflow_federated` took 19.9
# CPU-s instead of 7.9 (measured 2026-11-30), paid once by every kernel, TFF job and test child.
# Up-to-date files are skipped; the few that are not Python (test templates in some packages) fail
# to compile and are left alone.
set -euo pipefail
VENV="$1"
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$VENV/bin/python" -m compileall -q -j 0 "$site" >/dev/null 2>&1 || true
