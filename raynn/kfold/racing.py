"""Fold racing (``scheduling.racing``): stop confirming that a bad configuration is bad.

A configuration is a model, a scheduler and one set of searched values, named by its id
(:mod:`raynn.spec.search`; ``model/scheduler`` without a search); its folds are jobs. Each
time a fold ends, :meth:`Race.record` takes its metric and compares every configuration that
has finished at least ``min_folds`` folds with the current best one, on the folds both have
finished: a one-sided paired t-test that the best is better, corrected for the k - 1
comparisons with the best of k configurations by Holm's step-down (the smallest p-value at
``alpha / (k - 1)``, as Bonferroni's, and each configuration already out frees its share), so
that a grid of equally good configurations races none out at rate ``alpha``, not k - 1 times
it. The spread of the differences is pooled over the configurations still in the race, each
one's differences from the best around their own mean (the error term of a configurations x
folds layout, as in Dunnett's many-to-one comparisons), so a test of one to three folds has
the degrees of freedom of the whole race, not 0 to 2; a configuration whose own differences
spread wider is tested with its own spread (:func:`worse_p_value`). Folds are handed out
staggered (:meth:`Race.order`): the first configurations finish several folds early, which
gives the race its best and its spread, and every later configuration can be tested after
its first fold. A configuration the test rejects is raced out for good: the queue cancels
its pending folds and stops its running ones at their next epoch boundary
(:mod:`raynn.kfold.queue`), and each gets a ``raced_out`` row whose ``error`` is the reason
(:meth:`Decision.reason`). The folds are tested as they come (no correction for looking
after every fold), so the level of a whole race is somewhat above ``alpha``.

A plain class with no clock and no randomness: the decisions depend only on which folds
finished and in what order, so the serial executor decides the same every run, and on Ray
each decision names the folds it compared (``run.json`` keeps the reasons).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raynn.kfold.rows import RACED_OUT
from raynn.spec.sections import RacingSpec

if TYPE_CHECKING:
    from raynn.kfold.grid import Job

Config = str  # a configuration's id: model/scheduler[/key=value,...]
STAGGER = 2  # Race.order: configuration i's r-th fold is handed out at position i + 2r


def config_of(job: Job) -> Config:
    """The configuration a job is a fold of."""
    return job.config


def row_config(row: Any) -> Config:
    """The configuration of a ``jobs/`` row (``model/scheduler`` for a row written before
    the table had a ``config`` column)."""
    config = getattr(row, "config", None)
    return config if isinstance(config, str) and config else f"{row.model}/{row.scheduler}"


def with_config(jobs: Any) -> Any:
    """A ``jobs/`` table whose ``config`` column is filled for every row (older rows lack
    it: ``model/scheduler``)."""
    jobs = jobs.copy()
    fallback = jobs["model"].astype(str) + "/" + jobs["scheduler"].astype(str)
    if "config" not in jobs:
        jobs["config"] = fallback
    jobs["config"] = jobs["config"].where(jobs["config"].fillna("").astype(str) != "", fallback)
    return jobs


class RacedOut(Exception):  # noqa: N818 - a signal, not an error
    """Raised at an epoch boundary of a running fold whose configuration was raced out."""

    def __init__(self, reason: str, epoch: int = 0) -> None:
        super().__init__(reason)
        self.reason, self.epoch = reason, epoch


@dataclass(frozen=True)
class Decision:
    """One configuration raced out: by which, on which folds, at what p-value."""

    config: Config
    beaten_by: Config
    metric: str
    p_value: float
    folds: tuple[int, ...]  # the folds both had finished when it was decided
    alpha: float = 0.05  # the level it was tested at (``alpha / (k - 1)``)
    df: int = 0  # the t-test's degrees of freedom (pooled over the race, or its own n - 1)

    def reason(self) -> str:
        """The text a raced-out row carries in its ``error`` column."""
        folds = ",".join(str(f) for f in self.folds)
        return (
            f"raced out: {self.metric} worse than {self.beaten_by} on folds {folds} "
            f"(paired t-test, {self.df} df: p={self.p_value:.3g} < {self.alpha:.3g})"
        )


Pooled = tuple[float, int]  # a pooled standard deviation and its degrees of freedom
MIN_POOLED_DF = 2  # a pooled spread on fewer degrees of freedom is not used


def pooled_spread(differences: Iterable[Sequence[float]]) -> Pooled:
    """The standard deviation of paired differences pooled over configurations, each around
    its own mean (sum of squares / sum of ``n - 1``), and its degrees of freedom; ``(0.0,
    0)`` when no configuration has two differences."""
    squares, df = 0.0, 0
    for diffs in differences:
        if len(diffs) >= 2:
            mean = sum(diffs) / len(diffs)
            squares += sum((d - mean) ** 2 for d in diffs)
            df += len(diffs) - 1
    return (math.sqrt(squares / df), df) if df else (0.0, 0)


def worse_p_value(
    best: Sequence[float], other: Sequence[float], resolution: float = 0.0,
    pooled: Pooled = (0.0, 0),
) -> tuple[float, int]:  # fmt: skip
    """One-sided p-value of a paired t-test that ``best`` is better (larger) than ``other``,
    and its degrees of freedom.

    With no ``pooled`` spread it is scipy's ``ttest_rel(best, other, alternative="greater")``
    on ``n - 1`` degrees of freedom (1.0 with fewer than two pairs). With a pooled spread
    (:func:`pooled_spread`, on at least :data:`MIN_POOLED_DF` degrees of freedom) the
    differences' standard deviation is the larger of the pooled one and their own, on the
    pooled degrees of freedom, and one pair suffices. A metric measured on a finite
    validation set moves in steps (accuracy in 1/n), so two near-equal configurations can
    lead each other by one step on every fold: a spread of (almost) nothing that says
    nothing about the noise. The standard deviation is therefore taken as at least
    ``resolution`` (the metric's step, :attr:`Race.resolution`). Where there is no spread at
    all, the sign test decides (``0.5 ** n``).
    """
    n = len(best)
    diffs = [b - o for b, o in zip(best, other, strict=True)]
    mean = sum(diffs) / n if n else 0.0
    own = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n >= 2 else 0.0
    spread, df = pooled
    if df < MIN_POOLED_DF:
        if n < 2:
            return 1.0, 0
        spread, df = 0.0, n - 1
    sd = max(spread, own, resolution)
    if sd < 1e-12:  # every difference the same, nothing to scale them by
        return (0.5**n if mean > 0 else 1.0), df
    from scipy import stats

    return float(stats.t.sf(mean / (sd / math.sqrt(n)), df)), df


@dataclass
class Race:
    """The race of one run's configurations; see the module docstring.

    Args:
        spec: the ``scheduling.racing`` settings.
        scores: folds finished before (a resumed run's ok rows):
            ``(config, fold, metric value)``.
        out: configurations raced out before (a resumed run's raced-out rows), with the
            reason their rows carry.
        configs: every configuration of the grid (:meth:`add`): they size the correction.
        resolution: the metric's step (:func:`start_race`).
    """

    spec: RacingSpec
    scores: dict[Config, dict[int, float]] = field(default_factory=dict)
    out: dict[Config, str] = field(default_factory=dict)
    configs: set[Config] = field(default_factory=set)  # every configuration of the grid
    # the metric's step: 1 / the validation folds' size for accuracy, 0.0 for a loss
    resolution: float = 0.0

    def add(self, configs: Iterable[Config]) -> None:
        """Configurations of the grid (the queue adds its jobs'): they size the correction."""
        self.configs.update(configs)

    @property
    def alpha(self) -> float:
        """The level of the next rejection: Holm's step-down over the k - 1 comparisons
        with the best, ``alpha / (k - 1 - out)`` with ``out`` configurations already out
        (the first is Bonferroni's ``alpha / (k - 1)``)."""
        k = len(self.configs | set(self.scores) | set(self.out))
        return self.spec.alpha / max(k - 1 - len(self.out), 1)

    @classmethod
    def resumed(
        cls, spec: RacingSpec, done: Iterable[tuple[Config, int, float]],
        out: dict[Config, str] | None = None, resolution: float = 0.0,
    ) -> Race:  # fmt: skip
        race = cls(spec, out=dict(out or {}), resolution=resolution)
        for config, fold, value in done:
            race.scores.setdefault(config, {})[fold] = value
        return race

    def _value(self, value: float) -> float:
        """``value`` with larger meaning better (a loss is negated)."""
        return -value if self.spec.metric.endswith("loss") else value

    def best(self) -> Config | None:
        """The configuration still in the race with the best mean over its finished folds
        (among those with at least ``min_folds``); ties go to the first in sorted order."""
        ranked = [
            (-sum(map(self._value, s.values())) / len(s), c)
            for c, s in sorted(self.scores.items())
            if c not in self.out and len(s) >= self.spec.min_folds
        ]
        return min(ranked)[1] if ranked else None

    def record(self, config: Config, fold: int, value: float) -> list[Decision]:
        """Fold ``fold`` of ``config`` finished with ``value``: the configurations raced out
        now (none when the value is not a number: a NaN never decides anything)."""
        if math.isnan(value):
            return []
        self.scores.setdefault(config, {})[fold] = value
        best = self.best()
        if best is None:
            return []
        paired = self._paired(best)
        pooled = pooled_spread([[b - o for b, o in zip(*p, strict=True)] for p in paired.values()])
        tests = sorted(
            (*worse_p_value(ahead, behind, self.resolution, pooled), other)
            for other, (ahead, behind) in paired.items()
            if len(ahead) >= self.spec.min_folds
        )
        new = []
        for p, df, other in tests:  # the smallest p-value first, each at Holm's next level
            level = self.alpha
            if p >= level:
                break
            folds = tuple(sorted(set(self.scores[other]) & set(self.scores[best])))
            decision = Decision(other, best, self.spec.metric, p, folds, level, df)
            self.out[other] = decision.reason()
            new.append(decision)
        return new

    def _paired(self, best: Config) -> dict[Config, tuple[list[float], list[float]]]:
        """Every other configuration still in the race: its values and the best's, on the
        folds both finished, larger meaning better."""
        top = self.scores[best]
        out = {}
        for other, scores in sorted(self.scores.items()):
            folds = sorted(set(scores) & set(top))
            if other != best and other not in self.out and folds:
                out[other] = (
                    [self._value(top[f]) for f in folds],
                    [self._value(scores[f]) for f in folds],
                )
        return out

    @staticmethod
    def order(jobs: Iterable[Job]) -> list[Job]:
        """``jobs`` staggered: configuration ``i``'s ``r``-th fold goes at position ``i +
        STAGGER * r`` (configurations in the given order, longest first; ties: earlier
        folds first). The first configurations finish folds early, which gives the race a
        best and a pooled spread, and each later configuration is tested after its first
        fold, before most of its folds run."""
        rank: dict[Config, int] = {}
        seen: dict[Config, int] = {}
        ranked = []
        for i, job in enumerate(jobs):
            config = config_of(job)
            rank.setdefault(config, len(rank))
            r = seen.get(config, 0)
            seen[config] = r + 1
            ranked.append((rank[config] + STAGGER * r, r, i, job))
        return [job for *_, job in sorted(ranked, key=lambda t: t[:3])]

    def reason(self, config: Config) -> str | None:
        """Why ``config`` is out of the race, or None while it is in."""
        return self.out.get(config)


def start_race(
    spec: RacingSpec | None, history: Any = None, val_sizes: Iterable[int] = ()
) -> Race | None:
    """The race of a run (None with racing off); ``history``: a resumed run's job table,
    whose ok folds count and whose raced-out configurations stay out; ``val_sizes``: the
    validation folds' sizes (an accuracy moves in steps of 1 / size)."""
    if spec is None:
        return None
    sizes = [n for n in val_sizes if n > 0]
    resolution = 1 / max(sizes) if sizes and spec.metric == "val_accuracy" else 0.0
    if history is None or not len(history):
        return Race(spec, resolution=resolution)
    rows = list(with_config(history).itertuples())
    done = [
        (r.config, int(r.fold), float(getattr(r, spec.metric))) for r in rows if r.status == "ok"
    ]
    out = {r.config: str(r.error) for r in rows if r.status == RACED_OUT}
    return Race.resumed(spec, done, out, resolution)


def race_summary(jobs: Any) -> list[dict[str, Any]]:
    """Per raced-out configuration of a job table: folds run (ok) and raced out, the reason,
    and the job-seconds saved: each raced-out fold's expected seconds (the mean of the
    configuration's ok folds) less what it ran before it was stopped."""
    if not len(jobs):
        return []
    out = []
    for config, rows in with_config(jobs).groupby("config", sort=True):
        raced = rows[rows["status"] == RACED_OUT]
        if raced.empty:
            continue
        ok = rows[rows["status"] == "ok"]
        per_fold = float((ok["train_seconds"] + ok["eval_seconds"]).mean()) if len(ok) else 0.0
        spent = float((raced["train_seconds"] + raced["eval_seconds"]).sum())
        out.append(
            {
                "config": config,
                "model": str(rows["model"].iloc[0]),
                "scheduler": str(rows["scheduler"].iloc[0]),
                "folds_run": len(ok),
                "folds_raced_out": len(raced),
                "reason": str(raced["error"].iloc[0]),
                "job_seconds_saved": round(max(per_fold * len(raced) - spent, 0.0), 3),
            }
        )
    return out
