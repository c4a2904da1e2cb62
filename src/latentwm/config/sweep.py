"""Settings of `latentwm sweep` (the ablation sweep runner, `latentwm.sweep`): the command's flags (SweepConfig) and
the `[eval]` table of a sweep file (SweepEvalConfig), the one evaluation every run of a sweep gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from latentwm.config.base import ConfigError, nonneg, positive, pow2


@dataclass(frozen=True)
class SweepEvalConfig:
    """The evaluation of every run of a sweep (`[eval]` of the sweep file): `latentwm eval` of the run's kept
    checkpoint once per K in sample_steps, on the same held-out clips with the same noise for every run."""

    context: int = 4
    """Observed frames before the rollout."""
    horizon: int = 16
    """Predicted frames (the errors of every horizon 1..horizon are stored per run and plotted)."""
    horizons: tuple[int, ...] = (1, 4, 8, 16)
    """The horizons the result tables show (each ≤ horizon)."""
    sample_steps: tuple[int, ...] = (1, 4, 64)
    """K: denoising steps per predicted frame, one evaluation each (powers of two ≤ every variant's model.k_max)."""
    num_samples: int = 4
    """Rollouts per clip: the error of their mean is reported beside the single-sample error."""
    action_swap: bool = True
    """Also roll out with another clip's future actions (same noise): the model's sensitivity to its actions."""
    split: Literal["eval", "all"] = "eval"
    """eval: the held-out episodes of the training split (data.seed, data.eval_fraction: the same for every run);
    all: every episode of the cache."""
    cache_dir: str = ""
    """Latent cache to evaluate on (empty: each run's data.cache_dir, which variants may not change)."""
    seed: int = 0
    """Noise of the evaluation rollouts: fixed, so runs differ by their weights only (not by the training seed)."""
    videos: int = 0
    """Side-by-side real/predicted GIFs per run and K (0: none; they cost little but add up over a sweep)."""
    use_ema: bool = True
    """Evaluate the EMA weights (what sampling uses), as `latentwm eval` does."""
    max_clips: int = 0
    """At most this many held-out clips, spread evenly over them (0: all): the same subset for every run."""
    extras_at: tuple[int, ...] = ()
    """The K values at which the mean of num_samples rollouts and the swapped-action rollout are measured (empty:
    every K). Each costs a whole rollout per clip more: at K = 64 that is 65 passes per frame."""

    def __post_init__(self):
        positive(self, "eval", "context", "horizon", "num_samples")
        nonneg(self, "eval", "videos", "max_clips")
        if not self.horizons or any(not 1 <= h <= self.horizon for h in self.horizons):
            raise ConfigError(
                f"eval.horizons must be a non-empty list of horizons in 1..eval.horizon "
                f"({self.horizon}), got {list(self.horizons)}"
            )
        if not self.sample_steps or any(not pow2(k) for k in self.sample_steps):
            raise ConfigError(
                f"eval.sample_steps must be a non-empty list of powers of two, got {list(self.sample_steps)}"
            )
        if len(set(self.sample_steps)) != len(self.sample_steps) or len(set(self.horizons)) != len(self.horizons):
            raise ConfigError(
                f"eval.sample_steps {list(self.sample_steps)} and eval.horizons "
                f"{list(self.horizons)} must not repeat a value"
            )
        if not set(self.extras_at) <= set(self.sample_steps):
            raise ConfigError(
                f"eval.extras_at {list(self.extras_at)} must be among eval.sample_steps {list(self.sample_steps)}"
            )
        if self.split not in ("eval", "all"):
            raise ConfigError(f"eval.split must be 'eval' or 'all', got {self.split!r}")


@dataclass(frozen=True)
class SweepConfig:
    """Ablation sweep: a base preset + named variants (config overrides) × seeds, each run an ordinary `latentwm
    train` run in its own folder followed by the same evaluation; run locally one after another (resumable),
    or printed as one command per run for a cluster scheduler; aggregated into tables, plots and one JSON."""

    file: str = ""
    """The sweep file (TOML: [sweep] name/preset/seeds/out_dir, [base], [eval], [variants.NAME]);
    `latentwm sweep FILE` takes it as the first argument."""
    preset: str = ""
    """Base preset, replacing the file's [sweep] preset (`--preset NAME`; empty: the file's)."""
    out_dir: str = ""
    """The sweep folder (empty: the file's [sweep] out_dir, else runs/sweeps/<name>)."""
    set: tuple[str, ...] = ()
    """Base overrides KEY=VALUE with dotted keys (`--set train.steps=200 --set model.registers=0`), applied after
    the file's [base]; VALUE is read as the field's type (numbers, true/false, none for an optional field, a
    comma-separated list for a tuple)."""
    variant: tuple[str, ...] = ()
    """NAME:KEY=VALUE,KEY=VALUE adds a variant (or replaces the file's variant of that name); `NAME:` alone is the
    base; repeat --variant for more."""
    seeds: str = ""
    """Comma-separated training seeds replacing the file's (e.g. 0,1,2)."""
    only: str = ""
    """Run exactly one run, VARIANT/seedK (as --emit-commands prints it), and do not aggregate."""
    emit_commands: bool = False
    """Print one shell command per run that is not done (each `--only VARIANT/seedK`) instead of running: a SLURM
    job array runs line $SLURM_ARRAY_TASK_ID; `latentwm sweep --collect DIR` aggregates what has finished."""
    launcher: str = "latentwm"
    """The program the emitted commands start with, e.g. "torchrun --nproc-per-node 8 -m latentwm.cli" (each run
    then trains on all ranks and is evaluated on rank 0)."""
    collect: str = ""
    """Only aggregate the sweep folder DIR (whatever has finished; no sweep file needed)."""

    def __post_init__(self):
        if self.collect and (self.only or self.emit_commands):
            raise ConfigError("sweep: --collect only aggregates; it cannot be combined with --only or --emit-commands")
        if self.only and self.emit_commands:
            raise ConfigError("sweep: --only runs one run and --emit-commands prints commands; choose one")
        if self.only and self.only.count("/") != 1:
            raise ConfigError(f"sweep.only must be VARIANT/seedK (e.g. base/seed0), got {self.only!r}")
        if not self.launcher.strip():
            raise ConfigError("sweep.launcher must name a program (default: latentwm)")


__all__ = ["SweepConfig", "SweepEvalConfig"]
