#!/usr/bin/env bash
# Example 11 of the 2015 gallery: Image start (Hubble deep field), inception_4d/pool with an auxiliary p-norm (alpha 8, 5e-11)
# that pulls saturated pixels back into range, pixel learning rates against tile seams,
# p_reg 10, tv_reg 1, decay 0.85. 2015: x0.25 -> x1.0, 5 sizes; here x0.26 -> x1.0 of 872x1000.
# Run from anywhere; options given to this script are passed on last, so they override, e.g.
#   examples/example11.sh --model efficientnet_lite0 --gpu -1 --num_steps 5
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's virtual environment if there is one (README set-up), else python3; or set PYTHON.
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p examples/output
"$PYTHON" examples/make_inputs.py > /dev/null
exec "$PYTHON" cnn_vis.py \
  --initial_image examples/inputs/hubble_deep_field.png \
  --target_layer inception_4d/pool \
  --initial_size x0.26 \
  --final_size x1 \
  --num_sizes 5 \
  --num_steps 30 \
  --learning_rate 1 \
  --decay_rate 0.85 \
  --alpha 2 \
  --p_reg 10 \
  --alpha_aux 8 \
  --p_reg_aux 5e-11 \
  --use_pixel_learning_rates \
  --beta 2.5 \
  --tv_reg 1 \
  --output_file examples/output/example11.png \
  "$@"
