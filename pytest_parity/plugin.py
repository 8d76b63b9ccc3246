"""pytest-parity's pytest plugin: options, marker, fixture, parametrization, summary and report. It only wires.

Importing this module must stay cheap: no TensorFlow, PyTorch, ONNX or even numpy. Everything heavy is imported inside
the ``parity`` fixture, so a session without parity tests does not pay for it.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_parity import import_guard
from pytest_parity.session import (
    INCONCLUSIVE_ACTIONS,
    KNOWN_DEVICES,
    SPEED_MODES,
    ParitySession,
    gpu_may_be_present,
    parse_devices_option,
    speed_mode_under,
)

if TYPE_CHECKING:
    from pytest_parity.fixture import ParityFixture

SESSION_KEY = pytest.StashKey[ParitySession]()

MARKER_HELP = (
    "parity(target=None, devices=('cpu', 'cuda'), atol=1e-5, rtol=1e-4, grad=True, grad_atol=1e-4, grad_rtol=1e-3, "
    "update_rtol=1e-3, speed=None, timed='forward', speed_inconclusive='warn', seed=0, "
    "randomize_constant_weights=True, layouts=None, near_tie_retry=True, unmatched_weights='fail', input_names=None, "
    "output_names=None, target_weights='carried'): "
    "check a model against its counterpart in the other framework with the `parity` fixture; the test runs once per "
    "device."
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("parity", "framework parity checks (pytest-parity)")
    group.addoption("--parity-devices", metavar="LIST", type=_devices_argument, default=None,
                    help="comma-separated devices parity tests run on, intersected with each marker's devices. "
                         "Default: cpu,cuda (ini: parity_devices)")
    group.addoption("--parity-seed", metavar="INT", type=int, default=None,
                    help="seed for parity.randn, cotangents and weight randomization, unless a marker sets seed=. "
                         "Default: 0 (ini: parity_seed)")
    group.addoption("--parity-report", metavar="PATH", default=None,
                    help="write every parity check's figures as JSON to PATH. Default: no report (ini: parity_report)")
    group.addoption("--parity-shard", metavar="NAME", default=None,
                    help="this session is one shard of a sharded run: its JSON report records the shard's name, the "
                         "parity tests it collected and those it ran, for `python -m pytest_parity combine`. Default "
                         "name: pytest-split's group (group-2-of-4) under --splits/--group, else host name and process "
                         "id; a session is a shard under --splits/--group, with this option, or when --parity-report "
                         "names a directory (DIR/ -> DIR/parity-NAME.json). See docs/sharding.md")
    group.addoption("--parity-html", metavar="PATH", default=None,
                    help="write a self-contained HTML report to PATH: summary table, per check a histogram of the "
                         "elementwise errors of outputs and gradients, per-layer figures of a failed port. Default: "
                         "none (ini: parity_html)")
    group.addoption("--parity-speed", metavar="MODE", choices=SPEED_MODES, default=None,
                    help="what speed= does: off (not measured), report (measured, never fails), gate (asserted; "
                         "report under pytest-xdist), force (asserted even under xdist). Default: gate "
                         "(ini: parity_speed)")
    group.addoption("--parity-speed-inconclusive", metavar="ACTION", choices=INCONCLUSIVE_ACTIONS, default=None,
                    help="what a gated speed= check does when its measurement cannot separate the ratio from the "
                         "limit within the timing budget: warn (the test passes with a ParitySpeedWarning), fail, "
                         "skip; a marker's speed_inconclusive= wins. Default: warn (ini: parity_speed_inconclusive)")
    group.addoption("--parity-baseline", metavar="PATH", default=None,
                    help="compare each check with a stored parity report; a check whose worst output or gradient "
                         "difference grew more than --parity-baseline-factor, or whose speed ratio worsened more than "
                         "--parity-baseline-speed-tolerance, fails. Default: none")
    group.addoption("--parity-baseline-update", action="store_true", default=False,
                    help="write this session's figures to --parity-baseline (entries of tests not run are kept) "
                         "instead of comparing. Default: compare")
    group.addoption("--parity-baseline-factor", metavar="X", type=float, default=10.0,
                    help="allowed growth of the worst output/gradient difference over the baseline. Default: 10")
    group.addoption("--parity-baseline-speed-tolerance", metavar="F", type=float, default=0.25,
                    help="allowed worsening of the speed ratio over the baseline, as a fraction. Default: 0.25")
    group.addoption("--parity-cache", metavar="on|off|PATH|URL", type=_cache_argument, default=None,
                    help="where exported ONNX graphs are kept, so the export is skipped when the model, its weights "
                         "and the converter versions are unchanged: on (pytest's cache dir, "
                         ".pytest_cache/d/parity-conversions), a directory (./dir or /abs/dir), or any fsspec URL "
                         "shared by CI shards (s3://bucket/prefix needs pytest-parity[s3]); off: export every time. "
                         "Default: on (ini: parity_cache)")
    group.addoption("--parity-cache-readonly", action="store_true", default=None,
                    help="read the conversion cache, never write to it (for jobs whose code is not trusted to fill a "
                         "shared cache). Default: read and write (ini: parity_cache_readonly)")
    group.addoption("--parity-cache-clear", action="store_true", default=False,
                    help="empty the parity conversion cache before the session (after changing code that a model's "
                         "call/forward reaches outside its own classes). Default: keep it")
    parser.addini("parity_cache", "on, off, a directory or an fsspec URL: the parity conversion cache. Default: on",
                  default="on")
    parser.addini("parity_cache_readonly", "read the parity conversion cache, never write it. Default: false",
                  type="bool", default=False)
    # Empty default: "not set" must be told apart from "cpu,cuda" written out (see drop_default_cuda).
    parser.addini("parity_devices", "devices parity tests run on (comma-separated). Default: cpu,cuda (cpu only on a "
                  "machine without a GPU, unless named)", default="")
    parser.addini("parity_seed", "seed for parity checks. Default: 0", default="0")
    parser.addini("parity_report", "path of the JSON parity report. Default: none", default="")
    parser.addini("parity_html", "path of the HTML parity report. Default: none", default="")
    parser.addini("parity_speed", "off, report, gate or force: what speed= does. Default: gate", default="gate")
    parser.addini("parity_speed_inconclusive", "warn, fail or skip: what a speed measurement too noisy to decide "
                  "does. Default: warn", default="warn")


def _devices_argument(text: str) -> tuple[str, ...]:
    try:
        return parse_devices_option(text)
    except ValueError as error:
        # argparse prints an ArgumentTypeError's message; a ValueError would become "invalid value".
        raise argparse.ArgumentTypeError(str(error)) from None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    # Before conftests and test modules import tensorflow: see import_guard for the crash this prevents.
    import_guard.install_guard()


def _session_from_config(config: pytest.Config) -> ParitySession:
    devices_option = config.getoption("parity_devices")
    asked_for_devices = devices_option is not None or bool(str(config.getini("parity_devices")).strip())
    if devices_option is None:
        try:
            devices_option = parse_devices_option(str(config.getini("parity_devices")) or ",".join(KNOWN_DEVICES))
        except ValueError as error:
            raise pytest.UsageError(f"ini option parity_devices: {error}") from None
    seed_option = config.getoption("parity_seed")
    if seed_option is None:
        try:
            seed_option = int(str(config.getini("parity_seed")))
        except ValueError:
            raise pytest.UsageError(f"ini option parity_seed must be an integer, got "
                                    f"{config.getini('parity_seed')!r}") from None
        if seed_option < 0:
            raise pytest.UsageError(f"ini option parity_seed must be >= 0, got {seed_option}")
    if seed_option < 0:
        raise pytest.UsageError(f"--parity-seed must be >= 0, got {seed_option}")
    report_path = config.getoption("parity_report") or str(config.getini("parity_report")) or None
    speed_option = config.getoption("parity_speed") or str(config.getini("parity_speed"))
    if speed_option not in SPEED_MODES:
        raise pytest.UsageError(f"ini option parity_speed must be one of {', '.join(SPEED_MODES)}, got "
                                f"{speed_option!r}")
    # Workers carry workerinput; the controller knows from -n (0 or absent: no parallel workers).
    xdist = _is_xdist_worker(config) or bool(getattr(config.option, "numprocesses", None))
    speed_mode, speed_note = speed_mode_under(speed_option, xdist)
    inconclusive = config.getoption("parity_speed_inconclusive") or str(config.getini("parity_speed_inconclusive"))
    if inconclusive not in INCONCLUSIVE_ACTIONS:
        raise pytest.UsageError(f"ini option parity_speed_inconclusive must be one of {', '.join(INCONCLUSIVE_ACTIONS)}"
                                f", got {inconclusive!r}")
    session = ParitySession(seed=seed_option, devices=devices_option, report_path=report_path, speed_mode=speed_mode,
                            speed_note=speed_note, speed_inconclusive=inconclusive)
    # The default devices include cuda; on a machine that cannot have a GPU, the cuda variants are not generated (one
    # skip per test otherwise) unless the user names cuda: --parity-devices, the ini option, or a marker's devices=.
    session.drop_default_cuda = not asked_for_devices and not gpu_may_be_present()
    session.html_path = config.getoption("parity_html") or str(config.getini("parity_html")) or None
    _configure_shard(config, session)
    _configure_baseline(config, session)
    _refuse_one_file_for_two_outputs(config, session)
    _configure_conversion_cache(config, session)
    return session


def _refuse_one_file_for_two_outputs(config: pytest.Config, session: ParitySession) -> None:
    """The JSON report, the HTML report and the baseline are different files: written to one path, one would replace
    the other (a report written over the baseline it is compared with loses the baseline)."""
    import os

    named = [("--parity-report", session.report_path), ("--parity-html", session.html_path),
             ("--parity-baseline", config.getoption("parity_baseline"))]
    seen: dict[str, str] = {}
    for option, path in named:
        if not path:
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise pytest.UsageError(f"{seen[key]} and {option} name the same file ({path}): one would overwrite the "
                                    f"other. Give each its own path.")
        seen[key] = option
    for option, path, is_ours in (("--parity-report", session.report_path, _is_parity_json),
                                  ("--parity-html", session.html_path, _is_parity_html)):
        if path and os.path.isfile(path) and not is_ours(path):
            raise pytest.UsageError(f"{option}={path}: that file exists and is not a parity report, so writing the "
                                    f"report would replace it (a typo in the path?). Choose another path, or move "
                                    f"the file away.")


def _is_parity_json(path: str) -> bool:
    import json

    try:
        with open(path, encoding="utf-8") as stream:
            document = json.load(stream)
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and "results" in document and "version" in document


def _is_parity_html(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return "<title>Parity report:" in stream.read(4096)
    except OSError:
        return False


# A sharded session's record of itself (reports/combine.py's shard_block reads it): name, pytest-split's group and
# splits, the parity tests collected before a splitting plugin deselected, those selected, and each one's outcome.
SHARD_KEY = pytest.StashKey[dict[str, Any]]()
WORKER_SHARD_KEY = "parity_shard"


def _configure_shard(config: pytest.Config, session: ParitySession) -> None:
    """A shard: under pytest-split's --splits/--group, with --parity-shard, or with --parity-report naming a directory
    (the report then goes to DIR/parity-NAME.json). Anything else is a plain session and writes the plain report."""
    import os

    explicit = config.getoption("parity_shard")
    splits, group = getattr(config.option, "splits", None), getattr(config.option, "group", None)
    path = session.report_path or ""
    # Only a trailing slash asks for a shard report in a folder: a plain path that happens to be a directory is a
    # mistake to name (see the write failure below), not a silent change of where the report goes.
    to_directory = bool(path) and path.endswith(("/", os.sep))
    if not (explicit or (splits and group) or to_directory):
        return
    from pytest_parity.reports.combine import shard_name, shard_report_name

    name = shard_name(explicit, group if splits else None, splits if group else None)
    config.stash[SHARD_KEY] = {"name": name, "group": group if splits else None, "splits": splits if group else None,
                               "collected": [], "selected": [], "ran": {}}
    if to_directory:
        session.report_path = os.path.join(path, shard_report_name(name))
    config.pluginmanager.register(_ShardRecorder(config.stash[SHARD_KEY]), "parity-shard-recorder")


def _parity_ids(items: list[pytest.Item]) -> list[str]:
    return [item.nodeid for item in items if "parity" in getattr(item, "fixturenames", ())]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A shard's collected parity tests: after -k/-m and the user's own hooks, before a splitting plugin's trylast
    hook registered later (pytest-split's, registered at configure) deselects the other shards' tests."""
    shard = config.stash.get(SHARD_KEY, None)
    if shard is not None:
        shard["collected"] = _parity_ids(items)
        shard["snapshot"] = True


class _ShardRecorder:
    """What a shard selected and how each of its parity tests ended (registered only in a sharded session)."""

    def __init__(self, shard: dict[str, Any]) -> None:
        self.shard = shard

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        # Deselected after the collected snapshot (a splitting plugin that ran before this plugin's hook would not be
        # seen there): still collected by this shard.
        if self.shard.get("snapshot"):
            known = set(self.shard["collected"])
            self.shard["collected"].extend(nodeid for nodeid in _parity_ids(items) if nodeid not in known)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.shard["selected"] = list(dict.fromkeys([*self.shard["selected"], *_parity_ids(session.items)]))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        ran = self.shard["ran"]
        if report.when == "call":
            ran[report.nodeid] = report.outcome
        elif report.when == "setup" and not report.passed:
            ran[report.nodeid] = "error" if report.failed else "skipped"
        elif report.when == "teardown" and report.failed and ran.get(report.nodeid) == "passed":
            ran[report.nodeid] = "error"


def _cache_argument(text: str) -> str:
    from pytest_parity.bridge.cache_store import location_problem

    problem = location_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _configure_conversion_cache(config: pytest.Config, session: ParitySession) -> None:
    from pathlib import Path

    from pytest_parity.bridge import cache_store

    from_command_line = config.getoption("parity_cache")
    location = from_command_line or str(config.getini("parity_cache"))
    if cache_store.location_problem(location):
        raise pytest.UsageError(f"ini option parity_cache must be one of on, off, a directory (./name) or an fsspec "
                                f"URL (s3://bucket/prefix), got {location!r}")
    readonly = bool(config.getoption("parity_cache_readonly") or config.getini("parity_cache_readonly"))
    clear = config.getoption("parity_cache_clear")
    if location == "off":
        return
    if readonly and clear:
        raise pytest.UsageError("--parity-cache-clear removes entries and --parity-cache-readonly never changes the "
                                "cache: drop one of the two")
    if cache_store.is_url(location):
        try:
            cache_store.check_protocol(location)
        except ValueError as error:
            raise pytest.UsageError(str(error)) from None

    from pytest_parity.bridge.cache import CACHE_DIR_NAME, ConversionCache

    def warn_once(reason: str) -> None:
        _record_warning(config, reason)

    store: Path | cache_store.EntryStore
    if location == "on":
        # No pytest cache (-p no:cacheprovider), no default conversion cache: it lives in pytest's cache dir.
        provider = getattr(config, "cache", None)
        if provider is None:
            return
        try:
            store = Path(provider.mkdir(CACHE_DIR_NAME))
        except OSError as error:
            warn_once(f"the parity conversion cache cannot be created under pytest's cache dir "
                      f"({type(error).__name__}: {error}); conversions run uncached. Make the cache dir writable, set "
                      f"cache_dir elsewhere, or turn the cache off with --parity-cache=off.")
            return
    else:
        # A relative directory is taken from where pytest was started (command line) or from the ini file's folder.
        if from_command_line:
            base = config.invocation_params.dir
        else:
            base = config.inipath.parent if config.inipath else config.rootpath
        store = cache_store.open_store(location, base)
    cache = ConversionCache(store, on_warning=warn_once, readonly=readonly)
    if clear and not _is_xdist_worker(config):
        cache.clear()
    session.conversion_cache = cache


def _record_warning(config: pytest.Config, message: str) -> None:
    """Into pytest's warnings summary, once, without going through the warnings filters: a suite that turns warnings
    into errors must not fail a test because the cache could not be written (the session carries on uncached)."""
    import warnings

    from pytest_parity.errors import ParityCacheWarning

    # Located at the cache, not at a line of the plugin: the warnings summary prints "<filename>:<lineno>".
    warning = warnings.WarningMessage(ParityCacheWarning(message), ParityCacheWarning, "pytest-parity conversion cache",
                                      0)
    config.hook.pytest_warning_recorded.call_historic(
        kwargs={"warning_message": warning, "when": "runtest", "nodeid": "", "location": None})


def _configure_baseline(config: pytest.Config, session: ParitySession) -> None:
    path = config.getoption("parity_baseline")
    factor, tolerance = config.getoption("parity_baseline_factor"), config.getoption("parity_baseline_speed_tolerance")
    if config.getoption("parity_baseline_update"):
        if not path:
            raise pytest.UsageError("--parity-baseline-update needs --parity-baseline=PATH: the file to write")
        from pytest_parity.reports import baseline

        try:
            baseline.refuse_to_overwrite_unreadable(path)
        except baseline.BaselineError as error:
            raise pytest.UsageError(str(error)) from None
        session.baseline_update = path
        return
    if not path:
        return
    if not factor > 1 or not tolerance >= 0:
        raise pytest.UsageError(f"--parity-baseline-factor must be > 1 (got {factor}) and "
                                f"--parity-baseline-speed-tolerance >= 0 (got {tolerance})")
    from pytest_parity.reports import baseline

    try:
        session.baseline = baseline.load(path)
    except baseline.BaselineError as error:
        raise pytest.UsageError(str(error)) from None
    session.baseline_factor, session.baseline_speed_tolerance = factor, tolerance


def pytest_configure(config: pytest.Config) -> None:
    import_guard.install_guard()
    config.addinivalue_line("markers", MARKER_HELP)
    config.stash[SESSION_KEY] = _session_from_config(config)


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        return []
    lines = [f"parity: {session.speed_note}"] if session.speed_note else []
    if session.drop_default_cuda:
        lines.append("parity: no GPU on this machine (no NVIDIA device node or nvidia-smi): the default devices run "
                     "cpu only; --parity-devices=cpu,cuda or a marker's devices=('cpu', 'cuda') adds the cuda variants")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "parity" not in metafunc.fixturenames:
        return
    from pytest_parity.errors import ParityUsageError
    from pytest_parity.settings import ParitySettings, resolve

    session = metafunc.config.stash[SESSION_KEY]
    marker = metafunc.definition.get_closest_marker("parity")
    try:
        wanted = resolve(ParitySettings(seed=session.seed), (), dict(marker.kwargs) if marker else {}).devices
    except ParityUsageError:
        # Reported by the fixture at setup, where it fails just this test with the message.
        wanted = session.devices[:1]
    selected = [device for device in wanted if device in session.devices]
    named = marker is not None and "devices" in marker.kwargs
    if session.drop_default_cuda and not named:
        selected = [device for device in selected if device != "cuda"]
    if selected:
        params = [pytest.param(device, id=device) for device in selected]
    else:
        reason = f"parity devices {wanted} not selected by --parity-devices/parity_devices={','.join(session.devices)}"
        params = [pytest.param(device, id=device, marks=pytest.mark.skip(reason=reason)) for device in wanted]
    metafunc.parametrize("parity", params, indirect=True)


@pytest.fixture
def parity(request: pytest.FixtureRequest) -> Iterator[ParityFixture]:
    """Framework parity checks: parity.check(model, inputs=parity.randn(8, 32, 32, 3)).

    Converts a TensorFlow/Keras model through ONNX to PyTorch, runs both on the same inputs on `parity.device`
    ("cpu" or "cuda"; the test is parametrized over devices, cuda skipped when no GPU is visible) and fails with a
    ParityError naming each output, gradient or transferred weight that differs, by how much, where, and what was
    allowed. Tolerances and options come from @pytest.mark.parity(...) and can be overridden per call with the same
    names. parity.randn(*shape) gives seeded float32 inputs, identical for the same test and seed on every machine;
    parity.randint(low, high, shape) seeded int64 ones in [low, high) (token ids, labels), from a stream of their own.
    """
    from pytest_parity.fixture import make_fixture
    from pytest_parity.seeding import stop_seeding

    try:
        yield make_fixture(request, request.config.stash[SESSION_KEY])
    finally:
        stop_seeding()


# The summary's line about the baseline this session wrote (set once it is written).
BASELINE_WRITTEN_KEY = pytest.StashKey[str]()
WORKER_RECORDS_KEY = "parity_records"
WORKER_IMPORT_KEY = "parity_import_s"


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist controller: a worker finished; take its records (plain dicts, sent in workeroutput)."""
    session = node.config.stash.get(SESSION_KEY, None)
    batch = getattr(node, "workeroutput", {}).get(WORKER_RECORDS_KEY)
    if session is not None and batch:
        from pytest_parity.reports.records import merge_worker_records

        merge_worker_records(session.records, batch)
    if session is not None:
        session.import_s += getattr(node, "workeroutput", {}).get(WORKER_IMPORT_KEY, 0.0)
    shard = node.config.stash.get(SHARD_KEY, None)
    collected = getattr(node, "workeroutput", {}).get(WORKER_SHARD_KEY)
    if shard is not None and collected:
        # Every worker collects the whole shard: the union, in collection order (outcomes reach the controller as
        # reports, recorded by its own _ShardRecorder).
        for key in ("collected", "selected"):
            shard[key] = list(dict.fromkeys([*shard[key], *collected[key]]))


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is None or not session.records:
        return
    from pytest_parity.reports.records import summary_lines, wrap_line

    lines = summary_lines(session.records)
    if session.baseline is not None:
        from pytest_parity.reports.baseline import compared_line

        lines.append(compared_line(session.baseline, session.records))
    written = config.stash.get(BASELINE_WRITTEN_KEY, None)
    if written:
        lines.append(written)
    if session.import_s >= 0.05:  # below that the frameworks were already loaded by the tests themselves
        lines.append(f"one-time imports and warm-up of the frameworks and converters: {session.import_s:.1f} s (not "
                     f"counted in any check's conversion time)")
    if session.report_path:
        lines.append(f"parity report written to {session.report_path}")
    if session.html_path:
        lines.append(f"parity HTML report written to {session.html_path}")
    terminalreporter.write_sep("=", "parity summary")
    for line in lines:
        for wrapped in wrap_line(line):  # at most 120 columns (a path longer than a line stays whole)
            terminalreporter.write_line(wrapped)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    parity_session = session.config.stash.get(SESSION_KEY, None)
    if parity_session is None:
        return
    if _is_xdist_worker(session.config):
        # Workers hand their records to the controller, which prints the one summary and writes the one report.
        session.config.workeroutput[WORKER_RECORDS_KEY] = parity_session.records  # type: ignore[attr-defined]
        session.config.workeroutput[WORKER_IMPORT_KEY] = parity_session.import_s  # type: ignore[attr-defined]
        shard = session.config.stash.get(SHARD_KEY, None)
        if shard is not None:
            session.config.workeroutput[WORKER_SHARD_KEY] = {  # type: ignore[attr-defined]
                "collected": shard["collected"], "selected": shard["selected"]}
        return
    if parity_session.baseline_update:
        from pytest_parity.reports import baseline

        try:
            written, kept = baseline.update(parity_session.baseline_update, parity_session.records)
            refused = sum(1 for entry in parity_session.records if entry.get("refused"))
            session.config.stash[BASELINE_WRITTEN_KEY] = baseline.written_line(parity_session.baseline_update,
                                                                               written, kept, refused)
        except (OSError, baseline.BaselineError) as error:
            _report_write_failure(session, exitstatus, f"cannot write the parity baseline to "
                                                       f"{parity_session.baseline_update}: {error}")
    if parity_session.report_path or parity_session.html_path:
        _write_reports(session, parity_session, exitstatus)


def _write_reports(session: pytest.Session, parity_session: ParitySession, exitstatus: int) -> None:
    """The JSON and HTML reports asked for; one that cannot be written is reported and left out of the summary."""
    import os
    from functools import partial

    from pytest_parity.reports.html import write_html
    from pytest_parity.reports.records import write_json

    shard = session.config.stash.get(SHARD_KEY, None)
    write_report: Any = write_json
    if shard is not None:
        from pytest_parity.reports.combine import shard_block

        write_report = partial(write_json, shard=shard_block(shard))
    for what, attribute, write in (("parity report", "report_path", write_report),
                                   ("parity HTML report", "html_path", write_html)):
        path = getattr(parity_session, attribute)
        if not path:
            continue
        try:
            write(path, parity_session.records)
        except OSError as error:
            folder = (f" (a folder: end the path with / to write a shard report into it, {path.rstrip('/')}/, "
                      f"or name a file)" if attribute == "report_path" and os.path.isdir(path) else "")
            _report_write_failure(session, exitstatus, f"cannot write the {what} to {path}: {error}{folder}")
            setattr(parity_session, attribute, None)


def _report_write_failure(session: pytest.Session, exitstatus: int, what: str) -> None:
    """A file that cannot be written must not turn a green session into a crash; say why and where."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()  # not at the end of a progress line
        reporter.write_line(f"pytest-parity: {what}", red=True)
    session.exitstatus = pytest.ExitCode.USAGE_ERROR if exitstatus == 0 else exitstatus
