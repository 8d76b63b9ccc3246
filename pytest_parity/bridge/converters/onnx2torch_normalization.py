"""onnx2torch converters for normalisations whose weights onnx2torch's own converters cannot keep one tensor each
(onnx_rewrites.route_normalizations_of_computed_or_shared_weights gives such nodes these op types and domain).

- A BatchNormalization of computed statistics: weight standardisation (timm's NFNets, BiT's StdConv) normalises a
  convolution's weight with F.batch_norm(weight, None, None, training=True); torch.onnx exports it as ReduceMean and
  variance nodes feeding an inference BatchNormalization. onnx2torch 1.5.15 passes those computed tensors to
  F.batch_norm as running statistics, which autograd refuses. Here the ONNX formula is computed with plain
  differentiable ops, so the gradient reaches the weight through the statistics as it does in the source.
- A BatchNormalization or InstanceNormalization whose weights several nodes read (one norm layer applied twice):
  onnx2torch copies the weights into a module per node, which splits their gradient (torch BatchNorm1d applied
  twice: 6 of 6 elements of its weight and bias gradients off, by up to 1.9). Taking the weights as inputs, the
  node reads the one shared tensor.

Registered through onnx2torch's own add_converter.
"""

from __future__ import annotations

import torch
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn
from torch.nn import functional

from pytest_parity.bridge.onnx_rewrites import (
    BATCH_NORM_OF_INPUTS,
    CONV_OF_INPUT_WEIGHT_DOMAIN,
    CONV_OF_INPUT_WEIGHT_VERSION,
    INSTANCE_NORM_OF_INPUTS,
)


class _NormalizationOfInputs(nn.Module, OnnxToTorchModule):
    """A normalisation node's module: its epsilon is its only state; the weights arrive as inputs."""

    def __init__(self, epsilon: float) -> None:
        super().__init__()
        self.epsilon = epsilon


class OnnxBatchNormOfInputs(_NormalizationOfInputs):
    """ONNX BatchNormalization (inference): (x - mean) / sqrt(var + epsilon) * scale + bias, per channel (axis 1)."""

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                var: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, *([1] * (x.dim() - 2)))
        inverse = torch.rsqrt(var.reshape(shape) + self.epsilon)
        return (x - mean.reshape(shape)) * inverse * scale.reshape(shape) + bias.reshape(shape)


class OnnxInstanceNormOfInputs(_NormalizationOfInputs):
    """ONNX InstanceNormalization: each (example, channel) normalised over its spatial axes, then scale and bias."""

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return functional.instance_norm(x, weight=scale, bias=bias, eps=self.epsilon)


@add_converter(operation_type=BATCH_NORM_OF_INPUTS, version=CONV_OF_INPUT_WEIGHT_VERSION,
               domain=CONV_OF_INPUT_WEIGHT_DOMAIN)
def _convert_batch_norm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _converted(OnnxBatchNormOfInputs, node)


@add_converter(operation_type=INSTANCE_NORM_OF_INPUTS, version=CONV_OF_INPUT_WEIGHT_VERSION,
               domain=CONV_OF_INPUT_WEIGHT_DOMAIN)
def _convert_instance_norm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _converted(OnnxInstanceNormOfInputs, node)


def _converted(module_class: type[_NormalizationOfInputs], node: OnnxNode) -> OperationConverterResult:
    module = module_class(float(node.attributes.get("epsilon", 1e-5)))
    return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))
