#!/usr/bin/env python3
"""cnn-vis: Inceptionism (DeepDream-style) images from a pretrained CNN.

    python cnn_vis.py --image_type amplify_layer --target_layer inception_4d/3x3_reduce \
        --initial_image photo.jpg --output_file dream.png

Every option is described by `python cnn_vis.py --help` and in README.md. The work lives
in the `cnnvis` package; `cnnvis.cli.main` is the command line.
"""
import sys

from cnnvis.launcher import run_command_line

if __name__ == "__main__":
    sys.exit(run_command_line())
