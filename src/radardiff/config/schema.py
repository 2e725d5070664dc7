"""Typed configuration, one section per stage.

Every mode is a ``Literal`` so that a typo is refused when the config is loaded, not hours into a
run. Sections are frozen: a resolved config is a value, written once into the run directory.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DataKind = Literal["sar_backscatter", "insar_unwrapped", "insar_wrapped", "insar_noise", "generic"]
Normalization = Literal[
    "minmax_pm1", "minmax_01", "standardize", "global_minmax", "global_standardize", "none"
]
Schedule = Literal["linear", "cosine"]
Prediction = Literal["eps", "v", "x0"]
Variance = Literal["fixed_small", "fixed_large", "learned_range"]
LossType = Literal["mse", "rescaled_mse", "kl", "rescaled_kl"]
TimestepSampler = Literal["uniform", "loss_second_moment"]
# auto: bf16 where the device computes it fast (radardiff._hardware), else fp32
MixedPrecision = Literal["no", "bf16", "fp16", "auto"]
# torch.compile's modes; auto: reduce-overhead (CUDA graphs) on a GPU, default elsewhere
CompileMode = Literal[
    "auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
]
# who computes the 3x3 and 1x1 convolutions; auto: radardiff's AVX2 kernels where they run
# (CPU, fp32, not compiled), torch (oneDNN) elsewhere
ConvKernels = Literal["auto", "radardiff", "torch"]
LrSchedule = Literal["constant", "cosine", "linear"]
Augment = Literal["none", "flips", "dihedral"]
MetricName = Literal[
    "semivariogram",
    "psd",
    "histogram",
    "ranges",
    "speckle",
    "phase",
    "sar",
    "memorisation",
    "maps",
]


# The reference code's channel multipliers by image size.
DEFAULT_CHANNEL_MULT: dict[int, tuple[int, ...]] = {
    32: (1, 2, 2, 2),
    64: (1, 2, 3, 4),
    128: (1, 1, 2, 3, 4),
    256: (1, 1, 2, 2, 4, 4),
}


class _Section(BaseModel):
    # NaN and infinity are refused in every field: no setting means them (train.lr = inf passed
    # validation and diverged at step 1)
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )


class DataConfig(_Section):
    """Where the training data live and how they are normalised for the network."""

    train: str = Field("", description="dataset file (HDF5) of the training split")
    val: str | None = Field(None, description="dataset file of the validation split")
    normalization: Normalization = "minmax_pm1"
    to_db: bool | Literal["auto"] = Field(
        False,
        description="convert linear sigma0 to dB before normalising; auto: when the training "
        "file is SAR backscatter in linear units (not dB, no negative value)",
    )
    num_workers: int | None = Field(
        None,
        ge=0,
        description="DataLoader worker processes; default: 4 on a GPU (reading overlaps the "
        "GPU's work), 0 on the CPU (workers would take cores from the training itself)",
    )


class ModelConfig(_Section):
    """The denoising network (diffusers ``UNet2DModel``)."""

    image_size: int = Field(32, ge=8)
    in_channels: int = Field(1, ge=1)
    base_channels: int = Field(64, ge=8)
    channel_mult: tuple[int, ...] | None = Field(
        None, description="per-level channel multipliers; None picks the reference defaults by size"
    )
    layers_per_block: int = Field(2, ge=1)
    attention_resolutions: tuple[int, ...] = Field(
        (16,), description="feature-map sizes (pixels) whose blocks get self-attention"
    )
    attention_head_dim: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    norm_num_groups: int = Field(32, ge=1)
    scale_shift_norm: bool = True
    num_classes: int = Field(0, ge=0, description="0: unconditional")
    class_dropout: float = Field(0.1, ge=0.0, le=1.0, description="label dropout for CFG")
    range_conditioning: bool = Field(
        False,
        description="condition on the per-sample range kept by the normaliser (with or "
        "without num_classes)",
    )
    superres_low_size: int = Field(0, ge=0, description="0: not a super-resolution model")
    superres_aug_max: int = Field(
        200, ge=0, description="largest diffusion step of the noise put on the low-res condition"
    )
    maps: tuple[str, ...] = Field(
        (),
        description="names of the training file's maps the network is conditioned on (extra "
        "input planes: label maps one-hot, other maps standardised); empty: none",
    )
    map_dropout: float = Field(
        0.1, ge=0.0, le=1.0, description="map dropout in training, for classifier-free guidance"
    )

    @field_validator("maps", mode="before")
    @classmethod
    def _map_names(cls, value):
        """``--set model.maps=dem,land`` (or ``[dem]``) as well as a TOML list of names."""
        if isinstance(value, str):
            return tuple(v.strip().strip("'\"") for v in value.strip("[] ").split(",") if v.strip())
        return value

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        mult = self.channel_mult
        if mult is None and self.image_size not in DEFAULT_CHANNEL_MULT:
            raise ValueError(
                f"channel_mult must be given for image_size {self.image_size} (defaults exist for "
                f"{', '.join(map(str, DEFAULT_CHANNEL_MULT))})"
            )
        mult = mult if mult is not None else DEFAULT_CHANNEL_MULT[self.image_size]
        if len(mult) == 0 or min(mult) < 1:
            raise ValueError("channel_mult must be a non-empty list of positive integers")
        others = [
            n
            for n, on in (
                ("num_classes", self.num_classes),
                ("range_conditioning", self.range_conditioning),
            )
            if on
        ]
        if self.superres_low_size and others:
            raise ValueError(
                f"superres_low_size and {' and '.join(others)} cannot be combined: a "
                "super-resolution stage takes its range from its low-resolution image and has "
                "no class embedding"
            )
        if len(set(self.maps)) != len(self.maps):
            raise ValueError(f"maps {list(self.maps)}: a map is named twice")
        low = self.superres_low_size
        if low and (low >= self.image_size or self.image_size % low):
            raise ValueError(
                f"superres_low_size {low} must divide image_size {self.image_size} and be smaller"
            )
        levels = len(mult)
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(
                f"image_size {self.image_size} is not divisible by 2**{levels - 1} "
                f"for {levels} levels"
            )
        self._check_widths(mult)
        return self

    def _check_widths(self, mult: tuple[int, ...]) -> None:
        """Channel widths the network can be built with: group norm groups divide every level's
        width; every attention (the blocks at attention_resolutions and the middle block, at the
        last level) has at least one head of attention_head_dim channels."""
        groups = min(self.norm_num_groups, self.base_channels)
        for level, m in enumerate(mult):
            width = self.base_channels * m
            if width % groups:
                raise ValueError(
                    f"level {level} has {width} channels (base_channels {self.base_channels} x "
                    f"channel_mult {m}), not divisible by norm_num_groups {groups}"
                )
            size = self.image_size // 2**level
            attends = size in self.attention_resolutions or level == len(mult) - 1
            if attends and width < self.attention_head_dim:
                raise ValueError(
                    f"attention at {size} px has {width} channels, fewer than attention_head_dim "
                    f"{self.attention_head_dim} (zero heads): raise base_channels or lower "
                    "attention_head_dim"
                )


class DiffusionConfig(_Section):
    """The forward process and the training objective."""

    timesteps: int = Field(1000, ge=10, le=4000)
    schedule: Schedule = "linear"
    zero_terminal_snr: bool = Field(
        False,
        description="rescale the schedule so that its last step holds no signal (Lin et al. "
        "2024); needs v- or x0-prediction",
    )
    prediction: Prediction = Field(
        "v",
        description="what the network predicts; v (Salimans and Ho 2022) is the default: "
        "eps-prediction's x0 error grows as 1/sqrt(abar) near t = T, and deterministic fast "
        "samplers turn it into noise samples (docs/sampling.md, fast sampling)",
    )
    variance: Variance = "fixed_small"
    loss: LossType = "mse"
    vlb_weight: float = Field(
        0.001, ge=0.0, description="lambda of L_hybrid = L_simple + lambda L_vlb"
    )
    timestep_sampler: TimestepSampler = "uniform"
    min_snr_gamma: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _check(self) -> DiffusionConfig:
        if self.schedule == "linear" and self.timesteps <= 20:
            raise ValueError("timesteps must be above 20 with the linear schedule (beta_T = 20/T)")
        if self.zero_terminal_snr and self.prediction == "eps":
            raise ValueError(
                "zero_terminal_snr needs prediction = 'v' or 'x0': at zero SNR an eps-prediction "
                "network cannot give x0 (x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar), abar = 0)"
            )
        return self


class TrainConfig(_Section):
    """The training loop."""

    steps: int = Field(10_000, ge=1)
    batch_size: int = Field(32, ge=1, description="per process")
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: LrSchedule = "constant"
    grad_clip: float = Field(1.0, ge=0.0, description="0 disables clipping")
    grad_accum: int = Field(1, ge=1)
    mixed_precision: MixedPrecision = "no"
    ema_halflife_kimg: tuple[float, ...] = Field(
        (0.5,), description="EMA half-lives in thousands of images seen; the first one samples"
    )
    ema_warmup_ratio: float = Field(0.05, ge=0.0, description="half-life <= ratio * images seen")
    seed: int = Field(0, ge=0)
    augment: Augment = Field(
        "none",
        description="mirror images as they are drawn: flips (left-right and up-down: keeps the "
        "image axes, so range and azimuth stay apart, as SAR speckle correlation and GRD "
        "geometry need) or dihedral (also quarter turns, for data without a preferred axis)",
    )
    log_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(1000, ge=1)
    keep_last: int = Field(3, ge=1)
    val_every: int = Field(1000, ge=1)
    val_samples: int = Field(256, ge=1)
    channels_last: bool = False
    compile: bool = Field(
        False,
        description="train the network compiled by torch.compile (forward and backward compiled "
        "once, at the first step)",
    )
    compile_mode: CompileMode = Field(
        "auto", description="torch.compile's mode; auto: reduce-overhead (CUDA graphs) on a GPU"
    )
    conv_kernels: ConvKernels = Field(
        "auto",
        description="the 3x3 and 1x1 convolutions, dropout and group norm: radardiff's AVX2 "
        "kernels (3x3: Winograd forward pass and both gradients; 1x1: matrix products; dropout: "
        "Philox4x32-10 masks; group norm fused with the SiLU after it) or torch's; auto: "
        "radardiff's on a CPU in fp32 without train.compile",
    )
    deterministic: bool = False
    tensorboard: bool = Field(
        True, description="also log to RUN/tensorboard when the tensorboard package is installed"
    )

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if not self.ema_halflife_kimg or min(self.ema_halflife_kimg) <= 0:
            raise ValueError("ema_halflife_kimg must hold at least one positive half-life")
        return self


ClipMode = Literal["auto", "static", "dynamic", "none"]


DEFAULT_SAMPLER_OPTIONS = {"dpmsolver++": {"use_karras_sigmas": True}}


class SampleConfig(_Section):
    """Defaults for ``radardiff sample`` (each can be overridden on the command line).

    The default is DPM-Solver++ (2M) at 25 steps on the noise levels of Karras et al. 2022
    (``use_karras_sigmas``: rho = 7, dense at low noise), the fast path measured in
    docs/sampling.md: when ``options`` is not given, a sampler listed in
    ``DEFAULT_SAMPLER_OPTIONS`` gets those.
    """

    sampler: str = "dpmsolver++"
    steps: int = Field(25, ge=1)
    options: dict[str, bool | int | float | str] = Field(
        default_factory=dict,
        description="options of the default sampler (radardiff sample --list-samplers)",
    )
    clip: ClipMode = Field(
        "auto", description="x0 clipping; auto: static when the normalisation bounds the data"
    )
    eta: float = Field(
        0.0, ge=0.0, le=1.0, description="eta of a default sampler that has one (old configs)"
    )
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="samples per batch; auto: what fills a GPU's memory, 64 on a CPU"
    )
    guidance: float = Field(1.0, ge=0.0)
    seed: int = Field(0, ge=0)
    checkpoint: str = Field(
        "latest",
        pattern=r"^(latest|best|\d+|step_\d{7,})$",
        description="the checkpoint sampled when none is named: latest, best (lowest validation "
        "loss; the latest when the run has no data.val) or a step number",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_options(cls, data):
        if isinstance(data, dict) and "options" not in data:
            sampler = data.get("sampler", cls.model_fields["sampler"].default)
            if sampler in DEFAULT_SAMPLER_OPTIONS:
                data = {**data, "options": dict(DEFAULT_SAMPLER_OPTIONS[sampler])}
        return data


class EvalConfig(_Section):
    """Defaults for ``radardiff evaluate``."""

    metrics: tuple[MetricName, ...] = ("semivariogram", "psd", "histogram", "ranges")
    max_lag: int | None = Field(None, ge=1, description="largest semivariogram lag in pixels")
    bootstrap: int = Field(200, ge=0, description="bootstrap resamples for confidence bands")
    max_samples: int = Field(2000, ge=2, description="samples used per set (seeded subset)")
    seed: int = Field(0, ge=0)


DistillMethod = Literal["none", "progressive", "consistency"]
# the consistency grid's intervals when none are given (Song et al. 2023 used 18-40 with Heun;
# the teacher's step here is first-order DDIM, so a finer grid)
CONSISTENCY_TEACHER_STEPS = 64


class DistillConfig(_Section):
    """Distillation of a teacher run into a student that samples in few steps
    (``radardiff distill``); ``method = "none"`` for every other run."""

    method: DistillMethod = Field(
        "none",
        description="progressive: Salimans and Ho 2022 (halve the steps per stage); "
        "consistency: Song et al. 2023 (one stage; any step count)",
    )
    teacher: str = Field("", description="the teacher's run directory")
    teacher_checkpoint: str = Field("", description="the teacher's checkpoint (name)")
    steps: int = Field(4, ge=1, description="the student's sampling steps at the end")
    teacher_steps: int = Field(
        256,
        ge=2,
        description="progressive: DDIM steps of the teacher that the first stage halves; "
        "consistency: intervals of the teacher's ODE grid (Karras noise levels), "
        f"{CONSISTENCY_TEACHER_STEPS} unless given",
    )
    steps_per_stage: int = Field(
        2000, ge=1, description="training steps of each halving (consistency: of its one stage)"
    )
    lr: float = Field(1e-4, gt=0.0, description="learning rate, annealed to 0 in each stage")
    guidance: float = Field(
        1.0, ge=0.0, description="classifier-free guidance of a class-conditional teacher"
    )
    target_ema: float = Field(
        0.95,
        ge=0.0,
        lt=1.0,
        description="consistency: EMA decay of the target network per step (Song et al. 2023: "
        "0.95); 0: the student itself without gradient (Song and Dhariwal 2023)",
    )
    huber_c: float = Field(
        1e-3,
        gt=0.0,
        description="consistency: the pseudo-Huber loss's c, in the network's data units",
    )

    @model_validator(mode="before")
    @classmethod
    def _consistency_grid(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("method") == "consistency":
            data = {"teacher_steps": CONSISTENCY_TEACHER_STEPS, **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        if self.method == "progressive":
            ratio = self.teacher_steps // self.steps
            if self.teacher_steps % self.steps or ratio & (ratio - 1) or ratio < 2:
                raise ValueError(
                    f"steps = {self.steps} does not divide the teacher's {self.teacher_steps} "
                    "steps by a power of two (progressive distillation halves them per stage)"
                )
        return self

    @property
    def stages(self) -> int:
        """Halvings from teacher_steps down to steps (consistency distillation: one stage)."""
        if self.method == "consistency":
            return 1
        return (self.teacher_steps // self.steps).bit_length() - 1


class RunConfig(_Section):
    """Everything a run needs, as written to ``config.toml`` in the run directory."""

    name: str = "run"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    evaluate: EvalConfig = EvalConfig()
    distill: DistillConfig = DistillConfig()
