"""Fashion-MNIST, the second built-in dataset (adn.data.fashion_mnist): tiny idx files written here, the lookup
order and its one-line error, and a check on the real data when Debian's dataset-fashion-mnist is installed."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from torchvision.datasets import FashionMNIST

from adn.data import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    FashionMNISTDataset,
    SeededDataset,
    build_datasets,
    build_eval_loader,
    read_idx,
    sample_seed,
)
from adn.data import fashion_mnist as fm

DEBIAN = fm.DEBIAN_DIR
HAVE_DEBIAN = all((DEBIAN / f"{stem}.gz").is_file() for stem in fm._STEMS)
GARMENTS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_copy(folder, n_train=6, n_test=4, compress=True, seed=0):
    """The four idx files of a tiny Fashion-MNIST (random 28x28 images, labels 0..9) in ``folder``; returns the
    arrays as {stem: array}."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays[f"{prefix}-images-idx3-ubyte"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{prefix}-labels-idx1-ubyte"] = (np.arange(n) * 3 % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        data = _idx_bytes(array)
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


@pytest.fixture()
def no_system_copy(tmp_path, monkeypatch):
    """Hide Debian's copy and any copy in the user's default root."""
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("ADN_DATA", str(tmp_path / "adn-data"))


def test_reads_tiny_gz_files_in_place(tmp_path, no_system_copy):
    arrays = _write_copy(tmp_path / "copy")
    files = sorted((tmp_path / "copy").iterdir())
    train, val, num_classes = build_datasets(image_size=28, dataset="fashion-mnist", root=tmp_path / "copy")
    assert sorted((tmp_path / "copy").iterdir()) == files  # nothing extracted or cached next to the files
    assert not (tmp_path / "adn-data").exists()
    assert isinstance(train, FashionMNIST) and train.folder == tmp_path / "copy"
    assert num_classes == 10 and train.classes == val.classes == GARMENTS
    assert (len(train), len(val)) == (6, 4)
    assert train.targets.tolist() == [0, 3, 6, 9, 2, 5] and val.targets.tolist() == [0, 3, 6, 9]
    # eval at 28 px is resize-free: undoing the normalisation gives back the file's pixels on 3 channels
    image, label = val[2]
    assert image.shape == (3, 28, 28) and image.dtype == torch.float32 and label == 6
    pixels = image * torch.tensor(FASHION_MNIST_STD).view(3, 1, 1) + torch.tensor(FASHION_MNIST_MEAN).view(3, 1, 1)
    expected = torch.from_numpy(arrays["t10k-images-idx3-ubyte"][2]).float() / 255
    assert torch.allclose(pixels, expected.expand(3, -1, -1), atol=1e-5)


def test_model_size_transforms_and_seeded_augmentation(tmp_path, no_system_copy):
    _write_copy(tmp_path / "copy")
    train, val, _ = build_datasets(image_size=32, dataset="fashion-mnist", root=tmp_path / "copy")
    assert train[0][0].shape == val[0][0].shape == (3, 32, 32)
    assert torch.equal(val[1][0], val[1][0])  # eval: deterministic
    seeded = SeededDataset(torch.utils.data.Subset(train, range(4)))  # as the trainer wraps it
    a, b = seeded[(1, sample_seed(0, 0, 0, 7))], seeded[(1, sample_seed(0, 0, 0, 7))]
    assert torch.equal(a[0], b[0]) and a[1] == b[1] == 3
    steps = [type(t).__name__ for t in train.transform.transforms]
    assert steps[:3] == ["Resize", "RandomCrop", "RandomHorizontalFlip"]  # light augmentation: shift + mirror
    assert train.transform.transforms[1].padding == [4, 4, 4, 4]
    loader, n = build_eval_loader(image_size=32, dataset="fashion-mnist", root=tmp_path / "copy", batch_size=3)
    images, labels = next(iter(loader))
    assert n == 10 and images.shape == (3, 3, 32, 32) and labels.tolist() == [0, 3, 6]


def test_lookup_order_root_then_debian_then_default_root(tmp_path, no_system_copy, monkeypatch):
    _write_copy(tmp_path / "debian", n_test=5)
    _write_copy(tmp_path / "adn-data" / "fashion-mnist" / "FashionMNIST" / "raw", n_test=3, compress=False)
    _write_copy(tmp_path / "mine" / "FashionMNIST" / "raw", n_test=7, compress=False)  # torchvision's layout
    assert len(FashionMNISTDataset("val", root=tmp_path / "mine")) == 7
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "debian")
    assert len(FashionMNISTDataset("val", root=tmp_path / "mine")) == 7  # an explicit root comes first
    (tmp_path / "empty").mkdir()
    assert len(FashionMNISTDataset("val", root=tmp_path / "empty")) == 5  # then Debian's copy
    assert len(FashionMNISTDataset("val")) == 5
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian")
    assert len(FashionMNISTDataset("val")) == 3  # then torchvision's layout under $ADN_DATA/fashion-mnist


def test_missing_copy_is_one_line_naming_both_ways(tmp_path, no_system_copy):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        build_datasets(image_size=32, dataset="fashion-mnist", root=tmp_path / "empty")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("Fashion-MNIST not found in ")
    assert str(tmp_path / "empty") in msg and str(tmp_path / "no-debian") in msg
    assert (
        "apt-get install dataset-fashion-mnist" in msg
        and f"--download to let torchvision fetch it into {tmp_path / 'empty'}" in msg
    )
    with pytest.raises(FileNotFoundError, match=f"fetch it into {tmp_path / 'adn-data' / 'fashion-mnist'}$"):
        build_eval_loader(image_size=32, dataset="fashion-mnist")


def test_download_goes_through_torchvision_into_root(tmp_path, no_system_copy, monkeypatch):
    def fake_download(self):  # torchvision's download, minus the network: files land in raw_folder, extracted
        _write_copy(tmp_path / "root" / "FashionMNIST" / "raw", n_test=2, compress=False)

    monkeypatch.setattr(FashionMNIST, "download", fake_download)
    val = FashionMNISTDataset("val", root=tmp_path / "root", download=True)
    assert len(val) == 2 and val.folder == tmp_path / "root" / "FashionMNIST" / "raw"

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried http://mirror/, got:\n<urlopen>\n")

    monkeypatch.setattr(FashionMNIST, "download", offline)
    with pytest.raises(RuntimeError) as info:
        FashionMNISTDataset("train", root=tmp_path / "elsewhere", download=True)
    assert "\n" not in str(info.value) and "could not download Fashion-MNIST" in str(info.value)
    assert "apt-get install dataset-fashion-mnist" in str(info.value)


def test_damaged_files_and_bad_arguments_are_one_line(tmp_path, no_system_copy):
    _write_copy(tmp_path / "copy")
    labels = tmp_path / "copy" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-9])  # cut inside the gzip stream
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz is damaged \(gzip: ") as info:
        FashionMNISTDataset("val", root=tmp_path / "copy")
    assert "\n" not in str(info.value)
    labels.write_bytes(gzip.compress(_idx_bytes(np.zeros(3, np.uint8))[:-1]))
    with pytest.raises(ValueError, match=r"is damaged \(2 data bytes for shape \(3,\)\)"):
        read_idx(labels)
    labels.write_bytes(_idx_bytes(np.zeros(3, np.uint8)))  # plain, but 3 labels for 4 images
    with pytest.raises(ValueError, match="do not fit together"):
        FashionMNISTDataset("val", root=tmp_path / "copy")
    with pytest.raises(ValueError, match="unknown built-in dataset 'mnist'; choose one of: digits, fashion-mnist"):
        build_datasets(image_size=32, dataset="mnist")
    with pytest.raises(ValueError, match="drop it to use the built-in fashion-mnist dataset"):
        build_datasets(str(tmp_path), image_size=32, dataset="fashion-mnist")
    with pytest.raises(ValueError, match="split must be 'train' or 'val'"):
        FashionMNISTDataset("test", root=tmp_path / "copy")


@pytest.mark.skipif(not HAVE_DEBIAN, reason="Debian's dataset-fashion-mnist is not installed")
def test_real_data_split_classes_and_normalisation_constants():
    train, val, num_classes = build_datasets(image_size=32, dataset="fashion-mnist")
    assert train.folder == DEBIAN and num_classes == 10
    assert (len(train), len(val)) == (60_000, 10_000)  # the standard split: train / test as val
    assert train.data.shape == (60_000, 28, 28) and train.data.dtype == torch.uint8
    assert np.bincount(train.targets.numpy()).tolist() == [6000] * 10
    assert np.bincount(val.targets.numpy()).tolist() == [1000] * 10
    x = train.data.numpy().astype(np.float64) / 255  # the constants are the train split's statistics
    assert x.mean() == pytest.approx(FASHION_MNIST_MEAN[0], abs=1e-4)
    assert x.std() == pytest.approx(FASHION_MNIST_STD[0], abs=1e-4)
    images = torch.stack([val[i][0] for i in range(300)])  # a few hundred real images through the eval preset
    assert images.shape == (300, 3, 32, 32) and torch.equal(images[:, 0], images[:, 2])
    assert abs(images.mean().item()) < 0.15 and 0.85 < images.std().item() < 1.15  # about standardised
    assert {val[i][1] for i in range(300)} == set(range(10))
