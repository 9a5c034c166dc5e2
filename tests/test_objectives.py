"""The controls beyond 2015: several layers with weights, channels, a guide image, jitter,
a mask and the photo's own colours. Each is off by default, and off changes nothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import cnnvis
from cnnvis.caffe import CaffeNet, parse_prototxt
from cnnvis.caffe.writer import blob_proto
from cnnvis.plan import noise_image
from cnnvis.cli import main
from cnnvis.engine import TorchEngine
from cnnvis.model import VisModel
from cnnvis.objectives import amplify_layer, amplify_neuron, guided, weighted
from cnnvis.optimizer import Dream, RMSPropCaches
from cnnvis.regularizers import p_norm
from cnnvis.settings import DreamOptions
from cnnvis.tiling import checkerboard_groups
from tests.cli_contract import refused
from tests.caffe.test_net import TINY, tiny_weights


# ----------------------------------------------------------------------------- gradients

@pytest.fixture(scope="module")
def engine() -> TorchEngine:
    """The tiny Caffe network in float64, so that finite differences are exact enough."""
    weights = {name: [blob_proto(a) for a in arrays] for name, arrays in tiny_weights().items()}
    return TorchEngine(CaffeNet(parse_prototxt(TINY), weights).eval().double())


def finite_difference_check(engine: TorchEngine, objective, seed: int = 0) -> None:
    """The engine's input gradient against central differences of the loss it reports."""
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    _, gradient = engine.objective_gradient(x, objective)
    rng = np.random.default_rng(seed)
    for index in [tuple(int(rng.integers(0, n)) for n in x.shape) for _ in range(12)]:
        step = torch.zeros_like(x)
        step[index] = 1e-6
        plus = engine.objective_gradient(x + step, objective)[0]
        minus = engine.objective_gradient(x - step, objective)[0]
        numeric = float(plus - minus) / 2e-6
        assert gradient[index].item() == pytest.approx(numeric, rel=1e-4, abs=1e-7), index


def test_several_layers_with_weights_match_finite_differences(engine):
    # norm1 feeds cat: the deeper blob's gradient flows through the shallower one as well.
    finite_difference_check(engine, {
        "norm1": weighted(0.7, amplify_layer(1.0, 0.5, 2.0)),
        "cat": weighted(-1.5, amplify_layer(1.0, 1.0, 5.0)),
        "fc": amplify_neuron(2)})


def test_one_pass_equals_the_weighted_sum_of_single_passes(engine):
    x = torch.randn(3, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    parts = {"norm1": (0.7, amplify_layer(1.0, 0.5, 2.0)), "cat": (-1.5, amplify_layer(1, 1, 5))}
    loss, gradient = engine.objective_gradient(x, {n: weighted(w, o) for n, (w, o) in parts.items()})
    singles = [engine.objective_gradient(x, {n: o}) for n, (_, o) in parts.items()]
    torch.testing.assert_close(gradient, sum(w * g for (w, _), (_, g) in zip(parts.values(), singles)))
    assert loss.item() == pytest.approx(sum(w * l.item() for (w, _), (l, _) in
                                            zip(parts.values(), singles)))


def test_channels_match_finite_differences_and_ignore_the_others(engine):
    finite_difference_check(engine, {"cat": amplify_layer(1.0, 1.0, 5.0, channels=[0, 3])})
    a = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    loss, top = amplify_layer(1.0, 1.0, 5.0, channels=[0, 3])(a)
    assert top[:, [1, 2, 4]].abs().max() == 0 and top[:, 0].abs().sum() > 0 and top[:, 3].abs().sum() > 0
    full_loss, full_top = amplify_layer(1.0, 1.0, 5.0)(a[:, [0, 3]])
    assert loss.item() == pytest.approx(full_loss.item())


def test_guide_matches_finite_differences_and_googles_rule(engine):
    guide = torch.randn(1, 5, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    finite_difference_check(engine, {"cat": guided(guide)}, seed=3)
    # Google's objective_guide: each position takes the guide vector of largest dot product.
    x = torch.randn(1, 5, 3, 3, dtype=torch.float64)
    _, top = guided(guide)(x)
    flat_x, flat_y = x.reshape(5, 9).numpy(), guide.reshape(5, 9).numpy()
    best = (flat_x.T @ flat_y).argmax(axis=1)
    np.testing.assert_allclose(top.reshape(5, 9).numpy(), -flat_y[:, best])


# ----------------------------------------------------------------------------- the optimiser


class SquareNetwork(torch.nn.Module):
    """A 'network' whose only blob is x squared, pointwise: the CNN gradient at a pixel depends
    on that pixel alone, so a roll of the image rolls the gradient."""

    input_size = (8, 8)
    blob_names = ["square"]

    def forward(self, x, target):
        return x * x

    def forward_blobs(self, x, targets):
        return {"square": x * x}

    def blobs(self, x):
        return {"square": x * x}


def square_dream(jitter: int, seed: int = 0) -> torch.Tensor:
    options = DreamOptions(target_layer="square", num_steps=6, p_reg=1e-3, tv_reg=0.0,
                           learning_rate=0.1, jitter=jitter)
    run = Dream(VisModel(SquareNetwork(), "square", (0.0, 0.0, 0.0)), options, [(8, 8)],
                {"square": amplify_layer(1.0, 1.0, 5.0)}, seed=seed)
    initial = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return run.run(initial, None)


def test_jitter_keeps_the_rmsprop_state_with_its_pixels():
    """One region covers the image and every term is pointwise: rolled consistently (image,
    RMSProp state), a jittered run is the same as an unjittered one."""
    torch.testing.assert_close(square_dream(jitter=3), square_dream(jitter=0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("jitter", [3, 11])
def test_jitter_reads_the_regions_where_the_roll_puts_them(jitter):
    """Several regions, wrapped around the edges: the same pixels, to the bit, as rolling
    the image and four whole layers of RMSProp caches at each step and rolling them back."""
    options = DreamOptions(target_layer="square", num_steps=5, p_reg=1e-3, tv_reg=0.0,
                           learning_rate=0.1, jitter=jitter)
    model = VisModel(SquareNetwork(), "square", (0.0, 0.0, 0.0))
    objective = {"square": amplify_layer(1.0, 1.0, 5.0)}
    initial = torch.randn(1, 3, 21, 13, generator=torch.Generator().manual_seed(0))
    dreamed = Dream(model, options, [(21, 13)], objective, seed=5).run(initial, None)

    shifts = torch.Generator().manual_seed(5)
    image, caches = initial.clone(), torch.zeros(4, 3, 21, 13)
    regions = checkerboard_groups(21, 13, 8, 8)
    for _ in range(options.num_steps):
        shift = tuple(torch.randint(-jitter, jitter + 1, (2,), generator=shifts).tolist())
        image, caches = (torch.roll(t, shift, dims=(-2, -1)) for t in (image, caches))
        for group in regions:
            _, gradients = model.objective_gradient(
                torch.stack([image[0][region.slices] for region in group]), objective)
            for region, gradient in zip(group, gradients):
                pixels, cache = image[0][region.slices], caches[region.parity][region.slices]
                gradient = gradient + options.p_reg * p_norm(pixels, options.alpha).gradient
                cache.mul_(options.decay_rate).addcmul_(gradient, gradient,
                                                        value=1 - options.decay_rate)
                pixels += -options.learning_rate * gradient / torch.sqrt(cache + 1e-8)
        image, caches = (torch.roll(t, (-shift[0], -shift[1]), dims=(-2, -1))
                         for t in (image, caches))
    torch.testing.assert_close(dreamed, image, rtol=0, atol=0)


def test_rmsprop_caches_take_about_one_image():
    """Four parity layers, each holding only what its regions reach: at 8K about 1.06 image
    (4 before), and a jitter adds its reach around each tile."""
    def images(jitter: int) -> float:
        layers = RMSPropCaches(4320, 7680, (224, 224), jitter, torch.device("meta")).layers
        return sum(layer.numel() for layer in layers) / (3 * 4320 * 7680)
    assert 1.0 < images(0) < 1.07
    assert 1.3 < images(16) < 1.4


def test_an_interrupted_jittered_step_keeps_the_image_unrolled():
    class InterruptedOnSecondCall(SquareNetwork):
        calls = 0

        def forward_blobs(self, x, targets):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return super().forward_blobs(x, targets)

    after_first: list[torch.Tensor] = []
    options = DreamOptions(target_layer="square", num_steps=3, tv_reg=0.0, jitter=3)
    run = Dream(VisModel(InterruptedOnSecondCall(), "square", (0.0, 0.0, 0.0)), options, [(8, 8)],
                {"square": amplify_layer(1.0, 1.0, 5.0)}, seed=4,
                progress=lambda size, step: after_first.append(run.image.clone()))
    with pytest.raises(KeyboardInterrupt):
        run.run(torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)), None)
    torch.testing.assert_close(run.image, after_first[0], rtol=0, atol=0)


def test_jitter_is_seeded_and_zero_is_today(tmp_path, tiny_model):
    def pixels(*extra) -> np.ndarray:
        output = tmp_path / "jitter.png"
        assert main(tiny_model + ["--iter_behavior", "", "--num_steps", "4", "--initial_size",
                                  "24x20", "--output_file", str(output), *extra]) == 0
        return np.asarray(Image.open(output))
    today = pixels("--seed", "1")
    np.testing.assert_array_equal(pixels("--seed", "1", "--jitter", "0"), today)
    jittered = pixels("--seed", "1", "--jitter", "5")
    np.testing.assert_array_equal(pixels("--seed", "1", "--jitter", "5"), jittered)
    assert not np.array_equal(jittered, today)
    assert not np.array_equal(pixels("--seed", "2", "--jitter", "5"), pixels("--seed", "2"))


@pytest.fixture
def tiny(model_files) -> cnnvis.VisModel:
    deploy, weights = model_files
    return cnnvis.load_model(deploy_txt=deploy, caffe_model=weights, device="cpu")


def half_mask(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[:, width // 2:] = 255
    return mask


@pytest.mark.parametrize("start", ["photo", "noise"])
def test_black_mask_pixels_never_change_through_two_sizes(tiny, photo, start):
    options = dict(target_layer="conv2", num_steps=3, initial_size="x1", final_size="x1.5",
                   num_sizes=2, learning_rate=2.0, jitter=2)
    if start == "photo":
        result = cnnvis.render(photo, tiny, seed=0, mask=half_mask(20, 30), **options)
        expected = np.asarray(Image.open(photo).resize((45, 30), Image.BICUBIC))
        got = result.rgb()
    else:
        result = cnnvis.render(None, tiny, seed=0, mask=half_mask(16, 16), **options)
        noise = noise_image((16, 16), 1.0, 0.0, 0)
        expected = torch.nn.functional.interpolate(noise, size=(24, 24), mode="bicubic",
                                                   align_corners=False)[0].numpy()
        got = result.image[0].numpy()
    width = got.shape[1] if start == "photo" else got.shape[2]
    black = slice(0, width // 2 - 1)   # the resized mask is exactly 0 here
    if start == "photo":
        np.testing.assert_array_equal(got[:, black], expected[:, black])
        assert not np.array_equal(got[:, width // 2 + 1:], expected[:, width // 2 + 1:])
    else:
        np.testing.assert_array_equal(got[:, :, black], expected[:, :, black])
        assert np.abs(got[:, :, width // 2 + 1:] - expected[:, :, width // 2 + 1:]).max() > 1


def test_grey_mask_pixels_move_less(tiny):
    mask = np.full((16, 16), 255, np.uint8)
    mask[:, :8] = 64
    start = noise_image((16, 16), 1.0, 0.0, 0)[0].numpy()
    result = cnnvis.render(None, tiny, seed=0, mask=mask, target_layer="conv2", num_steps=1,
                           p_reg=0.0, tv_reg=0.0).image[0].numpy()
    moved = np.abs(result - start)
    # A fresh RMSProp cache makes the first step lr / sqrt(1 - decay_rate), times the mask.
    first_step = 1 / np.sqrt(1 - 0.95)
    assert moved[:, :, 9:14].max() == pytest.approx(first_step, rel=1e-3)
    assert moved[:, :, 1:6].max() == pytest.approx(64 / 255 * first_step, rel=1e-3)


def test_preserve_colors_keeps_the_photos_chroma(tiny, photo):
    result = cnnvis.render(photo, tiny, seed=0, target_layer="conv2", num_steps=5,
                           learning_rate=5.0, preserve_colors=True).rgb()
    plain = cnnvis.render(photo, tiny, seed=0, target_layer="conv2", num_steps=5,
                          learning_rate=5.0).rgb()

    def ycbcr(rgb: np.ndarray) -> np.ndarray:
        r, g, b = np.moveaxis(rgb.astype(np.float64), 2, 0)
        return np.stack([0.299 * r + 0.587 * g + 0.114 * b,
                         128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
                         128 + 0.5 * r - 0.418688 * g - 0.081312 * b])
    ours, source, dream = ycbcr(result), ycbcr(np.asarray(Image.open(photo))), ycbcr(plain)
    unclipped = ((result > 0) & (result < 255) & (plain > 0) & (plain < 255)).all(axis=2)
    assert unclipped.mean() > 0.3
    assert np.abs(ours[1:, unclipped] - source[1:, unclipped]).max() <= 1.0
    assert np.abs(ours[0, unclipped] - dream[0, unclipped]).max() <= 1.0


def test_guide_and_several_layers_through_the_api(tiny, photo):
    guided_picture = cnnvis.render(None, tiny, seed=0, target_layer="conv2", guide=photo,
                                   num_steps=3).rgb()
    plain = cnnvis.render(None, tiny, seed=0, target_layer="conv2", num_steps=3).rgb()
    assert not np.array_equal(guided_picture, plain)
    one = cnnvis.render(None, tiny, seed=0, target_layer="conv2,conv1", layer_weights="1,0",
                        num_steps=3).rgb()
    np.testing.assert_array_equal(one, plain)   # weight 0: the layer adds nothing


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("options, key_words", [
    (["--layer_weights", "1,2"], ["--layer_weights gives 2 weight(s) for 1 target layer(s)"]),
    (["--target_layer", "conv1,conv2", "--channels", "0"], ["--channels works on a single"]),
    (["--channels", "0-3,x"], ["--channels '0-3,x'", "'x' is not a channel number"]),
    (["--channels", "5-2"], ["'5-2' is not a channel number or range"]),
    (["--channels", "0,8"], ["channel 8 is outside blob 'conv2', which has 8 channels"]),
    (["--preserve_colors"], ["--preserve_colors", "give --initial_image"]),
    (["--jitter", "-1"], ["--jitter -1 must be at least 0"]),
    (["--layer_weights", "1,nan", "--target_layer", "conv1,conv2"], ["'nan' is not a finite"]),
    (["--target_layer", "conv2,conv2"], ["names 'conv2' twice"]),
    (["--target_layer", "conv2,"], ["has an empty name"]),
])
def test_bad_combinations(tiny_model, output, capsys, options, key_words):
    argv = tiny_model + ["--num_steps", "1", "--iter_behavior", "", "--output_file", str(output)]
    refused(argv + options, capsys, output, *key_words)


def test_bad_guide_and_mask_files(tiny_model, output, capsys, tmp_path, photo):
    argv = tiny_model + ["--num_steps", "1", "--iter_behavior", "", "--output_file", str(output)]
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    for option in ("--guide_image", "--mask"):
        refused(argv + [option, str(tmp_path / "missing.png")], capsys, output, option, "no such file")
        refused(argv + [option, str(text)], capsys, output, "not an image file")
    refused(argv + ["--target_layer", "conv1,conv2", "--guide_image", str(photo)], capsys,
            output, "--guide_image works on a single target layer")
    wide = tmp_path / "wide.png"
    Image.fromarray(half_mask(16, 20)).save(wide)
    refused(argv + ["--mask", str(wide)], capsys, output, "--mask is 20x16", "aspect ratio",
            "the image is 16x16")
    slightly = tmp_path / "slightly.png"   # within 1%: resized
    Image.fromarray(half_mask(200, 201)).save(slightly)
    assert main(argv + ["--mask", str(slightly)]) == 0
