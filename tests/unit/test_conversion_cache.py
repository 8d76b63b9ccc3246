"""The conversion cache on its own: entry framing, corrupt and partial entries, concurrent writers, a directory that
cannot be written, and what goes into the key."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from pytest_parity.bridge import cache as conversion_cache
from pytest_parity.bridge.cache import HIT, MISS, REBUILT, ConversionCache, frame, unframe
from pytest_parity.frameworks import ModelInputs

KEY = "ab" * 32


def test_an_entry_round_trips_and_any_damage_is_detected():
    payload = bytes(range(256)) * 10
    data = frame(payload)
    assert unframe(data) == payload
    assert unframe(data[:-1]) is None  # truncated: a partial write
    assert unframe(data + b"x") is None
    flipped = bytearray(data)
    flipped[-5] ^= 1
    assert unframe(bytes(flipped)) is None  # same length, other content
    assert unframe(b"another format\n" + data) is None
    assert unframe(b"") is None


def test_store_then_load_is_a_hit_and_leaves_no_temporary_files(tmp_path):
    cache = ConversionCache(tmp_path / "c")
    assert cache.load(KEY) == (None, MISS)
    cache.store(KEY, b"model bytes")
    assert cache.load(KEY) == (b"model bytes", HIT)
    assert [p.name for p in (tmp_path / "c").iterdir()] == [f"{KEY}.onnx-entry"]


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_entry_is_removed_and_reported_as_rebuilt(tmp_path, damage):
    cache = ConversionCache(tmp_path)
    cache.store(KEY, b"model bytes" * 100)
    entry = tmp_path / f"{KEY}.onnx-entry"
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * len(data))
    assert cache.load(KEY) == (None, REBUILT)
    assert not entry.exists()
    cache.store(KEY, b"rebuilt")
    assert cache.load(KEY) == (b"rebuilt", HIT)


def test_a_directory_that_cannot_be_written_disables_the_cache_and_says_so_once(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache dir should be")
    reasons = []
    cache = ConversionCache(blocker / "cache", on_warning=reasons.append)
    cache.store(KEY, b"one")
    cache.store("cd" * 32, b"two")
    assert len(reasons) == 1 and "cannot be written" in reasons[0] and "--parity-cache=off" in reasons[0]
    assert cache.load(KEY) == (None, MISS)


def _write_and_read(directory: str, payload_seed: int, rounds: int, queue) -> None:
    cache = ConversionCache(Path(directory))
    payload = bytes([payload_seed]) * 200_000
    seen = set()
    for _ in range(rounds):
        cache.store(KEY, payload)
        found, outcome = cache.load(KEY)
        seen.add((outcome, None if found is None else found[:1]))
    queue.put(seen)


def test_concurrent_writers_of_one_key_never_expose_a_partial_entry(tmp_path):
    # Four processes (as pytest-xdist workers would) write and read the same key 25 times each.
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_write_and_read, args=(str(tmp_path), seed, 25, queue)) for seed in range(4)]
    for worker in workers:
        worker.start()
    seen = set().union(*(queue.get(timeout=60) for _ in workers))
    for worker in workers:
        worker.join(timeout=60)
    # Every read found a complete entry from one writer or another; none was partial, none needed a rebuild.
    assert {outcome for outcome, _ in seen} == {HIT}
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_keras_layer_names_are_replaced_by_their_order_of_appearance():
    first = {"name": "sequential", "layers": [{"config": {"name": "dense", "units": 4}},
                                             {"config": {"name": "dense_1", "inbound": ["dense"]}}]}
    built_later = {"name": "sequential_3", "layers": [{"config": {"name": "dense_7", "units": 4}},
                                                     {"config": {"name": "dense_8", "inbound": ["dense_7"]}}]}
    assert conversion_cache.canonical_names(first) == conversion_cache.canonical_names(built_later)
    other_units = {**first, "layers": [{"config": {"name": "dense", "units": 5}}, first["layers"][1]]}
    assert conversion_cache.canonical_names(other_units) != conversion_cache.canonical_names(first)


class UserBlock:
    def forward(self, x):
        return x


def test_user_class_source_is_part_of_the_structure_and_unreadable_source_means_uncacheable():
    sources = conversion_cache.user_class_sources([UserBlock, dict])
    assert list(sources) == [f"{__name__}.UserBlock"] and "def forward" in sources[f"{__name__}.UserBlock"]
    made_at_run_time = type("Generated", (), {"__module__": "no_such_module_anywhere"})
    assert conversion_cache.user_class_sources([made_at_run_time]) is None


def test_the_key_follows_structure_weights_inputs_and_versions(monkeypatch):
    torch = pytest.importorskip("torch")
    from torch import nn

    def model(hidden=8, activation=nn.ReLU):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, hidden), activation(), nn.Linear(hidden, 2))

    def key(module, shape=(3, 4)):
        weights = {name: t.detach().numpy().copy() for name, t in module.state_dict().items()}
        inputs = ModelInputs("single", ("input",), (np.zeros(shape, np.float32),))
        return conversion_cache.conversion_key("torch", module, weights, inputs, 17)

    base = key(model())
    assert base == key(model()) and len(base) == 64
    assert key(model(hidden=9)) != base
    assert key(model(activation=nn.Tanh)) != base
    assert key(model(), shape=(5, 4)) != base
    changed = model()
    with torch.no_grad():
        changed[0].weight[0, 0] += 1e-6
    assert key(changed) != base
    monkeypatch.setattr(conversion_cache, "_version", lambda name: "0.0-other")
    assert key(model()) != base
