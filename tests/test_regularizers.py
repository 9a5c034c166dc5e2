"""Regularisers: exact values on tiny tensors, gradients against finite differences."""
import math

import pytest
import torch
import torch.nn.functional as F

from cnnvis.regularizers import TV_FLOOR, TV_OPERATORS, p_norm, total_variation


def central_differences(function, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """d function(x) / dx by central differences, one element at a time (float64 x)."""
    x = x.clone()
    flat = x.view(-1)
    gradient = torch.empty_like(flat)
    for i in range(flat.numel()):
        original = flat[i].item()
        flat[i] = original + eps
        above = function(x).item()
        flat[i] = original - eps
        below = function(x).item()
        flat[i] = original
        gradient[i] = (above - below) / (2 * eps)
    return gradient.view_as(x)


def random_region(seed: int, shape=(3, 5, 6), std: float = 2.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return std * torch.randn(shape, generator=generator, dtype=torch.float64)


# ---- p-norm ----

def test_p_norm_hand_worked():
    x = torch.tensor([[[-2.0, 0.0, 1.0, 3.0]]], dtype=torch.float64)
    # alpha 2, scale 1: 4 + 0 + 1 + 9; gradient 2x.
    value, gradient = p_norm(x, alpha=2.0, scale=1.0)
    assert value.item() == 14.0
    assert gradient.tolist() == [[[-4.0, 0.0, 2.0, 6.0]]]
    # alpha 3, scale 2: |x/2|^3 = 1, 0, 1/8, 27/8; gradient (3/2) sign(x) |x/2|^2.
    value, gradient = p_norm(x, alpha=3.0, scale=2.0)
    assert value.item() == 4.5
    assert gradient.tolist() == [[[-1.5, 0.0, 0.375, 3.375]]]


@pytest.mark.parametrize("alpha, scale, std", [
    (2.0, 1.0, 2.0),
    (6.0, 1.0, 2.0),
    (4.0, 3.0, 5.0),
    (11.0, 50.0, 100.0),  # the auxiliary regulariser's style: high power, pixels ~ scale
])
def test_p_norm_gradient_matches_finite_differences(alpha, scale, std):
    x = random_region(seed=int(alpha), std=std)
    value, gradient = p_norm(x, alpha, scale)
    assert value.item() == pytest.approx(((x / scale).abs() ** alpha).sum().item(), rel=1e-12)
    expected = central_differences(lambda y: p_norm(y, alpha, scale).value, x)
    torch.testing.assert_close(gradient, expected, rtol=1e-6, atol=1e-6 * expected.abs().max().item())


def test_p_norm_keeps_dtype_and_shape():
    x = random_region(seed=0, shape=(3, 7, 4)).float()
    value, gradient = p_norm(x, 6.0)
    assert value.dtype == gradient.dtype == torch.float32
    assert value.shape == () and gradient.shape == (3, 7, 4)


# ---- total variation ----

def test_total_variation_naive_hand_worked():
    # One output at (0, 0): dx = 0 - 1 = -1, dy = 0 - 2 = -2, dx^2 + dy^2 = 5.
    # beta 2: TV = 5; dTV/ddx = 2 dx = -2, dTV/ddy = 2 dy = -4; x[0,0] gets both,
    # x[0,1] gets +2 (it enters dx with a minus), x[1,0] gets +4, x[1,1] is unused.
    x = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]], dtype=torch.float64)
    value, gradient = total_variation(x, beta=2.0, operator="naive")
    assert value.item() == 5.0
    assert gradient.tolist() == [[[-6.0, 2.0], [4.0, 0.0]]]
    # beta 1: TV = sqrt(5); the gradient scales by (1/2) 5^(-1/2).
    value, gradient = total_variation(x, beta=1.0, operator="naive")
    assert value.item() == pytest.approx(math.sqrt(5))
    torch.testing.assert_close(gradient, torch.tensor([[[-3.0, 1.0], [2.0, 0.0]]],
                                                      dtype=torch.float64) / math.sqrt(5))


RAMP = torch.arange(1.0, 10.0, dtype=torch.float64).view(1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]


def test_total_variation_sobel_hand_worked():
    # dx = (3-1) + 2(6-4) + (9-7) = 8, dy = (7-1) + 2(8-2) + (9-3) = 24, TV = 64 + 576.
    # beta 2: gradient = 2 dx Kx + 2 dy Ky = 16 Kx + 48 Ky.
    value, gradient = total_variation(RAMP, beta=2.0, operator="sobel")
    assert value.item() == 640.0
    assert gradient.tolist() == [[[-64.0, -96.0, -32.0], [-32.0, 0.0, 32.0], [32.0, 96.0, 64.0]]]


def test_total_variation_sobel_squish_hand_worked():
    # Kernels [[-1,1,0],[-2,2,0],[-1,1,0]] and [[-1,-2,-1],[1,2,1],[0,0,0]]:
    # dx = (2-1) + 2(5-4) + (8-7) = 4, dy = (4-1) + 2(5-2) + (6-3) = 12, TV = 16 + 144.
    # beta 2: gradient = 8 Kx + 24 Ky.
    value, gradient = total_variation(RAMP, beta=2.0, operator="sobel_squish")
    assert value.item() == 160.0
    assert gradient.tolist() == [[[-32.0, -40.0, -24.0], [8.0, 64.0, 24.0], [-8.0, 8.0, 0.0]]]


def test_total_variation_scale_divides_the_image():
    # TV(x / s) = TV of the 2x2 example above with s = 2: dx = -1/2, dy = -1; 1/4 + 1 = 1.25.
    x = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]], dtype=torch.float64)
    value, gradient = total_variation(x, beta=2.0, operator="naive", scale=2.0)
    assert value.item() == 1.25
    # d/dx TV(x / 2) = (gradient of TV at x / 2) / 2 = [[-6, 2], [4, 0]] / 4.
    assert gradient.tolist() == [[[-1.5, 0.5], [1.0, 0.0]]]


@pytest.mark.parametrize("operator", TV_OPERATORS)
@pytest.mark.parametrize("beta", [1.0, 2.0, 2.5])
def test_total_variation_gradient_matches_finite_differences(operator, beta):
    x = random_region(seed=7)
    for scale in (1.0, 2.5):
        _, gradient = total_variation(x, beta, operator, scale)
        expected = central_differences(lambda y: total_variation(y, beta, operator, scale).value, x)
        torch.testing.assert_close(gradient, expected, rtol=1e-6,
                                   atol=1e-6 * expected.abs().max().item())


def _reference_differences(x: torch.Tensor, operator: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The dx, dy of docs/algorithm.md, written independently: slicing for naive, conv2d for the rest."""
    if operator == "naive":
        return x[:, :-1, :-1] - x[:, :-1, 1:], x[:, :-1, :-1] - x[:, 1:, :-1]
    if operator == "sobel":
        x_kernel = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
        y_kernel = [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]
    else:
        x_kernel = [[-1, 1, 0], [-2, 2, 0], [-1, 1, 0]]
        y_kernel = [[-1, -2, -1], [1, 2, 1], [0, 0, 0]]
    kernels = torch.tensor([x_kernel, y_kernel], dtype=x.dtype).unsqueeze(1)  # (2, 1, 3, 3)
    differences = F.conv2d(x.unsqueeze(1), kernels)                             # (C, 2, h-2, w-2)
    return differences[:, 0], differences[:, 1]


@pytest.mark.parametrize("operator", TV_OPERATORS)
def test_total_variation_matches_autograd_of_the_formula(operator):
    x = random_region(seed=3, shape=(3, 12, 13)).requires_grad_()
    dx, dy = _reference_differences(x, operator)
    expected_value = ((dx ** 2 + dy ** 2).clamp_min(TV_FLOOR) ** 1.25).sum()
    expected_value.backward()
    value, gradient = total_variation(x.detach(), beta=2.5, operator=operator)
    assert value.item() == pytest.approx(expected_value.item(), rel=1e-12)
    torch.testing.assert_close(gradient, x.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("operator, outputs_per_channel", [
    ("naive", 4 * 5), ("sobel", 3 * 4), ("sobel_squish", 3 * 4)])
def test_total_variation_floor_on_a_constant_region(operator, outputs_per_channel):
    x = torch.full((3, 5, 6), 17.0, dtype=torch.float64)
    value, gradient = total_variation(x, beta=2.5, operator=operator)
    assert value.item() == pytest.approx(3 * outputs_per_channel * TV_FLOOR ** 1.25)
    assert torch.equal(gradient, torch.zeros_like(x))


@pytest.mark.parametrize("operator", TV_OPERATORS)
def test_total_variation_gradient_where_the_floor_is_partly_active(operator):
    # The top rows are constant (differences 0, floored), the rest random (far above the floor).
    x = random_region(seed=11, shape=(3, 8, 6))
    x[:, :4] = 0.5
    _, gradient = total_variation(x, 1.0, operator)
    expected = central_differences(lambda y: total_variation(y, 1.0, operator).value, x)
    torch.testing.assert_close(gradient, expected, rtol=1e-6, atol=1e-6 * expected.abs().max().item())
    # Pixel (0, 0) enters only outputs inside the constant block, all floored.
    assert torch.equal(gradient[:, 0, 0], torch.zeros(3, dtype=torch.float64))


def test_total_variation_channels_are_independent():
    x = random_region(seed=5)
    value, gradient = total_variation(x, 2.5, "sobel")
    per_channel = [total_variation(x[c:c + 1], 2.5, "sobel") for c in range(3)]
    assert value.item() == pytest.approx(sum(v.item() for v, _ in per_channel), rel=1e-12)
    torch.testing.assert_close(gradient, torch.cat([g for _, g in per_channel]))


def test_total_variation_keeps_dtype_and_shape():
    x = random_region(seed=1, shape=(3, 9, 10)).float()
    for operator in TV_OPERATORS:
        value, gradient = total_variation(x, 2.0, operator)
        assert value.dtype == gradient.dtype == torch.float32
        assert value.shape == () and gradient.shape == (3, 9, 10)


def test_total_variation_rejects_unknown_operator():
    with pytest.raises(ValueError, match='"laplace".*naive, sobel, sobel_squish'):
        total_variation(torch.zeros(3, 4, 4), 2.0, "laplace")
