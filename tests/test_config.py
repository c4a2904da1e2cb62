import dataclasses

import pytest

from latentwm.config import (
    PRESETS,
    CEMConfig,
    ConfigError,
    DataConfig,
    EncoderConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    get_preset,
)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_valid_and_consistent(name):
    cfg = get_preset(name)
    assert cfg.preset == name
    assert cfg.model.latent_dim == cfg.encoder.preset.hidden_size
    assert cfg.model.latent_grid == cfg.encoder.grid
    assert cfg.data.action_dim <= cfg.model.action_dim
    # round trip through a plain dict (checkpoints store configs this way)
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_preset_names_the_field():
    with pytest.raises(ConfigError, match="preset.*'nope'.*tiny"):
        get_preset("nope")


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: ModelConfig(width=-3), "model.width"),
        (lambda: ModelConfig(depth=0), "model.depth"),
        (lambda: ModelConfig(width=30, heads=4), "model.width"),
        (lambda: ModelConfig(heads=8, kv_heads=3), "model.heads"),
        (lambda: ModelConfig(k_max=48), "model.k_max"),
        (lambda: ModelConfig(depth=2, time_every=4), "model.depth"),
        (lambda: ModelConfig(patch_group=3), "model.patch_group"),
        (lambda: DataConfig(clip_len=-1), "data.clip_len"),
        (lambda: DataConfig(eval_fraction=1.5), "data.eval_fraction"),
        (lambda: TrainConfig(lr=0), "train.lr"),
        (lambda: CEMConfig(population=10, elites=20), "plan.cem.elites"),
        (lambda: EncoderConfig(name="dinov9-xxl"), "encoder.name"),
        (lambda: EncoderConfig(name="dinov2-s", image_size=200), "encoder.image_size"),
    ],
)
def test_bad_values_are_rejected_with_the_field_named(make, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        make()


def test_cross_field_checks():
    cfg = get_preset("tiny")
    with pytest.raises(ConfigError, match="model.action_dim"):
        cfg.replace(data__env_action_dim=7)  # 7 × frame_skip 5 = 35 > 10
    with pytest.raises(ConfigError, match="model.latent_dim"):
        cfg.replace(model__latent_dim=128)
    with pytest.raises(ConfigError, match="model.latent_grid"):
        cfg.replace(encoder__image_size=112)
    with pytest.raises(ConfigError, match="data.clip_len"):
        cfg.replace(data__clip_len=64)


def test_configs_are_frozen():
    cfg = get_preset("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.width = 3


def test_local_encoder_path_skips_shape_checks():
    cfg = get_preset("tiny").replace(encoder__name="/models/my-dino")
    assert cfg.encoder.preset is None and cfg.encoder.grid is None
