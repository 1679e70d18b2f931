"""The worker group (raynn.placement.group): replaced per the policy, stuck ones killed, a
dead node's slot moved, drained cleanly; with forked processes and an in-memory backend.

Every wait here is on an event (a worker's message, a closed pipe, a process's exit), bounded
only by the test's own timeout.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import psutil
import pytest

from raynn.errors import RaynnError
from raynn.placement.backends import ForkBackend, RayActorBackend
from raynn.placement.group import (
    Backend,
    Died,
    Event,
    Exited,
    Failed,
    Member,
    NotReady,
    WorkerGroup,
)
from raynn.placement.monitor import ActorSamplers, NodeSamplers
from raynn.placement.nodes import Node, NodeGroup
from raynn.placement.processes import Zygote, recv, send
from raynn.placement.restarts import GiveUp, Raise, Replace, RestartPolicy, Retry

TARGET = "tests.test_worker_group:obedient_worker"


def obedient_worker(conn, payload, worker_id):  # noqa: ANN001 - a zygote target
    """Say hello (its id and pid), then do as told: ``exit`` ends it; it waits otherwise (a
    stuck worker, as far as the driver can tell)."""
    send(conn, ("hello", worker_id, os.getpid()))
    while recv(conn) != "exit":
        pass


class Policy(RestartPolicy):
    """A restart policy that keeps the decisions it made."""

    def __init__(self, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        self.decisions: list = []

    def on_lost_worker(self, slot, **kwargs):  # noqa: ANN001, ANN003
        decision = super().on_lost_worker(slot, **kwargs)
        self.decisions.append(decision)
        return decision


@pytest.fixture(scope="module")
def zygote():
    z = Zygote(preload=[])
    z.load(None)
    yield z
    z.close()


def _slots(count: int, node_id: str = "here") -> list[NodeGroup]:
    node = Node(node_id, node_id, list(range(count)), node_id)
    return [(node, g) for g in node.groups(1)]


class Forked:
    """A group of forked obedient workers and what it told its client."""

    def __init__(self, zygote: Zygote, policy: RestartPolicy, **options) -> None:  # noqa: ANN003
        self.hello: dict[str, int] = {}  # worker id -> pid
        self.lost: list[str] = []
        self.group = WorkerGroup(
            ForkBackend(lambda worker_id, slot: zygote.fork(TARGET, worker_id)),
            policy,
            on_lost=lambda member: self.lost.append(member.worker_id) or True,
            on_message=self._message,
            **options,
        )

    def _message(self, member: Member, payload: tuple) -> None:
        kind, worker_id, pid = payload
        assert (kind, worker_id, pid) == ("hello", member.worker_id, member.pid)
        self.hello[worker_id] = pid

    def until(self, done: Callable[[], bool]) -> None:
        """Handle the group's events until ``done()``: each poll wakes on a message or an end."""
        while not done():
            self.group.poll(5.0)


def _exited(pids: Sequence[int]) -> None:
    """Wait until every one of ``pids`` has exited (psutil waits on the processes)."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    while procs:
        _, procs = psutil.wait_procs(procs, timeout=5)
        procs = [p for p in procs if p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.timeout(60)
def test_a_dead_worker_is_replaced_on_its_slot_while_the_budget_lasts(zygote):
    policy = Policy(budget=1)
    run = Forked(zygote, policy)
    slots = _slots(2)
    run.group.start(slots, together=True)  # forked workers are up at once
    run.until(lambda: len(run.hello) == 2)
    run.group.kill("w0")
    run.until(lambda: "w2" in run.hello)  # its replacement said hello
    assert run.lost == ["w0"] and policy.decisions == [Replace(slots[0])]
    assert run.group.members["w2"].slot == slots[0] and run.group.restarts == 1
    run.group.kill("w1")  # the budget is spent: no replacement
    run.until(lambda: "w1" not in run.group.members)
    assert policy.decisions[1] == GiveUp("the budget of 1 replacement(s) is spent")
    assert set(run.group.members) == {"w2"} and run.group.started == 3
    last = run.group.members["w2"]  # told to stop, it retires: no death
    last.retired = True
    send(last.conn, "exit")
    run.until(lambda: not run.group.members)
    assert run.lost == ["w0", "w1"] and run.group.idle == [slots[0]]
    assert run.group.drain() == {}
    _exited(list(run.hello.values()))


@pytest.mark.timeout(60)
def test_a_stuck_worker_is_killed_and_its_work_handed_back(zygote, caplog):
    stuck = ["w0"]
    line = "job j0: no progress for 12 s; killing its worker w0, the job runs again"
    run = Forked(zygote, Policy(budget=0), stuck=lambda: [(w, line) for w in stuck])
    run.group.start(_slots(2))
    run.until(lambda: len(run.hello) == 2)
    with caplog.at_level(logging.WARNING, logger="raynn.placement.group"):
        assert run.group.kill_stuck() == ["w0"]
    assert [r.getMessage() for r in caplog.records] == [line]
    run.until(lambda: "w0" not in run.group.members)
    _exited([run.hello["w0"]])
    assert run.lost == ["w0"] and set(run.group.members) == {"w1"}
    assert run.group.policy.decisions == [GiveUp("the budget of 0 replacement(s) is spent")]
    assert run.group.kill_stuck() == []  # w0 is gone: nothing to kill again
    run.group.drain()
    _exited(list(run.hello.values()))


@pytest.mark.timeout(60)
def test_drain_kills_every_worker_returns_the_samples_and_starts_none_after(zygote):
    run = Forked(zygote, Policy(budget=5), samplers=NodeSamplers(0.05, only=["here"]))
    slots = _slots(2)
    run.group.sample([slots[0][0]])
    run.group.start(slots)
    run.until(lambda: len(run.hello) == 2)
    run.group.watch()  # the workers' pids are counted as the run's own
    rows = run.group.drain()
    assert list(rows) == ["here"] and rows["here"]  # a last sample is taken at stop
    assert {r["node"] for r in rows["here"]} == {"here"}
    assert all(r["own_percent"] is not None for r in rows["here"])
    _exited(list(run.hello.values()))
    assert not run.group.members and not run.lost  # drained, not dead
    assert run.group.start(slots) == [] and run.group.started == 2  # closed for good


@pytest.mark.timeout(60)
def test_a_ray_runs_own_node_is_sampled_in_process_with_no_actor():
    # the node "here" is the driver's: sampled by a thread here, so Ray starts no actor
    samplers = ActorSamplers(0.05, here="here-id")
    samplers.add(Node("here-id", "here", [0], "host", None))
    samplers.watch("here", os.getpid())
    rows = samplers.stop()
    assert samplers._actors == {}
    assert list(rows) == ["here"] and rows["here"]  # a last sample is taken at stop
    assert {r["node"] for r in rows["here"]} == {"here"}
    assert all(r["own_percent"] is not None for r in rows["here"])


class Memory(Backend):
    """Workers that are only records: the test says when they die (an in-memory backend)."""

    def __init__(self, dead_nodes: set[str] = frozenset()) -> None:
        self.events: list[Event] = []
        self.log: list[tuple[str, str]] = []
        self.dead_nodes = set(dead_nodes)

    def create(self, worker_id: str, slot: NodeGroup) -> Member:
        self.log.append(("create", worker_id))
        return Member(worker_id, slot, pid=1000 + len(self.log))

    def ready(self, members: Sequence[Member], timeout: float, strict: bool) -> None:
        self.log.append(("ready", ",".join(m.worker_id for m in members)))

    def launch(self, member: Member) -> None:
        self.log.append(("launch", member.worker_id))

    def poll(self, members: Sequence[Member], timeout: float) -> list[Event]:
        events, self.events = self.events, []
        return events

    def kill(self, member: Member) -> None:
        self.events.append(Died(member, "killed"))

    def node_alive(self, node: Node) -> bool:
        return node.node_id not in self.dead_nodes


@pytest.mark.timeout(30)
def test_workers_started_together_are_let_go_only_once_all_are_up():
    backend = Memory()
    group = WorkerGroup(backend, RestartPolicy())
    group.start(_slots(3))
    assert backend.log == [
        ("create", "w0"),
        ("create", "w1"),
        ("create", "w2"),
        ("ready", "w0,w1,w2"),
        ("launch", "w0"),
        ("launch", "w1"),
        ("launch", "w2"),
    ]


@pytest.mark.timeout(30)
def test_a_dead_nodes_slot_moves_to_a_live_node_and_none_left_raises():
    gone, live = _slots(1, "gone"), _slots(1, "live")
    backend = Memory(dead_nodes={"gone"})
    stranded = "every node that could run the remaining jobs is gone"
    group = WorkerGroup(backend, Policy(budget=9, stranded=stranded))
    group.idle = list(live)  # a spare slot on a live node
    group.start(gone)
    group.kill("w0")
    group.poll(0)
    assert group.policy.decisions == [Replace(live[0])] and group.idle == []
    assert group.members["w1"].slot == live[0] and group.dead_nodes == {"gone"}
    backend.dead_nodes.add("live")  # now that node goes too: nothing left to run the work
    group.kill("w1")
    with pytest.raises(RaynnError, match=stranded):
        group.poll(0)
    assert isinstance(group.policy.decisions[-1], Raise) and not group.members


@pytest.mark.timeout(30)
def test_a_workers_own_error_stops_the_run_and_no_work_left_replaces_nothing():
    backend = Memory()
    group = WorkerGroup(backend, Policy(budget=9), on_lost=lambda member: False)
    group.start(_slots(2))
    group.kill("w0")
    group.poll(0)  # no work is left: no replacement
    assert group.policy.decisions == [GiveUp("no work left")] and set(group.members) == {"w1"}
    backend.events.append(Failed(group.members["w1"], RaynnError("cannot write the run")))
    with pytest.raises(RaynnError, match="cannot write the run"):
        group.poll(0)


@pytest.mark.timeout(30)
def test_a_client_may_take_results_and_errors_itself():
    # as a HOGWILD round would: a worker's result is kept, its error is a failure to record
    backend, seen = Memory(), []
    group = WorkerGroup(
        backend,
        RestartPolicy(),
        on_exit=lambda member, value: seen.append((member.worker_id, value)),
        on_failed=lambda member, error: seen.append((member.worker_id, str(error))),
    )
    group.start(_slots(2))
    backend.events += [
        Exited(group.members["w0"], {"steps": 7}),
        Failed(group.members["w1"], ValueError("nan")),
    ]
    group.poll(0)
    assert seen == [("w0", {"steps": 7}), ("w1", "nan")] and not group.members
    assert group.idle == [_slots(2)[0]]  # only a retired worker's slot is free again


@pytest.mark.timeout(30)
def test_created_workers_wait_for_launch_and_a_death_carries_its_reason():
    backend, lost = Memory(), []
    group = WorkerGroup(backend, RestartPolicy(), on_lost=lambda m: lost.append(m.death))
    members = group.create(_slots(2))
    assert [e for e, _ in backend.log] == ["create", "create"]  # nothing let go yet
    group.launch(members)
    assert backend.log[2:] == [("ready", "w0,w1"), ("launch", "w0"), ("launch", "w1")]
    backend.events.append(Died(members[1], "its node was lost"))
    group.poll(0)
    assert lost == ["its node was lost"]


class Sulky:
    """A Ray actor whose start-up fails when told to."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def pid(self) -> int:
        return os.getpid()

    def ready(self) -> str:
        if self.fail:
            raise RaynnError("cannot attach the segment")
        return "up"

    def run(self) -> str:
        return "done"


@pytest.mark.timeout(120)
def test_a_ray_worker_that_does_not_come_up_is_named_and_none_is_let_go(ray_local):
    cls = ray_local.remote(num_cpus=0)(Sulky)
    backend = RayActorBackend(
        lambda worker_id, slot: cls.remote(worker_id == "w1"), run=lambda m: m.actor.run.remote()
    )
    group = WorkerGroup(backend, RestartPolicy())
    members = group.create(_slots(2))
    with pytest.raises(NotReady) as caught:
        group.launch(members, strict=True)
    assert caught.value.member is members[1]
    assert str(caught.value) == "worker w1 did not come up: RaynnError: cannot attach the segment"
    assert members[0].info == "up" and [m.ref for m in members] == [None, None]  # none let go
    group.launch(members[:1], together=False)
    ended = []
    group.on_exit = lambda member, value: ended.append((member.worker_id, value))
    while not ended:
        group.poll(5)
    assert ended == [("w0", "done")]
    group.drain()


@pytest.mark.timeout(30)
def test_the_policy_answers_with_typed_decisions():
    jobs = RestartPolicy.for_jobs(jobs=1, max_attempts=2, stranded="stranded")
    assert jobs.on_lost_work(1) == Retry()
    assert jobs.on_lost_work(2) == GiveUp("attempt 2 of 2 (max_attempts reached)")
    assert jobs.on_lost_worker("slot", work_left=False) == GiveUp("no work left")
    assert jobs.on_lost_worker(None, running=True) == GiveUp(
        "no live node has a slot for a replacement"
    )
    raised = jobs.on_lost_worker(None, running=False)
    assert isinstance(raised, Raise) and str(raised.error) == "stranded"
    assert [jobs.on_lost_worker("slot") for _ in range(3)] == [
        Replace("slot"),
        Replace("slot"),
        GiveUp("the budget of 2 replacement(s) is spent"),
    ]
    pool = RestartPolicy.unbounded(max_attempts=3)
    assert all(pool.on_lost_worker("s") == Replace("s") for _ in range(100))
    rounds = RestartPolicy.for_rounds(max_restarts=1)
    assert rounds.on_round_end(restartable=False) == GiveUp("the worker's training failed")
    assert (rounds.on_round_end(), rounds.on_round_end()) == (
        Retry(),
        GiveUp("after 1 restart(s)"),
    )
    # the bools its older callers read say the same
    assert (jobs.retry(1), jobs.retry(2), rounds.may_replace()) == (True, False, False)
