"""What every ``raynn bench`` shares: the machine, result folders, markdown tables, plots."""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pandas as pd

from raynn.placement.cores import usable_cpus


def machine() -> dict[str, Any]:
    """CPU model, usable cores, date and the commit, for RESULTS.md."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        commit += "+dirty" if commit and dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "host": socket.gethostname(),
        "cpu": model,
        "cores": len(usable_cpus()),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
    }


def machine_line(info: dict[str, Any]) -> str:
    """The machine as one line of a summary: CPU, host, date, commit (from :func:`machine`)."""
    return (
        f"{info['cpu']} ({info['host']}, {info['cores']} cores), {info['date']}, "
        f"commit {info['commit']}"
    )


def markdown_table(
    table: pd.DataFrame, cols: Sequence[str], formats: dict[str, str] | None = None
) -> list[str]:
    """``table[cols]`` as markdown lines; floats as ``{:.3f}`` unless ``formats`` says."""
    formats = formats or {}
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            cells.append(formats.get(c, "{:.3f}").format(v) if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def bench_folder(output: str | Path, name: str) -> Path:
    """Create and return a fresh ``<output>/<name>-<time>/`` for one bench run."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        out = Path(output) / (f"{name}-{stamp}" if n == 0 else f"{name}-{stamp}-{n}")
        try:
            out.mkdir(parents=True, exist_ok=False)
            return out
        except FileExistsError:
            continue
    raise FileExistsError(f"too many bench folders named {name} this second under {output}")


def run_group(
    cmd: Sequence[str], log: IO[bytes], env: Mapping[str, str], timeout: float | None
) -> tuple[int, bool]:
    """Run ``cmd`` (its output to ``log``) in a new session, as the leader of its own process
    group, and wait for it; ``(exit code, timed out)``.

    Past ``timeout`` seconds, and when the bench itself is interrupted (Ctrl-C, or SIGTERM as
    raynn turns it into a ``KeyboardInterrupt``), the whole group is killed: no process of
    a mode trains on after the bench; the interrupt is then raised again.
    """
    proc = subprocess.Popen(
        list(cmd), stdout=log, stderr=subprocess.STDOUT, env=dict(env), start_new_session=True
    )
    try:
        return proc.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        return proc.wait(), True
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        raise


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:  # every process of the group is gone already
        pass


def have_matplotlib(what: str) -> bool:
    """Whether matplotlib imports; if not, say which plots (``what``) are skipped."""
    try:
        import matplotlib  # noqa: F401 - plots are optional where matplotlib is missing
    except ImportError:
        print(f"matplotlib is not installed: no {what}", flush=True)
        return False
    return True


def write_summary(
    table: Any,
    out: Path,
    name: str,
    header: list[str],
    formats: dict[str, str],
    notes: Sequence[str] = (),
) -> Path:
    """``summary.md`` (``header``, ``table`` as markdown, ``notes``) and ``<name>.csv`` in
    ``out``; the summary's path."""
    table.to_csv(out / f"{name}.csv", index=False)
    lines = [*header, "", *markdown_table(table, list(table.columns), formats)]
    lines += ["", *notes] if notes else []
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return out / "summary.md"
