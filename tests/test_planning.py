import pytest
import torch

from latentwm.conditions import Conditions
from latentwm.config import CEMConfig, GradientConfig, MPPIConfig, PlanConfig, get_preset
from latentwm.config.experiment import replace_nested
from latentwm.model.dynamics import DynamicsModel
from latentwm.planning import PLANNERS, LatentGoalObjective, PlanProblem, latent_cost, plan, shift_plan
from latentwm.rollout import Sampling, rollout

H, A = 3, 2
LOW, HIGH = -torch.ones(A), torch.ones(A)
CFG = PlanConfig(
    init_std=1.0,
    horizon=H,
    cem=CEMConfig(population=128, elites=12, iterations=25),
    mppi=MPPIConfig(population=128, iterations=25, temperature=0.5),
    gradient=GradientConfig(steps=150, lr=0.1),
)


class LinearToyModel:
    """A differentiable stand-in for a world model: the predicted latent is a fixed linear map of the actions, so
    the cost ‖M·vec(a) − g‖² is a quadratic with a known minimizer."""

    def __init__(self, target):
        g = torch.Generator().manual_seed(0)
        self.M = torch.linalg.qr(torch.randn(H * A, H * A, generator=g))[0]  # well conditioned: cost = ‖a − t‖²
        self.goal = self.M @ target.reshape(-1)

    def __call__(self, actions, grad=False):
        with torch.set_grad_enabled(grad or torch.is_grad_enabled()):
            pred = actions.reshape(actions.shape[0], -1) @ self.M.T
            return (pred - self.goal).pow(2).sum(-1)


@pytest.mark.parametrize("name", list(PLANNERS))
def test_planners_find_the_optimum_of_a_quadratic(name):
    target = torch.tensor([[0.5, -0.3], [0.1, 0.7], [-0.6, 0.2]])
    res = PLANNERS[name](
        LinearToyModel(target), H, LOW, HIGH, CFG.planner_config(name), generator=torch.Generator().manual_seed(1)
    )
    assert res.actions.shape == (H, A)
    assert (res.actions - target).abs().max() < 0.08, (name, res.actions, res.cost)
    assert res.history == sorted(res.history, reverse=True)  # the best cost never gets worse


@pytest.mark.parametrize("name", list(PLANNERS))
def test_bounds_are_respected(name):
    target = torch.tensor([[3.0, -3.0], [0.2, 5.0], [-4.0, 0.0]])  # outside the box
    res = PLANNERS[name](
        LinearToyModel(target), H, LOW, HIGH, CFG.planner_config(name), generator=torch.Generator().manual_seed(2)
    )
    assert (res.actions >= LOW).all() and (res.actions <= HIGH).all()


def test_warm_start_is_kept_when_nothing_beats_it():
    target = torch.zeros(H, A)
    cfg = replace_nested(
        CFG, cem__iterations=1, cem__population=4, cem__elites=2, mppi__iterations=1, mppi__population=4
    )
    res = PLANNERS["cem"](LinearToyModel(target), H, LOW, HIGH, cfg.cem, init=target.clone())
    assert res.cost == pytest.approx(0.0, abs=1e-9) and torch.equal(res.actions, target)
    assert torch.equal(
        shift_plan(torch.arange(6.0).reshape(3, 2), 1), torch.tensor([[2.0, 3.0], [4.0, 5.0], [4.0, 5.0]])
    )


def _model():
    torch.manual_seed(0)
    m = DynamicsModel(get_preset("tiny").model).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m


def test_shared_history_batching_equals_one_by_one():
    m = _model()
    c = m.cfg
    ctx = torch.randn(1, 3, c.num_latent_tokens, c.latent_dim)
    ctx_actions = torch.randn(1, 2, c.action_dim)
    goal = torch.randn(c.num_latent_tokens, c.latent_dim)
    cands = torch.randn(6, 4, c.action_dim)
    for K in (1, 2):
        obj = LatentGoalObjective(m, ctx, goal, ctx_actions, Sampling(K), seed=3)
        batched = obj(cands)
        noise = obj.noise(4)
        for i in range(6):  # each candidate on its own: observe the history again, roll out, score
            full = torch.cat([ctx_actions, cands[i : i + 1]], 1)
            pred = rollout(m, ctx, 4, Conditions(full), Sampling(K), noise=noise)
            one = latent_cost(pred, goal)
            torch.testing.assert_close(batched[i : i + 1], one, atol=1e-5, rtol=1e-4)
    assert obj.evaluations == 6


def test_gradient_planner_descends_through_the_model():
    m = _model()
    c = m.cfg
    ctx = torch.randn(1, 1, c.num_latent_tokens, c.latent_dim)
    goal_actions = torch.rand(1, 2, c.action_dim) * 2 - 1
    obj = LatentGoalObjective(m, ctx, torch.zeros(c.num_latent_tokens, c.latent_dim), seed=0)
    goal = obj.predict(goal_actions)[0, -1]  # a reachable goal
    obj = LatentGoalObjective(m, ctx, goal, seed=0)
    low, high = -torch.ones(c.action_dim), torch.ones(c.action_dim)
    cfg = replace_nested(CFG, gradient__steps=30, gradient__lr=0.05)
    start = float(obj(torch.zeros(1, 2, c.action_dim)))
    res = PLANNERS["gradient"](obj, 2, low, high, cfg.gradient, generator=torch.Generator().manual_seed(0))
    assert res.cost < 0.5 * start and (res.actions.abs() <= 1).all()


def test_cost_options():
    pred = torch.zeros(2, 3, 4, 5)
    pred[1, -1] = 1.0
    goal = torch.ones(4, 5)
    assert latent_cost(pred, goal).tolist() == [1.0, 0.0]
    assert latent_cost(pred, goal, "l1").tolist() == [1.0, 0.0]
    assert latent_cost(pred, goal, all_frames=True)[1] == pytest.approx(3 / 7)  # weights 1, 2, 4 (DINO-WM)
    assert latent_cost(pred + 1, goal, "cosine")[0] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="plan.cost"):
        latent_cost(pred, goal, "huber")


def test_plan_entry_point_observes_once_and_maps_the_planning_space():
    """`plan` builds the objective on one shared history (or a given cache) and returns bounded plans; with
    `expand` the search runs in a smaller space (one held action per step)."""
    m = _model()
    c = m.cfg
    ctx = torch.randn(1, 2, c.num_latent_tokens, c.latent_dim)
    ctx_actions = torch.randn(1, 1, c.action_dim)
    goal = torch.randn(c.num_latent_tokens, c.latent_dim)
    cfg = replace_nested(
        CFG,
        cem__population=16,
        cem__elites=4,
        cem__iterations=2,
        mppi__population=16,
        mppi__iterations=2,
        gradient__steps=2,
        horizon=3,
    )
    low, high = -torch.ones(2), torch.ones(2)

    def expand(a):  # (…, H, 2) -> (…, H, A): the 2-D action repeated, zero-padded
        return torch.nn.functional.pad(a.repeat(*([1] * (a.dim() - 1)), 2), (0, c.action_dim - 4))

    for name in PLANNERS:
        gen = torch.Generator().manual_seed(0)
        res = plan(
            m,
            PlanProblem(ctx, goal, low, high, history_actions=ctx_actions, expand=expand),
            cfg,
            planner=name,
            generator=gen,
            seed=5,
        )
        assert res.actions.shape == (3, 2) and (res.actions.abs() <= 1).all()
        assert res.seconds > 0 and res.evaluations > 0
        obj = LatentGoalObjective(m, ctx, goal, ctx_actions, Sampling(1), seed=5)
        assert float(obj(expand(res.actions)[None])) == pytest.approx(res.cost, rel=1e-4, abs=1e-5)
    # a given history cache is used as is (not observed again) and gives the same plan
    from latentwm.rollout import observe

    cache = observe(m, ctx, Conditions(ctx_actions))
    a = plan(
        m,
        PlanProblem(ctx, goal, low, high, history_actions=ctx_actions, cache=cache, expand=expand),
        cfg,
        planner="cem",
        generator=torch.Generator().manual_seed(0),
        seed=5,
    )
    b = plan(
        m,
        PlanProblem(ctx, goal, low, high, history_actions=ctx_actions, expand=expand),
        cfg,
        planner="cem",
        generator=torch.Generator().manual_seed(0),
        seed=5,
    )
    torch.testing.assert_close(a.actions, b.actions)
    assert a.cost == pytest.approx(b.cost, rel=1e-5)
    c16 = plan(
        m,
        PlanProblem(ctx, goal, low, high, history_actions=ctx_actions, expand=expand),
        cfg,
        planner="cem",
        generator=torch.Generator().manual_seed(0),
        seed=5,
        bf16=True,
    )  # bf16 rollouts
    assert c16.actions.dtype == torch.float32 and (c16.actions.abs() <= 1).all()
    assert c16.cost == pytest.approx(b.cost, rel=0.05)
    with pytest.raises(ValueError, match="plan.planner"):
        plan(m, PlanProblem(ctx, goal, low, high), cfg, planner="beam")
