"""BVLC GoogLeNet (Szegedy et al., "Going deeper with convolutions", 2014) as Caffe defines it.

`googlenet_deploy()` builds, in code, the network of Caffe's
`models/bvlc_googlenet/deploy.prototxt`: the same layers, in the same order, with the same
names, types, bottoms, tops (in-place ReLUs and Dropout included) and layer parameters, so
the architecture is available without a download and blob names match the caffemodel's.
Only training-only fields (learning-rate `param`s, weight and bias fillers) are left out.

The Places365 GoogLeNet (CSAILVision/places365, `deploy_googlenet_places365.prototxt`) is
the same network with 365 outputs: `googlenet_deploy(365, "GoogleNet-Places365")`. (That
file also sets `force_backward: true`, which only matters to Caffe's own backward pass.)
"""
from __future__ import annotations

from cnnvis.caffe import caffe_pb2 as pb

# Caffe's deploy file declares a batch of 10 (ten-crop testing); the batch size plays no
# part in a CaffeNet, which takes only (channels, height, width) from it.
INPUT_SHAPE = (10, 3, 224, 224)


def googlenet_deploy(num_classes: int = 1000, name: str = "GoogleNet") -> pb.NetParameter:
    """GoogLeNet's deploy network: input blob `data` (10x3x224x224) through `prob` (num_classes)."""
    net = pb.NetParameter(name=name)
    net.layer.add(name="data", type="Input", top=["data"],
                  input_param=pb.InputParameter(shape=[pb.BlobShape(dim=INPUT_SHAPE)]))

    top = _conv_relu(net, "conv1/7x7_s2", "data", 64, kernel=7, stride=2, pad=3,
                     relu_name="conv1/relu_7x7")
    top = _pool(net, "pool1/3x3_s2", top, pb.PoolingParameter.MAX, kernel=3, stride=2)
    top = _lrn(net, "pool1/norm1", top)
    top = _conv_relu(net, "conv2/3x3_reduce", top, 64, kernel=1)
    top = _conv_relu(net, "conv2/3x3", top, 192, kernel=3, pad=1)
    top = _lrn(net, "conv2/norm2", top)
    top = _pool(net, "pool2/3x3_s2", top, pb.PoolingParameter.MAX, kernel=3, stride=2)

    # Widths per module, as in the paper's Table 1:
    #                                   1x1 3x3_reduce 3x3 5x5_reduce 5x5 pool_proj
    top = _inception(net, "inception_3a", top, 64, 96, 128, 16, 32, 32)
    top = _inception(net, "inception_3b", top, 128, 128, 192, 32, 96, 64)
    top = _pool(net, "pool3/3x3_s2", top, pb.PoolingParameter.MAX, kernel=3, stride=2)
    top = _inception(net, "inception_4a", top, 192, 96, 208, 16, 48, 64)
    top = _inception(net, "inception_4b", top, 160, 112, 224, 24, 64, 64)
    top = _inception(net, "inception_4c", top, 128, 128, 256, 24, 64, 64)
    top = _inception(net, "inception_4d", top, 112, 144, 288, 32, 64, 64)
    top = _inception(net, "inception_4e", top, 256, 160, 320, 32, 128, 128)
    top = _pool(net, "pool4/3x3_s2", top, pb.PoolingParameter.MAX, kernel=3, stride=2)
    top = _inception(net, "inception_5a", top, 256, 160, 320, 32, 128, 128)
    top = _inception(net, "inception_5b", top, 384, 192, 384, 48, 128, 128)

    top = _pool(net, "pool5/7x7_s1", top, pb.PoolingParameter.AVE, kernel=7, stride=1)
    net.layer.add(name="pool5/drop_7x7_s1", type="Dropout", bottom=[top], top=[top],
                  dropout_param=pb.DropoutParameter(dropout_ratio=0.4))
    net.layer.add(name="loss3/classifier", type="InnerProduct", bottom=[top],
                  top=["loss3/classifier"],
                  inner_product_param=pb.InnerProductParameter(num_output=num_classes))
    net.layer.add(name="prob", type="Softmax", bottom=["loss3/classifier"], top=["prob"])
    return net


def _inception(net: pb.NetParameter, module: str, bottom: str, n1x1: int, n3x3_reduce: int,
               n3x3: int, n5x5_reduce: int, n5x5: int, pool_proj: int) -> str:
    """Append one Inception module (four branches joined along channels); returns its output."""
    branch_1x1 = _conv_relu(net, f"{module}/1x1", bottom, n1x1, kernel=1)
    reduced = _conv_relu(net, f"{module}/3x3_reduce", bottom, n3x3_reduce, kernel=1)
    branch_3x3 = _conv_relu(net, f"{module}/3x3", reduced, n3x3, kernel=3, pad=1)
    reduced = _conv_relu(net, f"{module}/5x5_reduce", bottom, n5x5_reduce, kernel=1)
    branch_5x5 = _conv_relu(net, f"{module}/5x5", reduced, n5x5, kernel=5, pad=2)
    pooled = _pool(net, f"{module}/pool", bottom, pb.PoolingParameter.MAX,
                   kernel=3, stride=1, pad=1)
    branch_pool = _conv_relu(net, f"{module}/pool_proj", pooled, pool_proj, kernel=1)
    output = f"{module}/output"
    net.layer.add(name=output, type="Concat", top=[output],
                  bottom=[branch_1x1, branch_3x3, branch_5x5, branch_pool])
    return output


def _conv_relu(net: pb.NetParameter, name: str, bottom: str, num_output: int, kernel: int,
               stride: int = 1, pad: int = 0, relu_name: str | None = None) -> str:
    """Append a convolution and its in-place ReLU (named `<scope>/relu_<conv>` unless given)."""
    # Caffe's file states stride and pad only where they differ from the defaults; so do we,
    # so that the messages compare equal field for field.
    conv = pb.ConvolutionParameter(num_output=num_output, kernel_size=[kernel],
                                   stride=[stride] if stride != 1 else [],
                                   pad=[pad] if pad else [])
    net.layer.add(name=name, type="Convolution", bottom=[bottom], top=[name],
                  convolution_param=conv)
    scope, _, conv_name = name.rpartition("/")
    net.layer.add(name=relu_name or f"{scope}/relu_{conv_name}", type="ReLU",
                  bottom=[name], top=[name])
    return name


def _pool(net: pb.NetParameter, name: str, bottom: str, method: int, kernel: int, stride: int,
          pad: int = 0) -> str:
    """Append a pooling layer (Caffe's ceil-mode output size); returns its blob."""
    pooling = pb.PoolingParameter(pool=method, kernel_size=kernel, stride=stride)
    if pad:
        pooling.pad = pad
    net.layer.add(name=name, type="Pooling", bottom=[bottom], top=[name], pooling_param=pooling)
    return name


def _lrn(net: pb.NetParameter, name: str, bottom: str) -> str:
    """Append GoogLeNet's local response normalisation (5 channels, alpha 1e-4, beta 0.75)."""
    lrn = pb.LRNParameter(local_size=5, alpha=0.0001, beta=0.75)
    net.layer.add(name=name, type="LRN", bottom=[bottom], top=[name], lrn_param=lrn)
    return name
