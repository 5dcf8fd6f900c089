import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from clearmamba.training import TrainConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, port: int, out: str) -> None:
    from clearmamba.training.run import RunState
    from tests.training.conftest import make_exams, tiny_model

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
        CLEARMAMBA_DDP_BACKEND="gloo",
    )  # fmt: skip
    torch.set_num_threads(1)
    from clearmamba.training import fit
    from clearmamba.training.distributed import DistributedContext
    from clearmamba.uncertainty import create_method

    assert DistributedContext.from_environment().world_size == 2
    cfg = TrainConfig(epochs=1, batch_size=2, lr=1e-2, warmup_epochs=0, patience=0, seed=3)
    result = fit(create_method("evidential"), lambda: tiny_model(seed=rank), make_exams(8), cfg,
                 val=make_exams(2, seed=1, name="val"), callbacks=[RunState(Path(out), {})])  # fmt: skip
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, f"{out}/rank{rank}.safetensors")
    torch.distributed.destroy_process_group()


def test_two_process_gloo_ddp_keeps_replicas_identical(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    weights = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    # DDP broadcasts rank 0's initial weights and averages gradients: both replicas end identical, even though
    # rank 1 started from different random weights and each rank saw a different half of the exams
    from tests.training.conftest import tiny_model

    start = tiny_model(seed=0).state_dict()
    changed = [k for k in start if start[k].is_floating_point() and not torch.equal(start[k], weights[0][k])]
    assert changed, "training changed nothing"
    # BatchNorm running statistics stay per rank (each sees its own half); rank 0's are the ones saved
    for key in (k for k in weights[0] if "running_" not in k and "num_batches" not in k):
        assert torch.equal(weights[0][key], weights[1][key]), key
    # only rank 0 writes the run folder
    assert (tmp_path / "last" / "state.json").is_file() and (tmp_path / "metrics.csv").is_file()
