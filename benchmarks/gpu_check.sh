#!/usr/bin/env bash
# The GPU check: CUDA smoke tests of training, evaluation, reliability scoring and inference (fp32 and bf16, with
# and without --compile, 2-process NCCL when 2 GPUs are visible) and the benchmarks (model step at batch 64 and
# 128, the real loader end to end), at most 8 minutes on one GPU, no data or weights needed. Prints one JSON
# summary on stdout ("ok", "failed", per-check results, throughput against the per-GPU goals); progress and the
# log folder on stderr. Exit status 0 when every check passed.
#
#   bash benchmarks/gpu_check.sh                 # on a GPU machine
#   DEVICE=cpu bash benchmarks/gpu_check.sh      # dry run on the CPU: tiny CLIP, 64 px, 2-process gloo
#
# Environment: DEVICE (cuda | cpu, default cuda), WORK_DIR (world, checkpoints and per-check logs; default a new
# temporary folder, kept), PYTHON (default python). Extra arguments go to benchmarks/gpu_check.py (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${DEVICE:-cuda}"
WORK_DIR="${WORK_DIR:-$(mktemp -d -t clipvg-gpu-check-XXXXXX)}"
PYTHON="${PYTHON:-python}"
extra=()
if [ "$DEVICE" = "cpu" ]; then
    extra=(--tiny --ddp)
fi
echo "gpu_check: device $DEVICE, logs in $WORK_DIR/logs" >&2
summary="$("$PYTHON" benchmarks/gpu_check.py --device "$DEVICE" --work_dir "$WORK_DIR" "${extra[@]}" "$@")"
echo "$summary"
"$PYTHON" -c 'import json, sys; sys.exit(0 if json.loads(sys.argv[1])["ok"] else 1)' "$summary"
