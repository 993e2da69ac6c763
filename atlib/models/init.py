"""The authors' initialisation (recipe ``init: authors``) and fb.resnet.torch's (``init: fb``), where they differ
from PyTorch's defaults.

Their PyTorch code (attention-transfer ``utils.py``: ``conv_params``, ``linear_params``, ``bnparams``) draws
convolution and linear weights from ``kaiming_normal_`` (fan in, gain sqrt 2), linear biases 0, and batch-norm
weights from U(0, 1) with biases 0; their Torch NIN (wide-residual-networks ``models/nin.lua``) calls
``MSRinit`` after Torch's ``reset``, which gives the same: N(0, sqrt(2/n)) convolutions with n = kW kH
nInputPlane (the fan in, since that repository's "fix MSRA init" of September 2016) and U(0, 1) batch-norm
weights. PyTorch instead sets batch-norm weights to 1. (Their first PyTorch release, January 2017, drew
N(0, 2/sqrt(n)) convolutions; ``kaiming_normal`` replaced it in June 2017: atlib follows the later code.)

fb.resnet.torch, which the paper's appendix names for its ImageNet runs, draws its ResNets otherwise
(``models/preresnet.lua`` and ``resnet.lua``, ``ConvInit``/``BNInit``): convolutions N(0, sqrt(2/n)) with
n = kW kH nOutputPlane (the fan out), batch-norm weights 1 and biases 0, linear biases 0 (the linear weights
keep Torch's reset, U(-1/sqrt(in), 1/sqrt(in))).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def msr_std(conv: nn.Conv2d) -> float:
    """sqrt(2/n), n = kW kH nInputPlane: the std that keeps a ReLU network's activation variance per layer."""
    k_h, k_w = conv.kernel_size
    n = k_h * k_w * conv.in_channels // conv.groups
    return math.sqrt(2.0 / n)


@torch.no_grad()
def msr_conv(conv: nn.Conv2d) -> None:
    """A convolution as MSRinit and ``conv_params`` draw it: weight N(0, sqrt(2/n)), bias 0."""
    conv.weight.normal_(0.0, msr_std(conv))
    if conv.bias is not None:
        conv.bias.zero_()


@torch.no_grad()
def msr_linear(linear: nn.Linear) -> None:
    """``linear_params``: weight N(0, sqrt(2/fan_in)), bias 0."""
    linear.weight.normal_(0.0, math.sqrt(2.0 / linear.in_features))
    if linear.bias is not None:
        linear.bias.zero_()


@torch.no_grad()
def uniform_bn(module: nn.Module) -> None:
    """Every batch norm in ``module``: weight U(0, 1), bias 0 (``bnparams``; Torch's BatchNormalization reset)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            m.weight.uniform_(0.0, 1.0)
            m.bias.zero_()


@torch.no_grad()
def fb_conv(conv: nn.Conv2d) -> None:
    """``ConvInit``: weight N(0, sqrt(2/n)), n = kW kH nOutputPlane; bias 0 (fb drops it under cuDNN >= 4)."""
    k_h, k_w = conv.kernel_size
    conv.weight.normal_(0.0, math.sqrt(2.0 / (k_h * k_w * conv.out_channels)))
    if conv.bias is not None:
        conv.bias.zero_()


@torch.no_grad()
def fb_layers(module: nn.Module) -> None:
    """Every convolution, linear layer and batch norm in ``module`` drawn as fb.resnet.torch draws it."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fb_conv(m)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features)  # Torch's nn.Linear reset, which createModel keeps
            m.weight.uniform_(-bound, bound)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            m.weight.fill_(1.0)  # BNInit
            m.bias.zero_()


def authors_layers(module: nn.Module) -> None:
    """Every convolution, linear layer and batch norm in ``module`` drawn as the authors' code draws it."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            msr_conv(m)
        elif isinstance(m, nn.Linear):
            msr_linear(m)
    uniform_bn(module)
