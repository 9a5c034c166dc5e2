#!/usr/bin/env bash
# Beyond 2015: a few channels of a layer instead of all of them.
# Eight channels of inception_4b amplified alone: fewer, purer motifs.
# Run from anywhere; options given to this script are passed on last, so they override, e.g.
#   examples/beyond_channels.sh --model efficientnet_lite0 --gpu -1 --num_steps 5
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
  --channels 0-7 \
  --output_file examples/output/beyond_channels.png \
  "$@"
