#!/usr/bin/env bash
# Example 5 of the 2015 gallery: GoogLeNet trained on MIT Places205, noise start, amplifying inception_4b/3x3_reduce:
# scene parts (arches, windows, foliage) instead of ImageNet's animals.
# Run from anywhere; options given to this script are passed on last, so they override, e.g.
#   examples/example5.sh --model efficientnet_lite0 --gpu -1 --num_steps 5
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's virtual environment if there is one (README set-up), else python3; or set PYTHON.
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p examples/output
exec "$PYTHON" cnn_vis.py \
  --model googlenet_places205 \
  --target_layer inception_4b/3x3_reduce \
  --initial_size 270x480 \
  --final_size 1080x1920 \
  --num_sizes 5 \
  --batch_size 25 \
  --num_steps 200 \
  --learning_rate 5 \
  --decay_rate 0.95 \
  --alpha 4 \
  --p_reg 1e-9 \
  --beta 2 \
  --tv_reg 0.3 \
  --output_file examples/output/example5.png \
  "$@"
