"""Every option of cnn-vis, written once: name, type, default, check and help text.

Two frozen dataclasses hold them. `DreamOptions` are the options that decide the
picture; they are the keywords of `cnnvis.dream`. `CommandOptions` are the rest of the
command line (model files, output, reporting, model tools). Each field's metadata is a
`Setting`; the command line's argparse options and the API's keyword checks are both
built from `dataclasses.fields()`, so a new option is one field here.
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cnnvis.regularizers import TV_OPERATORS
from cnnvis.setting import Setting
from cnnvis.sizes import RESIZE_TYPES

# The option groups of --help, in this order.
GROUPS = ("CNN options", "Image options", "Initialization options", "Resize options",
          "Optimization options", "Layer amplification objective options",
          "P-norm regularization options", "Auxiliary p-norm regularization options",
          "Total Variation regularization options", "Output options",
          "Animation options", "Model tools (each does its job and exits)",
          "Large jobs (atlases and folders of images)", "Studio (a web app: cnn-vis studio)")

IMAGE_TYPES = ("amplify_layer", "amplify_neuron")
BACKENDS = ("torch", "caffe")
PRECISIONS = ("fp32", "bf16", "fp16")
ACTIONS = ("print", "save", "show", "plot_pix")
OUTPUT_DEPTHS = (8, 16)
FLOWS = ("dis", "none")
VIDEO_SUFFIXES = (".mp4", ".webm", ".gif")   # outputs that hold a sequence of frames
# The runs an option is for: any, zoom sequences, dreamed videos, both kinds of sequence,
# large jobs, or a model tool.
APPLIES = ("any", "zoom", "video", "sequence", "jobs", "tool")


def option(default: Any, kind: type, help: str, group: str, **spec) -> Any:
    """A dataclass field that is an option: its default and its `Setting`."""
    return field(default=default, metadata={"setting": Setting(kind, help, group, **spec)})


def _studio_option(default: Any, kind: type, help: str, **spec) -> Any:
    """An option of the studio: a tool of its own, never recorded in a picture."""
    return option(default, kind, help, GROUPS[13], recorded=False, replayed=False, applies="tool",
                  **spec)


def _check_fields(instance) -> None:
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if value is not None or f.default is not None:
            f.metadata["setting"].check(f"--{f.name}", value)


@dataclass(frozen=True)
class DreamOptions:
    """The options that decide the picture (the README's names and defaults).

    `cnnvis.dream(image, model, **options)` takes these names as keywords; every value
    is checked when the object is made, with the messages the command line prints.
    """

    batch_size: int = option(1, int, "image patches computed in parallel", GROUPS[0], minimum=1, recorded=False)
    image_type: str = option("amplify_layer", str, "what to amplify", GROUPS[1], choices=IMAGE_TYPES)
    target_layer: str | None = option(
        None, str, "blob to amplify, or several joined with ',' (default: the model's own, "
        "inception_4d/3x3_reduce for GoogLeNet; see --list_layers)", GROUPS[1])
    layer_weights: str | None = option(
        None, str, "one weight per --target_layer, joined with ',' (default: all 1; a negative "
        "weight suppresses its layer)", GROUPS[1])
    channels: str | None = option(
        None, str, "amplify_layer on these channels of the (single) target layer only, e.g. "
        "0-15,40", GROUPS[1])
    target_neuron: int = option(0, int, "channel to amplify with amplify_neuron; on the command "
                                "line also a list such as 0-15,40, or all: an atlas, one "
                                "picture per channel", GROUPS[1], minimum=0, several=True)
    initialization_scale: float = option(1.0, float, "std of the noise (at most 10000: larger "
                                         "noise would overflow)", GROUPS[2], minimum=0,
                                         maximum=10_000)
    initialization_blur: float = option(0.0, float, "std in pixels of the Gaussian blur of the "
                                        "noise (at most 1000)", GROUPS[2], minimum=0, maximum=1000)
    initial_size: str | None = option(
        None, str, "'xF' (multiple of the base size) or 'HxW'; default: base size", GROUPS[3])
    final_size: str | None = option(None, str, "same format as --initial_size", GROUPS[3])
    num_sizes: int = option(1, int, "number of sizes from --initial_size to --final_size "
                            "(at most 1000: more would repeat sizes)", GROUPS[3], minimum=1,
                            maximum=1000)
    resize_type: str = option("geometric", str, "spacing of the sizes", GROUPS[3],
                              choices=RESIZE_TYPES)
    learning_rate: float = option(1.0, float, "RMSProp learning rate", GROUPS[4], minimum=0)
    learning_rate_decay_iter: int = option(100, int, "steps between learning rate decays",
                                           GROUPS[4], minimum=1)
    learning_rate_decay_factor: float = option(
        1.0, float, "factor of each learning rate decay", GROUPS[4], minimum=0,
        aliases=("--learning_rate_decay_fraction",))
    decay_rate: float = option(0.95, float, "RMSProp decay rate (below 1: at 1 the step "
                               "size is never learned)", GROUPS[4], minimum=0, maximum=1,
                               below=True)
    num_steps: int = option(1000, int, "steps at each size", GROUPS[4], minimum=1)
    use_pixel_learning_rates: bool = option(
        False, bool, "divide each pixel's step by the number of regions that cover it", GROUPS[4])
    calibrate: bool = option(False, bool, "divide each tile's objective gradient by its mean "
                             "size at every step, so that --learning_rate, --p_reg and --tv_reg "
                             "mean the same on every network (the recipes set it)", GROUPS[5])
    l1_weight: float = option(1.0, float, "weight of -|a| in the top gradient", GROUPS[5],
                              aliases=("--amplify_l1_weight",))
    l2_weight: float = option(1.0, float, "weight of -clip(a) in the top gradient", GROUPS[5],
                              aliases=("--amplify_l2_weight",))
    grad_clip: float = option(5.0, float, "clip of the l2 term (at most 1e6: activations "
                              "never come near)", GROUPS[5], minimum=0, maximum=1e6,
                              aliases=("--amplify_grad_clip",))
    alpha: float = option(6.0, float, "exponent of the p-norm (at most 100)", GROUPS[6], minimum=0,
                          above=True, maximum=100)
    p_reg: float = option(1e-4, float, "strength of the p-norm", GROUPS[6], minimum=0)
    p_scale: float = option(1.0, float, "scale of the p-norm", GROUPS[6], minimum=0, above=True)
    alpha_aux: float = option(6.0, float, "exponent of the auxiliary p-norm (at most 100)",
                              GROUPS[7], minimum=0, above=True, maximum=100)
    p_reg_aux: float = option(0.0, float, "strength of the auxiliary p-norm", GROUPS[7], minimum=0)
    p_scale_aux: float = option(1.0, float, "scale of the auxiliary p-norm", GROUPS[7],
                                minimum=0, above=True)
    beta: float = option(2.0, float, "exponent of the TV-norm (at most 100)", GROUPS[8], minimum=0,
                         above=True, maximum=100)
    tv_reg: float = option(0.5, float, "strength of the TV-norm", GROUPS[8], minimum=0)
    tv_reg_scale: float = option(1.0, float, "scale of the TV-norm", GROUPS[8], minimum=0,
                                 above=True)
    tv_reg_step_iter: int = option(50, int, "steps between increases of --tv_reg", GROUPS[8],
                                   minimum=1)
    tv_reg_step: float = option(0.0, float, "increase of --tv_reg every --tv_reg_step_iter steps",
                                GROUPS[8])
    tv_grad_operator: str = option("naive", str, "finite differences of the TV-norm", GROUPS[8],
                                   choices=TV_OPERATORS)
    jitter: int = option(0, int, "roll the image by up to this many pixels, at random in each "
                         "direction, at every step, so that tile borders never stay put",
                         GROUPS[4], minimum=0, maximum=4096)
    preserve_colors: bool = option(
        False, bool, "keep the photo's colours: the dream's luminance with the photo's chroma "
        "(needs a photo)", GROUPS[9])
    rescale_image: bool = option(
        False, bool, "map the image's [min, max] to [0, 255] instead of clipping", GROUPS[9])
    output_iter: int = option(50, int, "steps between reports (--iter_behavior, callbacks)",
                              GROUPS[9], minimum=1, recorded=False)

    def __post_init__(self):
        _check_fields(self)

    @classmethod
    def from_keywords(cls, options: dict[str, Any]) -> "DreamOptions":
        """DreamOptions from keyword arguments; an unknown name is a TypeError naming the closest."""
        return options_from_keywords(options, cls)[0]


@dataclass(frozen=True)
class AnimationOptions:
    """The options of zoom sequences and dreamed videos: the keywords that `cnnvis.animate`
    and `cnnvis.dream_video` take beside the `DreamOptions`."""

    frames: int = option(1, int, "frames of a zoom sequence: frame 1 is the usual picture, each "
                         "later one dreams on the previous one moved by --zoom, --rotate and "
                         "--pan (at most 1000000)", GROUPS[10], minimum=1, maximum=1_000_000, recorded=False, applies="zoom")
    zoom: float = option(1.0, float, "scale per frame about the centre: above 1 zooms in (at "
                         "most 10)", GROUPS[10], minimum=0, above=True, maximum=10, applies="zoom")
    rotate: float = option(0.0, float, "degrees per frame, anticlockwise", GROUPS[10],
                           minimum=-180, maximum=180, applies="zoom")
    pan: str = option("0,0", str, "DX,DY: pixels per frame that the picture moves right and "
                      "down", GROUPS[10], metavar="DX,DY", applies="zoom")
    colour_hold: float = option(1.0, float, "zoom sequence: the share of the drift of each "
                                "frame's mean colour from frame 1's taken back before it is "
                                "dreamed (0: none, as before 2026-12)", GROUPS[10], minimum=0,
                                maximum=1, applies="zoom")
    frame_steps: int | None = option(None, int, "steps of each frame after the first, at the "
                                     "final size (default: --num_steps)", GROUPS[10], minimum=1, applies="sequence")
    blend: float = option(0.5, float, "dreamed video: share of the previous frame's dream "
                          "(its output minus its input) carried into the next frame, 0 to 1",
                          GROUPS[10], minimum=0, maximum=1, applies="video")
    coherence: float = option(0.9, float, "dreamed video: where the flow sees the previous "
                              "frame, its dream is carried whole, the p-norm pulls towards it "
                              "and each step is damped by this share (0: the carry of --blend "
                              "and full steps, as before 2026-12), below 1", GROUPS[10],
                              minimum=0, maximum=1, below=True, applies="video")
    chunk_frames: int | None = option(None, int, "dreamed video: cut it into chunks of this many "
                                      "frames, which run at once on --workers or --ray (default "
                                      "with them: 48), each starting --warmup_frames early and "
                                      "cross-faded into the chunk before", GROUPS[10], minimum=1,
                                      applies="video")
    warmup_frames: int = option(10, int, "dreamed video in chunks: frames each chunk after the "
                                "first dreams before its own, over which the video cross-fades "
                                "from the chunk before to it", GROUPS[10], minimum=0,
                                applies="video")
    flow: str = option("dis", str, "dreamed video: how the previous dream follows the motion: "
                       "OpenCV's DIS optical flow, or none (each frame dreamed on its own)",
                       GROUPS[10], choices=FLOWS, applies="video")

    def __post_init__(self):
        _check_fields(self)


def options_from_keywords(options: dict[str, Any], *classes) -> tuple:
    """One instance of each options class from keyword arguments (each takes its own
    names); an unknown name is a TypeError naming the closest known one."""
    names = [f.name for cls in classes for f in dataclasses.fields(cls)]
    for name in options:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = (f"; did you mean '{close[0]}'?" if close
                    else f"; see help(cnnvis.{classes[0].__name__})")
            raise TypeError(f"unknown option '{name}'{hint}")
    return tuple(cls(**{f.name: options[f.name] for f in dataclasses.fields(cls) if f.name in options})
                 for cls in classes)


@dataclass(frozen=True)
class CommandOptions:
    """The command line's other options: model files, output, reporting and model tools."""

    recipe: str | None = option(None, str, "a named set of options tuned per model (see "
                                "--list_recipes), e.g. dream; options given beside it apply "
                                "last", GROUPS[0], metavar="NAME",
                                recorded=False)   # what it sets is recorded
    model: str = option("bvlc_googlenet", str, "model preset (see --list_models); "
                        "--deploy_txt/--caffe_model override its files; or a network of "
                        "one's own: model.onnx, file.py:function, torchvision:NAME, timm:NAME",
                        GROUPS[0])
    input_size: str | None = option(None, str, "HxW: the input of a network of one's own "
                                    "(default: its file's or library's, else 224x224)",
                                    GROUPS[0], metavar="HxW")
    channel_order: str | None = option(None, str, "RGB or BGR: the channel order of a network "
                                       "of one's own (default: its file's, else RGB)",
                                       GROUPS[0], choices=("RGB", "BGR"))
    input_mean: str | None = option(None, str, "A,B,C in 0..1, in its channel order: the mean "
                                    "that a network of one's own subtracts (default: its file's, "
                                    "else ImageNet's)", GROUPS[0], metavar="A,B,C")
    input_std: str | None = option(None, str, "A,B,C: what a network of one's own divides by "
                                   "after the mean (default: its file's, else ImageNet's)",
                                   GROUPS[0], metavar="A,B,C")
    deploy_txt: str | None = option(None, str, "Caffe .prototxt of the CNN (input blob 'data'); "
                                    "$CAFFE_ROOT and ~ are expanded", GROUPS[0], path=True)
    caffe_model: str | None = option(None, str, "Caffe .caffemodel with the CNN's weights",
                                     GROUPS[0], path=True)
    mean_image: str | None = option(None, str, ".npy mean image (3,H,W) or BGR mean colour (3,); "
                                    "default: the model's mean colour", GROUPS[0], path=True)
    gpu: int = option(0, int, "CUDA device; negative: CPU", GROUPS[0], recorded=False)
    backend: str = option("torch", str, "engine for the CNN: PyTorch, or real Caffe (pycaffe, "
                          "optional; scripts/install_pycaffe.sh installs it)", GROUPS[0],
                          choices=BACKENDS)
    precision: str = option("fp32", str, "number type of the network's work (the image and "
                            "the optimiser stay fp32): bf16 on CPUs with AVX-512 BF16 and on "
                            "CUDA, fp16 on CUDA; faster, less exact gradients", GROUPS[0],
                            choices=PRECISIONS)
    initial_image: str | None = option(None, str, "image to start from (default: smoothed noise)",
                                       GROUPS[2], path=True)
    guide_image: str | None = option(
        None, str, "image whose features the (single) target layer is pulled towards "
        "(DeepDream's guided dream)", GROUPS[1], metavar="IMAGE", path=True)
    mask: str | None = option(
        None, str, "greyscale image: each pixel's step times its grey level / 255, so black "
        "never changes and white dreams fully", GROUPS[2], metavar="IMAGE", path=True)
    seed: int | None = option(None, int, "random seed (default: a fresh one, recorded in the "
                              "output PNG)", GROUPS[2], minimum=0,
                              maximum=2 ** 63 - 1)  # what torch's generator takes
    output_file: str = option("out.png", str, "the picture to write (.png; 8-bit .jpg or .webp); for a "
                              "zoom sequence or a dreamed video a .mp4, .webm or .gif", GROUPS[9], recorded=False,
                              path=True)
    output_depth: int = option(8, int, "bits per channel of the PNGs written", GROUPS[9],
                               choices=OUTPUT_DEPTHS)
    iter_behavior: str = option("save+print", str, "actions every output_iter steps, joined "
                                f"with '+': {', '.join(ACTIONS)}", GROUPS[9], recorded=False)
    show_width: float = option(5.0, float, "inches, 0.5 to 100", GROUPS[9], minimum=0.5,
                               maximum=100, recorded=False)
    show_height: float = option(5.0, float, "inches, 0.5 to 100", GROUPS[9], minimum=0.5,
                                maximum=100, recorded=False)
    replay: str | None = option(None, str, "run again the command recorded in a PNG that cnn-vis "
                                "wrote (same seed); options given beside it apply last",
                                GROUPS[11], metavar="PNG", recorded=False, replayed=False, path=True)
    trust_recorded_paths: bool = option(
        False, bool, "with --replay: also take from the PNG the files it names (--initial_image, "
        "--deploy_txt, ...) and --backend caffe; without it, repeat the ones you want",
        GROUPS[11], recorded=False, replayed=False)
    classify: str | None = option(None, str, "print the model's top 5 classes for IMAGE",
                                  GROUPS[11], metavar="IMAGE", recorded=False, applies="tool", path=True)
    layer_gallery: bool = option(False, bool, "make (once; cached in $CNN_VIS_HOME) a contact "
                                 "sheet of what each layer of the model does to a photo and "
                                 "to noise, and print its path", GROUPS[11], recorded=False,
                                 applies="tool")
    list_recipes: bool = option(False, bool, "list the recipes (--recipe) with what each makes",
                                GROUPS[11], recorded=False, applies="tool")
    list_models: bool = option(False, bool, "list the model presets", GROUPS[11], recorded=False, applies="tool")
    list_layers: bool = option(False, bool, "list the model's targetable blobs with their shapes "
                               "(needs no weights)", GROUPS[11], recorded=False, applies="tool")
    download: str | None = option(None, str, "download a preset's weights ahead of time",
                                  GROUPS[11], metavar="NAME", recorded=False, applies="tool")
    debug: bool = option(False, bool, "show tracebacks for errors (also CNN_VIS_DEBUG=1)",
                         GROUPS[11], recorded=False, replayed=False)
    studio: bool = _studio_option(False, bool, "start the studio, a web app for dreaming in a "
                                  "browser (needs pip install 'cnn-vis[studio]'), and print its address")
    port: int = _studio_option(7860, int, "the studio's port", minimum=1, maximum=65535)
    listen: str = _studio_option("127.0.0.1", str, "the address the studio listens on; one beyond "
                                 "this machine needs --auth (or --no_auth)", metavar="HOST")
    auth: str | None = _studio_option(None, str, "the name and password the studio asks for",
                                      metavar="USER:PASSWORD")
    no_auth: bool = _studio_option(False, bool, "let a studio that --listen opens beyond this "
                                   "machine go without --auth: anyone who reaches it can use it")
    max_upload_mb: float = _studio_option(25.0, float, "the largest photo or clip the studio "
                                          "takes, in MB", minimum=0, above=True)
    max_upload_megapixels: float = _studio_option(40.0, float, "the largest photo (or frame of a "
                                                  "clip) the studio takes, in millions of pixels",
                                                  minimum=0, above=True)
    max_upload_seconds: float = _studio_option(60.0, float, "the longest video the studio "
                                               "takes, in seconds", minimum=0, above=True)
    input_video: str | None = option(None, str, "video to dream frame by frame, each at its own "
                                     "size (or --final_size)", GROUPS[10], metavar="VIDEO", path=True, applies="video")
    start_frame: int = option(1, int, "first frame of --input_video to dream (from 1)",
                              GROUPS[10], minimum=1, applies="video")
    end_frame: int | None = option(None, int, "last frame of --input_video to dream (default: "
                                   "its last)", GROUPS[10], minimum=1, recorded=False, applies="video")
    fps: float | None = option(None, float, "frames per second of the output video (default: "
                               "the input video's, else 24; at most 1000)", GROUPS[10], minimum=0,
                               above=True, maximum=1000, recorded=False, applies="sequence")
    resume: bool = option(False, bool, "reuse the frames already in {stem}_frames/ that this "
                          "same command made, and make the rest", GROUPS[10], recorded=False, applies="sequence")
    workers: int | None = option(None, int, "jobs run at once, each in its own process with "
                                 "its share of the CPU threads, or its own GPU where there are "
                                 "several (default: 1; with --ray, every CPU or GPU Ray has)",
                                 GROUPS[12], minimum=1, maximum=4096, recorded=False, replayed=False, applies="jobs")
    ray: str | None = option(None, str, "run the jobs as tasks of a Ray cluster: its address, "
                             "auto for the running one, or local to start one here (needs "
                             "pip install cnn-vis[ray])", GROUPS[12], metavar="ADDRESS", recorded=False, replayed=False, applies="jobs")
    ray_timeout: float = option(30.0, float, "seconds to wait for the Ray cluster at --ray's "
                                "address to answer before saying so", GROUPS[12], minimum=0,
                                above=True, metavar="SECONDS", recorded=False, replayed=False,
                                applies="jobs")

    def __post_init__(self):
        _check_fields(self)


def option_settings(cls) -> Iterator[tuple[dataclasses.Field, Setting]]:
    """The fields of an options class with their `Setting`s, in declaration order."""
    for f in dataclasses.fields(cls):
        yield f, f.metadata["setting"]


def check_seed(seed: Any) -> int | None:
    """`seed` if it is a valid --seed (None: a fresh one is drawn later)."""
    return CommandOptions(seed=seed).seed


OPTION_CLASSES = (CommandOptions, DreamOptions, AnimationOptions)


def all_options() -> Iterator[tuple[dataclasses.Field, Setting]]:
    """Every option of the table: the animation's, then the command's, then the dream's."""
    for cls in (AnimationOptions, CommandOptions, DreamOptions):
        yield from option_settings(cls)


def option_names(**facts) -> list[str]:
    """The names of the options whose `Setting` has these facts, e.g. recorded=False."""
    return [f.name for f, setting in all_options()
            if all(getattr(setting, fact) == value for fact, value in facts.items())]


_DEFAULTS = {f.name: f.default for f, _ in all_options()}


def default(name: str) -> Any:
    """The default of option `name`, as the table gives it (no other module retypes one)."""
    return _DEFAULTS[name]
