"""Presets: one frozen object per size (tiny / smoke / cpu / pusht-1k / -3k / -10k / small / base / large) holding every
stage's settings.

`preset(name)` is the one place a value per size is written: the training sections (encoder, model, objective,
rollout, data, train, plan — `get_preset(name)` returns them as an ExperimentConfig, what a checkpoint records) and
the stages around training (decoder, rl, the proprio probe, and how big the demo makes each stage). Every command
takes its section from here (`latentwm <command> --preset NAME`); the demo composes them.

Parameter counts in the docstrings are the dynamics model's (tests check they stay true within 5%).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache

from latentwm.config.base import ConfigError
from latentwm.config.experiment import ExperimentConfig
from latentwm.config.planning import CEMConfig, GradientConfig, MPPIConfig, PlanConfig, ProbeConfig
from latentwm.config.pretrain import PretrainEncoderConfig
from latentwm.config.registry import ENCODER_PRESETS
from latentwm.config.sections import DataConfig, EncoderConfig, ModelConfig, ObjectiveConfig, RolloutConfig, TrainConfig
from latentwm.config.stages import DecoderConfig, DemoSizes, RLConfig

DEMO_PLAN = PlanConfig(
    horizon=5,
    exec_steps=5,
    sample_steps=1,
    init_std=1.0,
    num_goals=20,
    cem=CEMConfig(population=32, elites=6, iterations=4),
    mppi=MPPIConfig(population=32, iterations=4, temperature=0.5),
    gradient=GradientConfig(steps=6, lr=0.3),
)
"""Planning at demo scale, affordable on 2 CPU cores with the `cpu` model (PlanConfig's defaults are DINO-WM's
300 × 30 elites × 30 iterations, ≈ 170 s per plan there)."""


@dataclass(frozen=True)
class Preset:
    """Every stage's settings for one size."""

    name: str
    experiment: ExperimentConfig
    """encoder, model, objective, rollout, data, train, plan: one training run's sections."""
    decoder: DecoderConfig
    rl: RLConfig
    probe: ProbeConfig
    demo: DemoSizes
    pretrain: PretrainEncoderConfig = PretrainEncoderConfig()
    """The demo's encoder-pretraining stage (`latentwm demo --encoder pretrain`): a ViT whose tokens match the
    experiment's encoder section (hidden_size = latent_dim, image_size / patch_size = the latent grid)."""

    @property
    def summary(self) -> str:
        """What the size is for and how big its dynamics model is (the training sections' builder docstring)."""
        summary = _SUMMARIES[self.name]
        assert summary is not None  # every builder has a docstring
        return summary

    def __getattr__(self, section: str):
        """preset.model, preset.plan, ...: the training sections read like the stage sections."""
        if section.startswith("__"):
            raise AttributeError(section)
        return getattr(self.experiment, section)


def _tiny() -> ExperimentConfig:
    """Tests: 67k parameters; 4×4 latent grid of the 64-wide tiny-random encoder."""
    enc = EncoderConfig(name="tiny-random", image_size=56, batch_size=32)
    model = ModelConfig(
        latent_dim=64,
        latent_grid=4,
        width=32,
        depth=4,
        heads=4,
        kv_heads=2,
        time_every=2,
        registers=2,
        action_dim=10,
        context_frames=8,
        softcap=50.0,
        k_max=8,
    )
    return ExperimentConfig(
        preset="tiny",
        encoder=enc,
        model=model,
        objective=ObjectiveConfig(bootstrap_start=10),
        rollout=RolloutConfig(sample_steps=2, context=2, horizon=4),
        data=DataConfig(clip_len=6, batch_size=4),
        train=TrainConfig(steps=50, lr=1e-3, warmup_steps=5, log_every=5, eval_every=25, ckpt_every=25, ema_decay=0.9),
        plan=DEMO_PLAN,
    )


PUSHT_CONDITIONING = dict(model__proprio_dim=4, data__relative_actions=True)
"""DINO-WM's Push-T conditioning, on in the Push-T presets: the agent's proprio (x, y, vx, vy) on every token,
predicted with the frame and planned on, and actions relative to the agent (data/proprio.py)."""


def _smoke() -> ExperimentConfig:
    """CI demo (`latentwm demo --preset smoke`, < 5 minutes): the tiny model (67k parameters), a short run."""
    base = _tiny()
    return base.replace(
        preset="smoke",
        train=dataclasses.replace(base.train, steps=150, eval_every=150, ckpt_every=150),
        **PUSHT_CONDITIONING,
    )


def _cpu() -> ExperimentConfig:
    """The CPU demo: 1.18M parameters; 8×8 grid of the 64-wide tiny-random encoder at 112 px, with the Push-T
    proprio channels and relative actions."""
    enc = EncoderConfig(name="tiny-random", image_size=112, batch_size=64)
    model = ModelConfig(
        latent_dim=64,
        latent_grid=8,
        width=128,
        depth=6,
        heads=4,
        kv_heads=2,
        time_every=2,
        registers=4,
        action_dim=10,
        context_frames=16,
        softcap=50.0,
        k_max=32,
    )
    return ExperimentConfig(
        preset="cpu",
        encoder=enc,
        model=model,
        # flat loss weight: w(τ) weighs the nearly-pure-noise frames, where the actions decide the prediction, at
        # 0.1–0.3, and the 800-step model then ignores them (benchmarks/RESULTS.md, "The cpu demo with the flat
        # loss weight")
        objective=ObjectiveConfig(bootstrap_start=400, ramp_weight=False),
        rollout=RolloutConfig(sample_steps=4, context=4, horizon=8),
        data=DataConfig(clip_len=12, batch_size=16),
        train=TrainConfig(steps=800, lr=1e-3, warmup_steps=100, eval_every=100, ckpt_every=200, ema_decay=0.995),
        plan=DEMO_PLAN,
    ).replace(**PUSHT_CONDITIONING)


def _pusht_scale(name: str, width: int, depth: int, steps: int, batch: int) -> ExperimentConfig:
    cpu = _cpu()
    return cpu.replace(
        preset=name,
        model__width=width,
        model__depth=depth,
        model__heads=max(4, width // 64),
        data__batch_size=batch,
        train__steps=steps,
        train__eval_every=steps // 8,
        train__ckpt_every=steps // 8,
        objective__bootstrap_start=steps // 2,
    )


def _pusht_1k() -> ExperimentConfig:
    """Push-T at 1,000 trajectories: the cpu model (1.18M parameters) trained 2,000 steps at batch 32."""
    return _pusht_scale("pusht-1k", 128, 6, 2000, 32)


def _pusht_3k() -> ExperimentConfig:
    """Push-T at 3,000 trajectories: 3.40M parameters (192 wide, 8 deep), 4,000 steps at batch 32."""
    return _pusht_scale("pusht-3k", 192, 8, 4000, 32)


def _pusht_10k() -> ExperimentConfig:
    """Push-T at 10,000 trajectories (one GPU): 8.85M parameters (256 wide, 12 deep), 10,000 steps at batch 64."""
    return _pusht_scale("pusht-10k", 256, 12, 10_000, 64)


def _gpu(name: str, enc_name: str, width: int, depth: int, heads: int, kv_heads: int) -> ExperimentConfig:
    p = ENCODER_PRESETS[enc_name]
    enc = EncoderConfig(name=enc_name, image_size=224 if p.patch_size == 14 else 256, batch_size=256)
    grid = enc.grid
    assert grid is not None  # a known encoder preset: its grid is known
    # attention "eager": with the soft cap, "fused" means flex_attention, which on an H200 (torch 2.11, base
    # shapes, fwd + bwd) was 2.4× (space) / 1.7× (time) slower than the eager math and compiles a kernel per new
    # shape (benchmarks/RESULTS.md, gpu_check on an H200); at 70 tokens per frame and ≤ 33 frames the eager
    # score matrices are small
    model = ModelConfig(
        latent_dim=p.hidden_size,
        latent_grid=grid,
        patch_group=2,
        width=width,
        depth=depth,
        heads=heads,
        kv_heads=kv_heads,
        time_every=4,
        registers=4,
        action_dim=10,
        context_frames=16,
        k_max=64,
        attention="eager",
    )
    return ExperimentConfig(
        preset=name,
        encoder=enc,
        model=model,
        data=DataConfig(clip_len=16, batch_size=256, num_workers=8),
        train=TrainConfig(steps=200_000, lr=3e-4, warmup_steps=2000, eval_every=5000, ckpt_every=2000),
    )


def _small() -> ExperimentConfig:
    """One GPU: 46M parameters; DINOv2-S (384-wide, 16×16 grid) latents grouped 2×2."""
    return _gpu("small", "dinov2-s", 512, 16, 8, 2)


def _base() -> ExperimentConfig:
    """A node of GPUs: 272M parameters; DINOv2-B with registers (768-wide), grouped 2×2."""
    return _gpu("base", "dinov2-reg-b", 1024, 24, 16, 4)


def _large() -> ExperimentConfig:
    """Many nodes (FSDP2): 1.08B parameters; DINOv3-L (1024-wide, 16×16 grid at 256 px), grouped 2×2."""
    cfg = _gpu("large", "dinov3-l", 2048, 24, 16, 4)
    return cfg.replace(train__distributed="fsdp")


def _pretrain(exp: ExperimentConfig, layers: int, steps: int) -> PretrainEncoderConfig:
    """Time-contrastive pretraining of an encoder with the shapes `exp.encoder` produces (benchmarks/
    bench_encoder_pretrain.py compares the objectives: on Push-T it gave the latent cost with the best rank
    correlation to the true state distance)."""
    return PretrainEncoderConfig(
        hidden_size=exp.model.latent_dim,
        layers=layers,
        heads=4,
        patch_size=ENCODER_PRESETS[exp.encoder.name].patch_size,
        image_size=exp.encoder.image_size,
        steps=steps,
        objective="time-contrastive",
        window=100,
        sigma=20.0,
        log_every=50,
        ckpt_every=1000,
        device="cpu",
    )


def _tiny_preset(name: str, exp: ExperimentConfig) -> Preset:
    return Preset(
        name,
        exp,
        decoder=DecoderConfig(encoder=exp.encoder, size="tiny", patch_size=4, epochs=5, batch_size=16),
        rl=RLConfig(
            heads_steps=60, imagine_steps=8, value_warmup=4, batch_size=8, hidden=64, eval_episodes=2, eval_max_steps=5
        ),
        probe=ProbeConfig(steps=200, clips=64),
        demo=DemoSizes(
            episodes=24,
            env_steps=100,
            goals=2,
            decoder_frames=400,
            decoder_epochs=40,
            state_probe_steps=300,
            cost_quality_goals=1,
            text_horizon=8,
            ladder_state_steps=200,
        ),
        pretrain=_pretrain(exp, layers=1, steps=40),
    )


def _gpu_preset(exp: ExperimentConfig) -> Preset:
    """The decoder is RAE's ViT-B with the GAN term, trained on frames encoded online."""
    dec = DecoderConfig(
        encoder=exp.encoder,
        cache_dir="",
        size="B",
        patch_size=16,
        epochs=16,
        batch_size=64,
        lr=2e-4,
        warmup_steps=1000,
        adv_weight=0.75,
        disc_start_epoch=6,
        disc_channels=64,
        ckpt_every=2000,
    )
    return Preset(exp.preset, exp, decoder=dec, rl=RLConfig(), probe=ProbeConfig(), demo=DemoSizes())


def _scale_preset(exp: ExperimentConfig, episodes: int, goals: int) -> Preset:
    """The cpu demo's stages at a larger data size: the same encoder pretraining, decoder, probes and planner, more
    trajectories, more planning goals (≥ 40 with ≥ 30 whose block must move needs about 60)."""
    return Preset(
        exp.preset,
        exp,
        decoder=DecoderConfig(encoder=exp.encoder),
        rl=RLConfig(),
        probe=ProbeConfig(steps=1500, clips=512),
        demo=DemoSizes(episodes=episodes, goals=goals, decoder_frames=8000),
        pretrain=_pretrain(exp, layers=2, steps=4000),
    )


_BUILDERS = {
    "tiny": lambda: _tiny_preset("tiny", _tiny()),
    "smoke": lambda: _tiny_preset("smoke", _smoke()),
    "cpu": lambda: Preset(
        "cpu",
        _cpu(),
        decoder=DecoderConfig(encoder=_cpu().encoder),
        rl=RLConfig(),
        probe=ProbeConfig(steps=1500, clips=512),
        demo=DemoSizes(),
        pretrain=_pretrain(_cpu(), layers=2, steps=4000),
    ),
    "pusht-1k": lambda: _scale_preset(_pusht_1k(), 1000, 60),
    "pusht-3k": lambda: _scale_preset(_pusht_3k(), 3000, 60),
    "pusht-10k": lambda: _scale_preset(_pusht_10k(), 10_000, 60),
    "small": lambda: _gpu_preset(_small()),
    "base": lambda: _gpu_preset(_base()),
    "large": lambda: _gpu_preset(_large()),
}
PRESETS: tuple[str, ...] = tuple(_BUILDERS)
_SUMMARIES = {
    "tiny": _tiny.__doc__,
    "smoke": _smoke.__doc__,
    "cpu": _cpu.__doc__,
    "pusht-1k": _pusht_1k.__doc__,
    "pusht-3k": _pusht_3k.__doc__,
    "pusht-10k": _pusht_10k.__doc__,
    "small": _small.__doc__,
    "base": _base.__doc__,
    "large": _large.__doc__,
}


@cache
def preset(name: str) -> Preset:
    """The preset `name` (frozen, so one shared instance); an unknown name is a ConfigError listing the known ones."""
    if name not in _BUILDERS:
        raise ConfigError(f"preset: unknown preset {name!r}; choose one of {list(PRESETS)}")
    return _BUILDERS[name]()


def get_preset(name: str) -> ExperimentConfig:
    """The training sections of preset `name` (what `latentwm train --preset NAME` starts from)."""
    return preset(name).experiment


__all__ = ["DEMO_PLAN", "PRESETS", "Preset", "get_preset", "preset"]
