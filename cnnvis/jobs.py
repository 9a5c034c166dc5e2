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
with the number of jobs; an unreadable one fails its job, and the others go on.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
import signal
from concurrent.futures.process import BrokenProcessPool
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnvis.engine import keep_freed_memory
from cnnvis.errors import UserError
from cnnvis.imageio import ImageInput, as_photo
from cnnvis.model import VisModel
from cnnvis.objectives import Objective
from cnnvis.pixels import MAX_LEVEL
from cnnvis.plan import (build_objective, check_combinations, check_model, grey_mask, new_seed,
                         parse_list, plan_picture, resolve_target, run_plan)
from cnnvis.settings import DreamOptions, check_seed, default
from cnnvis.tiling import checkerboard_groups
from cnnvis.zoo import ModelSpec

RETRIES = 3   # further tries of a job whose worker died (Ray's default for tasks too)
WORKER_DIED = "the worker process running it died (out of memory, or killed)"


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
             workers: int | None = None,
             ray: str | None = None, **options) -> Iterator[JobResult]:
    """Run `jobs`, yielding each one's result as soon as it finishes (so not in order).

    `options` are the `cnnvis.DreamOptions` of every job (a job's own options replace
    them); `guide` and `mask` are `cnnvis.dream`'s. `model`: a loaded model runs the jobs
    here; local workers (`workers` > 1) and Ray (`ray`) need a `ModelSpec`.
    """
    check_model(model, specs=True)
    if depth not in MAX_LEVEL:
        raise ValueError(f"depth must be 8 or 16, not {depth}")
    jobs = list(jobs)
    plan = _Plan(DreamOptions.from_keywords(options),
                 None if guide is None else as_photo(guide, "--guide_image"),
                 None if mask is None else grey_mask(mask), depth)
    check_combinations(plan.options, any(job.image is not None for job in jobs),
                       plan.guide_rgb is not None)
    if ray is None and (workers or 1) == 1:
        if isinstance(model, ModelSpec):
            model = model.load()
        pool = _Here(model, plan)
    elif not isinstance(model, ModelSpec):
        raise TypeError("workers and Ray load the model themselves: give a cnnvis.ModelSpec, "
                        "not a loaded model")
    elif ray is not None:
        pool = _RayTasks(model, plan, ray, workers)
    else:   # no more workers than jobs: each would load the model for nothing
        pool = _LocalWorkers(model, plan, max(1, min(workers, len(jobs))))
    return _results(jobs, pool)


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


class _Here:
    """Jobs run one after the other in this process."""

    slots, retries = 1, 0

    def __init__(self, model: VisModel, plan: _Plan):
        self.model, self.plan = model, plan

    def submit(self, job: Job, photo: np.ndarray | None) -> JobResult:
        return _render(self.model, self.plan, job, photo)

    def wait(self, handles: list[JobResult]) -> list[tuple[JobResult, JobResult]]:
        return [(result, result) for result in handles]

    def close(self) -> None:
        pass


class _LocalWorkers:
    """Jobs run in `workers` processes of this machine (spawned, not forked: PyTorch's
    threads do not survive a fork), each with its share of the CPU threads, or its own GPU
    where there are several. A pool whose process died is replaced."""

    def __init__(self, spec: ModelSpec, plan: _Plan, workers: int):
        self.spec, self.plan, self.slots, self.retries = spec, plan, workers, RETRIES
        self.threads = max(1, torch.get_num_threads() // workers)
        gpus = torch.cuda.device_count() if spec.device in (None, "cuda") else 0
        self.devices = ([f"cuda:{k % gpus}" for k in range(workers)] if gpus > 1
                        else [spec.device] * workers)
        self.generation = 0
        self.born: dict[concurrent.futures.Future, int] = {}   # future -> its pool's generation
        self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        # Worker k of the pool takes device k: a shared count, not a queue of the devices
        # (a queue's thread, its pipe full of the devices of workers never started, would
        # keep this process from exiting).
        started = context.Value("i", 0)
        self.executor = concurrent.futures.ProcessPoolExecutor(
            self.slots, mp_context=context, initializer=_start_worker,
            initargs=(self.spec, self.plan, self.threads, self.devices, started))

    def submit(self, job: Job, photo: np.ndarray | None) -> concurrent.futures.Future:
        try:
            future = self.executor.submit(_run_in_worker, job, photo)
        except BrokenProcessPool:   # a worker died since the last wait: the pool takes no more
            self._restart()
            future = self.executor.submit(_run_in_worker, job, photo)
        self.born[future] = self.generation
        return future

    def wait(self, handles: list[concurrent.futures.Future]) -> list[tuple[Any, Any]]:
        done, _ = concurrent.futures.wait(handles, return_when=concurrent.futures.FIRST_COMPLETED)
        outcomes, broken = [], False
        for future in done:
            try:
                outcomes.append((future, future.result()))
            except BrokenProcessPool:
                outcomes.append((future, WORKER_DIED))
                broken |= self.born[future] == self.generation
            del self.born[future]
        if broken:   # every job of the broken pool fails with it: a new pool runs them again
            self._restart()
        return outcomes

    def _restart(self) -> None:
        """A new pool; the futures of the old one fail as WORKER_DIED without restarting it."""
        self._end(wait=False)
        self.generation += 1
        self._start()

    def close(self) -> None:
        self._end(wait=not self.born)

    def _end(self, wait: bool) -> None:
        """Shut the pool down; unless `wait`, its processes are ended now (a run stopped
        by Ctrl-C does not wait for the jobs in flight, whose results would be lost)."""
        if not wait:
            # ProcessPoolExecutor has no public way to end its processes (before 3.14).
            for process in list((self.executor._processes or {}).values()):
                process.terminate()
        self.executor.shutdown(wait=wait, cancel_futures=True)


_worker: tuple[VisModel, _Plan] | None = None   # a local worker's model and plan


def _start_worker(spec: ModelSpec, plan: _Plan, threads: int, devices: list, started) -> None:
    global _worker
    # Ctrl-C reaches the whole process group; the caller keeps what is finished and ends us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    with started.get_lock():
        number, started.value = started.value, started.value + 1
    _worker = (_load_in_worker(spec, devices[number % len(devices)]), plan)


def _run_in_worker(job: Job, photo: np.ndarray | None) -> JobResult:
    return _render(*_worker, job, photo)


class _RayTasks:
    """Jobs run as Ray tasks, each asking for one CPU, or one GPU where the cluster has
    GPUs (and the model is not asked for on the CPU); each worker loads the model once."""

    retries = 0   # Ray runs again the task of a worker that died

    def __init__(self, spec: ModelSpec, plan: _Plan, address: str, workers: int | None):
        ray = self.ray = import_ray()
        try:
            if address == "local":
                ray.init(address="local", num_cpus=workers or os.cpu_count(),
                         include_dashboard=False, logging_level="warning")
            else:
                ray.init(address=address, logging_level="warning")
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise UserError(f"--ray {address}: cannot connect to a Ray cluster ({error}); start "
                            "one with 'ray start --head', give its address (HOST:6379), or use "
                            "--ray local to start one on this machine.") from None
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if spec.device != "cpu" else 0
        self.slots = workers or max(1, gpus or int(resources.get("CPU", 1)))
        self.task = ray.remote(_ray_job).options(
            max_retries=RETRIES, **({"num_gpus": 1} if gpus else {"num_cpus": 1}))
        self.shared = ray.put((dataclasses.replace(spec, device="cuda" if gpus else "cpu"), plan))
        self.died = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)

    def submit(self, job: Job, photo: np.ndarray | None):
        return self.task.remote(self.shared, job, photo)

    def wait(self, handles: list) -> list[tuple[Any, Any]]:
        done, _ = self.ray.wait(handles, num_returns=1)
        outcomes = []
        for reference in done:
            try:
                outcomes.append((reference, self.ray.get(reference)))
            except self.died:
                outcomes.append((reference, WORKER_DIED))
        return outcomes

    def close(self) -> None:
        self.ray.shutdown()   # the driver leaves: tasks still in flight end with it


def import_ray():
    """The ray module, imported now (it takes seconds): an optional dependency."""
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray, which is not installed here; install it with "
                        "pip install 'cnn-vis[ray]' (or pip install ray).") from None
    return ray


def _load_in_worker(spec: ModelSpec, device: str | None = None) -> VisModel:
    """A worker process's model, with the malloc setting of the process that started it."""
    model = spec.load(device)
    if spec.keep_freed_memory and model.device.type == "cpu":
        keep_freed_memory()
    return model


@functools.lru_cache(maxsize=1)
def _worker_model(spec: ModelSpec) -> VisModel:
    return _load_in_worker(spec)


def _ray_job(shared: tuple[ModelSpec, _Plan], job: Job, photo: np.ndarray | None) -> JobResult:
    spec, plan = shared
    return _render(_worker_model(spec), plan, job, photo)
