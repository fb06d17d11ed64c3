"""DistributedDataParallel on CPU: 2 gloo processes train one short epoch, weights identical;
a SIGTERM reaching one rank stops both at the same step."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.training.test_loop import tiny_config, tiny_datasets
from training.checkpoint import load_checkpoint
from training.loop import LAST, Trainer, sigterm_handler


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: the shipped weights: no reconstruction, no adversarial term (decoders and critic unused)
MATCHING_ONLY = {"loss": {"w_recon": 0.0, "w_adv": 0.0}, "data": {"supervision_ratio": 1.0}}


def _config(matching_only: bool):
    return tiny_config(**MATCHING_ONLY) if matching_only else tiny_config()


def _join(rank: int, world: int, port: int, **kwargs) -> None:
    """This process as ``rank`` of a gloo group on ``port`` (as torchrun's env:// sets it)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, **kwargs)


def _save_weights(trainer: Trainer, path: str) -> None:
    """This rank's weights and BatchNorm statistics, as the test reads them back."""
    torch.save({k: v.detach().clone() for k, v in trainer.matcher.state_dict().items()}, path)


def _worker(rank: int, world: int, port: int, out: str, matching_only: bool) -> None:
    _join(rank, world, port)
    try:
        trainer = Trainer(_config(matching_only), tiny_datasets(), out, rank, world)
        trainer.fit(max_epochs=1)
        _save_weights(trainer, os.path.join(out, f"rank{rank}.pt"))
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


#: the step after which a SIGTERM reaches rank 1 only (mid-epoch: 4 steps an epoch)
SIGTERM_STEP = 2


def _stop_worker(rank: int, world: int, port: int, out: str) -> None:
    """Train as ``python -m training train`` does (its SIGTERM handler installed); rank 1 is
    sent SIGTERM after step :data:`SIGTERM_STEP`. Writes how the rank ended."""
    signal.signal(signal.SIGTERM, sigterm_handler)
    _join(rank, world, port, timeout=datetime.timedelta(seconds=30))  # a waiting rank fails
    trainer = Trainer(_config(False), tiny_datasets(), out, rank, world)

    def hook(tr: Trainer) -> None:
        if rank == 1 and tr.global_step == SIGTERM_STEP:
            os.kill(os.getpid(), signal.SIGTERM)

    ended = "finished"
    try:
        trainer.fit(on_step=hook)
    except KeyboardInterrupt:
        ended = "interrupted"
    except RuntimeError as exc:  # gloo: the other rank went away
        ended = f"error: {exc}"
    finally:
        dist.destroy_process_group()
        with open(os.path.join(out, f"ended{rank}.json"), "w") as f:
            json.dump({"ended": ended, "global_step": trainer.global_step}, f)


@pytest.mark.slow
def test_sigterm_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """Under DDP SIGTERM stopped the rank it reached at once, and the others waited in their
    next all-reduce until gloo's timeout (or failed): no checkpoint of the steps done. Now
    the ranks agree after every step: both stop after the same step, rank 0 saves it."""
    ctx = mp.spawn(_stop_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 240
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the ranks did not end within 240 s: one waits for the other")
    ended = [json.loads((tmp_path / f"ended{r}.json").read_text()) for r in (0, 1)]
    assert ended == [{"ended": "interrupted", "global_step": SIGTERM_STEP}] * 2
    state = load_checkpoint(tmp_path / LAST)
    assert (state["epoch"], state["batch_in_epoch"], state["global_step"]) == (0, 2, 2)
    assert state["world_size"] == 2
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]


#: the step after which the ranks agree to stop in the resume test (4 steps an epoch)
STOP_STEP = 2


def _stop_then_resume_worker(rank: int, world: int, port: int, out: str, resume: bool) -> None:
    """Train one epoch of ``_config(False)``: stopped after :data:`STOP_STEP` (rank 1 asks,
    both agree, rank 0 saves), or resumed from that checkpoint to the epoch's end."""
    _join(rank, world, port)
    try:
        trainer = Trainer(_config(False), tiny_datasets(), out, rank, world)

        def hook(tr: Trainer) -> None:
            if not resume and rank == 1 and tr.global_step == STOP_STEP:
                tr.stop_requested = True

        try:
            trainer.fit(max_epochs=1, resume=resume, on_step=hook)
        except KeyboardInterrupt:
            return
        _save_weights(trainer, os.path.join(out, f"resumed{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_ddp_run_stopped_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    """The mid-epoch checkpoint holds rank 0's BatchNorm running statistics (only the epoch's
    end averages the ranks'). That loses nothing: DDP broadcasts rank 0's buffers to every
    rank before each forward pass, so the resumed ranks start the next step where the
    uninterrupted ones do. Stopped after step 2 of 4 and resumed, both ranks end with the
    weights and BatchNorm statistics of a run that was never stopped."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    straight.mkdir()
    stopped.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(straight), False), nprocs=2, join=True)
    mp.spawn(_stop_then_resume_worker, args=(2, _free_port(), str(stopped), False), nprocs=2,
             join=True)  # fmt: skip
    state = load_checkpoint(stopped / LAST)
    assert (state["epoch"], state["batch_in_epoch"], state["world_size"]) == (0, STOP_STEP, 2)
    mp.spawn(_stop_then_resume_worker, args=(2, _free_port(), str(stopped), True), nprocs=2,
             join=True)  # fmt: skip
    want = torch.load(straight / "rank0.pt", weights_only=True)
    buffers = [k for k in want if "running_" in k]
    assert len(buffers) > 10
    for rank in (0, 1):
        got = torch.load(stopped / f"resumed{rank}.pt", weights_only=True)
        assert got.keys() == want.keys()
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6, msg=f"rank {rank}: {k}")
