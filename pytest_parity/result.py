"""What a parity check returns: plain data, no framework objects, so it can go into reports and across processes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# The elementwise-error histograms span the decades 1e-12 .. 1 (see compare._error_histogram for the bins).
ERROR_HISTOGRAM_DECADES = (-12, 0)
# A failing comparison keeps the indices of up to this many mismatched elements (8 bytes each): enough for any
# near-tie, whose differences are sparse; a tensor with more differs too widely to be one.
MAX_RECORDED_MISMATCHES = 100_000


def error_histogram_labels() -> list[str]:
    """Names of the histogram bins, in the order of Comparison.histogram."""
    low, high = ERROR_HISTOGRAM_DECADES
    decades = [f"[1e{power}, {_decade(power + 1)})" for power in range(low, high)]
    return ["0", f"< 1e{low}", *decades, f">= {_decade(high)}", "NaN/Inf"]


def _decade(power: int) -> str:
    return "1" if power == 0 else f"1e{power}"


@dataclass(frozen=True)
class Comparison:
    """One tensor of the target compared against the same tensor of the source (the reference)."""

    name: str
    passed: bool
    max_abs: float
    max_rel: float
    mismatched: int
    total: int
    atol: float
    rtol: float
    # Index of the greatest absolute / relative difference; None when there is no finite difference to point at.
    max_abs_index: tuple[int, ...] | None = None
    max_rel_index: tuple[int, ...] | None = None
    # Set when the tensors could not be compared element by element (shape, dtype, structure, missing gradient)
    # or when NaN/Inf disagree; it is the first line of the failure message for this tensor.
    problem: str | None = None
    # Elementwise |target - source| counted per log-spaced bin (labels: error_histogram_labels()); None when the
    # tensors could not be compared element by element.
    histogram: tuple[int, ...] | None = None
    # Largest finite |source| element: the scale the differences are read against in the failure's hints.
    source_max_abs: float = 0.0
    # Flat indices of the mismatched elements, kept for a failing comparison of up to MAX_RECORDED_MISMATCHES of them
    # so the near-tie re-check can tell whether the same elements differ again on moved inputs. Not reported.
    mismatched_at: Any = field(default=None, compare=False, repr=False)
    # Elements that differed on the given inputs and agreed, each of them, on inputs moved to break near-ties (a ReLU
    # input within rounding of 0): verdict.near_ties confirmed them, and then the comparison passes.
    near_ties: int = 0
    # Largest |target - source| over the elements that agreed: with near-ties confirmed, the figure of what the given
    # inputs decided (a baseline's drift is read from it, not from the near-ties' chance size).
    agreeing_max_abs: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_abs": _json_float(self.max_abs),
            "max_rel": _json_float(self.max_rel),
            "mismatched": self.mismatched,
            "total": self.total,
            "atol": self.atol,
            "rtol": self.rtol,
            "passed": self.passed,
            **({"problem": self.problem} if self.problem else {}),
            **({"histogram": list(self.histogram)} if self.histogram is not None else {}),
            **({"near_ties": self.near_ties, "max_abs_without_near_ties": _json_float(self.agreeing_max_abs)}
               if self.near_ties else {}),
        }


@dataclass(frozen=True)
class TreeComparison:
    """Every leaf of a (possibly nested) output compared; the figures are the worst over leaves."""

    leaves: dict[str, Comparison]
    atol: float
    rtol: float

    @property
    def passed(self) -> bool:
        return all(leaf.passed for leaf in self.leaves.values())

    @property
    def max_abs(self) -> float:
        return _worst(leaf.max_abs for leaf in self.leaves.values())

    @property
    def max_rel(self) -> float:
        return _worst(leaf.max_rel for leaf in self.leaves.values())

    @property
    def mismatched(self) -> int:
        return sum(leaf.mismatched for leaf in self.leaves.values())

    @property
    def total(self) -> int:
        return sum(leaf.total for leaf in self.leaves.values())

    @property
    def failures(self) -> list[Comparison]:
        return [leaf for leaf in self.leaves.values() if not leaf.passed]

    @property
    def histogram(self) -> tuple[int, ...] | None:
        return sum_histograms(leaf.histogram for leaf in self.leaves.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_abs": _json_float(self.max_abs),
            "max_rel": _json_float(self.max_rel),
            "mismatched": self.mismatched,
            "total": self.total,
            "atol": self.atol,
            "rtol": self.rtol,
            "passed": self.passed,
            "histogram": None if self.histogram is None else list(self.histogram),
            "leaves": {path: leaf.to_dict() for path, leaf in self.leaves.items()},
        }


@dataclass(frozen=True)
class SpeedResult:
    """Target time / source time, the median of interleaved rounds, and the evidence for its verdict (``timing``)."""

    ratio: float
    source_s: float
    target_s: float
    rounds: int
    ratio_min: float
    ratio_max: float
    allowed: float | None
    passed: bool
    # False when --parity-speed=report (or gating was switched off under pytest-xdist): measured, never failing.
    gated: bool = True
    # What was timed: "forward" or "forward_backward"; calls per timed sample (see timing.plan_rounds).
    timed: str = "forward"
    iterations: int = 1
    # Which clock decided ("wall" on the CPU; "CUDA events" or "synchronised wall" on cuda), and the
    # distribution-free confidence interval of the median ratio at ``confidence`` that the verdict was read from.
    clock: str = "wall"
    ratio_low: float = -math.inf
    ratio_high: float = math.inf
    confidence: float = 0.0
    # "pass", "fail" or "inconclusive" (the interval still contained the allowed ratio when the looks ran out);
    # None when nothing was allowed (speed measured for the record only).
    verdict: str | None = None
    looks: int = 1
    # The median ratio by the other clock sampled beside the deciding one (process CPU time beside wall time on the
    # CPU, synchronised wall time beside CUDA events), as a cross-check; None when only one clock was sampled.
    cross_check_clock: str | None = None
    cross_check_ratio: float | None = None
    # Seconds the measurement took, warm-up included.
    measure_s: float = 0.0

    @property
    def inconclusive(self) -> bool:
        return self.verdict == "inconclusive" and self.gated

    def to_dict(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "source_s": self.source_s,
            "target_s": self.target_s,
            "rounds": self.rounds,
            "ratio_min": self.ratio_min,
            "ratio_max": self.ratio_max,
            "allowed": self.allowed,
            "passed": self.passed,
            "gated": self.gated,
            "timed": self.timed,
            "iterations": self.iterations,
            "clock": self.clock,
            "ratio_low": _json_float(self.ratio_low),
            "ratio_high": _json_float(self.ratio_high),
            "confidence": self.confidence,
            "verdict": self.verdict,
            "looks": self.looks,
            "cross_check_clock": self.cross_check_clock,
            "cross_check_ratio": self.cross_check_ratio,
            "measure_s": self.measure_s,
        }


@dataclass(frozen=True)
class WeightAccount:
    """Which of the source's trainable weights had their gradient compared, and why the others did not.

    A PASS claims every trainable weight's gradient was compared: ``uncompared`` (neither compared nor allowed) fails
    the check; ``allowed`` (not compared, accepted by the user with unmatched_weights=) makes the pass partial;
    ``unused`` weights do not influence the outputs (their source gradient is absent or exactly zero on these inputs),
    so there was nothing to compare."""

    total: int
    compared: int
    uncompared: dict[str, str] = field(default_factory=dict)
    allowed: dict[str, str] = field(default_factory=dict)
    unused: dict[str, str] = field(default_factory=dict)
    # False when the check ran with grad=False: no weight gradient was compared, as the user asked.
    gradients_checked: bool = True
    # Weights whose source gradient lies within twice its tolerance (the model's float32 rounding floor decides it, see
    # tolerances) and that no float64 run could judge at their own scale: a halved target gradient would pass them
    # too, so they count as not compared (in ``uncompared``, or ``allowed`` when the user accepted them by name).
    within_rounding_of_zero: tuple[str, ...] = ()
    # Compared weights whose gradient a float64 run showed to be zero in exact arithmetic (a bias ahead of a softmax
    # or a normalisation): the comparison checked that the target's is zero within float32 rounding too.
    zero_in_exact_arithmetic: tuple[str, ...] = ()

    @property
    def partial(self) -> bool:
        return bool(self.allowed) or not self.gradients_checked

    def describe(self) -> str:
        """'weights compared 5 of 7 (1 unused, 1 allowed)' or 'weights: gradients not compared (grad=False)'."""
        if not self.gradients_checked:
            return f"weights: gradients of {self.total} not compared (grad=False)"
        extra = [f"{len(group)} {what}" for what, group in (("not compared", self.uncompared),
                                                            ("allowed uncompared", self.allowed),
                                                            ("unused", self.unused),
                                                            ("zero in exact arithmetic",
                                                             self.zero_in_exact_arithmetic))
                 if group]
        return f"weights compared {self.compared} of {self.total}" + (f" ({', '.join(extra)})" if extra else "")

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "compared": self.compared, "uncompared": dict(self.uncompared),
                "allowed": dict(self.allowed), "unused": dict(self.unused),
                "gradients_checked": self.gradients_checked, "partial": self.partial,
                "within_rounding_of_zero": list(self.within_rounding_of_zero),
                "zero_in_exact_arithmetic": list(self.zero_in_exact_arithmetic)}


@dataclass(frozen=True)
class TrainingStep:
    """One training step of a training check, both models from the same start: the loss each computed, and every
    carried weight and statistic after the update compared (values, and the update itself at its own scale)."""

    step: int  # 1-based
    source_loss: float
    target_loss: float
    loss: Comparison
    # Tensor name (the source's, with the target's in ``ParityResult.weight_names``) -> comparison after the update.
    weights: dict[str, Comparison]
    # The same tensors' updates (value after the step minus before), each compared at the scale of the source's update.
    updates: dict[str, Comparison]

    @property
    def passed(self) -> bool:
        return (self.loss.passed and all(c.passed for c in self.weights.values())
                and all(c.passed for c in self.updates.values()))

    @property
    def worst_weight(self) -> Comparison | None:
        return max(self.weights.values(), key=lambda c: (not c.passed, c.max_abs), default=None)

    @property
    def worst_update(self) -> Comparison | None:
        return max(self.updates.values(), key=lambda c: (not c.passed, c.max_abs / max(c.atol, 1e-300)),
                   default=None)

    def failures(self) -> list[Comparison]:
        return [c for c in (self.loss, *self.weights.values(), *self.updates.values()) if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        worst_weight, worst_update = self.worst_weight, self.worst_update
        return {"step": self.step, "passed": self.passed,
                "source_loss": _json_float(self.source_loss), "target_loss": _json_float(self.target_loss),
                "loss": self.loss.to_dict(),
                "worst_weight": None if worst_weight is None else {"name": worst_weight.name,
                                                                    **worst_weight.to_dict()},
                "worst_update": None if worst_update is None else {"name": worst_update.name,
                                                                    **worst_update.to_dict()},
                "failing": [c.name for c in self.failures()]}


@dataclass(frozen=True)
class TrainingFigures:
    """What a training check compared: its configuration diff, and every step."""

    steps: list[TrainingStep]
    # Configuration differences found before any step (optimizer hyperparameters, BatchNormalization conventions,
    # Dropout rates, loss settings, trainability), each a sentence naming both values and the equivalent to use.
    # Any entry fails the check, even where the steps taken cannot show it yet.
    configuration: list[str] = field(default_factory=list)
    # The first step and tensor that diverged, with the likely cause where it is a known convention; None on a pass.
    first_divergence: str | None = None
    # How many tensors each step compared (weights and statistics carried across).
    tensors: int = 0

    @property
    def passed(self) -> bool:
        return not self.configuration and all(step.passed for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "configuration": list(self.configuration),
                "first_divergence": self.first_divergence, "tensors": self.tensors,
                "steps": [step.to_dict() for step in self.steps]}


@dataclass(frozen=True)
class ActivationProbe:
    """One activation of the source and its counterpart in the target, compared as functions on a wide grid (port
    mode's activation range check): ``comparison`` of the target's values against the source's, ``cause`` set when
    they differ (the layers, where they differ, whether the check's inputs reached it, the likely cause)."""

    source: str
    target: str
    source_range: tuple[float, float]  # pre-activation values the source's activation received on the inputs
    target_range: tuple[float, float]
    comparison: Comparison
    cause: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target,
                "source_range": [_json_float(v) for v in self.source_range],
                "target_range": [_json_float(v) for v in self.target_range],
                "comparison": self.comparison.to_dict(), "cause": self.cause}


@dataclass(frozen=True)
class ActivationFigures:
    """Port mode's activation range check: every paired activation compared as a function, and the activations that
    could not be paired whose range did not tell them from a common variant (a visible partial)."""

    probes: list[ActivationProbe]
    not_exercised: list[str] = field(default_factory=list)
    probe_s: float = 0.0
    # Sides whose activations could not be recorded at all, and why.
    unseen: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(probe.comparison.passed for probe in self.probes)

    @property
    def partial(self) -> bool:
        return bool(self.not_exercised)

    def failures(self) -> list[ActivationProbe]:
        return [probe for probe in self.probes if not probe.comparison.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "partial": self.partial, "probe_s": self.probe_s,
                "probes": [probe.to_dict() for probe in self.probes], "not_exercised": list(self.not_exercised),
                "unseen": list(self.unseen)}


@dataclass
class ParityResult:
    """The outcome of one ``parity.check``; see the public contract in the README."""

    route: str
    device: str
    outputs: TreeComparison
    grads: dict[str, Comparison] | None = None
    # Source weight -> comparison with the target tensor it was matched to (catches a conversion that altered it).
    weights: dict[str, Comparison] = field(default_factory=dict)
    # Source weight name -> target tensor name, for every weight the check could follow into the target.
    weight_names: dict[str, str] = field(default_factory=dict)
    # Source weights with no counterpart in the target (for example folded by the converter): name -> why.
    unmatched_weights: dict[str, str] = field(default_factory=dict)
    # Which trainable source weights had their gradient compared (None: a check that does not carry weights across).
    weight_account: WeightAccount | None = None
    speed: SpeedResult | None = None
    # Seconds spent carrying the model across (export, import, weight matching), and running the comparison.
    conversion_s: float = 0.0
    run_s: float = 0.0
    # Seconds this check spent on first imports of the converters before its conversion was timed (not part of
    # conversion_s; the session reports their sum once).
    import_s: float = 0.0
    # Convert mode with the conversion cache on: "hit" (export skipped), "miss", "rebuilt" (a corrupt entry was
    # replaced), "uncacheable" (the model's class source could not be read); None otherwise.
    conversion_cache: str | None = None
    # Filled only on failure: which step (convert mode) or which layer (port mode) diverged.
    diagnosis: str | None = None
    # Gradients whose difference the diagnosis explains (verified), so no generic hint guesses at them.
    explained_gradients: tuple[str, ...] = ()
    # Filled only on failure of a PyTorch source whose float64 run shows the differences are float32 rounding of the
    # model itself (float64_referee): that finding, with its figures.
    float32_rounding: str | None = None
    # Port mode on failure: one row per layer pair compared up to the first that diverges ({"source", "target",
    # "inputs_max_abs", "outputs_max_abs", "agrees"}), for the per-layer table of the HTML report.
    layers: list[dict[str, Any]] = field(default_factory=list)
    # What the check did that a user should know about, e.g. a Dense kernel permuted for a different flatten order.
    notes: list[str] = field(default_factory=list)
    # Against --parity-baseline: what got worse than the baseline allows (empty: no drift, or no baseline).
    drift: list[str] = field(default_factory=list)
    # A training check (parity.check_training): per-step figures; None for a forward/backward check.
    training: TrainingFigures | None = None
    # Port mode: each paired activation compared as a function over a wide range (None: not checked).
    activations: ActivationFigures | None = None

    @property
    def passed(self) -> bool:
        return (
            self.outputs.passed
            and all(c.passed for c in (self.grads or {}).values())
            and all(c.passed for c in self.weights.values())
            and (self.weight_account is None or not self.weight_account.uncompared)
            and (self.speed is None or self.speed.passed)
            and (self.training is None or self.training.passed)
            and (self.activations is None or self.activations.passed)
            and not self.drift
        )

    @property
    def worst_grad(self) -> Comparison | None:
        if not self.grads:
            return None
        return max(self.grads.values(), key=lambda c: (not c.passed, c.max_abs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "route": self.route,
            "passed": self.passed,
            "outputs": self.outputs.to_dict(),
            "grads": None if self.grads is None else {name: c.to_dict() for name, c in self.grads.items()},
            "weights": {name: c.to_dict() for name, c in self.weights.items()},
            "weight_names": dict(self.weight_names),
            "unmatched_weights": dict(self.unmatched_weights),
            "weight_account": None if self.weight_account is None else self.weight_account.to_dict(),
            "speed": None if self.speed is None else self.speed.to_dict(),
            "conversion_s": self.conversion_s,
            "conversion_cache": self.conversion_cache,
            "run_s": self.run_s,
            "diagnosis": self.diagnosis,
            **({"float32_rounding": self.float32_rounding} if self.float32_rounding else {}),
            "layers": [dict(row) for row in self.layers],
            "notes": list(self.notes),
            "drift": list(self.drift),
            **({"training": self.training.to_dict()} if self.training is not None else {}),
            **({"activations": self.activations.to_dict()} if self.activations is not None else {}),
        }


def sum_histograms(histograms: Iterable[Sequence[int] | None]) -> tuple[int, ...] | None:
    """Bin-wise sum of the histograms that exist; None when there are none."""
    present = [histogram for histogram in histograms if histogram is not None]
    if not present:
        return None
    return tuple(sum(counts) for counts in zip(*present))


def _worst(figures: Iterable[float]) -> float:
    """The largest figure, NaN counting as the worst (plain max() lets NaN win or lose by position)."""
    return max(figures, key=lambda figure: (math.isnan(figure), figure), default=0.0)


def _json_float(value: float) -> float | str:
    # JSON has no NaN/Infinity; strict parsers reject Python's extensions, so spell them out.
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value
