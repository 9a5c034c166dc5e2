#!/usr/bin/env bash
# Example 4 of the 2015 gallery: GoogLeNet, noise start, inception_4d/3x3_reduce again with much weaker TV (1e-2) and p-norm
# (1e-11) regularisation and twice the steps: finer, busier detail.
# Run from anywhere; options given to this script are passed on last, so they override, e.g.
#   examples/example4.sh --model efficientnet_lite0 --gpu -1 --num_steps 5
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's virtual environment if there is one (README set-up), else python3; or set PYTHON.
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p examples/output
exec "$PYTHON" cnn_vis.py \
  --target_layer inception_4d/3x3_reduce \
  --initial_size 270x480 \
  --final_size 1080x1920 \
  --num_sizes 5 \
  --batch_size 25 \
  --num_steps 200 \
  --learning_rate 10 \
  --decay_rate 0.25 \
  --alpha 6 \
  --p_reg 1e-11 \
  --beta 2.5 \
  --tv_reg 1e-2 \
  --output_file examples/output/example4.png \
  "$@"
