"""The K-fold machinery: core groups, the job queue, workers, executors, monitoring."""
