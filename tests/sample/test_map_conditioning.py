"""Map conditioning: maps as input planes in training (with map dropout), ``sample --map`` with
its refusals, guidance against "no map", and the maps written with the samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import run_cli, tiny_run_config
from radardiff.data.dataset_file import DatasetFile, write_dataset
from radardiff.data.maps import MapChannel
from radardiff.data.normalize import Normalizer
from radardiff.data.torch_dataset import RadarDataset
from radardiff.errors import ConfigError
from radardiff.sample import SampleOptions, generate, load_run
from radardiff.sample.generate import batch_conditions
from radardiff.sample.maps import downsample_maps

LAND = MapChannel("land", classes=("water", "land"))
DEM = MapChannel("dem", "m")


def _maps_file(path, n=12, size=16, seed=0, classes=LAND):
    rng = np.random.default_rng(seed)
    lab = (rng.random((n, 1, size, size)) > 0.5).astype(np.float32)
    dem = rng.normal(300, 50, (n, 1, size, size)).astype(np.float32)
    img = (2 * lab - 1 + 0.1 * rng.normal(size=(n, 1, size, size))).astype(np.float32)
    maps = np.concatenate([lab, dem], axis=1)
    write_dataset(path, img, kind="generic", units="x", maps=maps, map_channels=[classes, DEM])
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from radardiff.train import train

    d = tmp_path_factory.mktemp("maps")
    data = _maps_file(d / "train.h5")
    train(tiny_run_config(str(data), model={"maps": ["land", "dem"]}), d / "mapped")
    train(tiny_run_config(str(data)), d / "plain")
    return {"mapped": load_run(d / "mapped"), "plain": load_run(d / "plain"), "data": data,
            "dir": d}  # fmt: skip


def opts(**kw) -> SampleOptions:
    return SampleOptions(**{"n": 5, "sampler": "ddim", "steps": 3, "batch_size": 2, **kw})


def test_the_network_takes_the_encoded_planes(runs):
    run = runs["mapped"]
    assert run.normalizer.maps.width == 2 + 1 + 1
    assert run.model.config.in_channels == 1 + 4
    assert runs["plain"].model.config.in_channels == 1
    again = Normalizer.from_dict(run.normalizer.to_dict())
    assert again.maps == run.normalizer.maps


def test_samples_carry_their_maps(runs, tmp_path):
    run, data = runs["mapped"], runs["data"]
    out = generate(run, opts(maps=str(data)), tmp_path / "s.h5").path
    f = DatasetFile(out)
    assert f.info.maps == (LAND, DEM)
    np.testing.assert_array_equal(f.maps(), DatasetFile(data).maps(slice(0, 5)))
    one = tmp_path / "one.npy"
    np.save(one, DatasetFile(data).maps([3])[0])
    f = DatasetFile(generate(run, opts(maps=str(one)), tmp_path / "one.h5").path)
    assert (f.maps() == DatasetFile(data).maps([3])).all()  # one map for every sample


def test_guidance_calls_without_a_map(runs):
    run = runs["mapped"]
    from radardiff.diffusion import Denoiser

    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, class_labels=None):
            seen.append(x.detach().clone())
            return type("Out", (), {"sample": torch.zeros(x.shape[0], 1, *x.shape[2:])})()

    den = Denoiser(Spy(), run.cfg, 1, guidance=3.0)
    cond = batch_conditions(run, opts(maps=str(runs["data"])), np.arange(2))
    den(torch.zeros(2, 1, 16, 16), torch.tensor([10, 10]), cond.conditioning(den, "cpu"))
    x = seen[0]
    assert x.shape == (4, 5, 16, 16)
    assert (x[:2, 4] == 1).all() and (x[2:, 1:] == 0).all()  # presence, then "no map"
    np.testing.assert_array_equal(
        x[:2, 1].numpy(), 1.0 - DatasetFile(runs["data"]).maps([0, 1])[:, 0]
    )


def test_map_dropout_in_training_and_mirrored_maps(runs):
    from radardiff.diffusion import GaussianDiffusion
    from radardiff.train.step import batch_conditioning

    run = runs["mapped"]
    ds = RadarDataset(DatasetFile(runs["data"]), run.normalizer)
    batch = ds.__getitems__([(0, 5), (1, 0)])  # sample 0 mirrored (code 5)
    # the image is 2 * land - 1 + noise: it must turn with its map
    agree = (batch["image"][:, 0] > 0) == (batch["maps"][:, 1] > 0.5)
    assert agree.float().mean() > 0.95
    diff = GaussianDiffusion(run.cfg.diffusion)
    for p, zero in ((1.0, True), (0.0, False)):
        cfg = run.cfg.model_copy(update={"model": run.cfg.model.model_copy(
            update={"map_dropout": p})})  # fmt: skip
        from radardiff.diffusion import Denoiser

        den = Denoiser(run.model, cfg, 1)
        cond = batch_conditioning(den, diff, batch, torch.Generator().manual_seed(0))
        assert (cond.maps == 0).all() == zero
        if not zero:
            assert torch.equal(cond.maps, batch["maps"])


@pytest.mark.parametrize(
    "which, maps, match",
    [
        ("plain", "data", "was trained without maps"),
        ("mapped", None, r"conditioned on maps \(land .*\); give --map"),
        ("mapped", "small", "a map must be on the image's grid"),
        ("mapped", "nan", "map 'dem' has no data"),
        ("mapped", "classes", r"label map 'land' has classes \['sea', 'ground'\], but the model"),
        ("mapped", "few", "holds 2 maps for --n 5"),
    ],
)
def test_bad_maps_are_refused(runs, tmp_path, which, maps, match):
    d = tmp_path
    made = {"data": str(runs["data"])}
    small = np.zeros((2, 8, 8), np.float32)
    np.save(d / "small.npy", small)
    made["small"] = str(d / "small.npy")
    nan = DatasetFile(runs["data"]).maps([0])[0]
    nan[1, 3, 3] = np.nan
    np.save(d / "nan.npy", nan)
    made["nan"] = str(d / "nan.npy")
    other = MapChannel("land", classes=("sea", "ground"))
    made["classes"] = str(_maps_file(d / "classes.h5", n=2, classes=other))
    made["few"] = str(_maps_file(d / "few.h5", n=2))
    with pytest.raises(ConfigError, match=match):
        generate(runs[which], opts(maps=made.get(maps)), d / "out.h5")
    assert not (d / "out.h5").exists()


def test_downsample_maps_block_mean_and_majority():
    maps = np.zeros((1, 2, 4, 4), np.float32)
    maps[0, 0] = [[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 0, 1], [2, 0, 1, 0]]
    maps[0, 1] = np.arange(16).reshape(4, 4)
    maps[0, 1, 0, 0] = np.nan
    out = downsample_maps(maps, (MapChannel("c", classes=("a", "b", "c")), DEM), 2)
    np.testing.assert_array_equal(out[0, 0], [[0, 1], [2, 0]])  # tie of 0 and 1: the lower
    np.testing.assert_allclose(out[0, 1], [[(1 + 4 + 5) / 3, 4.5], [10.5, 12.5]])


def test_cli_sample_with_a_map(runs, tmp_path, capsys):
    root = runs["dir"]
    code, _, _ = run_cli(["sample", root / "mapped", "--map", runs["data"], "--n", 3,
                          "--steps", 2, "--out", tmp_path / "c.h5", "--guidance", 2], capsys)  # fmt: skip
    assert code == 0 and DatasetFile(tmp_path / "c.h5").info.maps == (LAND, DEM)
    code, _, err = run_cli(["sample", root / "plain", "--map", runs["data"], "--n", 3,
                            "--out", tmp_path / "d.h5"], capsys)  # fmt: skip
    assert code != 0 and "trained without maps" in err.strip().splitlines()[-1]
    assert not (tmp_path / "d.h5").exists()


def test_a_cascade_follows_one_map_at_both_sizes(runs, tmp_path):
    """The first stage (8 px) gets the final 16 px map reduced; the output carries the map."""
    from radardiff.sample.generate import generate_cascade, lowres_path
    from radardiff.train import train

    small = tmp_path / "small.h5"
    full = DatasetFile(runs["data"])
    reduced = downsample_maps(full.maps(), (LAND, DEM), 2)
    write_dataset(small, full.images()[:, :, ::2, ::2], kind="generic", units="x", maps=reduced,
                  map_channels=[LAND, DEM])  # fmt: skip
    low_cfg = {"image_size": 8, "attention_resolutions": [4], "maps": ["land", "dem"]}
    train(tiny_run_config(str(small), model=low_cfg), tmp_path / "low")
    sr_cfg = {"superres_low_size": 8, "superres_aug_max": 10, "maps": ["land", "dem"]}
    train(tiny_run_config(str(runs["data"]), model=sr_cfg), tmp_path / "sr")
    low, sr = load_run(tmp_path / "low"), load_run(tmp_path / "sr")
    out = tmp_path / "c.h5"
    generate_cascade(low, opts(maps=str(runs["data"])), sr, opts(maps=str(runs["data"])), out)
    np.testing.assert_array_equal(DatasetFile(lowres_path(out)).maps(), reduced[:5])
    np.testing.assert_array_equal(DatasetFile(out).maps(), full.maps(slice(0, 5)))


def test_training_refuses_maps_the_file_lacks(tmp_path):
    from radardiff.data.synth import synthesize
    from radardiff.errors import DataError
    from radardiff.train import train

    plain = synthesize("insar_noise", 8, 16, tmp_path / "plain.h5")
    with pytest.raises(ConfigError, match=r"model.maps = \['dem'\] but the file holds no maps"):
        train(tiny_run_config(str(plain), model={"maps": ["dem"]}), tmp_path / "a")
    dem = synthesize("insar_noise_dem", 8, 16, tmp_path / "dem.h5")
    with pytest.raises(DataError, match="no map 'coh' \\(it holds dem\\)"):
        train(tiny_run_config(str(dem), model={"maps": "coh"}), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_requests_without_maps_keep_their_signature():
    """Parts sampled before maps existed are still this request's (golden signatures of the
    version without map fields); a map changes the signature."""
    assert SampleOptions(n=5).signature() == "0229c23b60a6464f"
    assert SampleOptions(n=7, sampler="ddim", steps=3, seed=2).signature() == "f7bcd1574f3395e7"
    assert SampleOptions(n=5, maps="m.h5").signature() != "0229c23b60a6464f"
