"""TorchEngine runs a batch a few tiles at a time on a CPU."""
import torch

from cnnvis.caffe import CaffeNet, parse_prototxt
from cnnvis.engine import TorchEngine, cpu_supports_bf16
from cnnvis.model import InputConvention, VisModel
from cnnvis.objectives import amplify_layer

# A strided RGB convolution (the phased input gradient), LRN across channels, a branch.
NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 20 dim: 20 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 5 pad: 2 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1"
        lrn_param { local_size: 5 alpha: 0.1 beta: 0.75 } }
layer { name: "a" type: "Convolution" bottom: "norm1" top: "a" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "b" type: "Convolution" bottom: "norm1" top: "b"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" }
"""


def test_a_batch_larger_than_one_run_gives_each_tile_its_own_gradient():
    engine = TorchEngine(CaffeNet(parse_prototxt(NET), None).eval())
    tiles = 30 * torch.randn(TorchEngine.CPU_TILES_PER_RUN * 2 + 3, 3, 20, 20,
                             generator=torch.Generator().manual_seed(0))
    objective = amplify_layer(l1_weight=1.0, l2_weight=1.0, grad_clip=5.0)
    loss, gradient = engine.objective_gradient(tiles, {"cat": objective})
    singles = [engine.objective_gradient(tile[None], {"cat": objective}) for tile in tiles]
    assert gradient.shape == tiles.shape
    torch.testing.assert_close(loss, sum(single_loss for single_loss, _ in singles))
    torch.testing.assert_close(gradient, torch.cat([single for _, single in singles]),
                               rtol=1e-5, atol=1e-5 * gradient.abs().max())



def test_gradients_come_back_through_the_input_convention_as_autograd_takes_them():
    # An RGB network with its own offset and scale, as efficientnet_lite0's.
    network = CaffeNet(parse_prototxt(NET), None).eval()
    model = VisModel(network, "rgb", mean_bgr=(104.0, 117.0, 123.0),
                     convention=InputConvention("RGB", (127.0, 127.0, 127.0), 128.0))
    tiles = 30 * torch.randn(3, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    objective = amplify_layer(l1_weight=1.0, l2_weight=1.0, grad_clip=5.0)
    loss, gradient = model.objective_gradient(tiles, {"cat": objective})

    x = tiles.clone().requires_grad_(True)
    blob = network.forward(model.network_input(x), "cat")
    expected_loss, top_gradient = objective(blob.detach())
    blob.backward(top_gradient)
    torch.testing.assert_close(loss, expected_loss)
    torch.testing.assert_close(gradient, x.grad, rtol=1e-5, atol=1e-6 * x.grad.abs().max())


def test_the_engine_leaves_the_callers_module_as_it_was():
    """Loading changes nothing of the caller's: not the module's device, dtype, memory
    format, mode, hooks or parameters' requires_grad."""
    network = CaffeNet(parse_prototxt(NET), None, seed=0).eval()
    before = {name: value.clone() for name, value in network.state_dict().items()}
    strides = {name: value.stride() for name, value in network.state_dict().items()}
    hooks = [len(m._forward_pre_hooks) for m in network.modules()]
    grads = [p.requires_grad for p in network.parameters()]
    TorchEngine(network, precision="bf16" if cpu_supports_bf16() else "fp32")
    after = network.state_dict()
    assert all(torch.equal(before[name], after[name]) and before[name].dtype == after[name].dtype
               for name in before)
    assert {name: value.stride() for name, value in after.items()} == strides
    assert [len(m._forward_pre_hooks) for m in network.modules()] == hooks
    assert [p.requires_grad for p in network.parameters()] == grads
    assert not network.training
