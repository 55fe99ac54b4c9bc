"""The process group a training run lives in: single process or `torchrun --nproc_per_node N` (gloo on CPU, NCCL on
CUDA), and the few collectives the loop needs. Kept apart from the loop so that every cross-rank agreement (stop,
time budget, logged means, the run folder's name) goes through one small, readable place; with one process each
helper is a no-op."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from store.errors import UserError


@dataclass
class DistInfo:
    world: int
    rank: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device visible to torch")
        dev = torch.device("cuda", local if world > 1 else (torch.device(device).index or 0))
        torch.cuda.set_device(dev)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise UserError(f"--device must be cpu or cuda, not {device!r}")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(world, rank, local, dev)


def teardown(di: DistInfo) -> None:
    if di.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def barrier(di: DistInfo) -> None:
    if di.world > 1:
        dist.barrier()


def broadcast(di: DistInfo, obj: Any) -> Any:
    if di.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _reduce_device(di: DistInfo) -> torch.device | str:
    return di.device if di.device.type == "cuda" else "cpu"


def mean_across(di: DistInfo, values: dict[str, float]) -> dict[str, float]:
    if di.world == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=_reduce_device(di))
    dist.all_reduce(t)
    return {k: float(v) / di.world for k, v in zip(keys, t.tolist())}


def any_across(di: DistInfo, flag: bool) -> bool:
    if di.world == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=_reduce_device(di))
    dist.all_reduce(t)
    return bool(t.item())
