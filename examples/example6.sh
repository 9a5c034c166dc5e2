#!/usr/bin/env bash
# Example 6 of the 2015 gallery: Places205 GoogLeNet, amplifying inception_4c/pool from strong, blurred noise (scale 10,
# blur 1), which gives larger structures.
# Run from anywhere; options given to this script are passed on last, so they override, e.g.
#   examples/example6.sh --model efficientnet_lite0 --gpu -1 --num_steps 5
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's virtual environment if there is one (README set-up), else python3; or set PYTHON.
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p examples/output
exec "$PYTHON" cnn_vis.py \
  --model googlenet_places205 \
  --target_layer inception_4c/pool \
  --initial_size 270x480 \
  --final_size 1080x1920 \
  --num_sizes 5 \
  --batch_size 25 \
  --initialization_scale 10 \
  --initialization_blur 1 \
  --num_steps 150 \
  --learning_rate 2 \
  --decay_rate 0.9 \
  --alpha 4 \
  --p_reg 1e-9 \
  --beta 2.5 \
  --tv_reg 1 \
  --output_file examples/output/example6.png \
  "$@"
