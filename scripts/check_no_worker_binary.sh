#!/usr/bin/env bash
# Fail (and clean up) if a TensorFlow Federated worker_binary process was left behind.
# A leaked worker_binary is an orphan: the Python process that started it has exited, so it was
# re-parented to PID 1. One whose parent is still alive belongs to a running job (another
# notebook, a benchmark) and is not ours to judge. Zombies do not count.
leaked() { ps -eo pid=,ppid=,stat=,args= | awk '$2 == 1 && $3 !~ /^Z/ && $4 ~ /worker_binary$/ {print $1}'; }
for _ in 1 2 3 4 5; do
  [ -z "$(leaked)" ] && { echo "no leftover TFF worker_binary"; exit 0; }
  sleep 1
done
echo "ERROR: leftover TFF worker_binary processes (their Python process has exited): $(leaked | tr '\n' ' ')" >&2
leaked | xargs -r kill 2>/dev/null || true
exit 1
