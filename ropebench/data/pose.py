"""PoSE batches (Zhu et al. 2023, "PoSE: Efficient Context Window Extension of LLMs via Positional Skip-wise
Training", arXiv 2309.10400): train with the original window of T tokens, but give them position ids that cover
a longer target length L_t, so that every relative distance up to L_t is seen at the cost of T-token steps.

For each example, independently:

* the window of T tokens is cut into N contiguous chunks (``chunks``, 2 by default as in the paper) whose
  lengths are drawn uniformly (N - 1 distinct cut points in 1 .. T-1);
* chunk i gets a skipping bias u_i, drawn uniformly and non-decreasing: u_0 = 0, u_i ~ U(u_{i-1}, L_t - T); its
  position ids are contiguous, from u_i plus the lengths of the chunks before it;
* its tokens are the text at those positions of a stretch of L_t + 1 tokens of one training window (the
  paper's choice v_i = u_i: a chunk is real text at its true offset), and every token's target is the token
  that truly follows it -- so the model learns real next-token prediction at long relative distances.

The last position is at most L_t - 1, so relative distances range over 0 .. L_t - 1.
"""

from __future__ import annotations

import numpy as np
import torch

from ropebench.errors import UserError


def pose_positions(seq_len: int, target_len: int, chunks: int, generator: torch.Generator) -> torch.Tensor:
    """One example's position ids (seq_len,): ``chunks`` contiguous runs, skipping forward, all < target_len."""
    n = min(chunks, seq_len)
    cuts = (torch.randperm(seq_len - 1, generator=generator)[: n - 1] + 1).sort().values if n > 1 else torch.empty(0)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), cuts.long()])
    lengths = torch.diff(torch.cat([starts, torch.tensor([seq_len])]))
    room = target_len - seq_len  # the total skip available
    skips = [0]
    for _ in range(n - 1):
        skips.append(skips[-1] + int(torch.randint(room - skips[-1] + 1, (1,), generator=generator)))
    bias = torch.repeat_interleave(torch.tensor(skips, dtype=torch.long), lengths)
    return torch.arange(seq_len) + bias


def pose_batch(tokens: np.ndarray, batch_size: int, seq_len: int, target_len: int, chunks: int,
               generator: torch.Generator):
    """Inputs (B, T), next-token targets (B, T) and position ids (B, T), int64 on the CPU."""
    high = tokens.shape[0] - target_len - 1
    if high <= 0:
        raise UserError(f"train.pose_target_len={target_len} is longer than the training data "
                        f"({tokens.shape[0]} tokens)")
    starts = torch.randint(high, (batch_size,), generator=generator).tolist()
    pos = torch.stack([pose_positions(seq_len, target_len, chunks, generator) for _ in range(batch_size)])
    index = torch.tensor(starts, dtype=torch.long)[:, None] + pos
    flat = torch.from_numpy(tokens[np.concatenate([index.numpy().ravel(), index.numpy().ravel() + 1])]
                            .astype(np.int64))
    x, y = flat[: index.numel()].view_as(index), flat[index.numel():].view_as(index)
    return x, y, pos
