"""The command line: every option of the 2015 README, and the recipe that runs them.

The only module that knows argparse, and a client of the public API (`cnnvis.load_model`,
`cnnvis.render`). `main` checks everything that can be checked cheaply (files, sizes,
options) before the model loads or any optimisation starts, then dreams and saves.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import re
import shlex
import sys
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cnnvis import api, jobs, zoo
from cnnvis.caffe import CaffeNet, read_prototxt
from cnnvis.caffe.net import network_input
from cnnvis.console import exit_status, guarded_process, signals_deferred
from cnnvis.engine import keep_freed_memory
from cnnvis.errors import Interrupted, NonFiniteImage, UserError
from cnnvis.files import open_input, same_file
from cnnvis.imageio import (check_writable_output, differing_settings, load_mean_colour, load_rgb,
                            make_folder, save_png)
from cnnvis.jobfiles import recorded, save_contact_sheet, save_job_png, save_sidecar
from cnnvis.model import VisModel
from cnnvis.pixels import Picture
from cnnvis.report import ConsoleObserver, progress_bar
from cnnvis.settings import (ACTIONS, GROUPS, VIDEO_SUFFIXES, AnimationOptions, CommandOptions,
                             DreamOptions, option_settings)

EXIT_USER_ERROR, EXIT_INTERNAL_ERROR = 2, 1
OPTION_CLASSES = (CommandOptions, DreamOptions, AnimationOptions)
NOT_ENOUGH_MEMORY = ("error: this machine has not enough memory for the run; use smaller sizes "
                     "(--initial_size, --final_size) or a smaller --batch_size.")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not a usage dump
        raise UserError(f"{message} (see --help).")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown where there is one to show (not None, and not a flag's False)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The options of `cnnvis.settings`, with the 2015 spellings, in --help's groups."""
    parser = _Parser(
        prog="cnn_vis.py", description="Inceptionism (DeepDream-style) images from a CNN.",
        formatter_class=_HelpFormatter)
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for options in OPTION_CLASSES:
        for field, setting in option_settings(options):
            flags = [f"--{field.name}", *setting.aliases]
            group = groups[setting.group]
            if setting.kind is bool:
                group.add_argument(*flags, dest=field.name, action="store_true", help=setting.help)
                continue
            metavar = setting.metavar or (
                "{" + ",".join(str(c) for c in setting.choices) + "}" if setting.choices else None)
            group.add_argument(*flags, dest=field.name, default=field.default, metavar=metavar,
                               type=functools.partial(setting.parse, flags[0]), help=setting.help)
    return parser


def parse_arguments(argv: list[str]) -> tuple[CommandOptions, DreamOptions, AnimationOptions,
                                              str | None, list[str]]:
    """The command's options, the dream's, the animation's, --target_neuron's list when it
    is one (an atlas), and the argv they came from (with --replay expanded into the
    recorded command)."""
    namespace = build_parser().parse_args(_negative_values_attached(argv))
    replay = namespace.replay
    if replay:
        argv = replay_argv(replay, argv)
        namespace = build_parser().parse_args(_negative_values_attached(argv))
    values = {**vars(namespace), "replay": replay}
    neurons = values["target_neuron"] if isinstance(values["target_neuron"], str) else None
    if neurons is not None:
        values["target_neuron"] = 0   # each job of the atlas has its own
    return (*(cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})
              for cls in OPTION_CLASSES), neurons, argv)


_NEGATIVE_NUMBER = re.compile(r"-(\d|\.\d|inf|nan)", re.IGNORECASE)


def _negative_values_attached(argv: list[str]) -> list[str]:
    """argv with `--option -1e-3` written `--option=-1e-3`: argparse takes a value that starts
    with '-' for an option unless it looks like a plain number ('-1', '-0.5')."""
    takes_value = {flag for options in OPTION_CLASSES
                   for field, setting in option_settings(options) if setting.kind is not bool
                   for flag in (f"--{field.name}", *setting.aliases)}
    joined: list[str] = []
    for token in argv:
        if joined and joined[-1] in takes_value and _NEGATIVE_NUMBER.match(token):
            joined[-1] = f"{joined[-1]}={token}"
        else:
            joined.append(token)
    return joined


def replay_argv(png: str, argv: list[str]) -> list[str]:
    """The command recorded in `png`, then `argv` without its --replay option."""
    command = recorded_command(png)
    if command is None:
        raise UserError(f"--replay {png}: the image holds no cnn-vis command (cnn-vis records "
                        "it in the PNGs it writes); give a PNG that cnn-vis made.")
    rest, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--replay":
            skip = True
        elif not token.startswith("--replay="):
            rest.append(token)
    return shlex.split(command)[1:] + rest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("CNN_VIS_DEBUG") == "1"
    with guarded_process():
        try:
            return run(*parse_arguments(argv))
        except UserError as error:
            return _fail(f"error: {error}", debug)
        except KeyboardInterrupt as stop:
            print("cnn-vis: interrupted.", file=sys.stderr)
            return exit_status(stop)
        except MemoryError:
            return _fail(NOT_ENOUGH_MEMORY, debug)
        except OSError as error:   # the operating system refused something not checked before
            where = f" '{error.filename}'" if error.filename else ""
            return _fail(f"error: the operating system refused{where}: {error.strerror or error}; "
                         "check the path, the free disk space and the permissions.", debug)
        except Exception as error:  # noqa: BLE001 - the last line of defence: no traceback for users
            if _out_of_memory(error):
                return _fail(NOT_ENOUGH_MEMORY, debug)
            _fail(f"internal error: {type(error).__name__}: {error}. This is a bug; please report "
                  "it with the output of the same command with --debug.", debug)
            return EXIT_INTERNAL_ERROR


def _fail(message: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"cnn-vis: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def _out_of_memory(error: Exception) -> bool:
    """PyTorch's allocators report a failed allocation as a RuntimeError (torch.OutOfMemoryError
    on CUDA)."""
    text = str(error)
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and ("can't allocate memory" in text
                                             or "out of memory" in text))


def run(command: CommandOptions, options: DreamOptions, animation: AnimationOptions,
        neurons: str | None, argv: list[str]) -> int:
    """Dispatch: a model tool, a sequence, many pictures (large jobs), or one picture."""
    expand = lambda path: path and os.path.expanduser(os.path.expandvars(path))  # noqa: E731
    command = dataclasses.replace(command, deploy_txt=expand(command.deploy_txt),
                                  caffe_model=expand(command.caffe_model))
    if command.list_models:
        print_models()
        return 0
    if command.download:
        path = zoo.download(zoo.preset(command.download))
        print(f"{command.download}: {path or 'weights come with the installed Python package'}")
        return 0
    if command.list_layers:
        print_layers(command)
        return 0
    if command.classify:
        print_classes(command)
        return 0
    images = jobs.image_files(command.initial_image) if command.initial_image else None
    if (command.input_video or animation.frames > 1
            or Path(command.output_file).suffix.lower() in VIDEO_SUFFIXES):
        check_no_jobs(command, neurons, images, "a sequence")
        return dream_frames(command, options, animation, argv)
    check_no_animation(command, animation)
    if neurons is not None or images is not None:
        return dream_jobs(command, options, neurons, images, argv)
    check_no_jobs(command, neurons, images, "one picture")
    return dream(command, options, argv)


# --------------------------------------------------------------------------- the dream


@dataclasses.dataclass
class Inputs:
    """The user's files, read and checked before any model loads."""

    photo: np.ndarray | None
    guide: np.ndarray | None
    mask: np.ndarray | None
    mean_bgr: tuple[float, float, float] | None


def read_inputs(command: CommandOptions, output: Path) -> Inputs:
    sources = ((command.initial_image, "--initial_image image"), (command.replay, "--replay image"),
               (command.guide_image, "--guide_image image"), (command.mask, "--mask image"),
               (command.input_video, "--input_video"))
    for source, what in sources:
        if source and same_file(source, output):
            raise UserError(f"--output_file {output} is the {what} itself, which the result "
                            "would replace; choose another --output_file.")
    return Inputs(photo=load_rgb(command.initial_image) if command.initial_image else None,
                  guide=load_rgb(command.guide_image, "--guide_image") if command.guide_image else None,
                  mask=api.grey_mask(command.mask) if command.mask else None,
                  mean_bgr=load_mean_colour(command.mean_image) if command.mean_image else None)


def planned_sizes(command: CommandOptions, options: DreamOptions, inputs: Inputs,
                  photo_size: tuple[int, int] | None) -> list[tuple[int, int]]:
    """The size schedule, checked against the network's input, the mask and the memory
    (the network's input size is known before its weights load)."""
    input_size = (network_input(read_prototxt(command.deploy_txt))[1][1:] if command.deploy_txt
                  else zoo.preset(command.model).input_size)
    sizes = api.plan_sizes(options, photo_size, input_size)
    if inputs.mask is not None:
        api.check_mask(inputs.mask, sizes[-1])
    return sizes


def recorded_text(model: VisModel, seed: int, command: CommandOptions,
                  argv: list[str]) -> dict[str, str]:
    """The PNG text of every image written: the model, the seed and the command (with the
    seed, so that --replay repeats it)."""
    return {"Software": "cnn-vis", "cnn-vis:model": model.name, "cnn-vis:seed": str(seed),
            "cnn-vis:command": shlex.join(["cnn_vis.py", *argv] + (
                [] if command.seed is not None else ["--seed", str(seed)]))}


def dream(command: CommandOptions, options: DreamOptions, argv: list[str]) -> int:
    """Check the inputs, load the model, dream, save. The recipe of cnn-vis."""
    actions = parse_actions(command.iter_behavior)
    output = Path(command.output_file)
    check_writable_output(output)
    inputs = read_inputs(command, output)
    photo = inputs.photo
    api.check_combinations(options, photo is not None, inputs.guide is not None)
    sizes = planned_sizes(command, options, inputs, None if photo is None else photo.shape[:2])
    device = select_device(command.gpu)
    api.check_memory(sizes, device)
    model = load_model(command, inputs.mean_bgr, device)

    seed = command.seed if command.seed is not None else api.new_seed()
    png_text = recorded_text(model, seed, command, argv)
    observer = ConsoleObserver(actions, output, command.output_depth, png_text,
                               total=len(sizes) * options.num_steps,
                               show_size=(command.show_width, command.show_height))

    if "print" in actions:
        print(describe_dream(command, options), file=sys.stderr)

    def save(picture: Picture) -> None:
        with signals_deferred():   # a signal now waits for the file to be complete
            save_png(output, picture.rgb(command.output_depth), png_text)

    try:
        try:
            picture = api.render(photo, model, seed=seed, callback=observer.report,
                                 progress=observer.step_done, guide=inputs.guide,
                                 mask=inputs.mask, **dataclasses.asdict(options))
        finally:
            observer.close()
    except NonFiniteImage as error:
        save(error.picture)
        raise UserError(f"{error}; the last finite image is saved as {output}. Lower "
                        "--learning_rate (or the regularisation strengths --p_reg, --tv_reg, "
                        "their exponents --alpha, --beta, or the weights --l1_weight, "
                        "--l2_weight) and run again.") from None
    except Interrupted as interruption:
        if interruption.picture is None:
            raise
        save(interruption.picture)
        print(f"\ncnn-vis: interrupted; the current image is saved as {output}.", file=sys.stderr)
        return exit_status(interruption)
    try:
        save(picture)
    except KeyboardInterrupt as stop:   # it came while the image was written, which finished
        print(f"\ncnn-vis: interrupted; the finished image is saved as {output}.", file=sys.stderr)
        return exit_status(stop)
    print(f"wrote {output}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- large jobs

# Options that choose where the jobs run, not what they make: a job's recorded command
# (which --replay repeats, alone) leaves them out.
NOT_REPLAYED = {"workers", "ray", "replay", "debug"}


def check_no_jobs(command: CommandOptions, neurons: str | None, images: list[Path] | None,
                  what: str) -> None:
    """Refuse options of large jobs given to a command that makes `what`."""
    if neurons is not None or images is not None:
        given = (f"--target_neuron {neurons}" if neurons is not None
                 else f"--initial_image {command.initial_image} (several images)")
        raise UserError(f"{given} makes many pictures, and this command makes {what}; give "
                        "a single neuron or image.")
    for name in ("workers", "ray"):
        if getattr(command, name) is not None:
            raise UserError(f"--{name} runs the jobs of an atlas (--target_neuron 0-15) or of a "
                            f"folder of images (--initial_image photos/), and this command "
                            f"makes {what}; drop --{name}.")


def option_argv(*settings) -> list[str]:
    """The command-line options that give these settings (those not at their default)."""
    argv = []
    for options in settings:
        for field in dataclasses.fields(options):
            value = getattr(options, field.name)
            if value != field.default and field.name not in NOT_REPLAYED:
                argv += [f"--{field.name}"] if value is True else [f"--{field.name}", str(value)]
    return argv


def output_folder(command: CommandOptions, count: int) -> Path:
    """The folder that --output_file names for the pictures of several images."""
    folder = Path(command.output_file)
    if not (command.output_file.endswith(("/", os.sep)) or folder.is_dir()):
        raise UserError(f"--initial_image {command.initial_image} gives {count} images, so "
                        f"--output_file names the folder for their pictures, and "
                        f"'{command.output_file}' is not one; end it with '/' (e.g. 'dreams/') "
                        "or give an existing folder.")
    if not folder.parent.is_dir():
        raise UserError(f"cannot make the folder '{folder}': '{folder.parent}' is not an existing "
                        f"directory; create it (mkdir -p '{folder.parent}') or choose another "
                        "--output_file.")
    return folder


def dream_jobs(command: CommandOptions, options: DreamOptions, neurons: str | None,
               images: list[Path] | None, argv: list[str]) -> int:
    """An atlas (one picture per neuron) or the pictures of a folder of images: jobs run
    here, in local workers or on a Ray cluster, each picture written as it comes back;
    pictures that the same command made before are kept and not made again."""
    actions = parse_actions(command.iter_behavior)
    if neurons is not None and images is not None:
        raise UserError(f"--target_neuron {neurons} makes an atlas from one start, and "
                        f"--initial_image {command.initial_image} gives {len(images)} images; give "
                        "one image, or one neuron.")
    if command.ray is not None:
        jobs.import_ray()   # before any work: says how to install it
    output = Path(command.output_file)
    if images is None:
        if options.image_type != "amplify_neuron":
            raise UserError(f"--target_neuron {neurons} makes an atlas of neurons, which needs "
                            "--image_type amplify_neuron; add it.")
        check_writable_output(output)
        inputs = read_inputs(command, output)
        photo_size = None if inputs.photo is None else inputs.photo.shape[:2]
        api.check_combinations(options, photo_size is not None, inputs.guide is not None)
        planned_sizes(command, options, inputs, photo_size)
    else:
        folder = output_folder(command, len(images))
        inputs = read_inputs(dataclasses.replace(command, initial_image=None), output)
        api.check_combinations(options, True, inputs.guide is not None)
    device = select_device(command.gpu)
    parallel = command.ray is not None or (command.workers or 1) > 1
    # Workers load their own model: this one only checks the neurons and names the layer.
    model = load_model(command, inputs.mean_bgr, torch.device("cpu") if parallel else device)

    if images is None:
        numbers = jobs.neuron_list(neurons, model, options)
        layer = api.resolve_target(model, options.target_layer)
        folder = output.with_name(f"{output.stem}_atlas") / layer.replace("/", "_")
        paths = [folder / f"{neuron:04d}.png" for neuron in numbers]
    else:
        paths = [folder / f"{image.stem}.png" for image in images]
        for image, path in zip(images, paths):
            if same_file(image, path):
                raise UserError(f"--output_file {folder}: the picture of {image} would replace "
                                "the image itself; choose another folder.")
        stems = {}
        for image in images:
            if stems.setdefault(image.stem, image) != image:
                raise UserError(f"--initial_image {command.initial_image}: {stems[image.stem]} "
                                f"and {image} would both make {folder / (image.stem + '.png')}; "
                                "rename one of them.")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"'{folder}', where the pictures go, is not a folder; move it away, or "
                        "choose another --output_file.")

    seed = command.seed
    if seed is None:   # the seed of the pictures made before, so that they are kept
        made = ((k, recorded(path)) for k, path in enumerate(paths) if path.is_file())
        seed = next((found[0]["seed"] - k for k, found in made if found), None)
        seed = api.new_seed() if seed is None else seed
    if seed + len(paths) - 1 > 2 ** 63 - 1:
        raise UserError(f"--seed {seed}: job {len(paths)} would get seed {seed + len(paths) - 1}, "
                        f"above 2^63 - 1; give a --seed of at most {2 ** 63 - len(paths)}.")
    job_list = (jobs.atlas_jobs(numbers, seed, inputs.photo) if images is None
                else jobs.image_jobs(images, seed))
    settings, texts = [], []
    for job, path in zip(job_list, paths):
        job_command = dataclasses.replace(
            command, seed=job.seed, output_file=str(path), workers=None, ray=None,
            initial_image=str(job.image) if images is not None else command.initial_image)
        job_options = dataclasses.replace(options, **job.options)
        settings.append(pixel_settings(job_command, job_options, AnimationOptions(), job.seed))
        texts.append(recorded_text(model, job.seed, job_command,
                                   option_argv(job_command, job_options)))
    objectives: dict[int, float] = {}   # job index -> objective, of the pictures made
    for k, path in enumerate(paths):
        found = recorded(path) if path.is_file() else None
        if found and not differing_settings(found[0], settings[k]):
            objectives[k] = found[1]
    index = {job.name: k for k, job in enumerate(job_list)}
    pending = [job for k, job in enumerate(job_list) if k not in objectives]
    if objectives:
        print(f"cnn-vis: {len(objectives)} of the {len(paths)} pictures are in {folder} from "
              f"before; making the other {len(pending)}.", file=sys.stderr)

    bar = progress_bar(len(pending), "job")
    failed: list[str] = []
    stopped: KeyboardInterrupt | None = None
    try:
        results = jobs.run_jobs(
            pending, model if not parallel else jobs.ModelSpec(
                command.model, command.deploy_txt, command.caffe_model, command.backend,
                inputs.mean_bgr, "cuda" if device.type == "cuda" else device.type,
                keep_freed_memory=True, precision=command.precision),
            guide=inputs.guide, mask=inputs.mask, depth=command.output_depth,
            workers=command.workers, ray=command.ray, **dataclasses.asdict(options))
        for result in results:
            k = index[result.job.name]
            if result.error is not None:
                failed.append(result.job.name)
                bar.write(f"cnn-vis: {result.job.name} failed: {result.error}", file=sys.stderr)
            else:
                make_folder(folder, "the folder for the pictures")
                with signals_deferred():   # a signal now waits for the file to be complete
                    save_job_png(paths[k], result.rgb, texts[k], settings[k], result.objective)
                objectives[k] = result.objective
                if "print" in actions:
                    bar.write(f"cnn-vis: {result.job.name}: objective {result.objective:.4g}; "
                              f"wrote {paths[k]}", file=sys.stderr)
            bar.update(1)
    except KeyboardInterrupt as stop:   # the finished pictures are kept, and listed below
        stopped = stop
    finally:
        bar.close()

    written = str(folder)
    if images is None and objectives:
        sidecar = output.with_suffix(".json")
        done = sorted(objectives)
        with signals_deferred():
            save_contact_sheet(output, [(str(numbers[k]), paths[k]) for k in done],
                               recorded_text(model, seed, dataclasses.replace(command, seed=seed),
                                             argv))
            save_sidecar(sidecar, {
                "model": model.name, "layer": layer, "seed": seed,
                "neurons": [{"neuron": numbers[k], "file": os.path.relpath(paths[k], sidecar.parent),
                             "objective": objectives[k], "seed": job_list[k].seed} for k in done]})
        written = f"{folder}, the contact sheet {output} and the list {sidecar}"
    finished = f"{len(objectives)} of the {len(paths)} pictures are in {written}"
    if stopped is not None:
        print(f"\ncnn-vis: interrupted; {finished}; the same command makes the rest.",
              file=sys.stderr)
        return exit_status(stopped)
    if failed:
        raise UserError(f"{len(failed)} of the {len(paths)} jobs failed ({', '.join(failed)}; "
                        f"see above why); {finished}. Fix or remove what failed and run the same "
                        "command again: it makes only the missing pictures.")
    print(f"wrote {written}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- sequences

# The options that only sequences use (beside AnimationOptions), with their defaults.
SEQUENCE_COMMAND_OPTIONS = ("input_video", "start_frame", "end_frame", "fps", "resume")
CAMERA_OPTIONS = ("zoom", "rotate", "pan")
VIDEO_OPTIONS = ("blend", "flow", "start_frame", "end_frame")
# What does not decide a picture's pixels, so that --resume (and a large job made again)
# may differ in it.
NOT_RECORDED = {"frames", "end_frame", "fps", "resume", "output_file", "iter_behavior",
                "show_width", "show_height", "debug", "replay", "output_iter", "gpu",
                "list_models", "list_layers", "classify", "download", "batch_size", "workers",
                "ray"}


def _changed(command: CommandOptions, animation: AnimationOptions, names) -> list[str]:
    """Those of `names` whose value is not the default."""
    defaults = {**{f.name: f.default for f in dataclasses.fields(CommandOptions)},
                **{f.name: f.default for f in dataclasses.fields(AnimationOptions)}}
    values = {**dataclasses.asdict(command), **dataclasses.asdict(animation)}
    return [name for name in names if values[name] != defaults[name]]


def check_no_animation(command: CommandOptions, animation: AnimationOptions) -> None:
    """Refuse options of sequences given to a single picture: they would do nothing."""
    unused = _changed(command, animation, [f.name for f in dataclasses.fields(AnimationOptions)]
                      + list(SEQUENCE_COMMAND_OPTIONS))
    if unused:
        raise UserError(f"--{unused[0]} is an option of zoom sequences and dreamed videos, and "
                        "this command makes one picture; give --frames N or --input_video VIDEO "
                        "with an --output_file ending in .mp4, .webm or .gif, or drop "
                        f"--{unused[0]}.")


def check_sequence(command: CommandOptions, animation: AnimationOptions) -> None:
    """Refuse combinations of options that cannot make the sequence asked for."""
    if command.input_video:
        if command.initial_image:
            raise UserError("--input_video and --initial_image both give the pictures to start "
                            "from; give one of them.")
        if animation.frames > 1:
            raise UserError("--frames makes a zoom sequence; a dreamed video has the frames of "
                            "--input_video (choose them with --start_frame and --end_frame).")
        unused = _changed(command, animation, CAMERA_OPTIONS)
        if unused:
            raise UserError(f"--{unused[0]} moves the camera of a zoom sequence (--frames), not "
                            "of a dreamed video; drop it.")
        if command.end_frame is not None and command.end_frame < command.start_frame:
            raise UserError(f"--end_frame {command.end_frame} comes before --start_frame "
                            f"{command.start_frame}; give an --end_frame of at least "
                            f"{command.start_frame}.")
    else:
        unused = _changed(command, animation, VIDEO_OPTIONS)
        if unused:
            raise UserError(f"--{unused[0]} is an option of dreamed videos; give --input_video "
                            f"VIDEO, or drop --{unused[0]}.")


def pixel_settings(command: CommandOptions, options: DreamOptions, animation: AnimationOptions,
                   seed: int) -> dict[str, object]:
    """Every option that decides a picture's pixels, by name (files as absolute paths)."""
    values = {**dataclasses.asdict(command), **dataclasses.asdict(options),
              **dataclasses.asdict(animation), "seed": seed}
    for name in ("deploy_txt", "caffe_model", "mean_image", "initial_image", "guide_image",
                 "mask", "input_video"):
        if values[name]:
            values[name] = os.path.abspath(values[name])
    return {name: value for name, value in values.items() if name not in NOT_RECORDED}


def dream_frames(command: CommandOptions, options: DreamOptions, animation: AnimationOptions,
                 argv: list[str]) -> int:
    """A zoom sequence or a dreamed video: frames made one at a time, each written to the
    frames folder and to the video as soon as it is finished."""
    # Only sequences need PyAV and OpenCV, which take a while to import.
    from fractions import Fraction

    from cnnvis.animation import animate, dream_video
    from cnnvis.frames import FrameStore, recorded_settings
    from cnnvis.video import DEFAULT_FPS, VideoInput, check_video_output, video_writer

    actions = parse_actions(command.iter_behavior)
    output = Path(command.output_file)
    check_sequence(command, animation)
    check_video_output(output)
    inputs = read_inputs(command, output)
    with contextlib.ExitStack() as stack:
        video = stack.enter_context(VideoInput(command.input_video)) if command.input_video else None
        photo_size = video.size if video else None if inputs.photo is None else inputs.photo.shape[:2]
        api.check_combinations(options, photo_size is not None or animation.frames > 1,
                               inputs.guide is not None)
        sizes = planned_sizes(command, options, inputs, photo_size)
        device = select_device(command.gpu)
        api.check_memory(sizes, device)

        seed = command.seed
        store_folder = output.with_name(f"{output.stem}_frames")
        recorded = recorded_settings(store_folder) if command.resume else {}
        if seed is None:
            seed = next(iter(recorded.values()))["seed"] if recorded else api.new_seed()
            argv = [*argv, "--seed", str(seed)]
        model = load_model(command, inputs.mean_bgr, device)
        png_text = recorded_text(model, seed, dataclasses.replace(command, seed=seed), argv)
        store = FrameStore(output, command.output_depth, png_text,
                           pixel_settings(command, options, animation, seed))
        if command.resume:
            store.check_resumable()
        store.check_writable()

        if video and video.frame_count and command.start_frame > video.frame_count:
            raise UserError(f"--start_frame {command.start_frame} is after the last frame of "
                            f"{video.path} ({video.frame_count}); give at most "
                            f"{video.frame_count}.")
        if video:
            last = command.end_frame or video.frame_count
            total = None if last is None else max(last - command.start_frame + 1, 0)
        else:
            total = animation.frames
        observer = ConsoleObserver(actions, output.with_suffix(".png"), command.output_depth,
                                   png_text, total=total,
                                   show_size=(command.show_width, command.show_height),
                                   frames_folder=store.folder)
        if "print" in actions:
            print(describe_dream(command, options), file=sys.stderr)
        keywords = dict(seed=seed, callback=observer.report, guide=inputs.guide, mask=inputs.mask,
                        depth=command.output_depth, stored=store.stored if command.resume else None,
                        **dataclasses.asdict(options), **dataclasses.asdict(animation))
        if video:
            sequence = dream_video(video.frames(command.start_frame, command.end_frame), model,
                                   **keywords)
        else:
            sequence = animate(inputs.photo, model, **keywords)
        fps = Fraction(command.fps).limit_denominator(1001) if command.fps else (
            video.fps if video else DEFAULT_FPS)
        sound_from = float((command.start_frame - 1) / video.fps) if video else 0.0

        writer = stack.enter_context(video_writer(output, fps, video, sound_from))
        stopped: BaseException | None = None
        try:
            for frame in sequence:
                if frame.picture is not None:
                    with signals_deferred():   # a signal now waits for the file to be complete
                        store.save(frame.number, frame.rgb)
                writer.write(frame.rgb)
                observer.frame_done(frame.number)
        except (UserError, KeyboardInterrupt) as stop:   # the finished frames make the video
            stopped = stop
        finally:
            observer.close()
        with signals_deferred():
            stack.close()   # the video is complete and in place
    if stopped is not None and writer.count == 0:
        raise stopped   # nothing was made: as for a single picture
    if writer.count == 0:
        raise UserError(f"{video.path} has no frames from --start_frame {command.start_frame} on; "
                        "give a --start_frame within the video.")
    done = f"the {writer.count} finished frame(s) are in {store.folder} and {output}"
    if isinstance(stopped, KeyboardInterrupt):
        print(f"\ncnn-vis: interrupted; {done} (--resume continues).", file=sys.stderr)
        return exit_status(stopped)
    if isinstance(stopped, NonFiniteImage):
        raise UserError(f"{stopped}; {done}. Lower --learning_rate (or the regularisation "
                        "strengths) and run again with --resume.") from None
    if stopped is not None:
        raise UserError(f"{stopped}; {done}.") from None
    print(f"wrote {output} ({writer.count} frames; each is also in {store.folder})",
          file=sys.stderr)
    return 0


def describe_dream(command: CommandOptions, options: DreamOptions) -> str:
    """The print line that opens a run: what is amplified, and the controls beyond 2015."""
    layers = options.target_layer or "the model's default layer"
    parts = [f"{options.image_type} of {layers}"]
    for text, given in ((f"weights {options.layer_weights}", options.layer_weights),
                        (f"channels {options.channels}", options.channels),
                        (f"guide {command.guide_image}", command.guide_image),
                        (f"mask {command.mask}", command.mask),
                        (f"jitter {options.jitter} px", options.jitter),
                        ("the photo's colours kept", options.preserve_colors)):
        if given:
            parts.append(text)
    return "cnn-vis: " + "; ".join(parts)


def parse_actions(text: str) -> list[str]:
    actions = [a for a in text.split("+") if a]
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        raise UserError(f"--iter_behavior '{text}' has unknown action(s) {', '.join(unknown)}; "
                        f"join any of {', '.join(ACTIONS)} with '+', e.g. save+print.")
    return actions


def recorded_command(png: str) -> str | None:
    """The command line recorded in a PNG that cnn-vis wrote, or None."""
    with open_input(png, "image", "--replay") as file:
        try:
            with Image.open(file) as image:
                return getattr(image, "text", {}).get("cnn-vis:command")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return None   # not a PNG that cnn-vis wrote: the caller says so


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


def load_model(command: CommandOptions, mean_bgr=None, device: torch.device | None = None) -> VisModel:
    device = device or select_device(command.gpu)
    if device.type == "cpu" and command.backend == "torch":
        keep_freed_memory()
    return api.load_model(command.model, deploy_txt=command.deploy_txt,
                          caffe_model=command.caffe_model, device=device,
                          backend=command.backend, mean_bgr=mean_bgr,
                          precision=command.precision)


# --------------------------------------------------------------------------- model tools


def print_models() -> None:
    print(f"{'name':22} {'trained on':40} {'weights':8} source")
    for model in zoo.PRESETS.values():
        source = model.weights.url if model.weights else "Python package (installed with cnn-vis)"
        present = "present" if zoo.weights_present(model) else "missing"
        print(f"{model.name:22} {model.training_data:40} {present:8} {source}")


def print_layers(command: CommandOptions) -> None:
    network = (CaffeNet(read_prototxt(command.deploy_txt), None).eval() if command.deploy_txt
               else zoo.architecture(zoo.preset(command.model)))
    with torch.no_grad():
        blobs = network.blobs(torch.zeros((1, 3) + tuple(network.input_size)))
    for name, value in blobs.items():
        print(f"{name:40} {' x '.join(str(d) for d in value.shape[1:])}")


def print_classes(command: CommandOptions) -> None:
    photo = load_rgb(command.classify)
    mean_bgr = load_mean_colour(command.mean_image) if command.mean_image else None
    for index, value, label in load_model(command, mean_bgr).classify(photo):
        print(f"{index:5d} {value:10.4f} {label}")
