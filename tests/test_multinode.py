"""Training across machines with torchrun's c10d rendezvous: 2 "nodes" x 1 process on the loopback (gloo) reach the
weights of one process over the same global batch (feature self-distillation on: its hooks under DDP too); and the
process-group choice of --world-size/--dist-url."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

import adn
from adn.runtime.multinode import ProcessGroupSpec, process_group_spec
from adn.training.engine import train_one_epoch
from adn.training.losses import SelfDistillation
from helpers import child_env

STEPS, GLOBAL_BATCH = 2, 8
# All classes are distilled (topk=None): ViT's zero-initialised head gives exactly tied logits, and which of the tied
# classes a top-k keeps depends on the batch size, i.e. differs between a half batch and the whole one.

_WORKER = textwrap.dedent(
    """
    import sys
    import torch
    import adn
    from adn.runtime.distributed import cleanup_distributed, init_distributed
    from adn.training.engine import StepOptions, train_one_epoch
    from adn.training.losses import SelfDistillation

    state = init_distributed("cpu")  # torchrun's environment, as the trainer reads it
    assert state.distributed and state.world_size == 2, state
    torch.manual_seed(0)
    model = adn.create_model("vit_cifar", num_classes=10, hidden_dim=32, mlp_dim=64, num_heads=2)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn({batch}, 3, 32, 32, generator=g), torch.randint(0, 10, ({batch},), generator=g))
               for _ in range({steps})]
    half = {batch} // 2
    mine = [(x[state.rank * half:(state.rank + 1) * half], y[state.rank * half:(state.rank + 1) * half])
            for x, y in batches]
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    train_one_epoch(ddp, SelfDistillation(topk=None, temperature=2.0, features=True), torch.nn.CrossEntropyLoss(),
                    torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), mine, "cpu", 0, StepOptions())
    if state.rank == 0:
        torch.save(model.state_dict(), sys.argv[1])
    del ddp
    cleanup_distributed()
    """
).format(batch=GLOBAL_BATCH, steps=STEPS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single_process_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = adn.create_model("vit_cifar", num_classes=10, hidden_dim=32, mlp_dim=64, num_heads=2)
    g = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g), torch.randint(0, 10, (GLOBAL_BATCH,), generator=g))
        for _ in range(STEPS)
    ]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_one_epoch(
        model,
        SelfDistillation(topk=None, temperature=2.0, features=True),
        torch.nn.CrossEntropyLoss(),
        optimizer,
        batches,
        "cpu",
        0,
    )
    return model.state_dict()


@pytest.mark.slow
def test_two_nodes_with_c10d_rendezvous_equal_one_process(tmp_path):
    script, out = tmp_path / "worker.py", tmp_path / "rank0.pth"
    script.write_text(_WORKER)
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        "adn-2-nodes",
        "--max-restarts",
        "0",
        str(script),
        str(out),
    ]
    env = child_env({"GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"})
    nodes = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        for _ in range(2)
    ]
    try:
        logs = [node.communicate(timeout=240)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
    assert all(node.returncode == 0 for node in nodes), "\n".join(log[-2000:] for log in logs)
    multi, single = torch.load(out), _single_process_weights()
    diff = max((multi[k].float() - single[k].float()).abs().max().item() for k in single)
    print(f"2 nodes x 1 process vs 1 process, {STEPS} steps of {GLOBAL_BATCH} images: max weight difference {diff:.2e}")
    torch.manual_seed(0)
    initial = adn.create_model("vit_cifar", num_classes=10, hidden_dim=32, mlp_dim=64, num_heads=2).state_dict()
    assert any(not torch.equal(multi[k], v) for k, v in initial.items())  # it trained
    assert diff < 1e-5


def test_process_group_from_torchrun_or_srun():
    torchrun = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    assert process_group_spec(torchrun, None, "env://") == ProcessGroupSpec(3, 4, 1, "env://")
    assert process_group_spec(torchrun, 4, "env://").world_size == 4
    with pytest.raises(ValueError, match="--world-size 8 differs from the launcher's WORLD_SIZE=4"):
        process_group_spec(torchrun, 8, "env://")
    srun = {"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8"}
    assert process_group_spec(srun, 8, "tcp://node1:29500") == ProcessGroupSpec(5, 8, 1, "tcp://node1:29500")
    with pytest.raises(ValueError, match="needs --dist-url tcp://HOST:PORT"):
        process_group_spec(srun, 8, "env://")
    assert process_group_spec(srun, None, "env://") is None  # a plain run inside an allocation: one process
    assert process_group_spec({}, None, "env://") is None  # one process
    with pytest.raises(ValueError, match="adn starts no processes"):
        process_group_spec({}, 2, "env://")


_SRUN_TASK = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    from adn.runtime.distributed import cleanup_distributed, init_distributed

    state = init_distributed("cpu", world_size=2, dist_url=sys.argv[1])
    t = torch.tensor([float(state.rank + 1)])
    dist.all_reduce(t)
    print("RANK", state.rank, "OF", state.world_size, "SUM", t.item(), flush=True)
    cleanup_distributed()
    """
)


def test_srun_tasks_join_through_world_size_and_dist_url(tmp_path):
    """Two tasks as ``srun python train_adn.py --world-size 2 --dist-url tcp://HOST:PORT`` starts them (no torchrun):
    the process group is the one the flags name."""
    script = tmp_path / "task.py"
    script.write_text(_SRUN_TASK)
    url = f"tcp://127.0.0.1:{_free_port()}"
    tasks = [
        subprocess.Popen(
            [sys.executable, str(script), url],
            env=child_env({"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NTASKS": "2"}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for rank in range(2)
    ]
    try:
        logs = [task.communicate(timeout=120)[0] for task in tasks]
    finally:
        for task in tasks:
            if task.poll() is None:
                os.killpg(task.pid, signal.SIGKILL)
    assert all(task.returncode == 0 for task in tasks), "\n".join(logs)
    assert [line for log in logs for line in log.splitlines() if line.startswith("RANK")] == [
        "RANK 0 OF 2 SUM 3.0",
        "RANK 1 OF 2 SUM 3.0",
    ]


def test_world_size_flag_is_kept_apart_from_the_groups_size_in_checkpoints(tmp_path):
    """``--world-size`` is ``RunConfig.dist_world_size``; a checkpoint's ``world_size`` is the group's actual size
    (the reference layout). Neither the flag nor the init URL comes back on resume: the group is the invocation's."""
    from adn.cli.train import parse, parse_config
    from adn.training.run import resumed_config

    config = parse_config(["--world-size", "2", "--dist-url", "tcp://127.0.0.1:29500", "--device", "cpu"])
    assert (config.run.dist_world_size, config.run.dist_url) == (2, "tcp://127.0.0.1:29500")
    stored = {**config.flat(), "world_size": 8, "distributed": True, "rank": 0, "gpu": 0}
    assert adn.TrainConfig.from_flat(stored) == config  # the group's size does not leak into the flag
    path = tmp_path / "run" / "checkpoint.pth"
    path.parent.mkdir()
    torch.save({"args": stored}, path)
    again = resumed_config(path)
    assert (again.run.dist_world_size, again.run.dist_url) == (None, "env://")
    args = parse(["--resume", str(path)])
    assert (args.dist_world_size, args.dist_url) == (None, "env://") and args.lr == config.optim.lr
    old = {k: v for k, v in stored.items() if k != "dist_world_size"}  # issue-22's Namespace-era layout
    assert adn.TrainConfig.from_flat(old).run.dist_world_size is None
