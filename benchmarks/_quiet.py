"""Shared by the benchmark scripts: wait for the machine to be quiet before timing."""

from __future__ import annotations

import os
import time


def wait_for_quiet(max_load: float, max_wait: float) -> float:
    """Sleep until the 1-minute load average is below ``max_load`` (or ``max_wait`` s passed)."""
    deadline = time.monotonic() + max_wait
    load = os.getloadavg()[0]
    while load > max_load and time.monotonic() < deadline:
        time.sleep(15)
        load = os.getloadavg()[0]
    return load
