"""``data=task``: batches of task instances (``ropebench.data.tasks``) for training and the validation loss.

One instance per row, starting at position 0 as at test time, padded after its end (padding is never a target
and, being after the instance, never seen by it under the causal mask); a batch is as wide as its longest
instance, at most ``train.seq_len``. The loss is on the answer tokens only (every other target is IGNORE), as
Kazemnejad et al. 2023 train: the prompt's tokens are random and would otherwise dominate the gradient.

Layering: imports only torch, ``ropebench.errors`` and ``ropebench.data.tasks``; ``ropebench.data.corpus`` imports
this module for ``data=task`` and makes the corpus of its splits (``task_splits``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ropebench.data import tasks
from ropebench.errors import UserError


def instance_rows(instances: list[tasks.Instance], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (B, W) and targets (B, W), int64: each instance's tokens but the last as inputs, PAD after them;
    a target is the next token where that token is an answer token, IGNORE elsewhere. W: the longest instance's
    tokens - 1 unless given."""
    width = width or max(len(i.tokens) for i in instances) - 1
    inputs, targets = [], []
    for instance in instances:  # plain lists, one tensor at the end: a batch is built every training step
        tokens, pad = instance.tokens, width - len(instance.tokens) + 1
        inputs.append([*tokens[:-1], *[tasks.PAD] * pad])
        targets.append([t if a else tasks.IGNORE for t, a in zip(tokens[1:], instance.answer[1:])]
                       + [tasks.IGNORE] * pad)
    return torch.tensor(inputs, dtype=torch.int64), torch.tensor(targets, dtype=torch.int64)


@dataclass
class TaskSplit:
    """Instances of lengths U(1, L) from one side of the task's split: training instances for ``train``, test
    instances for ``val`` (the validation loss is on instances training never sees). The same ``batch``
    interface as ``ropebench.data.TokenSplit``."""

    task: str
    max_len: int  # L
    test: bool

    def batch(self, batch_size: int, seq_len: int, generator: torch.Generator):
        need = tasks.window(self.task, self.max_len)
        if seq_len < need:  # validate_config refuses this first; kept for direct callers
            raise UserError(f"train.seq_len={seq_len} cannot hold task {self.task} at length {self.max_len}; "
                            f"use train.seq_len={need} or more")
        # One draw from the torch generator seeds the batch's instances, so a checkpoint (which saves that
        # generator) resumes to the same batches.
        rng = random.Random(int(torch.randint(2**62, (1,), generator=generator)))
        lengths = tasks.lengths_on_side(self.task, range(1, self.max_len + 1), self.test)
        return instance_rows(tasks.sample(self.task, lengths, batch_size, rng, self.test))

    def documents(self, min_len: int = 0):
        raise UserError("data=task has no text documents to measure perplexity on; measure it with "
                        "`ropebench eval-task RUN_DIR` instead of eval-length")


def task_splits(cfg) -> tuple[TaskSplit, TaskSplit]:
    """The ``data=task`` corpus's (train, held-out) splits: nothing to read or cache, instances are generated from
    the torch generator. Validation and test are both the held-out side (``ropebench.data.corpus`` makes the
    corpus of them)."""
    task, length = tasks.get_task(cfg.task).name, tasks.train_len(cfg)
    return TaskSplit(task, length, test=False), TaskSplit(task, length, test=True)
