"""Adaptive-depth detectors: every sub-network of each detector, the distillation step's loss, thread safety,
pickling, backbones and their initial weights."""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.ops import FrozenBatchNorm2d

import adn
from adn.detection import build_detector, load_detector_weights, tiny_resnet
from adn.detection.losses import DetectionDistillation, bernoulli_kl, detection_step, feature_term

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)

SMALL = dict(out_channels=8, representation_size=16, mask_channels=(8,), min_size=64, max_size=64)
RCNN = dict(rpn_pre_nms_top_n_train=40, rpn_post_nms_top_n_train=16, rpn_pre_nms_top_n_test=40)
RCNN.update(rpn_post_nms_top_n_test=16, box_batch_size_per_image=16, box_score_thresh=0.0)


def tiny(kind: str, **kwargs) -> adn.detection.AdaptiveDetector:
    torch.manual_seed(0)
    extra = {} if kind == "retinanet" else RCNN
    return build_detector(kind, tiny_resnet((8, 16, 32)), 4, **SMALL, **extra, **kwargs)


def batch(n: int = 2) -> tuple[list[torch.Tensor], list[dict]]:
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 64, 64, generator=g) for _ in range(n)]
    targets = []
    for i in range(n):
        masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
        masks[0, 8:28, 10:30] = 1
        masks[1, 36 + i : 60, 30:50] = 1
        boxes = torch.tensor([[10.0, 8, 30, 28], [30, 36 + i, 50, 60]])
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 3]), "masks": masks})
    return images, targets


@pytest.mark.parametrize("kind", adn.detection.KINDS)
def test_every_subnet_runs_forward_and_backward(kind):
    det = tiny(kind)
    images, targets = batch()
    skippable = {id(p) for b in det.body.skippable_blocks() for p in b.parameters()}
    for skip in adn.skip_configs(det.num_stages):
        det.train()
        det.zero_grad(set_to_none=True)
        losses = det(images, targets, skip=skip)
        loss = sum(losses.values())
        assert torch.isfinite(loss), (skip, losses)
        loss.backward()
        used = {id(p) for p in adn.core.modules.used_parameters(det.body, skip)}
        for p in det.body.parameters():
            if id(p) in skippable and id(p) not in used:
                assert p.grad is None  # a skipped block takes no part
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in det.detector.backbone.fpn.parameters())
        det.eval()
        with torch.no_grad():
            out = det(images, skip=skip)
        assert len(out) == 2 and {"boxes", "scores", "labels"} <= set(out[0])
        if kind == "maskrcnn":
            assert out[0]["masks"].shape[1:] == (1, 64, 64)
    # the sub-networks differ: the base-net's features are not the super-net's
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = det.backbone.at("FFF")(x), det.backbone.at("TTT")(x)
    assert not torch.allclose(a["0"], b["0"])


def _bernoulli_kl_by_hand(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    p, q = torch.sigmoid(t), torch.sigmoid(s)
    return p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))


def test_terms_on_fixed_tensors():
    s = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    t = torch.tensor([[1.0, -2.0], [0.0, 0.3]])
    torch.testing.assert_close(bernoulli_kl(s, t), _bernoulli_kl_by_hand(s, t))
    assert bernoulli_kl(t, t).abs().max() < 1e-6
    levels_s = [torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 1, 1)]
    levels_t = [torch.zeros(1, 2, 2, 2), torch.full((1, 2, 1, 1), 3.0)]
    levels_t[0] = torch.full((1, 2, 2, 2), 2.0)
    assert feature_term(levels_s, levels_t).item() == pytest.approx((1.0 / 4.0 + 9.0 / 9.0) / 2)


@pytest.mark.parametrize("kind", ["fasterrcnn", "retinanet"])
def test_step_loss_is_the_sum_of_its_terms(kind):
    det = tiny(kind)
    if kind == "retinanet":  # its initial classifier barely looks at the features: make the term visible
        for m in det.detector.head.classification_head.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight)
    det.train()
    images, targets = batch()
    distill = DetectionDistillation(feature_weight=0.5, prediction_weight=2.0, temperature=2.0, proposals=8)
    torch.manual_seed(3)  # the R-CNN samplers draw random numbers: the same in both computations
    step = detection_step(det, distill, images, targets)
    torch.manual_seed(3)
    with torch.no_grad():
        sup = det(images, targets, skip="FFF", distill=True, proposals=8)
        base = det(images, targets, skip="TTT", distill=True, proposals=sup.get("proposals"))
    torch.testing.assert_close(step.super, sum(sup["losses"].values()))
    pairs = zip(base["features"], sup["features"], strict=True)
    feature = sum(((b - s) ** 2).mean() / (s**2).mean() for b, s in pairs) / len(sup["features"])
    if kind == "retinanet":
        prediction = _bernoulli_kl_by_hand(base["logits"], sup["logits"]).sum(-1).mean()
    else:
        T = 2.0
        p, log_q = F.softmax(sup["logits"] / T, 1), F.log_softmax(base["logits"] / T, 1)
        classes = T**2 * (p * (p.log() - log_q)).sum(1).mean()
        flat = [torch.cat([o.flatten() for o in out["objectness"]]) for out in (base, sup)]
        prediction = classes + _bernoulli_kl_by_hand(*flat).mean()
    detection = sum(base["losses"].values())
    torch.testing.assert_close(step.feature, feature)
    torch.testing.assert_close(step.prediction, prediction, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(step.base, detection + 0.5 * feature + 2.0 * prediction, rtol=1e-4, atol=1e-6)
    assert step.feature > 0 and step.prediction > 0


def test_concurrent_calls_match_sequential_and_pickle():
    det = tiny("fasterrcnn").eval()
    images, _ = batch()
    configs = ["FFF", "TFT", "TTT", "FTF"] * 2
    with torch.no_grad():
        expected = [det(images, skip=c) for c in configs]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda c: det(images, skip=c), configs))
    for e, g in zip(expected, got, strict=True):
        for a, b in zip(e, g, strict=True):
            assert len(a["boxes"]) > 0
            assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    assert not torch.equal(expected[0][0]["scores"], expected[2][0]["scores"])
    clone = pickle.loads(pickle.dumps(det))
    with torch.no_grad():
        again = clone(images, skip="TFT")
    assert torch.equal(again[0]["boxes"], expected[1][0]["boxes"])


def test_other_backbones():
    x = [torch.rand(3, 64, 64)]
    for backbone in (adn.convert(torchvision.models.resnet18()), "resnet20"):
        torch.manual_seed(0)
        det = build_detector("fasterrcnn", backbone, 3, **SMALL, **RCNN).eval()
        with torch.no_grad():
            for skip in ((False,) * det.num_stages, (True,) * det.num_stages):
                assert "boxes" in det(x, skip=skip)[0]


def test_weights_carry_twins_and_frozen_bn_freezes_them(tmp_path):
    body = tiny_resnet((8, 16, 32))
    twin = body.layer1[0].bn1.skip_norm
    with torch.no_grad():
        twin.running_mean.fill_(0.25)
        twin.weight.fill_(2.0)
    adn.save_weights(body, tmp_path / "body.pth")  # a classification checkpoint, classifier included
    det = build_detector("fasterrcnn", tiny_resnet((8, 16, 32)), 3, weights=str(tmp_path / "body.pth"), frozen_bn=True)
    norm = det.body.layer1[0].bn1
    assert isinstance(norm, FrozenBatchNorm2d) and isinstance(norm.skip_norm, FrozenBatchNorm2d)
    assert torch.all(norm.skip_norm.running_mean == 0.25) and torch.all(norm.skip_norm.weight == 2.0)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in det.body.modules())
    assert not norm.weight.requires_grad and not norm.skip_norm.weight.requires_grad  # buffers, not parameters
    # a torchvision-style whole-detector state dict (no twins): the twins start as the main norms
    source = tiny("fasterrcnn")
    with torch.no_grad():
        source.body.layer1[0].bn1.weight.fill_(3.0)
    state = {k: v for k, v in source.detector.state_dict().items() if ".skip_norm." not in k}
    det2 = load_detector_weights(tiny("fasterrcnn"), state)
    assert torch.all(det2.body.layer1[0].bn1.skip_norm.weight == 3.0)


def test_torchvision_detector_weights_give_torchvision_outputs():
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    torch.manual_seed(0)
    sizes = dict(min_size=96, max_size=96, box_score_thresh=0.0)
    reference = FasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None), 5, **sizes).eval()
    with torch.no_grad():  # non-trivial frozen statistics, so that a mix-up of norms shows
        for m in reference.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    det = build_detector("fasterrcnn", "tv:resnet18", 5, frozen_bn=True, representation_size=1024, **sizes)
    load_detector_weights(det, reference.state_dict())
    x = [torch.rand(3, 96, 96)]
    with torch.no_grad():
        expected, got = reference(x), det.eval()(x, skip="FFFF")
    assert len(expected[0]["boxes"]) > 0
    torch.testing.assert_close(got[0]["boxes"], expected[0]["boxes"])
    torch.testing.assert_close(got[0]["scores"], expected[0]["scores"])


def test_schedule_is_warmup_then_cosine_from_the_shared_builders():
    import math
    import warnings

    from adn.detection.config import DetectionTrainConfig
    from adn.detection.train import build_optim

    config = DetectionTrainConfig(output_dir="unused", lr=0.02, weight_decay=1e-4, warmup_steps=10)
    net = torch.nn.Linear(3, 3)
    optimizer, scheduler = build_optim(net, config, 50)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["weight_decay"] == 1e-4
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(50):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
    want = [0.02 * (0.001 + 0.999 * s / 10) for s in range(10)]
    want += [0.02 * 0.5 * (1 + math.cos(math.pi * (s - 10) / 40)) for s in range(10, 50)]
    assert lrs == pytest.approx(want, abs=1e-9)
