"""The run layer: config schemas, the run directory, checkpoints, the trainer, distributed setup, tracking."""
