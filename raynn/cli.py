"""The ``raynn`` command: run, validate and report on job specs.

Errors a user can fix print one line on stderr and exit with code 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from raynn._version import __version__
from raynn.bench.command import add_bench_parser
from raynn.errors import RaynnError


class RegistryChoices:
    """The choices of an option: a few fixed names, then a registry's names, read when first
    needed (a value parsed, help printed) so that building the parser imports no registry
    (the executors' imports torch). Its ``str`` is argparse's ``{a,b,c}``: set as the
    option's metavar once the option is added (``add_argument`` formats the metavar, or
    without one the choices, at once), help shows the names as argparse would.
    """

    def __init__(self, fixed: Sequence[str], load: Callable[[], Iterable[str]]) -> None:
        self.fixed = tuple(fixed)
        self.load = load

    def names(self) -> list[str]:
        """The fixed names, then the registry's, sorted (read afresh each time)."""
        return [*self.fixed, *sorted(n for n in self.load() if n not in self.fixed)]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self.fixed or name in self.names()  # a fixed name loads no registry

    def __str__(self) -> str:
        return "{" + ",".join(self.names()) + "}"


def executor_names() -> list[str]:
    """The registered K-fold executors (:data:`raynn.kfold.executors.base.EXECUTORS`; the
    factory module imports, and so registers, every built-in one)."""
    from raynn.kfold.executors.factory import EXECUTORS

    return list(EXECUTORS)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raynn", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"raynn {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_parser(sub)
    _add_report_parsers(sub)
    _add_submit_parser(sub)
    add_bench_parser(sub)
    return p


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    """``raynn run`` and its options."""
    r = sub.add_parser("run", help="run a job spec (K-fold) and write runs/<run-id>/")
    r.add_argument("spec", nargs="?", help="YAML/JSON job spec (omit with --resume)")
    executors = RegistryChoices(["auto", "local", "ray", "serial"], executor_names)  # built in
    executor = r.add_argument(
        "--executor",
        choices=executors,
        metavar="EXECUTOR",  # checked (formatted) here; the lazy one below is read for help
        default="auto",
        help="local: forked, pinned worker processes on this machine; ray: a Ray cluster "
        "(--address, RAY_ADDRESS) or an embedded local Ray; serial: one job at a time "
        "in-process; auto (default): ray given a cluster address, else local",
    )
    executor.metavar = executors
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
        help="finish the jobs of RUN_DIR that have no ok row (a SPEC given too must be the "
        "run's own: one that differs is refused); a complete run is left as it is",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress output")


def _add_report_parsers(sub: argparse._SubParsersAction) -> None:
    """``raynn validate`` and ``raynn report`` and their options."""
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


def _add_submit_parser(sub: argparse._SubParsersAction) -> None:
    """``raynn submit`` and its options."""
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


def _run(args: argparse.Namespace) -> int:
    from raynn.kinds import KINDS, run_dir_kind, spec_file_kind

    if args.resume is None and args.spec is None:
        raise RaynnError("raynn run needs a SPEC (e.g. jobs/kfold_digits.yaml) or --resume RUN_DIR")
    _check_run_options(args)
    name = spec_file_kind(args.spec) if args.resume is None else run_dir_kind(args.resume)
    executor = "serial" if args.serial else args.executor
    if executor == "auto":
        executor = "ray" if args.address or os.environ.get("RAY_ADDRESS") else "local"
    # load_spec names a bad kind properly
    with _zygote_for(executor, name if name in KINDS else "kfold") as zygote:
        return _run_spec(args, executor, zygote)


@contextlib.contextmanager
def _zygote_for(executor: str, kind: str) -> Iterator[object]:
    """The local executor's zygote for a run of ``kind``, started before this process imports
    torch (1-2 s, with the kind's modules), so that its own import of torch runs beside
    ours. Yields it (None for another executor or kind) and stops it."""
    from raynn.kinds import ZYGOTE_KINDS

    if executor != "local" or kind not in ZYGOTE_KINDS:
        yield None
        return
    from raynn.placement.processes import ZYGOTE_PRELOAD, Zygote

    zygote = Zygote(ZYGOTE_PRELOAD)
    try:
        yield zygote
    finally:
        zygote.close()


def _check_run_options(args: argparse.Namespace) -> None:
    """One line for options of ``raynn run`` that contradict each other or the machine."""
    from raynn.placement.cores import check_cpu_count

    if args.serial and args.executor not in ("auto", "serial"):
        raise RaynnError(f"--serial and --executor {args.executor} contradict; give one of them")
    if args.address and (args.serial or args.executor in ("local", "serial")):
        chosen = "--serial" if args.serial else f"--executor {args.executor}"
        raise RaynnError(f"--address needs --executor ray, not {chosen}; drop one of them")
    if args.threads is not None and not (args.serial or args.executor == "serial"):
        raise RaynnError(
            "--threads sets torch's threads of --serial; add --serial "
            "(workers get theirs from --num-cpus)"
        )
    check_cpu_count("--threads", args.threads)
    check_cpu_count("--num-cpus", args.num_cpus)


def _run_spec(args: argparse.Namespace, executor: str, zygote: object) -> int:
    from raynn import api
    from raynn.kinds import get_kind, run_dir_kind
    from raynn.spec import load_spec

    spec = load_spec(args.spec) if args.spec else None  # with --resume: must be the run's
    kind = get_kind(spec.kind if spec is not None else run_dir_kind(args.resume))
    executor = kind.local_executor if executor == "local" else executor
    if executor == "serial":
        options = {"executor": "serial", "threads": args.threads}
    elif executor == "local":
        options = {"executor": "local", "num_cpus": args.num_cpus, "zygote": zygote}
    else:  # ray, or an executor registered beside the built-in ones
        options = {"executor": executor, "address": args.address, "num_cpus": args.num_cpus}
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


def _bench(args: argparse.Namespace) -> int:
    from raynn.bench.command import bench

    return bench(args)


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
    from raynn.runs.signals import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():  # SIGTERM (ray job stop, Slurm, Kubernetes) as Ctrl-C
            return handler(args)
    except RaynnError as exc:
        if args.debug:
            raise
        print(f"raynn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        return _interrupted(args, exc)


def _interrupted(args: argparse.Namespace, exc: KeyboardInterrupt) -> int:
    """Say what was interrupted (by Ctrl-C: exit code 130, SIGTERM: 143) and the run
    directory to resume, or that none was made."""
    import shlex

    from raynn.runs.signals import SIGTERM_EXIT_CODE, terminated

    what = "terminated (SIGTERM)" if terminated(exc) else "interrupted"
    run_dir = getattr(exc, "run_dir", None)
    resume = getattr(args, "resume", None)
    if run_dir is None and resume and (Path(resume) / "run.json").is_file():
        run_dir = resume
    if run_dir is not None:
        line = f"{what}; finish with: raynn run --resume {shlex.quote(str(run_dir))}"
    elif args.command == "run":
        line = f"{what} before a run directory was made; nothing to resume"
    else:
        line = what
    print(f"raynn: {line}", file=sys.stderr)
    return SIGTERM_EXIT_CODE if terminated(exc) else 130


def entry() -> None:  # pragma: no cover - the console script
    """``raynn``: :func:`main`, then exit at once.

    Everything a command produces is written and flushed when :func:`main` returns; the
    interpreter's own teardown (torch's and the libraries' exit handlers, freeing every
    object) would only add time before the shell gets its prompt back. Output piped into a
    reader that stops early (``raynn report RUN | head``) ends quietly, as in other tools.
    """
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left: the rest of the output goes nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141  # 128 + SIGPIPE, what the shell reports for a tool killed by it
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
