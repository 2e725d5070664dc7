"""``train.compile``: the network compiled once, at the first step, for the whole run; checkpoints,
validation and resume as without it."""

from __future__ import annotations

import logging
import tempfile

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_run_config
from radardiff.accel import compiled
from radardiff.config import validate_config
from radardiff.data.dataset_file import DatasetFile
from radardiff.errors import ConfigError
from radardiff.models import build_unet
from radardiff.sample import SampleOptions, generate, load_run
from radardiff.train import train
from radardiff.train.loop import Trainer


class AotCountingBackend:
    """torch.compile's ``aot_eager`` backend (AOTAutograd traces forward and backward, then runs
    them eagerly: what inductor is given, without its code generation) counting the graphs it was
    given: a recompile gives it more."""

    def __init__(self) -> None:
        self.graphs = 0
        self.aot = torch._dynamo.lookup_backend("aot_eager")

    def __call__(self, gm, example_inputs, **kwargs):
        self.graphs += 1
        return self.aot(gm, example_inputs, **kwargs)


@pytest.fixture
def counting(monkeypatch):
    torch._dynamo.reset()
    backend = AotCountingBackend()
    monkeypatch.setattr(compiled, "BACKEND", backend)
    yield backend
    torch._dynamo.reset()


def _cfg(noise_files, steps=4, **train):
    return tiny_run_config(
        str(noise_files[0]),
        str(noise_files[1]),
        model={"dropout": 0.1},
        train={"steps": steps, "deterministic": True, **train},
    )


def _weights(run, which="model", step=None):
    name = f"step_{step:07d}" if step else (run / "checkpoints/latest").read_text().strip()
    return load_file(run / "checkpoints" / name / which / "diffusion_pytorch_model.safetensors")


def test_one_compile_serves_every_step_checkpoint_and_validation(
    counting, noise_files, tmp_path, monkeypatch, caplog
):
    """Graphs are compiled at the first step only: checkpoints (diffusers' save_pretrained grows
    the model's config dict, on which the compiled forward is guarded) and validation (the EMA,
    eager) compile nothing more; the checkpoints hold the network's own keys."""
    at_first_step = []
    log_compile = Trainer._log_compile

    def spy(self, started):
        at_first_step.append(counting.graphs)
        log_compile(self, started)

    monkeypatch.setattr(Trainer, "_log_compile", spy)
    with caplog.at_level(logging.INFO, logger="radardiff"):
        train(_cfg(noise_files, steps=6, compile=True), tmp_path / "run")
    assert len(at_first_step) == 1 and at_first_step[0] >= 1
    assert counting.graphs == at_first_step[0]  # 3 checkpoints and 3 validations later
    assert "torch.compile (default): " in caplog.text and "for batch 4" in caplog.text
    plain = build_unet(_cfg(noise_files).model, 1, False).state_dict()
    for which in ("model", "ema"):
        assert _weights(tmp_path / "run", which).keys() == plain.keys()
    opts = SampleOptions(n=2, sampler="ddim", steps=3, batch_size=2)
    generate(load_run(tmp_path / "run"), opts, tmp_path / "s.h5")
    images = DatasetFile(tmp_path / "s.h5").images()
    assert images.shape == (2, 1, 16, 16) and np.isfinite(images).all()


def test_compiled_training_resumes_bit_identically_and_follows_eager(
    counting, noise_files, tmp_path
):
    """Stopped after 2 steps and resumed to 4, compiled, it ends with the weights of an unbroken
    compiled run; and those are the eager run's within float rounding (the same dropout draws:
    the global generator is seeded per step in both)."""
    cfg = _cfg(noise_files, compile=True, checkpoint_every=2)
    train(cfg, tmp_path / "straight")
    half = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 2})})
    train(half, tmp_path / "resumed")
    train(cfg, tmp_path / "resumed", resume=True)
    # eager with torch's convolution backward, as the compiled run has it
    eager_train = {"compile": False, "conv_kernels": "torch"}
    eager_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update=eager_train)})
    train(eager_cfg, tmp_path / "eager")
    torch.manual_seed(cfg.train.seed)  # the network every run started from
    init = build_unet(cfg.model, 1, False).state_dict()
    for which in ("model", "ema"):
        a, b = _weights(tmp_path / "straight", which), _weights(tmp_path / "resumed", which)
        e = _weights(tmp_path / "eager", which)
        for key in a:
            assert torch.equal(a[key], b[key]), (which, key)
        _follows(a, e, init, which)
    moved = max((a[k] - _weights(tmp_path / "straight", step=2)[k]).abs().max() for k in a)
    assert moved > 1e-4  # the last two steps changed the weights: the comparison has teeth


def _follows(compiled_w: dict, eager_w: dict, init: dict, which: str) -> None:
    """The compiled run's weights follow the eager run's within the float rounding of their
    gradients, as AdamW carries it. The two gradients differ by rounding (other summation
    orders), about 1e-6 of each gradient's scale; AdamW divides each gradient element by its own
    running RMS, so an element whose gradient is itself near that rounding level can step
    differently by up to about lr a step (4 steps of 1e-3 here), while every well-defined
    element's step differs by rounding only. So: the whole network's difference is small against
    the whole update (a wrong gradient in any layer would make it O(1) for that layer's share),
    and the elements outside float rounding of the update are rare."""
    keys = list(eager_w)
    diff = torch.cat([(compiled_w[k] - eager_w[k]).double().flatten() for k in keys])
    update = torch.cat([(eager_w[k] - init[k]).double().flatten() for k in keys])
    assert update.norm() > 0
    assert diff.norm() <= 1e-3 * update.norm(), (which, float(diff.norm() / update.norm()))
    scale = torch.cat([eager_w[k].double().abs().flatten() for k in keys])
    outside = (diff.abs() > 1e-5 + 1e-4 * scale).double().mean()
    assert outside <= 1e-3, (which, float(outside))


def test_config_dict_stops_growing_once_completed():
    """What :func:`stable_config` fixes: saving adds keys to the model's config dict, once."""
    net = build_unet(tiny_run_config("x.h5").model, 1, False)
    before = len(net._internal_dict)
    with tempfile.TemporaryDirectory() as tmp:
        net.save_pretrained(tmp)
        grown = len(net._internal_dict)
        compiled.stable_config(net)
        net.save_pretrained(tmp)
    assert grown > before and len(net._internal_dict) == grown
    fresh = build_unet(tiny_run_config("x.h5").model, 1, False)
    compiled.stable_config(fresh)
    assert len(fresh._internal_dict) == grown


def test_compile_modes():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compiled.resolve_mode("auto", cpu) == "default"
    assert compiled.resolve_mode("auto", cuda) == "reduce-overhead"
    assert compiled.resolve_mode("max-autotune", cpu) == "max-autotune"
    assert compiled.uses_cuda_graphs("reduce-overhead", cuda)
    assert compiled.uses_cuda_graphs("max-autotune", cuda)
    assert not compiled.uses_cuda_graphs("max-autotune-no-cudagraphs", cuda)
    assert not compiled.uses_cuda_graphs("reduce-overhead", cpu)
    with pytest.raises(ValueError, match="compile mode 'fast'"):
        compiled.resolve_mode("fast", cpu)
    with pytest.raises(ConfigError, match="compile_mode"):
        validate_config({"train": {"compile": True, "compile_mode": "fast"}}, "test")


@pytest.mark.parametrize(
    ("requested", "device", "accum", "procs", "mode", "why"),
    [
        ("auto", "cpu", 1, 1, "default", "auto"),
        ("auto", "cuda", 1, 1, "reduce-overhead", "auto"),
        ("auto", "cuda", 2, 1, "default", "no CUDA graphs with gradient accumulation"),
        ("auto", "cuda", 1, 4, "default", "no CUDA graphs with 4 processes"),
        ("reduce-overhead", "cuda", 1, 4, "reduce-overhead", "reduce-overhead"),
        ("reduce-overhead", "cpu", 4, 1, "reduce-overhead", "reduce-overhead"),  # no graphs there
        ("max-autotune-no-cudagraphs", "cuda", 2, 1, "max-autotune-no-cudagraphs", "no-cuda"),
    ],
)
def test_training_compile_mode(requested, device, accum, procs, mode, why):
    from radardiff.accel.policy import training_compile_mode

    got, reason = training_compile_mode(requested, torch.device(device), accum, procs)
    assert got == mode and why in reason


def test_cuda_graphs_with_gradient_accumulation_are_refused():
    from radardiff.accel.policy import training_compile_mode

    with pytest.raises(ConfigError, match="train.grad_accum = 2 are not supported"):
        training_compile_mode("reduce-overhead", torch.device("cuda"), 2, 1)


def test_cuda_graph_iterations_are_marked_once_per_micro_batch(
    counting, noise_files, tmp_path, monkeypatch
):
    """With CUDA graphs each micro-batch begins a new iteration (the graphs' memory of the last
    one is reused): the loop marks it before the forward. Faked on the CPU: the loop is told the
    mode replays graphs, and torch's marker is counted."""
    marks = []
    monkeypatch.setattr(compiled, "uses_cuda_graphs", lambda mode, device: True)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    cfg = _cfg(noise_files, steps=3, grad_accum=2, compile=True, checkpoint_every=10)
    train(cfg, tmp_path / "run")
    assert len(marks) == 6  # 3 steps of 2 micro-batches
