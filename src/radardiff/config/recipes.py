"""Built-in recipes that must work without the repository's ``configs/`` folder (the demo)."""

from __future__ import annotations

from radardiff.config.schema import (
    DataConfig,
    DiffusionConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)


def tiny_config(train: str = "", val: str | None = None, steps: int = 1500) -> RunConfig:
    """The ``tiny`` recipe (``configs/tiny.toml`` holds the same values): 32x32 InSAR noise, CPU."""
    return RunConfig(
        name="tiny",
        data=DataConfig(train=train, val=val, normalization="minmax_pm1"),
        model=ModelConfig(
            image_size=32,
            in_channels=1,
            base_channels=32,
            channel_mult=(1, 2, 2),
            layers_per_block=1,
            attention_resolutions=(8,),
            attention_head_dim=32,
            norm_num_groups=8,
        ),
        diffusion=DiffusionConfig(timesteps=1000, schedule="linear", prediction="v"),
        train=TrainConfig(
            steps=steps,
            batch_size=32,
            lr=3e-4,
            warmup_steps=100,
            lr_schedule="cosine",
            mixed_precision="no",
            ema_halflife_kimg=(2.0,),
            ema_warmup_ratio=0.1,
            log_every=50,
            checkpoint_every=500,
            val_every=500,
            val_samples=128,
        ),
        # the fast path of docs/sampling.md (fast sampling on radar data): v-prediction sampled by
        # DPM-Solver++ (2M) at 25 steps on Karras et al.'s noise levels
        sample=SampleConfig(sampler="dpmsolver++", steps=25, options={"use_karras_sigmas": True}),
        evaluate=EvalConfig(),
    )
