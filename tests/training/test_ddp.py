"""DistributedDataParallel on CPU: 2 gloo processes train one short epoch, weights identical."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.training.test_loop import tiny_config, tiny_datasets
from training.checkpoint import load_checkpoint
from training.loop import LAST, Trainer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer = Trainer(tiny_config(), tiny_datasets(), out, rank, world)
        trainer.fit(max_epochs=1)
        torch.save(
            {k: v.detach().clone() for k, v in trainer.matcher.state_dict().items()},
            os.path.join(out, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0, msg=k)
    torch.manual_seed(0)
    init = Trainer(tiny_config(), tiny_datasets(), tmp_path / "init").matcher.state_dict()
    moved = [k for k in w0 if w0[k].is_floating_point() and not torch.equal(w0[k], init[k])]
    assert len(moved) > 10  # the ranks trained (not merely both left at the initial weights)
    state = load_checkpoint(tmp_path / LAST)  # only rank 0 writes
    assert state["world_size"] == 2 and state["epoch"] == 1
    for k in w0:
        torch.testing.assert_close(state["model"][k], w0[k], rtol=0, atol=0)
