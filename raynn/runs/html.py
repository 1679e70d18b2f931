"""``report.html`` and ``report/*.png``: the figures of a run directory, in one offline file.

``report.html`` is self-contained: the text summary as HTML and every figure embedded as a
base64 PNG, with no external style sheet, script or image, so it opens anywhere, offline,
and can be mailed as one file. The same figures are written as PNG files under
``report/``. Imported only by ``raynn report`` (it loads matplotlib).
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raynn.errors import OutputError
from raynn.runs import figures
from raynn.runs.results import read_table, write_bytes


@dataclass
class Figure:
    """One figure of a report: its id (``fig-<id>`` in the HTML), file and caption."""

    id: str
    file: str
    caption: str
    figure: Any  # matplotlib Figure
    note: str = ""  # what the figure lacks, e.g. an old run directory's missing column


@dataclass
class HtmlReport:
    """What :func:`write_html_report` wrote."""

    html: Path
    folder: Path
    figures: list[Figure] = field(default_factory=list)

    @property
    def pngs(self) -> list[Path]:
        """The PNG files under ``report/``, in the order of the page."""
        return [self.folder / f.file for f in self.figures]


def utilization_figure(run_dir: Path, t0: float | None, since: str) -> Figure:
    """The utilisation heatmap of a run directory (both kinds draw it last)."""
    util = read_table(run_dir, "utilization")
    split = "own_percent" in util.columns and bool(util["own_percent"].notna().any())
    note = (
        ""
        if split or util.empty
        else "This run's utilisation table has no own_percent (recorded before raynn measured "
        "its own processes, or by a sampler that did not): the heatmap is not split."
    )
    return Figure(
        "utilization",
        "cpu_utilization_per_core.png",
        "CPU utilisation of every core over time; raynn's own processes apart from the rest "
        "of the machine, and the mean over the cores.",
        figures.utilization_figure(util, t0, since),
        note,
    )


def png_bytes(fig: Any) -> bytes:
    """``fig`` rendered as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _inline(text: str) -> str:
    out = html.escape(text)
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def markdown_html(text: str) -> str:
    """The report's markdown (headings, lists, tables, paragraphs) as HTML."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(set(c) <= set("-: ") for c in cells):
                    rows.append(cells)
                i += 1
            head, *body = rows
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body]
            out.append("</table>")
            continue
        if line.startswith("- "):
            out.append("<ul>")
            while i < len(lines) and lines[i].startswith("- "):
                out.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("</ul>")
            continue
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line:
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1250px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
figure { margin: 1.6em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e4e4e4; }
figcaption { color: #444; margin-top: 0.3em; }
.note { color: #8a4b00; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def render_html(
    title: str,
    summary: str,
    figs: list[Figure],
    comparison: str = "",
    images: dict[str, bytes] | None = None,
) -> str:
    """The page: summary, optional comparison, then each figure as an inline PNG (from
    ``images`` by figure id where given, else rendered now)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        markdown_html(summary),
    ]
    if comparison:
        parts.append(markdown_html(comparison))
    parts.append("<h2>Figures</h2>")
    for f in figs:
        png = images[f.id] if images and f.id in images else png_bytes(f.figure)
        data = base64.b64encode(png).decode("ascii")
        note = f'<br><span class="note">{html.escape(f.note)}</span>' if f.note else ""
        parts.append(
            f'<figure id="{f.id}"><img id="fig-{f.id}" alt="{html.escape(f.caption)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(f.caption)}'
            f"{note}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html_report(
    run_dir: str | os.PathLike[str], summary: str, figs: list[Figure], comparison: str = ""
) -> HtmlReport:
    """Write ``report.html`` and ``report/<figure>.png`` into ``run_dir``; what was written.

    ``figs`` are the kind's figures of the run (:func:`raynn.kfold.report.figures`,
    :func:`raynn.hogwild.report.figures`).
    """
    run_dir = Path(run_dir)
    folder = run_dir / "report"
    images = {f.id: png_bytes(f.figure) for f in figs}
    page = render_html(f"raynn run {run_dir.name}", summary, figs, comparison, images)
    try:
        for f in figs:
            write_bytes(folder / f.file, images[f.id])
        write_bytes(run_dir / "report.html", page.encode())
    except OutputError as exc:
        reason = str(exc).split("; free space")[0]
        raise OutputError(
            f"{reason}; the report goes into the run directory: make it writable, or copy "
            "the run directory somewhere writable and report on the copy"
        ) from None
    return HtmlReport(run_dir / "report.html", folder, figs)
