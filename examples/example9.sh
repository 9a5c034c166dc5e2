#!/usr/bin/env bash
# Example 9 of the 2015 gallery: Image start (astronaut), amplifying the higher inception_4d/output: object parts appear.
# 2015: x0.12 -> x0.25, 3 sizes; here x0.44 -> x0.92 of the 512x512 photo.
# Run from anywhere; options given to this script are passed on last, so they override, e.g.
#   examples/example9.sh --model efficientnet_lite0 --gpu -1 --num_steps 5
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's virtual environment if there is one (README set-up), else python3; or set PYTHON.
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p examples/output
"$PYTHON" examples/make_inputs.py > /dev/null
exec "$PYTHON" cnn_vis.py \
  --initial_image examples/inputs/astronaut.png \
  --target_layer inception_4d/output \
  --initial_size x0.44 \
  --final_size x0.92 \
  --num_sizes 3 \
  --num_steps 50 \
  --learning_rate 1 \
  --decay_rate 0.9 \
  --alpha 2 \
  --p_reg 0.5 \
  --beta 2.5 \
  --tv_reg 0.05 \
  --output_file examples/output/example9.png \
  "$@"
