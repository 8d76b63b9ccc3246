"""``python -m pytest_parity combine DIR_OR_FILES... [--json OUT] [--html OUT] [--junit OUT] [--update-baseline PATH]``:
one report from the reports of a sharded run's shards (reports/combine.py, docs/sharding.md).

Exit status: 0 when every parity check passed and every collected parity test ran in some shard; 1 when a check or
test failed, two shards disagree about a test, or a collected test ran in no shard (the reports are written all the
same); 2 when the input cannot be combined or an output cannot be written (the message names the cause and the fix).
"""

from __future__ import annotations

import argparse
import os
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pytest_parity",
                                     description="pytest-parity's command line: combine the reports of a sharded run.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    combine = commands.add_parser(
        "combine", help="union the shards' JSON reports by test id into one report",
        description="Union the JSON reports of a sharded run's shards (written with --parity-report=DIR/, under "
                    "pytest-split's --splits/--group or --parity-shard) by test id; flag tests with conflicting "
                    "outcomes and tests collected but run by no shard; write the single-run JSON/HTML reports, JUnit "
                    "XML, and/or the baseline. Exit 0: all passed; 1: a failure, conflict or test not run; 2: bad "
                    "input.")
    combine.add_argument("inputs", nargs="*", metavar="DIR_OR_FILE",
                         help="shard reports, or folders searched for them (*.json at any depth)")
    combine.add_argument("--json", metavar="OUT", help="write the combined JSON report to OUT")
    combine.add_argument("--html", metavar="OUT", help="write the combined HTML report to OUT")
    combine.add_argument("--junit", metavar="OUT", help="write JUnit XML (one testcase per parity test) to OUT")
    combine.add_argument("--update-baseline", metavar="PATH",
                         help="write the baseline at PATH from the combined result (entries of tests that did not "
                              "run, and of tests with conflicting outcomes, are kept)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    if arguments.command != "combine":
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: name a command: combine (python -m pytest_parity combine --help)",
              file=sys.stderr)
        return 2
    from pytest_parity.reports import combine

    outputs = [arguments.json, arguments.html, arguments.junit, arguments.update_baseline]
    try:
        if not arguments.inputs:
            raise combine.CombineError("no reports named: give the shards' report files or the folder holding them, "
                                       "e.g. python -m pytest_parity combine parity-reports/ --html parity.html")
        named = [path for path in outputs if path]
        if len(set(named)) < len(named):
            raise combine.CombineError("two outputs name the same file: give --json, --html, --junit and "
                                       "--update-baseline each their own path")
        shards = combine.load_reports(combine.report_paths(arguments.inputs, outputs))
        inputs = {os.path.realpath(shard.path) for shard in shards}
        clash = [path for path in named if os.path.realpath(path) in inputs]
        if clash:
            raise combine.CombineError(f"{clash[0]} is both an input and an output: writing it would replace a "
                                       f"shard's report. Write the combined report elsewhere.")
        combined = combine.combine(shards)
        written = []
        for path, write in ((arguments.json, combine.write_json), (arguments.html, combine.write_html),
                            (arguments.junit, combine.write_junit)):
            if path:
                try:
                    write(path, combined)
                except OSError as error:
                    raise combine.CombineError(f"cannot write {path} ({type(error).__name__}: {error}): choose a "
                                               f"writable path") from None
                written.append(path)
        lines = combine.summary_lines(combined)
        if arguments.update_baseline:
            try:
                from_run, kept, conflicting = combine.update_baseline(arguments.update_baseline, combined)
            except OSError as error:
                raise combine.CombineError(f"cannot write the baseline {arguments.update_baseline} "
                                           f"({type(error).__name__}: {error}): choose a writable path") from None
            line = f"parity baseline: wrote {from_run + kept} entries to {arguments.update_baseline}"
            if kept:
                line += f" ({from_run} from this run, {kept} kept from tests that did not run or conflict)"
            if conflicting:
                line += f"; {conflicting} test(s) with conflicting outcomes left as they were"
            lines.append(line)
    except combine.CombineError as error:
        print(f"pytest-parity combine: error: {error}", file=sys.stderr)
        return 2
    for path in written:
        lines.append(f"written: {path}")
    print("\n".join(lines))
    return 1 if combined.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
