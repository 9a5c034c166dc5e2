#!/usr/bin/env bash
# Beyond 2015: the photo's own colours.
# The dream's luminance with the photo's chroma (YCbCr): the structures stay, the rainbow goes.
# Run from anywhere; options given to this script are passed on last, so they override, e.g.
#   examples/beyond_colors.sh --model efficientnet_lite0 --gpu -1 --num_steps 5
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
  --preserve_colors \
  --output_file examples/output/beyond_colors.png \
  "$@"
