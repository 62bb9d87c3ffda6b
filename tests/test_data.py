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
    with pytest.raises(datasets.DataNotFoundError, match="cifar-10-batches-py"):
        datasets.load("cifar10", "train", tmp_path)
    with pytest.raises(datasets.DataNotFoundError, match="does not exist"):
        datasets.load("mnist", "train", tmp_path / "nope")


def test_mnist_and_fashion_from_shared_archives(shared_root):
    mnist = datasets.load("mnist", "test", shared_root)
    assert mnist.x.shape == (10000, 1, 28, 28) and mnist.y[:3].tolist() == [7, 2, 1]  # the known first labels
    fashion = datasets.load("fashion_mnist", "test", shared_root)
    assert fashion.x.shape == (10000, 1, 28, 28)
    assert torch.equal(fashion.y.bincount(), torch.full((10,), 1000))  # Fashion-MNIST's test set is balanced


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
    assert sub.x.shape == (100, 3, 32, 32) and len(datasets.load("cifar10_test300", "train", shared_root)) == 200
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
