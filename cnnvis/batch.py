"""A large job to a folder: an atlas (one picture per neuron, with a contact sheet and a
JSON list) or the pictures of a folder of images, run here, in local workers or on a Ray
cluster, each picture written as it comes back. Pictures that the same command made
before are kept and not made again; their seeds follow from theirs.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
import sys
from pathlib import Path

import torch

from cnnvis import jobs
from cnnvis.errors import UserError
from cnnvis.files import same_file
from cnnvis.imageio import check_writable_output, differing_settings, make_folder
from cnnvis.jobfiles import recorded, save_contact_sheet, save_job_png, save_sidecar
from cnnvis.ownership import check_own_folder, check_own_sidecar
from cnnvis.plan import check_combinations, new_seed, plan_picture, resolve_target
from cnnvis.pools import import_ray
from cnnvis.recording import option_argv, pixel_settings, recorded_text
from cnnvis.report import parse_actions, progress_bar
from cnnvis.request import Outcome, Request, read_inputs
from cnnvis.settings import AnimationOptions
from cnnvis.signals import signals_deferred
from cnnvis.zoo import select_device


ATLAS_PICTURE = re.compile(r"\d{4,}\.png")   # an atlas' picture: its neuron's number


def output_folder(request: Request, count: int) -> Path:
    """The folder that --output_file names for the pictures of several images."""
    command = request.command
    folder = request.output
    if not (command.output_file.endswith(("/", os.sep)) or folder.is_dir()):
        raise UserError(f"--initial_image {command.initial_image} gives {count} images, so "
                        f"--output_file names the folder for their pictures, and "
                        f"'{command.output_file}' is not one; end it with '/' (e.g. 'dreams/') "
                        "or give an existing folder.")
    if not folder.parent.is_dir():
        raise UserError(f"cannot make the folder '{folder}': '{folder.parent}' is not an existing "
                        f"directory; create it (mkdir -p {shlex.quote(str(folder.parent))}) or choose another "
                        "--output_file.")
    return folder


def write_jobs(request: Request, images: list[Path] | None) -> Outcome:
    """The atlas of --target_neuron's list, or the pictures of `images` (the files that
    --initial_image names), into their folder."""
    command, options, neurons = request.command, request.dream, request.neurons
    actions = parse_actions(command.iter_behavior)
    if neurons is not None and images is not None:
        raise UserError(f"--target_neuron {neurons} makes an atlas from one start, and "
                        f"--initial_image {command.initial_image} gives {len(images)} images; give "
                        "one image, or one neuron.")
    if command.ray is not None:
        import_ray()   # before any work: says how to install it
    output = request.output
    device = select_device(command.gpu)
    if images is None:
        if options.image_type != "amplify_neuron":
            raise UserError(f"--target_neuron {neurons} makes an atlas of neurons, which needs "
                            "--image_type amplify_neuron; add it.")
        check_writable_output(output)
        inputs = read_inputs(command, output)
        check_combinations(options, inputs.photo is not None, inputs.guide is not None)
        spec = request.model_spec(inputs.mean_bgr, device)
        plan_picture(options, inputs.photo, inputs.mask, spec.input_size(), device, 0)
    else:
        folder = output_folder(request, len(images))
        inputs = read_inputs(dataclasses.replace(command, initial_image=None), output)
        check_combinations(options, True, inputs.guide is not None)
        spec = request.model_spec(inputs.mean_bgr, device)
    parallel = command.ray is not None or (command.workers or 1) > 1
    # Workers load their own model: this one only checks the neurons and names the layer.
    model = spec.load(torch.device("cpu") if parallel else device)

    if images is None:
        numbers = jobs.neuron_list(neurons, model, options)
        layer = resolve_target(model, options.target_layer)
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
    if images is None:
        check_own_sidecar(output.with_suffix(".json"))
        check_own_folder(folder.parent, ATLAS_PICTURE, "the atlas' pictures")

    seed = command.seed
    if seed is None:   # the seed of the pictures made before, so that they are kept
        made = ((k, recorded(path)) for k, path in enumerate(paths) if path.is_file())
        seed = next((found[0]["seed"] - k for k, found in made if found), None)
        seed = new_seed() if seed is None else seed
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
        settings.append(pixel_settings(job_command, job_options, AnimationOptions(), seed=job.seed))
        texts.append(recorded_text(model.name, job.seed, option_argv(job_command, job_options),
                                   seed_given=True))
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
            pending, model if not parallel else dataclasses.replace(
                spec, device="cuda" if device.type == "cuda" else device.type),
            guide=inputs.guide, mask=inputs.mask, depth=command.output_depth,
            workers=command.workers, ray=command.ray, ray_timeout=command.ray_timeout,
            **dataclasses.asdict(options))
        for result in results:
            k = index[result.job.name]
            if result.error is not None:
                failed.append(result.job.name)
                bar.write(f"cnn-vis: {result.job.name} failed: {result.error}", file=sys.stderr)
            else:
                make_folder(folder, "the folder for the pictures")
                with signals_deferred():   # the file, and the list that names it, complete
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
                               dataclasses.replace(request, command=dataclasses.replace(
                                   command, seed=seed)).png_text(model.name, seed))
            save_sidecar(sidecar, {
                "model": model.name, "layer": layer, "seed": seed,
                "neurons": [{"neuron": numbers[k], "file": os.path.relpath(paths[k], sidecar.parent),
                             "objective": objectives[k], "seed": job_list[k].seed} for k in done]})
        written = f"{folder}, the contact sheet {output} and the list {sidecar}"
    finished = f"{len(objectives)} of the {len(paths)} pictures are in {written}"
    if stopped is not None:
        return Outcome(f"{finished}; the same command makes the rest.", stopped)
    if failed:
        raise UserError(f"{len(failed)} of the {len(paths)} jobs failed ({', '.join(failed)}; "
                        f"see above why); {finished}. Fix or remove what failed and run the same "
                        "command again: it makes only the missing pictures.")
    return Outcome(f"wrote {written}")
