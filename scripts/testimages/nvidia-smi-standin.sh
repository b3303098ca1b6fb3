#!/bin/sh
# A STAND-IN for nvidia-smi (no GPU here), in cortex-test/nvidia-smi-standin: prints fixed
# readings as `nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu,
# temperature.gpu,power.draw,power.limit --format=csv,noheader,nounits -l N` prints them, every
# N seconds. The readings (nvidia-smi-h200.csv) are written in that format from an H200's
# figures recorded by bench/gpu_check.py (idle, and under load): not a byte-for-byte capture.
interval=0
while [ $# -gt 0 ]; do
  case "$1" in -l|--loop) interval=$2; shift ;; esac
  shift
done
while :; do
  cat /etc/nvidia-smi-standin.csv
  [ "$interval" -gt 0 ] || exit 0
  sleep "$interval"
done
