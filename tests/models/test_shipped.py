"""Exported model folders and shipped models by name: round trips, the manifest, refusals."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from radardiff.cli.main import cli, main
from radardiff.errors import RunDirError
from radardiff.models import shipped
from radardiff.models.export import export_run, headline, model_card
from radardiff.sample import SampleOptions, generate_batch, load_run

SCORES = {
    "samples": 8,
    "real": 8,
    "generated": {"semivariogram_rel_error": 0.09, "lag1_ratio": 1.1},
    "floor": {"semivariogram_rel_error": 0.13, "lag1_ratio": 0.93},
    "memorisation_ratio": 0.98,
    "near_copy_fraction": 0.04,
    "seconds_per_1000": 12.5,
    "train_minutes": 1.0,
    "cpu": "test cpu",
}


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pretrained")
    out = {}
    for name, half in (("toy-fp32", False), ("toy-fp16", True)):
        out[name] = export_run(trained_run, root / name, name, half=half, scores=SCORES,
                               facts={"licence": "apache-2.0", "summary": "test noise"})  # fmt: skip
    return out


@pytest.fixture
def shelf(exported, monkeypatch) -> Path:
    """The exported models as this installation's shipped models."""
    root = next(iter(exported.values())).parent
    monkeypatch.setattr(shipped, "PRETRAINED", root)
    return root


def samples(run, n=3) -> np.ndarray:
    opts = SampleOptions(n=n, sampler="ddim", steps=4, batch_size=n)
    return generate_batch(run, opts, np.arange(n))["images"]


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_fp32_export_samples_exactly_as_the_run(trained_run, exported):
    a, b = load_run(trained_run), load_run(exported["toy-fp32"])
    assert b.exported and not a.exported
    assert b.checkpoint_name == a.checkpoint_name  # the step it was exported at
    np.testing.assert_array_equal(samples(a), samples(b))


def test_fp16_export_is_half_the_size_and_close(trained_run, exported):
    w32 = exported["toy-fp32"] / shipped.WEIGHTS_FILE
    w16 = exported["toy-fp16"] / shipped.WEIGHTS_FILE
    assert w16.stat().st_size < 0.6 * w32.stat().st_size
    run16 = load_run(exported["toy-fp16"])
    assert all(p.dtype == torch.float32 for p in run16.model.parameters())  # computed in fp32
    a, b = samples(load_run(trained_run)), samples(run16)
    scale = float(np.abs(a).max())
    assert float(np.abs(a - b).max()) < 0.02 * scale


def test_the_folder_is_a_diffusers_model(exported):
    from diffusers import UNet2DModel

    net = UNet2DModel.from_pretrained(exported["toy-fp16"])
    assert net.config.sample_size == 16


def test_card_and_facts(exported):
    folder = exported["toy-fp16"]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\nlibrary_name: diffusers\n")
    assert "| semivariogram relative error (0 is perfect) | 0.09 | 0.13 |" in card
    assert "radardiff sample toy-fp16 --n 1000" in card and "0.98" in card
    facts = shipped.read_facts(folder)
    assert facts["kind"] == "insar_noise" and facts["weights_dtype"] == "float16"
    assert facts["image_size"] == 16 and facts["train_steps"] == 4
    assert headline(facts) == "semivariogram relative error 0.09 (floor 0.13)"
    alt = {**SCORES, "floor_alt": {"label": "unseen dates",
                                   "scores": {"semivariogram_rel_error": 0.33}}}  # fmt: skip
    card2 = model_card({**facts, "scores": alt})
    assert "| floor | floor, unseen dates |" in card2
    assert "| semivariogram relative error (0 is perfect) | 0.09 | 0.13 | 0.33 |" in card2
    # a number not given is not written
    bare = model_card({**facts, "scores": {}})
    assert "Measured scores" not in bare and "s per 1000" not in bare


@pytest.mark.parametrize("victim", ["normalizer.json", "README.md", shipped.WEIGHTS_FILE])
def test_a_changed_file_is_refused(exported, tmp_path, victim):
    folder = tmp_path / "copy"
    shutil.copytree(exported["toy-fp16"], folder)
    with (folder / victim).open("r+b") as fh:
        fh.seek(40)
        byte = fh.read(1)
        fh.seek(40)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(RunDirError, match=f"{victim}: damaged or changed"):
        load_run(folder)


def test_a_missing_file_is_refused(exported, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(exported["toy-fp16"], folder)
    (folder / "state.json").unlink()
    with pytest.raises(RunDirError, match="state.json: missing"):
        load_run(folder)


def test_names_resolve_and_unknown_names_list_the_known(shelf):
    assert load_run("toy-fp16").run.root == shelf / "toy-fp16"
    with pytest.raises(RunDirError) as err:
        load_run("no-such-model")
    msg = str(err.value)
    assert "no-such-model" in msg and "toy-fp16" in msg and "toy-fp32" in msg and "\n" not in msg
    # a path that is not a bare name keeps the run directory's own message
    with pytest.raises(RunDirError, match="run directory not found"):
        load_run("runs/none")


def test_exported_models_hold_one_checkpoint_of_ema_weights(shelf):
    assert load_run("toy-fp16", checkpoint=4).exported
    with pytest.raises(RunDirError, match="one checkpoint"):
        load_run("toy-fp16", checkpoint=2)
    with pytest.raises(RunDirError, match="only its EMA weights"):
        load_run("toy-fp16", weights="model")


def test_cli_samples_a_shipped_model_by_name_without_touching_it(shelf, tmp_path):
    folder = shelf / "toy-fp16"
    before = tree_digest(folder)
    modes = {p: p.stat().st_mode for p in [folder, *folder.iterdir()]}
    try:
        for p in modes:
            p.chmod(stat.S_IMODE(modes[p]) & ~0o222)  # read-only, as an installed package
        res = CliRunner().invoke(cli, ["sample", "toy-fp16", "--n", "3", "--out",
                                       str(tmp_path / "s.h5"), "--steps", "3"])  # fmt: skip
        assert res.exit_code == 0, res.output
    finally:
        for p, m in modes.items():
            p.chmod(m)
    assert (tmp_path / "s.h5").is_file()
    assert tree_digest(folder) == before
    assert sorted(os.listdir(folder)) == sorted(p.name for p in modes if p != folder)


def test_models_lists_and_shows(shelf):
    res = CliRunner().invoke(cli, ["models"])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("toy-fp16"))
    assert "insar_noise" in line and "semivariogram relative error 0.09 (floor 0.13)" in line
    res = CliRunner().invoke(cli, ["models", "show", "toy-fp32"])
    assert res.exit_code == 0 and "# toy-fp32" in res.output


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--out", "toy-fp16", "--resume"],
        ["distill", "toy-fp32", "--out", "toy-fp16"],
        ["report", "toy-fp16"],
        ["models", "export", "toy-fp32", "--name", "x", "--out", "toy-fp16"],
        ["study", "samplers", "toy-fp16", "--real", "REAL", "--n", "2", "--steps", "2"],
    ],
)
def test_a_shipped_model_is_never_a_writable_run(shelf, tmp_path, args, noise_files, capsys):
    args = [str(noise_files[1]) if a == "REAL" else a for a in args]
    before = tree_digest(shelf)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(SystemExit) as code:
            main(args)
    finally:
        os.chdir(cwd)
    assert code.value.code != 0
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("radardiff: error:")]
    assert len(err) == 1 and ("shipped" in err[0] or "read-only" in err[0]), err
    assert tree_digest(shelf) == before and not os.listdir(tmp_path)


def test_export_refuses_an_existing_folder_and_keeps_it(trained_run, exported):
    before = tree_digest(exported["toy-fp32"])
    with pytest.raises(RunDirError, match="exists"):
        export_run(trained_run, exported["toy-fp32"], "x")
    assert tree_digest(exported["toy-fp32"]) == before


def test_a_student_distils_from_a_shipped_teacher(shelf, tmp_path):
    from radardiff.train.distill import distill, student_config

    teacher = load_run("toy-fp32")
    cfg = student_config(teacher, {"method": "consistency", "steps": 2, "steps_per_stage": 2},
                         "student", [])  # fmt: skip
    result = distill(cfg, tmp_path / "student")
    assert result.steps == 2
    # the student keeps the teacher's one checkpoint as a normal run
    assert (
        tmp_path / "student" / "teacher_run" / "checkpoints" / "latest"
    ).read_text().strip() == teacher.checkpoint_name


def test_downstream_and_evaluate_take_a_shipped_name(shelf, tmp_path, noise_files, capsys):
    from radardiff.data import DatasetFile
    from radardiff.evaluate.downstream import noise_file

    made = noise_file("toy-fp16", 4, tmp_path / "noise.h5", steps=3)
    with DatasetFile(made) as f:
        assert f.images().shape == (4, 1, 16, 16)
    main(["evaluate", "--real", str(noise_files[1]), "--fake", str(made), "--out",
          str(tmp_path / "eval"), "--run", "toy-fp16", "--metrics", "histogram"])  # fmt: skip
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_markdown_table(shelf):
    res = CliRunner().invoke(cli, ["models", "list", "--markdown"])
    assert res.exit_code == 0, res.output
    rows = [x for x in res.output.splitlines() if x.startswith("| `toy-fp16`")]
    assert len(rows) == 1 and "| 0.09 (0.13) | 1.1 (0.93) | 0.98 |" in rows[0], res.output
