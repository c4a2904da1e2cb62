"""Planning settings (DESIGN section 6): one section per planner, the shared MPC settings around them, the
state probe that adds DINO-WM's proprio term, and `latentwm plan`'s run settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from latentwm.config.base import (
    ConfigError,
    nonempty,
    nonempty_or_unset,
    nonneg,
    positive,
    positive_or_unset,
    pow2,
)
from latentwm.config.registry import Baseline, Planner

TEXT_GOAL_GUIDANCE = 3.0
"""Default classifier-free guidance scale of the text when a sentence is imagined into a goal (plan.text_guidance,
`latentwm imagine --text-guidance`); planning/imagine.py says why this value."""


@dataclass(frozen=True)
class CEMConfig:
    """Cross-entropy method: refit a Gaussian to the best `elites` of `population` samples, `iterations` times."""

    population: int = 300
    elites: int = 30
    iterations: int = 30

    def __post_init__(self):
        positive(self, "plan.cem", "population", "elites", "iterations")
        if self.elites > self.population:
            raise ConfigError(f"plan.cem.elites ({self.elites}) must be <= plan.cem.population ({self.population})")


@dataclass(frozen=True)
class MPPIConfig:
    """MPPI: a cost-weighted average of `population` samples (softmax of −cost / temperature), `iterations` times."""

    population: int = 300
    iterations: int = 30
    temperature: float = 0.5
    """In units of the population's cost spread (see planning/mppi.py)."""

    def __post_init__(self):
        positive(self, "plan.mppi", "population", "iterations", "temperature")


@dataclass(frozen=True)
class GradientConfig:
    """Adam on the action sequence through a differentiable K = 1 rollout, projected into the action box."""

    steps: int = 100
    lr: float = 0.1
    """In normalized action units."""

    def __post_init__(self):
        positive(self, "plan.gradient", "steps", "lr")


@dataclass(frozen=True)
class PlanConfig:
    """Goal-conditioned MPC; the defaults are DINO-WM's Push-T settings (presets give demo-scale values)."""

    planner: Planner = "cem"
    horizon: int = 5
    """Planned model steps (with frame skip 5: 25 environment steps)."""
    exec_steps: int = 5
    """Actions executed per replanning (receding horizon)."""
    init_std: float = 1.0
    """Initial sampling std in normalized action units (CEM, MPPI, and the random-action baseline)."""
    cost: Literal["mse", "l1", "cosine"] = "mse"
    cost_all_frames: bool = False
    """Weight every predicted frame (later frames more) instead of only the last."""
    sample_steps: int = 1
    """K for the candidate rollouts (the gradient planner always uses 1)."""
    warm_start: bool = True
    goal_offset: int = 25
    """Goal = observation this many environment steps later in a held-out episode."""
    proprio_weight: float = 1.0
    """Weight of the proprio term (DINO-WM: visual MSE + 1.0 × proprio MSE), used when a proprio probe is given
    (`planning/proprio.py`); 0 turns it off."""
    visual_weight: float = 1.0
    """Weight of the latent (visual) goal cost; 0 leaves it out (the diagnosis "plan on the state-probe cost alone":
    visual_weight 0, state_weight 1, proprio_weight 0)."""
    state_weight: float = 0.0
    """Weight of the pose term of a state probe (`planning/state_probe.py`: agent and block pose read from the last
    predicted frame's latents, against the goal state's), used when a state probe is given; 0 turns it off."""
    num_goals: int = 50
    seed: int = 0
    text_guidance: float = TEXT_GOAL_GUIDANCE
    """Goals given as a sentence (`--goal-text`): classifier-free guidance scale of the text when the model imagines
    the goal (x̂ = x̂_no-text + w·(x̂_text − x̂_no-text); 1: plain text-conditioned sampling)."""
    imagine_steps: int = 4
    """Goals given as a sentence: K (denoising steps per frame) of the imagination, once per episode."""
    cem: CEMConfig = field(default_factory=CEMConfig)
    mppi: MPPIConfig = field(default_factory=MPPIConfig)
    gradient: GradientConfig = field(default_factory=GradientConfig)

    def __post_init__(self):
        positive(self, "plan", "horizon", "exec_steps", "init_std", "sample_steps", "goal_offset", "num_goals")
        nonneg(self, "plan", "proprio_weight", "visual_weight", "state_weight", "text_guidance")
        if self.visual_weight == 0 and self.state_weight == 0:  # the proprio term alone sees no block
            raise ConfigError(
                "plan.visual_weight and plan.state_weight are both 0: the cost would have no goal for "
                "the block (set one of them > 0)"
            )
        for name in ("sample_steps", "imagine_steps"):
            if not pow2(getattr(self, name)):
                raise ConfigError(f"plan.{name} must be a power of two, got {getattr(self, name)}")

    @property
    def executed_steps(self) -> int:
        """Actions executed per plan: exec_steps, never more than were planned."""
        return min(self.exec_steps, self.horizon)

    def planner_config(self, name: str | None = None):
        """The section of planner `name` (default: `planner`)."""
        return getattr(self, name or self.planner)


@dataclass(frozen=True)
class ProbeConfig:
    """The proprio probe: an MLP reading the agent state from the frozen model's per-frame features, trained on the
    training cache's clips (planning/proprio.py)."""

    steps: int = 1500
    """Adam steps on minibatches of frame features."""
    clips: int = 512
    """Clips per split whose frames are featurized (once, no grad)."""
    hidden: int = 256
    lr: float = 1e-3
    batch_size: int = 256
    max_nonfinite: int = 10
    """Non-finite minibatch losses tolerated (step skipped, counted) before the fit stops."""

    def __post_init__(self):
        positive(self, "probe", "steps", "clips", "hidden", "lr", "batch_size")
        nonneg(self, "probe", "max_nonfinite")


@dataclass(frozen=True)
class PlanRunConfig:
    """Goal-conditioned MPC against the real gym-pusht environment, scored with DINO-WM's Push-T protocol beside
    random actions and the dataset's own actions, on the same goals and seeds."""

    checkpoint: str = "runs/demo/train"
    """A training run folder (its latest complete checkpoint, EMA weights) or one checkpoint directory."""
    episodes_dir: str = "runs/demo/episodes"
    """Push-T episode files (`latentwm generate`); goals come from the held-out ones."""
    cache_dir: str | None = None
    """The training latent cache (its episode list defines the held-out split); None (not given): the
    checkpoint's."""
    out_dir: str = "runs/plan"
    planners: tuple[Planner, ...] = ("cem", "mppi", "gradient")
    baselines: tuple[Baseline, ...] = ("random", "dataset_actions")
    plan: PlanConfig = field(default_factory=PlanConfig)
    """Planner settings (the preset's plan section)."""
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    """Used when a proprio probe has to be trained (--proprio-probe auto without a saved one)."""
    max_replans: int | None = None
    """Plans per episode (>= 1); None (not given): a budget of twice the goal distance."""
    context: int | None = None
    """Observed history frames per plan (>= 1); None (not given): the checkpoint's rollout.context."""
    repeat_actions: bool = True
    """Search one env action per model step, held for the frame skip (else the full frame-skip-concatenated
    action)."""
    videos: int = 4
    """Goals whose executed episodes (next to the goal image) are written as GIFs, for every method."""
    bf16: Literal["auto", "on", "off"] = "auto"
    """Candidate rollouts under bf16 autocast (auto: on CUDA and CPUs with bf16 units)."""
    compile: bool = False
    """torch.compile the cached denoising pass (`DynamicsModel.compile_sampling`): the first rollout compiles
    (seconds on the CPU), later ones run faster — worth it for many rollouts."""
    proprio_probe: str = "auto"
    """DINO-WM's proprio term (weight plan.proprio-weight): 'auto' uses the run's proprio_probe.safetensors or trains
    one on the training cache (about a minute on the cpu preset; saved to out_dir), a path uses that probe, 'none'
    plans on the visual cost only."""
    state_probe: str = "auto"
    """Push-T pose probe on encoder latents (planning/state_probe.py) for the pose term of the cost, used when
    plan.state-weight > 0 (e.g. the diagnosis `--plan.visual-weight 0 --plan.state-weight 1 --plan.proprio-weight
    0`): 'auto' uses the run's state_probe.safetensors (the demo saves one beside the checkpoints), a path uses that
    probe. With --goal-text it also reads the imagined goal's pose (planning.json `text_goal.imagined_goal_pose`)
    at any state weight, when one is given or found ('auto' without one: text goals are scored without poses)."""
    goal_text: str | None = None
    """Also plan toward goals given as a sentence, on the same starts and seeds as the goal images: at the first step
    the model imagines plan.horizon frames from the observation under the sentence (plan.text_guidance) and plans
    toward the last one; scored against the true goal state like image goals (planning.json `text_goal`). 'auto':
    each goal's own description in the Push-T language (a held-out paraphrase of `describe_segment(start, goal)`);
    any other text: that sentence for every goal. None (not given): image goals only; an empty sentence is refused."""
    text_encoder: str | None = None
    """For --goal-text: where the sentence encoder of the model's training cache is now, if it moved; None (not
    given): rebuilt from the checkpoint's text encoder label."""
    device: str = "auto"
    """auto: cuda when available, else cpu."""

    def __post_init__(self):
        nonempty(self, "plan", "out_dir")
        nonneg(self, "plan", "videos")
        positive_or_unset(
            self,
            "plan",
            max_replans="a budget of twice the goal distance",
            context="the checkpoint's rollout.context",
        )
        nonempty_or_unset(
            self,
            "plan",
            cache_dir="the checkpoint's training cache",
            text_encoder="the one the checkpoint's text encoder label names",
        )
        if self.goal_text is not None and not self.goal_text.strip():
            raise ConfigError(
                "plan.goal_text is empty: give a sentence, or 'auto' (each goal's own description), or leave "
                "--goal-text out to plan toward goal images only"
            )
        if self.goal_text and not self.planners:
            raise ConfigError("plan.goal_text needs at least one planner (--planners): baselines ignore the goal")
        if not self.planners and not self.baselines:
            raise ConfigError("plan: give at least one of --planners / --baselines")


__all__ = [
    "TEXT_GOAL_GUIDANCE",
    "CEMConfig",
    "GradientConfig",
    "MPPIConfig",
    "PlanConfig",
    "PlanRunConfig",
    "ProbeConfig",
]
