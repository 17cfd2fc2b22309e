"""Data-parallel training (DDP) for one run: ``torchrun --nproc_per_node N -m ropebench train ...``.

torchrun starts N copies of the whole command; each reads its place from the environment torchrun sets
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT). Without those variables everything here is a no-op with
world size 1, so ``train`` needs no separate code path for a single process.

The rules that make an N-process run equal a single-process run of the same ``train.batch_size`` (global):

* every rank draws the *global* batch from the same seeded generator and keeps its own contiguous slice of
  rows, so the union of the rank batches is exactly the single-process batch and the data generator stays in
  lock-step on all ranks (one generator state in the checkpoint serves every rank on resume);
* DDP averages gradients across ranks, and every rank holds the same number of tokens, so the averaged
  gradient is the single-process gradient (up to float reassociation);
* logged losses are means over ranks (``all_reduce_mean``), never rank 0's shard alone;
* only rank 0 writes: config, metrics, checkpoints, weights, wandb, evaluation.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ropebench.errors import UserError

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_rank0(self) -> bool:
        return self.rank == 0

    def shard(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This rank's contiguous slice of rows of each global-batch tensor (rank r: rows r*b .. (r+1)*b)."""
        if not self.enabled:
            return tensors
        rows = tensors[0].shape[0] // self.world_size
        return tuple(t[self.rank * rows : (self.rank + 1) * rows] for t in tensors)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}='{raw}' must be an integer (set by torchrun)") from None


def _adopt_submitit_tasks() -> None:
    """A submitit job with several tasks (``hydra.launcher.tasks_per_node=N``, SLURM or local) runs N copies of the
    job, like torchrun but with SLURM's variables: translate them to the torch ones (MASTER_ADDR, RANK, ...)."""
    if "RANK" in os.environ or not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    import submitit

    if submitit.JobEnvironment().num_tasks > 1:
        # CUDA_VISIBLE_DEVICES stays as SLURM set it: setup() picks the GPU by LOCAL_RANK.
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def from_env() -> Dist:
    """Rank, world size and local rank from torchrun's environment (1 process when they are absent)."""
    _adopt_submitit_tasks()
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"RANK={rank} / WORLD_SIZE={world} are inconsistent; launch with torchrun")
    return Dist(rank=rank, world_size=world, local_rank=_env_int("LOCAL_RANK", 0))


def check_batch(batch_size: int, dist: Dist) -> int:
    """Rows per rank. Checked before any collective so every rank fails alike instead of one hanging."""
    if batch_size % dist.world_size:
        multiples = ", ".join(str(dist.world_size * k) for k in range(1, 4))
        raise UserError(f"train.batch_size={batch_size} is not divisible by the world size {dist.world_size} "
                        f"(torchrun --nproc_per_node x nodes); use a multiple of {dist.world_size}: {multiples}, ...")
    return batch_size // dist.world_size


def setup(batch_size: int, device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun prepared (gloo on the CPU, nccl on CUDA); returns this rank's device.

    Idempotent: a second call (e.g. a resumed run in the same process) reuses the initialized group.
    """
    import torch.distributed as td

    dist = from_env()
    check_batch(batch_size, dist)
    if not dist.enabled:
        return dist, device
    if device.type == "cuda":
        # One GPU per rank: LOCAL_RANK picks it, whatever index train.device named.
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if not td.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        td.init_process_group(backend=backend, init_method="env://", rank=dist.rank, world_size=dist.world_size)
    return dist, device


def shutdown() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def _initialized() -> bool:
    import torch.distributed as td

    return td.is_available() and td.is_initialized()


def barrier() -> None:
    if _initialized():
        import torch.distributed as td

        td.barrier()


def all_reduce_mean(value: float | torch.Tensor) -> float:
    """Mean of a scalar over all ranks (the value itself in a single process)."""
    tensor = value.detach().float().reshape(1) if torch.is_tensor(value) else torch.tensor([float(value)])
    if not _initialized():
        return float(tensor.item())
    import torch.distributed as td

    # gloo reduces CPU tensors; nccl needs them on this rank's GPU.
    if td.get_backend() == "nccl":
        tensor = tensor.to(torch.device("cuda", torch.cuda.current_device()))
    else:
        tensor = tensor.cpu()
    td.all_reduce(tensor, op=td.ReduceOp.SUM)
    return float(tensor.item()) / td.get_world_size()


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on one: a stop request (SIGINT) must stop all ranks at the same step,
    or the others wait forever in the next gradient all-reduce."""
    if not _initialized():
        return flag
    return all_reduce_mean(1.0 if flag else 0.0) > 0


def broadcast_str(text: str) -> str:
    """Rank 0's string on every rank."""
    if not _initialized():
        return text
    import torch.distributed as td

    holder = [text]
    td.broadcast_object_list(holder, src=0)
    return holder[0]


def check_same_run_dir(run_dir: Path, dist: Dist) -> None:
    """All ranks must write one run. Hydra's default run dir has a timestamp that can differ between ranks."""
    if not dist.enabled:
        return
    ours = str(Path(run_dir).resolve())
    theirs = broadcast_str(ours)
    disagree = all_reduce_mean(0.0 if theirs == ours else 1.0) > 0
    if disagree:
        raise UserError(f"the {dist.world_size} ranks got different run directories (rank 0: '{theirs}'); "
                        f"under torchrun pass hydra.run.dir=DIR")


@contextmanager
def rank0_first(dist: Dist):
    """Rank 0 runs the body first (e.g. tokenizing into the shared cache), then the others: no build race."""
    if dist.enabled and not dist.is_rank0:
        barrier()
    yield
    if dist.enabled and dist.is_rank0:
        barrier()


def wrap(model: torch.nn.Module, dist: Dist, device: torch.device) -> torch.nn.Module:
    """DDP around the model for the training step; save and evaluate the unwrapped ``model`` itself."""
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def require_run_dir(overrides: list[str]) -> None:
    """For the CLI, before Hydra starts: under torchrun every rank must be told the same run directory."""
    dist = from_env()
    if dist.enabled and not any(o.split("=", 1)[0].lstrip("+") in ("hydra.run.dir", "resume") for o in overrides):
        raise UserError(f"torchrun started {dist.world_size} ranks but no hydra.run.dir=DIR was given; every rank "
                        f"must write the same run directory (the default one is time-stamped per rank)")


def quiet(*args, **kwargs) -> None:
    """The ``log`` of ranks other than 0: one copy of every message is enough."""


class NullLogger:
    """Stands in for RunLogger on ranks other than 0, which must not write metrics or start wandb runs."""

    def log(self, record: dict) -> None:
        pass

    def log_eval_curve(self, rows: list[dict], name: str = "eval_length") -> None:
        pass

    def close(self) -> None:
        pass
