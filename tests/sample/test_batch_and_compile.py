"""``--batch-size auto`` (what the device holds) and ``--compile`` (one compiled network for every
batch): the choice itself, and that neither changes the samples beyond float rounding."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import numpy as np
import pytest
import torch

from radardiff.accel import compiled
from radardiff.accel.compiled import FixedBatchNetwork, compiled_network
from radardiff.data.dataset_file import DatasetFile
from radardiff.sample import SampleOptions, denoise_batch, generate, load_run
from radardiff.sample import device as dev
from radardiff.sample.generate import Sampling

MiB = 2**20


@pytest.fixture(scope="module")
def run(trained_run):
    return load_run(trained_run)


def opts(**kw) -> SampleOptions:
    return SampleOptions(**{"n": 7, "sampler": "ddim", "steps": 3, "batch_size": 3, **kw})


class CountingBackend:
    """A torch.compile backend that runs the traced graphs eagerly and counts how many it was
    given: a recompile gives it more."""

    def __init__(self) -> None:
        self.graphs: list[list[tuple[int, ...]]] = []

    def __call__(self, gm, example_inputs, **kwargs):
        self.graphs.append([tuple(x.shape) for x in example_inputs if hasattr(x, "shape")])
        return gm.forward


@pytest.fixture
def counting(monkeypatch, run):
    torch._dynamo.reset()
    backend = CountingBackend()
    monkeypatch.setattr(compiled, "BACKEND", backend)
    run.compiled.clear()  # networks compiled for the counting backend only
    yield backend
    run.compiled.clear()
    torch._dynamo.reset()


# ---- the batch size -----------------------------------------------------------------------------


def test_auto_batch_on_a_cpu_is_64_at_most_and_never_probes():
    def probe(rows):
        raise AssertionError("a CPU is not probed")

    cpu = torch.device("cpu")
    assert dev.auto_batch_size(cpu, probe, 1000)[0] == dev.CPU_BATCH == 64
    assert dev.auto_batch_size(cpu, probe, 10)[0] == 10
    assert dev.auto_batch_size(cpu, probe, 0)[0] == 1


@pytest.mark.parametrize(
    ("per_sample", "available", "n_each", "expected"),
    [
        (10 * MiB, 1024 * MiB, 1000, 81),  # 0.8 * 1024 / 10 = 81.9
        (10 * MiB, 1024 * MiB, 50, 50),  # never more than the process makes
        (1024, 80 * 2**30, 10**6, dev.MAX_BATCH),  # room for millions: at most MAX_BATCH
        (2048 * MiB, 1024 * MiB, 100, 1),  # one sample does not fit: one at a time
    ],
)
def test_auto_batch_on_cuda_fills_the_free_memory(
    monkeypatch, per_sample, available, n_each, expected
):
    seen = []

    def fake_memory(device, probe, rows):
        seen.append(rows)
        return per_sample, available

    monkeypatch.setattr(dev, "cuda_memory", fake_memory)
    batch, why = dev.auto_batch_size(torch.device("cuda"), lambda rows: None, n_each)
    assert batch == expected
    assert seen == [min(dev.PROBE_BATCH, n_each)]
    assert f"{per_sample / MiB:.1f} MiB a sample" in why and "\n" not in why


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_memory_measures_what_a_call_allocates():
    device = torch.device("cuda")

    def probe(rows):
        x = torch.empty(rows, MiB // 4, device=device)  # 1 MiB a row, float32
        x.fill_(1.0)

    per_sample, available = dev.cuda_memory(device, probe, 16)
    assert MiB <= per_sample < 1.1 * MiB
    assert available > 16 * MiB


def _agree(rank: int, world: int, store) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    batch = dev.agree_batch_size(40 + 7 * rank, torch.device("cpu"))
    dist.destroy_process_group()
    (store.parent / f"rank{rank}").write_text(str(batch))


@pytest.mark.parametrize(
    ("batch", "n", "expected"), [(64, 80, 40), (64, 64, 64), (64, 1000, 63), (3, 7, 3), (1, 5, 1)]
)
def test_balanced_batches_differ_by_one_sample_at_most(batch, n, expected):
    even = dev.balanced(batch, n)
    assert even == expected
    assert -(-n // even) == -(-n // batch)  # as many batches
    sizes = [min(even, n - s) for s in range(0, n, even)]
    assert max(sizes) - min(sizes) <= len(sizes)


def test_processes_agree_on_the_smallest_batch(tmp_path):
    import torch.multiprocessing as mp

    assert dev.agree_batch_size(40, torch.device("cpu")) == 40  # one process: as measured
    mp.start_processes(_agree, args=(2, tmp_path / "store"), nprocs=2, start_method="fork")
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["40", "40"]


def test_the_probe_calls_the_eager_network_as_a_batch_is_called(run):
    sampling = Sampling.of(run, opts(compile=True))
    rows = []
    hook = run.model.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    try:
        sampling.probe(run, opts(), None)(5)
    finally:
        hook.remove()
    assert rows == [5]
    assert sampling.denoiser.network.batch is None  # the compiled network has not fixed a batch


def test_auto_batch_gives_the_samples_of_any_other_batch(run, tmp_path, monkeypatch, caplog):
    import importlib

    gen_mod = importlib.import_module("radardiff.sample.generate")
    monkeypatch.setattr(gen_mod, "auto_batch_size", lambda device, probe, n: (5, "chosen"))
    steps = []
    with caplog.at_level(logging.INFO, logger="radardiff"):
        generate(run, opts(batch_size="auto"), tmp_path / "a.h5", lambda d, t: steps.append(d))
    assert steps == [4, 7]  # two batches, as 5 a batch makes, of 4 and 3
    assert "batch size: 4 (chosen; 5 balanced over 7 samples)" in caplog.text
    generate(run, opts(batch_size=3), tmp_path / "b.h5")
    a, b = (DatasetFile(tmp_path / f).images() for f in ("a.h5", "b.h5"))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())


@pytest.mark.parametrize("bad", [0, -3, "all"])
def test_bad_batch_size_is_refused(run, tmp_path, bad):
    from radardiff.errors import ConfigError

    with pytest.raises(ConfigError, match="--batch-size must be at least 1 or 'auto'"):
        generate(run, opts(batch_size=bad), tmp_path / "x.h5")
    assert not list(tmp_path.iterdir())


# ---- the compiled network -----------------------------------------------------------------------


def test_fixed_batch_network_compiles_once_for_every_batch(run, counting):
    net = run.model
    fixed = FixedBatchNetwork(net, "default")
    size = run.cfg.model.image_size
    x = torch.randn(7, run.data_channels, size, size, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([3, 10, 20, 25, 30, 40, 49])
    with torch.inference_mode():
        first = fixed(x[:3], t[:3]).sample
        graphs = len(counting.graphs)
        assert graphs >= 1 and fixed.batch == 3 and fixed.compile_seconds is not None
        parts = [fixed(x[3:6], t[3:6]).sample, fixed(x[6:], t[6:]).sample]  # 3, then 1 padded
        whole = fixed(x, t).sample  # 7: chunks of 3, 3 and 1 padded
        assert len(counting.graphs) == graphs  # no recompile
        eager = net(x, t).sample
    assert whole.shape == eager.shape
    np.testing.assert_allclose(torch.cat([first, *parts]), eager, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(whole, eager, rtol=1e-4, atol=1e-5)
    images = [sh for g in counting.graphs for sh in g if sh[1:] == (run.data_channels, size, size)]
    assert images and all(sh[0] == 3 for sh in images)  # traced for batch 3 only


def test_compiled_sampling_gives_the_eager_samples(run, tmp_path, counting, caplog):
    with caplog.at_level(logging.INFO, logger="radardiff"):
        denoise_batch(run, opts(compile=True), np.arange(3))  # compiles for batch 3
        graphs = len(counting.graphs)
        # batches of 3, 3 and 1 (padded); the samplers' timesteps come as expanded scalars
        generate(run, opts(compile=True), tmp_path / "c.h5")
    assert len(counting.graphs) == graphs  # no recompile for any of them
    assert "torch.compile (default):" in caplog.text and "for batch 3" in caplog.text
    assert opts(compile=True).signature() == opts().signature()
    generate(run, opts(), tmp_path / "e.h5")
    c, e = (DatasetFile(tmp_path / f).images() for f in ("c.h5", "e.h5"))
    np.testing.assert_allclose(c, e, rtol=1e-4, atol=1e-5 * np.abs(e).max())
    # a second request on the same network reuses the compiled one
    again = Sampling.of(run, dataclasses.replace(opts(compile=True), sampler="ddpm"))
    assert again.denoiser.network is compiled_network(run.model, run.compiled)
    graphs = len(counting.graphs)
    denoise_batch(run, opts(compile=True, sampler="ddpm"), np.arange(3), sampling=again)
    assert len(counting.graphs) == graphs


def test_default_compile_mode_is_cuda_graphs_on_cuda_only():
    assert compiled.default_compile_mode(torch.device("cuda")) == "reduce-overhead"
    assert compiled.default_compile_mode(torch.device("cpu")) == "default"
    with pytest.raises(ValueError, match="compile mode 'fast'"):
        FixedBatchNetwork(torch.nn.Linear(2, 2), "fast")


@pytest.mark.skipif(shutil.which("g++") is None, reason="inductor needs a C++ compiler (g++)")
def test_inductor_compiles_a_unet_once_and_matches_eager():
    """The real compiler (about a minute on 2 cores, cold cache): outputs within fp32 rounding of
    the eager network's, and another batch size runs without compiling again."""
    from diffusers import UNet2DModel
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    torch.manual_seed(0)
    net = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    ).eval()  # fmt: skip
    fixed = FixedBatchNetwork(net)
    assert fixed.mode == "default"
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([1, 9, 30, 200, 999])
    with torch.inference_mode():
        a = fixed(x[:3], t[:3]).sample
        frames = counters["frames"]["ok"]
        b = fixed(x[3:], t[3:]).sample  # 2 rows, padded to 3
        assert counters["frames"]["ok"] == frames
        eager = net(x, t).sample
    np.testing.assert_allclose(torch.cat([a, b]), eager, rtol=1e-4, atol=1e-5)
    assert fixed.compile_seconds > 0
    torch._dynamo.reset()


def test_compile_without_a_cpp_compiler_is_one_line_and_writes_nothing(
    trained_run, tmp_path, monkeypatch, capsys
):
    """inductor compiles C++ on a CPU: without a compiler, --compile is refused before sampling
    (not in a traceback from the first network call), and train.compile before training."""
    from conftest import tiny_run_config
    from radardiff.cli.main import main
    from radardiff.errors import ConfigError
    from radardiff.train import train

    def missing():
        raise RuntimeError("no working C++ compiler found")

    from torch._inductor import cpp_builder

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    out = tmp_path / "s.h5"
    with pytest.raises(SystemExit) as exc:
        main(["sample", str(trained_run), "--n", "2", "--out", str(out), "--compile"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("radardiff: error:")]
    assert exc.value.code != 0 and len(lines) == 1 and "Traceback" not in err
    assert "needs a C++ compiler" in lines[0] and "install g++" in lines[0]
    assert not out.exists() and not list(tmp_path.iterdir())
    data = DatasetFile(load_run(trained_run).cfg.data.train).path
    cfg = tiny_run_config(str(data), train={"compile": True})
    with pytest.raises(ConfigError, match="needs a C[+][+] compiler"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
