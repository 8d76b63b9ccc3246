"""onnx2torch converters for a Conv and a ConvTranspose whose weight is an input of the node, not a constant of its own.

onnx2torch 1.5.15's Conv converter copies the weight initializer into an nn.Conv's parameter, one per node. Two
kinds of model break that (issue 13):
- a weight read by several Conv nodes (timm's CoaT applies one depthwise Conv to several slices; a module called
  twice): each node gets its own copy, the gradient is split among the copies, and only one of them is matched;
- a weight computed at run time (weight_norm: g * v / ||v||, as in transformers' Wav2Vec2): there is no initializer,
  and onnx2torch fails with a KeyError naming the node that computes it.
The same holds for ConvTranspose (a weight-normed transposed convolution, a decoder that applies one upsampling layer
twice). onnx_rewrites.route_convs_reading_shared_or_computed_weights gives such nodes this module's op types and domain
(registered through onnx2torch's own add_converter), and the converted module computes the convolution as a function
of the weight and bias it is given. So the weight stays one tensor of the converted model (a shared initializer is read
through one Identity, see bridge.share_weights_read_twice), and the gradient flows to whatever computes it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from pytest_parity.bridge.onnx_rewrites import (
    CONV_OF_INPUT_WEIGHT,
    CONV_OF_INPUT_WEIGHT_DOMAIN,
    CONV_OF_INPUT_WEIGHT_VERSION,
    CONV_TRANSPOSE_OF_INPUT_WEIGHT,
)

_CONVOLUTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_TRANSPOSED_CONVOLUTIONS = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class OnnxConvOfInputWeight(nn.Module, OnnxToTorchModule):
    """ONNX Conv (auto_pad NOTSET or VALID) with the weight and optional bias as forward() arguments."""

    def __init__(self, strides: list[int] | None, dilations: list[int] | None, group: int, pads: list[int] | None
                 ) -> None:
        super().__init__()
        self.strides, self.dilations, self.group, self.pads = strides, dilations, group, pads

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        rank = weight.dim() - 2
        convolution = _CONVOLUTIONS[rank]
        pads = self.pads or [0] * (2 * rank)
        begin, end = pads[:rank], pads[rank:]
        padding: list[int] | int = 0
        if begin == end:
            padding = begin
        else:  # asymmetric: F.pad takes (last axis begin, last axis end, previous axis begin, ...)
            x = F.pad(x, [size for axis in reversed(range(rank)) for size in (begin[axis], end[axis])])
        return convolution(x, weight, bias, stride=self.strides or 1, padding=padding,
                           dilation=self.dilations or 1, groups=self.group)


@add_converter(operation_type=CONV_OF_INPUT_WEIGHT, version=CONV_OF_INPUT_WEIGHT_VERSION,
               domain=CONV_OF_INPUT_WEIGHT_DOMAIN)
def _convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    attributes: dict[str, Any] = node.attributes
    auto_pad = attributes.get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        # As onnx2torch's own Conv converter: the pads depend on the input size; static shapes avoid it.
        raise NotImplementedError(f'"{auto_pad}" auto_pad is not implemented')
    pads = None if auto_pad == "VALID" else attributes.get("pads")
    module = OnnxConvOfInputWeight(attributes.get("strides"), attributes.get("dilations"), attributes.get("group", 1),
                                   None if pads is None else list(pads))
    return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))


class OnnxConvTransposeOfInputWeight(nn.Module, OnnxToTorchModule):
    """ONNX ConvTranspose with symmetric pads (asymmetric ones were cropped into a Slice before, see
    onnx_rewrites.crop_asymmetric_conv_transpose_pads) and no output_shape, with the weight and optional bias as
    forward() arguments."""

    def __init__(self, strides: list[int] | None, dilations: list[int] | None, group: int, pads: list[int] | None,
                 output_padding: list[int] | None) -> None:
        super().__init__()
        self.strides, self.dilations, self.group, self.pads = strides, dilations, group, pads
        self.output_padding = output_padding

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        rank = weight.dim() - 2
        pads = self.pads or [0] * (2 * rank)
        return _TRANSPOSED_CONVOLUTIONS[rank](x, weight, bias, stride=self.strides or 1, padding=pads[:rank],
                                              output_padding=self.output_padding or 0, groups=self.group,
                                              dilation=self.dilations or 1)


@add_converter(operation_type=CONV_TRANSPOSE_OF_INPUT_WEIGHT, version=CONV_OF_INPUT_WEIGHT_VERSION,
               domain=CONV_OF_INPUT_WEIGHT_DOMAIN)
def _convert_transposed(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    attributes: dict[str, Any] = node.attributes
    if attributes.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or "output_shape" in attributes:
        # As onnx2torch's own ConvTranspose converter: pads that depend on the input size are not implemented.
        raise NotImplementedError("ConvTranspose with auto_pad or output_shape is not implemented")
    pads = None if attributes.get("auto_pad") == "VALID" else attributes.get("pads")
    if pads is not None and list(pads[:len(pads) // 2]) != list(pads[len(pads) // 2:]):
        raise NotImplementedError("ConvTranspose with non symmetrical padding is not implemented")
    output_padding = attributes.get("output_padding")
    module = OnnxConvTransposeOfInputWeight(attributes.get("strides"), attributes.get("dilations"),
                                            attributes.get("group", 1), None if pads is None else list(pads),
                                            None if output_padding is None else list(output_padding))
    return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))
