"""The planner interface: every planner maps a cost over action sequences to the best sequence it finds.

Low level (what CEM / MPPI / gradient implement):
`planner(objective, horizon, low, high, cfg, init=None, generator=None) -> PlanResult`, where objective(actions
(P, H, A)) -> costs (P,) (a `LatentGoalObjective`, or any differentiable toy), low/high (A,) are the action bounds in
the model's normalized action space, and init (H, A) warm-starts the search (the previous plan, shifted).

High level (what MPC calls): `plan(model, history, goal, horizon, cfg, low, high, ...) -> PlanResult`: builds the
latent objective (observing the history ONCE, or reusing a given history cache), then runs the configured planner.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field

import torch


@dataclass
class PlanResult:
    actions: torch.Tensor  # (H, A) the plan, within bounds
    cost: float  # its cost
    history: list[float] = field(default_factory=list)  # best cost after each iteration
    seconds: float = 0.0  # wall time of the planning call (set by `plan`)
    evaluations: int = 0  # candidate rollouts scored


def initial_mean(horizon: int, low: torch.Tensor, high: torch.Tensor, init: torch.Tensor | None) -> torch.Tensor:
    """(H, A): the warm start when given (clipped to bounds), else the middle of the box."""
    if init is not None:
        if init.shape[0] != horizon:
            raise ValueError(f"planner: init has {init.shape[0]} steps, the horizon is {horizon}")
        return torch.max(torch.min(init.to(low.device, low.dtype).clone(), high), low)
    return ((low + high) / 2).expand(horizon, -1).clone()


def initial_std(mean: torch.Tensor, low: torch.Tensor, high: torch.Tensor, init_std: float) -> torch.Tensor:
    """(H, A): `init_std` in normalized action units, 0 on dimensions pinned by the bounds (low == high)."""
    return torch.where(high > low, torch.full_like(high, float(init_std)), torch.zeros_like(high)).expand_as(mean)


def min_std(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A floor on the sampling std (keep exploring a little): 0.1 % of the box."""
    return 1e-3 * (high - low)


def shift_plan(actions: torch.Tensor, steps: int) -> torch.Tensor:
    """Warm start for the next call after executing `steps` actions: drop them, repeat the last one."""
    if steps >= actions.shape[0]:
        return actions[-1:].expand_as(actions).clone()
    return torch.cat([actions[steps:], actions[-1:].expand(steps, -1)], 0)


@functools.lru_cache(maxsize=None)
def bf16_is_fast(device_type: str = "cpu") -> bool:
    """Whether bf16 autocast speeds candidate rollouts up here: CUDA, or a CPU with AMX / AVX-512 bf16 units
    (elsewhere CPU bf16 is emulated and slower)."""
    if device_type == "cuda":
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


class MappedObjective:
    """objective ∘ expand: planners search a lower-dimensional space (e.g. one env action per model step, held),
    `expand` (differentiable) maps (P, H, k) candidates to the model's (P, H, A) actions."""

    def __init__(self, objective, expand):
        self.objective, self.expand = objective, expand

    @property
    def evaluations(self) -> int:
        return self.objective.evaluations

    def __call__(self, actions: torch.Tensor, grad: bool = False) -> torch.Tensor:
        return self.objective(self.expand(actions), grad=grad)


def plan(model, history: torch.Tensor, goal: torch.Tensor, horizon: int, cfg, low: torch.Tensor,
         high: torch.Tensor, *, history_actions: torch.Tensor | None = None, cache=None,
         init: torch.Tensor | None = None, planner: str | None = None, generator: torch.Generator | None = None,
         seed: int = 0, tau_ctx: float = 1.0, expand=None, bf16: bool = False, proprio=None) -> PlanResult:
    """Plan `horizon` model-step actions from an observed history toward a goal image's latents.

    history: (1, C, N, D) normalized latents of the observed frames (oldest first); history_actions (1, C − 1, A)
    the model-space actions taken between them (None: unknown). cache: the same history already observed (batch
    1), e.g. kept between calls by the caller; otherwise it is observed here, once. goal: (N, D). cfg: PlanConfig
    (planner, its section cfg.cem / cfg.mppi / cfg.gradient, init_std, cost, cost_all_frames, sample_steps). The
    gradient planner always rolls out with K = 1 (one differentiable denoising step per frame).
    expand: optional differentiable map from the planning space (H, k) to model actions (H, A) (low/high/init
    are then in the planning space, and so is the result). bf16: run the candidate rollouts under bf16 autocast
    (plans and costs stay float32; on the `cpu` preset with AMX 1.6× faster per batch of 300, the top-30 candidates
    unchanged in a check on a trained model). proprio: a `ProprioGoal` term added to the cost (DINO-WM's visual +
    proprio objective). Returns a PlanResult whose actions lie within [low, high].
    """
    from latentwm.planning import PLANNERS
    from latentwm.planning.cost import LatentGoalObjective

    name = planner or cfg.planner
    if name not in PLANNERS:
        raise ValueError(f"plan.planner must be one of {sorted(PLANNERS)}, got {name!r}")
    t0 = time.perf_counter()
    k = 1 if name == "gradient" else cfg.sample_steps
    amp = (torch.autocast(device_type=history.device.type, dtype=torch.bfloat16) if bf16
           else contextlib.nullcontext())
    with amp:
        obj = LatentGoalObjective(model, history, goal, history_actions, sample_steps=k, tau_ctx=tau_ctx,
                                  cost=cfg.cost, all_frames=cfg.cost_all_frames, seed=seed, cache=cache,
                                  proprio=proprio)
        sampling = {} if name == "gradient" else {"init_std": cfg.init_std}
        res = PLANNERS[name](_Float32(obj if expand is None else MappedObjective(obj, expand)), horizon, low, high,
                             cfg.planner_config(name), init=init, generator=generator, **sampling)
    res.seconds, res.evaluations = time.perf_counter() - t0, obj.evaluations
    return res


class _Float32:
    """Costs as float32 whatever precision the rollouts ran in."""

    def __init__(self, objective):
        self.objective = objective

    def __call__(self, actions: torch.Tensor, grad: bool = False) -> torch.Tensor:
        return self.objective(actions, grad=grad).float()
