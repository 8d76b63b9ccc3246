"""A battery of bad inputs and faults a hostile but realistic user produces, each in its own pytest session.

Every case is a row of ``CASES``: the user's test file, the files they hand in, the command line, the exit code, the
substrings that name the cause and the fix, and what must be left untouched. ``test_bad_input`` runs each case in a
fresh process (a crash cannot take the run down) and asserts, for every case:

1. the session ends normally (no INTERNALERROR; pytest's exit code, the one the case expects);
2. the output names the cause and the fix (the case's ``expect`` substrings);
3. no frame of the plugin or of a framework is shown, and no ``Traceback (most recent call last)`` unless the user's
   own code raised;
4. nothing handed in is modified or lost: files in ``untouched`` keep their bytes (or, where the case allows it, a
   backup with the original bytes is kept and named in the output); models and numpy inputs are checked by the test
   file itself (``bm.guarded_check`` asserts weights, train/eval mode, dtypes and input arrays after the check).

Cases the current code gets wrong are xfailed (strict) with the defect kind: traceback, misleading, silent gap,
side effect, data loss. ``benchmarks/bad_input_battery.py`` runs this file and prints the figures.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).parent
MODELS = (HERE / "bad_input_battery_models.py").read_text(encoding="utf-8")
PRELUDE = "import numpy as np\nimport pytest\nfrom bm import *  # noqa: F403\n\n"
NORMAL_EXIT_CODES = (0, 1, 2, 4, 5)
DEFECT_KINDS = ("traceback", "misleading", "silent gap", "side effect", "data loss")
PLUGIN_FRAME = re.compile(r"pytest_parity[/\\]\S+\.py:\d+")
FRAMEWORK_FRAME = re.compile(r"site-packages[/\\](tensorflow|keras|torch|onnx|tf2onnx|onnx2torch|onnxruntime)[/\\]")


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    test: str                                   # the user's test file (dedented; PRELUDE is put in front)
    expect: tuple[str, ...]                     # substrings of the output naming the cause AND the fix
    ret: int = 1                                # the exit code a correct plugin gives
    files: dict[str, str | bytes] = field(default_factory=dict)  # extra files handed in (model module, baseline, ini)
    args: tuple[str, ...] = ("--parity-devices=cpu",)
    untouched: tuple[str, ...] = ()             # files whose bytes must not change ...
    backup_ok: bool = False                     # ... unless a backup with the original bytes is kept and named
    user_raises: bool = False                   # the user's own code raises: its traceback is fine
    prime: bool = False                         # run the session once first (fills the conversion cache)
    setup: Callable[[Path], None] | None = None  # after priming, before the session (corrupt a cache, ...)
    after: Callable[[Path, str], None] | None = None  # extra assertions on the directory and output
    xfail: str | None = None                    # "<defect kind>: <what is wrong now>"


def t(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def check_body(marker: str = "", call: str = "guarded_check(parity, keras_mlp(), inputs=parity.randn(4, 6))",
               setup: str = "") -> str:
    """A one-test file: a parity-marked test that builds what it needs and runs ``call``."""
    lines = [f"@pytest.mark.parity({marker})", "def test_case(parity):"]
    lines += [f"    {line}" for line in textwrap.dedent(setup).strip().splitlines()] if setup.strip() else []
    lines.append(f"    {call}")
    return "\n".join(lines) + "\n"


CASES: list[Case] = []


def case(**kwargs) -> None:
    CASES.append(Case(**kwargs))


# --------------------------------------------------------------------------------------------------------------------
# Marker and override arguments
# --------------------------------------------------------------------------------------------------------------------
M = "marker"
case(id="marker-positional-argument", category=M, test=check_body('"cpu"'),
     expect=("keyword arguments only", "positional ('cpu',)", "allowed: target, devices"))
case(id="marker-unknown-name", category=M, test=check_body("tolerance=1e-3"),
     expect=("unknown argument(s) tolerance", "allowed:", "atol"))
case(id="marker-atol-string", category=M, test=check_body('atol="1e-5"'),
     expect=("atol='1e-5'", "must be a number >= 0", "atol=1e-5"))
case(id="marker-atol-negative", category=M, test=check_body("atol=-1e-5"),
     expect=("atol=-1e-05", ">= 0"))
case(id="marker-rtol-nan", category=M, test=check_body('rtol=float("nan")'),
     expect=("rtol=nan", "must be a number >= 0"))
case(id="marker-grad-atol-inf", category=M, test=check_body('grad_atol=float("inf")'),
     expect=("grad_atol=inf", "finite number >= 0"))
case(id="marker-atol-bool", category=M, test=check_body("atol=True"),
     expect=("atol=True", "must be a number"))
case(id="marker-atol-numpy-float32-accepted", category=M, test=check_body("atol=np.float32(1e-3)"),
     expect=("1 passed",), ret=0)
case(id="override-rtol-numpy-float64-accepted", category=M,
     test=check_body(call="guarded_check(parity, keras_mlp(), inputs=parity.randn(4, 6), rtol=np.float64(1e-3))"),
     expect=("1 passed",), ret=0)
case(id="override-grad-atol-numpy-float32-accepted", category=M,
     test=check_body(call="guarded_check(parity, keras_mlp(), inputs=parity.randn(4, 6), "
                          "grad_atol=np.float32(1e-4))"),
     expect=("1 passed",), ret=0)
case(id="marker-seed-numpy-int-accepted", category=M, test=check_body("seed=np.int64(3)"),
     expect=("1 passed",), ret=0)
case(id="marker-seed-negative", category=M, test=check_body("seed=-1"),
     expect=("seed=-1", "integer >= 0"))
case(id="marker-grad-string", category=M, test=check_body('grad="yes"'),
     expect=("grad='yes'", "True or False"))
case(id="marker-devices-unknown", category=M, test=check_body('devices=("gpu",)'),
     expect=("unknown device 'gpu'", "known devices are ('cpu', 'cuda')"))
case(id="marker-devices-empty", category=M, test=check_body("devices=()"),
     expect=("devices=()", "non-empty tuple", "devices=('cpu',)"))
case(id="marker-devices-plain-string-accepted", category=M, test=check_body('devices="cpu"'),
     expect=("1 passed",), ret=0)
case(id="marker-timed-unknown", category=M, test=check_body('speed=2.0, timed="backward"'),
     expect=("timed='backward'", "'forward', 'forward_backward'"))
case(id="marker-speed-zero", category=M, test=check_body("speed=0"),
     expect=("speed=0", "None (not measured) or a number > 0"))
case(id="marker-speed-inconclusive-unknown", category=M, test=check_body('speed=2.0, speed_inconclusive="ignore"'),
     expect=("speed_inconclusive='ignore'", "'warn', 'fail', 'skip'"))
case(id="marker-target-pytorch-spelling", category=M, test=check_body('target="pytorch"'),
     expect=("target='pytorch'", "('torch', 'tensorflow')"))
case(id="marker-target-tensorflow-for-keras-source", category=M, test=check_body('target="tensorflow"'),
     expect=("tensorflow", "port mode"))
case(id="marker-layouts-in-convert-mode", category=M, test=check_body('layouts=("NHWC", "NCHW")'),
     expect=("layouts=... applies to port mode",))
case(id="marker-unmatched-weights-empty-list", category=M, test=check_body("unmatched_weights=[]"),
     expect=("unmatched_weights=[]", "non-empty list", "'allow'"))
case(id="override-devices", category=M,
     test=check_body(call="guarded_check(parity, keras_mlp(), inputs=parity.randn(4, 6), devices=('cpu',))"),
     expect=("cannot override devices", "@pytest.mark.parity(...)"))
case(id="override-unknown-name", category=M,
     test=check_body(call="guarded_check(parity, keras_mlp(), inputs=parity.randn(4, 6), atoll=1e-3)"),
     expect=("unknown argument(s) atoll", "allowed:", "atol"))
case(id="override-target-framework-as-string", category=M,
     test=check_body(call="guarded_check(parity, keras_mlp(), 'torch', inputs=parity.randn(4, 6))"),
     # A framework name there is the target= override (issue 14), as the marker's target= is.
     expect=("1 passed",), ret=0)

# --------------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------------
INP = "inputs"


def input_case(id: str, inputs: str, expect: tuple[str, ...], *, model: str = "keras_mlp()", ret: int = 1,
               setup: str = "", xfail: str | None = None, args: tuple[str, ...] = ("--parity-devices=cpu",)) -> None:
    case(id=id, category=INP, test=check_body(setup=setup + f"\nmodel = {model}\nx = {inputs}",
                                              call="guarded_check(parity, model, inputs=x)"),
         expect=expect, ret=ret, xfail=xfail, args=args)


input_case("input-wrong-rank", "parity.randn(6)", ("input: float32[6]", "The model expects", "rank"))
input_case("input-wrong-feature-count", "parity.randn(4, 5)", ("input: float32[4, 5]", "The model expects"))
input_case("input-wrong-shape-torch", "parity.randn(4, 5)", ("input: float32[4, 5]", "shape"), model="torch_mlp()")
input_case("input-int64-keras", "np.arange(24).reshape(4, 6)", ("1 passed",), ret=0)
input_case("input-int64-torch", "np.arange(24).reshape(4, 6)",
           ("input: int64[4, 6]", "same dtype", "dtype against the model"), model="torch_mlp()")
input_case("input-float64-keras", "parity.randn(4, 6).astype(np.float64)", ("1 passed",), ret=0)
input_case("input-float64-torch", "parity.randn(4, 6).astype(np.float64)", ("1 passed",), ret=0, model="torch_mlp()")
input_case("input-float16-torch", "parity.randn(4, 6).astype(np.float16)",
           ("input: float16[4, 6]", "same dtype", "dtype against the model"),
           model="torch_mlp()")
input_case("input-bool", "parity.randn(4, 6) > 0", ("1 passed",), ret=0)
input_case("input-complex", "parity.randn(4, 6).astype(np.complex64)", ("complex64", "real"))
input_case("input-object-dtype", "np.array([[object()] * 6] * 4)", ("dtype object", "numeric numpy array"))
input_case("input-empty-batch", "parity.randn(0, 6)", ("float32[0, 6]", "empty", "at least one"))
input_case("input-randn-negative-size", "parity.randn(-1, 6)", ("parity.randn(-1, 6)", "non-negative integers"))
input_case("input-randn-float-size", "parity.randn(2.5, 6)", ("parity.randn(2.5, 6)", "non-negative integers"))
input_case("input-nan", "parity.randn(4, 6)", ("NaN", "inputs"), setup="", xfail=None)
input_case("input-inf", "parity.randn(4, 6)", ("Inf", "inputs"), xfail=None)
input_case("input-nested-list-of-arrays", "[[parity.randn(4, 6)]]",
           ("input[0]: float32[1, 4, 6]", "The model expects (None, 6)"))
input_case("input-python-nested-floats", "[[0.5] * 6] * 4", ("positional inputs", "np.asarray"))
input_case("input-dict-to-sequential", "{'x': parity.randn(4, 6)}", ("x: float32[4, 6]", "The model expects (None, 6)"))
input_case("input-two-arrays-to-one-input-model", "[parity.randn(4, 6), parity.randn(4, 6)]",
           ("2 inputs", "1 input"))
input_case("input-dict-wrong-names", "{'left': parity.randn(4, 6), 'right': parity.randn(4, 4)}",
           ("'left'", "'a'", "'b'"), model="keras_two_inputs()")
input_case("input-tuple-two-inputs-ok", "(parity.randn(4, 6), parity.randn(4, 4))", ("1 passed",), ret=0,
           model="keras_two_inputs()")
input_case("input-batch-mismatch-between-inputs", "(parity.randn(4, 6), parity.randn(5, 4))",
           ("float32[4, 6]", "float32[5, 4]"), model="keras_two_inputs()")
input_case("input-read-only-array-W-error", "parity.randn(4, 6)", ("1 passed",), ret=0, model="torch_mlp()",
           setup="", args=("--parity-devices=cpu", "-W", "error"))
input_case("input-non-contiguous-transposed", "parity.randn(6, 4).T", ("1 passed",), ret=0)
input_case("input-non-contiguous-strided-torch", "parity.randn(4, 12)[:, ::2]", ("1 passed",), ret=0,
           model="torch_mlp()")
input_case("input-torch-tensor-to-keras", "torch.randn(4, 6)", ("torch.Tensor", "numpy arrays", "np.asarray"),
           setup="import torch")
input_case("input-tf-tensor-to-torch", "tf.random.normal((4, 6))", ("numpy arrays", "np.asarray"),
           model="torch_mlp()", setup="import tensorflow as tf")
input_case("input-none", "None", ("builtins.NoneType", "np.asarray"))
input_case("input-scalar", "np.float32(1.0)", ("numpy.float32", "np.asarray"))
input_case("input-empty-dict", "{}", ("inputs={} is empty",))
case(id="input-positional-instead-of-keyword", category=INP,
     test=check_body(call="guarded_check(parity, keras_mlp(), parity.randn(4, 6), inputs=parity.randn(4, 6))"),
     expect=("numpy.ndarray", "inputs="))
case(id="input-missing-inputs-keyword", category=INP,
     test=check_body(call="parity.check(keras_mlp(), parity.randn(4, 6))"),
     expect=("inputs",), user_raises=True)

# NaN / Inf / read-only inputs need a line after randn: patch the bodies written above.
_patch = {"input-nan": "x[1, 2] = np.nan", "input-inf": "x[0, 0] = np.inf", "input-read-only-array-W-error":
          "x.flags.writeable = False"}
CASES[:] = [Case(**{**c.__dict__,
                    "test": c.test.replace("    guarded_check", f"    {_patch[c.id]}\n    guarded_check")})
            if c.id in _patch else c for c in CASES]

# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------
MOD = "models"
SUBCLASSED = """
import keras

class Small(keras.Model):
    def __init__(self, seed=0):
        super().__init__()
        self.fc = keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(seed=seed))

    def call(self, x):
        return self.fc(x)
"""
TORCH_MODELS = """
import torch

class Raises(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x):
        raise ValueError("boom: the user's forward failed")

class Returns(torch.nn.Module):
    def __init__(self, what):
        super().__init__()
        self.fc = torch.nn.Linear(6, 3)
        self.what = what

    def forward(self, x):
        y = self.fc(x)
        return {"float": lambda: 1.5, "str": lambda: "logits", "none": lambda: None,
                "dict-none": lambda: {"logits": y, "aux": None}, "tuple-none": lambda: (y, None),
                "argmax": lambda: y.argmax(-1), "nan": lambda: torch.log(y)}[self.what]()

class Counter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 3)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return self.fc(x) * self.calls

class Counter1(Counter):
    def __init__(self):
        super().__init__()
        self.calls = torch.zeros(1)

class DropoutAlways(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x):
        return torch.nn.functional.dropout(self.fc(x), 0.5, training=True)

class InPlace(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x):
        x.mul_(2.0)
        return self.fc(x)

class Trained(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 4)
        self.bn = torch.nn.BatchNorm1d(4)
        self.drop = torch.nn.Dropout(0.5)
        self.out = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.out(self.drop(self.bn(self.fc(x))))
"""


def model_case(id: str, setup: str, expect: tuple[str, ...], *, call: str = "guarded_check(parity, model, inputs=x)",
               ret: int = 1, files: dict[str, str | bytes] | None = None, xfail: str | None = None,
               user_raises: bool = False, marker: str = "", extra_test: str = "") -> None:
    case(id=id, category=MOD, test=check_body(marker, call=call, setup=setup) + extra_test, expect=expect, ret=ret,
         files={"user_models.py": TORCH_MODELS, "subclassed.py": SUBCLASSED, **(files or {})}, xfail=xfail,
         user_raises=user_raises)


model_case("model-keras-subclassed-unbuilt", "from subclassed import Small\nmodel = Small()\nx = parity.randn(4, 6)",
           ("1 passed", "2 of 2"), ret=0)
case(id="model-two-unbuilt-instances-same-class-different-weights", category=MOD,
     files={"subclassed.py": SUBCLASSED},
     test=t("""
        from subclassed import Small

        @pytest.mark.parity
        def test_first(parity):
            guarded_check(parity, Small(seed=1), inputs=parity.randn(4, 6))

        @pytest.mark.parity
        def test_second(parity):
            model = Small(seed=2)
            result = guarded_check(parity, model, inputs=parity.randn(4, 6))
            assert result.outputs.max_abs < 1e-5

        @pytest.mark.parity
        def test_both_in_one_test(parity):
            a, b = Small(seed=3), Small(seed=4)
            x = parity.randn(4, 6)
            guarded_check(parity, a, inputs=x)
            guarded_check(parity, b, inputs=x)
            assert not np.allclose(a(x), b(x))
        """),
     expect=("3 passed", "2 of 2"), ret=0)
model_case("model-stateful-counter", "from user_models import Counter\nmodel = Counter().eval()\n"
           "x = parity.randn(4, 6)",
           ("different", "run"))
model_case("model-stateful-counter-1d-buffer", "from user_models import Counter1\nmodel = Counter1().eval()\n"
           "x = parity.randn(4, 6)", ("different", "run"))
model_case("model-dropout-forced-at-inference", "from user_models import DropoutAlways\n"
           "model = DropoutAlways().eval()\n"
           "x = parity.randn(4, 6)", ("random", "dropout"))
model_case("model-keras-dropout-training-true", t("""
    import keras
    inp = keras.Input((6,))
    out = keras.layers.Dropout(0.5)(keras.layers.Dense(3)(inp), training=True)
    model = keras.Model(inp, out)
    x = parity.randn(4, 6)
    """), ("1 passed",), ret=0)
model_case("model-forward-raises", "from user_models import Raises\nmodel = Raises().eval()\nx = parity.randn(4, 6)",
           ("ValueError: boom: the user's forward failed", "Running the source model"))
for what, expect in (("float", ("a float", "tensor")), ("str", ("a str", "tensor")), ("none", ("None", "tensor"))):
    model_case(f"model-returns-{what}", f"from user_models import Returns\nmodel = Returns({what!r}).eval()\n"
               "x = parity.randn(4, 6)", expect)
# A None beside tensors is left out of the comparison and the export, named in the result's notes (issue 15).
for what in ("dict-none", "tuple-none"):
    model_case(f"model-returns-{what}", f"from user_models import Returns\nmodel = Returns({what!r}).eval()\n"
               "x = parity.randn(4, 6)", ("1 passed",), ret=0)
model_case("model-returns-integer-argmax",
           "from user_models import Returns\nmodel = Returns('argmax').eval()\nx = parity.randn(4, 6)",
           ("1 passed",), ret=0)
model_case("model-returns-nan", "from user_models import Returns\nmodel = Returns('nan').eval()\n"
           "x = parity.randn(4, 6)",
           ("returns NaN or Inf", "log/sqrt of negative values"))
model_case("model-torch-train-mode-kept", "from user_models import Trained\nmodel = Trained().train()\n"
           "x = parity.randn(8, 6)", ("2 passed",), ret=0,
           extra_test=t("""

               @pytest.mark.parity
               def test_mode_after(parity):
                   from user_models import Trained
                   model = Trained().train()
                   parity.check(model, inputs=parity.randn(8, 6))
                   assert model.training and model.bn.training and model.drop.training
               """))
model_case("model-torch-frozen-params-kept", "model = torch_mlp()\nmodel.requires_grad_(False)\n"
           "x = parity.randn(4, 6)", ("1 passed",), ret=0)
model_case("model-torch-float64-with-float64-inputs", "model = torch_mlp().double()\n"
           "x = parity.randn(4, 6).astype(np.float64)", ("1 passed",), ret=0)
model_case("model-torch-float64-with-float32-inputs", "model = torch_mlp().double()\nx = parity.randn(4, 6)",
           ("input: float32[4, 6]", "Float and Double", "dtype against the model"))
model_case("model-keras-float64-layer", t("""
    import keras
    model = keras.Sequential([keras.Input((6,), dtype="float64"), keras.layers.Dense(3, dtype="float64")])
    x = parity.randn(4, 6).astype(np.float64)
    """), ("1 passed",), ret=0)
model_case("model-huge-ish-input", "model = keras_mlp()\nx = parity.randn(20000, 6)", ("1 passed",), ret=0)
model_case("model-non-model-object", "model = object()\nx = parity.randn(4, 6)",
           ("builtins.object", "not a model it knows", "torch.nn.Module"))
model_case("model-plain-function", "model = lambda x: x * 2\nx = parity.randn(4, 6)",
           ("function", "not a model it knows"))
model_case("model-class-instead-of-instance", "from user_models import Trained\nmodel = Trained\n"
           "x = parity.randn(4, 6)", ("Trained", "instance", "Trained()"))
model_case("model-keras-layer-not-model", "import keras\nmodel = keras.layers.Dense(3)\nx = parity.randn(4, 6)",
           ("1 passed", "2 of 2"), ret=0)
model_case("model-torch-no-parameters", "import torch\nmodel = torch.nn.Tanh().eval()\nx = parity.randn(4, 6)",
           ("1 passed",), ret=0)
model_case("model-keras-frozen", "model = keras_mlp()\nmodel.trainable = False\nx = parity.randn(4, 6)",
           ("1 passed",), ret=0)
model_case("model-torch-mutates-its-input", "from user_models import InPlace\nmodel = InPlace().eval()\n"
           "x = parity.randn(4, 6)", ("in-place operation",))
model_case("model-tf-module-without-variables", t("""
    import tensorflow as tf

    class Scale(tf.Module):
        @tf.function
        def __call__(self, x):
            return x * 2.0

    model = Scale()
    x = parity.randn(4, 6)
    """), ("1 passed",), ret=0)
model_case("model-keras-unbuilt-sequential-no-input", t("""
    import keras
    model = keras.Sequential([keras.layers.Dense(3)])
    x = parity.randn(4, 6)
    """), ("1 passed", "2 of 2"), ret=0)

# --------------------------------------------------------------------------------------------------------------------
# Port pairs
# --------------------------------------------------------------------------------------------------------------------
PORT = "port"
PORTS = """
import keras
import torch

def keras_two_layers(hidden=8, bias=True, activation="relu"):
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(hidden, activation=activation, name="fc1",
                                                                   use_bias=bias),
                             keras.layers.Dense(3, name="fc2")], name="kport")

class TorchTwo(torch.nn.Module):
    def __init__(self, hidden=8, bias=True, act=torch.relu):
        super().__init__()
        self.fc1 = torch.nn.Linear(6, hidden, bias=bias)
        self.fc2 = torch.nn.Linear(hidden, 3)
        self.act = act
        self.eval()

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))

class TorchOne(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 3)
        self.eval()

    def forward(self, x):
        return self.fc(x)
"""


def port_case(id: str, pair: str, expect: tuple[str, ...], *, ret: int = 1, xfail: str | None = None,
              marker: str = "", setup: str = "") -> None:
    case(id=id, category=PORT, files={"ports.py": PORTS}, xfail=xfail, expect=expect, ret=ret,
         test="from ports import *  # noqa: F403\n\n" + check_body(marker, setup=setup + "\nx = parity.randn(4, 6)",
                                                                   call=f"guarded_check(parity, {pair}, inputs=x)"))


port_case("port-mismatched-widths", "keras_two_layers(hidden=8), TorchTwo(hidden=5)",
          ("do not correspond", "row 1"))
port_case("port-layer-count-differs", "keras_two_layers(), TorchOne()", ("do not correspond",))
port_case("port-missing-bias-in-target", "keras_two_layers(), TorchTwo(bias=False)",
          ("missing bias", "give both sides a bias or neither"))
port_case("port-missing-bias-in-source", "keras_two_layers(bias=False), TorchTwo()",
          ("bias", "give both sides a bias or neither"))
port_case("port-same-framework-keras", "keras_two_layers(), keras_two_layers()",
          ("both models are TensorFlow/Keras models", "parity.check(model, inputs=...)"))
port_case("port-same-framework-torch", "TorchTwo(), TorchTwo()",
          ("both models are PyTorch models", "parity.check(model, inputs=...)"))
port_case("port-target-is-a-class", "keras_two_layers(), TorchTwo", ("TorchTwo", "instance"))
port_case("port-wrong-activation", "keras_two_layers(), TorchTwo(act=torch.tanh)",
          ("first divergence", "likely cause: the source applies relu, the target tanh"), setup="import torch")
port_case("port-target-train-mode-kept", "keras_two_layers(), TorchTwo().train()", ("1 passed",), ret=0)
port_case("port-layouts-single-string", "keras_two_layers(), TorchTwo()", ("layouts=", "(source_layout, target_"),
          marker='layouts="NHWC"')
port_case("port-target-framework-keyword-and-port", "keras_two_layers(), TorchTwo()", ("1 passed",),
          marker='target="torch"', ret=0)

# --------------------------------------------------------------------------------------------------------------------
# Command-line and ini options
# --------------------------------------------------------------------------------------------------------------------
CLI = "options"
PASSING = check_body()
INI = "[pytest]\n{}\n"


def option_case(id: str, args: tuple[str, ...], expect: tuple[str, ...], *, ini: str | None = None, ret: int = 4,
                xfail: str | None = None, files: dict[str, str | bytes] | None = None,
                untouched: tuple[str, ...] = ()) -> None:
    extra = dict(files or {})
    if ini is not None:
        extra["pytest.ini"] = INI.format(ini)
    case(id=id, category=CLI, test=PASSING, args=args, expect=expect, ret=ret, xfail=xfail, files=extra,
         untouched=untouched + (("pytest.ini",) if ini is not None else ()))


option_case("cli-devices-unknown", ("--parity-devices=gpu",),
            ("--parity-devices", "expected a comma-separated list of cpu, cuda, got 'gpu'"))
option_case("cli-devices-empty", ("--parity-devices=",), ("--parity-devices", "comma-separated list of cpu, cuda"))
option_case("cli-devices-uppercase", ("--parity-devices=CPU",), ("--parity-devices", "'CPU'", "cpu"))
option_case("cli-devices-cuda-only-without-gpu", ("--parity-devices=cuda", "-rs"), ("cuda", "SKIPPED"), ret=0)
option_case("cli-seed-not-integer", ("--parity-seed=abc",), ("--parity-seed", "invalid int value: 'abc'"))
option_case("cli-seed-negative", ("--parity-seed=-3",), ("--parity-seed must be >= 0, got -3",))
option_case("cli-speed-unknown", ("--parity-speed=fast",),
            ("--parity-speed", "invalid choice: 'fast'", "'off', 'report', 'gate', 'force'"))
option_case("cli-speed-inconclusive-unknown", ("--parity-speed-inconclusive=maybe",),
            ("--parity-speed-inconclusive", "invalid choice: 'maybe'"))
option_case("cli-cache-unknown", ("--parity-cache=maybe",), ("--parity-cache", "invalid choice: 'maybe'"))
option_case("cli-baseline-factor-below-one", ("--parity-baseline=base.json", "--parity-baseline-factor=0.5"),
            ("--parity-baseline-factor must be > 1 (got 0.5)",), files={"base.json": "{}"},
            untouched=("base.json",))
option_case("cli-baseline-factor-not-number", ("--parity-baseline=base.json", "--parity-baseline-factor=ten"),
            ("--parity-baseline-factor", "invalid float value: 'ten'"))
option_case("cli-baseline-factor-nan", ("--parity-baseline=base.json", "--parity-baseline-factor=nan"),
            ("--parity-baseline-factor must be > 1 (got nan)",), files={"base.json": "{}"}, untouched=("base.json",))
option_case("cli-baseline-speed-tolerance-negative",
            ("--parity-baseline=base.json", "--parity-baseline-speed-tolerance=-0.1"),
            ("--parity-baseline-speed-tolerance >= 0 (got -0.1)",), files={"base.json": "{}"},
            untouched=("base.json",))
option_case("cli-baseline-update-without-path", ("--parity-baseline-update",),
            ("--parity-baseline-update needs --parity-baseline=PATH",))
option_case("ini-devices-unknown", (), ("ini option parity_devices", "'gpu'", "cpu, cuda"), ini="parity_devices = gpu")
option_case("ini-seed-not-integer", (), ("ini option parity_seed must be an integer", "'abc'"),
            ini="parity_seed = abc")
option_case("ini-seed-negative", (), ("parity_seed", ">= 0", "-1"), ini="parity_seed = -1")
option_case("ini-speed-unknown", (), ("ini option parity_speed must be one of off, report, gate, force", "'fast'"),
            ini="parity_speed = fast")
option_case("ini-speed-inconclusive-unknown", (), ("ini option parity_speed_inconclusive must be one of", "'maybe'"),
            ini="parity_speed_inconclusive = maybe")
option_case("ini-cache-unknown", (), ("ini option parity_cache must be one of on, off", "'maybe'"),
            ini="parity_cache = maybe")
option_case("ini-unknown-parity-key-strict-config", ("--strict-config",), ("parity_tolerance",),
            ini="parity_tolerance = 1e-3")

# --------------------------------------------------------------------------------------------------------------------
# Report, HTML and baseline paths and contents
# --------------------------------------------------------------------------------------------------------------------
REP = "reports"
BASE_ENTRY = {"nodeid": "test_case.py::test_case[cpu]", "device": "cpu", "route": "tensorflow -> onnx -> torch",
              "passed": True, "outputs": {"max_abs": 1e-7, "max_rel": 1e-7, "mismatched": 0, "total": 12,
                                          "atol": 1e-5, "rtol": 1e-4, "passed": True},
              "grads": {"input": {"max_abs": 1e-6}}, "speed": None}
OTHER_ENTRY = {**BASE_ENTRY, "nodeid": "test_other.py::test_kept[cpu]"}


def baseline_text(*entries: dict, version: object = None) -> str:
    from pytest_parity.reports.records import REPORT_VERSION

    return json.dumps({"version": REPORT_VERSION if version is None else version, "created": "2026-01-01",
                       "environment": {}, "results": list(entries)}, indent=2) + "\n"


def report_is_valid(name: str, *nodeids: str) -> Callable[[Path, str], None]:
    def after(directory: Path, output: str) -> None:
        document = json.loads((directory / name).read_text(encoding="utf-8"))
        found = {entry["nodeid"] for entry in document["results"]}
        assert set(nodeids) <= found, f"{name} lacks {set(nodeids) - found}"
    return after


CONFLICTED = ('{\n<<<<<<< HEAD\n  "version": 1,\n=======\n  "version": 1,\n>>>>>>> feature\n  "results": []\n}\n')
NOT_UTF8 = b"\xff\xfe\x00garbage\x80\x81"


def report_case(id: str, args: tuple[str, ...], expect: tuple[str, ...], *, ret: int = 4,
                files: dict[str, str | bytes] | None = None, untouched: tuple[str, ...] = (), backup_ok: bool = False,
                xfail: str | None = None, after: Callable[[Path, str], None] | None = None,
                test: str = PASSING) -> None:
    case(id=id, category=REP, test=test, args=("--parity-devices=cpu", *args), expect=expect, ret=ret,
         files=files or {}, untouched=untouched, backup_ok=backup_ok, xfail=xfail, after=after)


report_case("report-parent-is-a-file", ("--parity-report=notes.txt/report.json",),
            ("cannot write the parity report to notes.txt/report.json",), files={"notes.txt": "my notes\n"},
            untouched=("notes.txt",))
report_case("report-path-is-a-directory", ("--parity-report=out",),
            ("cannot write the parity report to out", "end the path with / to write a shard report into it"),
            files={"out/keep.txt": "user file\n"}, untouched=("out/keep.txt",))
report_case("html-parent-is-a-file", ("--parity-html=notes.txt/report.html",),
            ("cannot write the parity HTML report to notes.txt/report.html",), files={"notes.txt": "my notes\n"},
            untouched=("notes.txt",))
report_case("html-path-is-a-directory", ("--parity-html=out",), ("cannot write the parity HTML report to out",),
            files={"out/keep.txt": "user file\n"}, untouched=("out/keep.txt",))
report_case("report-under-proc-unwritable", ("--parity-report=/proc/parity-battery/report.json",),
            ("cannot write the parity report to /proc/parity-battery/report.json",))
report_case("report-and-html-same-path", ("--parity-report=same.out", "--parity-html=same.out"),
            ("--parity-report", "--parity-html", "same"))
report_case("report-over-the-baseline-being-compared",
            ("--parity-baseline=base.json", "--parity-report=base.json"), ("--parity-report", "--parity-baseline"),
            files={"base.json": baseline_text(BASE_ENTRY, OTHER_ENTRY)}, untouched=("base.json",))
report_case("baseline-merge-conflict-markers", ("--parity-baseline=base.json",),
            ("parity baseline base.json cannot be read", "line 2", "--parity-baseline-update"),
            files={"base.json": CONFLICTED}, untouched=("base.json",))
report_case("baseline-not-json", ("--parity-baseline=base.json",),
            ("parity baseline base.json cannot be read", "--parity-baseline-update"),
            files={"base.json": "results: []\n"}, untouched=("base.json",))
report_case("baseline-empty-file", ("--parity-baseline=base.json",),
            ("parity baseline base.json cannot be read", "--parity-baseline-update"),
            files={"base.json": ""}, untouched=("base.json",))
report_case("baseline-not-utf8", ("--parity-baseline=base.json",),
            ("parity baseline base.json cannot be read", "--parity-baseline-update"),
            files={"base.json": NOT_UTF8}, untouched=("base.json",))
report_case("baseline-missing-file", ("--parity-baseline=nope.json",),
            ("parity baseline nope.json does not exist", "--parity-baseline-update"))
report_case("baseline-is-a-directory", ("--parity-baseline=base",),
            ("parity baseline base cannot be read", "--parity-baseline-update"), files={"base/keep.txt": "x\n"})
report_case("baseline-other-version", ("--parity-baseline=base.json",),
            ("has report version 0", "regenerate it with --parity-baseline-update"),
            files={"base.json": baseline_text(BASE_ENTRY, version=0)}, untouched=("base.json",))
report_case("baseline-results-not-a-list", ("--parity-baseline=base.json",), ("no 'results' list",),
            files={"base.json": '{"version": 1, "results": {}}'}, untouched=("base.json",))
report_case("baseline-entry-without-outputs", ("--parity-baseline=base.json",),
            ("base.json", "outputs", "--parity-baseline-update"),
            files={"base.json": baseline_text({k: v for k, v in BASE_ENTRY.items() if k != "outputs"})},
            untouched=("base.json",))
report_case("baseline-max-abs-null", ("--parity-baseline=base.json",),
            ("base.json", "max_abs", "--parity-baseline-update"),
            files={"base.json": baseline_text({**BASE_ENTRY, "outputs": {**BASE_ENTRY["outputs"], "max_abs": None}})},
            untouched=("base.json",))
report_case("baseline-grad-entry-not-a-dict", ("--parity-baseline=base.json",),
            ("base.json", "grads", "--parity-baseline-update"),
            files={"base.json": baseline_text({**BASE_ENTRY, "grads": {"input": 1e-6}})}, untouched=("base.json",))
report_case("baseline-drift-is-named", ("--parity-baseline=base.json",),
            ("drifted from the baseline base.json", "more than 10x the baseline"), ret=1,
            files={"base.json": baseline_text({**BASE_ENTRY, "grads": {"input": {"max_abs": 0.0}},
                                               "outputs": {**BASE_ENTRY["outputs"], "max_abs": 0.0}})},
            untouched=("base.json",),
            test=check_body(call="guarded_check(parity, keras_mlp(), inputs=parity.randn(64, 6) * 1e3)"))
report_case("baseline-update-keeps-other-entries", ("--parity-baseline=base.json", "--parity-baseline-update"),
            ("1 passed",), ret=0, files={"base.json": baseline_text(OTHER_ENTRY)},
            after=report_is_valid("base.json", "test_other.py::test_kept[cpu]", "test_case.py::test_case[cpu]"))
report_case("baseline-update-over-merge-conflict", ("--parity-baseline=base.json", "--parity-baseline-update"),
            ("base.json",), ret=4, files={"base.json": CONFLICTED}, untouched=("base.json",), backup_ok=True)
report_case("baseline-update-over-unreadable", ("--parity-baseline=base.json", "--parity-baseline-update"),
            ("base.json",), ret=4, files={"base.json": NOT_UTF8}, untouched=("base.json",), backup_ok=True)
report_case("baseline-update-parent-is-a-file", ("--parity-baseline=notes.txt/base.json",
                                                 "--parity-baseline-update"),
            ("cannot write the parity baseline to notes.txt/base.json",), files={"notes.txt": "my notes\n"},
            untouched=("notes.txt",))
report_case("report-over-a-user-file", ("--parity-report=test_helpers.py",), ("test_helpers.py", "not a parity report"),
            ret=4, files={"test_helpers.py": "def helper():\n    return 42\n"}, untouched=("test_helpers.py",),
            backup_ok=True)

# --------------------------------------------------------------------------------------------------------------------
# The conversion cache on disk (.pytest_cache/d/parity-conversions, see pytest_parity/conversion_cache.py)
# --------------------------------------------------------------------------------------------------------------------
CACHE = "cache"
CACHE_DIR = Path(".pytest_cache", "d", "parity-conversions")


def _entries(directory: Path) -> list[Path]:
    found = sorted((directory / CACHE_DIR).glob("*.onnx-entry"))
    assert found, "priming the session wrote no conversion cache entry"
    return found


def truncate_entries(directory: Path) -> None:
    for entry in _entries(directory):
        entry.write_bytes(entry.read_bytes()[: len(entry.read_bytes()) // 2])


def garble_entries(directory: Path) -> None:
    for entry in _entries(directory):
        data = bytearray(entry.read_bytes())
        data[-10:] = b"\x00" * 10
        entry.write_bytes(bytes(data))


def reframe_garbage(directory: Path) -> None:
    from pytest_parity.bridge.cache import frame

    for entry in _entries(directory):
        entry.write_bytes(frame(b"\x08\x07not an onnx model at all \xff\xff"))


def entries_to_directories(directory: Path) -> None:
    for entry in _entries(directory):
        entry.unlink()
        entry.mkdir()


def cache_dir_is_a_file(directory: Path) -> None:
    (directory / CACHE_DIR.parent).mkdir(parents=True, exist_ok=True)
    (directory / CACHE_DIR).write_text("not a directory\n")


def cache_case(id: str, expect: tuple[str, ...], *, setup: Callable[[Path], None], prime: bool = True,
               ret: int = 0, xfail: str | None = None, args: tuple[str, ...] = ()) -> None:
    case(id=id, category=CACHE, test=PASSING, args=("--parity-devices=cpu", *args), expect=expect, ret=ret,
         prime=prime, setup=setup, xfail=xfail)


cache_case("cache-truncated-entries", ("1 passed", "rebuilt"), setup=truncate_entries)
cache_case("cache-garbled-entries", ("1 passed", "rebuilt"), setup=garble_entries)
cache_case("cache-valid-frame-garbage-onnx", ("1 passed", "rebuilt"), setup=reframe_garbage)
cache_case("cache-entry-is-a-directory", ("1 passed",), setup=entries_to_directories)
cache_case("cache-dir-is-a-file-W-error", ("1 passed", "ParityCacheWarning", "--parity-cache=off"),
           setup=cache_dir_is_a_file, prime=False, args=("-W", "error"))

# --------------------------------------------------------------------------------------------------------------------
# Interruption
# --------------------------------------------------------------------------------------------------------------------
INT = "interrupt"
INTERRUPTED = t("""
    @pytest.mark.parity
    def test_a_first(parity):
        guarded_check(parity, keras_mlp(), inputs=parity.randn(4, 6))

    @pytest.mark.parity
    def test_b_interrupted(parity):
        raise KeyboardInterrupt

    @pytest.mark.parity
    def test_c_never_runs(parity):
        guarded_check(parity, keras_mlp(), inputs=parity.randn(4, 6))
    """)
INTERRUPTED_IN_MODEL = t("""
    import torch

    class Interrupts(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(6, 3)

        def forward(self, x):
            raise KeyboardInterrupt

    @pytest.mark.parity
    def test_a_first(parity):
        guarded_check(parity, keras_mlp(), inputs=parity.randn(4, 6))

    @pytest.mark.parity
    def test_b_interrupted(parity):
        parity.check(Interrupts(), inputs=parity.randn(4, 6))
    """)
case(id="interrupt-report-stays-valid", category=INT, test=INTERRUPTED, ret=2, user_raises=True,
     args=("--parity-devices=cpu", "--parity-report=report.json", "--parity-html=report.html"),
     expect=("KeyboardInterrupt", "parity report written to report.json"),
     after=report_is_valid("report.json", "test_case.py::test_a_first[cpu]"))
case(id="interrupt-baseline-update-keeps-entries", category=INT, test=INTERRUPTED, ret=2, user_raises=True,
     args=("--parity-devices=cpu", "--parity-baseline=base.json", "--parity-baseline-update"),
     files={"base.json": baseline_text(OTHER_ENTRY)}, expect=("KeyboardInterrupt",),
     after=report_is_valid("base.json", "test_other.py::test_kept[cpu]", "test_case.py::test_a_first[cpu]"))
case(id="interrupt-inside-the-model", category=INT, test=INTERRUPTED_IN_MODEL, ret=2, user_raises=True,
     args=("--parity-devices=cpu", "--parity-report=report.json"),
     expect=("KeyboardInterrupt", "parity report written to report.json"),
     after=report_is_valid("report.json", "test_case.py::test_a_first[cpu]"))


# --------------------------------------------------------------------------------------------------------------------
# The one test
# --------------------------------------------------------------------------------------------------------------------
def _params() -> list:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    params = []
    for c in CASES:
        marks = []
        if c.xfail:
            assert c.xfail.split(":")[0] in DEFECT_KINDS, c.xfail
            marks.append(pytest.mark.xfail(strict=True, reason=c.xfail))
        params.append(pytest.param(c, id=c.id, marks=marks))
    return params


def _write(directory: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


@pytest.mark.parametrize("bad", _params())
def test_bad_input(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, bad: Case) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    _write(pytester.path, {"bm.py": MODELS, "test_case.py": PRELUDE + bad.test, **bad.files})
    if bad.prime:
        primed = pytester.runpytest_subprocess(*bad.args, timeout=600)
        assert primed.ret == 0, primed.stdout.str()[-3000:]
    if bad.setup is not None:
        bad.setup(pytester.path)
    before = {name: (pytester.path / name).read_bytes() for name in bad.untouched}
    result = pytester.runpytest_subprocess(*bad.args, timeout=600)
    output = "\n".join(result.outlines + result.errlines)
    dump = os.environ.get("BATTERY_DUMP")
    if dump:
        Path(dump).mkdir(parents=True, exist_ok=True)
        Path(dump, f"{bad.id}.txt").write_text(f"ret={result.ret}\n{output}", encoding="utf-8")
    tail = output[-6000:]
    # 1. the session ends normally, with the exit code the case expects
    assert "INTERNALERROR" not in output, tail
    assert result.ret in NORMAL_EXIT_CODES, f"exit code {result.ret}\n{tail}"
    assert result.ret == bad.ret, f"exit code {result.ret}, expected {bad.ret}\n{tail}"
    # 2. the message names the cause and the fix
    missing = [text for text in bad.expect if text not in output]
    assert not missing, f"missing {missing}\n{tail}"
    # 3. no frame of the plugin or of a framework
    assert not PLUGIN_FRAME.search(output), f"plugin frame {PLUGIN_FRAME.search(output)[0]!r} shown\n{tail}"
    assert not FRAMEWORK_FRAME.search(output), f"framework frame {FRAMEWORK_FRAME.search(output)[0]!r} shown\n{tail}"
    if not bad.user_raises:
        assert "Traceback (most recent call last)" not in output, tail
    # 4. nothing handed in is modified or lost (models and inputs: asserted by the test file through bm.guarded_check)
    for name, original in before.items():
        path = pytester.path / name
        if path.is_file() and path.read_bytes() == original:
            continue
        assert bad.backup_ok, f"{name} was modified or removed\n{tail}"
        backups = [p for p in pytester.path.rglob(f"{Path(name).name}*")
                   if p != path and p.is_file() and p.read_bytes() == original]
        assert any(str(p.name) in output for p in backups), f"{name} changed and no backup named\n{tail}"
    if bad.after is not None:
        bad.after(pytester.path, output)
