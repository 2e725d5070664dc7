"""Which checkpoint a run samples: ``latest``, ``best`` (lowest validation loss), a step, and the
recipe's ``sample.checkpoint`` when none is named."""

from __future__ import annotations

import shutil

import pytest

from conftest import run_cli, write_config
from radardiff.config import RunDir, load_config
from radardiff.data.dataset_file import DatasetFile
from radardiff.errors import ConfigError, RunDirError
from radardiff.sample import load_run


@pytest.fixture
def two_points(trained_run, tmp_path):
    """A copy of the tiny run whose best checkpoint (step 2) is not its latest (step 4)."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "checkpoints" / "best").write_text("step_0000002\n")
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000004"
    return run


def _with_default(run, which):
    cfg = load_config(run / "config.toml", [f"sample.checkpoint={which}"])
    write_config(run / "config.toml", cfg)


def test_latest_best_and_steps_by_name(two_points):
    assert load_run(two_points).checkpoint.name == "step_0000004"  # the default recipe: latest
    assert load_run(two_points, checkpoint="best").checkpoint.name == "step_0000002"
    assert load_run(two_points, checkpoint="latest").checkpoint.name == "step_0000004"
    assert load_run(two_points, checkpoint=2).checkpoint.name == "step_0000002"


def test_the_recipe_names_the_checkpoint_sampled_by_default(two_points, tmp_path, capsys):
    _with_default(two_points, "best")
    assert load_run(two_points).checkpoint.name == "step_0000002"
    assert load_run(two_points, checkpoint="latest").checkpoint.name == "step_0000004"
    out = tmp_path / "s.h5"
    code, _, err = run_cli(["sample", two_points, "--n", 2, "--out", out], capsys)
    assert code == 0, err
    assert DatasetFile(out).attrs()["checkpoint"].endswith("step_0000002")


def test_best_without_validation_falls_back_to_latest_and_says_so(two_points, caplog):
    (two_points / "checkpoints" / "best").unlink()
    with caplog.at_level("WARNING"):
        assert load_run(two_points, checkpoint="best").checkpoint.name == "step_0000004"
    assert "no best checkpoint" in caplog.text and "no data.val" in caplog.text


def test_a_pointer_out_of_the_run_or_to_a_lost_checkpoint_is_refused(two_points):
    best = two_points / "checkpoints" / "best"
    best.write_text("../../elsewhere\n")
    with pytest.raises(RunDirError, match="not a checkpoint name"):
        RunDir(two_points).named_checkpoint("best")
    best.write_text("step_0000009\n")
    with pytest.raises(RunDirError, match="not a complete checkpoint"):
        load_run(two_points, checkpoint="best")


def test_an_unknown_checkpoint_word_in_a_recipe_is_refused(two_points):
    with pytest.raises(ConfigError, match="checkpoint"):
        load_config(two_points / "config.toml", ["sample.checkpoint=newest"])
    with pytest.raises(RunDirError, match="latest, best, a step number"):
        load_run(two_points, checkpoint="newest")


def test_a_further_ema_can_be_sampled_by_its_name(noise_files, tmp_path, capsys):
    import torch

    from conftest import tiny_run_config
    from radardiff.train import train

    run = tmp_path / "two_emas"
    train(
        tiny_run_config(
            str(noise_files[0]), train={"ema_halflife_kimg": [0.01, 0.05], "ema_warmup_ratio": 0.0}
        ),
        run,
    )
    first, second = load_run(run), load_run(run, weights="ema_0.05kimg")
    assert second.checkpoint == first.checkpoint and second.weights_id != first.weights_id
    w1, w2 = (next(m.model.parameters()) for m in (first, second))
    assert not torch.equal(w1, w2)
    assert "ema_0.05kimg" in second.identity  # samples of one never pass for the other's
    with pytest.raises(RunDirError, match="holds no weights 'ema_9kimg'.*ema_0.05kimg"):
        load_run(run, weights="ema_9kimg")
    with pytest.raises(RunDirError, match="weights must be"):
        load_run(run, weights="../ema")
    code, _, err = run_cli(
        ["sample", run, "--n", 2, "--weights", "ema_0.05kimg", "--out", tmp_path / "s.h5"], capsys
    )
    assert code == 0, err
