"""A planned run order: the jobs packed onto the workers ahead, handed out by planned start.

The queue hands the next pending job to whichever worker asks first. In longest-first order
(LPT) that schedule is within 4/3 of the shortest, but it can miss it by a whole round: with
more long jobs than workers, every worker starts a long one, and when the medium jobs do not
fit beside the single long jobs, the last of them run after everything else.

When the probe predicts each job's seconds, :func:`planned_order` packs them ahead into one
bin of ``C`` seconds per worker, each bin a worker's timeline and each job's planned start
how full its bin was when it went in: worst-fit decreasing (each job into the emptiest bin,
as longest first hands it to the first free worker), except that the long jobs (the
longest class of lengths, one model's jobs; else the two longest classes) skip ``r``
reserved bins, which the shorter jobs then fill. ``r`` is the fewest that packs, so the
plan stays as close to longest first as it can: a plan that pairs more long jobs on one
worker than it must loses to longest first as soon as job times vary by a few percent (a
pair's sum varies more, and longest first gives the second long jobs to the workers that
finish first). ``C`` is the lower bound if that packs, else bisected towards longest first's
makespan (as MULTIFIT does: Coffman, Garey and Johnson, 1978).

Handed out in order of planned start, the jobs follow the plan when every job takes its
predicted time: whenever workers free up, the jobs planned to start then are the next in
line, whichever worker takes which. The order is kept only where the plan predicts a
makespan at least :data:`GAIN` shorter than longest first's; otherwise the jobs stay as
given. Each packing is O(n log workers); a plan takes a few per bisection of ``C`` and
O(log workers) at the ``C`` chosen.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence

from raynn.kfold.grid import Job
from raynn.kfold.probe import job_seconds

ROUNDS = 8  # bisections of C: within (longest first's makespan - bound) / 256 of the best
GAIN = 0.01  # keep the plan only if it is at least 1% shorter than longest first
CLASS_SPREAD = 0.05  # lengths within 5% of each other are one class (:func:`classes`)


def lpt_makespan(seconds: Sequence[float], slots: int) -> float:
    """Makespan of handing ``seconds`` (in order) to ``slots`` workers, each taking the next
    job as soon as it is free: the queue's own policy on one core group per job."""
    free = [0.0] * max(slots, 1)
    for s in seconds:
        heapq.heappush(free, heapq.heappop(free) + s)
    return max(free)


def pack(
    seconds: Sequence[float],
    slots: int,
    capacity: float,
    reserve: int = 0,
    long: float = math.inf,
) -> list[float] | None:
    """Worst-fit decreasing of ``seconds`` (longest first) into ``slots`` bins of
    ``capacity`` seconds, jobs of ``long`` seconds or more kept out of the last ``reserve``
    bins: each job's planned start (how full its bin was), or None when a job fits no
    bin."""
    slack = capacity * 1e-9  # sums of float seconds: a bin filled exactly still fits
    rooms = [(-capacity, b) for b in range(slots - reserve)]  # a heap: the emptiest first
    reserved = [(-capacity, b) for b in range(slots - reserve, slots)]
    starts = []
    for s in seconds:
        if reserved and s < long - slack:  # the long jobs are placed: open the rest
            rooms += reserved  # a heap array is not sorted: heapify, not merge
            heapq.heapify(rooms)
            reserved = []
        if not rooms or -rooms[0][0] < s - slack:
            return None
        room, b = heapq.heappop(rooms)
        starts.append(capacity + room)
        heapq.heappush(rooms, (room + s, b))
    return starts


def pack_reserving(
    seconds: Sequence[float], slots: int, capacity: float, fewest: bool = True
) -> list[float] | None:
    """:func:`pack` with no reserved bins, or else with the fewest that packs (``fewest``;
    else the most the long jobs leave), the long jobs being the longest class of lengths,
    else the two longest (:func:`classes`); None when nothing packs."""
    if (found := pack(seconds, slots, capacity)) is not None:
        return found
    for long in classes(seconds)[:2]:
        if long <= 0:
            break
        per_bin = max(1, int(capacity // long))
        most = slots - math.ceil(sum(1 for s in seconds if s >= long) / per_bin)
        if most < 1 or (found := pack(seconds, slots, capacity, most, long)) is None:
            continue
        low, high = 0, most  # low fails, high packs: bisect
        while fewest and high - low > 1:
            middle = (low + high) // 2
            starts = pack(seconds, slots, capacity, middle, long)
            if starts is None:
                low = middle
            else:
                high, found = middle, starts
        return found
    return None


def classes(seconds: Sequence[float], spread: float = CLASS_SPREAD) -> list[float]:
    """The shortest of each class of ``seconds`` (longest first): a class is a run of
    lengths within ``spread`` of its longest (one model's folds, a few samples apart)."""
    edges: list[float] = []
    top = math.inf
    for s in seconds:
        if s < top * (1 - spread):
            top = s
            edges.append(s)
        else:
            edges[-1] = s
    return edges


def planned_order(jobs: Sequence[Job], seconds: Callable[[Job], float], slots: int) -> list[Job]:
    """``jobs`` in order of their planned start (module docstring), or as given when the
    plan predicts no makespan :data:`GAIN` shorter than longest first's.

    Args:
        jobs: the jobs in the queue's order (longest first).
        seconds: a job's predicted seconds on the cores it will hold.
        slots: the workers (core groups) that will run them.
    """
    if slots < 2 or len(jobs) <= slots:
        return list(jobs)
    given = [seconds(j) for j in jobs]
    ranked = sorted(range(len(jobs)), key=lambda i: (-given[i], i))
    lengths = [given[i] for i in ranked]
    bound = max(lengths[0], sum(lengths) / slots, 2 * lengths[slots])
    starts = _shortest_packing(lengths, slots, bound, lpt_makespan(given, slots) * (1 - GAIN))
    if starts is None:
        return list(jobs)
    planned = sorted(range(len(ranked)), key=lambda k: (starts[k], k))
    return [jobs[ranked[k]] for k in planned]


def _shortest_packing(
    lengths: Sequence[float], slots: int, low: float, high: float
) -> list[float] | None:
    """The planned starts of :func:`pack_reserving` at the smallest capacity in ``[low,
    high]`` it finds in :data:`ROUNDS` bisections (``low`` itself first), or None if
    ``high`` fails. The bisection asks only whether a capacity packs; the fewest reserved
    bins are looked for at the capacity chosen."""
    if high < low:
        return None
    if pack_reserving(lengths, slots, low, fewest=False) is None:
        if pack_reserving(lengths, slots, high, fewest=False) is None:
            return None
        for _ in range(ROUNDS):
            middle = (low + high) / 2
            if pack_reserving(lengths, slots, middle, fewest=False) is None:
                low = middle
            else:
                high = middle
        low = high
    return pack_reserving(lengths, slots, low)


def run_order(
    jobs: list[Job], speeds: dict[str, dict[int, float]], size: int, slots: Callable[[int], int]
) -> list[Job]:
    """``jobs`` in planned order when they all need the same cores (``Job.cores``, or the
    workers' group ``size``), else as given.

    Args:
        speeds: the probe's samples a second per model and thread count.
        slots: how many jobs of so many cores run at once (:meth:`raynn.kfold.executors.
            base.Executor.slots`).
    """
    needs = {j.cores or size for j in jobs}
    if len(needs) != 1:
        return jobs
    need = needs.pop()
    return planned_order(jobs, lambda j: job_seconds(j, speeds, need), slots(need))
