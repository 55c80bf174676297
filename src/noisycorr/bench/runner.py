"""Running the cells of a bench: each one an ordinary ``noisycorr train`` in its own process.

A cell with ``results.json`` is finished and is not run again (its saved settings must still match
the spec); a cell with a checkpoint but no results was interrupted and continues with ``--resume``.
Every attempt is recorded in the cell's ``bench.json`` (command, wall time, exit code, peak memory).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from noisycorr.bench.pins import pin_noise
from noisycorr.bench.spec import BenchSpec, Cell, cell_config
from noisycorr.data.paths import atomic_write_bytes
from noisycorr.engine.rundir import RunPaths, check_same_settings
from noisycorr.engine.trainer import stage_plan
from noisycorr.errors import InputError

RESULTS_FILE = "results.json"
ATTEMPTS_FILE = "bench.json"
LOCK_FILE = "bench.lock"


def cell_filter(terms: list[str]) -> Callable[[Cell], bool]:
    """``["method=ncr", "rate=0.4", "rate=0.8"]`` -> a cell predicate: any listed value of every named field."""
    fields = ("dataset", "protocol", "rate", "method", "seed")
    wanted: dict[str, set[str]] = {}
    for term in terms:
        key, _, value = term.partition("=")
        if key not in fields or not value:
            raise InputError("--only", f"FIELD=VALUE with FIELD among {list(fields)}", repr(term))
        wanted.setdefault(key, set()).update(v.strip() for v in value.split(","))

    def text(cell: Cell, key: str) -> str:
        value = getattr(cell, key)
        return f"{value:g}" if isinstance(value, float) else str(value)

    def accept(cell: Cell) -> bool:
        return all(text(cell, k) in {f"{float(v):g}" if k == "rate" else v for v in vals}
                   for k, vals in wanted.items())

    return accept


def cell_status(cell: Cell) -> str:
    """``done`` (results written), ``training`` (locked by a bench process), ``interrupted`` (a
    checkpoint, no results, no lock) or ``new``."""
    if (cell.dir / RESULTS_FILE).is_file():
        return "done"
    if (cell.dir / LOCK_FILE).is_file():
        with open(cell.dir / LOCK_FILE) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return "training"
    if RunPaths(cell.dir).state.is_file():
        return "interrupted"
    return "new"


def check_cell(cell: Cell) -> None:
    """A cell run earlier must have trained exactly the settings the spec asks for now (as the run saves
    them: after its method's stage plan, which may name an earlier stage's weights)."""
    config = cell.dir / "config.yaml"
    if config.is_file():
        _, planned = stage_plan(cell_config(cell))
        check_same_settings(config, planned, purpose=f"as the spec's cell {cell.key}")


def train_command(cell: Cell, *, threads: int, resume: bool) -> list[str]:
    """The command line that trains (or continues) a cell."""
    cmd = [sys.executable, "-m", "noisycorr", "train", "-c", cell.preset]
    for value in [*cell.overrides, f"train.threads={threads}", "run.progress=false"]:
        cmd += ["--set", value]
    return cmd + (["--resume"] if resume else [])


@dataclass
class Attempt:
    cell: str
    command: list[str]
    resumed: bool
    returncode: int
    wall_seconds: float
    peak_rss_mib: float
    cause: str | None = None  # a failed attempt: the last error line of its train.log


BAD_INPUT_EXIT = 2  # `noisycorr train` refused its input: running it again cannot help


def failure_cause(log: Path) -> str | None:
    """The last error line of a failed cell's ``train.log``: its one-line ``noisycorr: error:``, else the
    last line of a traceback (``SomeError: ...``), else its last line; None when the log is empty."""
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    for pick in (lambda ln: ln.startswith("noisycorr: "),
                 lambda ln: ln.split(":", 1)[0].endswith(("Error", "Exception", "Interrupt"))):
        found = [ln for ln in lines if pick(ln)]
        if found:
            return found[-1]
    return lines[-1] if lines else None


def run_process(cmd: list[str], log: Path, env: dict[str, str]) -> tuple[int, float]:
    """Run ``cmd`` with its output appended to ``log``; returns (exit code, peak resident MiB of the child)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024.0


def _record(cell: Cell, attempt: Attempt) -> None:
    path = cell.dir / ATTEMPTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    attempts = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    attempts.append(attempt.__dict__)
    atomic_write_bytes(path, json.dumps(attempts, indent=2).encode("utf-8"))


def run_bench(
    spec: BenchSpec,
    *,
    jobs: int = 1,
    threads: int | None = None,
    echo: Callable[[str], None] = print,
    runner: Callable[[list[str], Path, dict[str, str]], tuple[int, float]] = run_process,
    only: Callable[[Cell], bool] | None = None,
) -> list[Attempt]:
    """Pin the noise files, then train every unfinished cell, ``jobs`` at a time.

    Args:
        jobs: cells trained at once, each in its own process.
        threads: torch threads per cell (default: the CPU count divided by ``jobs``).
        runner: runs one command (tests replace it).
        only: train only the cells it accepts (the others are still checked and reported).

    Returns:
        The attempts made now (finished cells are skipped and make none).
    """
    cells = spec.cells()
    for cell in cells:
        check_cell(cell)
    pin_noise(spec)
    finished = [c for c in cells if cell_status(c) == "done"]
    todo = [c for c in cells if cell_status(c) != "done" and (only is None or only(c))]
    todo.sort(key=lambda c: cell_status(c) != "interrupted")  # finish what was started first
    skipped = len(cells) - len(finished) - len(todo)
    echo(f"bench {spec.source}: {len(cells)} cells, {len(finished)} finished, {len(todo)} to run "
         f"({jobs} at a time)" + (f", {skipped} left out by --only" if skipped else "") + f" -> {spec.out}")
    threads = threads or max(1, (os.cpu_count() or 1) // max(jobs, 1))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    lock, done = threading.Lock(), [0]

    def one(cell: Cell) -> Attempt | None:
        with cell_lock(cell) as mine:
            if not mine or (cell.dir / RESULTS_FILE).is_file():
                with lock:
                    echo(f"  skip {cell.key}: {'finished' if mine else 'being trained by another process'}")
                return None
            resume = RunPaths(cell.dir).state.is_file()
            cmd = train_command(cell, threads=threads, resume=resume)
            with lock:
                echo(f"  start {cell.key}{' (resuming)' if resume else ''}")
            t0 = time.perf_counter()
            code, rss = runner(cmd, cell.dir / "train.log", env)
            cause = None if code == 0 else failure_cause(cell.dir / "train.log")
            attempt = Attempt(cell.key, cmd, resume, code, round(time.perf_counter() - t0, 1), round(rss, 1), cause)
            _record(cell, attempt)
        with lock:
            done[0] += 1
            what = "done" if code == 0 else f"FAILED (exit {code})"
            echo(f"  [{done[0]}/{len(todo)}] {cell.key}: {what} in {attempt.wall_seconds / 60:.1f} min")
            if code != 0:
                echo(f"      cause: {cause or 'no output'} (log: {cell.dir / 'train.log'})")
        return attempt

    if jobs <= 1:
        made = [one(c) for c in todo]
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            made = list(pool.map(one, todo))
    return [a for a in made if a is not None]


@contextlib.contextmanager
def cell_lock(cell: Cell) -> Iterator[bool]:
    """Hold an exclusive lock on the cell while it trains; yields False when another process holds it,
    so several bench processes (one per GPU, say) can share one spec."""
    cell.dir.mkdir(parents=True, exist_ok=True)
    with open(cell.dir / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
