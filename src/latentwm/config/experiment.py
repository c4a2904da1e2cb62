"""ExperimentConfig: every section one training / evaluation run needs, with the cross-section checks; what a
checkpoint records (`to_dict` / `from_dict`)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

from latentwm.config.base import ConfigError
from latentwm.config.planning import PlanConfig
from latentwm.config.sections import DataConfig, EncoderConfig, ModelConfig, ObjectiveConfig, RolloutConfig, TrainConfig


def replace_nested(obj, **overrides):
    """dataclasses.replace with `a__b__c=value` keys reaching nested frozen dataclasses."""
    groups: dict[str, dict] = {}
    direct = {}
    for key, value in overrides.items():
        head, sep, rest = key.partition("__")
        if sep:
            groups.setdefault(head, {})[rest] = value
        else:
            direct[key] = value
    for head, kw in groups.items():
        direct[head] = replace_nested(direct.get(head, getattr(obj, head)), **kw)
    return dataclasses.replace(obj, **direct)


def from_dict(cls, d: dict):
    """Build dataclass `cls` from a plain dict (asdict output), recursing into nested dataclass fields; unknown keys
    are a ConfigError naming them."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}")
    kw = {}
    for k, v in d.items():
        t = hints[k]
        if dataclasses.is_dataclass(t) and isinstance(v, dict):
            v = from_dict(t, v)
        elif isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    return cls(**kw)


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one training / evaluation run needs; `preset` records where the defaults came from."""

    preset: str = "cpu"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)

    def __post_init__(self):
        enc = self.encoder.preset
        if enc is not None:
            if self.model.latent_dim != enc.hidden_size:
                raise ConfigError(
                    f"model.latent_dim ({self.model.latent_dim}) must equal the width of encoder "
                    f"{self.encoder.name!r} ({enc.hidden_size})"
                )
            if self.model.latent_grid != self.encoder.grid:
                raise ConfigError(
                    f"model.latent_grid ({self.model.latent_grid}) must equal encoder.image_size / patch / pool = "
                    f"{self.encoder.image_size} / {enc.patch_size} / {self.encoder.pool} = {self.encoder.grid}"
                )
        if self.data.action_dim > self.model.action_dim:
            raise ConfigError(
                f"model.action_dim ({self.model.action_dim}) is smaller than the data's action width "
                f"data.env_action_dim × data.frame_skip = {self.data.env_action_dim} × {self.data.frame_skip} "
                f"= {self.data.action_dim}"
            )
        if self.data.clip_len > self.model.context_frames:
            raise ConfigError(
                f"data.clip_len ({self.data.clip_len}) must be <= model.context_frames "
                f"({self.model.context_frames}): training would see longer histories than generation can keep"
            )
        if self.objective.teacher_forcing and self.model.prediction == "next":
            raise ConfigError(
                "objective.teacher_forcing is for shortcut forcing: model.prediction 'next' trains on clean inputs "
                "already"
            )
        if self.rollout.sample_steps > self.model.k_max or self.plan.sample_steps > self.model.k_max:
            raise ConfigError(f"rollout/plan sample_steps must be <= model.k_max ({self.model.k_max})")
        if self.rollout.context > self.model.context_frames:
            raise ConfigError(
                f"rollout.context ({self.rollout.context}) must be <= model.context_frames "
                f"({self.model.context_frames})"
            )

    def replace(self, **sections) -> ExperimentConfig:
        """Copy with whole sections or `section__field=value` overrides (`plan__cem__population=64` reaches a
        nested section), re-validated."""
        return replace_nested(self, **sections)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ExperimentConfig:
        """Inverse of to_dict (a checkpoint's config); unknown sections or fields are a ConfigError naming them."""
        return from_dict(cls, dict(d))


__all__ = ["ExperimentConfig", "from_dict", "replace_nested"]
