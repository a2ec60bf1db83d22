"""The reference's distillation options of today: feature self-distillation (--fpn) and an external teacher
(train_adn_distill.py --distillation), each against a hand computation."""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch
import torch.nn.functional as F

import adn
from adn.core.features import capture_stage_outputs, pool_channels
from adn.training.losses import SelfDistillation, TeacherDistillation, feature_distillation_loss
from adn.training.teacher import load_teacher, teacher_fingerprint

CE = torch.nn.CrossEntropyLoss()


def _kl_by_hand(teacher: list[list[float]], student: list[list[float]], t: float) -> float:
    """T^2 * batch-mean KL(softmax(teacher/T) || softmax(student/T)), in plain Python."""

    def softmax(xs):
        e = [math.exp(x / t) for x in xs]
        return [v / sum(e) for v in e]

    total = 0.0
    for a, b in zip(teacher, student, strict=True):
        p, q = softmax(a), softmax(b)
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    return t * t * total / len(teacher)


def test_feature_term_equals_hand_computation():
    teacher = [[[1.0, 0.0, -2.0], [0.5, 0.5, 3.0]], [[2.0, -1.0], [0.0, 4.0]]]  # 2 stages, (N=2, C) each
    student = [[[0.0, 1.0, 1.0], [-1.0, 2.0, 0.0]], [[1.0, 1.0], [3.0, -2.0]]]
    expected = sum(_kl_by_hand(t, s, 2.0) for t, s in zip(teacher, student, strict=True))
    got = feature_distillation_loss([torch.tensor(t) for t in teacher], [torch.tensor(s) for s in student], 2.0)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # the base-net's term: (1 - alpha) * (KD_logits + the features' sum), the logits over the top-k as before
    logits_t, logits_s = torch.tensor([[3.0, 1.0, 0.0]]), torch.tensor([[0.0, 1.0, 2.0]])
    distill = SelfDistillation(alpha=0.25, temperature=2.0, topk=None, features=True)
    feats_t, feats_s = [torch.tensor(teacher[0][:1])], [torch.tensor(student[0][:1])]
    loss = distill.base_loss(logits_t, logits_s, feats_t, feats_s)
    hand = 0.75 * (
        _kl_by_hand([[3.0, 1.0, 0.0]], [[0.0, 1.0, 2.0]], 2.0) + _kl_by_hand(teacher[0][:1], student[0][:1], 2.0)
    )
    assert loss.item() == pytest.approx(hand, rel=1e-5)


def _resnet_stage_outputs(model, x, skip):
    """layer2..layer4 of the path of ``skip``, run by hand, globally average-pooled: the reference's --fpn features."""
    p = model.subnet(skip)
    h = p.maxpool(p.relu(p.bn1(p.conv1(x))))
    pooled = []
    for name in p.stage_names:
        h = getattr(p, name)(h)
        pooled.append(h.mean(dim=(2, 3)))
    return pooled[1:], p.fc(torch.flatten(p.avgpool(h), 1))


def test_resnet_feature_distillation_is_the_references_layer2_to_layer4_term():
    torch.manual_seed(0)
    model = adn.create_model("resnet50", num_classes=10, widths=[8, 16, 32, 64]).train()
    distill = SelfDistillation(alpha=0.5, temperature=2.0, topk=5, features=True)
    assert distill.distilled_stages(model.num_stages) == (1, 2, 3)  # layer2, layer3, layer4
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, 4, 9])
    _, super_logits, super_feats = distill.super_pass(model, x, y, CE)
    loss = distill.base_pass(model, x, super_logits.detach(), super_feats)
    with torch.no_grad():  # train-mode BN: batch statistics, so the hand pass computes the same values
        ref_super, ref_logits_s = _resnet_stage_outputs(model, x, (False,) * 4)
        ref_base, ref_logits_b = _resnet_stage_outputs(model, x, (True,) * 4)
    assert torch.allclose(super_logits, ref_logits_s, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(super_feats, ref_super, strict=True))
    top = ref_logits_s.topk(5, dim=1).indices
    kd = _kl_by_hand(ref_logits_s.gather(1, top).tolist(), ref_logits_b.gather(1, top).tolist(), 2.0)
    feats = sum(_kl_by_hand(s.tolist(), b.tolist(), 2.0) for s, b in zip(ref_super, ref_base, strict=True))
    assert loss.item() == pytest.approx(0.5 * (kd + feats), rel=1e-4)
    assert not all(f.requires_grad for f in super_feats)  # the super-net's features are targets


@pytest.mark.parametrize("name, channels", [("vit_cifar", 96), ("swin_cifar", 256), ("mobilenet_v2_cifar", None)])
def test_other_families_distil_pooled_stage_outputs(name, channels):
    torch.manual_seed(0)
    model = adn.create_model(name, num_classes=10).train()
    x = torch.randn(2, 3, 32, 32)
    stages = SelfDistillation(features=True).distilled_stages(model.num_stages)
    assert stages == tuple(range(1, model.num_stages))
    with capture_stage_outputs(model, (True,) * model.num_stages, stages) as feats:
        model(x, skip=(True,) * model.num_stages)
    assert len(feats) == len(stages) and all(f.ndim == 2 and f.shape[0] == 2 for f in feats)
    if channels is not None:  # channels-last families pool over tokens / positions, not over channels
        assert feats[-1].shape[1] == channels
    before = {n: p.clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_super, loss_base, _ = adn.distillation_step(
        model, SelfDistillation(topk=5, features=True), x, torch.tensor([1, 2]), CE
    )
    opt.step()
    assert loss_base > 0 and any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_pool_channels_layouts():
    t = torch.arange(24.0).reshape(1, 2, 3, 4)
    assert torch.equal(pool_channels(t), t.mean(dim=(2, 3)))  # (N, C, H, W)
    assert torch.equal(pool_channels(t, -1), t.mean(dim=(1, 2)))  # (N, H, W, C)
    assert torch.equal(pool_channels(t[0]), t[0].mean(dim=1))  # (N, L, C): token mean


def test_teacher_step_losses_and_gradients_equal_hand_computation():
    torch.manual_seed(0)
    model = adn.create_model("resnet20", num_classes=10).train()
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval().requires_grad_(False)
    distill = TeacherDistillation(alpha=0.5, topk=4, teacher=teacher)
    assert distill.temperature == 2.0 and distill.teacher_weight == 0.9  # the reference's
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 3, 5, 9])
    twin = copy.deepcopy(model)
    loss_super, loss_base, _ = adn.distillation_step(model, distill, x, y, CE)

    def kl_topk(t_logits, s_logits):  # T^2 * KL over the top-4 classes of the teacher, T = 2, by hand
        index = t_logits.topk(4, dim=1).indices
        p = F.softmax(t_logits.gather(1, index) / 2, dim=1)
        log_q = F.log_softmax(s_logits.gather(1, index) / 2, dim=1)
        return 4 * (p * (p.log() - log_q)).sum(dim=1).mean()

    s = twin(x, skip="FFF")
    hand_super = 0.5 * (0.9 * kl_topk(teacher(x), s) + 0.1 * F.cross_entropy(s, y))
    hand_base = 0.5 * kl_topk(s.detach(), twin(x, skip="TTT"))
    (hand_super + hand_base).backward()
    assert loss_super.item() == pytest.approx(hand_super.item(), rel=1e-5)
    assert loss_base.item() == pytest.approx(hand_base.item(), rel=1e-5)
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-4), name
    assert all(p.grad is None for p in teacher.parameters())


def test_load_teacher_from_a_local_file(tmp_path):
    import torchvision

    plain = torchvision.models.resnet18(num_classes=3)
    torch.save({"model": {"module." + k: v for k, v in plain.state_dict().items()}}, tmp_path / "t.pth")
    teacher = load_teacher("tv:resnet18", tmp_path / "t.pth", num_classes=3)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert torch.equal(teacher.fc.weight, plain.fc.weight)
    with pytest.raises(ValueError, match="classifies 3 classes .*the data has 5") as err:
        load_teacher("tv:resnet18", tmp_path / "t.pth", num_classes=5)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="torchvision has no model"):
        load_teacher("tv:no_such_net", tmp_path / "t.pth", num_classes=3)
    adn_teacher = adn.create_model("resnet20", num_classes=3)
    torch.save(adn_teacher.state_dict(), tmp_path / "a.pth")
    loaded = load_teacher("resnet20", tmp_path / "a.pth", num_classes=3)
    assert torch.equal(loaded.fc.weight, adn_teacher.fc.weight)
    fingerprint = teacher_fingerprint("resnet20", tmp_path / "a.pth")
    assert fingerprint["teacher"] == "resnet20" and len(fingerprint["teacher_sha256"]) == 64


@pytest.mark.slow
def test_adn_train_with_a_teacher_records_it_by_name_and_hash_only(tmp_path):
    import torchvision

    from adn.core.checkpoint import load_checkpoint
    from helpers import ADN, run

    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "teacher.pth")
    common = ["--model", "resnet20", "--teacher", "tv:resnet18", "--epochs", "1", "--calib-images", "0", "-q"]
    out = run(
        [
            *ADN,
            "train",
            *common,
            "--teacher-weights",
            str(tmp_path / "teacher.pth"),
            "--fpn",
            "--max-steps",
            "2",
            "--train-subset",
            "32",
            "--val-subset",
            "16",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pth")
    assert ckpt["args"]["teacher"] == "tv:resnet18" and ckpt["args"]["fpn"]
    assert ckpt["args"]["teacher_sha256"] == teacher_fingerprint("x", tmp_path / "teacher.pth")["teacher_sha256"]
    assert set(ckpt["model"]) == set(adn.create_model("resnet20", num_classes=10).state_dict())  # no teacher keys
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "other.pth")
    other = [*ADN, "train", "--resume", str(tmp_path / "run" / "checkpoint.pth"), "--epochs", "2"]
    changed = run([*other, "--teacher-weights", str(tmp_path / "other.pth")])
    assert changed.returncode == 2 and "is not the teacher file this run was trained with" in changed.stderr
    missing = run([*ADN, "train", "--distillation", "--output-dir", str(tmp_path / "other")])
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "needs --teacher-weights FILE" in missing.stderr


def test_dataset_index_cache_reuses_the_scan_until_a_class_folder_changes(tmp_path):
    from PIL import Image

    from adn.data.cache import dataset_index_cache
    from adn.data.folder import _ImageFolder

    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "d" / c / "0.png")
    with dataset_index_cache(tmp_path / "cache"):
        first = _ImageFolder(str(tmp_path / "d"), None).samples
        assert len(list((tmp_path / "cache").glob("*.json"))) == 1
        again = _ImageFolder(str(tmp_path / "d"), None).samples
        Image.new("RGB", (4, 4)).save(tmp_path / "d" / "b" / "1.png")  # touches b/: a new scan
        os.utime(tmp_path / "d" / "b", ns=(1, 1))  # a distinct mtime even on coarse-clock file systems
        grown = _ImageFolder(str(tmp_path / "d"), None).samples
    assert first == again and len(first) == 2 and len(grown) == 3
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    assert len(_ImageFolder(str(tmp_path / "d"), None).samples) == 3  # no cache outside the context
