#!/usr/bin/env bash
# Example 10 of the 2015 gallery: Image start (rocket), inception_4d/pool with a much stronger p-norm (5) that keeps the photo,
# and more TV (0.1). 2015: x0.2 -> x0.75, 4 sizes; here x0.53 -> x2 of the 427x640 photo.
# Run from anywhere; options given to this script are passed on last, so they override, e.g.
#   examples/example10.sh --model efficientnet_lite0 --gpu -1 --num_steps 5
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's virtual environment if there is one (README set-up), else python3; or set PYTHON.
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p examples/output
"$PYTHON" examples/make_inputs.py > /dev/null
exec "$PYTHON" cnn_vis.py \
  --initial_image examples/inputs/rocket.png \
  --target_layer inception_4d/pool \
  --initial_size x0.53 \
  --final_size x2 \
  --num_sizes 4 \
  --num_steps 30 \
  --learning_rate 1 \
  --decay_rate 0.9 \
  --alpha 2 \
  --p_reg 5 \
  --beta 2.5 \
  --tv_reg 0.1 \
  --output_file examples/output/example10.png \
  "$@"
