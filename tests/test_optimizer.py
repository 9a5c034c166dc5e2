"""The optimisation loop against hand computations (RMSProp, schedules, resets, update order)."""
import dataclasses
import math
from functools import partial

import numpy as np
import pytest
import torch

import cnnvis.optimizer as optimizer
from cnnvis.model import VisModel
from cnnvis.errors import NonFiniteImage
from cnnvis.finiteness import LastFinite
from cnnvis.objectives import amplify_neuron
from cnnvis.optimizer import Dream
from cnnvis.settings import DreamOptions
from cnnvis.tiling import checkerboard_groups, reachable_positions

DECAY = 0.95
FIRST_STEP = 1 / math.sqrt(1 - DECAY)  # |step| / lr of a fresh RMSProp cache: |g| / sqrt((1-d) g^2)


class DoublingNetwork(torch.nn.Module):
    """A 4x4-input 'network' whose only blob is 2 * input; records every batch of tiles it sees."""

    input_size = (4, 4)
    blob_names = ["double"]

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x, target):
        self.seen.append(x.detach().clone())
        return 2 * x

    def forward_blobs(self, x, targets):
        return {"double": self.forward(x, "double")}

    def blobs(self, x):
        return {"double": 2 * x}


class Recorder:
    def __init__(self):
        self.steps, self.reports = [], []

    def step_done(self, size_index, step):
        self.steps.append((size_index, step))

    def report(self, report):
        self.reports.append(report)


def settings(**overrides) -> DreamOptions:
    # amplify_neuron on channel 0 of 2*x: the CNN gradient is exactly -2 on channel 0, 0 elsewhere.
    values = dict(image_type="amplify_neuron", target_layer="double",
                  target_neuron=0, num_steps=1, p_reg=0.0, tv_reg=0.0, decay_rate=DECAY,
                  output_iter=1000)
    values.update(overrides)
    return DreamOptions(**values)


def start(network, recorder, sizes=((4, 4),), **overrides) -> Dream:
    options = settings(**overrides)
    return Dream(VisModel(network, "doubling", mean_bgr=(0.0, 0.0, 0.0)), options, list(sizes),
                 {"double": amplify_neuron(options.target_neuron)},
                 callback=recorder.report, progress=recorder.step_done)


def dream(initial, **overrides):
    """The image, the network that ran (the engine's own copy) and the recorder."""
    recorder = Recorder()
    run = start(DoublingNetwork(), recorder, **overrides)
    return run.run(initial, None), run.model.engine.network, recorder


def test_two_rmsprop_steps_by_hand():
    image, _, _ = dream(torch.zeros(1, 3, 4, 4), num_steps=2, learning_rate=0.5)
    # Step 1: cache = 0.05 * 4 = 0.2, step = 0.5 * 2 / sqrt(0.2).
    # Step 2: cache = 0.95 * 0.2 + 0.05 * 4 = 0.39, step = 0.5 * 2 / sqrt(0.39).
    expected = 0.5 * 2 / math.sqrt(0.2 + 1e-8) + 0.5 * 2 / math.sqrt(0.39 + 1e-8)
    np.testing.assert_allclose(image[0, 0].numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(image[0, 1:].numpy(), 0)   # no gradient, no regulariser: unchanged


def test_learning_rate_decay_and_tv_schedule_fire_after_the_right_steps(monkeypatch):
    # TV replaced by a constant unit gradient, so its weight tv_reg shows in the step directly.
    monkeypatch.setattr(optimizer, "total_variation",
                        lambda x, beta, operator, scale: (x.sum() * 0, torch.ones_like(x)))
    steps = 5
    image_history = []

    class Spy(Recorder):
        def step_done(self, size_index, step):
            image_history.append(run.image.clone())

    run = start(DoublingNetwork(), Spy(), num_steps=steps, learning_rate=1.0,
                learning_rate_decay_iter=2, learning_rate_decay_factor=0.5, tv_reg=0.25,
                tv_reg_step=0.5, tv_reg_step_iter=3)
    run.run(torch.zeros(1, 3, 4, 4), None)

    lr, tv, cache, x = 1.0, 0.25, 0.0, 0.0
    for t in range(1, steps + 1):
        gradient = 0 + tv                            # channel 1: no CNN gradient, only TV
        cache = DECAY * cache + (1 - DECAY) * gradient ** 2
        x += -lr * gradient / math.sqrt(cache + 1e-8)
        assert image_history[t - 1][0, 1, 0, 0].item() == pytest.approx(x, rel=1e-5), t
        if t % 3 == 0:
            tv += 0.5
        if t % 2 == 0:
            lr *= 0.5


def test_state_resets_between_sizes_and_pixel_rates_divide_by_coverage():
    # Sizes 4x4 then 6x6: at 6x6, tiles start at 0 and 2 on each axis (4 regions).
    image, network, recorder = dream(torch.zeros(1, 3, 4, 4), sizes=((4, 4), (6, 6)), num_steps=3,
                                     learning_rate=1.0, learning_rate_decay_iter=1,
                                     learning_rate_decay_factor=0.1)
    assert recorder.steps == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert image.shape == (1, 3, 6, 6)
    # Pixel (0, 0) lies only in region (0, 0). Were cache or learning rate carried over from
    # size 1, its first step at size 2 would not be the fresh-state step 1 * FIRST_STEP * 1.
    sizes_two = network.seen[-12:]  # 3 steps x 4 regions, batch 1
    assert all(tile.shape == (1, 3, 4, 4) for tile in sizes_two)

    reset, _, _ = dream(torch.zeros(1, 3, 6, 6), sizes=((6, 6),), num_steps=1)
    with_rates, _, _ = dream(torch.zeros(1, 3, 6, 6), sizes=((6, 6),), num_steps=1,
                             use_pixel_learning_rates=True)
    # Fresh state: each covering region moves a pixel by FIRST_STEP (lr 1).
    assert reset[0, 0, 0, 0].item() == pytest.approx(FIRST_STEP, rel=1e-6)   # 1 region
    assert reset[0, 0, 0, 3].item() == pytest.approx(2 * FIRST_STEP, rel=1e-6)  # 2 regions
    assert reset[0, 0, 3, 3].item() == pytest.approx(4 * FIRST_STEP, rel=1e-6)  # 4 regions
    np.testing.assert_allclose(with_rates[0, 0].numpy(), FIRST_STEP, rtol=1e-6)  # divided by count

    # Continuing from the size-1 result, the size-2 step 1 at pixel (0, 0) is again FIRST_STEP.
    before = torch.nn.functional.interpolate(
        dream(torch.zeros(1, 3, 4, 4), num_steps=3, learning_rate=1.0, learning_rate_decay_iter=1,
              learning_rate_decay_factor=0.1)[0], size=(6, 6), mode="bicubic", align_corners=False)
    after_one, _, _ = dream(before, sizes=((6, 6),), num_steps=1)
    assert after_one[0, 0, 0, 0].item() - before[0, 0, 0, 0].item() == pytest.approx(FIRST_STEP, rel=1e-5)


def test_group_gradients_use_the_image_from_the_start_of_the_group():
    initial = torch.arange(3 * 6 * 6, dtype=torch.float32).reshape(1, 3, 6, 6) / 100
    _, network, _ = dream(initial, sizes=((6, 6),), num_steps=1, batch_size=1)
    # Regions x-tile-major: (0,0), (1,0), (0,1), (1,1); even = (0,0), (1,1); odd = (1,0), (0,1).
    even_first, even_second, odd_first, odd_second = network.seen
    np.testing.assert_array_equal(even_first[0].numpy(), initial[0, :, 0:4, 0:4].numpy())
    # Region (1,1) overlaps (0,0) at rows/cols 2-3, which (0,0) has already updated; the CNN
    # still saw the image as it was at the start of the group.
    np.testing.assert_array_equal(even_second[0].numpy(), initial[0, :, 2:6, 2:6].numpy())
    # The odd group sees the image after both even updates (channel 0 moved by FIRST_STEP per region).
    assert odd_first[0, 0, 0, 0].item() == pytest.approx(initial[0, 0, 2, 0].item() + FIRST_STEP)


def test_batched_and_unbatched_gradients_give_the_same_image():
    initial = torch.randn(1, 3, 7, 9, generator=torch.Generator().manual_seed(0))
    one, _, _ = dream(initial, sizes=((7, 9),), num_steps=2, batch_size=1, p_reg=1e-3, tv_reg=0.5)
    many, _, _ = dream(initial, sizes=((7, 9),), num_steps=2, batch_size=8, p_reg=1e-3, tv_reg=0.5)
    np.testing.assert_array_equal(one.numpy(), many.numpy())


def test_reports_every_output_iter_steps():
    _, _, recorder = dream(torch.zeros(1, 3, 4, 4), num_steps=7, output_iter=3)
    assert [r.step for r in recorder.reports] == [3, 6]
    report = recorder.reports[0]
    assert report.mean_gradients["cnn"] == pytest.approx(2 / 3)   # |-2| on one channel of three
    assert report.objective > 0


def test_non_finite_image_stops_and_keeps_the_last_finite_image():
    run = start(DoublingNetwork(), Recorder(), num_steps=3, learning_rate=5e37)
    with pytest.raises(NonFiniteImage, match="step 2 of size 1"):
        run.run(torch.zeros(1, 3, 4, 4), None)
    assert torch.isfinite(run.image).all()
    assert run.image[0, 0, 0, 0].item() == pytest.approx(5e37 * FIRST_STEP, rel=1e-5)


def test_region_windows_are_made_once_per_size_and_shift():
    cpu = torch.device("cpu")
    windows = optimizer.RegionWindows(10, 12, optimizer.RMSPropCaches(10, 12, (4, 4), 1, cpu), cpu)
    region = checkerboard_groups(10, 12, 4, 4)[0][0]             # the tile at (0, 0)
    assert windows.at(region, (0, 0))[0] == optimizer.Window(slice(0, 4), slice(0, 4))
    image_window, cache_window = windows.at(region, (1, 0))      # rows wrap around the top
    np.testing.assert_array_equal(image_window.rows.numpy(), [9, 0, 1, 2])
    np.testing.assert_array_equal(image_window.cols.numpy(), [0, 1, 2, 3])
    again = windows.at(region, (1, 0))
    assert again[0].rows is image_window.rows and again[1].rows is cache_window.rows
    # The cache layer of even rows holds only the rows an even tile reaches at some shift.
    in_layer = optimizer._compact_indices(reachable_positions(10, 4, 0, 1))
    np.testing.assert_array_equal(cache_window.rows.numpy(), in_layer[[9, 0, 1, 2]])


HOST_READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")


def test_one_host_read_per_report_step_and_none_on_other_steps(monkeypatch):
    """The GPU's way (the finiteness flag kept on the device), on CPU tensors: a report step
    reads its diagnostics and the flag in one `read_to_host`, the other steps read nothing
    but the last step of a size (the flag). Any other read of a tensor in the loop counts as
    a stray one; the callbacks' own reads and the jitter's (its generator is on the host) do
    not count."""
    monkeypatch.setattr(optimizer, "LastFinite", partial(LastFinite, on_device=True))
    counting, stray, reads, reads_by_step = [True], [], [0], {}

    def paused(function):
        def call(*args, **kwargs):
            counting[0] = False
            try:
                return function(*args, **kwargs)
            finally:
                counting[0] = True
        return call

    for name in HOST_READS:
        def method(self, *args, _original=getattr(torch.Tensor, name), _name=name, **kwargs):
            if counting[0]:
                stray.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, method)
    read_to_host = paused(optimizer.read_to_host)

    def counted_read(values):
        reads[0] += 1
        return read_to_host(values)
    monkeypatch.setattr(optimizer, "read_to_host", counted_read)
    monkeypatch.setattr(Dream, "_jitter_shift", paused(Dream._jitter_shift))

    recorder = Recorder()

    def step_done(size_index, step):
        reads_by_step[size_index, step] = reads[0]
        reads[0] = 0

    # 8x10 then 10x12 with 4x4 tiles: 6, then 9 regions; batches of 2; every term weighed.
    run = start(DoublingNetwork(), recorder, sizes=((8, 10), (10, 12)), num_steps=5,
                output_iter=2, jitter=1, batch_size=2, p_reg=1e-3, p_reg_aux=1e-3, tv_reg=0.5,
                use_pixel_learning_rates=True)
    run.progress, run.callback = paused(step_done), paused(recorder.report)
    initial = torch.randn(1, 3, 8, 10, generator=torch.Generator().manual_seed(0))
    image = run.run(initial, None, mask_grey=np.full((10, 12), 200, dtype=np.uint8))

    assert stray == []
    assert reads_by_step == {(size, step): 1 if step in (2, 4, 5) else 0
                             for size in (1, 2) for step in range(1, 6)}
    assert [(r.size_index, r.step) for r in recorder.reports] == [(1, 2), (1, 4), (2, 2), (2, 4)]
    # The same run with the CPU's watch (a read at every step) gives the same, to the bit.
    monkeypatch.undo()
    again = start(DoublingNetwork(), Recorder(), sizes=((8, 10), (10, 12)), num_steps=5,
                  output_iter=2, jitter=1, batch_size=2, p_reg=1e-3, p_reg_aux=1e-3, tv_reg=0.5,
                  use_pixel_learning_rates=True)
    again.callback = (reports := []).append
    assert torch.equal(again.run(initial, None, mask_grey=np.full((10, 12), 200, dtype=np.uint8)),
                       image)
    assert [dataclasses.replace(r, picture=None) for r in reports] == [
        dataclasses.replace(r, picture=None) for r in recorder.reports]


def test_report_sums_are_those_of_the_regions_read_one_by_one():
    """The float64 sums made on the device equal Python's sums of each region's values."""
    network, recorder = DoublingNetwork(), Recorder()
    run = start(network, recorder, sizes=((6, 6),), num_steps=2, output_iter=2, p_reg=1e-3,
                tv_reg=0.5, batch_size=1)
    initial = torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    run.run(initial, None)
    report = recorder.reports[0]
    # amplify_neuron on 2*x, batch 1: the objective is the sum over the 4 regions' tiles of
    # 2 * channel 0, each read as a float (float32 sums, added in float64 in region order).
    tiles = run.model.engine.network.seen[-4:]   # the engine's own copy ran
    expected = 0.0
    for tile in tiles:
        expected -= float(-(2 * tile)[:, 0].sum())
    assert report.objective == expected
    cnn_gradient = torch.zeros(3, 4, 4)
    cnn_gradient[0] = -2
    total = 0.0
    for _ in tiles:
        total += float(cnn_gradient.abs().mean())
    assert report.mean_gradients["cnn"] == total / 4
