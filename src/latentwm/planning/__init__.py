"""Goal-conditioned planning in latent space: costs, CEM / MPPI / gradient planners, the MPC loop."""

from latentwm.planning.base import PlanResult, shift_plan
from latentwm.planning.cem import plan_cem
from latentwm.planning.cost import LatentGoalObjective, latent_cost
from latentwm.planning.gradient import plan_gradient
from latentwm.planning.mppi import plan_mppi

PLANNERS = {"cem": plan_cem, "mppi": plan_mppi, "gradient": plan_gradient}

__all__ = ["PLANNERS", "LatentGoalObjective", "PlanResult", "latent_cost", "plan_cem", "plan_gradient", "plan_mppi",
           "shift_plan"]
