#!/usr/bin/env bash
# Example 7 of the 2015 gallery: Image start (chelsea), amplifying the low-level inception_3a/1x1: strokes and textures.
# 2015: x0.08 -> x0.15 of the original photo; here x0.75 -> x1.4 of the 300x451 photo.
# Run from anywhere; options given to this script are passed on last, so they override, e.g.
#   examples/example7.sh --model efficientnet_lite0 --gpu -1 --num_steps 5
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's virtual environment if there is one (README set-up), else python3; or set PYTHON.
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p examples/output
"$PYTHON" examples/make_inputs.py > /dev/null
exec "$PYTHON" cnn_vis.py \
  --initial_image examples/inputs/chelsea.png \
  --target_layer inception_3a/1x1 \
  --initial_size x0.75 \
  --final_size x1.4 \
  --num_sizes 2 \
  --num_steps 30 \
  --learning_rate 1 \
  --decay_rate 0.9 \
  --alpha 2 \
  --p_reg 0.5 \
  --beta 2.5 \
  --tv_reg 0.05 \
  --output_file examples/output/example7.png \
  "$@"
