"""``raynn submit``: send a spec to a Ray cluster's job server and (optionally) follow it.

The working directory is uploaded with the job (Ray's ``working_dir``; files ignored by
``.gitignore`` stay behind), the entrypoint is ``raynn run SPEC --no-progress``, and results
land in the run directory on the node that runs the driver (the head node).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from raynn.errors import RaynnError
from raynn.spec import load_spec


def submit(
    spec_path: str,
    address: str | None = None,
    *,
    wait: bool = False,
    working_dir: str = ".",
    run_args: tuple[str, ...] = (),
) -> tuple[str, str | None]:
    """Submit ``spec_path`` as a Ray job; returns ``(job_id, final status or None)``."""
    load_spec(spec_path)  # a malformed spec fails here, before anything is sent
    root = Path(working_dir).resolve()
    try:
        rel = Path(spec_path).resolve().relative_to(root)
    except ValueError:
        raise RaynnError(
            f"spec {spec_path} is outside the working directory {root}; it travels with the "
            "job, so put it under the working directory (or pass --working-dir)"
        ) from None
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_ADDRESS") or "http://127.0.0.1:8265"
    try:
        client = JobSubmissionClient(address)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError from the SDK
        raise RaynnError(
            f"cannot reach the Ray job server at {address}: {exc}; start the cluster "
            "(cluster/local.sh up) and export what 'cluster/local.sh env' prints"
        ) from None
    env = {k: os.environ[k] for k in ("RAYNN_DATA",) if k in os.environ}
    entrypoint = " ".join(
        ["raynn", "run", shlex.quote(rel.as_posix()), "--no-progress", *map(shlex.quote, run_args)]
    )
    runtime_env: dict[str, Any] = {"working_dir": str(root), "env_vars": env}
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
    print(f"submitted {job_id}: {entrypoint}", flush=True)
    if not wait:
        return job_id, None

    async def follow() -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    asyncio.run(follow())
    return job_id, str(client.get_job_status(job_id))
