from __future__ import annotations

# In-process pytester sessions unload the modules they imported; numpy cannot be loaded twice in one process, so keep
# it loaded here. Sessions that run a framework use runpytest_subprocess for the same reason.
import numpy  # noqa: F401

pytest_plugins = ["pytester"]
