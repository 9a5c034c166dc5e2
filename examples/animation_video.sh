#!/usr/bin/env bash
# Animation: a dreamed video. Each frame of a camera pan across the coffee photo
# (examples/inputs/coffee_pan.mp4, which make_inputs.py writes) is dreamed; each frame
# continues the dream of the frame before, carried along the motion (optical flow), with
# gentler steps where the flow sees it again (--coherence, default 0.9).
# Run from anywhere; options given to this script are passed on last, so they override, e.g.
#   examples/animation_video.sh --model efficientnet_lite0 --gpu -1 --end_frame 5
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's virtual environment if there is one (README set-up), else python3; or set PYTHON.
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p examples/output
"$PYTHON" examples/make_inputs.py > /dev/null
exec "$PYTHON" cnn_vis.py \
  --input_video examples/inputs/coffee_pan.mp4 \
  --target_layer inception_4b/output \
  --num_steps 30 \
  --learning_rate 4 \
  --decay_rate 0.9 \
  --alpha 2 \
  --p_reg 0.005 \
  --tv_reg 0.02 \
  --frame_steps 8 \
  --output_file examples/output/animation_video.gif \
  "$@"
