"""Detection data, mAP and the CLI: the built-in scenes' exact annotations, COCO mAP against pycocotools' own
result, and adn detect train -> eval end to end with its one-line errors."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from adn.cli import main
from adn.data.digits import _digits_arrays
from adn.detection.data import coco_dataset, detection_transforms, load_coco, make_scene, write_digit_scenes
from adn.detection.evaluate import coco_map

# pycocotools' RLE decoding under numpy 2 (its issue, not ours)
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.usefixtures("one_thread"),  # tiny models: one thread (conftest.py)
]


def test_scenes_boxes_and_masks_match_the_drawn_digits():
    digits, labels = _digits_arrays()
    for i in range(6):
        scene = make_scene(3, "train", i)
        assert len(scene.labels) >= 1
        assert not np.logical_and.reduce(scene.masks, axis=0).any() or len(scene.masks) == 1  # disjoint
        assert scene.masks.sum(0).max() <= 1
        ink = scene.masks.any(0)
        assert scene.image[..., 0][~ink].max() < 48  # background noise only outside the objects
        for box, label, mask in zip(scene.boxes, scene.labels, scene.masks, strict=True):
            ys, xs = np.nonzero(mask)
            assert list(box) == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # the tight box of the mask
            x0, y0, x1, y1 = box.astype(int)
            crop = scene.image[y0:y1, x0:x1, 0] * mask[y0:y1, x0:x1]
            # the crop is one digit of that label, upscaled by whole factors (some factors fy, fx in 2..4)
            same = labels == label
            found = False
            for fy in (2, 3, 4):
                for fx in (2, 3, 4):
                    glyphs = np.kron(digits[same], np.ones((1, fy, fx), dtype=np.uint8))
                    for g in glyphs:
                        ys, xs = np.nonzero(g)
                        if len(ys) and g[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].shape == crop.shape:
                            found = found or np.array_equal(g[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1], crop)
                    if found:
                        break
            assert found, (i, label)
    a, b = make_scene(3, "val", 5), make_scene(3, "val", 5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)  # deterministic from the seed
    assert not np.array_equal(a.image, make_scene(4, "val", 5).image)


def test_written_coco_set_round_trips(tmp_path):
    root = write_digit_scenes(tmp_path / "digits", seed=1, train=3, val=2)
    data = json.loads((root / "annotations" / "instances_train.json").read_text())
    dataset = coco_dataset(root / "train", root / "annotations" / "instances_train.json", detection_transforms(False))
    for i in range(3):
        scene = make_scene(1, "train", i)
        image, target = dataset[i]
        assert torch.equal((image * 255).round().to(torch.uint8), torch.from_numpy(scene.image).permute(2, 0, 1))
        assert torch.equal(target["boxes"], torch.from_numpy(scene.boxes))
        assert torch.equal(target["labels"], torch.from_numpy(scene.labels) + 1)
        assert torch.equal(target["masks"].bool(), torch.from_numpy(scene.masks))
        anns = [a for a in data["annotations"] if a["image_id"] == i + 1]
        decoded = np.stack([mask_utils.decode(a["segmentation"]) for a in anns]).astype(bool)
        assert np.array_equal(decoded, scene.masks)


def _gt() -> dict:
    images = [{"id": k, "file_name": f"{k}.png", "height": 64, "width": 64} for k in (1, 2)]
    boxes = [(1, 1, [4, 4, 20, 20]), (1, 2, [30, 30, 16, 24]), (2, 1, [10, 12, 30, 14]), (2, 2, [40, 2, 20, 20])]
    annotations = [
        {"id": i + 1, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
        for i, (im, c, b) in enumerate(boxes)
    ]
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }


def test_map_equals_pycocotools(tmp_path):
    gt = _gt()
    predictions = [
        {"image_id": 1, "category_id": 1, "bbox": [5, 4, 19, 21], "score": 0.9},
        {"image_id": 1, "category_id": 2, "bbox": [28, 33, 16, 20], "score": 0.6},
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.8},
        {"image_id": 2, "category_id": 1, "bbox": [10, 12, 30, 14], "score": 0.7},
        {"image_id": 2, "category_id": 1, "bbox": [40, 2, 20, 20], "score": 0.5},
    ]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(predictions))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        evaluator = COCOeval(coco, coco.loadRes(str(tmp_path / "dt.json")), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ours = coco_map(load_coco(gt), json.loads((tmp_path / "dt.json").read_text()))
    assert ours["mAP"] == pytest.approx(100 * evaluator.stats[0])
    assert ours["AP50"] == pytest.approx(100 * evaluator.stats[1])
    assert 0 < ours["mAP"] < 100
    perfect = [{**a, "score": 1.0} for a in gt["annotations"]]
    assert coco_map(load_coco(gt), perfect)["mAP"] == pytest.approx(100.0)


def test_cli_train_then_eval_and_errors(tmp_path, capsys):
    common = ["--builtin-train", "8", "--builtin-val", "4", "--data-root", str(tmp_path / "data"), "-b", "4"]
    out = str(tmp_path / "run")
    assert main(["detect", "train", "--output-dir", out, "--epochs", "1", "--calibrate-batches", "1", *common]) == 0
    assert "checkpoint" in capsys.readouterr().out
    rows = tmp_path / "rows.json"
    assert (
        main(
            [
                "detect",
                "eval",
                f"{out}/checkpoint.pth",
                "--subnets",
                "FFFF",
                "TTTT",
                "--no-latency",
                "--output",
                str(rows),
            ]
        )
        == 0
    )
    table = json.loads(rows.read_text())
    assert [r["skip"] for r in table] == ["FFFF", "TTTT"] and table[0]["gmacs"] > table[1]["gmacs"] > 0
    assert all(0 <= r["bbox_mAP"] <= 100 for r in table)
    # resume: the run is complete, nothing more to train
    assert main(["detect", "train", "--output-dir", out, "--epochs", "1", "--resume", *common]) == 0
    assert "trained 0 steps" in capsys.readouterr().out

    def error(argv: list[str]) -> str:
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("adn: error: ")
        return lines[0]

    assert "class-count mismatch" in error(["detect", "train", "--output-dir", out, "--num-classes", "5", *common])
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    (coco / "train2017").mkdir()
    (coco / "annotations" / "instances_train2017.json").write_text('{"images": [')
    assert "not valid JSON" in error(["detect", "train", "--output-dir", out, "--data", str(coco)])
    gt = _gt()
    gt["images"].append({"id": 3, "file_name": "3.png", "height": 64, "width": 64})
    (coco / "annotations" / "instances_train2017.json").write_text(json.dumps(gt))
    assert "have no boxes" in error(["detect", "train", "--output-dir", out, "--data", str(coco), "--num-classes", "3"])
    gt["categories"].append({"id": 20, "name": "c"})  # the checkpoint has 11 classes
    (coco / "annotations" / "more_classes.json").write_text(json.dumps(gt))
    (coco / "val2017").mkdir()
    ann = ["--val-ann", "annotations/more_classes.json", "--allow-empty"]
    assert "class-count mismatch" in error(["detect", "eval", f"{out}/checkpoint.pth", "--data", str(coco), *ann])


def test_mask_results_score_100_when_they_are_the_ground_truth(tmp_path):
    from adn.detection.evaluate import coco_results

    root = write_digit_scenes(tmp_path / "d", seed=2, train=1, val=3)
    gt = json.loads((root / "annotations" / "instances_val.json").read_text())
    results = []
    for i in range(3):
        scene = make_scene(2, "val", i)
        output = {
            "boxes": torch.from_numpy(scene.boxes),
            "labels": torch.from_numpy(scene.labels) + 1,
            "scores": torch.ones(len(scene.labels)),
            "masks": torch.from_numpy(scene.masks).float()[:, None],  # torchvision's N x 1 x H x W probabilities
        }
        results += coco_results(i + 1, output, masks=True)
    coco = load_coco(gt)
    assert coco_map(coco, results, "bbox")["mAP"] == pytest.approx(100.0)
    assert coco_map(coco, results, "segm")["mAP"] == pytest.approx(100.0)
    results[0]["segmentation"] = mask_utils.encode(np.asfortranarray(np.zeros((96, 96), dtype=np.uint8)))
    results[0]["segmentation"]["counts"] = results[0]["segmentation"]["counts"].decode()
    assert coco_map(coco, results, "segm")["mAP"] < 100.0
