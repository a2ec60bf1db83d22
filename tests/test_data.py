"""Datasets, transforms, samplers and mixup/cutmix (adn.data); Fashion-MNIST in test_fashion_mnist.py."""

from __future__ import annotations

import pickle
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler, Subset, default_collate

from adn import data
from adn.data import (
    BUILTIN_NAME,
    RASampler,
    ResumableSampler,
    SeededDataset,
    SeededRandomSampler,
    SeededSample,
    batch_seed,
    build_datasets,
    build_eval_loader,
    build_samplers,
    digits,
    loaders,
    mixup_cutmix_collate,
    sample_seed,
)

# ---------------------------------------------------------------------------------------- built-in digits


def test_builtin_split_sizes_classes_and_determinism():
    train, val, num_classes = build_datasets(None, image_size=32)
    assert num_classes == 10
    assert (len(train), len(val)) == (1438, 359)  # 1,797 images, 80/20 per class
    train_idx, val_idx = digits._digits_split()
    assert not set(train_idx) & set(val_idx) and len(train_idx) + len(val_idx) == 1797
    # stratified: every class keeps ~20 % of its images in val
    _, labels = digits._digits_arrays()
    for c, n in Counter(labels.tolist()).items():
        assert abs(Counter(val.targets)[c] - 0.2 * n) <= 1
    # independent of the global RNG
    torch.manual_seed(123)
    np.random.seed(123)
    digits._digits_split.cache_clear()
    assert np.array_equal(digits._digits_split()[1], val_idx)
    assert "Handwritten Digits" in BUILTIN_NAME and "BSD-3-Clause" in BUILTIN_NAME


def test_builtin_raw_images_and_normalisation_constants():
    train, _, _ = build_datasets(None, image_size=32)
    assert train.images.shape == (1438, 3, 8, 8) and train.images.dtype == torch.uint8
    assert train.images.max() == 255 and train.images.min() == 0  # 0..16 scaled to the full uint8 range
    x = train.images.float() / 255
    assert x.mean().item() == pytest.approx(data.DIGITS_MEAN[0], abs=1e-3)
    assert x.std().item() == pytest.approx(data.DIGITS_STD[0], abs=1e-3)


@pytest.mark.parametrize("auto_augment", [None, "ra", "ta_wide", "augmix", "imagenet"])
def test_builtin_transforms_give_image_size(auto_augment):
    train, val, _ = build_datasets(None, image_size=24, auto_augment=auto_augment, random_erase=0.5)
    for ds in (train, val):
        img, label = ds[3]
        assert img.shape == (3, 24, 24) and img.dtype == torch.float32 and type(img) is torch.Tensor
        assert isinstance(label, int) and 0 <= label < 10
    # the val transform is deterministic, the train one is not
    assert torch.equal(val[0][0], val[0][0])
    assert any(not torch.equal(train[0][0], train[0][0]) for _ in range(5))


def test_builtin_crop_sizes_and_interpolation():
    train, val, _ = build_datasets(None, image_size=32, train_crop_size=28, val_crop_size=30, interpolation="bicubic")
    assert train[0][0].shape == (3, 28, 28) and val[0][0].shape == (3, 30, 30)
    with pytest.raises(ValueError, match="unknown interpolation 'lanczos'"):
        build_datasets(None, image_size=32, interpolation="lanczos")
    with pytest.raises(ValueError, match="auto-augment"):
        build_datasets(None, image_size=32, auto_augment="autoaug")


def test_builtin_eval_loader():
    loader, num_classes = build_eval_loader(None, image_size=16, batch_size=100)
    images, labels = next(iter(loader))
    assert num_classes == 10 and images.shape == (100, 3, 16, 16) and labels.dtype == torch.int64
    assert len(loader.dataset) == 359


# --------------------------------------------------------------------------------------------- ImageFolder


def _write_tree(root: Path, classes_per_split: dict[str, list[str]], per_class: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for split, classes in classes_per_split.items():
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (20 + 3 * i, 30, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


def test_imagefolder_class_count_and_sizes(tmp_path):
    root = _write_tree(tmp_path, {"train": ["ant", "bee", "cat"], "val": ["ant", "bee", "cat"]})
    train, val, num_classes = build_datasets(str(root), image_size=16, auto_augment="ta_wide", random_erase=0.5)
    assert num_classes == 3 and len(train) == 6 and len(val) == 6
    assert train.classes == val.classes == ["ant", "bee", "cat"]
    assert train[0][0].shape == (3, 16, 16) and val[5][0].shape == (3, 16, 16) and val[5][1] == 2
    pickle.dumps(train)  # DataLoader workers need it picklable
    loader, n = build_eval_loader(str(root), image_size=16, batch_size=4)
    assert n == 3 and next(iter(loader))[0].shape == (4, 3, 16, 16)


def test_imagefolder_default_sizes_follow_reference():
    assert loaders._sizes(224, None, None, None) == (224, 256, 224)
    assert loaders._sizes(224, 176, 232, None) == (176, 232, 224)
    assert loaders._sizes(224, None, None, 288) == (224, 256, 288)
    assert loaders._sizes(32, None, None, None) == (32, 37, 32)


def _one_line_error(exc_type, match, fn, *args, **kwargs):
    with pytest.raises(exc_type, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_imagefolder_errors_are_one_line(tmp_path):
    build = lambda p: build_datasets(str(p), image_size=16)  # noqa: E731
    _one_line_error(FileNotFoundError, "does not exist", build, tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    _one_line_error(NotADirectoryError, "not a directory", build, tmp_path / "file.txt")
    (tmp_path / "a" / "train").mkdir(parents=True)
    msg = _one_line_error(FileNotFoundError, "no val/ folder", build, tmp_path / "a")
    assert "train/<class>/<image>" in msg  # names the expected layout
    (tmp_path / "a" / "val").mkdir()
    _one_line_error(ValueError, "no class folders", build, tmp_path / "a")
    (tmp_path / "a" / "train" / "x").mkdir()
    (tmp_path / "a" / "val" / "x").mkdir()
    _one_line_error(ValueError, "no images found", build, tmp_path / "a")
    root = _write_tree(tmp_path / "b", {"train": ["x", "y"], "val": ["x", "z"]}, per_class=1)
    msg = _one_line_error(ValueError, "do not match", build, root)
    assert "missing in val/: y" in msg and "not in train/: z" in msg
    _one_line_error(ValueError, "do not match", build_eval_loader, str(root), image_size=16)


# ------------------------------------------------------------------------------------------------ samplers


@pytest.mark.parametrize("reps,replicas", [(3, 3), (2, 4), (4, 2)])
def test_rasampler_repeats_each_index_across_replicas(reps, replicas):
    dataset = list(range(48))
    samplers = [RASampler(dataset, num_replicas=replicas, rank=r, repetitions=reps, seed=1) for r in range(replicas)]
    per_rank = [list(s) for s in samplers]
    assert all(len(idx) == len(s) == 48 // replicas for idx, s in zip(per_rank, samplers, strict=False))
    counts = Counter(i for idx in per_rank for i in idx)
    assert set(counts.values()) == {reps} and len(counts) == 48 // reps  # each chosen image `reps` times
    if reps <= replicas:  # ... and every copy on a different replica (augmented independently)
        assert all(len(set(idx)) == len(idx) for idx in per_rank)
    first = per_rank[0]
    samplers[0].set_epoch(1)
    assert list(samplers[0]) != first and list(samplers[0]) == list(samplers[0])


def test_rasampler_needs_replicas_without_process_group():
    with pytest.raises(RuntimeError, match="num_replicas and rank"):
        RASampler(list(range(4)))


def test_build_samplers_single_process_and_distributed():
    train, val, _ = build_datasets(None, image_size=8)
    tr, va = build_samplers(train, val, distributed=False, seed=5)
    assert isinstance(tr, RandomSampler) and isinstance(va, SequentialSampler)
    tr.set_epoch(2)
    order = list(tr)
    assert sorted(order) == list(range(len(train)))
    tr2, _ = build_samplers(train, val, distributed=False, seed=5)
    tr2.set_epoch(2)
    assert list(tr2) == order  # same (seed, epoch) -> same order: resume-exact
    tr2.set_epoch(3)
    assert list(tr2) != order
    ra, _ = build_samplers(train, val, distributed=False, ra_sampler=True, ra_reps=2)
    assert isinstance(ra, RASampler) and len(ra) == len(train)


def test_build_samplers_distributed_uses_process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        train, val = list(range(10)), list(range(5))
        tr, va = build_samplers(train, val, distributed=True)
        assert isinstance(tr, DistributedSampler) and isinstance(va, DistributedSampler)
        assert list(va) == list(range(5))  # no shuffling of the val set
        tr, _ = build_samplers(train, val, distributed=True, ra_sampler=True, ra_reps=4)
        assert isinstance(tr, RASampler) and tr.repetitions == 4 and tr.num_replicas == 1
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------ mixup / cutmix


@pytest.mark.parametrize("mixup,cutmix", [(0.2, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_cutmix_soft_targets(mixup, cutmix):
    torch.manual_seed(0)
    collate = mixup_cutmix_collate(10, mixup_alpha=mixup, cutmix_alpha=cutmix)
    batch = [(torch.rand(3, 8, 8), i % 10) for i in range(16)]
    images, targets = pickle.loads(pickle.dumps(collate))(batch)
    assert images.shape == (16, 3, 8, 8) and targets.shape == (16, 10)
    assert torch.allclose(targets.sum(1), torch.ones(16)) and targets.min() >= 0
    assert (targets.max(1).values < 1).any()  # really mixed, not one-hot


def test_mixup_cutmix_off_and_invalid():
    assert mixup_cutmix_collate(10) is None
    with pytest.raises(ValueError, match="mixup-alpha"):
        mixup_cutmix_collate(10, mixup_alpha=-1.0)


# ------------------------------------------------------------------------------------------ per-sample seeding


def _global_rng() -> tuple[torch.Tensor, tuple]:
    return torch.get_rng_state(), random.getstate()


def _assert_global_rng(state: tuple[torch.Tensor, tuple]) -> None:
    assert torch.equal(torch.get_rng_state(), state[0]), "torch's global CPU generator was touched"
    assert random.getstate() == state[1], "Python's random module was touched"


def _keyed_loader(train, collate, batch_size=8, skip=0):
    """What the trainer builds: ResumableSampler keys -> SeededDataset -> (mixup) collate. The loader gets its
    own generator: a DataLoader without one draws its base seed from the global generator on every iter()."""
    sampler = ResumableSampler(SeededRandomSampler(train, seed=3), seed=3)
    sampler.set_epoch(1)
    sampler.skip(skip)
    return DataLoader(
        SeededDataset(train), batch_size=batch_size, sampler=sampler, collate_fn=collate, generator=torch.Generator()
    )


def test_seeded_dataset_augments_by_key_and_leaves_the_global_rng_alone():
    # ta_wide draws from torch, random erasing too; the random crop too: every kind of draw is exercised
    train, _, _ = build_datasets(None, image_size=16, auto_augment="ta_wide", random_erase=0.5)
    seeded = SeededDataset(train)
    random.seed(1)
    torch.manual_seed(1)
    before = _global_rng()
    first = [seeded[(i, sample_seed(0, 0, 0, i))] for i in range(8)]
    _assert_global_rng(before)
    torch.manual_seed(99)  # another global state: same samples, as the key alone decides
    random.seed(99)
    again = [seeded[(i, sample_seed(0, 0, 0, i))] for i in range(8)]
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, again, strict=True))
    other = seeded[(0, sample_seed(0, 1, 0, 0))]  # same image, another key: another augmentation
    assert not torch.equal(other[0], first[0][0])
    assert isinstance(first[0], SeededSample) and first[0].seed == sample_seed(0, 0, 0, 0)
    image, label = first[0]  # unpacks, pickles and collates like the plain tuple
    restored = pickle.loads(pickle.dumps(first[0]))
    assert torch.equal(restored[0], image) and restored.seed == first[0].seed
    assert [t.shape for t in default_collate(first)] == [(8, 3, 16, 16), (8,)]


def test_seeded_dataset_restores_the_global_rng_when_loading_fails():
    class Failing(torch.utils.data.Dataset):
        def __getitem__(self, i):
            torch.rand(1), random.random()
            raise OSError("disk gone")

    before = _global_rng()
    with pytest.raises(OSError, match="disk gone"):
        SeededDataset(Failing())[(0, 5)]
    _assert_global_rng(before)


@pytest.mark.parametrize("mixup,cutmix", [(0.2, 0.0), (0.8, 1.0)])
def test_mixup_batch_is_a_function_of_its_keys_and_leaves_the_global_rng_alone(mixup, cutmix):
    train, _, _ = build_datasets(None, image_size=16, auto_augment="ra")
    train = Subset(train, range(32))
    collate = mixup_cutmix_collate(10, mixup_alpha=mixup, cutmix_alpha=cutmix)
    torch.manual_seed(5)
    before = _global_rng()
    epoch = list(_keyed_loader(train, collate))
    _assert_global_rng(before)  # sampling, augmentation and mixing drew nothing from the global streams
    assert (epoch[0][1].max(1).values < 1).any()  # really mixed
    torch.manual_seed(6)
    again = list(_keyed_loader(train, collate))
    resumed = list(_keyed_loader(train, collate, skip=2 * 8))  # mid-epoch resume: the epoch's tail, bit-exact
    assert len(epoch) == 4 and len(resumed) == 2
    for (x, y), (x2, y2) in zip(epoch, again, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    for (x, y), (x2, y2) in zip(epoch[2:], resumed, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_mixup_with_plain_samples_draws_from_the_global_rng():
    collate = mixup_cutmix_collate(10, mixup_alpha=1.0)
    batch = [(torch.rand(3, 4, 4), i) for i in range(4)]
    torch.manual_seed(0)
    a = collate(batch)[1]
    torch.manual_seed(0)
    assert torch.equal(collate(batch)[1], a)
    keyed = [SeededSample(s, 10 + i) for i, s in enumerate(batch)]
    b = collate(keyed)[1]
    assert torch.equal(collate(keyed)[1], b)
    assert batch_seed([10, 11, 12, 13]) != batch_seed([13, 12, 11, 10])  # the order of the batch counts


def test_first_image_size_reads_the_header_and_never_raises(tmp_path):
    """What decides the "your photos are shrunk" note: the first image's size, or None when it cannot be read."""
    from torchvision.datasets import ImageFolder

    from adn.data.build import _first_image_size

    (tmp_path / "a").mkdir()
    Image.new("RGB", (120, 90)).save(tmp_path / "a" / "0.png")
    assert _first_image_size(ImageFolder(str(tmp_path))) == (120, 90)
    (tmp_path / "a" / "0.png").write_bytes(b"not an image")
    assert _first_image_size(ImageFolder(str(tmp_path))) is None
    assert _first_image_size(list(range(3))) is None  # no samples list: unknown
