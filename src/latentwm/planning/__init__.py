"""Goal-conditioned planning in latent space: costs, CEM / MPPI / gradient planners, the MPC loop, evaluation.

`plan(model, PlanProblem(history, goal, low, high, ...), cfg)` (planning/plan.py) is the one entry point the MPC loop
uses; `mpc.py` runs it against a real environment and `evaluate.py` scores it on Push-T goals beside random and
dataset-action baselines (import those two modules directly: they pull in the environment and the encoder).
"""

from latentwm.planning.base import MappedObjective, PlanResult, shift_plan
from latentwm.planning.cem import plan_cem
from latentwm.planning.cost import LatentGoalObjective, latent_cost
from latentwm.planning.gradient import plan_gradient
from latentwm.planning.mppi import plan_mppi
from latentwm.planning.plan import PLANNERS, PlanProblem, plan

__all__ = [
    "PLANNERS",
    "LatentGoalObjective",
    "MappedObjective",
    "PlanResult",
    "latent_cost",
    "PlanProblem",
    "plan",
    "plan_cem",
    "plan_gradient",
    "plan_mppi",
    "shift_plan",
]
