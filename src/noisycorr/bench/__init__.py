"""The benchmark harness: a grid of methods, noise rates and seeds -> ordinary runs -> one report."""

from noisycorr.bench.pins import pin_noise
from noisycorr.bench.report import write_report
from noisycorr.bench.runner import run_bench
from noisycorr.bench.spec import BenchSpec, Cell, load_spec

__all__ = ["BenchSpec", "Cell", "load_spec", "pin_noise", "run_bench", "write_report"]
