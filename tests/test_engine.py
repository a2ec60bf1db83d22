"""Self-distillation loss and step, checkpoints, resume, and a real 2-process (gloo) DDP run."""

import argparse
import math
import sys
import textwrap

import pytest
import torch

import adn
from adn.core.checkpoint import load_checkpoint, save_checkpoint
from adn.models.weights import load_weights
from adn.training.engine import StepOptions, train_one_epoch
from adn.training.losses import SelfDistillation, distillation_loss
from helpers import ROOT, run


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=False))


def _softmax(xs, t=1.0):
    e = [math.exp(x / t) for x in xs]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_distillation_loss_matches_hand_computation(temperature):
    teacher = [[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]]
    student = [[1.0, 1.0, 0.0], [-1.0, 2.0, 0.5]]
    expected = (
        temperature**2
        * sum(_kl(_softmax(t, temperature), _softmax(s, temperature)) for t, s in zip(teacher, student, strict=False))
        / 2
    )
    got = distillation_loss(torch.tensor(teacher), torch.tensor(student), temperature)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_distillation_loss_top_k_restricts_to_teacher_classes():
    teacher = [[2.0, 0.5, -1.0, 0.1], [0.0, 1.0, 3.0, -2.0]]
    student = [[1.0, 1.0, 0.0, 5.0], [-1.0, 2.0, 0.5, 4.0]]
    top2 = [[0, 1], [2, 1]]  # each sample's two best teacher classes
    expected = (
        4.0
        * sum(
            _kl(_softmax([t[i] for i in k], 2.0), _softmax([s[i] for i in k], 2.0))
            for t, s, k in zip(teacher, student, top2, strict=False)
        )
        / 2
    )
    got = distillation_loss(torch.tensor(teacher), torch.tensor(student), 2.0, topk=2)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_distillation_loss_is_zero_for_equal_logits_and_gives_no_teacher_gradient():
    teacher = torch.randn(4, 5, requires_grad=True)
    student = teacher.detach().clone().requires_grad_()
    loss = distillation_loss(teacher, student)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    (loss + (student * 0).sum()).backward()
    assert teacher.grad is None


CE = torch.nn.CrossEntropyLoss()


def test_one_step_trains_main_norms_twins_and_skippable_blocks():
    torch.manual_seed(0)
    model = adn.create_model("resnet20", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = [(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))]
    stats = train_one_epoch(model, SelfDistillation(), CE, opt, batch, "cpu", 0, StepOptions(clip_grad_norm=1.0))
    after = model.state_dict()
    changed = lambda k: not torch.equal(before[k], after[k])  # noqa: E731
    assert changed("layer1.0.bn1.weight")  # main norm: super-net's CE
    assert changed("layer1.0.bn1.skip_norm.weight")  # twin: base-net's distillation
    assert changed("layer1.2.conv1.weight")  # skippable block: super-net only
    assert changed("layer1.0.bn1.skip_norm.running_mean")  # twin statistics follow the base-net pass
    assert stats.loss_base > 0 and stats.loss_super > 0 and stats.loss == stats.loss_super + stats.loss_base


def test_amp_ema_and_top_k_step_runs_on_cpu():
    from adn.training.config import OptimConfig
    from adn.training.optim import build_ema

    torch.manual_seed(0)
    model = adn.create_model("resnet20", num_classes=10)
    ema = build_ema(model, OptimConfig(epochs=1, model_ema_steps=1, model_ema_decay=0.9), 4, 1, "cpu")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = [(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))] * 2
    options = StepOptions(amp=True, ema_every=1)
    train_one_epoch(model, SelfDistillation(topk=3), CE, opt, batch, "cpu", 0, options, ema)
    assert ema.n_averaged.item() == 2
    assert not torch.equal(ema.module.fc.weight, model.fc.weight)


def test_checkpoint_files_are_atomic_and_errors_are_one_line(tmp_path):
    model = adn.create_model("resnet20", num_classes=10)
    save_checkpoint({"model": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "c.pth")
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]  # no temporary file left behind
    assert load_checkpoint(tmp_path / "c.pth")["args"].lr == 0.1
    fresh = load_weights(adn.create_model("resnet20", num_classes=10), tmp_path / "c.pth")
    assert torch.equal(fresh.fc.weight, model.fc.weight)
    published = {k.replace(".skip_norm.", "_skip."): v for k, v in model.state_dict().items()}
    torch.save(published, tmp_path / "published.pth")
    loaded = load_weights(adn.create_model("resnet20", num_classes=10), tmp_path / "published.pth")
    assert torch.equal(loaded.layer2[0].bn2.skip_norm.weight, model.layer2[0].bn2.skip_norm.weight)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint") as err:
        load_weights(model, tmp_path / "junk.pth")
    assert "\n" not in str(err.value)
    torch.save({"epoch": 3}, tmp_path / "no_model.pth")
    with pytest.raises(ValueError, match="no model weights"):
        load_weights(model, tmp_path / "no_model.pth")


TINY = [
    "--calib-images",
    "32",
    "--model",
    "resnet20",
    "--train-subset",
    "48",
    "--val-subset",
    "32",
    "-b",
    "16",
    "--print-freq",
    "100",
    "--lr-scheduler",
    "steplr",
    "--lr-step-size",
    "1",
    "--lr-gamma",
    "0.5",
]


def test_resume_continues_exactly(tmp_path, capsys):
    from adn.cli.train import main

    assert main([*TINY, "--epochs", "2", "--output-dir", str(tmp_path / "a")]) == 0
    assert main([*TINY, "--epochs", "1", "--output-dir", str(tmp_path / "b")]) == 0
    assert (
        main(
            [
                *TINY,
                "--epochs",
                "2",
                "--output-dir",
                str(tmp_path / "b"),
                "--resume",
                str(tmp_path / "b" / "checkpoint.pth"),
            ]
        )
        == 0
    )
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pth")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pth")
    assert a["epoch"] == b["epoch"] == 1
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"] == 0.05
    assert "resumed from" in capsys.readouterr().out


_DDP_WORKER = textwrap.dedent("""
    import argparse, copy, sys
    import torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    import adn
    from adn.training.engine import StepOptions, train_one_epoch
    from adn.training.losses import SelfDistillation

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = adn.create_model("resnet20", num_classes=10)
    replicas = [copy.deepcopy(model) for _ in range(2)]
    distill, options = SelfDistillation(temperature=2.0, topk=None), StepOptions(print_freq=100)
    ce = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(2)]
    ddp = DDP(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    local = [(x[4 * rank:4 * rank + 4], y[4 * rank:4 * rank + 4]) for x, y in batches]
    if sys.argv[1] == "own-loop":  # a user's loop around the public step, as docs/training.md shows it
        for x, y in local:
            opt.zero_grad()
            adn.distillation_step(ddp, distill, x, y, ce)
            opt.step()
    else:
        train_one_epoch(ddp, distill, ce, opt, local, "cpu", 0, options)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(2)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        # reference: each replica computes its half-batch gradients alone; average them by hand, SGD step;
        # rank 0's buffers win, as DDP broadcasts them before every forward
        for x, y in batches:
            grads = []
            for k, rep in enumerate(replicas):
                rep.zero_grad()
                train_one_epoch(rep, distill, ce, torch.optim.SGD(rep.parameters(), lr=0.0),
                                [(x[4 * k:4 * k + 4], y[4 * k:4 * k + 4])], "cpu", 0, options)
                grads.append([p.grad.clone() for p in rep.parameters()])
            with torch.no_grad():
                for rep in replicas:
                    for p, g0, g1 in zip(rep.parameters(), *grads):
                        p -= 0.1 * (g0 + g1) / 2
                for b0, b1 in zip(replicas[0].buffers(), replicas[1].buffers()):
                    b1.copy_(b0)
        ref = torch.cat([p.detach().flatten() for p in replicas[0].parameters()])
        print("RANK_DIFF", (gathered[0] - gathered[1]).abs().max().item())
        print("REF_DIFF", (ref - flat).abs().max().item(), flush=True)
    del ddp  # release DDP's reducer before the process group, or gloo may abort at exit
    dist.barrier()
    dist.destroy_process_group()
""")


def _torchrun(args, cwd):
    return run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args], cwd=cwd)


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["engine", "own-loop"])
def test_ddp_step_averages_every_gradient_once(tmp_path, loop):
    """Under DDP on 2 processes, train_one_epoch and a user's own loop around adn.distillation_step both equal
    gradients averaged by hand over the two half-batches."""
    script = tmp_path / "worker.py"
    script.write_text(_DDP_WORKER)
    out = _torchrun([str(script), loop], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    values = dict(line.split() for line in out.stdout.splitlines() if line.startswith(("RANK_DIFF", "REF_DIFF")))
    assert float(values["RANK_DIFF"]) == 0.0  # replicas stay identical
    assert float(values["REF_DIFF"]) < 1e-5  # and equal hand-averaged gradients of both half-batches


@pytest.mark.slow
def test_torchrun_two_process_training(tmp_path):
    out = _torchrun(
        [
            str(ROOT / "train_adn.py"),
            *TINY,
            "--epochs",
            "1",
            "--val-subset",
            "31",
            "--output-dir",
            str(tmp_path / "ddp"),
        ],
        ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (
        out.stderr.count(
            "31 val images do not split evenly over 2 processes: the per-epoch accuracies count 1 of them twice"
        )
        == 1
    )  # rank 0 only
    assert out.stdout.count("epoch 0:") == 1  # rank 0 prints, rank 1 does not
    ckpt = load_checkpoint(tmp_path / "ddp" / "checkpoint.pth")
    assert ckpt["args"]["world_size"] == 2 and ckpt["epoch"] == 0
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == 1


def test_engine_without_host_syncs_equals_a_per_step_loop():
    """The engine reads losses back only at reports; a plain loop that syncs every step (the old engine) must
    reach the same weights and the same mean losses."""
    torch.manual_seed(0)
    model = adn.create_model("resnet20", num_classes=10)
    twin = adn.create_model("resnet20", num_classes=10)
    twin.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(5)]
    distill = SelfDistillation(alpha=0.4, temperature=2.0, topk=5)
    result = train_one_epoch(
        model,
        distill,
        CE,
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        batches,
        "cpu",
        0,
        StepOptions(print_freq=2),
    )
    opt = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    losses = []
    twin.train()
    for x, y in batches:
        opt.zero_grad()
        out = twin(x, skip="FFF")
        loss_s = 0.4 * CE(out, y)
        loss_s.backward()
        loss_b = 0.6 * distillation_loss(out.detach(), twin(x, skip="TTT"), 2.0, 5)
        loss_b.backward()
        losses.append((loss_s.item(), loss_b.item()))
        opt.step()
    for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert result.loss_super == pytest.approx(sum(s for s, _ in losses) / 5, rel=1e-6)
    assert result.loss_base == pytest.approx(sum(b for _, b in losses) / 5, rel=1e-6)
    assert result.steps == 5 and result.images == 40
