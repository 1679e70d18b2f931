"""Worker process set-up: heap settings that keep large blocks (raynn.scheduler.cores)."""

from __future__ import annotations

import subprocess
import sys

import pytest

FAULTS = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from raynn.scheduler.cores import keep_large_blocks
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
