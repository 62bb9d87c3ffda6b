import pickle

import numpy as np
import pytest
import torch

from bayesrobust import data as datasets


def test_mnist5k_is_embedded_real_mnist(mnist5k_train, mnist5k_test):
    assert mnist5k_train.x.shape == (4000, 1, 28, 28) and mnist5k_test.x.shape == (1000, 1, 28, 28)
    assert mnist5k_train.x.dtype == torch.float32
    assert 0.0 <= float(mnist5k_train.x.min()) and float(mnist5k_train.x.max()) == 1.0
    assert torch.equal(mnist5k_test.y.bincount(), torch.full((10,), 100))
    # the partition is disjoint and fixed
    assert not set(mnist5k_train.index.tolist()) & set(mnist5k_test.index.tolist())
    again = datasets.load("mnist5k", "test")
    assert torch.equal(again.index, mnist5k_test.index)


def test_balanced_subset_is_balanced_seeded_and_without_replacement(mnist5k_test):
    sub = datasets.balanced_subset(mnist5k_test, 50, seed=3)
    assert torch.equal(sub.y.bincount(), torch.full((10,), 5))
    assert len(set(sub.index.tolist())) == 50
    assert torch.equal(sub.index, datasets.balanced_subset(mnist5k_test, 50, seed=3).index)
    assert not torch.equal(sub.index, datasets.balanced_subset(mnist5k_test, 50, seed=4).index)
    assert torch.all(sub.index[1:] > sub.index[:-1])
    odd = datasets.balanced_subset(mnist5k_test, 13)
    assert len(odd) == 13 and int(odd.y.bincount().max()) == 2


def test_balanced_subset_errors(mnist5k_test):
    with pytest.raises(ValueError, match="n_inputs must be positive, got 0"):
        datasets.balanced_subset(mnist5k_test, 0)
    with pytest.raises(ValueError, match="needs 101 images of class 0"):
        datasets.balanced_subset(mnist5k_test, 1010)


def test_all_images_of_an_unequal_split_are_the_split_itself(mnist5k_test):
    """Fashion-MNIST's evaluation asks for all 10,000 MNIST test images as OOD set; MNIST's classes are unequal,
    so no balanced subset of that size exists, and the whole split is the answer."""
    uneven = mnist5k_test.subset(torch.arange(len(mnist5k_test) - 7))  # 7 images fewer: classes unequal
    assert datasets.balanced_or_whole(uneven, len(uneven)) is uneven
    assert datasets.balanced_or_whole(uneven, 10 ** 6) is uneven
    half = datasets.balanced_or_whole(uneven, 500, seed=3)
    assert half.y.bincount().tolist() == [50] * 10
    assert torch.equal(half.index, datasets.balanced_subset(uneven, 500, seed=3).index)
    # Between the largest always-possible balanced size and the split size: refused, naming the caller's option
    # and the largest size that always works (10 x the smallest class).
    smallest = int(uneven.y.bincount().min())
    assert datasets.balanced_or_whole(uneven, smallest * 10, seed=3).y.bincount().tolist() == [smallest] * 10
    with pytest.raises(ValueError, match=rf"^n_images={len(uneven) - 1} needs .* at most {smallest * 10} images"):
        datasets.balanced_or_whole(uneven, len(uneven) - 1, name="n_images")


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown dataset 'mnsit'; expected one of mnist5k, mnist, "):
        datasets.load("mnsit", "train")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        datasets.load("mnist5k", "val")
    with pytest.raises(ValueError, match="pass data_root"):
        datasets.load("mnist", "train")


def test_missing_data_says_where_it_looked(tmp_path):
    with pytest.raises(datasets.DataNotFoundError, match=r"looked for train-images-idx3-ubyte.*FashionMNIST/raw"):
        datasets.load("fashion_mnist", "train", tmp_path)
    with pytest.raises(datasets.DataNotFoundError,
                       match=r"dataset 'cifar10' not found: looked for .*cifar-10-batches-py"):
        datasets.load("cifar10", "train", tmp_path)
    with pytest.raises(datasets.DataNotFoundError, match=r"data root .*nope does not exist \(dataset 'mnist'\)"):
        datasets.load("mnist", "train", tmp_path / "nope")


#: Images per class of the MNIST splits (LeCun et al.; the counts every MNIST description lists).
MNIST_COUNTS = {"test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
                "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]}
#: Mean pixel value in [0, 1] (the 0.1307 of every MNIST normalisation; 0.1325 on the test split).
MNIST_MEANS = {"train": 0.130660, "test": 0.132515}


@pytest.mark.parametrize("split", ["test", "train"])
def test_mnist_from_shared_archives(shared_root, split):
    mnist = datasets.load("mnist", split, shared_root)
    n = {"test": 10000, "train": 60000}[split]
    assert mnist.x.shape == (n, 1, 28, 28) and mnist.x.dtype == torch.float32 and mnist.y.dtype == torch.int64
    assert mnist.y.bincount().tolist() == MNIST_COUNTS[split]
    first = {"test": [7, 2, 1, 0, 4], "train": [5, 0, 4, 1, 9]}[split]  # the well-known first digits
    assert mnist.y[:5].tolist() == first
    assert float(mnist.x.min()) == 0.0 and float(mnist.x.max()) == 1.0
    assert float(mnist.x.double().mean()) == pytest.approx(MNIST_MEANS[split], abs=1e-5)
    assert torch.equal(mnist.x * 255, (mnist.x * 255).round())  # bytes / 255, nothing else
    assert torch.equal(mnist.index, torch.arange(n)) and (mnist.name, mnist.split) == ("mnist", split)


def test_fashion_mnist_from_shared_archives(shared_root):
    for split, n in (("test", 10000), ("train", 60000)):
        fashion = datasets.load("fashion_mnist", split, shared_root)
        assert fashion.x.shape == (n, 1, 28, 28)
        assert fashion.y.bincount().tolist() == [n // 10] * 10  # Fashion-MNIST is balanced in both splits
        assert fashion.y[:2].tolist() == {"train": [9, 0], "test": [9, 2]}[split]  # ankle boot, then ...
        assert float(fashion.x.min()) == 0.0 and float(fashion.x.max()) == 1.0
    assert datasets.dataset_info("fashion_mnist").classes[9] == "Ankle boot"


def test_idx_reader_reads_uncompressed_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.arange(2 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(2, 28, 28)
    header = np.array([0x0803, 2, 28, 28], dtype=">i4").tobytes()
    (raw / "t10k-images-idx3-ubyte").write_bytes(header + images.tobytes())
    (raw / "t10k-labels-idx1-ubyte").write_bytes(np.array([0x0801, 2], dtype=">i4").tobytes() + bytes([7, 3]))
    test = datasets.load("mnist", "test", tmp_path)
    assert test.y.tolist() == [7, 3]
    np.testing.assert_allclose(test.x[:, 0].numpy() * 255, images, atol=1e-4)


def test_cifar10_subset_and_full_loader(shared_root, tmp_path, monkeypatch):
    sub = datasets.load("cifar10_test300", "test", shared_root)
    first = datasets.load("cifar10_test300", "train", shared_root)
    assert sub.x.shape == (100, 3, 32, 32) and first.x.shape == (200, 3, 32, 32)
    assert torch.equal(first.index, torch.arange(200)) and torch.equal(sub.index, torch.arange(200, 300))
    # the first images are CIFAR-10 test images 0, 1, ...: cat, ship, ship, airplane, frog, frog, automobile
    assert first.y[:7].tolist() == [3, 8, 8, 0, 6, 6, 1]
    assert float(first.x.min()) == 0.0 and float(first.x.max()) == 1.0
    raw = np.load(shared_root / "cifar10" / "test_300.npz", allow_pickle=False)
    np.testing.assert_array_equal(first.x[5].permute(1, 2, 0).numpy() * 255, raw["x"][5].astype(np.float32))
    # the full-CIFAR path goes through torchvision; write tiny batches in the real (pickle) format
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [1, 2, 3, 4]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(datasets.CIFAR)}, f)
    import torchvision.datasets.cifar as tv_cifar
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)  # md5s are of the real files
    train = datasets.load("cifar10", "train", tmp_path)
    assert train.x.shape == (20, 3, 32, 32) and train.y[:4].tolist() == [1, 2, 3, 4]
    assert 0 <= float(train.x.min()) and float(train.x.max()) <= 1
