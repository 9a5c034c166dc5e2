"""Any nn.Module as a network: its sub-modules' outputs as layers, in execution order; the
pass stops after the deepest target; the user's module stays exactly as it was."""
import numpy as np
import pytest
import torch
from skimage import data as samples
from torch import nn

import cnnvis
from cnnvis.errors import UserError
from cnnvis.module_network import ModuleNetwork
from cnnvis.pixels import resize_rgb, rgb_to_image


class Counted(nn.Module):
    """An identity that counts its calls (a class attribute: copies count too)."""

    calls = 0

    def forward(self, x):
        Counted.calls += 1
        return x


class OutOfOrder(nn.Module):
    """Defined in one order, run in another, with a ReLU used twice."""

    def __init__(self):
        super().__init__()
        self.late = nn.Conv2d(4, 2, 1)
        self.early = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.tail = Counted()

    def forward(self, x):
        h = self.relu(self.early(x))
        return self.tail(self.relu(self.late(h) - 1))


def test_layers_are_the_sub_modules_in_execution_order_with_their_last_output():
    torch.manual_seed(0)
    module = OutOfOrder()
    network = ModuleNetwork(module, (8, 10))
    assert network.blob_names == ["early", "late", "relu", "tail"]
    x = torch.randn(2, 3, 8, 10)
    blobs = network.blobs(x)
    with torch.no_grad():
        expected = torch.relu(module.late(torch.relu(module.early(x))) - 1)
    assert torch.equal(blobs["relu"], expected)   # the shared ReLU's second call
    assert blobs["early"].shape == (2, 4, 8, 10)


def test_the_pass_stops_after_the_deepest_target_and_only_the_input_gets_a_gradient():
    network = ModuleNetwork(OutOfOrder(), (8, 10))
    Counted.calls = 0
    x = torch.randn(1, 3, 8, 10, requires_grad=True)
    blob = network.forward_blobs(x, ["early", "late"])["late"]
    assert Counted.calls == 0
    blob.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in network.parameters())
    network.forward(x, "tail")
    assert Counted.calls == 1


def test_the_users_module_is_left_as_it_was():
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).double().train()
    seen = []
    hook = module[2].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    hooks_before = dict(module[2]._forward_hooks)
    weights_before = module[0].weight.detach().clone()
    model = cnnvis.load_model(module, input_size=(16, 16), device="cpu")
    photo = samples.astronaut()[::16, ::16]
    dreamed = np.asarray(cnnvis.dream(photo, model, seed=0, num_steps=2, target_layer="2"),
                         dtype=float)
    assert np.abs(dreamed - photo).mean() > 0.5
    assert module.training and all(m.training for m in module)
    assert all(p.requires_grad and p.dtype == torch.float64 and p.device.type == "cpu"
               for p in module.parameters())
    assert dict(module[2]._forward_hooks) == hooks_before and not module[0]._forward_hooks
    assert torch.equal(module[0].weight, weights_before)
    assert module[1].num_batches_tracked == 0   # no training-mode pass ran on it
    hook.remove()


def test_images_reach_the_module_as_rgb_in_0_to_1_normalised_by_mean_and_std():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU()).eval()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    model = cnnvis.load_model(module, input_size=(24, 24), mean=mean, std=std, device="cpu")
    photo = resize_rgb(samples.chelsea(), (24, 24))
    ours = model.blob(rgb_to_image(photo, model.mean_bgr), "1")
    rgb = torch.from_numpy(photo.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = module((rgb - torch.tensor(mean).view(1, 3, 1, 1))
                          / torch.tensor(std).view(1, 3, 1, 1))
    assert torch.allclose(ours, expected, atol=1e-5)


def test_bad_layers_and_sizes_are_refused_with_the_reason():
    network = ModuleNetwork(OutOfOrder(), (8, 10))
    with pytest.raises(UserError, match="no blob named 'erly'. Did you mean: early"):
        network.forward(torch.zeros(1, 3, 8, 10), "erly")
    needs_more = nn.Sequential(nn.Conv2d(3, 4, 7), nn.MaxPool2d(4))
    with pytest.raises(UserError, match=r"fails on an input of 1x3x4x4 \(RuntimeError: .*input_size"):
        ModuleNetwork(needs_more, (4, 4))
    with pytest.raises(UserError, match="std"):
        cnnvis.load_model(needs_more, std=(0.2, 0, 0.2))
    with pytest.raises(UserError, match="input_size: for a network of one's own"):
        cnnvis.load_model("bvlc_googlenet", input_size=(100, 100))


def test_several_layers_a_guide_and_a_mask_work_as_with_a_preset():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, stride=2),
                           nn.ReLU())
    model = cnnvis.load_model(module, input_size=(32, 32), device="cpu")
    photo = resize_rgb(samples.astronaut(), (48, 48))
    mask = np.zeros((48, 48), np.uint8)
    mask[:, 24:] = 255
    dreamed = np.asarray(cnnvis.dream(photo, model, seed=0, num_steps=3, target_layer="1,3",
                                      learning_rate=10, mask=mask, jitter=2), dtype=float)
    changed = np.abs(dreamed - photo).mean(axis=(0, 2))
    assert changed[:24].max() == 0 and changed[24:].mean() > 0.5   # only where the mask is white
    guided = np.asarray(cnnvis.dream(photo, model, seed=0, num_steps=3, target_layer="3",
                                     learning_rate=10, guide=samples.chelsea()), dtype=float)
    plain = np.asarray(cnnvis.dream(photo, model, seed=0, num_steps=3, target_layer="3",
                                    learning_rate=10), float)
    assert np.abs(guided - plain).mean() > 0.5


def test_caffe_options_beside_a_module_are_refused():
    with pytest.raises(UserError, match="--deploy_txt and --caffe_model are for Caffe models"):
        cnnvis.load_model(nn.ReLU(), deploy_txt="net.prototxt")
    with pytest.raises(UserError, match="--backend caffe runs Caffe models only"):
        cnnvis.load_model(nn.ReLU(), backend="caffe")
