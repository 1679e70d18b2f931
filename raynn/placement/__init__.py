"""Placement on Ray: the one session (embedded Ray or a cluster), nodes, core groups
(pinning every thread), the CPU topology, forked worker processes, and monitoring."""
