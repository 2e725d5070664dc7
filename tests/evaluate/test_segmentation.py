"""The segmentation task: images with a label map, a U-Net with a logit per class and pixel,
intersection over union; and its train-on-generated experiment."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from radardiff.data.dataset_file import write_dataset
from radardiff.data.maps import MapChannel
from radardiff.errors import DataError
from radardiff.evaluate.classification import (
    ClassificationConfig,
    default_classification,
    run_classification,
)
from radardiff.evaluate.measures.skill import segmentation_score
from radardiff.evaluate.tasks import load_segmented, predict, train_task

COVER = MapChannel("cover", classes=("water", "land", "ship"))


def _labelled(path, n=48, size=16, seed=0, channel=COVER, contrast=2.0):
    """Images whose class is readable pixel by pixel: water -1, land +1, ship +3 (x contrast/2),
    plus noise; the label map of blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    maps = np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(3, 7)]
        maps[i, 0] = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.float32)
        sy, sx = rng.integers(0, size, 2)
        maps[i, 0, sy, sx] = 2.0
    level = np.array([-1.0, 1.0, 3.0], np.float32) * contrast / 2
    img = level[maps.astype(np.int64)] + 0.3 * rng.normal(size=maps.shape).astype(np.float32)
    img[:, :, 0, 0] = np.nan  # no data: never scored
    write_dataset(path, img, kind="sar_backscatter", units="dB", maps=maps,
                  map_channels=[channel])  # fmt: skip
    return path


def test_segmentation_score_golden():
    labels = np.array([[[0, 0], [1, 2]], [[1, 1], [-1, 0]]])
    logits = np.zeros((2, 3, 2, 2))
    pred = np.array([[[0, 1], [1, 1]], [[1, 1], [2, 0]]])
    for c in range(3):
        logits[:, c][pred == c] = 1.0
    s = segmentation_score(logits, labels)
    # water: 2 of 3 right, 1 false land -> inter 2, union 3; land: inter 3, union 3 + 2 = 5;
    # ship: inter 0, union 1 (the pixel with no label is not scored)
    assert s.iou == pytest.approx([2 / 3, 3 / 5, 0.0])
    assert s.mean_iou == pytest.approx((2 / 3 + 3 / 5) / 3)
    assert s.pixel_accuracy == pytest.approx(5 / 7) and s.n == 7


def test_load_segmented_matches_classes_by_name(tmp_path):
    a = _labelled(tmp_path / "a.h5", n=4)
    other = MapChannel("cover", classes=("land", "water", "ship"))
    b = _labelled(tmp_path / "b.h5", n=4, channel=other)
    p = load_segmented([a, b])
    assert p.classes == ["water", "land", "ship"] and p.label_map == "cover"
    assert (p.targets[:, 0, 0] == -1).all()  # no data, no label
    raw_b = load_segmented(b).targets  # b in its own order: land 0, water 1
    swapped = np.where(raw_b == 0, 1, np.where(raw_b == 1, 0, raw_b))
    np.testing.assert_array_equal(p.targets[4:], swapped)
    extra = MapChannel("cover", classes=("water", "land", "ship", "ice"))
    c = tmp_path / "c.h5"
    m = np.full((2, 1, 16, 16), 3.0, np.float32)
    write_dataset(c, np.zeros((2, 1, 16, 16), np.float32), kind="sar_backscatter", units="dB",
                  maps=m, map_channels=[extra])  # fmt: skip
    with pytest.raises(DataError, match="class 'ice' of label map 'cover' is not among"):
        load_segmented([a, c])
    d = tmp_path / "d.h5"
    write_dataset(d, np.zeros((2, 1, 8, 8), np.float32), kind="generic", units="x")
    with pytest.raises(DataError, match="segmentation needs a label map; it holds none"):
        load_segmented(d)


def test_segmenter_learns_readable_classes(tmp_path):
    p = load_segmented(_labelled(tmp_path / "t.h5", n=64))
    cfg = default_classification(task="segmentation", steps=80, val_every=20, augment=True)
    trained = train_task(p, cfg)
    assert trained.meta["label_map"] == "cover"
    test = load_segmented(_labelled(tmp_path / "u.h5", n=16, seed=5))
    s = segmentation_score(predict(trained.net, trained.meta, test.inputs), test.targets)
    assert s.iou[0] > 0.9 and s.iou[1] > 0.9  # water and land; single-pixel ships are harder


def test_segmentation_experiment_and_cli(tmp_path, capsys):
    real = _labelled(tmp_path / "real.h5", seed=0)
    test = _labelled(tmp_path / "test.h5", seed=1)
    faint = _labelled(tmp_path / "faint.h5", seed=2, contrast=-2.0)  # water bright: wrong
    cfg = ClassificationConfig(
        train_real=str(real), test_real=str(test), generated=str(faint), seeds=(0,),
        training=default_classification(task="segmentation", steps=60, val_every=20),
    )  # fmt: skip
    result = run_classification(cfg, tmp_path / "exp")
    iou = {r["set"]: r["mean_iou"] for r in result["results"]}
    assert set(iou) == {"real", "generated", "real+generated"}
    assert iou["real"] > 0.55 and iou["real"] > iou["generated"] + 0.2
    assert json.loads((tmp_path / "exp" / "segmentation.json").read_text())["results"]
    assert "intersection over union per class" in (tmp_path / "exp" / "segmentation.md").read_text()
    from radardiff.report.html import write_downstream_report

    page = write_downstream_report(tmp_path / "exp").read_text()
    assert "<h3>segmentation</h3>" in page and "mean IoU" in page
    code, out, _ = run_cli(["downstream", "train", real, "--task", "segmentation", "--steps", 20,
                            "--out", tmp_path / "net"], capsys)  # fmt: skip
    assert code == 0 and "validation mean IoU" in out
    code, out, _ = run_cli(["downstream", "test", tmp_path / "net", test, "--json"], capsys)
    assert code == 0 and 0 <= json.loads(out)["mean_iou"] <= 1
