#!/usr/bin/env bash
# Example 12 of the 2015 gallery: Image start (motorcycle), inception_4c/output with a high learning rate (5) held in check by
# strong TV (5). 2015: x0.2 -> x0.5, 3 sizes; here x0.45 -> x1.125 of the 500x741 photo.
# Run from anywhere; options given to this script are passed on last, so they override, e.g.
#   examples/example12.sh --model efficientnet_lite0 --gpu -1 --num_steps 5
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's virtual environment if there is one (README set-up), else python3; or set PYTHON.
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p examples/output
"$PYTHON" examples/make_inputs.py > /dev/null
exec "$PYTHON" cnn_vis.py \
  --initial_image examples/inputs/motorcycle.png \
  --target_layer inception_4c/output \
  --initial_size x0.45 \
  --final_size x1.125 \
  --num_sizes 3 \
  --num_steps 100 \
  --learning_rate 5 \
  --decay_rate 0.9 \
  --alpha 2 \
  --p_reg 0.5 \
  --beta 2.5 \
  --tv_reg 5 \
  --output_file examples/output/example12.png \
  "$@"
