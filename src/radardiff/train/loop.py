"""The training loop (through accelerate): one process or many, CPU or GPU."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
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
from radardiff.config import RunConfig, RunDir, atomic_write_text, load_config, save_config
from radardiff.data.dataset_file import DatasetFile
from radardiff.data.normalize import Normalizer, valid_sample_indices
from radardiff.data.torch_dataset import RadarDataset, StepBatchSampler, identity_collate
from radardiff.diffusion import Denoiser, GaussianDiffusion, make_timestep_sampler
from radardiff.errors import ConfigError, RadarDiffError, RunDirError
from radardiff.models import build_unet, log_range_moments
from radardiff.models.network import NetworkPolicy, prepare_network, release_network
from radardiff.models.run import architecture
from radardiff.train.checkpoint import (
    CheckpointState,
    ema_dirname,
    load_optimizer,
    load_weights,
    read_state,
    save_checkpoint,
)
from radardiff.train.ema import EMA
from radardiff.train.step import to_device, train_step

__all__ = ["Trainer", "TrainingDiverged", "TrainResult", "to_device", "train", "train_step"]


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


def lr_at(cfg, step: int) -> float:
    tc = cfg.train
    if tc.warmup_steps and step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    frac = (step - tc.warmup_steps) / max(tc.steps - tc.warmup_steps, 1)
    if tc.lr_schedule == "cosine":
        return tc.lr * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    if tc.lr_schedule == "linear":
        return tc.lr * max(1.0 - frac, 0.0)
    return tc.lr


def data_info_dict(info) -> dict:
    """What sampling needs to know of the training data (kind, units, classes, shape)."""
    return {
        "kind": info.kind,
        "units": info.units,
        "class_names": info.class_names,
        "pixel_spacing_m": info.pixel_spacing_m,
        "shape": list(info.shape),
        "source": str(info.path),
    }


def _check_data_fits(cfg: RunConfig, data: DatasetFile, norm_channels: int) -> None:
    info = data.info
    if info.height != cfg.model.image_size or info.width != cfg.model.image_size:
        raise ConfigError(
            f"{data.path}: images are {info.height}x{info.width} but model.image_size is "
            f"{cfg.model.image_size}"
        )
    if norm_channels != cfg.model.in_channels:
        raise ConfigError(
            f"{data.path}: data give {norm_channels} channel(s) to the network but "
            f"model.in_channels is {cfg.model.in_channels}"
        )
    if cfg.model.range_conditioning and cfg.data.normalization not in ("minmax_pm1", "minmax_01"):
        raise ConfigError(
            "model.range_conditioning needs a per-sample min-max data.normalization "
            f"(minmax_pm1 or minmax_01), not {cfg.data.normalization}"
        )
    _check_labels(cfg, data)


def _check_labels(cfg: RunConfig, data: DatasetFile) -> None:
    k = cfg.model.num_classes
    if not k:
        return
    if not data.info.has_labels:
        raise ConfigError(f"{data.path}: model.num_classes is set but the file has no labels")
    labels = data.labels()
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        bad = int(labels.max()) if labels.max() >= k else int(labels.min())
        raise ConfigError(
            f"{data.path}: holds label {bad}, outside 0..{k - 1} (model.num_classes = {k})"
        )


def make_adamw(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW with its fused kernel (one kernel over all parameter tensors) where the device has
    one, else the multi-tensor (foreach) path: on the CPU torch would otherwise take its
    per-tensor loop. Measured on the 2-core EPYC, one thread, the 504 tensors of the
    insar_noise_32 network: per-tensor loop 240-314 ms a step, foreach 434-508 ms, fused
    49-88 ms. Each path is deterministic, so resume stays bit-identical."""
    params = list(params)
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError):  # a torch without the fused kernel for this device
            pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


class Trainer:
    """Holds the state of one training run; :meth:`run` trains to ``cfg.train.steps``."""

    METHOD = "none"  # the distillation method this trainer continues (none: plain training)
    CREATED: tuple[str, ...] = ()  # more entries a fresh start makes in the run (removed with it)

    def __init__(self, cfg: RunConfig, out: str | Path, resume: bool = False):
        self.cfg, self.run_dir, self.resume = cfg, RunDir(out), resume
        if cfg.distill.method != self.METHOD:
            raise ConfigError(
                f"distill.method = '{cfg.distill.method}': this is a distillation config; run it "
                "with radardiff distill"
            )
        tc = cfg.train
        if tc.mixed_precision == "fp16" and not torch.cuda.is_available():
            raise ConfigError("train.mixed_precision=fp16 needs a GPU; use bf16 on the CPU")
        _single_process_reset()
        # what autocast runs: auto resolves to bf16 where the device computes it fast, else fp32
        self.precision = resolve_precision(
            tc.mixed_precision,
            "cuda" if torch.cuda.is_available() else "cpu",
            "train.mixed_precision",
        )
        # cpu=True where there is no GPU: accelerate then runs several processes over gloo
        # (torchrun on a CPU-only machine), where it would otherwise fall back to one process
        self.acc = Accelerator(
            mixed_precision=self.precision,
            gradient_accumulation_steps=tc.grad_accum,
            cpu=not torch.cuda.is_available(),
        )
        if tc.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        root = self.run_dir.root
        existed, fresh = root.exists(), not self.run_dir.config.exists()
        self.lock = self.run_dir.lock() if self.acc.is_main_process else None
        if self.lock is not None and self.lock.previous:
            log.warning(
                "%s: %s ended without releasing the run; taken over", root, self.lock.previous
            )
        self._existed, self._fresh = existed, fresh
        try:
            self._setup()
        except BaseException:
            self._abandon(existed, fresh)
            raise

    def _setup(self) -> None:
        cfg, tc, resume = self.cfg, self.cfg.train, self.resume
        self.data = DatasetFile(cfg.data.train)
        self._prepare_run_dir()
        self.normalizer = self._normalizer()
        _check_data_fits(cfg, self.data, self.normalizer.model_channels)
        if cfg.data.val:
            val = DatasetFile(cfg.data.val)
            _check_labels(cfg, val)
            if val.info.shape != self.data.info.shape:
                raise ConfigError(
                    f"{val.path}: validation images are {val.info.shape}, training images "
                    f"{self.data.info.shape}"
                )
        self.diffusion = GaussianDiffusion(cfg.diffusion).to(self.acc.device)
        log.info("torch CPU threads: %d (radardiff --threads N to change)", torch.get_num_threads())
        log.info(
            "precision: %s (train.mixed_precision = %s; CPU %s)",
            {"no": "fp32"}.get(self.precision, self.precision),
            self.cfg.train.mixed_precision,
            describe_cpu(),
        )
        torch.manual_seed(tc.seed)
        model = self._build_model()
        self.net = prepare_network(model, self.acc.device, self._network_policy())
        log.info("%s", self.net.line)
        # the EMA networks validate and sample without gradients, on the same kernels
        self.ema = EMA(model, tc.ema_halflife_kimg, tc.ema_warmup_ratio)
        for network in self.ema.models:
            self.net.follow(network)
        opt = make_adamw(model.parameters(), tc.lr, tc.weight_decay, self.acc.device)
        self.ts_sampler = make_timestep_sampler(
            cfg.diffusion.timestep_sampler, cfg.diffusion.timesteps
        )
        self.state = CheckpointState(step=0, images_seen=0, timestep_sampler={})
        if resume and self.run_dir.latest_checkpoint() is not None:
            self._load(model, opt)
        self.model, self.opt = self.acc.prepare(model, opt)
        self.model = self.net.compiled(self.model)
        self.compile_mode, self.cuda_graphs = self.net.compile_mode, self.net.cuda_graphs
        for ema in self.ema.models:
            ema.to(self.acc.device)
        # the network itself: out of torch.compile's and DDP's wrappers (EMA, checkpoints)
        self.raw_model = self.acc.unwrap_model(getattr(self.model, "_orig_mod", self.model))
        self.tb = (
            TensorBoardLog.open(self.run_dir.tensorboard, self.state.step, resume)
            if tc.tensorboard and self.acc.is_main_process
            else None
        )
        self.params = [p for p in self.model.parameters() if p.requires_grad]
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

    def _network_policy(self) -> NetworkPolicy:
        tc = self.cfg.train
        return NetworkPolicy(
            kernels=tc.conv_kernels, option="train.conv_kernels", precision=self.precision,
            channels_last=tc.channels_last, compile=tc.compile, compile_mode=tc.compile_mode,
            training=True, grad_accum=tc.grad_accum, processes=self.acc.num_processes,
        )  # fmt: skip

    # ---- what a subclass (distillation) changes -------------------------------------------------
    def _build_model(self) -> torch.nn.Module:
        """The network a fresh run starts from."""
        return build_unet(
            self.cfg.model,
            self.normalizer.channels * (2 if self.normalizer.phase else 1),
            self.diffusion.learned_variance,
        )

    def _loss(self, batch, gen, noise_gen) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(scalar loss, per-sample loss, per-sample timesteps) of one micro-batch."""
        return train_step(
            self.denoiser, self.diffusion, self.ts_sampler, batch, gen, self.acc.device, noise_gen
        )

    def _lr(self, step: int) -> float:
        return lr_at(self.cfg, step)

    def _after_step(self) -> None:
        """Called after each optimizer step and EMA update, before logging and checkpoints."""

    def _checkpoint_extras(self) -> dict[str, torch.nn.Module]:
        """More networks saved in each checkpoint (diffusers folders named by the keys)."""
        return {}

    def _load_extras(self, ckpt: Path) -> None:
        """Restore what :meth:`_checkpoint_extras` saved."""

    # ---- set-up -------------------------------------------------------------------------------
    def _abandon(self, existed: bool, fresh: bool) -> None:
        """A start that failed before its first checkpoint leaves no half-made run: what this
        start created goes (then the run is released)."""
        try:
            if self.acc.is_main_process and fresh:
                self._remove_created(existed)
        finally:
            if self.lock is not None:
                self.lock.release()

    def _remove_created(self, existed: bool) -> None:
        root = self.run_dir.root
        if not existed:
            shutil.rmtree(root, ignore_errors=True)
            return
        for path in (self.run_dir.config, self.run_dir.normalizer, self.run_dir.data_info,
                     self.run_dir.stats):  # fmt: skip
            path.unlink(missing_ok=True)
        for folder in (self.run_dir.tensorboard, self.run_dir.checkpoints,
                       *(root / name for name in self.CREATED)):  # fmt: skip
            shutil.rmtree(folder, ignore_errors=True)
        (root / ".lock").unlink(missing_ok=True)

    def release(self) -> None:
        """Release the run directory (done at the end of :meth:`run`)."""
        if self.lock is not None:
            self.lock.release()

    def _prepare_run_dir(self) -> None:
        run = self.run_dir
        if self.resume:
            run.require()
            saved = load_config(run.config)
            if saved.distill.method != self.METHOD:
                how = "radardiff train" if saved.distill.method == "none" else "radardiff distill"
                raise RunDirError(
                    f"{run.config}: a run of distill.method '{saved.distill.method}'; "
                    f"continue it with {how} --resume"
                )
            if architecture(saved) != architecture(self.cfg):
                raise RunDirError(
                    f"{run.config}: cannot resume: the model or diffusion settings differ from the "
                    "run's (start a new run directory instead)"
                )
        elif run.checkpoints.exists() and any(run.checkpoints.glob("step_*")):
            raise RunDirError(
                f"{run.root}: already holds checkpoints; pass --resume or choose a new --out"
            )
        if self.acc.is_main_process:
            run.root.mkdir(parents=True, exist_ok=True)
            _remove_unfinished_checkpoints(run)
            if self.resume and run.latest_checkpoint() is None:
                _truncate_stats(run.stats, 0)  # killed before its first checkpoint: start over
            save_config(self.cfg, run.config)
            atomic_write_text(run.data_info, json.dumps(data_info_dict(self.data.info)))
        self.acc.wait_for_everyone()

    def _normalizer(self) -> Normalizer:
        run = self.run_dir
        if self.resume and run.normalizer.is_file():
            norm = Normalizer.load(run.normalizer)
            norm.valid_indices = valid_sample_indices(self.data, to_db=norm.to_db)
            if norm.channels != self.data.info.channels:
                raise RunDirError(
                    f"{self.data.path}: has {self.data.info.channels} channel(s) but the run was "
                    f"trained on {norm.channels}"
                )
            return norm
        norm = Normalizer.fit(self.data, self.cfg.data.normalization, self.cfg.data.to_db)
        if self.acc.is_main_process:
            norm.save(run.normalizer)
        return norm

    def _load(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        ckpt = self.run_dir.latest_checkpoint()
        state = read_state(ckpt)
        try:
            load_weights(model, ckpt / "model")
            for i, (ema, hl) in enumerate(
                zip(self.ema.models, self.cfg.train.ema_halflife_kimg, strict=True)
            ):
                load_weights(ema, ckpt / ema_dirname(i, hl))
        except RuntimeError as err:
            raise RunDirError(f"{ckpt}: weights do not fit the configured model ({err})") from None
        load_optimizer(opt, ckpt)
        self.ts_sampler.load_state_dict(state.timestep_sampler)
        self.state = state
        self._load_extras(ckpt)
        if self.acc.is_main_process:
            _truncate_stats(self.run_dir.stats, state.step)

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
                self._abandon(self._existed, self._fresh)  # nothing to resume: no litter either
            raise
        finally:
            if self.tb is not None:
                self.tb.close()
            self.release()

    def _run(self, on_progress: ProgressFn | None) -> TrainResult:
        cfg, tc, acc = self.cfg, self.cfg.train, self.acc
        accum = tc.grad_accum
        sampler = StepBatchSampler(
            len(self.dataset),
            tc.batch_size,
            tc.seed,
            start_step=self.state.step * accum,
            rank=acc.process_index,
            world=acc.num_processes,
            steps=tc.steps * accum,
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
        batches = iter(loader)
        log = _LogWindow()
        watch = _FiniteWatch(acc.device)
        per_step_losses = self.ts_sampler.uses_losses
        last_loss, last_ckpt = float("nan"), None
        self.model.train()
        t0 = time.perf_counter()
        first_step = self.state.step
        for step in range(first_step, tc.steps):
            _stop.check()
            lr = self._lr(step)
            for group in self.opt.param_groups:
                group["lr"] = lr
            for k in range(accum):
                micro = step * accum + k
                batch = next(batches)
                seed = step_seed(tc.seed, micro, acc.process_index)
                torch.manual_seed(seed)  # dropout draws from the global generator
                gen = torch.Generator().manual_seed(seed)
                noise_gen = noise_generator(seed, acc.device, gen)
                if self.cuda_graphs:  # a new iteration: the graphs' memory of the last is free
                    torch.compiler.cudagraph_mark_step_begin()
                with acc.accumulate(self.model):
                    loss, per_sample, t = self._loss(batch, gen, noise_gen)
                    watch.loss(loss, step)
                    acc.backward(loss)
                    grad_norm = None
                    if acc.sync_gradients:
                        grad_norm = self._clip_gradients()
                    if grad_norm is not None:
                        watch.grad(torch.as_tensor(grad_norm), step)
                    self.opt.step()
                    self.opt.zero_grad(set_to_none=True)
                all_t = acc.gather(t)
                all_loss = acc.gather(per_sample.float())
                if per_step_losses:  # the sampler learns from them: a host copy every step
                    self.ts_sampler.update(all_t.cpu().numpy(), all_loss.cpu().numpy())
                log.add(all_t, all_loss, cfg.diffusion.timesteps)
            batch_images = tc.batch_size * accum * acc.num_processes
            self.state.images_seen += batch_images
            self.state.step = step + 1
            self.ema.update(self.raw_model, self.state.images_seen, batch_images)
            self._after_step()
            if self.compile_mode is not None and step == first_step:
                self._log_compile(t0)
            if grad_norm is not None:
                log.grad_norm = grad_norm
            done = self.state.step
            log_now = done % tc.log_every == 0 or done == tc.steps
            save_now = done % tc.checkpoint_every == 0 or done == tc.steps
            # the finite check reads the device: on a GPU only when a line or a checkpoint is due,
            # on the CPU (nothing to overlap) every step, stopping at the first bad one
            if not on_gpu or log_now or save_now:
                self._check(watch)
            if log_now:
                elapsed = time.perf_counter() - t0
                row = log.flush(done, lr, self.state.images_seen, elapsed)
                last_loss = row["loss"]
                t0 = time.perf_counter()
                self._write_stats(row)
            if self.cfg.data.val and (done % tc.val_every == 0 or done == tc.steps):
                self._validate()
            if save_now:
                last_ckpt = self._checkpoint()
            if on_progress is not None:
                # the loss of the last log line: reading it every step would stall a GPU
                on_progress(done, tc.steps, {"loss": last_loss} if math.isfinite(last_loss) else {})
        acc.wait_for_everyone()
        return TrainResult(self.run_dir.root, self.state.step, last_ckpt, last_loss)

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
            with self.run_dir.stats.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            if self.tb is not None:
                self.tb.log(row)

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
        loss = res.loss
        self.state.val_loss = loss
        if self.state.best_val is None or loss < self.state.best_val:
            self.state.best_val, self.state.best_step = loss, self.state.step
        self._write_stats(
            {
                "step": self.state.step,
                "val_loss": loss,
                "val_mse": res.mse,
                "val_vlb_term_bpd": res.vlb_term_bpd,
            }
        )

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

    def _check(self, watch: _FiniteWatch) -> None:
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
            path = save_checkpoint(
                self.run_dir,
                self.cfg,
                self.state,
                self.raw_model,
                self.ema.models,
                self.cfg.train.ema_halflife_kimg,
                self.opt,
                self.cfg.train.keep_last,
                extras=self._checkpoint_extras(),
            )
        self.acc.wait_for_everyone()
        return path or self.run_dir.checkpoint(self.state.step)


def _remove_unfinished_checkpoints(run: RunDir) -> None:
    """Temporary folders of checkpoint writes that were killed are removed, with a notice."""
    for tmp in sorted(run.checkpoints.glob(".step_*.tmp")):
        shutil.rmtree(tmp, ignore_errors=True)
        log.warning("%s: removed an unfinished checkpoint of an interrupted write", tmp)


def _truncate_stats(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from."""
    if not path.is_file():
        return
    keep = [
        ln
        for ln in path.read_text(encoding="utf-8").splitlines()
        if ln.strip() and json.loads(ln).get("step", 0) <= step
    ]
    path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")


class TensorBoardLog:
    """The stats.jsonl rows as TensorBoard scalars (``RUN/tensorboard``), when installed."""

    def __init__(self, writer) -> None:
        self.writer = writer

    @classmethod
    def open(cls, logdir: Path, step: int, resume: bool = False) -> TensorBoardLog | None:
        """A writer, or None without the tensorboard package. On resume, events logged after
        ``step`` (the checkpoint resumed from; all of them without one) are purged, as
        stats.jsonl is truncated."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        # SummaryWriter purges events at steps >= purge_step; the checkpoint's own step stays
        purge = step + 1 if step else (0 if resume else None)
        return cls(SummaryWriter(str(logdir), purge_step=purge))

    def log(self, row: dict) -> None:
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                group = "val" if key.startswith("val_") else "train"
                self.writer.add_scalar(f"{group}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _FiniteWatch:
    """Remembers, on the device, the first step whose loss or gradient norm was not finite.

    Checking a GPU value on the host waits for all queued work; the loop asks only when it logs
    or checkpoints (every step on the CPU), so the GPU never idles between steps. A bad step
    stops training with its own number at the next check, before any checkpoint is written.
    """

    def __init__(self, device: torch.device) -> None:
        self.steps = torch.full((2,), -1, dtype=torch.long, device=device)
        self.values = torch.zeros(2, dtype=torch.float32, device=device)

    def _see(self, k: int, value: torch.Tensor, step: int) -> None:
        value = value.detach().float().reshape(()).to(self.steps.device)
        new = ~torch.isfinite(value) & (self.steps[k] < 0)
        self.steps[k] = torch.where(new, step, self.steps[k])
        self.values[k] = torch.where(new, value, self.values[k])

    def loss(self, value: torch.Tensor, step: int) -> None:
        self._see(0, value, step)

    def grad(self, value: torch.Tensor, step: int) -> None:
        self._see(1, value, step)

    def first_bad(self) -> tuple[int, str] | None:
        steps, values = self.steps.tolist(), self.values.tolist()
        found = [(s, k) for k, s in enumerate(steps) if s >= 0]
        if not found:
            return None
        step, k = min(found)
        return step, f"{('loss', 'gradient norm')[k]} is {values[k]}"


class _LogWindow:
    """Accumulates per-sample losses between two log lines, split by timestep quartile.

    Values stay where they were computed (on the GPU) until :meth:`flush`.
    """

    def __init__(self) -> None:
        self.t: list[torch.Tensor] = []
        self.loss: list[torch.Tensor] = []
        self.grad_norm: torch.Tensor | float | None = None
        self.T = 1

    def add(self, t: torch.Tensor, loss: torch.Tensor, T: int) -> None:
        self.t.append(t.detach())
        self.loss.append(loss.detach())
        self.T = T

    def flush(self, step: int, lr: float, images_seen: int, elapsed: float) -> dict:
        t = torch.cat(self.t).cpu().numpy()
        loss = torch.cat(self.loss).cpu().numpy()
        q = np.minimum(t * 4 // self.T, 3)
        row = {
            "step": step,
            "loss": float(loss.mean()),
            "lr": lr,
            "images_seen": images_seen,
            "img_per_s": float(t.size / max(elapsed, 1e-9)),
        }
        for i in range(4):
            sel = loss[q == i]
            row[f"loss_q{i}"] = float(sel.mean()) if sel.size else None
        if self.grad_norm is not None:
            row["grad_norm"] = float(self.grad_norm)
        self.t, self.loss = [], []
        return row


def train(
    cfg: RunConfig, out: str | Path, resume: bool = False, on_progress: ProgressFn | None = None
) -> TrainResult:
    """Train (or resume) a run into ``out``."""
    return Trainer(cfg, out, resume).run(on_progress)
