#!/usr/bin/env bash
# Beyond 2015: a mask: black keeps the photo, white dreams fully.
# The mask (examples/inputs/chelsea_mask.png) ramps from black on the left to white on the right.
# Run from anywhere; options given to this script are passed on last, so they override, e.g.
#   examples/beyond_mask.sh --model efficientnet_lite0 --gpu -1 --num_steps 5
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's virtual environment if there is one (README set-up), else python3; or set PYTHON.
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p examples/output
"$PYTHON" examples/make_inputs.py > /dev/null
exec "$PYTHON" cnn_vis.py \
  --initial_image examples/inputs/chelsea.png \
  --target_layer inception_4b/output \
  --recipe dream \
  --initial_size x0.8 \
  --mask examples/inputs/chelsea_mask.png \
  --output_file examples/output/beyond_mask.png \
  "$@"
