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


#: the shipped weights: no reconstruction, no adversarial term (decoders and critic unused)
MATCHING_ONLY = {"loss": {"w_recon": 0.0, "w_adv": 0.0}, "data": {"supervision_ratio": 1.0}}


def _config(matching_only: bool):
    return tiny_config(**MATCHING_ONLY) if matching_only else tiny_config()


def _worker(rank: int, world: int, port: int, out: str, matching_only: bool) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer = Trainer(_config(matching_only), tiny_datasets(), out, rank, world)
        trainer.fit(max_epochs=1)
        torch.save(
            {k: v.detach().clone() for k, v in trainer.matcher.state_dict().items()},
            os.path.join(out, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("matching_only", [False, True], ids=["all-terms", "matching-only"])
def test_two_gloo_ranks_end_with_identical_weights(tmp_path, matching_only):
    """Also with the shipped weights, where the decoders get no gradient (unused in DDP)."""
    args = (2, _free_port(), str(tmp_path), matching_only)
    mp.spawn(_worker, args=args, nprocs=2, join=True)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0, msg=k)
    torch.manual_seed(0)
    init = Trainer(_config(matching_only), tiny_datasets(), tmp_path / "init").matcher.state_dict()
    moved = [k for k in w0 if w0[k].is_floating_point() and not torch.equal(w0[k], init[k])]
    assert len(moved) > 10  # the ranks trained (not merely both left at the initial weights)
    if matching_only:  # the skipped decoders were never updated
        assert not [k for k in moved if ".decoder." in k and "running" not in k]
    state = load_checkpoint(tmp_path / LAST)  # only rank 0 writes
    assert state["world_size"] == 2 and state["epoch"] == 1
    for k in w0:
        torch.testing.assert_close(state["model"][k], w0[k], rtol=0, atol=0)
