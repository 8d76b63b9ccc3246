"""TensorFlow's start-up lines on stderr, kept out of the user's failure output.

Importing TensorFlow and its first look at the devices write C++ log lines straight to file descriptor 2, past
Python's sys.stderr: absl's "All log messages before absl::InitializeLog() is called are written to STDERR", oneDNN
and CPU-feature notices, and on a machine without a GPU "failed call to cuInit ... UNKNOWN ERROR (303)" at ERROR
level, which TF_CPP_MIN_LOG_LEVEL=2 does not hide. pytest captures file descriptor 2 per test, so these lines land in
the "Captured stderr" of whichever failing test first touched TensorFlow, where they read like a cause.

``quiet_startup`` runs TensorFlow's start-up (the import and the first device enumeration) with file descriptor 2
sent to a file, then writes back every line that is not one of the known start-up notices: a real warning or error
still reaches the user. The parity fixture runs it before the test body when the test's module imported TensorFlow,
so the model the test builds does not trigger the first device enumeration itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# Lines TensorFlow writes on every start-up whatever the model (seen with TensorFlow 2.20/2.21 on CPU-only machines).
STARTUP_NOTICES = tuple(re.compile(pattern) for pattern in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"^[IWE]\d{4} [\d:. ]+\d+ (port|cpu_feature_guard|cudart_stub|cuda_platform|cuda_executor|gpu_device)\.cc:\d+\] ",
    r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$",
))


def is_startup_notice(line: str) -> bool:
    line = line.rstrip("\n")
    if not any(pattern.search(line) for pattern in STARTUP_NOTICES):
        return False
    # Of the device-start lines only the known notices: no CUDA on this machine, not a real device error.
    if re.search(r"(cuda_platform|cuda_executor|gpu_device)\.cc", line):
        return bool(re.search(r"failed call to cuInit|Could not find cuda drivers|no CUDA-capable device|"
                              r"Cannot dlopen some GPU libraries", line))
    return True


@contextlib.contextmanager
def quiet_startup() -> Iterator[None]:
    """File descriptor 2 goes to a file for the block; afterwards every line but the start-up notices is written
    back to it, in order. Where file descriptor 2 cannot be redirected, the block runs as it is."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace")
            kept = "".join(line for line in text.splitlines(keepends=True) if not is_startup_notice(line))
            if kept:
                os.write(2, kept.encode())
