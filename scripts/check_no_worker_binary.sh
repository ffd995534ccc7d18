#!/usr/bin/env bash
# Fail (and clean up) if a TensorFlow Federated worker_binary process is still running.
# Zombies (already dead, waiting to be reaped) do not count; give the kernels a moment to exit.
live() { ps -eo pid=,stat=,args= | awk '$2 !~ /^Z/ && $3 ~ /worker_binary$/ {print $1}'; }
for _ in 1 2 3 4 5; do
  [ -z "$(live)" ] && { echo "no TFF worker_binary left running"; exit 0; }
  sleep 1
done
echo "ERROR: TFF worker_binary processes left running: $(live | tr '\n' ' ')" >&2
live | xargs -r kill 2>/dev/null || true
exit 1
