"""--precision: bf16/fp16 network work, where it is refused, and what it costs in accuracy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as samples

import cnnvis
from cnnvis.cli import main
from cnnvis.engine import TorchEngine, cpu_supports_bf16
from cnnvis.objectives import amplify_layer
from cnnvis.pixels import rgb_to_image

needs_bf16 = pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no bfloat16 "
                                "instructions (AVX-512 BF16 or AMX)")
OBJECTIVE = amplify_layer(1.0, 1.0, 5.0)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.fixture(scope="module")
def lite0_gradients() -> dict[str, torch.Tensor]:
    """The input gradient at efficientnet_lite0's default layer for a photo (chelsea), in
    float64 and through the bf16 engine."""
    model = cnnvis.load_model("efficientnet_lite0", device="cpu")
    rgb = np.asarray(Image.fromarray(samples.chelsea()).resize((224, 224), Image.BICUBIC))
    tiles = model.network_input(rgb_to_image(rgb, model.mean_bgr))  # (1, 3, 224, 224)
    objective = {model.default_layer: OBJECTIVE}
    network = model.engine.network.double()
    reference = model.engine.objective_gradient(tiles.double(), objective)[1]
    bf16 = TorchEngine(network.float(), precision="bf16")
    return {"float64": reference, "bf16": bf16.objective_gradient(tiles, objective)[1]}


@needs_bf16
def test_bf16_gradient_points_the_way_of_float64(lite0_gradients):
    """What the engine achieves now (measured 0.86): a regression guard, not the goal."""
    assert lite0_gradients["bf16"].dtype == torch.float32
    assert _cosine(lite0_gradients["bf16"], lite0_gradients["float64"]) >= 0.80


@needs_bf16
@pytest.mark.xfail(strict=True, reason="issue 15's accuracy target, not reached: rounding the "
                   "forward pass's early activations changes which units the ReLU6s pass "
                   "(see docs/performance.md)")
def test_bf16_gradient_cosine_reaches_the_target(lite0_gradients):
    assert _cosine(lite0_gradients["bf16"], lite0_gradients["float64"]) >= 0.99


@needs_bf16
def test_bf16_through_the_api_keeps_the_first_layer_and_the_image_in_float32():
    model = cnnvis.load_model("efficientnet_lite0", device="cpu", precision="bf16")
    network = model.engine.network
    assert network._conv_stem.weight.dtype == network._bn0.weight.dtype == torch.float32
    assert network._blocks[0]._depthwise_conv.weight.dtype == torch.bfloat16
    picture = cnnvis.render(None, model, seed=0, num_steps=1, output_iter=1)
    assert picture.image.dtype == torch.float32 and torch.isfinite(picture.image).all()


def test_fp32_is_the_default_and_leaves_the_network_alone(model_files):
    deploy, weights = model_files
    model = cnnvis.load_model(deploy_txt=deploy, caffe_model=weights, device="cpu")
    assert model.engine.precision == "fp32"
    assert all(b.dtype == torch.float32 for b in model.engine.network.buffers())
    assert not any(layer._forward_pre_hooks for layer in model.engine.network.modules())


def test_fp16_on_a_cpu_is_a_user_error():
    with pytest.raises(cnnvis.UserError, match="fp16 runs on CUDA GPUs only"):
        cnnvis.load_model("efficientnet_lite0", device="cpu", precision="fp16")


@pytest.mark.skipif(cpu_supports_bf16(), reason="this CPU has bfloat16 instructions")
def test_bf16_on_a_cpu_without_it_is_a_user_error():
    with pytest.raises(cnnvis.UserError, match="no bfloat16 instructions"):
        cnnvis.load_model("efficientnet_lite0", device="cpu", precision="bf16")


def test_caffe_backend_takes_fp32_only(model_files):
    deploy, weights = model_files
    with pytest.raises(cnnvis.UserError, match="--backend caffe computes in fp32 only"):
        cnnvis.load_model(deploy_txt=deploy, caffe_model=weights, device="cpu",
                          backend="caffe", precision="bf16")


@pytest.mark.parametrize("extra, message", [
    (["--precision", "fp64"], "is not one of: fp32, bf16, fp16"),
    (["--precision", "fp16"], "fp16 runs on CUDA GPUs only"),
    (["--precision", "bf16", "--backend", "caffe"], "--backend caffe computes in fp32 only"),
])
def test_cli_refuses_precisions_it_cannot_run(tmp_path, tiny_model, capsys, extra, message):
    output = tmp_path / "out.png"
    assert main(tiny_model + ["--output_file", str(output), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


def test_tiles_per_run_follow_the_free_gpu_memory():
    from cnnvis.engine import bytes_per_tile, tiles_per_run_for_memory
    per_tile = bytes_per_tile({"conv1": (64, 112, 112), "prob": (1000,)}, 2)
    assert per_tile == 2 * 2 * (64 * 112 * 112 + 1000)
    assert tiles_per_run_for_memory(40 * per_tile, per_tile) == 30    # a quarter kept free
    assert tiles_per_run_for_memory(per_tile // 2, per_tile) == 1     # never none
    assert tiles_per_run_for_memory(10 ** 15, per_tile) == 512        # capped
    assert tiles_per_run_for_memory(10 ** 15, per_tile, most=64) == 64


def test_the_device_side_finiteness_watch_keeps_the_last_finite_image():
    """The GPU's way (no host read but on report steps), run on CPU tensors."""
    from cnnvis.finiteness import LastFinite
    image = torch.zeros(1, 3, 2, 2)
    watch = LastFinite(image)
    watch.on_device = True
    watch.kept, watch.finite, watch.first_bad = image.clone(), torch.tensor(True), torch.tensor(0)
    for step, value in enumerate([1.0, 2.0, float("nan"), 4.0], start=1):
        watch.before_step(image)
        image = torch.full_like(image, value)
        assert watch.check(image, step, read=False) is None
    assert watch.check(image, 5, read=True) == 3
    assert (watch.kept == 2.0).all()
