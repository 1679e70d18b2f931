"""The ``raynn`` command: run, validate and report on job specs.

Errors a user can fix print one line on stderr and exit with code 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from raynn.errors import RaynnError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raynn", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a job spec (K-fold) and write runs/<run-id>/")
    r.add_argument("spec", nargs="?", help="YAML/JSON job spec (omit with --resume)")
    r.add_argument(
        "--executor",
        choices=["auto", "local", "ray", "serial"],
        default="auto",
        help="local: forked, pinned worker processes on this machine; ray: a Ray cluster "
        "(--address, RAY_ADDRESS) or an embedded local Ray; serial: one job at a time "
        "in-process; auto (default): ray given a cluster address, else local",
    )
    r.add_argument(
        "--serial",
        action="store_true",
        help="baseline: one job at a time in-process, all cores to torch (= --executor serial)",
    )
    r.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for --serial (default: every usable core)",
    )
    r.add_argument(
        "--address",
        default=None,
        help="Ray cluster to use ('auto', host:port); implies --executor ray",
    )
    r.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="CPUs to use on this machine (default: this process's affinity)",
    )
    r.add_argument("--output", default=None, help="root for run directories (default: runs)")
    r.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="finish the jobs of RUN_DIR that have no ok row",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress output")

    v = sub.add_parser("validate", help="check a spec and its dataset without running")
    v.add_argument("spec")

    rep = sub.add_parser(
        "report", help="summarise a run directory; write its report.html and report/*.png"
    )
    rep.add_argument("run_dir")
    rep.add_argument(
        "--against",
        metavar="OTHER_RUN",
        default=None,
        help="compare with another run of the same spec (e.g. the serial baseline): "
        "accuracy paired by fold, paired t-test, speed-up",
    )
    rep.add_argument("--no-html", action="store_true", help="print the text summary only")

    sm = sub.add_parser("submit", help="submit a spec to a Ray cluster's job server")
    sm.add_argument("spec", help="job spec, inside the working directory")
    sm.add_argument(
        "--address",
        default=None,
        help="job server (default: $RAY_ADDRESS, else http://127.0.0.1:8265)",
    )
    sm.add_argument("--working-dir", default=".", help="uploaded with the job (default: .)")
    sm.add_argument("--wait", action="store_true", help="stream the job's logs until it ends")
    sm.add_argument(
        "--output", default=None, help="run directory root on the head node (passed to raynn run)"
    )

    b = sub.add_parser("bench", help="the same work serially, by raynn and by peers")
    bsub = b.add_subparsers(dest="bench", required=True, metavar="WHAT")
    bk = bsub.add_parser("kfold", help="K-fold jobs in several modes side by side")
    bk.add_argument("--spec", required=True, help="a K-fold job spec")
    bk.add_argument(
        "--modes",
        default="serial,serial1,raynn,pool,tune,multi_instance",
        help="comma-separated: serial, serial1, raynn, raynn_cold, raynn_ray, racing (fold "
        "racing on), pool, tune, tune_fresh, multi_instance, processes (benchmarks/README.md)",
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
        default="serial,raynn,torch,raynn_2node",
        help="comma-separated: serial (raynn --serial, 1 thread), raynn (HOGWILD on this "
        "node), torch (PyTorch share_memory + multiprocessing), torch_ray (torch beside an "
        "idle embedded Ray: Ray's own cost), raynn_2node (HOGWILD over a "
        "two-node ray.cluster_utils.Cluster, 2+ workers)",
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
        "--backends", default="loky,ray,raynn", help="comma-separated: loky, ray, raynn"
    )
    bs.add_argument("--grid-size", type=int, default=3, help="learning rates x hidden widths (1-5)")
    bs.add_argument("--cv", type=int, default=5)
    bs.add_argument("--epochs", type=int, default=3, help="skorch max_epochs per fit")
    bs.add_argument("--limit", type=int, default=None, help="first N digits (default: all)")
    bs.add_argument("--num-cpus", type=int, default=None, help="CPUs to use (default: all)")
    bs.add_argument("--output", default="bench", help="root of bench result folders")
    bs.add_argument("--no-progress", action="store_true")
    _add_bench_search(bsub)
    return p


def _add_bench_search(bsub: argparse._SubParsersAction) -> None:
    """``raynn bench search``: its options."""
    bq = bsub.add_parser(
        "search", help="a search space: raynn run with fold racing against Optuna and Ray Tune"
    )
    bq.add_argument("--spec", required=True, help="a K-fold spec (search domains allowed)")
    bq.add_argument(
        "--modes",
        default="full,raynn,raynn_ray,optuna,tune",
        help="comma-separated: full (racing off: the truth), raynn (racing on), raynn_ray "
        "(the same on Ray), optuna (GridSampler + WilcoxonPruner), tune (ASHA) "
        "(benchmarks/README.md)",
    )
    bq.add_argument("--repeats", type=int, default=1, help="runs of each mode, interleaved")
    bq.add_argument("--output", default="bench", help="root of bench result folders")
    bq.add_argument(
        "--timeout", type=float, default=None, help="give up on a mode's run after (default: 1800)"
    )
    bq.add_argument("--no-progress", action="store_true")


def _run(args: argparse.Namespace) -> int:
    from raynn.kinds import KINDS, get_kind, run_dir_kind, spec_file_kind

    if args.resume is None and args.spec is None:
        raise RaynnError("raynn run needs a SPEC (e.g. jobs/kfold_digits.yaml) or --resume RUN_DIR")
    name = spec_file_kind(args.spec) if args.resume is None else run_dir_kind(args.resume)
    kind = get_kind(name if name in KINDS else "kfold")  # load_spec names a bad kind properly
    executor = "serial" if args.serial else args.executor
    if executor == "auto":
        executor = "ray" if args.address or os.environ.get("RAY_ADDRESS") else "local"
    zygote = None
    if executor == "local" and kind.uses_zygote:
        # start the workers' zygote now: its import of torch runs beside ours
        from raynn.placement.processes import ZYGOTE_PRELOAD, Zygote

        zygote = Zygote(ZYGOTE_PRELOAD)
    try:
        return _run_spec(args, executor, zygote)
    finally:
        if zygote is not None:
            zygote.close()


def _run_spec(args: argparse.Namespace, executor: str, zygote: object) -> int:
    from raynn import api
    from raynn.kinds import get_kind, run_dir_kind
    from raynn.spec import load_spec

    spec = load_spec(args.spec) if args.spec and args.resume is None else None
    kind = get_kind(spec.kind if spec is not None else run_dir_kind(args.resume))
    executor = kind.local_executor if executor == "local" else executor
    if executor == "serial":
        options = {"executor": "serial", "threads": args.threads}
    elif executor == "local":
        options = {"executor": "local", "num_cpus": args.num_cpus, "zygote": zygote}
    else:
        options = {"executor": "ray", "address": args.address, "num_cpus": args.num_cpus}
    result = api.run(
        spec, resume=args.resume, output=args.output, progress=not args.no_progress, **options
    )
    print((result.run_dir / "report.md").read_text())
    print(f"results: {result.run_dir}")
    failed = int((result.jobs["status"] == "failed").sum())  # HOGWILD: "restarted" is fine
    return 0 if result.ok and not failed else 1


def _validate(args: argparse.Namespace) -> int:
    from raynn import api
    from raynn.spec import load_spec

    print(f"{args.spec}: ok: {api.validate(load_spec(args.spec))}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from raynn import api

    rep = api.report(args.run_dir, args.against)
    print(rep.summary, end="")
    if rep.comparison:
        print("\n" + rep.comparison, end="")
    if not args.no_html:
        written = api.write_html(args.run_dir, rep)
        print(f"\nreport: {written.html}")
        print(f"figures: {written.folder}/ ({', '.join(f.file for f in written.figures)})")
        for f in written.figures:
            if f.note:
                print(f"note: {f.file}: {f.note}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from raynn.submit import submit

    run_args = ("--output", args.output) if args.output else ()
    _, status = submit(
        args.spec, args.address, wait=args.wait, working_dir=args.working_dir, run_args=run_args
    )
    if status is None:
        return 0
    print(f"job ended: {status}")
    return 0 if status.endswith("SUCCEEDED") else 1


def _show_bench(out: Path) -> int:
    """Print a bench folder's summary and where it is; exit code 0."""
    print((out / "summary.md").read_text())
    print(f"results: {out}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from raynn.spec import load_spec

    if args.bench == "sklearn":  # no spec: the grid is the bench's own
        return _bench_sklearn(args)
    if args.bench == "search":  # copies the spec file itself (racing off and on)
        return _bench_search(args)
    spec = load_spec(args.spec)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``raynn`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    handler = {
        "run": _run,
        "validate": _validate,
        "report": _report,
        "bench": _bench,
        "submit": _submit,
    }[args.command]
    try:
        return handler(args)
    except RaynnError as exc:
        if args.debug:
            raise
        print(f"raynn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("raynn: interrupted; finish with 'raynn run --resume RUN_DIR'", file=sys.stderr)
        return 130


def entry() -> None:  # pragma: no cover - the console script
    """``raynn``: :func:`main`, then exit at once.

    Everything a command produces is written and flushed when :func:`main` returns; the
    interpreter's own teardown (torch's and the libraries' exit handlers, freeing every
    object) would only add time before the shell gets its prompt back.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
