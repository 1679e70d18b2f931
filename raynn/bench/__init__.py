"""The benchmark harness: the same work serially, in parallel and on peer tools, in one run."""
