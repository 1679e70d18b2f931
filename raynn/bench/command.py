"""``raynn bench``: its command-line options and what each of its commands runs.

:mod:`raynn.cli` adds these options (:func:`add_bench_parser`) and calls :func:`bench`. The
names each option takes, and their defaults, are the benches' own (:mod:`raynn.bench.names`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from raynn.bench import names
from raynn.bench.names import joined, listing
from raynn.errors import RaynnError


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    """``raynn bench`` and its commands (kfold, hogwild, sklearn, search): their options."""
    b = sub.add_parser("bench", help="the same work serially, by raynn and by peers")
    bsub = b.add_subparsers(dest="bench", required=True, metavar="WHAT")
    bk = bsub.add_parser("kfold", help="K-fold jobs in several modes side by side")
    bk.add_argument("--spec", required=True, help="a K-fold job spec")
    bk.add_argument(
        "--modes",
        default=joined(names.KFOLD_DEFAULT),
        help=listing(names.KFOLD_MODES, "benchmarks/README.md"),
    )
    bk.add_argument("--repeats", type=int, default=1, help="runs of each mode, interleaved")
    bk.add_argument("--output", default="bench", help="root of bench result folders")
    bk.add_argument("--num-cpus", type=int, default=None, help="CPUs to use (default: all)")
    bk.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="give up on a mode's run after this many seconds (default: 1800)",
    )
    bk.add_argument("--no-progress", action="store_true")
    bh = bsub.add_parser(
        "hogwild", help="HOGWILD: serial SGD, raynn, PyTorch multiprocessing, two Ray nodes"
    )
    bh.add_argument("--spec", required=True, help="a kind: hogwild spec")
    bh.add_argument("--workers", default="1,2", help="comma-separated worker counts (default: 1,2)")
    bh.add_argument(
        "--modes",
        default=joined(names.HOGWILD_DEFAULT),
        help=listing(names.HOGWILD_MODES),
    )
    bh.add_argument("--target", type=float, default=0.95, help="test accuracy for time_to_target_s")
    bh.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    bh.add_argument(
        "--repeats", type=int, default=1, help="runs per configuration; medians reported"
    )
    bh.add_argument("--output", default="bench", help="root of bench result folders")
    bh.add_argument("--no-progress", action="store_true")
    bs = bsub.add_parser(
        "sklearn", help="one skorch GridSearchCV through joblib's loky, Ray's and raynn's backends"
    )
    bs.add_argument(
        "--backends",
        default=joined(names.SKLEARN_BACKENDS),
        help=listing(names.SKLEARN_BACKENDS),
    )
    bs.add_argument("--grid-size", type=int, default=3, help="learning rates x hidden widths (1-5)")
    bs.add_argument("--cv", type=int, default=5)
    bs.add_argument("--epochs", type=int, default=3, help="skorch max_epochs per fit")
    bs.add_argument("--limit", type=int, default=None, help="first N digits (default: all)")
    bs.add_argument("--num-cpus", type=int, default=None, help="CPUs to use (default: all)")
    bs.add_argument("--output", default="bench", help="root of bench result folders")
    bs.add_argument("--no-progress", action="store_true")
    _add_bench_search(bsub)
    _add_bench_scale(bsub)


def _add_bench_scale(bsub: argparse._SubParsersAction) -> None:
    """``raynn bench scale``: its options."""
    bc = bsub.add_parser(
        "scale", help="the queue's policy at many cores, simulated on a spec's job times"
    )
    bc.add_argument("--spec", required=True, help="a K-fold spec (its grid's job times)")
    bc.add_argument("--cores", default="1024,4096", help="comma-separated core counts")
    bc.add_argument("--jobs-per-core", type=float, default=4.0, help="jobs drawn per core")
    bc.add_argument("--node-cores", type=int, default=64, help="cores per simulated node")
    bc.add_argument(
        "--noise",
        default="0",
        help="comma-separated sigmas: each job's seconds times a lognormal factor (the "
        "probe's prediction off), 0 for exact",
    )
    bc.add_argument("--output", default="bench", help="root of bench result folders")
    bc.add_argument(
        "--queue-workers",
        default=None,
        help="instead of simulating: the queue actor's jobs/s for jobs that do nothing, at "
        "these comma-separated worker counts (e.g. 8,32,128,256; threads in a few processes)",
    )
    bc.add_argument(
        "--queue-prefetch",
        default="1,32",
        help="the most jobs one lease grants, comma-separated (1: a call per job; 32: "
        "raynn's most, after jobs that take no time)",
    )
    bc.add_argument("--queue-jobs", type=int, default=5000, help="jobs per queue-load run")
    bc.add_argument("--queue-repeats", type=int, default=1, help="queue-load runs, interleaved")
    bc.add_argument(
        "--queue-runners", type=int, default=4, help="processes running the worker threads"
    )


def _add_bench_search(bsub: argparse._SubParsersAction) -> None:
    """``raynn bench search``: its options."""
    bq = bsub.add_parser(
        "search", help="a search space: raynn run with fold racing against Optuna and Ray Tune"
    )
    bq.add_argument("--spec", required=True, help="a K-fold spec (search domains allowed)")
    bq.add_argument(
        "--modes",
        default=joined(names.SEARCH_DEFAULT),
        help=listing(names.SEARCH_MODES, "benchmarks/README.md"),
    )
    bq.add_argument("--repeats", type=int, default=1, help="runs of each mode, interleaved")
    bq.add_argument("--output", default="bench", help="root of bench result folders")
    bq.add_argument(
        "--timeout", type=float, default=None, help="give up on a mode's run after (default: 1800)"
    )
    bq.add_argument("--no-progress", action="store_true")


def _show_bench(out: Path) -> int:
    """Print a bench folder's summary and where it is; exit code 0."""
    print((out / "summary.md").read_text())
    print(f"results: {out}")
    return 0


def bench(args: argparse.Namespace) -> int:
    """``raynn bench WHAT``: run the bench ``args.bench`` names, print its summary; exit code."""
    from raynn.placement.cores import check_cpu_count
    from raynn.spec import load_spec

    check_cpu_count("--num-cpus", getattr(args, "num_cpus", None))
    if args.bench == "sklearn":  # no spec: the grid is the bench's own
        return _bench_sklearn(args)
    if args.bench == "search":  # copies the spec file itself (racing off and on)
        return _bench_search(args)
    spec = load_spec(args.spec)
    if args.bench == "scale":
        return _bench_scale(args, spec)
    if args.bench == "hogwild":
        return _bench_hogwild(args, spec)
    if spec.kind != "kfold":
        raise RaynnError(f"raynn bench kfold needs a kind: kfold spec, got {spec.kind}")
    from raynn.bench.kfold import bench_kfold

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    table, out = bench_kfold(
        spec,
        modes,
        args.output,
        args.num_cpus,
        args.timeout,
        progress=not args.no_progress,
        repeats=args.repeats,
    )
    return _show_bench(out)


def _bench_scale(args: argparse.Namespace, spec: Any) -> int:
    from raynn.bench.scale import run_bench_scale

    if spec.kind != "kfold":
        raise RaynnError(f"raynn bench scale needs a kind: kfold spec, got {spec.kind}")
    if args.queue_workers is not None:
        return _bench_queue_load(args, spec)
    cores = _numbers(args.cores, "--cores", "1024,4096")
    if not cores or min(cores) < 1 or args.node_cores < 1 or args.jobs_per_core <= 0:
        raise RaynnError("--cores, --node-cores and --jobs-per-core must be positive")
    noise = _numbers(args.noise, "--noise", "0,0.05", float)
    if not noise or min(noise) < 0 or not all(math.isfinite(x) for x in noise):
        raise RaynnError(f"--noise: {args.noise!r}; use sigmas of 0 or more, e.g. 0,0.05")
    out = run_bench_scale(spec, cores, args.jobs_per_core, args.node_cores, args.output, noise)
    return _show_bench(out)


def _numbers(text: str, flag: str, example: str, kind: type = int) -> list[Any]:
    """A comma-separated list of numbers (``kind``: whole by default), or one line naming
    ``flag`` and the fix."""
    try:
        return [kind(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise RaynnError(f"{flag}: {text!r} is no list of numbers; use {example}") from None


def _bench_queue_load(args: argparse.Namespace, spec: Any) -> int:
    from raynn.bench.queue_load import run_bench_queue_load

    workers = _numbers(args.queue_workers, "--queue-workers", "8,32,128,256")
    prefetch = _numbers(args.queue_prefetch, "--queue-prefetch", "1,32")
    counts = (args.queue_jobs, args.queue_repeats, args.queue_runners)
    if not workers or not prefetch or min(workers + prefetch) < 1 or min(counts) < 1:
        raise RaynnError(
            "--queue-workers, --queue-prefetch, --queue-jobs, --queue-repeats and "
            "--queue-runners must be positive"
        )
    out = run_bench_queue_load(
        spec, workers, args.queue_jobs, args.queue_repeats, args.queue_runners, args.output,
        prefetch,
    )  # fmt: skip
    return _show_bench(out)


def _bench_sklearn(args: argparse.Namespace) -> int:
    from raynn.bench.sklearn import bench_sklearn

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    _, out = bench_sklearn(
        backends,
        args.output,
        grid_size=args.grid_size,
        cv=args.cv,
        epochs=args.epochs,
        limit=args.limit,
        num_cpus=args.num_cpus,
        progress=not args.no_progress,
    )
    return _show_bench(out)


def _bench_search(args: argparse.Namespace) -> int:
    from raynn.bench.search import bench_search

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    _, out = bench_search(
        args.spec,
        modes,
        repeats=args.repeats,
        output=args.output,
        timeout=args.timeout,
        progress=not args.no_progress,
    )
    return _show_bench(out)


def _bench_hogwild(args: argparse.Namespace, spec: object) -> int:
    from raynn.bench.hogwild import bench_hogwild, parse_workers

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    table, out = bench_hogwild(
        spec,
        parse_workers(args.workers),
        modes,
        args.output,
        target=args.target,
        epochs=args.epochs,
        repeats=args.repeats,
        progress=not args.no_progress,
    )
    return _show_bench(out)
