"""cnnvis.convolution.conv2d: F.conv2d's values, and its input gradient by phases."""
import pytest
import torch
import torch.nn.functional as F

from cnnvis.convolution import conv2d, input_gradients_in

# (input channels, height, width, kernel, stride, padding): GoogLeNet's conv1, EfficientNet's
# stem, strides that do not divide the input (rows no window reaches), a stride larger than
# the kernel (phases with no taps), unequal strides, and padding larger than the stride.
GEOMETRIES = [
    (3, 224, 224, (7, 7), (2, 2), (3, 3)),
    (3, 225, 224, (3, 3), (2, 2), (0, 0)),
    (3, 23, 19, (7, 7), (2, 2), (3, 3)),
    (1, 17, 16, (1, 1), (2, 2), (0, 0)),
    (4, 15, 22, (2, 5), (2, 3), (1, 2)),
    (3, 20, 20, (11, 11), (4, 4), (5, 5)),
    (2, 9, 9, (3, 3), (3, 3), (0, 0)),
]


@pytest.mark.parametrize("channels, height, width, kernel, stride, padding", GEOMETRIES)
def test_values_and_input_gradient_equal_conv2d(channels, height, width, kernel, stride, padding):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, channels, height, width, generator=generator, dtype=torch.float64)
    weight = torch.randn(5, channels, *kernel, generator=generator, dtype=torch.float64)
    bias = torch.randn(5, generator=generator, dtype=torch.float64)

    def value_and_gradient(convolution):
        xg = x.clone().requires_grad_(True)
        y = convolution(xg, weight, bias, stride, padding)
        top_gradient = torch.randn(y.shape, generator=torch.Generator().manual_seed(1),
                                   dtype=torch.float64)
        gradient, = torch.autograd.grad(y, xg, top_gradient)
        return y.detach(), gradient

    y, gradient = value_and_gradient(conv2d)
    expected_y, expected_gradient = value_and_gradient(F.conv2d)
    torch.testing.assert_close(y, expected_y, rtol=0, atol=0)  # the forward is F.conv2d itself
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-12, atol=1e-12)


def test_input_gradient_matches_finite_differences():
    x = torch.randn(1, 3, 11, 10, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: conv2d(t, weight, None, 2, 2), (x,))


def test_float32_channels_last_gradient_is_close():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, 64, 64, generator=generator).contiguous(
        memory_format=torch.channels_last).requires_grad_(True)
    weight = torch.randn(16, 3, 7, 7, generator=generator).contiguous(
        memory_format=torch.channels_last)
    top_gradient = torch.randn(3, 16, 32, 32, generator=generator)
    gradient, = torch.autograd.grad(conv2d(x, weight, None, 2, 3), x, top_gradient)
    expected, = torch.autograd.grad(F.conv2d(x, weight, None, 2, 3), x, top_gradient)
    torch.testing.assert_close(gradient, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())


def test_weights_that_want_gradients_get_them():
    # The phased backward gives no weight gradient, so such weights take plain F.conv2d.
    x = torch.randn(1, 3, 12, 12, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    conv2d(x, weight, None, 2, 1).sum().backward()
    expected, = torch.autograd.grad(F.conv2d(x, weight, None, 2, 1).sum(), weight)
    torch.testing.assert_close(weight.grad, expected)


def test_input_gradient_in_reduced_precision_where_asked():
    """Under input_gradients_in(bfloat16) a float32 convolution's forward stays exact and its
    phased input gradient is computed in bfloat16, handed back as float32."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 40, 40, generator=generator)
    weight = torch.randn(8, 3, 7, 7, generator=generator)
    top_gradient = torch.randn(2, 8, 20, 20, generator=generator)

    def value_and_gradient():
        xg = x.clone().requires_grad_(True)
        y = conv2d(xg, weight, None, 2, 3)
        return y.detach(), torch.autograd.grad(y, xg, top_gradient)[0]

    exact_y, exact_gradient = value_and_gradient()
    with input_gradients_in(torch.bfloat16):
        y, gradient = value_and_gradient()
    torch.testing.assert_close(y, exact_y, rtol=0, atol=0)
    assert gradient.dtype == torch.float32
    error = float((gradient - exact_gradient).norm() / exact_gradient.norm())
    assert 1e-4 < error < 1e-2          # rounded to bfloat16, and only that
    _, after = value_and_gradient()     # the scope has ended
    torch.testing.assert_close(after, exact_gradient, rtol=0, atol=0)
