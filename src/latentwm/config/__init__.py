"""Configuration: frozen dataclass sections, registries of named choices, and presets (one object per size).

Every command of the CLI is built from these (tyro). A newcomer looks for
- a field and its check: sections.py (training run), planning.py, stages.py (decoder, RL, demo sizes), commands.py;
- a value per size: presets.py;
- a named choice (sources, planners, encoders): registry.py.
Nothing here imports the rest of the package: configs are validated before torch or data load.
"""

from latentwm.config.base import ConfigError, LatentwmError
from latentwm.config.commands import (
    DemoConfig,
    EncodeConfig,
    EvalConfig,
    ExportConfig,
    GenerateConfig,
    ImagineConfig,
    PolicyMix,
    VerifyConfig,
)
from latentwm.config.experiment import ExperimentConfig
from latentwm.config.planning import CEMConfig, GradientConfig, MPPIConfig, PlanConfig, PlanRunConfig, ProbeConfig
from latentwm.config.presets import DEMO_PLAN, PRESETS, Preset, get_preset, preset
from latentwm.config.pretrain import PretrainEncoderConfig
from latentwm.config.registry import BASELINE_NAMES, ENCODER_PRESETS, PLANNER_NAMES, SOURCES, EncoderPreset
from latentwm.config.sections import (
    DataConfig,
    EncoderConfig,
    ModelConfig,
    ObjectiveConfig,
    RolloutConfig,
    TextEncoderConfig,
    TrainConfig,
)
from latentwm.config.stages import DecoderConfig, DemoSizes, RLConfig

__all__ = [
    "BASELINE_NAMES",
    "CEMConfig",
    "ConfigError",
    "DEMO_PLAN",
    "DataConfig",
    "DecoderConfig",
    "DemoConfig",
    "DemoSizes",
    "ENCODER_PRESETS",
    "EncodeConfig",
    "EncoderConfig",
    "EncoderPreset",
    "EvalConfig",
    "ExportConfig",
    "ExperimentConfig",
    "LatentwmError",
    "GenerateConfig",
    "GradientConfig",
    "ImagineConfig",
    "MPPIConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "PLANNER_NAMES",
    "PRESETS",
    "PlanConfig",
    "PlanRunConfig",
    "PolicyMix",
    "Preset",
    "ProbeConfig",
    "PretrainEncoderConfig",
    "RLConfig",
    "RolloutConfig",
    "SOURCES",
    "TextEncoderConfig",
    "TrainConfig",
    "VerifyConfig",
    "get_preset",
    "preset",
]
