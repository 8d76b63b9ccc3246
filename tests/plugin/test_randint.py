"""parity.randint: seeded integer inputs (token ids, labels) beside parity.randn, seen from inner pytest sessions."""

from __future__ import annotations

import json
import re

INTEGERS = """
import numpy as np
import pytest

@pytest.mark.parity(devices=("cpu",))
def test_values(parity):
    ids = parity.randint(0, 1000, (2, 5))
    print("IDS", ids.dtype, ids.shape, ids.tolist())
    print("SCALAR", parity.randint(-3, 3, 4).tolist())

@pytest.mark.parity(devices=("cpu",))
def test_randn_after_randint(parity):
    parity.randint(0, 10, (7,))
    print("RANDN-MIXED", parity.randn(3).tolist())
"""


def _printed(pytester, *args: str) -> dict[str, str]:
    lines = pytester.runpytest("-s", *args).stdout.lines
    return dict(match.groups() for line in lines if (match := re.search(r"(IDS|SCALAR|RANDN-MIXED) (.*)", line)))


def test_randint_is_seeded_int64_in_range_and_a_stream_of_its_own(pytester):
    pytester.makepyfile(test_ids=INTEGERS)
    first, second = _printed(pytester), _printed(pytester)
    assert first == second  # same test id and seed: same values, session after session
    dtype, _, values = first["IDS"].partition(" (2, 5) ")
    assert dtype == "int64"
    ids = [v for row in json.loads(values) for v in row]
    assert all(0 <= v < 1000 for v in ids) and len(set(ids)) > 1
    assert all(-3 <= v < 3 for v in json.loads(first["SCALAR"]))
    # randint draws from a stream of its own: the same test without its randint call gets the same randn values.
    pytester.makepyfile(test_ids=INTEGERS.replace("parity.randint(0, 10, (7,))", "pass"))
    assert _printed(pytester)["RANDN-MIXED"] == first["RANDN-MIXED"]
    assert _printed(pytester, "--parity-seed=1")["IDS"] != first["IDS"]


def test_randint_rejects_bad_arguments_naming_the_cause_and_the_fix(pytester):
    pytester.makepyfile(
        """
        import pytest
        from pytest_parity import ParityUsageError

        @pytest.mark.parametrize("args, cause", [
            ((5, 5, (2,)), "low == high leaves no value to draw"),
            ((9, 1, (2,)), "low must be less than high (high is excluded); swap them: parity.randint(1, 9, (2,))"),
            ((0.0, 10, (2,)), "low and high must be integers"),
            ((0, 10, (2, -1)), "the shape must be a non-negative integer or a tuple of them"),
            ((0, 10, (2.5,)), "the shape must be a non-negative integer or a tuple of them"),
            ((0, 10, "2"), "the shape must be a non-negative integer or a tuple of them"),
            ((0, 2**64, (2,)), "the values are int64"),
        ])
        @pytest.mark.parity(devices=("cpu",))
        def test_refused(parity, args, cause):
            with pytest.raises(ParityUsageError) as refused:
                parity.randint(*args)
            assert cause in str(refused.value), str(refused.value)
            assert str(refused.value).startswith(f"parity.randint({args[0]!r}, {args[1]!r}, {args[2]!r}): ")

        @pytest.mark.parity(devices=("cpu",))
        def test_accepted(parity):
            assert parity.randint(0, 2, 3).shape == (3,)
            assert parity.randint(0, 2, [2, 0]).shape == (2, 0)
            assert parity.randint(-2**63, 2**63, ()).dtype.name == "int64"
        """
    )
    pytester.runpytest().assert_outcomes(passed=8)
