"""The K-fold kind: a spec's job list (models x schedulers x folds), the central queue, the
worker loop, the pure ``train_job``, the executors (serial, local, ray), rows and reports.

The entry is :func:`raynn.kfold.runner.run` (in the table of kinds, :mod:`raynn.kinds`)."""
