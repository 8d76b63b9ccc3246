"""Unit tests for marker/override validation (pytest_parity.settings)."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_parity.errors import ParityUsageError
from pytest_parity.settings import (
    KNOWN_DEVICES,
    MARKER_ARGUMENTS,
    ParitySettings,
    parse_devices_option,
    resolve,
    with_overrides,
)

BASE = ParitySettings()
TOLERANCES = ("atol", "rtol", "grad_atol", "grad_rtol")


def _usage_error(kwargs):
    with pytest.raises(ParityUsageError) as info:
        resolve(BASE, (), kwargs)
    return str(info.value)


# --------------------------------------------------------------------------------------------------------------------
# defaults and the argument list
# --------------------------------------------------------------------------------------------------------------------


def test_defaults():
    assert BASE.target is None
    assert BASE.devices == ("cpu", "cuda")
    assert (BASE.atol, BASE.rtol, BASE.grad_atol, BASE.grad_rtol) == (1e-5, 1e-4, 1e-4, 1e-3)
    assert BASE.grad is True
    assert BASE.speed is None
    assert BASE.seed == 0
    assert BASE.randomize_constant_weights is True


def test_marker_arguments_are_the_settings_fields():
    assert set(MARKER_ARGUMENTS) == {f.name for f in dataclasses.fields(ParitySettings)}


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASE.atol = 1.0


def test_resolve_without_arguments_returns_equal_settings():
    assert resolve(BASE, (), {}) == BASE


def test_resolve_applies_arguments_on_top_of_base_and_leaves_base_alone():
    base = ParitySettings(seed=7, rtol=0.5)
    settings = resolve(base, (), {"atol": 1e-3, "grad": False})
    assert settings.atol == 1e-3
    assert settings.grad is False
    assert settings.seed == 7  # from the base
    assert settings.rtol == 0.5
    assert base.atol == 1e-5
    assert base.grad is True


# --------------------------------------------------------------------------------------------------------------------
# unknown / positional arguments
# --------------------------------------------------------------------------------------------------------------------


def test_unknown_marker_argument_is_named_and_allowed_ones_listed():
    message = _usage_error({"atoll": 1e-5})
    assert "@pytest.mark.parity" in message
    assert "atoll" in message
    assert "allowed:" in message
    allowed_part = message.split("allowed:", 1)[1]
    for name in MARKER_ARGUMENTS:
        assert name in allowed_part


def test_several_unknown_arguments_are_all_named():
    message = _usage_error({"zzz": 1, "aaa": 2, "atol": 1e-5})
    assert "aaa, zzz" in message


def test_positional_marker_arguments_are_rejected():
    with pytest.raises(ParityUsageError) as info:
        resolve(BASE, (1e-5,), {})
    message = str(info.value)
    assert "keyword arguments only" in message
    assert "(1e-05,)" in message
    assert "atol" in message.split("allowed:", 1)[1]


# --------------------------------------------------------------------------------------------------------------------
# tolerances
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOLERANCES)
@pytest.mark.parametrize("value", [-1e-5, -1, float("nan"), float("inf"), float("-inf"), True, False, "1e-5", None,
                                   [1e-5]])
def test_bad_tolerances_are_rejected_naming_the_argument(name, value):
    message = _usage_error({name: value})
    assert f"{name}={value!r}" in message
    assert ">= 0" in message


@pytest.mark.parametrize("name", TOLERANCES)
def test_good_tolerances_are_accepted_as_floats(name):
    settings = resolve(BASE, (), {name: 0})
    assert getattr(settings, name) == 0.0
    assert isinstance(getattr(settings, name), float)
    assert getattr(resolve(BASE, (), {name: 2.5e-3}), name) == 2.5e-3


# --------------------------------------------------------------------------------------------------------------------
# devices
# --------------------------------------------------------------------------------------------------------------------


def test_unknown_device_is_named():
    message = _usage_error({"devices": ("cpu", "tpu")})
    assert "unknown device 'tpu'" in message
    assert str(KNOWN_DEVICES) in message


def test_device_string_is_one_device():
    assert resolve(BASE, (), {"devices": "cpu"}).devices == ("cpu",)
    assert resolve(BASE, (), {"devices": "cuda"}).devices == ("cuda",)


def test_unknown_device_string_is_rejected():
    assert "unknown device 'cpu,cuda'" in _usage_error({"devices": "cpu,cuda"})


def test_devices_list_becomes_tuple_and_duplicates_are_removed_in_order():
    settings = resolve(BASE, (), {"devices": ["cuda", "cpu", "cuda", "cpu"]})
    assert settings.devices == ("cuda", "cpu")
    assert isinstance(settings.devices, tuple)


@pytest.mark.parametrize("value", [(), [], None, 1, ("cpu", 1), {"cpu"}])
def test_malformed_devices_are_rejected(value):
    message = _usage_error({"devices": value})
    assert "devices=" in message
    assert "non-empty tuple of device names" in message


# --------------------------------------------------------------------------------------------------------------------
# speed, seed, booleans, target
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0.0, -1.5, "fast", True, float("nan"), float("inf"), [2]])
def test_bad_speed_is_rejected(value):
    message = _usage_error({"speed": value})
    assert f"speed={value!r}" in message
    assert "> 0" in message


def test_speed_accepts_none_and_positive_numbers():
    assert resolve(BASE, (), {"speed": None}).speed is None
    settings = resolve(BASE, (), {"speed": 2})
    assert settings.speed == 2.0
    assert isinstance(settings.speed, float)
    assert resolve(BASE, (), {"speed": 1.5}).speed == 1.5


@pytest.mark.parametrize("value", [-1, 1.5, "3", True, None])
def test_bad_seed_is_rejected(value):
    message = _usage_error({"seed": value})
    assert f"seed={value!r}" in message
    assert "integer >= 0" in message


def test_seed_accepts_non_negative_integers():
    assert resolve(BASE, (), {"seed": 0}).seed == 0
    assert resolve(BASE, (), {"seed": 12345}).seed == 12345


@pytest.mark.parametrize("name", ["grad", "randomize_constant_weights"])
@pytest.mark.parametrize("value", [1, 0, "yes", None])
def test_boolean_arguments_need_a_bool(name, value):
    message = _usage_error({name: value})
    assert f"{name}={value!r}" in message
    assert "True or False" in message


@pytest.mark.parametrize("name", ["grad", "randomize_constant_weights"])
def test_boolean_arguments_accept_bools(name):
    assert getattr(resolve(BASE, (), {name: False}), name) is False
    assert getattr(resolve(BASE, (), {name: True}), name) is True


@pytest.mark.parametrize("value", ["jax", "TensorFlow", "Torch", 1])
def test_unknown_target_is_rejected(value):
    message = _usage_error({"target": value})
    assert f"target={value!r}" in message
    assert "('torch', 'tensorflow')" in message


def test_target_accepts_torch_tensorflow_and_none():
    assert resolve(BASE, (), {"target": "torch"}).target == "torch"
    # Known so that the check can say why ONNX -> TensorFlow is unavailable and point to port mode (bridge.convert).
    assert resolve(BASE, (), {"target": "tensorflow"}).target == "tensorflow"
    assert resolve(ParitySettings(target="torch"), (), {"target": None}).target is None


# --------------------------------------------------------------------------------------------------------------------
# with_overrides
# --------------------------------------------------------------------------------------------------------------------


def test_overrides_apply_and_validate():
    settings = resolve(BASE, (), {"devices": ("cpu",), "atol": 1e-3})
    overridden = with_overrides(settings, {"rtol": 0.1, "grad": False, "speed": 3})
    assert overridden.rtol == 0.1
    assert overridden.grad is False
    assert overridden.speed == 3.0
    assert overridden.atol == 1e-3
    assert overridden.devices == ("cpu",)
    assert settings.rtol == 1e-4


def test_no_overrides_returns_equal_settings():
    assert with_overrides(BASE, {}) == BASE


def test_overrides_reject_devices():
    with pytest.raises(ParityUsageError) as info:
        with_overrides(BASE, {"devices": ("cpu",)})
    message = str(info.value)
    assert "cannot override devices" in message
    assert "@pytest.mark.parity" in message


def test_overrides_reject_unknown_names_and_list_allowed_without_devices():
    with pytest.raises(ParityUsageError) as info:
        with_overrides(BASE, {"tolerance": 1e-3})
    message = str(info.value)
    assert "parity.check()" in message
    assert "tolerance" in message
    allowed = [name.strip() for name in message.split("allowed:", 1)[1].split(",")]
    assert "devices" not in allowed
    assert set(allowed) == set(MARKER_ARGUMENTS) - {"devices"}


@pytest.mark.parametrize(("name", "value"), [("atol", -1.0), ("rtol", float("nan")), ("speed", 0), ("seed", -3),
                                             ("grad", "no"), ("target", "jax")])
def test_override_values_are_validated(name, value):
    with pytest.raises(ParityUsageError, match=f"{name}="):
        with_overrides(BASE, {name: value})


# --------------------------------------------------------------------------------------------------------------------
# parse_devices_option
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("cpu", ("cpu",)),
    ("cuda", ("cuda",)),
    ("cpu,cuda", ("cpu", "cuda")),
    ("cuda,cpu", ("cuda", "cpu")),
    (" cpu , cuda ", ("cpu", "cuda")),
    ("cpu,,", ("cpu",)),
])
def test_parse_devices_option(text, expected):
    assert parse_devices_option(text) == expected


@pytest.mark.parametrize("text", ["", " , ", "tpu", "cpu,tpu", "CPU", "cpu;cuda"])
def test_parse_devices_option_rejects_bad_lists(text):
    with pytest.raises(ValueError) as info:
        parse_devices_option(text)
    message = str(info.value)
    assert repr(text) in message
    assert "cpu, cuda" in message


def test_timed_accepts_forward_and_forward_backward_only():
    assert resolve(BASE, (), {"timed": "forward_backward"}).timed == "forward_backward"
    with pytest.raises(ParityUsageError, match=r"timed='backward' must be one of \('forward', 'forward_backward'\)"):
        resolve(BASE, (), {"timed": "backward"})


def test_a_gpu_may_be_present_is_decided_from_device_nodes_and_the_environment():
    from pytest_parity.session import gpu_may_be_present

    def no_path(path):
        return False

    def nowhere(name):
        return None

    assert not gpu_may_be_present({}, no_path, nowhere)
    assert gpu_may_be_present({}, lambda path: path == "/dev/nvidiactl", nowhere)
    assert gpu_may_be_present({}, no_path, lambda name: "/usr/bin/nvidia-smi")
    assert not gpu_may_be_present({"CUDA_VISIBLE_DEVICES": ""}, lambda path: True, nowhere)
    assert not gpu_may_be_present({"CUDA_VISIBLE_DEVICES": "-1"}, lambda path: True, nowhere)
    assert gpu_may_be_present({"CUDA_VISIBLE_DEVICES": "0"}, lambda path: True, nowhere)
