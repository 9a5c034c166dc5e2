#!/usr/bin/env bash
# Example 13 of the 2015 gallery: Image start (coffee), inception_4b/5x5_reduce, learning rate 5, tv_reg 0.5.
# 2015: x0.25 -> x0.5, 3 sizes; here x0.57 -> x1.14 of the 400x600 photo.
# Run from anywhere; options given to this script are passed on last, so they override, e.g.
#   examples/example13.sh --model efficientnet_lite0 --gpu -1 --num_steps 5
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's virtual environment if there is one (README set-up), else python3; or set PYTHON.
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p examples/output
"$PYTHON" examples/make_inputs.py > /dev/null
exec "$PYTHON" cnn_vis.py \
  --initial_image examples/inputs/coffee.png \
  --target_layer inception_4b/5x5_reduce \
  --initial_size x0.57 \
  --final_size x1.14 \
  --num_sizes 3 \
  --num_steps 100 \
  --learning_rate 5 \
  --decay_rate 0.9 \
  --alpha 2 \
  --p_reg 0.5 \
  --beta 2.5 \
  --tv_reg 0.5 \
  --output_file examples/output/example13.png \
  "$@"
