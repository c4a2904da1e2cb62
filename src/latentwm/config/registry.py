"""Registries: every named choice a config can make, written once.

Plain data with no heavy imports, so configs can be validated before torch or transformers load. The modules that
implement a choice key their tables by these names (`data.sources.load_source`, `planning.PLANNERS`,
`encoders.dino`), and tests/test_registry.py holds them equal.

- Sources: dataset readers (`latentwm encode --source`, online encoding, decoder training).
- Planners and baselines: `latentwm plan` / the demo.
- Encoder presets: hub id, model family and the shapes they produce (`encoders/dino.py` turns one into a model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Source = Literal[
    "pusht",
    "droid",
    "epic",
    "video-folder",
    "lerobot",
    "agibot",
    "egodex",
    "rlds",
    "ssv2",
    "kinetics",
    "openvid",
    "howto100m",
    "ego4d",
]
SOURCES: tuple[str, ...] = get_args(Source)

Planner = Literal["cem", "mppi", "gradient"]
PLANNER_NAMES: tuple[str, ...] = get_args(Planner)

Baseline = Literal["random", "dataset_actions"]
BASELINE_NAMES: tuple[str, ...] = get_args(Baseline)

DecoderSizeName = Literal["tiny", "cpu", "B", "L", "XL"]


@dataclass(frozen=True)
class EncoderPreset:
    hub_id: str | None  # None: built from `tiny_config` with random weights, never downloaded
    family: str  # "dinov2" | "dinov2-reg" | "dinov3"
    hidden_size: int  # D, width of every patch token
    patch_size: int
    num_registers: int  # extra tokens after CLS that are dropped with it
    # transformers config kwargs for random-weight presets. Only real fields of the family's config class: unknown
    # kwargs are stored silently and change nothing (Dinov2 configs size the MLP by mlp_ratio, DINOv3 by
    # intermediate_size), so tests check every key against the built model's config.
    tiny_config: dict | None = None


ENCODER_PRESETS: dict[str, EncoderPreset] = {
    "dinov2-s": EncoderPreset("facebook/dinov2-small", "dinov2", 384, 14, 0),
    "dinov2-b": EncoderPreset("facebook/dinov2-base", "dinov2", 768, 14, 0),
    "dinov2-l": EncoderPreset("facebook/dinov2-large", "dinov2", 1024, 14, 0),
    "dinov2-reg-s": EncoderPreset("facebook/dinov2-with-registers-small", "dinov2-reg", 384, 14, 4),
    "dinov2-reg-b": EncoderPreset("facebook/dinov2-with-registers-base", "dinov2-reg", 768, 14, 4),
    "dinov2-reg-l": EncoderPreset("facebook/dinov2-with-registers-large", "dinov2-reg", 1024, 14, 4),
    "dinov3-s": EncoderPreset("facebook/dinov3-vits16-pretrain-lvd1689m", "dinov3", 384, 16, 4),
    "dinov3-b": EncoderPreset("facebook/dinov3-vitb16-pretrain-lvd1689m", "dinov3", 768, 16, 4),
    "dinov3-l": EncoderPreset("facebook/dinov3-vitl16-pretrain-lvd1689m", "dinov3", 1024, 16, 4),
    # Random-weight stand-ins with the real architectures, for tests and the CPU demo. Never "pretrained".
    # (Dinov2 MLPs are mlp_ratio·hidden = 256 wide here: what these presets have always built, since an earlier
    # intermediate_size=128 was ignored by Dinov2Config. Kept so existing latent caches stay valid.)
    "tiny-random": EncoderPreset(
        None,
        "dinov2",
        64,
        14,
        0,
        dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=4, patch_size=14),
    ),
    "tiny-random-reg": EncoderPreset(
        None,
        "dinov2-reg",
        64,
        14,
        4,
        dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            mlp_ratio=4,
            patch_size=14,
            num_register_tokens=4,
        ),
    ),
    "tiny-random-v3": EncoderPreset(
        None,
        "dinov3",
        64,
        16,
        4,
        dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            patch_size=16,
            num_register_tokens=4,
        ),
    ),
    # ViT-S-sized random config: real compute cost without downloads (benchmarks).
    "vits-random": EncoderPreset(
        None,
        "dinov2",
        384,
        14,
        0,
        dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=14),
    ),
}
