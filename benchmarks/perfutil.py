"""Measurement helpers shared by the benchmark scripts: peak memory, machine load, repeated timing.

Linux only (``/proc``). Peak memory is the process high-water mark ``VmHWM``, reset by writing ``5``
to ``/proc/self/clear_refs``; load is the CPU time of other processes, read from ``/proc/stat``
minus our own.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")
NO_WAIT = False  # set by smoke runs: never wait for a quiet machine, keep contended repetitions


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_mib() -> float:
    """Current resident memory of this process, MiB."""
    return _status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    """Peak resident memory since the last :func:`reset_peak_rss` (or process start), MiB."""
    return _status_kib("VmHWM") / 1024


def reset_peak_rss() -> None:
    """Start a new peak-memory window (silently a no-op where the kernel refuses)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _busy_seconds() -> float:
    """CPU seconds spent by the whole machine (all cores, not idle / iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICK


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadMeter:
    """Share of the machine's CPUs used by *other* processes over an interval."""

    def __init__(self) -> None:
        self.cpus = os.cpu_count() or 1
        self.start()

    def start(self) -> None:
        self._t, self._busy, self._own = time.perf_counter(), _busy_seconds(), _own_seconds()

    def foreign(self) -> float:
        wall = max(time.perf_counter() - self._t, 1e-6)
        other = (_busy_seconds() - self._busy) - (_own_seconds() - self._own)
        return max(0.0, other) / (wall * self.cpus)


def wait_quiet(max_foreign: float = 0.10, max_wait: float = 600.0, probe: float = 2.0) -> float:
    """Block until other processes use less than ``max_foreign`` of the CPUs (or ``max_wait`` s);
    returns the last measured foreign share."""
    deadline = time.monotonic() + max_wait
    while True:
        meter = LoadMeter()
        time.sleep(probe)
        load = meter.foreign()
        if load < max_foreign or time.monotonic() > deadline:
            return load


def timed(
    fn: Callable[[], Any], *, reps: int = 3, warmup: int = 1, max_foreign: float = 0.05, retries: int = 3
) -> dict[str, Any]:
    """Run ``fn`` ``warmup`` times, then time ``reps`` repetitions; a repetition during which other
    processes used more than ``max_foreign`` of the CPUs is repeated (at most ``retries`` times).

    Returns ``median_s``, ``reps_s``, ``max_foreign`` and ``contended`` (a noisy repetition was kept).
    """
    for _ in range(warmup):
        fn()
    kept: list[float] = []
    loads: list[float] = []
    contended = False
    extra = 0
    while len(kept) < reps:
        meter = LoadMeter()
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        load = meter.foreign()
        if load > max_foreign and extra < retries and not NO_WAIT:
            extra += 1
            wait_quiet()
            continue
        contended |= load > max_foreign
        kept.append(dt)
        loads.append(load)
    return {
        "median_s": statistics.median(kept),
        "reps_s": [round(x, 4) for x in kept],
        "max_foreign": round(max(loads), 3),
        "contended": contended,
    }
