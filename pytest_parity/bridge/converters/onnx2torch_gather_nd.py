"""An onnx2torch converter for ONNX GatherND with batch_dims != 0, which onnx2torch 1.5.15 refuses when the converted
model runs ("GatherND for batch_dims != 0 is not implemented", ENOT-AutoDL/onnx2torch#107).

tf2onnx emits it for tf.gather_nd(..., batch_dims=b) (keras-hub's DeBERTa-v3 relative attention).
onnx_rewrites.route_gather_nd_with_batch_dims gives such nodes this module's op type, registered through onnx2torch's
own add_converter (onnx2torch's GatherND converter is left as it is for batch_dims 0).

ONNX semantics (opset 12 onwards): data [B1..Bb, D1..Dr], indices [B1..Bb, I1..Im, k] with k <= r; for every batch
position the last axis of indices addresses the first k data axes after the batch ones, giving
output [B1..Bb, I1..Im, D(k+1)..Dr]. Computed with advanced indexing, so the gradient flows to ``data``.
"""

from __future__ import annotations

import math

import torch
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from pytest_parity.bridge.onnx_rewrites import (
    CONV_OF_INPUT_WEIGHT_DOMAIN,
    CONV_OF_INPUT_WEIGHT_VERSION,
    GATHER_ND_BATCHED,
)


class OnnxGatherNDBatched(nn.Module, OnnxToTorchModule):
    def __init__(self, batch_dims: int) -> None:
        super().__init__()
        self.batch_dims = batch_dims

    def forward(self, data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        batch = data.shape[:self.batch_dims]
        count = math.prod(batch)
        depth = indices.shape[-1]
        flat_data = data.reshape(count, *data.shape[self.batch_dims:])
        flat_indices = indices.reshape(count, *indices.shape[self.batch_dims:]).long()
        middle = flat_indices.shape[1:-1]
        rows = torch.arange(count, device=data.device).reshape(count, *([1] * len(middle)))
        # ONNX allows negative indices, counted from the end of their axis.
        coordinates = [torch.where(flat_indices[..., axis] < 0, flat_indices[..., axis] + flat_data.shape[axis + 1],
                                   flat_indices[..., axis]) for axis in range(depth)]
        gathered = flat_data[(rows, *coordinates)]
        return gathered.reshape(*batch, *middle, *flat_data.shape[1 + depth:])


@add_converter(operation_type=GATHER_ND_BATCHED, version=CONV_OF_INPUT_WEIGHT_VERSION,
               domain=CONV_OF_INPUT_WEIGHT_DOMAIN)
def _convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=OnnxGatherNDBatched(int(node.attributes.get("batch_dims", 0))),
                                    onnx_mapping=onnx_mapping_from_node(node))
