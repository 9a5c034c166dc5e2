"""Large jobs: many pictures from one run, one job each, here, in local worker processes or
as the tasks of a Ray cluster.

A job is one picture: a start (noise, or a photo) and the options in which it differs from
the run's (an atlas' neuron). Job k of a run gets the seed `seed + k`, so that its picture
is the same wherever it runs: alone, one job after the other, in local workers or on a
cluster. Results come back to the caller as they finish, with their pixels; the caller
writes them (so the workers need no shared file system).

- Here (`workers` 1): one job after the other, with the model the caller loaded.
- Local workers (`workers` N): N processes, each loading the model once, with its share
  of the CPU threads (or a GPU of its own where there are several). A worker that dies
  is replaced and its job run again, up to RETRIES times.
- Ray (`ray`: an address, "auto", or "local" to start a cluster here): one task per job,
  each worker process loading the model once; Ray runs the task of a worker that died
  again, up to RETRIES times.

Photos are read on the caller's side, a few jobs ahead, so that memory does not grow
with the number of jobs; an unreadable one fails its job, and the others go on. The
workers and Ray tasks themselves are `cnnvis.pools`'.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnvis.errors import UserError
from cnnvis.imageio import ImageInput, as_photo
from cnnvis.model import VisModel
from cnnvis.objectives import Objective
from cnnvis.pixels import MAX_LEVEL
from cnnvis.plan import (build_objective, check_combinations, check_model, grey_mask, new_seed,
                         parse_list, plan_picture, resolve_target, run_plan)
from cnnvis.pools import RETRIES, WORKER_DIED, open_pool
from cnnvis.settings import CommandOptions, DreamOptions, check_seed, default
from cnnvis.tiling import checkerboard_groups
from cnnvis.zoo import ModelSpec


@dataclass(frozen=True)
class Job:
    """One picture of a large job: its name (how it is reported: "neuron 5", a file), its
    seed, its start image (a file, a PIL image or a uint8 RGB array; None: noise) and the
    options in which it differs from the run's (e.g. {"target_neuron": 5})."""

    name: str
    seed: int
    image: ImageInput = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        """Each field checked now, with the command line's messages (not where it is used)."""
        if not isinstance(self.name, str):
            raise TypeError(f"a Job's name is a str (how it is reported, e.g. 'neuron 5'), "
                            f"not {type(self.name).__name__}")
        if self.seed is None:
            raise TypeError("a Job's seed is an int from 0 to 2^63 - 1, not None")
        check_seed(self.seed)
        if not isinstance(self.options, Mapping):
            raise TypeError("a Job's options are a mapping of option names to values (e.g. "
                            f"{{'target_neuron': 5}}), not {type(self.options).__name__}")
        DreamOptions.from_keywords(dict(self.options))   # their names and values


@dataclass(frozen=True, eq=False)   # pixels do not compare as values; results are handles
class JobResult:
    """A finished job: its pixels (H, W, 3; uint8, or uint16 at depth 16) and the objective
    of the finished picture (summed over the regions that tile it, as `print` reports a
    step's), or, for a job that failed, None and the reason (its input is bad, its image
    stopped being finite, or its worker died on every try)."""

    job: Job
    rgb: np.ndarray | None
    objective: float | None
    error: str | None = None


@dataclass(frozen=True)
class _Plan:
    """What every job of a run shares; sent to each worker once."""

    options: DreamOptions
    guide_rgb: np.ndarray | None
    mask_grey: np.ndarray | None
    depth: int


def run_jobs(jobs: Iterable[Job], model: VisModel | ModelSpec, *, guide: ImageInput = None,
             mask: ImageInput = None, depth: int = default("output_depth"),
             workers: int | None = None, ray: str | None = None,
             ray_timeout: float = default("ray_timeout"), **options) -> Iterator[JobResult]:
    """Run `jobs`, yielding each one's result as soon as it finishes (so not in order).

    `options` are the `cnnvis.DreamOptions` of every job (a job's own options replace
    them); `guide` and `mask` are `cnnvis.dream`'s. `model`: a loaded model runs the jobs
    here; local workers (`workers` > 1) and Ray (`ray`) need a `ModelSpec`. The cluster
    at `ray`'s address has `ray_timeout` seconds to answer.
    """
    check_model(model, specs=True)
    CommandOptions(workers=workers, ray=ray, ray_timeout=ray_timeout)   # their values
    if depth not in MAX_LEVEL:
        raise ValueError(f"depth must be 8 or 16, not {depth}")
    jobs = list(jobs)
    plan = _Plan(DreamOptions.from_keywords(options),
                 None if guide is None else as_photo(guide, "--guide_image"),
                 None if mask is None else grey_mask(mask), depth)
    check_combinations(plan.options, any(job.image is not None for job in jobs),
                       plan.guide_rgb is not None)
    # No more workers than jobs: each would load the model for nothing.
    return _results(jobs, open_pool(model, plan, _render, workers, ray, ray_timeout, most=len(jobs)))


def atlas(image: ImageInput, model: VisModel | ModelSpec, *, neurons: Sequence[int] | str,
          seed: int | None = None, **keywords) -> Iterator[JobResult]:
    """One picture per neuron (channel) of the target layer, each made on its own from
    `image` (None: noise), with amplify_neuron: `neurons` is a list, text such as
    "0-15,40", or "all". Neuron k of the list gets the seed `seed + k`. Other keywords
    are `run_jobs`'.
    """
    check_model(model, specs=True)
    seed = check_seed(seed)
    seed = new_seed() if seed is None else seed
    names = {f.name for f in dataclasses.fields(DreamOptions)}
    options = DreamOptions.from_keywords(
        {name: value for name, value in keywords.items() if name in names})
    if isinstance(neurons, str):
        checker = model if isinstance(model, VisModel) else model.load("cpu")
        neurons = neuron_list(neurons, checker, options)
    return run_jobs(atlas_jobs(neurons, seed, image), model, **keywords)


def atlas_jobs(neurons: Sequence[int], seed: int, image: ImageInput = None) -> list[Job]:
    return [Job(f"neuron {neuron}", seed + k, image, {"image_type": "amplify_neuron",
                                                     "target_neuron": neuron})
            for k, neuron in enumerate(neurons)]


def image_jobs(paths: Sequence[Path], seed: int) -> list[Job]:
    return [Job(str(path), seed + k, path) for k, path in enumerate(paths)]


def neuron_list(text: str, model: VisModel, options: DreamOptions) -> list[int]:
    """The neurons of --target_neuron's `text` ("0-15,40", or "all": every channel of the
    single target layer), each checked against the layer."""
    layer = resolve_target(model, options.target_layer)
    if options.target_layer and "," in options.target_layer:
        raise UserError(f"--target_neuron {text} makes an atlas of one layer's neurons, and "
                        f"--target_layer names several; name one.")
    count = model.check_target(layer)[1]
    if text.strip() == "all":
        return list(range(count))
    neurons = parse_list(text, "--target_neuron", int)
    for neuron in neurons:   # the message of a single neuron outside the layer
        build_objective(model, dataclasses.replace(options, target_neuron=neuron))
    if len(set(neurons)) < len(neurons):
        raise UserError(f"--target_neuron {text} names a neuron twice; name each once.")
    return neurons


# --------------------------------------------------------------------------- one job


def _render(model: VisModel, plan: _Plan, job: Job, photo: np.ndarray | None) -> JobResult:
    settings = dataclasses.replace(plan.options, **job.options)
    try:
        objective = build_objective(model, settings, plan.guide_rgb)
        picture = run_plan(plan_picture(settings, photo, plan.mask_grey, model.input_size,
                                        model.device, job.seed), model, objective)
    except UserError as error:   # also NonFiniteImage
        return JobResult(job, None, None, str(error))
    return JobResult(job, picture.rgb(plan.depth), objective_value(model, objective, picture.image))


def objective_value(model: VisModel, objective: Objective, image: torch.Tensor) -> float:
    """The objective of image (1, 3, H, W), summed over the regions that tile it."""
    regions = [region for group in checkerboard_groups(*image.shape[-2:], *model.input_size)
               for region in group]
    return 0.0 - sum(float(model.objective_gradient(image[0][region.slices][None], objective)[0])
                for region in regions)


# --------------------------------------------------------------------------- scheduling


def _results(jobs: list[Job], pool) -> Iterator[JobResult]:
    """Each job's result as it finishes, with at most `pool.slots` jobs (and their photos)
    in flight; a job whose worker died runs again, up to `pool.retries` times."""
    queue = iter(jobs)
    running: dict[Any, tuple[Job, np.ndarray | None, int]] = {}   # handle -> job, photo, tries
    try:
        while True:
            while len(running) < pool.slots and (job := next(queue, None)) is not None:
                try:
                    photo = None if job.image is None else as_photo(job.image)
                except UserError as error:
                    yield JobResult(job, None, None, str(error))
                    continue
                running[pool.submit(_without_image(job), photo)] = (job, photo, 1)
            if not running:
                return
            for handle, outcome in pool.wait(list(running)):
                job, photo, tries = running.pop(handle)
                if outcome is not WORKER_DIED:
                    yield dataclasses.replace(outcome, job=job)
                elif tries <= pool.retries:
                    running[pool.submit(_without_image(job), photo)] = (job, photo, tries + 1)
                else:
                    yield JobResult(job, None, None, f"{WORKER_DIED}, {RETRIES + 1} times")
    finally:
        pool.close()


def _without_image(job: Job) -> Job:
    """The job as it travels to a worker: its photo goes beside it, already read."""
    return dataclasses.replace(job, image=None)
