"""The pure core: the registry mechanism and the built-ins, data, models, optimizers and
schedules, losses, the nn helpers (build a seeded model, evaluate), checkpoints, folds.

Nothing here imports Ray, the run machinery or a kind of run."""
