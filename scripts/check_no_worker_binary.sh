#!/usr/bin/env bash
# Fail (and clean up) if a TensorFlow Federated worker_binary process is still running.
if pids=$(pgrep -f 'tensorflow_federated/.*worker_binary'); then
  echo "ERROR: TFF worker_binary processes left running: $pids" >&2
  pkill -f 'tensorflow_federated/.*worker_binary' || true
  exit 1
fi
echo "no TFF worker_binary left running"
