"""Class value: the classification task and its experiment (train on real, generated, both;
test on held-out real), on labelled sets made here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from radardiff.data.dataset_file import write_dataset
from radardiff.errors import DataError
from radardiff.evaluate.classification import (
    ClassificationConfig,
    default_classification,
    labelled_samples,
    run_classification,
)
from radardiff.evaluate.downstream import score_saved
from radardiff.evaluate.measures.skill import classification_score
from radardiff.evaluate.tasks import TaskConfig, load_labelled, train_task
from radardiff.models.downstream import encode_channels

NAMES = ["forest", "water"]


def _sar(path, n, seed, names=NAMES, swap=False, holes=True):
    """VV and VH in dB, 8x8: 'forest' -12/-17 dB, 'water' -20/-27 dB (means, the classes'
    backscatter and VV/VH ratio differ) with 2 dB of speckle-like scatter; a hole in some."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(names)
    means = {"forest": (-12.0, -17.0), "water": (-20.0, -27.0), "urban": (-5.0, -10.0)}
    truth = np.array([means[names[k]] for k in labels], np.float32)
    x = truth[:, :, None, None] + rng.normal(0, 2.0, (n, 2, 8, 8)).astype(np.float32)
    if holes:
        x[::3, :, :2, :2] = np.nan
    labels = (1 - labels) if swap else labels
    return write_dataset(path, x, labels, kind="sar_backscatter", units="dB", class_names=names)


def test_classification_score_values():
    """Balanced accuracy is the mean recall: a network answering the majority class of a 9:1
    set has accuracy 0.9 and balanced accuracy 0.5."""
    y = np.array([0] * 9 + [1])
    logits = np.tile([[1.0, 0.0]], (10, 1))
    s = classification_score(logits, y)
    assert s.accuracy == pytest.approx(0.9) and s.balanced_accuracy == pytest.approx(0.5)
    assert s.recall == [1.0, 0.0] and s.confusion == [[9, 0], [1, 0]] and s.n == 10
    # a class without test images is left out of the balanced accuracy
    s = classification_score(np.eye(3)[[0, 1, 1]], np.array([0, 1, 0]))
    assert s.recall == [0.5, 1.0, None] and s.balanced_accuracy == pytest.approx(0.75)
    with pytest.raises(ValueError):
        classification_score(np.eye(2), np.array([0, 2]))


def test_encode_channels_standardises_each_channel():
    x = torch.tensor([[[[1.0, 3.0]], [[10.0, float("nan")]]]])  # (1, 2, 1, 2)
    e = encode_channels(x, False, torch.tensor([2.0, 10.0]), torch.tensor([1.0, 5.0]))
    # channel 0 (x - 2) / 1; channel 1 (x - 10) / 5; 0 at the hole of channel 1, for every channel
    assert e[0, 0].tolist() == [[-1.0, 0.0]] and e[0, 1].tolist() == [[0.0, 0.0]]
    assert e[0, 2].tolist() == [[1.0, 0.0]]
    w = encode_channels(torch.tensor([[[[0.0, np.pi / 2]]]]), True, torch.zeros(1), torch.ones(1))
    assert torch.allclose(w[0, :, 0], torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), atol=1e-6)


def test_labels_are_matched_by_class_name(tmp_path):
    """A file with the same classes in another order is read in the reference order; a class the
    reference lacks is refused in one line naming the file and the class."""
    a = _sar(tmp_path / "a.h5", 6, 0)
    b = write_dataset(tmp_path / "b.h5", np.zeros((2, 2, 8, 8), np.float32), np.array([0, 1]),
                      kind="sar_backscatter", units="dB", class_names=["water", "forest"])  # fmt: skip
    both = load_labelled([a, b], NAMES)
    assert both.classes == NAMES and both.targets[-2:].tolist() == [1, 0]
    assert both.inputs.shape == (8, 2, 8, 8)
    c = _sar(tmp_path / "c.h5", 6, 0, names=["forest", "urban"])
    with pytest.raises(DataError, match=r"c\.h5: class 'urban' is not among"):
        load_labelled(c, NAMES)
    plain = write_dataset(tmp_path / "p.h5", np.zeros((2, 1, 8, 8), np.float32), kind="sar_backscatter",
                          units="dB")  # fmt: skip
    with pytest.raises(DataError, match="no class labels"):
        load_labelled(plain)


FAST = {"steps": 60, "batch_size": 16, "val_every": 20, "width": 8, "levels": 2, "lr": 3e-3}


def test_classifier_learns_the_classes_and_is_saved(tmp_path):
    """Separable classes: the held-out balanced accuracy is near 1 and the saved network scores
    the same as in memory; a network given a test set of other channels refuses it."""
    train = load_labelled(_sar(tmp_path / "tr.h5", 64, 0))
    test = _sar(tmp_path / "te.h5", 40, 1)
    res = train_task(train, TaskConfig(task="classification", **FAST), tmp_path / "net")
    assert res.meta["classes"] == NAMES and res.meta["channels"] == 2
    assert res.meta["mean"][0] == pytest.approx(-16.0, abs=0.6)  # the VV mean of both classes
    s = score_saved(tmp_path / "net", test)
    assert s["balanced_accuracy"] > 0.95 and s["skill"] == s["balanced_accuracy"]
    assert set(s["recall"]) == set(NAMES) and sum(map(sum, s["confusion"])) == 40
    one = write_dataset(tmp_path / "one.h5", np.zeros((4, 1, 8, 8), np.float32), np.array([0, 1, 0, 1]),
                        kind="sar_backscatter", units="dB", class_names=NAMES)  # fmt: skip
    with pytest.raises(DataError, match="1 channel"):
        score_saved(tmp_path / "net", one)
    with pytest.raises(DataError, match="not a labelled image set"):
        from radardiff.evaluate.tasks import Pairs

        p = Pairs("x", train.inputs, train.targets, False, "dB")
        train_task(p, TaskConfig(task="classification", **FAST))


def test_experiment_scores_each_set_and_resumes(tmp_path):
    """Generated images of the real distribution score like real ones; generated images with
    their labels swapped score far below chance, which the criteria report; a second run
    trains nothing again."""
    tr, te = _sar(tmp_path / "tr.h5", 48, 0), _sar(tmp_path / "te.h5", 40, 1)
    good, bad = _sar(tmp_path / "g.h5", 48, 2), _sar(tmp_path / "b.h5", 48, 3, swap=True)
    training = default_classification(**FAST)
    cfg = ClassificationConfig(str(tr), str(te), str(good), physics=str(bad), seeds=(0,),
                               training=training)  # fmt: skip
    out = tmp_path / "exp"
    result = run_classification(cfg, out)
    s = result["summary"]["classification"]
    bal = {name: v["balanced_accuracy"]["mean"] for name, v in s["sets"].items()}
    assert list(bal) == ["physics", "real", "generated", "real+generated"]
    assert bal["real"] > 0.95 and bal["generated"] > 0.95 and bal["physics"] < 0.1
    assert s["criteria"]["generated_reaches_90pct_of_real"] is True
    assert s["criteria"]["generated_beats_physics"] is True
    rows = {r["set"]: r for r in result["results"]}
    assert rows["real+generated"]["n_train"] == 96 and rows["real"]["n_train"] == 48
    assert result["config"]["test_counts"] == {"forest": 20, "water": 20}
    md = (out / "classification.md").read_text()
    assert "| training set | balanced accuracy" in md and "recall per class" in md
    stamp = (out / "nets" / "classification_real_s0" / "model.safetensors").stat().st_mtime_ns
    again = run_classification(cfg, out)
    assert again["results"] == json.loads((out / "classification.json").read_text())["results"]
    assert (
        out / "nets" / "classification_real_s0" / "model.safetensors"
    ).stat().st_mtime_ns == stamp


def test_experiment_refuses_sets_that_cannot_be_compared(tmp_path):
    tr, te = _sar(tmp_path / "tr.h5", 12, 0), _sar(tmp_path / "te.h5", 12, 1)
    other = _sar(tmp_path / "o.h5", 12, 1, names=["forest", "urban"])
    only = write_dataset(tmp_path / "only.h5", np.zeros((3, 2, 8, 8), np.float32), np.zeros(3, int),
                         kind="sar_backscatter", units="dB", class_names=NAMES)  # fmt: skip
    with pytest.raises(DataError, match="test scenes are the training scenes"):
        run_classification(ClassificationConfig(str(tr), str(tr), str(te)), tmp_path / "x")
    with pytest.raises(DataError, match=r"o\.h5: no images of class 'water'"):
        run_classification(ClassificationConfig(str(tr), str(te), str(other)), tmp_path / "x")
    with pytest.raises(DataError, match=r"class 'urban' is not among"):
        run_classification(ClassificationConfig(str(tr), str(other), str(te), seeds=(0,),
                           training=default_classification(steps=2)), tmp_path / "x")  # fmt: skip
    with pytest.raises(DataError, match="images of 1 class"):
        run_classification(ClassificationConfig(str(only), str(te), str(te)), tmp_path / "x")


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    """A tiny class-conditional model of 16x16 dB images of two classes (one training step)."""
    from conftest import tiny_run_config
    from radardiff.train import train

    d = tmp_path_factory.mktemp("classrun")
    rng = np.random.default_rng(0)
    x = rng.normal(-15, 2, (16, 1, 16, 16)).astype(np.float32)
    data = write_dataset(d / "tr.h5", x, np.arange(16) % 2, kind="sar_backscatter", units="dB",
                         class_names=NAMES)  # fmt: skip
    cfg = tiny_run_config(str(data), model={"num_classes": 2}, train={"steps": 1})
    train(cfg, d / "run")
    return d / "run", data


def test_labelled_samples_follow_the_training_classes(class_run, tmp_path):
    """As many generated images of each class as the real training set has, labelled by name;
    a class the model lacks is refused naming it."""
    from radardiff.data.dataset_file import DatasetFile

    run, data = class_run
    real = write_dataset(tmp_path / "r.h5", np.zeros((5, 1, 16, 16), np.float32),
                         np.array([1, 1, 0, 1, 0]), kind="sar_backscatter", units="dB",
                         class_names=["water", "forest"])  # fmt: skip
    out = labelled_samples(run, str(real), tmp_path / "g.h5", {"steps": 2})
    f = DatasetFile(out)
    got = [f.info.class_names[i] for i in f.labels()]
    assert got == ["forest", "forest", "water", "forest", "water"] and f.info.n == 5
    odd = write_dataset(tmp_path / "odd.h5", np.zeros((2, 1, 16, 16), np.float32), np.array([0, 1]),
                        kind="sar_backscatter", units="dB", class_names=["forest", "ice"])  # fmt: skip
    with pytest.raises(DataError, match="the model has no class 'ice'"):
        labelled_samples(run, str(odd), tmp_path / "h.h5", {"steps": 2})
    small = write_dataset(tmp_path / "s.h5", np.zeros((2, 1, 8, 8), np.float32), np.array([0, 1]),
                          kind="sar_backscatter", units="dB", class_names=NAMES)  # fmt: skip
    with pytest.raises(DataError, match="shape"):
        labelled_samples(run, str(small), tmp_path / "i.h5", {"steps": 2})


def test_cli_classification_experiment(tmp_path, capsys):
    from radardiff.cli.main import main

    def run(*extra) -> tuple[int, str]:
        try:
            main([*base, *extra])
            code = 0
        except SystemExit as stop:
            code = stop.code
        out = capsys.readouterr()
        return code, out.out + out.err

    tr, te = _sar(tmp_path / "tr.h5", 24, 0), _sar(tmp_path / "te.h5", 12, 1)
    g = _sar(tmp_path / "g.h5", 24, 2)
    base = ["downstream", "experiment", "--train-real", str(tr), "--test-real", str(te),
            "--generated", str(g), "--out", str(tmp_path / "exp"), "--seeds", "0"]  # fmt: skip
    code, text = run("--tasks", "classification,recovery")
    assert code == 2 and "classification runs on its own" in text
    code, text = run("--tasks", "classification", "--set", "recovery.steps=3")
    assert code == 1 and "classification.train.KEY" in text
    sets = ["--set", "classification.train.steps=4", "--set", "classification.train.augment=true"]
    code, text = run("--tasks", "classification", *sets)
    assert code == 0, text
    assert "| real+generated |" in text and (tmp_path / "exp" / "classification.json").is_file()
    cfg = json.loads((tmp_path / "exp" / "classification.json").read_text())["config"]
    assert cfg["training"]["augment"] is True and cfg["training"]["steps"] == 4


def test_report_shows_the_classification_table(class_run, tmp_path):
    import shutil

    from radardiff.report import write_report

    run = tmp_path / "run"
    shutil.copytree(class_run[0], run)
    tr, te = _sar(tmp_path / "tr.h5", 24, 0), _sar(tmp_path / "te.h5", 12, 1)
    cfg = ClassificationConfig(str(tr), str(te), str(_sar(tmp_path / "g.h5", 24, 2)), seeds=(0,),
                               training=default_classification(**{**FAST, "steps": 4}))  # fmt: skip
    run_classification(cfg, run / "downstream")
    page = write_report(run).read_text()
    assert "<h3>classification</h3>" in page and "<th>training set</th>" in page
    assert "balanced accuracy" in page and "chance balanced accuracy 0.500" in page
