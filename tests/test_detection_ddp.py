"""Detection self-distillation under DDP (2 CPU processes, gloo): after one step every rank holds the mean of the
ranks' single-process gradients -- both passes' gradients reduced, with one all-reduce in the second backward."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from adn.detection import build_detector, tiny_resnet
from adn.detection.losses import DetectionDistillation, detection_step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    small = dict(out_channels=8, representation_size=16, min_size=64, max_size=64, box_batch_size_per_image=16)
    det = build_detector("fasterrcnn", tiny_resnet((8, 16, 32)), 4, rpn_post_nms_top_n_train=16, **small).train()
    g = torch.Generator().manual_seed(10 + rank)  # each rank its own batch
    images = [torch.rand(3, 64, 64, generator=g)]
    targets = [{"boxes": torch.tensor([[8.0, 8, 30 + rank, 28]]), "labels": torch.tensor([1 + rank])}]
    distill = DetectionDistillation(proposals=8)
    torch.manual_seed(1)
    detection_step(det, distill, images, targets)
    local = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in det.parameters()])
    det.zero_grad(set_to_none=True)
    model = DistributedDataParallel(det)
    torch.manual_seed(1)
    detection_step(model, distill, images, targets)
    reduced = torch.cat([p.grad.flatten() for p in det.parameters()])
    mean = local.clone()
    dist.all_reduce(mean)
    mean /= 2
    ok = torch.allclose(reduced, mean, rtol=1e-4, atol=1e-6) and not torch.allclose(local, mean)
    torch.save(ok, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ddp_step_reduces_both_passes(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    assert torch.load(tmp_path / "rank0.pt") and torch.load(tmp_path / "rank1.pt")
