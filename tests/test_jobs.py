"""cnnvis.jobs at its doors (Nothing lost 3): jobs and models checked before any work."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import cnnvis
from cnnvis import jobs, pools

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("fields, error, message", [
    (dict(name="a", seed="s"), cnnvis.UserError, "--seed 's' is not an integer"),
    (dict(name="a", seed=1.5), cnnvis.UserError, "--seed '1.5' is not an integer"),
    (dict(name="a", seed=True), cnnvis.UserError, "--seed 'True' is not an integer"),
    (dict(name="a", seed=-1), cnnvis.UserError, "--seed -1 must be at least 0"),
    (dict(name="a", seed=2 ** 63), cnnvis.UserError, f"--seed {2 ** 63} must be at most"),
    (dict(name="a", seed=None), TypeError, "a Job's seed is an int from 0 to 2\\^63 - 1, not None"),
    (dict(name=5, seed=0), TypeError, "a Job's name is a str .*, not int"),
    (dict(name="a", seed=0, options=[("target_neuron", 5)]), TypeError,
     "a Job's options are a mapping of option names to values .*, not list"),
    (dict(name="a", seed=0, options={"target_neuro": 5}), TypeError,
     "unknown option 'target_neuro'; did you mean 'target_neuron'"),
    (dict(name="a", seed=0, options={"target_neuron": -2}), cnnvis.UserError,
     "--target_neuron -2 must be at least 0"),
])
def test_a_job_of_wrong_fields_is_refused_when_made(fields, error, message):
    with pytest.raises(error, match=message):
        cnnvis.Job(**fields)


def test_a_job_of_right_fields_is_made():
    job = cnnvis.Job("neuron 5", 2 ** 63 - 1, None, {"image_type": "amplify_neuron", "target_neuron": 5})
    assert job.seed == 2 ** 63 - 1 and job.options["target_neuron"] == 5


def test_no_more_workers_start_than_there_are_jobs(monkeypatch, tiny_model):
    started = []

    class Workers:
        slots, retries = 1, 0

        def __init__(self, spec, plan, workers, render):
            started.append(workers)

        def submit(self, job, photo):
            return jobs.JobResult(job, None, None, "not run")   # its own handle

        def wait(self, handles):
            return [(result, result) for result in handles]

        def close(self):
            pass

    monkeypatch.setattr(pools, "LocalWorkers", Workers)
    spec = cnnvis.ModelSpec(deploy_txt=tiny_model[1], caffe_model=tiny_model[3], device="cpu")
    for count, workers, expected in ((3, 4096, 3), (3, 2, 2), (0, 8, 1)):
        listed = [cnnvis.Job(f"job {k}", k) for k in range(count)]
        assert len(list(cnnvis.run_jobs(listed, spec, workers=workers))) == count
        assert started.pop() == expected


def test_more_workers_than_jobs_write_every_picture_and_exit(tiny_model, tmp_path):
    """--workers 4096 for 2 jobs: the pictures, then the process exits (before, a thread
    writing 4096 workers' devices into a full pipe kept it from exiting)."""
    output = tmp_path / "out.png"
    result = subprocess.run(
        [sys.executable, str(ROOT / "cnn_vis.py"), *tiny_model, "--image_type", "amplify_neuron",
         "--target_neuron", "0-1", "--num_steps", "2", "--iter_behavior", "", "--seed", "1",
         "--workers", "4096", "--output_file", str(output)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out_atlas" / "conv2").iterdir()) == [
        "0000.png", "0001.png"]


@pytest.mark.parametrize("pool", [{"workers": 2}, {"ray": "local", "workers": 1}])
def test_a_model_that_cannot_load_is_its_error_before_any_worker_starts(
        monkeypatch, tiny_model, tmp_path, pool):
    def no_pool(*args):
        raise AssertionError("a pool started")

    monkeypatch.setattr(pools, "LocalWorkers", no_pool)
    monkeypatch.setattr(pools, "RayTasks", no_pool)
    listed = [cnnvis.Job(f"job {k}", k) for k in range(3)]
    deploy, weights = tiny_model[1], tiny_model[3]
    for spec, message in (
            (cnnvis.ModelSpec("no_such_model"), "unknown model 'no_such_model'"),
            (cnnvis.ModelSpec(deploy_txt=tmp_path / "none.prototxt", caffe_model=weights),
             "cannot read network definition (prototxt)"),
            (cnnvis.ModelSpec(deploy_txt=deploy, caffe_model=tmp_path / "none.caffemodel"),
             "cannot read weights file (caffemodel)")):
        with pytest.raises(cnnvis.UserError, match=re.escape(message)):
            cnnvis.run_jobs(listed, spec, target_layer="conv2", **pool)


@pytest.mark.parametrize("pool", [{"workers": 2}, {"ray": "local", "workers": 1}])
def test_a_model_that_fails_to_load_in_the_workers_is_its_error_once(tiny_model, tmp_path, pool):
    """Weights that only loading finds corrupt: the error of the first job whose worker
    tried, not a worker's death run again 4 times."""
    corrupt = tmp_path / "corrupt.caffemodel"
    corrupt.write_bytes(b"\x0a\x05not a caffemodel at all")
    spec = cnnvis.ModelSpec(deploy_txt=tiny_model[1], caffe_model=corrupt, device="cpu")
    spec.check()   # the file is there: only loading it says what it is
    results = cnnvis.run_jobs([cnnvis.Job(f"job {k}", k) for k in range(3)], spec,
                              target_layer="conv2", num_steps=1, **pool)
    with pytest.raises(cnnvis.UserError) as error:
        list(results)
    assert str(error.value).startswith(f"{corrupt} is not a Caffe .caffemodel (it is truncated "
                                       "or corrupt")
    assert jobs.WORKER_DIED not in str(error.value)


def test_a_ray_address_where_nothing_listens_is_one_line_within_the_timeout(tiny_model, tmp_path):
    """127.0.0.2:1, on the loopback, where nothing listens: one line naming the address, the
    timeout and the fix, and none of Ray's (Ray retried for minutes, printing its own)."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "cnn_vis.py"), *tiny_model, "--image_type", "amplify_neuron",
         "--target_neuron", "0-1", "--num_steps", "2", "--iter_behavior", "", "--ray",
         "127.0.0.2:1", "--ray_timeout", "2", "--output_file", str(tmp_path / "out.png")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "cnn-vis: error: --ray 127.0.0.2:1: no Ray cluster answered within 2 s (Connection "
        "refused); start one there (ray start --head --port 1), check the address (the head's "
        "'ray start' prints it), use --ray local to start one on this machine, or give a longer "
        "--ray_timeout."]
    assert time.monotonic() - started < 60   # the interpreter, torch and ray imported
    assert not (tmp_path / "out_atlas").exists()


@pytest.fixture
def loopback_server():
    """A server on 127.0.0.1 that answers each connection with `answer` (b"": silence);
    yields a function that sets the answer and gives the address."""
    server = socket.create_server(("127.0.0.1", 0))
    answer = [b""]
    connections = []

    def serve():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            connections.append(connection)
            if answer[0]:
                connection.sendall(answer[0])

    threading.Thread(target=serve, daemon=True).start()

    def address(reply: bytes) -> str:
        answer[0] = reply
        return f"127.0.0.1:{server.getsockname()[1]}"

    yield address
    server.close()
    for connection in connections:
        connection.close()


def test_a_ray_address_that_answers_but_is_no_cluster_is_said_within_the_timeout(
        loopback_server, tiny_model):
    http = loopback_server(b"HTTP/1.1 400 Bad Request\r\n\r\n")   # Ray's dashboard port, say
    with pytest.raises(cnnvis.UserError, match=f"^--ray {http}: something answered within 1 s, "
                                               "but not a Ray cluster .*; start one there"):
        pools.probe_cluster(http, 1)
    started = time.monotonic()
    silent = loopback_server(b"")
    with pytest.raises(cnnvis.UserError, match=f"^--ray {silent}: no Ray cluster answered within "
                                               r"0.5 s \(timed out\)"):
        pools.probe_cluster(silent, 0.5)
    assert time.monotonic() - started < 5
    spec = cnnvis.ModelSpec(deploy_txt=tiny_model[1], caffe_model=tiny_model[3], device="cpu")
    with pytest.raises(cnnvis.UserError, match="--ray_timeout 0 must be above 0"):
        cnnvis.run_jobs([cnnvis.Job("a", 0)], spec, ray=http, ray_timeout=0)
    loopback_server(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with pytest.raises(cnnvis.UserError, match=f"^--ray {http}: something answered"):
        cnnvis.run_jobs([cnnvis.Job("a", 0)], spec, ray=http, ray_timeout=1, target_layer="conv2")
    # An HTTP/2 server's first frame is SETTINGS, as the head of a Ray cluster sends (only
    # probed here: ray.init would go on to this machine's own address, not the loopback).
    pools.probe_cluster(loopback_server(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])), 1)
    for address in ("auto", "local"):
        pools.probe_cluster(address, 1)   # Ray's own (nothing to probe)
