"""Convert mode PyTorch -> torch.onnx.export -> ONNX -> onnx2torch -> PyTorch on the model styles users write.

Every check compares the outputs, the input gradients and the gradient of every torch parameter, reported under the
parameter's own name; BatchNorm running statistics are followed into the converted model as well.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fixtures.torch_convert_models import EmbeddingMean, NormGeluMLP, SmallCNN, TwoInputsDictOutput
from fixtures.torch_models import LinearRegression, Net
from pytest_parity import ConversionError, ParityError, ParityResult, ParityUsageError
from pytest_parity.bridge import torch_export
from pytest_parity.check import run_check
from pytest_parity.frameworks import flatten_inputs
from pytest_parity.frameworks import torch as torch_adapter
from pytest_parity.settings import ParitySettings

ROUTE = "torch -> onnx -> torch"


def parameter_names(model: nn.Module) -> set[str]:
    return {name for name, _ in model.named_parameters()}


def state(model: nn.Module) -> dict[str, np.ndarray]:
    return {name: tensor.detach().numpy().copy() for name, tensor in model.state_dict().items()}


def check(model, inputs, **settings):
    return run_check(model, None, inputs, ParitySettings(**settings), "cpu", "test_convert_torch")


@pytest.mark.parity
def test_mnist_net_with_dropout(parity):
    model = Net()
    result = parity.check(model, inputs=parity.randn(8, 28, 28))
    assert isinstance(result, ParityResult) and result.passed
    assert result.route == ROUTE
    assert set(result.grads) == {"input"} | parameter_names(model)
    assert result.unmatched_weights == {}


@pytest.mark.parity
def test_linear_regression(parity):
    model = LinearRegression()
    result = parity.check(model, inputs=parity.randn(16, 2))
    assert result.passed
    assert set(result.grads) == {"input", "linear.weight", "linear.bias"}
    assert result.outputs.total == 16


@pytest.mark.parity
def test_cnn_with_batchnorm_and_stride_2_keeps_batchnorm_unfolded(parity):
    model = SmallCNN()
    before = state(model)
    result = parity.check(model, inputs=parity.randn(2, 3, 8, 8))
    assert result.passed
    assert set(result.grads) == {"input"} | parameter_names(model)
    # The running statistics (identity at construction, so randomized for the check) are matched and compared as
    # transferred weights; they have no gradient.
    statistics = {"bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"}
    assert statistics <= set(result.weight_names) and statistics <= set(result.weights)
    assert not statistics & set(result.grads)
    assert result.unmatched_weights == {}
    # ... and restored afterwards.
    after = state(model)
    assert all(np.array_equal(before[name], after[name]) for name in before)
    assert np.all(before["bn1.running_var"] == 1.0)


@pytest.mark.parity
def test_embedding_with_int64_ids_has_no_input_gradient(parity):
    model = EmbeddingMean()
    ids = np.random.default_rng(0).integers(0, 50, (4, 7)).astype(np.int64)
    result = parity.check(model, inputs=ids)
    assert result.passed
    assert set(result.grads) == parameter_names(model)


@pytest.mark.parity
def test_layernorm_gelu_mlp(parity):
    model = NormGeluMLP()
    result = parity.check(model, inputs=parity.randn(4, 16))
    assert result.passed
    assert set(result.grads) == {"input"} | parameter_names(model)
    assert {"norm.weight", "norm.bias"} <= set(result.weight_names)


@pytest.mark.parity
def test_two_positional_inputs_and_dict_output(parity):
    model = TwoInputsDictOutput()
    result = parity.check(model, inputs=(parity.randn(4, 6), parity.randn(4, 5)))
    assert result.passed
    assert list(result.outputs.leaves) == ["output['score']", "output['logits']"]
    assert set(result.grads) == {"input[0]", "input[1]"} | parameter_names(model)
    assert result.outputs.total == 4 * 1 + 4 * 3


@pytest.mark.parity
def test_named_inputs_given_out_of_signature_order(parity):
    model = TwoInputsDictOutput()
    result = parity.check(model, inputs={"extra": parity.randn(4, 5), "image": parity.randn(4, 6)})
    assert result.passed
    assert {"input['image']", "input['extra']"} <= set(result.grads)


def test_exported_graph_is_opset_17_keeps_batchnorm_and_names_weights_after_the_module():
    model = SmallCNN()
    source = torch_adapter.TorchModel(model)
    model_proto = source.to_onnx(flatten_inputs(np.zeros((2, 3, 8, 8), np.float32)), 17)
    assert {entry.domain: entry.version for entry in model_proto.opset_import}[""] == 17
    ops = [node.op_type for node in model_proto.graph.node]
    assert ops.count("BatchNormalization") == 2 and ops.count("Conv") == 2
    assert {name for name, _ in model.state_dict().items() if "num_batches" not in name} <= {
        tensor.name for tensor in model_proto.graph.initializer}
    # onnx2torch rejects Reshape(allowzero=1); the exporter's flatten uses it with a constant shape holding no 0.
    assert all(attribute.i == 0 for node in model_proto.graph.node if node.op_type == "Reshape"
               for attribute in node.attribute if attribute.name == "allowzero")
    assert [value.name for value in model_proto.graph.input] == ["input"]
    assert model.training  # export happens in eval mode; the module's own mode is left as it was


def test_the_public_exporter_is_used_when_the_internal_one_with_a_prebuilt_registry_is_not_available(monkeypatch):
    monkeypatch.setattr(torch_export, "_export_with_prebuilt_registry", lambda: None)
    model = SmallCNN()
    result = check(model, np.random.default_rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32))
    assert result.passed and result.unmatched_weights == {}
    assert set(result.grads) == {"input"} | parameter_names(model)


class Assorted(nn.Module):
    """Outputs that depend on no parameter, an integer input passed straight through, parameters forward never reads."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.spare = nn.Linear(3, 2)
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        return self.fc(x) * mask.unsqueeze(-1), (x * 3.0, {"softmax": torch.softmax(x, -1)}), mask


def test_outputs_without_parameters_passthrough_inputs_and_unused_parameters_are_reported():
    model = Assorted()
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    mask = np.array([1, 0, 1, 1], np.int64)
    result = check(model, (x, mask))
    assert result.passed
    assert list(result.outputs.leaves) == ["output[0]", "output[1][0]", "output[1][1]['softmax']", "output[2]"]
    assert set(result.grads) == {"input[0]", "fc.weight", "fc.bias"}
    # Never read by forward(), so not in the exported graph: reported as unused, as the weight account says (issue 24,
    # item 8: not as folded by the converter), and not compared.
    assert set(result.unmatched_weights) == {"spare.weight", "spare.bias", "scale"}
    assert all(reason == f"unused: {result.weight_account.unused[name]}"
               for name, reason in result.unmatched_weights.items())


def test_dropout_in_a_model_left_in_training_mode_is_checked_in_eval_mode():
    model = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.5), nn.Linear(6, 2)).train()
    result = check(model, np.ones((3, 6), np.float32))
    assert result.passed and result.outputs.max_abs < 1e-5


class LastStepLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 8, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def test_lstm_weights_stay_named_and_take_their_whole_gradient():
    pytest.importorskip("pytest_parity.bridge.converters.onnx2torch_recurrent",
                        reason="needs the onnx2torch LSTM converter")
    model = LastStepLSTM()
    result = check(model, np.random.default_rng(2).standard_normal((3, 5, 6)).astype(np.float32))
    assert result.passed
    # The exporter reorders the gates by slicing each weight four times; the slices are computed from the weight in
    # the converted model (not folded into anonymous constants), so every element's gradient is compared.
    assert set(result.grads) == {"input"} | parameter_names(model)


def test_multihead_attention():
    model = nn.MultiheadAttention(16, 4, batch_first=True)

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attention(x, x, x, need_weights=False)[0]

    result = check(SelfAttention(), np.random.default_rng(3).standard_normal((2, 5, 16)).astype(np.float32))
    assert result.passed
    assert set(result.grads) == {"input"} | {f"attention.{name}" for name in parameter_names(model)}


# -- failures ---------------------------------------------------------------------------------------------------------


class DataDependentBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        if y.sum() > 0:
            return y * 2
        return y


def test_data_dependent_control_flow_is_an_export_failure_naming_the_step_and_the_line():
    with pytest.raises(ConversionError) as failure:
        check(DataDependentBranch(), np.ones((3, 4), np.float32))
    message = str(failure.value)
    assert failure.value.step.startswith("PyTorch -> ONNX (torch.onnx.export(dynamo=True")
    assert failure.value.opset == 17
    assert message.startswith(f"{failure.value.step} failed for PyTorch DataDependentBranch: ")
    assert "it branches on a tensor's value at " in message and "(if y.sum() > 0:)" in message
    assert "What you can do: " in message and "torch.where" in message
    assert isinstance(failure.value, ParityUsageError) and not isinstance(failure.value, AssertionError)


class SingularValues(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svdvals(self.fc(x))


def test_an_op_without_onnx_translation_is_named():
    with pytest.raises(ConversionError) as failure:
        check(SingularValues(), np.ones((3, 4), np.float32))
    assert failure.value.op is not None and failure.value.op.startswith("aten.") and "svd" in failure.value.op
    assert f"the PyTorch op {failure.value.op} has no ONNX translation" in str(failure.value)


def test_a_weight_altered_by_the_import_step_is_caught_and_named(monkeypatch):
    real_from_onnx = torch_adapter.from_onnx

    def from_onnx_with_one_weight_off(model_proto):
        converted = real_from_onnx(model_proto)
        weight = next(t for t in converted.module.parameters() if tuple(t.shape) == (128, 784))
        with torch.no_grad():
            weight[7, 3] += 2e-3  # small enough to be matched as an altered copy (see weight_matching)
        return converted

    monkeypatch.setattr(torch_adapter, "from_onnx", from_onnx_with_one_weight_off)
    with pytest.raises(ParityError) as failure:
        check(Net(), np.ones((4, 28, 28), np.float32))
    message = str(failure.value)
    assert "weight 'fc1.weight' (target: '" in message
    assert "Mismatched elements: 1 / 100352" in message
    assert failure.value.result is not None and not failure.value.result.weights["fc1.weight"].passed


@pytest.mark.parity(target="tensorflow", devices=("cpu",))
def test_target_tensorflow_is_a_usage_error_pointing_to_port_mode(parity):
    with pytest.raises(pytest.fail.Exception) as failure:
        parity.check(LinearRegression(), inputs=parity.randn(4, 2))
    message = str(failure.value)
    assert "no ONNX -> TensorFlow import" in message
    assert "parity.check(torch_model, keras_model, inputs=...)" in message


class ChunkPadSlice(nn.Module):
    """torch.chunk of an odd dim (ONNX Split-18 with num_outputs), F.pad of the last dim (Pad-18 with axes) and a
    strided slice: what ShuffleNetV2 and Swin export to; onnx.version_converter has no 18 -> 17 adapter for either."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(7, 3)

    def forward(self, x):
        first, second = torch.chunk(x, 2, dim=1)  # 5 -> 3 + 2
        padded = nn.functional.pad(second, (1, 2))  # last dim 4 -> 7
        return self.fc(padded[:, ::2, :]).sum(dim=1) + first[..., :3].mean(dim=1)


@pytest.mark.parity
def test_split_and_pad_of_opset_18_come_down_to_17(parity):
    result = parity.check(ChunkPadSlice(), inputs=parity.randn(2, 5, 4))
    assert result.passed and "fc.weight" in result.grads
