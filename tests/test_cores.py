"""Worker process set-up (raynn.placement.cores): pinning every thread, pools, the heap."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

FAULTS = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from raynn.placement.cores import keep_large_blocks
    assert keep_large_blocks()
def cycle():
    a = np.ones(10 << 20, dtype=np.float32)  # 40 MiB: above glibc's own largest threshold
    del a
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_large_blocks_are_reused_instead_of_faulted_in_again():
    default, kept = _faults("default"), _faults("keep")
    # by default every 40 MiB block is mapped afresh and faulted in again on every cycle
    assert default > 20 * 100
    assert kept < default / 10, (kept, default)


PIN = """
import os, sys
import torch
from raynn.placement.cores import pin_threads, thread_masks
cpu = min(os.sched_getaffinity(0))
torch.set_num_threads(2)
x = torch.randn(256, 256)
for _ in range(20):
    x @ x  # torch starts its OpenMP pool under the process's two-core mask
os.sched_setaffinity(0, {cpu})  # binds the calling thread only
after_one = thread_masks()
pin_threads([cpu])
print(repr((cpu, after_one, thread_masks())))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_pinning_binds_every_thread_not_only_the_caller():
    out = subprocess.run(
        [sys.executable, "-c", PIN], capture_output=True, text=True, check=True
    ).stdout
    cpu, after_one, after_all = ast.literal_eval(out.strip())
    assert len(after_one) > 1  # the pool's threads exist
    assert any(mask != [cpu] for mask in after_one.values())  # and kept their old mask
    assert set(after_all) >= set(after_one) and all(m == [cpu] for m in after_all.values())


# A thread that starts a thread while pin_threads runs: the new one inherits the old mask of
# its starter if the starter is not pinned yet. The test makes that happen for certain: the
# first thread pin_threads binds (the main one) waits, at that call, until the starter has
# started its thread; the starter itself is bound later in the same pass.
SPAWN = """
import os, threading
from raynn.placement import cores
cpus = sorted(os.sched_getaffinity(0))
go, started, end = threading.Event(), threading.Event(), threading.Event()

def starter():
    go.wait()
    threading.Thread(target=end.wait).start()  # born with this thread's (old) mask
    started.set()
    end.wait()

threading.Thread(target=starter).start()
real = os.sched_setaffinity

def set_affinity(tid, mask):  # pin_threads' calls, seen from outside
    if not go.is_set():  # the threads are listed; the starter is not bound yet
        go.set()
        started.wait()
    real(tid, mask)

os.sched_setaffinity = set_affinity
cores.pin_threads(cpus[:1])
os.sched_setaffinity = real
masks = cores.thread_masks()
end.set()
print(repr((cpus[:1], masks)))
"""


@pytest.mark.timeout(120)
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_pinning_binds_threads_started_while_it_runs():
    out = subprocess.run(
        [sys.executable, "-c", SPAWN], capture_output=True, text=True, check=True
    ).stdout
    cpus, masks = ast.literal_eval(out.strip())
    assert len(masks) == 3  # main, the starter and the thread it started meanwhile
    assert all(mask == cpus for mask in masks.values()), masks


def test_the_pools_are_capped_and_reported():
    code = (
        "import os\n"
        "from raynn.placement.cores import affinity_in_force, pin_current_process, thread_pools\n"
        "cpu = min(os.sched_getaffinity(0))\n"
        "print(repr((pin_current_process([cpu]), thread_pools(), affinity_in_force() == [cpu])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    threads, pools, pinned = ast.literal_eval(out.strip())
    assert threads == 1 and pinned
    assert any(p.startswith("openmp/") for p in pools) and all(p.endswith("=1") for p in pools)
