#!/usr/bin/env bash
# Example 8 of the 2015 gallery: Image start (astronaut), amplifying inception_3a/3x3_reduce.
# 2015: x0.08 -> x0.15; here x0.48 -> x0.9 of the 512x512 photo.
# Run from anywhere; options given to this script are passed on last, so they override, e.g.
#   examples/example8.sh --model efficientnet_lite0 --gpu -1 --num_steps 5
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's virtual environment if there is one (README set-up), else python3; or set PYTHON.
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p examples/output
"$PYTHON" examples/make_inputs.py > /dev/null
exec "$PYTHON" cnn_vis.py \
  --initial_image examples/inputs/astronaut.png \
  --target_layer inception_3a/3x3_reduce \
  --initial_size x0.48 \
  --final_size x0.9 \
  --num_sizes 2 \
  --num_steps 30 \
  --learning_rate 1 \
  --decay_rate 0.9 \
  --alpha 2 \
  --p_reg 0.5 \
  --beta 2.5 \
  --tv_reg 0.05 \
  --output_file examples/output/example8.png \
  "$@"
