"""CIFAR-100 and image folders (issue 20, part 4), on small files the tests write in the real formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stridelab.data import cifar100
from stridelab.data.datamodule import Cifar100DataModule
from stridelab.data.imagefolder import ImageFolderDataModule, decode, write_generated
from stridelab.errors import ConfigError, DataError


# -- CIFAR-100 -----------------------------------------------------------------------------------
def test_cifar100_record_layout_fine_and_coarse_labels(tmp_path):
    img = np.zeros((1, 3, 32, 32), np.uint8)
    img[0, 0, 0, 1], img[0, 2, 31, 31] = 11, 33
    raw = bytearray(cifar100.RECORD_BYTES)
    raw[0], raw[1] = 4, 72  # coarse 4 (fruit_and_vegetables), fine 72 (seal): the official byte order
    raw[2 + 1], raw[2 + 2048 + 1023] = 11, 33
    (tmp_path / "one.bin").write_bytes(bytes(raw))
    x, fine = cifar100.read_binary(tmp_path / "one.bin", "fine")
    assert fine.tolist() == [72] and np.array_equal(x, img) and cifar100.FINE_CLASSES[72] == "seal"
    assert cifar100.read_binary(tmp_path / "one.bin", "coarse")[1].tolist() == [4]
    assert len(cifar100.FINE_CLASSES) == 100 and len(cifar100.COARSE_CLASSES) == 20


def test_cifar100_data_module_reads_the_binary_version(tmp_path):
    cifar100.write_generated(tmp_path, train_size=60, test_size=20)
    dm = Cifar100DataModule(root=str(tmp_path), download=False, val_size=10, batch_size=8)
    s = dm.load()
    assert dm.num_classes == 100 and s.train[0].shape == (50, 3, 32, 32) and len(s.tests["test"][1]) == 20
    coarse = Cifar100DataModule(root=str(tmp_path), download=False, labels="coarse", val_size=0, batch_size=8)
    assert coarse.num_classes == 20 and coarse.load().train[1].max() < 20
    with pytest.raises(ConfigError, match="Unknown data.labels 'superclass'"):
        Cifar100DataModule(root=str(tmp_path), labels="superclass")


def test_cifar100_damaged_or_missing_files_are_named(tmp_path):
    directory = cifar100.write_generated(tmp_path, train_size=6, test_size=4)
    (directory / "test.bin").write_bytes((directory / "test.bin").read_bytes()[:-7])
    with pytest.raises(DataError, match=r"test.bin holds .* not a whole number of 3074-byte CIFAR-100 records"):
        cifar100.load_cifar100(tmp_path, download_if_missing=False)
    (directory / cifar100.GENERATED_MARK).unlink()  # the real files must hold 50000 and 10000 records
    with pytest.raises(DataError, match="train.bin holds .* the official file holds 50000 records"):
        cifar100.load_cifar100(tmp_path, download_if_missing=False)
    with pytest.raises(DataError, match=r"CIFAR-100 is not under .* could not be downloaded \(no network"):
        cifar100.load_cifar100(tmp_path / "elsewhere")  # the tests have no network


# -- image folders -------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["imagenet", "tiny"])
def test_image_folders_of_both_layouts_are_read(tmp_path, layout):
    write_generated(tmp_path, train_size=60, test_size=20, layout=layout)
    dm = ImageFolderDataModule(str(tmp_path), image_size=24, batch_size=8, num_workers=0, val_size=10)
    s = dm.load()
    assert dm.num_classes == 10 and dm.classes[0] == "checker" and s.info["train_size"] == 50
    # the labels follow the class folders (Tiny-ImageNet's val: its annotations file)
    files = dm.files["test"]
    assert all(f"/{dm.classes[y]}/" in p or layout == "tiny" for p, y in zip(files.paths, files.labels))
    test_images = np.asarray(s.tests["test"][0][[0, 3]])  # decoded on demand, resized + centre-cropped
    assert test_images.shape == (2, 3, 24, 24) and test_images.dtype == np.uint8
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 24, 24) and x.dtype == torch.uint8 and y.dtype == torch.int64
    z = dm.on_after_batch_transfer((x, y), 0)[0]  # normalised on the device
    assert z.dtype == torch.float32 and abs(float(z.mean())) < 3


def test_tiny_imagenet_val_labels_come_from_the_annotations(tmp_path):
    write_generated(tmp_path, train_size=20, test_size=10, layout="tiny")
    lines = (tmp_path / "val" / "val_annotations.txt").read_text().splitlines()
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=4, num_workers=0)
    dm.load()
    named = {line.split("\t")[0]: line.split("\t")[1] for line in lines}
    assert [dm.classes[y] for y in dm.files["test"].labels] == [
        named[p.rsplit("/", 1)[1]] for p in dm.files["test"].paths
    ]
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tunicorn\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match=r"val_annotations.txt, line 1: .* does not name an image and one of"):
        ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=4).load()


def test_bad_image_folders_are_refused_in_one_paragraph(tmp_path):
    with pytest.raises(DataError, match=r"is not an image folder data set: it needs a train/ and a val/ folder"):
        ImageFolderDataModule(str(tmp_path), batch_size=4).load()
    write_generated(tmp_path, train_size=20, test_size=10)
    (tmp_path / "train" / "empty_class").mkdir()
    with pytest.raises(DataError, match=r"class folders without images \(empty_class\)"):
        ImageFolderDataModule(str(tmp_path), batch_size=4).load()
    (tmp_path / "train" / "empty_class").rmdir()
    bad = sorted((tmp_path / "train" / "disk").iterdir())[0]
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match=rf"cannot read the image {bad} .* damaged, empty or not an image"):
        decode(str(bad))
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=20, num_workers=1)
    dm.load()
    with pytest.raises(DataError, match=f"cannot read the image {bad}") as err:  # raised from a worker, unwrapped
        list(dm.train_dataloader())
    assert "Traceback" not in str(err.value)
    with pytest.raises(ConfigError, match="data.image_size=4 / data.crop_ratio=0.875"):
        ImageFolderDataModule(str(tmp_path), image_size=4)


def test_a_run_on_an_image_folder_trains_and_measures(tmp_path, run_main):
    write_generated(tmp_path / "folder", train_size=64, test_size=32, layout="tiny")
    args = ["data=imagefolder", f"data.root={tmp_path / 'folder'}", "data.image_size=32", "data.batch_size=16"]
    args += ["data.num_workers=0", "trainer=cpu", "trainer.max_epochs=1", "model.width=8", "metrics=quick"]
    assert run_main([*args, "metrics.subset_size=16", "logger=csv", "save_weights=false"]) == 0
    metrics = json.loads(next((tmp_path / "logs" / "runs").glob("*/metrics.json")).read_text())
    assert metrics["status"] == "ok" and metrics["data"] == "imagefolder" and metrics["data/test_size"] == 32
    assert "shift/circular_consistency" in metrics and "probe/spc" in metrics
    assert run_main(["data=imagefolder", "trainer=cpu"]) == 2  # data.root is required: one paragraph, exit 2
