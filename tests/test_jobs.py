"""cnnvis.jobs at its doors (Nothing lost 3): jobs and models checked before any work."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cnnvis
from cnnvis import jobs

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

    monkeypatch.setattr(jobs, "LocalWorkers", Workers)
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

    monkeypatch.setattr(jobs, "LocalWorkers", no_pool)
    monkeypatch.setattr(jobs, "RayTasks", no_pool)
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
