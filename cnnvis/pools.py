"""Where jobs run: here, in local worker processes or as the tasks of a Ray cluster
(`cnnvis.jobs` schedules a large job's pictures, `cnnvis.chunks` a video's chunks). Each
worker loads the model once and runs `render(model, plan, job, photo)` for each job it is
sent (a picture, or a few frames of a chunk).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import multiprocessing
import os
import re
import signal
import socket
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

import numpy as np
import torch

from cnnvis.engine import keep_freed_memory
from cnnvis.errors import UserError
from cnnvis.model import VisModel
from cnnvis.settings import default
from cnnvis.zoo import ModelSpec

RETRIES = 3   # further tries of a job whose worker died (Ray's default for tasks too)
WORKER_DIED = "the worker process running it died (out of memory, or killed)"
# One job in a worker: (model, plan, job, photo) -> its result.
Render = Callable[[VisModel, Any, Any, "np.ndarray | None"], Any]


def runs_here(workers: int | None, ray: str | None) -> bool:
    """Whether jobs given these --workers and --ray run in the caller's process."""
    return ray is None and (workers or 1) == 1


def open_pool(model: VisModel | ModelSpec, plan: Any, render: Render, workers: int | None,
              ray: str | None, ray_timeout: float = default("ray_timeout"),
              most: int | None = None):
    """Where jobs run: here (`workers` 1, with `model` loaded here if it is a `ModelSpec`),
    in `workers` local processes (no more than `most`: each would load the model for
    nothing) or on the Ray cluster at `ray`; the model's files are checked first, here."""
    if runs_here(workers, ray):
        return Here(model.load() if isinstance(model, ModelSpec) else model, plan, render)
    if not isinstance(model, ModelSpec):
        raise TypeError("workers and Ray load the model themselves: give a cnnvis.ModelSpec, "
                        "not a loaded model")
    if ray is not None:
        model.check(device=False)   # here, not as every task's error (the cluster's devices)
        return RayTasks(model, plan, ray, workers, render, ray_timeout)
    model.check()   # here, not as every worker's death
    return LocalWorkers(model, plan, max(1, workers if most is None else min(workers, most)), render)


class Here:
    """Jobs run one after the other in this process, with the model the caller loaded."""

    slots, retries = 1, 0

    def __init__(self, model: VisModel, plan: Any, render: Render):
        self.model, self.plan, self.render = model, plan, render

    def submit(self, job: Any, photo: Any) -> "_Finished":
        return _Finished(self.render(self.model, self.plan, job, photo))

    def wait(self, handles: list["_Finished"]) -> list[tuple["_Finished", Any]]:
        return [(handle, handle.outcome) for handle in handles]

    def close(self) -> None:
        pass


class _Finished:
    """A job that ran here: its handle (a job's outcome need not be hashable)."""

    def __init__(self, outcome: Any):
        self.outcome = outcome


class LocalWorkers:
    """Jobs run in `workers` processes of this machine (spawned, not forked: PyTorch's
    threads do not survive a fork), each with its share of the CPU threads, or its own GPU
    where there are several. A pool whose process died is replaced."""

    def __init__(self, spec: ModelSpec, plan: Any, workers: int, render: Render):
        self.spec, self.plan, self.slots, self.retries = spec, plan, workers, RETRIES
        self.render = render
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
            initargs=(self.spec, self.plan, self.render, self.threads, self.devices, started))

    def submit(self, job: Any, photo: np.ndarray | None) -> concurrent.futures.Future:
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
                outcomes.append((future, future.result()))   # raises the model's error
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


# A local worker's render, model and plan, or the error that its model's loading raised.
_worker: tuple[Render, VisModel, Any] | Exception | None = None


def _start_worker(spec: ModelSpec, plan: Any, render: Render, threads: int, devices: list,
                  started) -> None:
    global _worker
    # Ctrl-C reaches the whole process group; the caller keeps what is finished and ends us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    with started.get_lock():
        number, started.value = started.value, started.value + 1
    try:
        _worker = (render, _load_in_worker(spec, devices[number % len(devices)]), plan)
    except Exception as error:  # noqa: BLE001 - raised by each job: the caller ends the run
        _worker = error         # (raised here, it would be a worker's death, run again)


def _run_in_worker(job: Any, photo: np.ndarray | None) -> Any:
    if isinstance(_worker, Exception):   # the model did not load here
        raise _worker
    render, model, plan = _worker
    return render(model, plan, job, photo)


class RayTasks:
    """Jobs run as Ray tasks, each asking for one CPU, or one GPU where the cluster has
    GPUs (and the model is not asked for on the CPU); each worker loads the model once."""

    retries = 0   # Ray runs again the task of a worker that died

    def __init__(self, spec: ModelSpec, plan: Any, address: str, workers: int | None,
                 render: Render, timeout: float = default("ray_timeout")):
        ray = self.ray = import_ray()
        # Ray's own log lines (its warnings, the workers' output) only for debugging.
        debug = (os.environ.get("CNN_VIS_DEBUG") == "1"
                 or logging.getLogger("cnnvis").isEnabledFor(logging.DEBUG))
        quiet = {"logging_level": "warning" if debug else "error", "log_to_driver": debug}
        try:
            if address == "local":
                ray.init(address="local", num_cpus=workers or os.cpu_count(),
                         include_dashboard=False, **quiet)
            else:
                probe_cluster(address, timeout)
                ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise UserError(f"--ray {address}: cannot connect to a Ray cluster ({error}); start "
                            "one with 'ray start --head', give its address (HOST:6379), or use "
                            "--ray local to start one on this machine.") from None
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if spec.device != "cpu" else 0
        self.slots = workers or max(1, gpus or int(resources.get("CPU", 1)))
        self.task = ray.remote(_ray_job).options(
            max_retries=RETRIES, **({"num_gpus": 1} if gpus else {"num_cpus": 1}))
        self.shared = ray.put((dataclasses.replace(spec, device="cuda" if gpus else "cpu"), plan,
                               render))
        self.died = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)

    def submit(self, job: Any, photo: np.ndarray | None):
        return self.task.remote(self.shared, job, photo)

    def wait(self, handles: list) -> list[tuple[Any, Any]]:
        done, _ = self.ray.wait(handles, num_returns=1)
        outcomes = []
        for reference in done:
            try:
                outcomes.append((reference, self.ray.get(reference)))
            except self.died:
                outcomes.append((reference, WORKER_DIED))
            except self.ray.exceptions.RayTaskError as error:   # the model did not load there
                if isinstance(error.cause, UserError):
                    raise UserError(str(error.cause)) from None
                raise
        return outcomes

    def close(self) -> None:
        self.ray.shutdown()   # the driver leaves: tasks still in flight end with it


def probe_cluster(address: str, timeout: float) -> None:
    """A UserError within about `timeout` seconds unless a gRPC server (as the head of a Ray
    cluster is, and Ray's client server) answers at `address`, when it is HOST:PORT (or
    ray://HOST:PORT): ray.init would otherwise retry for minutes, printing its log lines."""
    match = _HOST_PORT.fullmatch(address.strip())
    if match is None:
        return   # 'auto': the cluster that Ray knows of here
    host, port = match["host"], int(match["port"])
    fix = (f"start one there (ray start --head --port {port}), check the address (the head's "
           "'ray start' prints it), use --ray local to start one on this machine, or give a "
           "longer --ray_timeout")
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(_HTTP2_PREFACE)
            answer = b""
            while len(answer) < 9:   # an HTTP/2 frame's header; a server's first is SETTINGS
                connection.settimeout(max(deadline - time.monotonic(), 0.01))
                received = connection.recv(9 - len(answer))
                if not received:
                    break
                answer += received
    except socket.timeout:
        raise UserError(f"--ray {address}: no Ray cluster answered within {timeout:g} s "
                        f"(timed out); {fix}.") from None
    except OSError as error:
        raise UserError(f"--ray {address}: no Ray cluster answered within {timeout:g} s "
                        f"({error.strerror or error}); {fix}.") from None
    if len(answer) < 9 or answer[3] != 0x04:
        raise UserError(f"--ray {address}: something answered within {timeout:g} s, but not a Ray "
                        f"cluster (its head's port, 6379 by default, speaks gRPC); {fix}.")


_HOST_PORT = re.compile(r"(?:ray://)?\[?(?P<host>[^\[\]/]+?)\]?:(?P<port>\d{1,5})")
# A client's HTTP/2 connection preface and its empty SETTINGS frame (RFC 9113, 3.4).
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


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


def _ray_job(shared: tuple[ModelSpec, Any, Render], job: Any, photo: np.ndarray | None) -> Any:
    spec, plan, render = shared
    return render(_worker_model(spec), plan, job, photo)
