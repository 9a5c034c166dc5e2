"""Each Caffe layer against a closed form or a hand computation on small arrays."""
import numpy as np
import pytest
import torch

from cnnvis.caffe import CaffeNet, parse_prototxt
from cnnvis.caffe.kernels import (channel_window_sum, caffe_pool, caffe_pool_padded,
                                 caffe_pooled_size)
from cnnvis.errors import UserError
from cnnvis.caffe.writer import blob_proto

RNG = np.random.default_rng(0)


def one_layer_net(shape, layers: str, weights=None) -> CaffeNet:
    """A net with input `data` of `shape` followed by the given layer text; weights by layer name."""
    dims = " ".join(f"dim: {d}" for d in shape)
    net = parse_prototxt(f'layer {{ name: "data" type: "Input" top: "data" '
                         f'input_param {{ shape {{ {dims} }} }} }}\n{layers}')
    stored = {name: [blob_proto(np.asarray(a)) for a in arrays]
              for name, arrays in (weights or {}).items()}
    return CaffeNet(net, stored).eval()


def run(net: CaffeNet, x: np.ndarray, target: str) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(np.asarray(x, np.float32)), target).numpy()


# ------------------------------------------------------------------ pooling

@pytest.mark.parametrize("size, kernel, stride, pad, expected", [
    (112, 3, 2, 0, 56),   # ceil((112-3)/2)+1 = 56; PyTorch's default floor gives 55
    (5, 3, 2, 1, 3),      # ceil(4/2)+1 = 3, last window starts at 3 < 5+1
    (3, 2, 2, 1, 2),      # ceil(3/2)+1 = 3, but window 3 would start at 4 >= 3+1: dropped
    (14, 3, 1, 1, 14),
    (7, 7, 1, 0, 1),
])
def test_pooled_size_follows_caffe(size, kernel, stride, pad, expected):
    assert caffe_pooled_size(size, kernel, stride, pad, ceil=True) == expected


def pool_layer(pool: str, kernel: int, stride: int, pad: int = 0) -> str:
    return (f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param '
            f'{{ pool: {pool} kernel_size: {kernel} stride: {stride} pad: {pad} }} }}')


def test_max_pool_ignores_padding_and_rounds_up():
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3) - 20  # all negative: padding must not win
    out = run(one_layer_net(x.shape, pool_layer("MAX", 2, 2, 1)), x, "p")
    # Windows start at -1 and 1 on each axis: rows {0}, {1, 2}; the third window is dropped.
    np.testing.assert_array_equal(out[0, 0], np.array([[0, 2], [6, 8]]) - 20)


def test_max_pool_ceil_keeps_partial_window():
    x = RNG.normal(size=(1, 2, 5, 5)).astype(np.float32)
    out = run(one_layer_net(x.shape, pool_layer("MAX", 2, 2)), x, "p")
    assert out.shape == (1, 2, 3, 3)  # PyTorch's floor mode would give 2x2
    np.testing.assert_allclose(out[0, :, 2, 2], x[0, :, 4, 4])
    np.testing.assert_allclose(out[0, :, 0, 2], x[0, :, 0:2, 4].max(axis=1))


def test_average_pool_divides_by_window_clipped_to_padded_image():
    x = np.ones((1, 1, 4, 4), np.float32)
    out = run(one_layer_net(x.shape, pool_layer("AVE", 3, 2, 1)), x, "p")
    # Window starts -1, 1, 3; ends clipped to 4 + pad = 5 -> divisors 3, 3, 2.
    # Image pixels per window: 2, 3, 1. So each factor is 2/3, 1, 1/2 per axis.
    factors = np.array([2 / 3, 1.0, 1 / 2])
    np.testing.assert_allclose(out[0, 0], np.outer(factors, factors), rtol=1e-6)


def test_pooling_with_padding_beyond_half_the_kernel():
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    out = run(one_layer_net(x.shape, pool_layer("MAX", 3, 2, 2)), x, "p")
    # Windows start at -2, 0, 2 on each axis: rows {0}, {0, 1, 2}, {2}.
    np.testing.assert_array_equal(out[0, 0], [[0, 2, 2], [6, 8, 8], [6, 8, 8]])


@pytest.mark.parametrize("kernel, stride, pad", [(3, 2, 0), (3, 2, 1), (2, 2, 1), (3, 1, 1), (5, 3, 2)])
@pytest.mark.parametrize("average", [False, True])
def test_pytorch_ceil_mode_pooling_equals_the_explicit_caffe_pooling(kernel, stride, pad, average):
    x = torch.from_numpy(RNG.normal(size=(2, 3, 9, 11)).astype(np.float32))
    args = ((kernel, kernel), (stride, stride), (pad, pad), True, average)
    np.testing.assert_allclose(caffe_pool(x, *args).numpy(), caffe_pool_padded(x, *args).numpy(),
                               rtol=1e-6, atol=1e-6)


def test_global_pooling_any_input_size():
    net = one_layer_net((1, 3, 4, 4), 'layer { name: "g" type: "Pooling" bottom: "data" top: "g" '
                                      'pooling_param { pool: AVE global_pooling: true } }')
    x = RNG.normal(size=(2, 3, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(run(net, x, "g")[..., 0, 0], x.mean(axis=(2, 3)), rtol=1e-5)


# ------------------------------------------------------------- convolution

def direct_convolution(x, w, b, stride, pad, dilation, group):
    """Textbook cross-correlation with loops (the definition, not an implementation to copy)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - dilation * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * pad[1] - dilation * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    per_group = o // group
    for oc in range(o):
        g = oc // per_group
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg,
                           i * stride[0]:i * stride[0] + dilation * (kh - 1) + 1:dilation,
                           j * stride[1]:j * stride[1] + dilation * (kw - 1) + 1:dilation]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3)) + b[oc]
    return out


def test_convolution_with_group_dilation_asymmetric_stride_and_pad():
    x = RNG.normal(size=(2, 4, 7, 8)).astype(np.float32)
    w = RNG.normal(size=(6, 2, 3, 2)).astype(np.float32)
    b = RNG.normal(size=6).astype(np.float32)
    net = one_layer_net(x.shape, 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
                        'convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 2 '
                        'stride_w: 1 pad_h: 1 pad_w: 2 group: 2 dilation: 2 } }', {"c": [w, b]})
    expected = direct_convolution(x, w, b, (2, 1), (1, 2), 2, 2)
    np.testing.assert_allclose(run(net, x, "c"), expected, rtol=1e-4, atol=1e-4)


def test_convolution_without_bias():
    x = RNG.normal(size=(1, 2, 5, 5)).astype(np.float32)
    w = RNG.normal(size=(3, 2, 3, 3)).astype(np.float32)
    net = one_layer_net(x.shape, 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
                        'convolution_param { num_output: 3 kernel_size: 3 bias_term: false } }',
                        {"c": [w]})
    expected = direct_convolution(x, w, np.zeros(3), (1, 1), (0, 0), 1, 1)
    np.testing.assert_allclose(run(net, x, "c"), expected, rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------------- LRN

def test_lrn_across_channels():
    x = RNG.normal(size=(1, 7, 3, 3)).astype(np.float32)
    net = one_layer_net(x.shape, 'layer { name: "n" type: "LRN" bottom: "data" top: "n" '
                        'lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 k: 2 } }')
    xd = x.astype(np.float64)
    squares = np.pad(xd ** 2, ((0, 0), (2, 2), (0, 0), (0, 0)))
    window_sum = sum(squares[:, i:i + 7] for i in range(5))
    expected = xd / (2 + 0.3 / 5 * window_sum) ** 0.75
    np.testing.assert_allclose(run(net, x, "n"), expected, rtol=1e-5)


@pytest.mark.parametrize("channels, size", [(70, 5), (3, 5), (40, 3), (33, 1)])
def test_lrn_window_sum_in_reduced_precision_rounds_once(channels, size):
    """bfloat16 sums the window in float32 and rounds once (a banded product, in blocks),
    in the blob's channels-last layout; float32 adds the window's slices."""
    squares = torch.from_numpy(RNG.random((2, channels, 5, 6))).contiguous(
        memory_format=torch.channels_last)
    padded = np.pad(squares.numpy(), ((0, 0), (size // 2, size // 2), (0, 0), (0, 0)))
    expected = sum(padded[:, i:i + channels] for i in range(size))
    np.testing.assert_allclose(channel_window_sum(squares, size).numpy(), expected, rtol=1e-12)
    reduced = channel_window_sum(squares.bfloat16(), size)
    assert reduced.dtype == torch.bfloat16
    assert reduced.is_contiguous(memory_format=torch.channels_last)
    exact_terms = sum(np.pad(squares.bfloat16().double().numpy(),
                             ((0, 0), (size // 2, size // 2), (0, 0), (0, 0)))[:, i:i + channels]
                      for i in range(size))
    np.testing.assert_allclose(reduced.double().numpy(), exact_terms, rtol=2 ** -8)


def test_lrn_within_channel_uses_shift_one():
    x = RNG.normal(size=(1, 2, 4, 4)).astype(np.float32)
    net = one_layer_net(x.shape, 'layer { name: "n" type: "LRN" bottom: "data" top: "n" '
                        'lrn_param { local_size: 3 alpha: 0.5 beta: 0.6 k: 7 '
                        'norm_region: WITHIN_CHANNEL } }')
    xd = x.astype(np.float64)
    squares = np.pad(xd ** 2, ((0, 0), (0, 0), (1, 1), (1, 1)))
    mean = sum(squares[:, :, i:i + 4, j:j + 4] for i in range(3) for j in range(3)) / 9
    expected = xd * (1 + 0.5 * mean) ** -0.6   # Caffe ignores k within a channel
    np.testing.assert_allclose(run(net, x, "n"), expected, rtol=1e-5)


# ------------------------------------------------------- the other layers

def test_inner_product_axis_and_transpose():
    x = RNG.normal(size=(2, 3, 2, 2)).astype(np.float32)
    w = RNG.normal(size=(12, 5)).astype(np.float32)  # transposed storage: (K, num_output)
    b = RNG.normal(size=5).astype(np.float32)
    net = one_layer_net(x.shape, 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                        'inner_product_param { num_output: 5 transpose: true } }', {"fc": [w, b]})
    np.testing.assert_allclose(run(net, x, "fc"), x.reshape(2, 12) @ w + b, rtol=1e-5)


def test_relu_negative_slope_sigmoid_tanh_softmax_flatten_dropout():
    x = RNG.normal(size=(2, 3, 2, 2)).astype(np.float32)
    net = one_layer_net(x.shape, """
        layer { name: "r" type: "ReLU" bottom: "data" top: "r" relu_param { negative_slope: 0.1 } }
        layer { name: "s" type: "Sigmoid" bottom: "data" top: "s" }
        layer { name: "t" type: "TanH" bottom: "data" top: "t" }
        layer { name: "sm" type: "Softmax" bottom: "data" top: "sm" }
        layer { name: "f" type: "Flatten" bottom: "data" top: "f" }
        layer { name: "d" type: "Dropout" bottom: "data" top: "d" dropout_param { dropout_ratio: 0.7 } }
    """)
    np.testing.assert_allclose(run(net, x, "r"), np.where(x > 0, x, 0.1 * x), rtol=1e-6)
    np.testing.assert_allclose(run(net, x, "s"), 1 / (1 + np.exp(-x)), rtol=1e-6)
    np.testing.assert_allclose(run(net, x, "t"), np.tanh(x), rtol=1e-5, atol=1e-7)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(run(net, x, "sm"), e / e.sum(axis=1, keepdims=True), rtol=1e-5)
    np.testing.assert_array_equal(run(net, x, "f"), x.reshape(2, 12))
    np.testing.assert_array_equal(run(net, x, "d"), x)


def test_batch_norm_uses_scale_factor_and_scale_layer_bias():
    x = RNG.normal(size=(2, 3, 2, 2)).astype(np.float32)
    mean, var, factor = np.array([1.0, -2, 0.5]), np.array([4.0, 1, 9]), np.array([2.0])
    gamma, beta = np.array([2.0, 3, -1]), np.array([0.5, 0, 1])
    net = one_layer_net(x.shape, """
        layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param { eps: 0.001 } }
        layer { name: "sc" type: "Scale" bottom: "bn" top: "bn" scale_param { bias_term: true } }
    """, {"bn": [mean, var, factor], "sc": [gamma, beta]})
    c = (slice(None), None, None)
    normalised = (x - (mean / 2)[c]) / np.sqrt((var / 2)[c] + 0.001)
    np.testing.assert_allclose(run(net, x, "bn"), normalised * gamma[c] + beta[c], rtol=1e-5)


def test_eltwise_concat_split():
    x = RNG.normal(size=(1, 2, 3, 3)).astype(np.float32)
    net = one_layer_net(x.shape, """
        layer { name: "sp" type: "Split" bottom: "data" top: "a" top: "b" }
        layer { name: "neg" type: "Scale" bottom: "b" top: "nb" scale_param { num_axes: 0 } }
        layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "nb" top: "sum"
                eltwise_param { operation: SUM coeff: 2 coeff: 0.5 } }
        layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "nb" top: "prod"
                eltwise_param { operation: PROD } }
        layer { name: "max" type: "Eltwise" bottom: "a" bottom: "nb" top: "max"
                eltwise_param { operation: MAX } }
        layer { name: "cat" type: "Concat" bottom: "a" bottom: "nb" top: "cat" concat_param { axis: 2 } }
    """, {"neg": [np.array(-3.0)]})
    np.testing.assert_allclose(run(net, x, "sum"), 2 * x + 0.5 * -3 * x, rtol=1e-5)
    np.testing.assert_allclose(run(net, x, "prod"), -3 * x * x, rtol=1e-5)
    np.testing.assert_allclose(run(net, x, "max"), np.maximum(x, -3 * x), rtol=1e-6)
    np.testing.assert_allclose(run(net, x, "cat"), np.concatenate([x, -3 * x], axis=2), rtol=1e-6)


def test_scale_by_second_bottom_on_axis_0_follows_the_batch_size():
    # The second bottom (N, C) covers the batch axis, which changes at run time.
    net = one_layer_net((1, 2, 2, 2), """
        layer { name: "g" type: "Pooling" bottom: "data" top: "g" pooling_param { pool: AVE global_pooling: true } }
        layer { name: "f" type: "Flatten" bottom: "g" top: "f" }
        layer { name: "s" type: "Scale" bottom: "data" bottom: "f" top: "s" scale_param { axis: 0 } }
    """)
    x = RNG.normal(size=(3, 2, 2, 2)).astype(np.float32)
    np.testing.assert_allclose(run(net, x, "s"), x * x.mean(axis=(2, 3))[:, :, None, None], rtol=1e-5)


def test_a_blob_read_twice_by_one_layer():
    net = one_layer_net((1, 2, 2, 2), 'layer { name: "twice" type: "Eltwise" bottom: "data" '
                                      'bottom: "data" top: "twice" eltwise_param { operation: PROD } }')
    x = RNG.normal(size=(1, 2, 2, 2)).astype(np.float32)
    np.testing.assert_allclose(run(net, x, "twice"), x * x, rtol=1e-6)


def test_eltwise_max_gradient_goes_to_first_bottom_on_ties():
    net = one_layer_net((1, 1, 1, 2), """
        layer { name: "sp" type: "Split" bottom: "data" top: "a" top: "b" }
        layer { name: "one" type: "Scale" bottom: "b" top: "c" scale_param { num_axes: 0 } }
        layer { name: "max" type: "Eltwise" bottom: "a" bottom: "c" top: "max"
                eltwise_param { operation: MAX } }
    """, {"one": [np.array(1.0)]})
    x = torch.tensor([[[[1.0, -2.0]]]], requires_grad=True)
    net(x, "max").sum().backward()
    # Both bottoms are equal; Caffe sends the whole gradient to bottom 0, which is x itself.
    np.testing.assert_allclose(x.grad.numpy(), [[[[1.0, 1.0]]]])


# ---------------------------------------------------------------- errors

def test_unsupported_layer_type_names_layer_and_type():
    with pytest.raises(UserError, match=r"layer 'weird'.*'Deconvolution'"):
        one_layer_net((1, 1, 2, 2), 'layer { name: "weird" type: "Deconvolution" bottom: "data" top: "w" }')


def test_missing_bottom_blob():
    with pytest.raises(UserError, match=r"layer 'r' reads blob 'nothere'"):
        one_layer_net((1, 1, 2, 2), 'layer { name: "r" type: "ReLU" bottom: "nothere" top: "r" }')


def test_wrong_weight_shape_names_layer_and_both_shapes():
    layer = ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
             'convolution_param { num_output: 2 kernel_size: 3 } }')
    with pytest.raises(UserError, match=r"layer 'c'.*\(2, 1, 5, 5\).*\(2, 1, 3, 3\)"):
        one_layer_net((1, 1, 6, 6), layer, {"c": [np.zeros((2, 1, 5, 5)), np.zeros(2)]})


def test_missing_weights_names_layer():
    layer = ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
             'convolution_param { num_output: 2 kernel_size: 3 } }')
    with pytest.raises(UserError, match=r"layer 'c' needs 2 weight blob\(s\).*no weights"):
        one_layer_net((1, 1, 6, 6), layer, {"other": [np.zeros(1)]})


FLAT = ('layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" '
        'flatten_param { axis: 0 } }\n')  # a 1-D blob of 16 values


@pytest.mark.parametrize("layers, message", [
    ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
     'convolution_param { num_output: 2 kernel_size: 3 dilation: 2 pad: 1 } }',
     r"layer 'c' \(Convolution\): its kernel \(3x3, dilation 2x2\) is larger than its padded "
     r"input \(4x4\)"),
    ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
     'convolution_param { num_output: 2 kernel_size: 1 stride: 4294967295 } }',
     r"layer 'c' \(Convolution\): stride 4294967295 is too large \(at most 2147483647\)"),
    ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
     'pooling_param { pool: MAX kernel_size: 3 round_mode: FLOOR } }',
     r"layer 'p' \(Pooling\): its kernel \(3x3\) is larger than its padded input \(2x2\)"),
    (FLAT + 'layer { name: "n" type: "LRN" bottom: "flat" top: "n" }',
     r"layer 'n' \(LRN\): its bottom has shape \(16,\), but it takes a 4-D blob"),
    (FLAT + 'layer { name: "b" type: "BatchNorm" bottom: "flat" top: "b" }',
     r"layer 'b' \(BatchNorm\): its bottom has shape \(16,\), but it takes a blob with channels"),
    ('layer { name: "f" type: "Flatten" bottom: "data" top: "f" '
     'flatten_param { axis: 2 end_axis: 1 } }',
     r"layer 'f' \(Flatten\): end_axis 1 comes before axis 2 in a 4-D blob"),
    ('layer { name: "f" type: "Flatten" bottom: "data" top: "f" flatten_param { axis: 2 } }\n'
     'layer { name: "s" type: "Scale" bottom: "data" bottom: "f" top: "s" scale_param { axis: 1 } }',
     r"layer 's' \(Scale\): its scale bottom has shape \(1, 4, 4\), but its first bottom "
     r"\(1, 4, 2, 2\) needs \(4, 2, 2\) from axis 1"),
    ('layer { name: "s" type: "Scale" bottom: "data" top: "s" scale_param { axis: 2 num_axes: 3 } }',
     r"layer 's' \(Scale\): its scale would cover 3 axes of a 4-D bottom from axis 2"),
], ids=["kernel-beyond-input", "stride-beyond-c-int", "pool-beyond-input", "lrn-on-1d",
        "batchnorm-on-1d", "flatten-backwards", "scale-bottom-mismatch", "scale-too-many-axes"])
def test_bottoms_a_layer_cannot_take_are_refused_before_running(layers, message):
    with pytest.raises(UserError, match=message):
        one_layer_net((1, 4, 2, 2), layers)
