"""Layer names in messages by order of appearance within the model (verdict.layer_names), with stand-in layers: the
renaming rules without Keras. tests/e2e/test_stable_layer_names.py runs them on real Keras models."""

from __future__ import annotations

from pytest_parity.errors import ConversionError, ParityError
from pytest_parity.verdict.layer_names import display_names, stable_text, with_stable_names


class Dense:
    def __init__(self, name):
        self.name = name


class Conv2D(Dense):
    pass


class Sequential(Dense):
    def __init__(self, name, layers):
        super().__init__(name)
        self.layers = layers

    def _flatten_layers(self, include_self=True, recursive=True):
        return [self, *self.layers]


def test_automatic_names_are_renumbered_in_order_of_appearance_and_chosen_names_kept():
    model = Sequential("sequential_7", [Dense("dense_12"), Conv2D("conv2d_9"), Dense("head"), Dense("dense_11"),
                                        Conv2D("conv2d")])
    assert display_names([model]) == {"sequential_7": "sequential", "dense_12": "dense", "dense_11": "dense_1",
                                      "conv2d_9": "conv2d", "conv2d": "conv2d_1"}


def test_the_same_model_built_after_others_gets_the_same_names():
    early = Sequential("sequential", [Dense("dense"), Dense("dense_1")])
    late = Sequential("sequential_4", [Dense("dense_8"), Dense("dense_9")])
    message = "gradient '{0}/{1}/kernel' differs; first divergence between {0}/{1} (Dense) and {0}/{2} (Dense)"
    assert (stable_text(message.format("sequential", "dense", "dense_1"), display_names([early]))
            == stable_text(message.format("sequential_4", "dense_8", "dense_9"), display_names([late])))


def test_a_renumbered_name_never_reads_like_a_name_the_user_chose():
    # The user named a layer of another class "dense_1": renumbering the Dense layers would name two layers alike.
    model = Sequential("sequential_2", [Dense("dense_5"), Dense("dense_6"), Conv2D("dense_1")])
    assert display_names([model]) == {"sequential_2": "sequential"}


def test_names_are_replaced_whole_and_at_once():
    names = {"dense_6": "dense", "dense_7": "dense_1", "dense_1": "dense_2"}
    assert stable_text("dense_6 dense_7/kernel 'dense_1' dense_61 my_dense_6 dense_6_1", names) == (
        "dense dense_1/kernel 'dense_2' dense_61 my_dense_6 dense_6_1")
    assert stable_text("unchanged", {}) == "unchanged"


def test_the_exception_keeps_its_type_attributes_and_result():
    model = Sequential("sequential_3", [Dense("dense_4")])
    result = object()
    failure = with_stable_names(ParityError("gradient 'sequential_3/dense_4/kernel'", result), [model, None])  # type: ignore[arg-type]
    assert isinstance(failure, ParityError) and failure.result is result
    assert str(failure) == "gradient 'sequential/dense/kernel'"
    refused = with_stable_names(ConversionError("Keras layer 'dense_4' fails", step="export", op="X"), [model])
    assert isinstance(refused, ConversionError) and refused.op == "X" and str(refused) == "Keras layer 'dense' fails"
    # Not a Keras model (a torch module, None): nothing to rename.
    assert str(with_stable_names(ParityError("dense_4"), [object()])) == "dense_4"
