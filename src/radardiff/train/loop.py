"""The training loop (through accelerate): one process or many, CPU or GPU, any objective.

One loop trains every kind of run: what a run optimises is an objective
(:mod:`radardiff.train.objective`: plain diffusion training, or a distillation method), handed to
the :class:`Trainer`, which owns the rest: run directory and lock, data and normalisation, the
network's preparation, processes and precision, EMA, optimizer, logging, validation, checkpoints
and resume.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from radardiff import _stop
from radardiff._hardware import describe_cpu, resolve_precision
from radardiff.config import RunConfig, RunDir
from radardiff.data.dataset_file import DatasetFile
from radardiff.data.torch_dataset import RadarDataset, StepBatchSampler, identity_collate
from radardiff.diffusion import Denoiser, GaussianDiffusion, make_timestep_sampler
from radardiff.errors import ConfigError, RadarDiffError, RunDirError
from radardiff.models import log_range_moments
from radardiff.models.network import NetworkPolicy, prepare_network, release_network
from radardiff.train import rundir
from radardiff.train.checkpoint import (
    CheckpointState,
    ema_dirname,
    load_optimizer,
    load_weights,
    read_state,
    save_checkpoint,
)
from radardiff.train.ema import EMA
from radardiff.train.logs import FiniteWatch, LogWindow, TensorBoardLog, append_row, truncate_stats
from radardiff.train.objective import DiffusionObjective, Objective, lr_at
from radardiff.train.step import to_device, train_step

__all__ = [
    "Trainer",
    "TrainingDiverged",
    "TrainResult",
    "lr_at",
    "to_device",
    "train",
    "train_step",
]


log = logging.getLogger(__name__)


class TrainingDiverged(RadarDiffError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    last_checkpoint: Path | None
    final_loss: float


ProgressFn = Callable[[int, int, dict], None]


def noise_generator(seed: int, device: torch.device, host: torch.Generator) -> torch.Generator:
    """Where the step's Gaussian noise is drawn: ``host`` on the CPU, a generator on the GPU
    itself there (seeded from the same step seed, so a resumed GPU run draws the same noise)."""
    if device.type == "cpu":
        return host
    return torch.Generator(device=device).manual_seed(seed)


def _single_process_reset() -> None:
    """Forget the accelerate state of an earlier Trainer in this process (one process only).

    accelerate keeps one process-wide state and refuses a second Accelerator with other settings
    (a bf16 run after an fp32 one in the same notebook or benchmark); under torchrun the state
    belongs to the launch and stays.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)


def step_seed(seed: int, micro_step: int, rank: int) -> int:
    """A 63-bit seed for one micro-batch of one process: all randomness of the step derives from it."""
    return int(
        np.random.SeedSequence([seed, micro_step, rank]).generate_state(2, np.uint64)[0] >> 1
    )


def make_adamw(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW with its fused kernel (one kernel over all parameter tensors) where the device has
    one, else the multi-tensor (foreach) path: on the CPU torch would otherwise take its
    per-tensor loop, several times slower (docs/performance.md). Each path is deterministic, so
    resume stays bit-identical."""
    params = list(params)
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError):  # a torch without the fused kernel for this device
            pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


def _training_precision(cfg: RunConfig) -> str:
    """What autocast runs: ``auto`` resolves to bf16 where the device computes it fast."""
    tc = cfg.train
    if tc.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.mixed_precision=fp16 needs a GPU; use bf16 on the CPU")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return resolve_precision(tc.mixed_precision, device, "train.mixed_precision")


def _check_method(cfg: RunConfig, objective: Objective) -> None:
    if cfg.distill.method == objective.method:
        return
    if objective.method == "none":
        raise ConfigError(
            f"distill.method = '{cfg.distill.method}': this is a distillation config; run it with "
            "radardiff distill"
        )
    raise ConfigError(
        f"distill.method = '{cfg.distill.method}': this objective trains '{objective.method}'"
    )


class Trainer:
    """Holds the state of one training run of ``objective`` (default: plain diffusion training,
    :class:`DiffusionObjective`); :meth:`run` trains to ``cfg.train.steps``."""

    def __init__(
        self,
        cfg: RunConfig,
        out: str | Path,
        resume: bool = False,
        objective: Objective | None = None,
    ):
        self.cfg, self.run_dir, self.resume = cfg, RunDir(out), resume
        self.objective = objective or DiffusionObjective()
        _check_method(cfg, self.objective)
        self.precision = _training_precision(cfg)
        _single_process_reset()
        # cpu=True where there is no GPU: accelerate then runs several processes over gloo
        # (torchrun on a CPU-only machine), where it would otherwise fall back to one process
        self.acc = Accelerator(
            mixed_precision=self.precision,
            gradient_accumulation_steps=cfg.train.grad_accum,
            cpu=not torch.cuda.is_available(),
        )
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        root = self.run_dir.root
        self._existed, self._fresh = root.exists(), not self.run_dir.config.exists()
        self.lock = self.run_dir.lock() if self.acc.is_main_process else None
        if self.lock is not None and self.lock.previous:
            log.warning(
                "%s: %s ended without releasing the run; taken over", root, self.lock.previous
            )
        self.tb = None
        try:
            self._setup()
        except BaseException:
            self._abandon()
            raise

    # ---- set-up -------------------------------------------------------------------------------
    def _setup(self) -> None:
        self._open_run()
        self._log_settings()
        self._build_network()
        self._build_optimizer()
        self._finish_setup()

    def _open_run(self) -> None:
        """The run directory checked and made, the data read, the normalisation fitted or read."""
        cfg, run, main = self.cfg, self.run_dir, self.acc.is_main_process
        self.data = DatasetFile(cfg.data.train)
        rundir.check_resumable(run, cfg, self.objective.method, self.resume)
        if main:
            rundir.make_run_dir(run, cfg, self.data, self.resume)
            self.objective.run_ready(self)
        self.acc.wait_for_everyone()
        given = (
            None if self.resume and run.normalizer.is_file() else self.objective.normalizer(self)
        )
        self.normalizer, new = rundir.normalizer_of(run, cfg, self.data, self.resume, given)
        if new and main:
            self.normalizer.save(run.normalizer)
        rundir.check_data_fits(cfg, self.data, self.normalizer.model_channels)
        rundir.check_validation(cfg, self.data)
        self.diffusion = GaussianDiffusion(cfg.diffusion).to(self.acc.device)

    def _log_settings(self) -> None:
        log.info("torch CPU threads: %d (radardiff --threads N to change)", torch.get_num_threads())
        log.info(
            "precision: %s (train.mixed_precision = %s; CPU %s)",
            {"no": "fp32"}.get(self.precision, self.precision),
            self.cfg.train.mixed_precision,
            describe_cpu(),
        )

    def _network_policy(self) -> NetworkPolicy:
        tc = self.cfg.train
        return NetworkPolicy(
            kernels=tc.conv_kernels, option="train.conv_kernels", precision=self.precision,
            channels_last=tc.channels_last, compile=tc.compile, compile_mode=tc.compile_mode,
            training=True, grad_accum=tc.grad_accum, processes=self.acc.num_processes,
        )  # fmt: skip

    def _build_network(self) -> None:
        """The objective's network, prepared (kernels, memory format), and its EMA copies on the
        same kernels (they validate and sample without gradients)."""
        tc = self.cfg.train
        torch.manual_seed(tc.seed)
        self._network = self.objective.network(self)
        self.net = prepare_network(self._network, self.acc.device, self._network_policy())
        log.info("%s", self.net.line)
        self.ema = EMA(self._network, tc.ema_halflife_kimg, tc.ema_warmup_ratio)
        images = tc.steps * tc.batch_size * tc.grad_accum * self.acc.num_processes
        if len(capped := self.ema.capped(images)) > 1:  # averages that end as one and the same
            log.warning(
                "train.ema_halflife_kimg %s: longer than train.ema_warmup_ratio x the run's "
                "images (%g x %g kimg = %g kimg), so shortened to that until the end (several "
                "such averages are one and the same); lower ema_warmup_ratio or train longer",
                ", ".join(f"{h:g}" for h in capped), tc.ema_warmup_ratio, images / 1000,
                tc.ema_warmup_ratio * images / 1000,
            )  # fmt: skip
        for network in self.ema.models:
            self.net.follow(network)

    def _build_optimizer(self) -> None:
        """The optimizer, the timestep sampler and the state, from the checkpoint resumed where
        there is one; then accelerate's processes and torch.compile."""
        cfg, tc, model = self.cfg, self.cfg.train, self._network
        opt = make_adamw(model.parameters(), tc.lr, tc.weight_decay, self.acc.device)
        self.ts_sampler = make_timestep_sampler(
            cfg.diffusion.timestep_sampler, cfg.diffusion.timesteps
        )
        self.state = CheckpointState(step=0, images_seen=0, timestep_sampler={})
        if self.resume and self.run_dir.latest_checkpoint() is not None:
            self._load(model, opt)
        self.model, self.opt = self.acc.prepare(model, opt)
        self.model = self.net.compiled(self.model)
        self.compile_mode, self.cuda_graphs = self.net.compile_mode, self.net.cuda_graphs
        for ema in self.ema.models:
            ema.to(self.acc.device)
        # the network itself: out of torch.compile's and DDP's wrappers (EMA, checkpoints)
        self.raw_model = self.acc.unwrap_model(getattr(self.model, "_orig_mod", self.model))
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    def _finish_setup(self) -> None:
        cfg, tc = self.cfg, self.cfg.train
        if tc.tensorboard and self.acc.is_main_process:
            self.tb = TensorBoardLog.open(self.run_dir.tensorboard, self.state.step, self.resume)
        self.dataset = RadarDataset(self.data, self.normalizer, self.normalizer.valid_indices)
        range_moments = (
            log_range_moments(torch.as_tensor(self.normalizer.sample_stats))
            if cfg.model.range_conditioning
            else None
        )
        self.denoiser = Denoiser(
            self.model,
            cfg,
            self.normalizer.model_channels,
            range_moments=range_moments,
            channels_last=tc.channels_last,
            schedule=self.diffusion.schedule,
        )
        self.objective.prepared(self)

    def _load(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        ckpt = self.run_dir.latest_checkpoint()
        state = read_state(ckpt)
        try:
            load_weights(model, ckpt / "model")
            halflives = self.cfg.train.ema_halflife_kimg
            for i, (ema, hl) in enumerate(zip(self.ema.models, halflives, strict=True)):
                load_weights(ema, ckpt / ema_dirname(i, hl))
        except RuntimeError as err:
            raise RunDirError(f"{ckpt}: weights do not fit the configured model ({err})") from None
        load_optimizer(opt, ckpt)
        self.ts_sampler.load_state_dict(state.timestep_sampler)
        self.state = state
        self.objective.load_extras(ckpt)
        if self.acc.is_main_process:
            truncate_stats(self.run_dir.stats, state.step)

    def _abandon(self) -> None:
        """A start that failed before its first checkpoint leaves no half-made run: what this
        start created goes (then the run is released)."""
        try:
            if self.acc.is_main_process and self._fresh:
                rundir.remove_created(self.run_dir, self._existed, self.objective.created)
        finally:
            self.release()

    def release(self) -> None:
        """Release the run directory (done at the end of :meth:`run`)."""
        if self.lock is not None:
            self.lock.release()

    # ---- loop ---------------------------------------------------------------------------------
    def run(self, on_progress: ProgressFn | None = None) -> TrainResult:
        """Train to ``train.steps``; the run directory is released at the end, however it ends."""
        try:
            return self._run(on_progress)
        except BaseException:
            if self.tb is not None:
                self.tb.close()
                self.tb = None
            if not (self.run_dir.latest_file.is_file() or self.acc.num_processes > 1):
                self._abandon()  # nothing to resume: no litter either
            raise
        finally:
            if self.tb is not None:
                self.tb.close()
            self.release()

    def _batches(self):
        """The micro-batches of this process from the run's current step on."""
        cfg, tc, acc = self.cfg, self.cfg.train, self.acc
        sampler = StepBatchSampler(
            len(self.dataset),
            tc.batch_size,
            tc.seed,
            start_step=self.state.step * tc.grad_accum,
            rank=acc.process_index,
            world=acc.num_processes,
            steps=tc.steps * tc.grad_accum,
            augment=tc.augment,
        )
        on_gpu = acc.device.type == "cuda"
        workers = cfg.data.num_workers
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            collate_fn=identity_collate,
            num_workers=(4 if on_gpu else 0) if workers is None else workers,
            pin_memory=on_gpu,
            persistent_workers=False,
        )
        return iter(loader)

    def _run(self, on_progress: ProgressFn | None) -> TrainResult:
        tc = self.cfg.train
        batches, window, watch = self._batches(), LogWindow(), FiniteWatch(self.acc.device)
        self.last_loss, last_ckpt = float("nan"), None
        self.model.train()
        self._t0 = time.perf_counter()
        first_step = self.state.step
        for step in range(first_step, tc.steps):
            _stop.check()
            lr = self.objective.lr(self, step)
            for group in self.opt.param_groups:
                group["lr"] = lr
            grad_norm = self._step(step, batches, window, watch)
            if self.compile_mode is not None and step == first_step:
                self._log_compile(self._t0)
            if grad_norm is not None:
                window.grad_norm = grad_norm
            last_ckpt = self._after_step(lr, window, watch) or last_ckpt
            if on_progress is not None:
                # the loss of the last log line: reading it every step would stall a GPU
                loss = self.last_loss
                on_progress(
                    self.state.step, tc.steps, {"loss": loss} if math.isfinite(loss) else {}
                )
        self.acc.wait_for_everyone()
        return TrainResult(self.run_dir.root, self.state.step, last_ckpt, self.last_loss)

    def _step(self, step: int, batches, window: LogWindow, watch: FiniteWatch):
        """One optimizer step over ``train.grad_accum`` micro-batches; the gradient norm (or
        None), the EMA updated."""
        tc, acc = self.cfg.train, self.acc
        grad_norm = None
        for k in range(tc.grad_accum):
            seed = step_seed(tc.seed, step * tc.grad_accum + k, acc.process_index)
            torch.manual_seed(seed)  # dropout draws from the global generator
            gen = torch.Generator().manual_seed(seed)
            noise_gen = noise_generator(seed, acc.device, gen)
            if self.cuda_graphs:  # a new iteration: the graphs' memory of the last is free
                torch.compiler.cudagraph_mark_step_begin()
            with acc.accumulate(self.model):
                loss, per_sample, t = self.objective.loss(self, next(batches), gen, noise_gen)
                watch.loss(loss, step)
                acc.backward(loss)
                grad_norm = self._clip_gradients() if acc.sync_gradients else None
                if grad_norm is not None:
                    watch.grad(torch.as_tensor(grad_norm), step)
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
            all_t, all_loss = acc.gather(t), acc.gather(per_sample.float())
            if self.ts_sampler.uses_losses:  # the sampler learns from them: a host copy a step
                self.ts_sampler.update(all_t.cpu().numpy(), all_loss.cpu().numpy())
            window.add(all_t, all_loss, self.cfg.diffusion.timesteps)
        batch_images = tc.batch_size * tc.grad_accum * acc.num_processes
        self.state.images_seen += batch_images
        self.state.step = step + 1
        self.ema.update(self.raw_model, self.state.images_seen, batch_images)
        self.objective.after_step(self)
        return grad_norm

    def _after_step(self, lr: float, window: LogWindow, watch: FiniteWatch) -> Path | None:
        """The step's checks, log line, validation and checkpoint, where due."""
        tc, done = self.cfg.train, self.state.step
        log_now = done % tc.log_every == 0 or done == tc.steps
        save_now = done % tc.checkpoint_every == 0 or done == tc.steps
        # the finite check reads the device: on a GPU only when a line or a checkpoint is due,
        # on the CPU (nothing to overlap) every step, stopping at the first bad one
        if self.acc.device.type != "cuda" or log_now or save_now:
            self._check(watch)
        if log_now:
            row = window.flush(done, lr, self.state.images_seen, time.perf_counter() - self._t0)
            self.last_loss = row["loss"]
            self._t0 = time.perf_counter()
            self._write_stats(row)
        if self.cfg.data.val and (done % tc.val_every == 0 or done == tc.steps):
            self._validate()
        return self._checkpoint() if save_now else None

    def _log_compile(self, started: float) -> None:
        """The first step's time (since ``started``), which is torch.compile's."""
        if self.acc.device.type == "cuda":
            torch.cuda.synchronize(self.acc.device)
        seconds = time.perf_counter() - started
        log.info(
            "torch.compile (%s): %.1f s for the first step, compiling the network's forward and "
            "backward for batch %d (every later step reuses them)",
            self.compile_mode, seconds, self.cfg.train.batch_size,
        )  # fmt: skip

    def _write_stats(self, row: dict) -> None:
        if self.acc.is_main_process:
            append_row(self.run_dir.stats, row, self.tb)

    def _validate(self) -> None:
        from radardiff.train.validate import validation_loss

        val = DatasetFile(self.cfg.data.val)
        res = validation_loss(
            self.denoiser.with_options(network=self.ema.primary),
            self.diffusion,
            self.normalizer,
            val,
            self.acc.device,
        )
        release_network(self.ema.primary)  # its weights move on: nothing kept for them
        self.state.val_loss = res.loss
        if self.state.best_val is None or res.loss < self.state.best_val:
            self.state.best_val, self.state.best_step = res.loss, self.state.step
        self._write_stats({"step": self.state.step, "val_loss": res.loss, "val_mse": res.mse,
                           "val_vlb_term_bpd": res.vlb_term_bpd})  # fmt: skip

    def _clip_gradients(self) -> torch.Tensor | None:
        """Unscale (fp16) and clip the gradients to ``grad_clip``; their norm before clipping.

        torch's clip on the parameter list kept from set-up: accelerate's ``clip_grad_norm_``
        walks the module tree at every call (host time a GPU spends idle); the gradients are
        already reduced across processes (DDP) when this runs.
        """
        self.acc.unscale_gradients()
        if self.cfg.train.grad_clip <= 0:
            return None
        return torch.nn.utils.clip_grad_norm_(self.params, self.cfg.train.grad_clip)

    def _check(self, watch: FiniteWatch) -> None:
        bad = watch.first_bad()
        if bad is not None:
            self._diverged(*bad)

    def _diverged(self, step: int, what: str) -> None:
        last = self.run_dir.latest_checkpoint() or "none (no checkpoint yet)"
        raise TrainingDiverged(
            f"step {step}: {what}; training stopped, the last good checkpoint is {last}"
        )

    def _checkpoint(self) -> Path | None:
        params = self.raw_model.parameters()
        if not all(bool(torch.isfinite(p).all()) for p in params):
            self._diverged(self.state.step, "weights are not finite (not checkpointed)")
        self.state.timestep_sampler = self.ts_sampler.state_dict()
        path = None
        if self.acc.is_main_process:
            tc = self.cfg.train
            path = save_checkpoint(
                self.run_dir, self.cfg, self.state, self.raw_model, self.ema.models,
                tc.ema_halflife_kimg, self.opt, tc.keep_last, extras=self.objective.extras(),
            )  # fmt: skip
        self.acc.wait_for_everyone()
        return path or self.run_dir.checkpoint(self.state.step)


def train(
    cfg: RunConfig, out: str | Path, resume: bool = False, on_progress: ProgressFn | None = None
) -> TrainResult:
    """Train (or resume) a run into ``out``."""
    return Trainer(cfg, out, resume).run(on_progress)
