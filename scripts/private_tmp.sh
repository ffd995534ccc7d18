#!/usr/bin/env bash
# Run a command with its own temporary folder (TMPDIR), removed afterwards; its exit code is kept.
# Why: processes that are killed (nbval ends each kernel with SIGKILL; tests end TFF children the
# same way) never run their exit handlers, so what they leave in TMPDIR (AutoGraph's generated
# files, kernel connection files) would pile up in /tmp run after run.
# Usage: bash scripts/private_tmp.sh COMMAND [ARG...]
set -u
[ $# -ge 1 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/course-tmp-XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
TMPDIR=$tmp "$@"
