#!/usr/bin/env bash
# Animation: an "infinite zoom". Frame 1 dreams on the chelsea photo; each later frame dreams
# a few steps on the frame before it, zoomed in by 4% and turned by half a degree.
# Run from anywhere; options given to this script are passed on last, so they override, e.g.
#   examples/animation_zoom.sh --model efficientnet_lite0 --gpu -1 --frames 5
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's virtual environment if there is one (README set-up), else python3; or set PYTHON.
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p examples/output
"$PYTHON" examples/make_inputs.py > /dev/null
exec "$PYTHON" cnn_vis.py \
  --initial_image examples/inputs/chelsea.png \
  --target_layer inception_4b/output \
  --initial_size 224x336 \
  --num_steps 30 \
  --learning_rate 4 \
  --decay_rate 0.9 \
  --alpha 2 \
  --p_reg 0.005 \
  --tv_reg 0.02 \
  --frames 36 \
  --zoom 1.04 \
  --rotate 0.5 \
  --frame_steps 6 \
  --fps 12 \
  --output_file examples/output/animation_zoom.gif \
  "$@"
