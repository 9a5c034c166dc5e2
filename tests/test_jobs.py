"""cnnvis.jobs at its doors (Nothing lost 3): jobs and models checked before any work."""
from __future__ import annotations

import pytest

import cnnvis


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
