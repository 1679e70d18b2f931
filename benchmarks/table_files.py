"""How many files does a large grid leave, and how long do its tables and report take to read?

Runs ``raynn run`` of a digits grid of one-epoch MLP jobs (20 widths x 5 schedulers x 10
folds, with learning-rate draws above 1,000 jobs: the grid of ``planning_time.py``), then
times, each as its own command from start to exit: ``pandas.read_parquet`` of ``jobs/`` and
of ``epochs/``, and ``raynn report RUN`` (``report.md`` and ``report.html`` with its figures).
The bars (issue 23): at most 20 files per table; pandas reads the jobs table of a 10,000-job
run in under 1 s; ``raynn report`` of it takes under 10 s.

    python benchmarks/table_files.py [--jobs 1000,10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from planning_time import grid_spec  # noqa: E402 - this folder's neighbour

READ = "import pandas as pd, sys; print(len(pd.read_parquet(sys.argv[1])))"


def timed(command: list[str]) -> tuple[float, str]:
    """Seconds from start to exit of ``command``, and its last line of output."""
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines() or [""]
    return time.perf_counter() - start, lines[-1]


def measure(jobs: int, folder: Path) -> list[str]:
    """One grid: run it, then count its files and time the readers."""
    spec = grid_spec(jobs, folder)
    run_s, _ = timed([sys.executable, "-m", "raynn", "run", str(spec), "--no-progress"])
    (run_dir,) = (folder / "runs").glob(f"plan{jobs}-*")
    files = {t: len(list((run_dir / t).iterdir())) for t in ("jobs", "epochs")}
    jobs_s, rows = timed([sys.executable, "-c", READ, str(run_dir / "jobs")])
    epochs_s, _ = timed([sys.executable, "-c", READ, str(run_dir / "epochs")])
    report_s, _ = timed([sys.executable, "-m", "raynn", "report", str(run_dir)])
    assert (run_dir / "report.html").is_file()
    cells = [rows, files["jobs"], files["epochs"], f"{run_s:.1f}", f"{jobs_s:.2f}"]
    return [*cells, f"{epochs_s:.2f}", f"{report_s:.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="1000,10000")
    parser.add_argument("--keep", help="run the grids under this folder and keep them")
    args = parser.parse_args()
    print("| jobs | jobs files | epochs files | run_s | read_jobs_s | read_epochs_s | report_s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        for n in (int(x) for x in args.jobs.split(",")):
            folder = root / f"grid{n}"
            folder.mkdir(parents=True, exist_ok=True)
            print("| " + " | ".join(str(c) for c in measure(n, folder)) + " |", flush=True)


if __name__ == "__main__":
    main()
