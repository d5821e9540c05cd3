"""NCCL plumbing for the GPU weight-sync transport (trainer rank 0 + vLLM workers).

Uses vLLM's stateless process group and PyNccl communicator so the group can span
processes that are not part of one torch.distributed world (the trainer's DDP
group and each vLLM engine have their own).
"""

from __future__ import annotations


def init_trainer_group(host: str, port: int, world_size: int, device: int):
    """The trainer's rank 0 is rank 0 of the group (it hosts the rendezvous store)."""
    return init_group_member(host, port, 0, world_size, device)


def worker_join_group(worker, host: str, port: int, rank: int, world_size: int) -> bool:
    """Runs inside a vLLM worker (collective_rpc): join as `rank`."""
    import torch

    worker._raylign_group = init_group_member(host, port, rank, world_size, torch.cuda.current_device())
    return True


def init_group_member(host: str, port: int, rank: int, world_size: int, device: int):
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    group = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size)
    return PyNcclCommunicator(group, device=device)


def worker_receive(worker, metas: list[tuple[str, str, tuple]]) -> int:
    """Runs inside a vLLM worker: receive each broadcast tensor and load it."""
    import torch

    model = worker.model_runner.model
    for name, dtype, shape in metas:
        tensor = torch.empty(shape, dtype=getattr(torch, dtype.replace("torch.", "")), device="cuda")
        worker._raylign_group.broadcast(tensor, src=0, stream=torch.cuda.current_stream())
        model.load_weights(weights=[(name, tensor)])
    torch.cuda.synchronize()
    return len(metas)
