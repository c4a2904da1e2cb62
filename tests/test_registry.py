"""Named choices are written once (config/registry.py); the tables that implement them agree with it."""

import inspect
import typing

from latentwm.config import (
    BASELINE_NAMES,
    PLANNER_NAMES,
    SOURCES,
    DataConfig,
    DecoderConfig,
    EncodeConfig,
    PlanRunConfig,
)
from latentwm.config.registry import Planner, Source
from latentwm.data import sources
from latentwm.planning import PLANNERS
from latentwm.planning.evaluate import PlanningOptions


def test_planners_match_the_registry():
    assert tuple(PLANNERS) == PLANNER_NAMES
    hints = typing.get_type_hints(PlanRunConfig)
    assert typing.get_args(hints["planners"])[0] is Planner
    assert PlanningOptions().planners == PLANNER_NAMES and PlanningOptions().baselines == BASELINE_NAMES


def test_sources_match_the_registry():
    body = inspect.getsource(sources.load_source)
    assert all(f'"{name}"' in body for name in SOURCES)  # every registered source has a branch
    for cfg in (DataConfig, EncodeConfig, DecoderConfig):
        assert typing.get_type_hints(cfg)["source"] is Source
