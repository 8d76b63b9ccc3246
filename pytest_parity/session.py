"""Session-wide parity state, kept in ``config.stash`` (not on a private attribute).

Imported by the plugin at start-up, so it imports nothing: every pytest session pays for this module.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any

KNOWN_DEVICES = ("cpu", "cuda")
# --parity-speed: off (speed= is not measured), report (measured, never fails), gate (speed= is asserted; turned into
# report under pytest-xdist, whose workers share cores), force (asserted even under xdist).
SPEED_MODES = ("off", "report", "gate", "force")
# What a gated speed= measurement too noisy to decide does to the test (--parity-speed-inconclusive, or the marker's
# speed_inconclusive=): warn (passes with a ParitySpeedWarning), fail, skip.
INCONCLUSIVE_ACTIONS = ("warn", "fail", "skip")
def parse_devices_option(text: str) -> tuple[str, ...]:
    """``--parity-devices=cpu,cuda`` -> ('cpu', 'cuda'); ValueError on unknown names."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in KNOWN_DEVICES]
    if not names or unknown:
        raise ValueError(f"expected a comma-separated list of {', '.join(KNOWN_DEVICES)}, got {text!r}")
    return names


# Where an NVIDIA driver shows itself without any framework imported: device nodes, the driver's proc entry, WSL's GPU
# paravirtualisation device.
GPU_DEVICE_PATHS = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version", "/dev/dxg")


def gpu_may_be_present(environ: Mapping[str, str] | None = None, exists: Callable[[str], bool] = os.path.exists,
                       which: Callable[[str], str | None] = shutil.which) -> bool:
    """Whether this machine can have a cuda device, decided without importing a framework (a parity session that
    never needs one must not pay for TensorFlow or PyTorch to find out). False when CUDA_VISIBLE_DEVICES hides every
    device; otherwise True when a driver's device node or nvidia-smi exists."""
    environ = os.environ if environ is None else environ
    if environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    return any(exists(path) for path in GPU_DEVICE_PATHS) or which("nvidia-smi") is not None


def speed_mode_under(mode: str, xdist: bool) -> tuple[str, str | None]:
    """The speed mode in force, and why it differs from the one asked for (for the session header)."""
    if mode == "gate" and xdist:
        return "report", ("speed is reported, not gated, under pytest-xdist: parallel workers share the cores, so "
                          "timings are not comparable; --parity-speed=force gates anyway")
    return mode, None


class ParitySession:
    """Options from the command line and ini, and the records of the checks that ran (plain dicts)."""

    def __init__(self, seed: int, devices: tuple[str, ...], report_path: str | None, speed_mode: str = "gate",
                 speed_note: str | None = None, baseline: Any = None, baseline_update: str | None = None,
                 baseline_factor: float = 10.0, baseline_speed_tolerance: float = 0.25,
                 speed_inconclusive: str = "warn") -> None:
        self.seed = seed
        self.devices = devices
        self.report_path = report_path
        # --parity-html: where the HTML report goes (html_report), None for none.
        self.html_path: str | None = None
        self.speed_mode = speed_mode
        self.speed_note = speed_note
        self.speed_inconclusive = speed_inconclusive
        # Seconds the first checks spent importing the frameworks and converters, once per session (not part of any
        # check's conversion_s); summed over xdist workers by the controller.
        self.import_s = 0.0
        # A loaded pytest_parity.reports.baseline.Baseline to compare against, and/or a path to write the baseline to.
        self.baseline = baseline
        self.baseline_update = baseline_update
        self.baseline_factor = baseline_factor
        self.baseline_speed_tolerance = baseline_speed_tolerance
        self.records: list[dict[str, Any]] = []
        # No cuda variants for tests that did not ask for cuda by name, on a machine that cannot have a GPU.
        self.drop_default_cuda = False
        # A pytest_parity.bridge.cache.ConversionCache, or None when it is off (or on and pytest has no cache dir).
        self.conversion_cache: Any = None
