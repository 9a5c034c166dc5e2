"""The command line: every option of the 2015 README, and the recipe that runs them.

The only module that knows argparse. `main` checks everything that can be checked
cheaply (files, sizes, options) before the model loads or any optimisation starts,
then loads the model, makes the initial image, runs the optimiser and saves the result.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shlex
import sys
import traceback
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch

from cnnvis import zoo
from cnnvis.caffe import CaffeNet, read_prototxt
from cnnvis.caffe.net import network_input
from cnnvis.errors import UserError
from cnnvis.imageio import (check_writable_output, image_to_rgb, load_mean_colour, load_rgb,
                            resize_rgb, rgb_to_image, save_png)
from cnnvis.model import VisModel
from cnnvis.optimizer import Dream, DreamSettings, NonFiniteError
from cnnvis.report import ACTIONS, ConsoleObserver
from cnnvis.sizes import RESIZE_TYPES, check_min_size, parse_size, size_sequence
from cnnvis.regularizers import TV_OPERATORS

EXIT_USER_ERROR, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED = 2, 1, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not a usage dump
        raise UserError(f"{message} (see --help).")


def _number(kind, minimum=None, strictly=False):
    """An argparse type: int or float, at least (or above) `minimum`."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {'an integer' if kind is int else 'a number'}")
        if kind is float and not np.isfinite(value):
            raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
        if minimum is not None and (value <= minimum if strictly else value < minimum):
            raise argparse.ArgumentTypeError(
                f"{text} must be {'above' if strictly else 'at least'} {minimum}")
        return value
    return parse


POSITIVE_INT = _number(int, 1)
NON_NEGATIVE = _number(float, 0)
POSITIVE = _number(float, 0, strictly=True)
NUMBER = _number(float)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cnn_vis.py", description="Inceptionism (DeepDream-style) images from a CNN.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = parser.add_argument_group("CNN options")
    g.add_argument("--model", default=zoo.DEFAULT_MODEL, choices=list(zoo.PRESETS),
                   help="model preset (see --list_models); --deploy_txt/--caffe_model override its files")
    g.add_argument("--deploy_txt", help="Caffe .prototxt of the CNN (input blob 'data'); "
                   "$CAFFE_ROOT and ~ are expanded")
    g.add_argument("--caffe_model", help="Caffe .caffemodel with the CNN's weights")
    g.add_argument("--batch_size", type=POSITIVE_INT, default=1, help="image patches computed in parallel")
    g.add_argument("--mean_image", help=".npy mean image (3,H,W) or BGR mean colour (3,); "
                   "default: the model's mean colour")
    g.add_argument("--gpu", type=int, default=0, help="CUDA device; negative: CPU")
    g.add_argument("--backend", default="torch", choices=zoo.BACKENDS,
                   help="engine for the CNN: PyTorch, or real Caffe (pycaffe, optional; "
                   "scripts/install_pycaffe.sh installs it)")
    g = parser.add_argument_group("Image options")
    g.add_argument("--image_type", default="amplify_layer", choices=["amplify_layer", "amplify_neuron"])
    g.add_argument("--target_layer", help="blob to amplify (default: the model's own, "
                   "inception_4d/3x3_reduce for GoogLeNet; see --list_layers)")
    g.add_argument("--target_neuron", type=_number(int, 0), default=0,
                   help="channel to amplify with amplify_neuron")
    g = parser.add_argument_group("Initialization options")
    g.add_argument("--initial_image", help="image to start from (default: smoothed noise)")
    g.add_argument("--initialization_scale", type=NON_NEGATIVE, default=1.0, help="std of the noise")
    g.add_argument("--initialization_blur", type=NON_NEGATIVE, default=0.0,
                   help="std in pixels of the Gaussian blur of the noise")
    g.add_argument("--seed", type=_number(int, 0), help="random seed (default: a fresh one, "
                   "recorded in the output PNG)")
    g = parser.add_argument_group("Resize options")
    g.add_argument("--initial_size", help="'xF' (multiple of the base size) or 'HxW'; default: base size")
    g.add_argument("--final_size", help="same format as --initial_size")
    g.add_argument("--num_sizes", type=POSITIVE_INT, default=1)
    g.add_argument("--resize_type", default="geometric", choices=RESIZE_TYPES)
    g = parser.add_argument_group("Optimization options")
    g.add_argument("--learning_rate", type=NON_NEGATIVE, default=1.0)
    g.add_argument("--learning_rate_decay_iter", type=POSITIVE_INT, default=100)
    g.add_argument("--learning_rate_decay_factor", "--learning_rate_decay_fraction",
                   dest="learning_rate_decay_factor", type=NON_NEGATIVE, default=1.0)
    g.add_argument("--decay_rate", type=_number(float, 0), default=0.95, help="RMSProp decay rate")
    g.add_argument("--num_steps", type=POSITIVE_INT, default=1000, help="steps at each size")
    g.add_argument("--use_pixel_learning_rates", action="store_true",
                   help="divide each pixel's step by the number of regions that cover it")
    g = parser.add_argument_group("Layer amplification objective options")
    g.add_argument("--l1_weight", "--amplify_l1_weight", dest="l1_weight", type=NUMBER, default=1.0)
    g.add_argument("--l2_weight", "--amplify_l2_weight", dest="l2_weight", type=NUMBER, default=1.0)
    g.add_argument("--grad_clip", "--amplify_grad_clip", dest="grad_clip", type=NON_NEGATIVE, default=5.0)
    g = parser.add_argument_group("P-norm regularization options")
    g.add_argument("--alpha", type=POSITIVE, default=6.0, help="exponent of the p-norm")
    g.add_argument("--p_reg", type=NON_NEGATIVE, default=1e-4)
    g.add_argument("--p_scale", type=POSITIVE, default=1.0)
    g = parser.add_argument_group("Auxiliary p-norm regularization options")
    g.add_argument("--alpha_aux", type=POSITIVE, default=6.0)
    g.add_argument("--p_reg_aux", type=NON_NEGATIVE, default=0.0)
    g.add_argument("--p_scale_aux", type=POSITIVE, default=1.0)
    g = parser.add_argument_group("Total Variation regularization options")
    g.add_argument("--beta", type=POSITIVE, default=2.0, help="exponent of the TV-norm")
    g.add_argument("--tv_reg", type=NON_NEGATIVE, default=0.5)
    g.add_argument("--tv_reg_scale", type=POSITIVE, default=1.0)
    g.add_argument("--tv_reg_step_iter", type=POSITIVE_INT, default=50)
    g.add_argument("--tv_reg_step", type=NUMBER, default=0.0)
    g.add_argument("--tv_grad_operator", default="naive", choices=TV_OPERATORS)
    g = parser.add_argument_group("Output options")
    g.add_argument("--output_file", default="out.png")
    g.add_argument("--rescale_image", action="store_true",
                   help="map the image's [min, max] to [0, 255] instead of clipping")
    g.add_argument("--output_iter", type=POSITIVE_INT, default=50)
    g.add_argument("--iter_behavior", default="save+print",
                   help=f"actions every output_iter steps, joined with '+': {', '.join(ACTIONS)}")
    g.add_argument("--show_width", type=POSITIVE, default=5.0, help="inches")
    g.add_argument("--show_height", type=POSITIVE, default=5.0, help="inches")
    g = parser.add_argument_group("Model tools (each does its job and exits)")
    g.add_argument("--classify", metavar="IMAGE", help="print the model's top 5 classes for IMAGE")
    g.add_argument("--list_models", action="store_true", help="list the model presets")
    g.add_argument("--list_layers", action="store_true",
                   help="list the model's targetable blobs with their shapes (needs no weights)")
    g.add_argument("--download", metavar="NAME", help="download a preset's weights ahead of time")
    g.add_argument("--debug", action="store_true",
                   help="show tracebacks for errors (also CNN_VIS_DEBUG=1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("CNN_VIS_DEBUG") == "1"
    try:
        args = build_parser().parse_args(argv)
        return run(args, argv)
    except UserError as error:
        if debug:
            traceback.print_exc()
        print(f"cnn-vis: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("cnn-vis: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - the last line of defence: no traceback for users
        if debug:
            traceback.print_exc()
        print(f"cnn-vis: internal error: {type(error).__name__}: {error}. This is a bug; "
              "please report it with the output of the same command with --debug.", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Dispatch: a model tool, or the dream itself."""
    for option in ("deploy_txt", "caffe_model"):
        value = getattr(args, option)
        if value:
            setattr(args, option, os.path.expanduser(os.path.expandvars(value)))
    if args.list_models:
        print_models()
        return 0
    if args.download:
        path = zoo.download(zoo.preset(args.download))
        print(f"{args.download}: {path or 'weights come with the installed Python package'}")
        return 0
    if args.list_layers:
        print_layers(args)
        return 0
    if args.classify:
        print_classes(args)
        return 0
    return dream(args, argv)


# --------------------------------------------------------------------------- the dream


def dream(args: argparse.Namespace, argv: list[str]) -> int:
    """Check the inputs, load the model, optimise, save. The recipe of cnn-vis."""
    actions = parse_actions(args.iter_behavior)
    output = Path(args.output_file)
    check_writable_output(output)
    photo = load_rgb(args.initial_image) if args.initial_image else None
    mean_bgr = load_mean_colour(args.mean_image) if args.mean_image else None
    # The network's input size is known before its weights load: check the sizes first.
    input_size = (network_input(read_prototxt(args.deploy_txt))[1][1:] if args.deploy_txt
                  else zoo.preset(args.model).input_size)
    sizes = plan_sizes(args, photo, input_size)
    model = load_model(args, mean_bgr)
    target = resolve_target(model, args)

    seed = args.seed if args.seed is not None else secrets.randbelow(2 ** 31)
    initial = (rgb_to_image(resize_rgb(photo, sizes[0]), model.mean_bgr) if photo is not None
               else noise_image(sizes[0], args.initialization_scale, args.initialization_blur, seed))
    settings = DreamSettings(
        sizes=tuple(sizes), target_layer=target,
        **{name: getattr(args, name) for name in DREAM_OPTIONS})
    png_text = {"Software": "cnn-vis", "cnn-vis:model": model.name, "cnn-vis:seed": str(seed),
                "cnn-vis:command": shlex.join(["cnn_vis.py", *argv] + (
                    [] if args.seed is not None else ["--seed", str(seed)]))}
    observer = ConsoleObserver(actions, output, model.mean_bgr, args.rescale_image, png_text,
                               total_steps=len(sizes) * args.num_steps,
                               show_size=(args.show_width, args.show_height))
    optimisation = Dream(model, settings, observer)
    try:
        image = optimisation.run(initial, photo)
    except NonFiniteError as error:
        save_png(output, image_to_rgb(optimisation.image, model.mean_bgr, args.rescale_image),
                 png_text)
        raise UserError(f"{error}; the last finite image is saved as {output}. Lower "
                        "--learning_rate (or the regularisation strengths --p_reg, --tv_reg) "
                        "and run again.") from None
    except KeyboardInterrupt:
        if optimisation.image is not None:
            save_png(output, image_to_rgb(optimisation.image, model.mean_bgr, args.rescale_image),
                     png_text)
            print(f"\ncnn-vis: interrupted; the current image is saved as {output}.", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        observer.close()
    save_png(output, image_to_rgb(image, model.mean_bgr, args.rescale_image), png_text)
    print(f"wrote {output}", file=sys.stderr)
    return 0


# Options that go into DreamSettings under their own names.
DREAM_OPTIONS = [
    "image_type", "target_neuron", "num_steps", "batch_size", "learning_rate",
    "learning_rate_decay_iter", "learning_rate_decay_factor", "decay_rate",
    "use_pixel_learning_rates", "l1_weight", "l2_weight", "grad_clip", "alpha", "p_reg",
    "p_scale", "alpha_aux", "p_reg_aux", "p_scale_aux", "beta", "tv_reg", "tv_reg_scale",
    "tv_reg_step", "tv_reg_step_iter", "tv_grad_operator", "output_iter",
]


def plan_sizes(args: argparse.Namespace, photo: np.ndarray | None,
               input_size: tuple[int, int]) -> list[tuple[int, int]]:
    """The size sequence; the base size is the network input for noise, the photo's size otherwise."""
    base = input_size if photo is None else photo.shape[:2]
    sizes = size_sequence(parse_size(args.initial_size, base, "--initial_size"),
                          parse_size(args.final_size, base, "--final_size"),
                          args.num_sizes, args.resize_type)
    check_min_size(sizes, input_size, base)
    return sizes


def parse_actions(text: str) -> list[str]:
    actions = [a for a in text.split("+") if a]
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        raise UserError(f"--iter_behavior '{text}' has unknown action(s) {', '.join(unknown)}; "
                        f"join any of {', '.join(ACTIONS)} with '+', e.g. save+print.")
    return actions


def select_device(gpu: int) -> torch.device:
    """CUDA device `gpu` (or Apple's MPS) when present; otherwise the CPU, said once."""
    if gpu < 0:
        return torch.device("cpu")
    if torch.cuda.is_available() and gpu < torch.cuda.device_count():
        return torch.device("cuda", gpu)
    if gpu == 0 and torch.backends.mps.is_available():
        return torch.device("mps")
    found = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no GPU"
    print(f"cnn-vis: --gpu {gpu}: {found} here; running on the CPU (--gpu -1 to silence this).",
          file=sys.stderr)
    return torch.device("cpu")


def load_model(args: argparse.Namespace, mean_bgr=None) -> VisModel:
    return zoo.load_model(args.model, args.deploy_txt, args.caffe_model, mean_bgr,
                          device=select_device(args.gpu), backend=args.backend)


def resolve_target(model: VisModel, args: argparse.Namespace) -> str:
    """The target blob: --target_layer (a GoogLeNet name translated for other presets, with a
    notice) or the model's default; checked against the network, with the neuron index."""
    preset = zoo.preset(args.model)
    target = args.target_layer or preset.default_layer
    translate = preset.googlenet_counterpart
    if target not in model.blob_names and translate and translate(target) and not args.deploy_txt:
        print(f"cnn-vis: {preset.name} has no blob '{target}'; using its GoogLeNet counterpart "
              f"'{translate(target)}'.", file=sys.stderr)
        target = translate(target)
    shape = model.check_target(target)
    if args.image_type == "amplify_neuron" and args.target_neuron >= shape[1]:
        raise UserError(f"--target_neuron {args.target_neuron} is outside blob '{target}', which has "
                        f"{shape[1]} channels; use 0 to {shape[1] - 1}.")
    return target


def noise_image(size: tuple[int, int], scale: float, blur: float, seed: int) -> torch.Tensor:
    """Gaussian white noise (1, 3, H, W) of std `scale`, blurred over the two spatial axes only."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, 3) + tuple(size), generator=generator) * scale
    if blur > 0:
        noise = torch.from_numpy(scipy.ndimage.gaussian_filter(
            noise.numpy(), sigma=(0, 0, blur, blur)).astype(np.float32))
    return noise


# --------------------------------------------------------------------------- model tools


def print_models() -> None:
    print(f"{'name':22} {'trained on':40} {'weights':8} source")
    for model in zoo.PRESETS.values():
        source = model.weights.url if model.weights else "Python package (installed with cnn-vis)"
        present = "present" if zoo.weights_present(model) else "missing"
        print(f"{model.name:22} {model.training_data:40} {present:8} {source}")


def print_layers(args: argparse.Namespace) -> None:
    network = (CaffeNet(read_prototxt(args.deploy_txt), None).eval() if args.deploy_txt
               else zoo.architecture(zoo.preset(args.model)))
    with torch.no_grad():
        blobs = network.blobs(torch.zeros((1, 3) + tuple(network.input_size)))
    for name, value in blobs.items():
        print(f"{name:40} {' x '.join(str(d) for d in value.shape[1:])}")


def print_classes(args: argparse.Namespace) -> None:
    photo = load_rgb(args.classify)
    mean_bgr = load_mean_colour(args.mean_image) if args.mean_image else None
    model = load_model(args, mean_bgr)
    image = rgb_to_image(resize_rgb(photo, model.input_size), model.mean_bgr)
    for index, value, label in model.classify(image):
        print(f"{index:5d} {value:10.4f} {label}")
