"""`latentwm pretrain-encoder`: every objective trains (finite losses), the saved folder loads through DinoEncoder as
`pretrained:<folder>#<hash>` and feeds `latentwm encode`, resume is exact, held-out episodes are never read, the
result folder is written atomically, bad configs fail in one line (tiny ViTs on tiny Push-T-format episodes)."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from latentwm.cli import main
from latentwm.config import ConfigError, EncoderConfig, PretrainEncoderConfig
from latentwm.data.clips import split_episodes
from latentwm.data.episodes import Episode, save_episode
from latentwm.data.sources.pusht import episode_path
from latentwm.encoders.dino import DinoEncoder
from latentwm.planning.evaluate import held_out_episodes
from latentwm.train.encoder_pretrain import (
    EncoderPretrainer,
    build_backbone,
    load_training_frames,
    run_pretrain_encoder,
    sample_batch,
    save_encoder_folder,
)

TINY = dict(
    hidden_size=32,
    layers=1,
    heads=2,
    image_size=56,
    batch_size=8,
    frames_per_episode=4,
    window=10,
    warmup_steps=1,
    log_every=1,
    ckpt_every=2,
    eval_fraction=0.34,
)
TINY_FLAGS = [
    "--hidden-size",
    "32",
    "--layers",
    "1",
    "--heads",
    "2",
    "--image-size",
    "56",
    "--batch-size",
    "8",
    "--frames-per-episode",
    "4",
    "--window",
    "10",
    "--eval-fraction",
    "0.34",
    "--steps",
    "2",
]


def _episodes(root, n=6, T=16):
    """Push-T-format files (dataset "pusht", episode_{i:06d}.npz): a square moving over a gradient; pixel (0, 0)
    of every frame of episode i holds the marker 10 + i."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(n):
        frames = np.zeros((T, 32, 32, 3), np.uint8)
        frames[..., 0], frames[..., 2] = (xx * 6)[None], (yy * 6)[None]
        for t in range(T):
            r, c = (2 + t + 3 * i) % 24, (5 + 2 * t + i) % 24
            frames[t, r : r + 8, c : c + 8] = rng.integers(60, 255, 3)
        frames[:, 0, 0, :] = 10 + i
        save_episode(
            Episode(
                dataset="pusht",
                episode_id=f"episode_{i:06d}",
                fps=10.0,
                frames={"main": frames},
                actions=rng.normal(size=(T, 2)).astype(np.float32),
            ),
            episode_path(root, i),
        )
    return root


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    return _episodes(tmp_path_factory.mktemp("pretrain") / "episodes")


def _cfg(episodes, out, **kw) -> PretrainEncoderConfig:
    return PretrainEncoderConfig(data_dir=str(episodes), out_dir=str(out), **{**TINY, **kw})


@pytest.mark.parametrize("objective", ["dino", "masked-pixels", "time-contrastive"])
def test_each_objective_trains_and_the_folder_loads_as_a_pretrained_encoder(episodes, tmp_path, objective):
    cfg = _cfg(episodes, tmp_path / "run", objective=objective, steps=3)
    folder = run_pretrain_encoder(cfg)
    assert folder == tmp_path / "run" / "encoder"
    assert {"config.json", "model.safetensors", "pretrain.json"} <= {p.name for p in folder.iterdir()}
    info = json.loads((folder / "pretrain.json").read_text())
    assert info["steps_done"] == 3 and info["complete"] and info["objective"] == objective
    assert np.isfinite(info["final_losses"]["loss"]) and info["train_episodes"] == 4 and info["held_out_episodes"] == 2
    assert info["weights"] == ("teacher" if objective == "dino" else "student")
    if objective == "dino":  # the collapse monitor: a share of the maximum entropy
        assert 0.0 < info["final_teacher_entropy"] <= 1.0
    else:
        assert info["final_teacher_entropy"] is None
    enc = DinoEncoder.from_config(EncoderConfig(name=str(folder), image_size=56))
    assert enc.weights_label == f"pretrained:{folder}#{info['weights_hash']}"
    lat = enc.encode(np.zeros((2, 32, 32, 3), np.uint8))
    assert lat.shape == (2, 16, 32) and torch.isfinite(lat).all()
    assert list(tmp_path.joinpath("run").glob(".encoder*")) == []  # no temporary folder left


@pytest.mark.parametrize("objective", ["dino", "masked-pixels", "time-contrastive"])
class _ConstantHead(torch.nn.Module):
    """A teacher head whose output is the same logits for every input (a collapsed teacher)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(*x.shape[:-1], -1)


def test_the_teacher_entropy_reads_both_collapse_modes():
    from latentwm.encoders.ssl import DinoIbot, DinoRecipe

    cfg = PretrainEncoderConfig(**{k: v for k, v in TINY.items() if k != "eval_fraction"})
    obj = DinoIbot(build_backbone(cfg), 56, DinoRecipe(out_dim=64, centering="mean"))
    frames = torch.rand(4, 3, 56, 56) * 255

    def entropy() -> float:
        obj.center.zero_()
        return float(obj.loss(frames, torch.Generator().manual_seed(0))["teacher_entropy"])

    assert 0.0 < entropy() < 1.0
    obj.teacher_head = _ConstantHead(torch.zeros(64))  # uniform output
    assert entropy() == pytest.approx(1.0)
    obj.teacher_head = _ConstantHead(torch.zeros(64).index_fill(0, torch.tensor([3]), 5.0))  # one dimension dominates
    assert entropy() < 0.05


@pytest.mark.parametrize("objective", ["dino", "masked-pixels"])
def test_bf16_autocast_steps_are_finite(episodes, tmp_path, objective):
    """The CUDA path's autocast (bf16), exercised on the CPU."""
    cfg = _cfg(episodes, tmp_path, objective=objective, steps=2, precision="bf16", pixel_weight=0.5)
    tr = EncoderPretrainer(cfg, load_training_frames(cfg, show_progress=False))
    assert tr.autocast["enabled"] and tr.fit() == 2 and np.isfinite(tr.last["loss"])


def test_saved_weights_are_the_trained_ones(episodes, tmp_path):
    cfg = _cfg(episodes, tmp_path, objective="masked-pixels", steps=2)
    tr = EncoderPretrainer(cfg, load_training_frames(cfg, show_progress=False))
    before = tr.backbone.encoder.layer[0].mlp.fc1.weight.detach().clone()
    tr.fit()
    folder = tr.save_encoder()
    enc = DinoEncoder.from_config(EncoderConfig(name=str(folder), image_size=56))
    after = tr.backbone.encoder.layer[0].mlp.fc1.weight
    assert not torch.equal(before, after)
    assert torch.equal(enc.backbone.encoder.layer[0].mlp.fc1.weight, after)


def test_resume_is_exact(episodes, tmp_path):
    cfg = _cfg(episodes, tmp_path / "a", objective="dino", steps=4)
    data = load_training_frames(cfg, show_progress=False)
    straight = EncoderPretrainer(cfg, data)
    straight.fit()
    cfg_b = replace(cfg, out_dir=str(tmp_path / "b"))
    EncoderPretrainer(cfg_b, data).fit(stop_at=2)
    with pytest.raises(ConfigError, match="--resume"):  # checkpoints exist: refused without resume
        EncoderPretrainer(cfg_b, data).fit()
    resumed = EncoderPretrainer(replace(cfg_b, resume=True), data)
    assert resumed.fit() == 4
    a, b = straight.objective.state_dict(), resumed.objective.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # student, teacher, heads, centers
    assert straight.last["loss"] == resumed.last["loss"]
    with pytest.raises(ConfigError, match="use the same settings"):
        EncoderPretrainer(replace(cfg_b, resume=True, hidden_size=64, heads=2), data).fit()
    with pytest.raises(ConfigError, match=r"lr: 0\.001 -> 0\.01"):  # was accepted silently
        EncoderPretrainer(replace(cfg_b, resume=True, lr=1e-2), data).fit()
    assert EncoderPretrainer(replace(cfg_b, resume=True, steps=5), data).fit() == 5  # longer: allowed


def test_held_out_episodes_are_never_trained_on(episodes):
    cfg = _cfg(episodes, "unused", eval_fraction=0.34, split_seed=3)
    data = load_training_frames(cfg, show_progress=False)
    keys = [f"pusht/episode_{i:06d}" for i in range(6)]
    held = split_episodes(keys, 0.34, 3)
    assert sorted(held) == data.held_out and len(held) == 2
    assert {f"pusht/{p.stem}" for p in held_out_episodes(episodes, None, 0.34, 3)} == held  # planning's goals
    assert not set(data.keys) & held
    markers = {int(m) for s in data.seqs for m in np.unique(s[:, 0, 0, 0])}
    assert markers == {10 + i for i, k in enumerate(keys) if k not in held}
    for step in range(5):  # batches draw from those frames only
        frames, _, _ = sample_batch(data, cfg, step)
        assert {int(m) for m in frames[:, 0, 0, 0]} <= markers


def test_time_contrastive_batches_are_groups_within_the_window(episodes):
    cfg = _cfg(episodes, "unused", window=6, eval_fraction=0.0)
    data = load_training_frames(cfg, show_progress=False)
    frames, seq, times = sample_batch(data, cfg, 7)
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    for g in range(2):
        s, t = seq[g * 4 : g * 4 + 4], times[g * 4 : g * 4 + 4]
        assert (s == s[0]).all() and len(set(t.tolist())) == 4 and t.max() - t.min() < 6
    again = sample_batch(data, cfg, 7)
    assert all(np.array_equal(x, y) for x, y in zip((frames, seq, times), again))  # a function of (seed, step)


def test_a_failed_save_keeps_the_previous_folder(tmp_path, monkeypatch):
    cfg = PretrainEncoderConfig(hidden_size=32, layers=1, heads=2, image_size=56)
    bb = build_backbone(cfg)
    final = save_encoder_folder(bb, tmp_path / "encoder", {"n": 1})
    old = (final / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(type(bb), "save_pretrained", boom)
    with pytest.raises(OSError, match="disk full"):
        save_encoder_folder(bb, final, {"n": 2})
    assert (final / "model.safetensors").read_bytes() == old
    assert json.loads((final / "pretrain.json").read_text())["n"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"]


def test_cli_end_to_end_and_encode_with_the_result(episodes, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain-encoder", "--data-dir", str(episodes), "--out-dir", str(out), *TINY_FLAGS]) == 0
    stdout = capsys.readouterr().out
    assert f"--encoder.name {out / 'encoder'} --encoder.image-size 56" in stdout
    assert (
        main(
            [
                "encode",
                "--root",
                str(episodes),
                "--out-dir",
                str(tmp_path / "cache"),
                "--encoder.name",
                str(out / "encoder"),
                "--encoder.image-size",
                "56",
            ]
        )
        == 0
    )
    info = json.loads((tmp_path / "cache" / "cache.json").read_text())
    assert str(info.get("encoder", "")).startswith(f"pretrained:{out / 'encoder'}#")


@pytest.mark.parametrize(
    "flags,field",
    [
        (["--image-size", "50"], "pretrain.image_size must be a multiple of pretrain.patch_size"),
        (["--batch-size", "12", "--frames-per-episode", "8"], "pretrain.batch_size"),
        (["--lr", "nan"], "pretrain.lr"),
        (["--hidden-size", "30", "--heads", "4"], "pretrain.hidden_size"),
    ],
)
def test_bad_config_is_one_line_naming_the_field(capsys, flags, field):
    assert main(["pretrain-encoder", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"latentwm pretrain-encoder: {field}") and err.count("\n") == 1


def test_missing_data_and_too_few_episodes_are_clear_errors(episodes, tmp_path):
    with pytest.raises(ConfigError, match="pretrain.data_dir: no pusht episodes found in"):
        load_training_frames(_cfg(tmp_path / "empty", tmp_path / "o"), show_progress=False)
    one = _episodes(tmp_path / "one", n=1)
    with pytest.raises(ConfigError, match="time-contrastive needs at least 2 training sequences"):
        load_training_frames(_cfg(one, tmp_path / "o", eval_fraction=0.0), show_progress=False)
    data = load_training_frames(
        _cfg(one, tmp_path / "o", objective="masked-pixels", eval_fraction=0.0), show_progress=False
    )
    assert data.frames == 16 and data.episodes == 1
    short = load_training_frames(
        _cfg(episodes, tmp_path / "o", objective="masked-pixels", frame_stride=9, eval_fraction=0.0, max_episodes=3),
        show_progress=False,
    )
    assert short.frames == 6 and len(short.seqs) == 3  # 16 frames at stride 9 → 2 frames each
    with pytest.raises(ConfigError, match="no training frames"):
        load_training_frames(
            _cfg(episodes, tmp_path / "o", objective="masked-pixels", frame_stride=16, eval_fraction=0.0),
            show_progress=False,
        )


def test_sinkhorn_targets_are_distributions_with_balanced_prototypes():
    from latentwm.encoders.ssl import sinkhorn_knopp

    logits = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    q = sinkhorn_knopp(logits, temp=0.5, iters=20)
    torch.testing.assert_close(q.sum(1), torch.ones(16))  # each image: a distribution
    torch.testing.assert_close(q.sum(0), torch.full((8,), 2.0), atol=1e-3, rtol=0)  # each prototype: B/K images
    assert torch.isfinite(sinkhorn_knopp(logits * 1e4, temp=0.05)).all()  # large logits cannot overflow
    # one prototype winning every image (the other collapse mode): the balancing spreads the images over prototypes
    peaked = torch.zeros(16, 8).index_fill(1, torch.tensor([3]), 5.0) + 0.1 * logits
    assert sinkhorn_knopp(peaked, temp=0.5, iters=20).argmax(1).unique().numel() > 1


def test_koleo_is_lower_for_spread_features():
    from latentwm.encoders.ssl import koleo

    g = torch.Generator().manual_seed(0)
    spread = torch.randn(32, 16, generator=g)
    bunched = torch.randn(1, 16, generator=g) + 0.01 * torch.randn(32, 16, generator=g)
    assert koleo(spread) < koleo(bunched)


def test_dino_recipe_is_validated_and_reaches_the_objective(episodes, tmp_path):
    from latentwm.encoders.ssl import DinoRecipe

    with pytest.raises(ValueError, match="centering"):
        DinoRecipe(centering="median")
    with pytest.raises(ConfigError, match="koleo_weight"):
        _cfg(episodes, tmp_path, objective="dino", koleo_weight=-1.0)
    cfg = _cfg(episodes, tmp_path, objective="dino", steps=2, dino_centering="mean", koleo_weight=0.0)
    tr = EncoderPretrainer(cfg, load_training_frames(cfg, show_progress=False))
    assert tr.objective.recipe.centering == "mean" and tr.objective.recipe.koleo_weight == 0.0
    assert tr.fit() == 2 and float(tr.last["koleo"]) == 0.0
    cfg = _cfg(episodes, tmp_path / "sk", objective="dino", steps=2)
    tr = EncoderPretrainer(cfg, load_training_frames(cfg, show_progress=False))
    assert tr.objective.recipe.centering == "sinkhorn" and tr.fit() == 2 and np.isfinite(tr.last["koleo"])


def test_frozen_prototypes_take_no_update_until_the_step_named(episodes, tmp_path):
    def prototypes_after(freeze: int, out) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = _cfg(episodes, out, objective="dino", steps=2, freeze_prototypes=freeze)
        tr = EncoderPretrainer(cfg, load_training_frames(cfg, show_progress=False))
        before = tr.objective.head.last.weight.detach().clone()
        tr.fit()
        return before, tr.objective.head.last.weight.detach()

    before, after = prototypes_after(5, tmp_path / "frozen")
    assert torch.equal(before, after)  # no gradient step and no weight decay while frozen
    before, after = prototypes_after(0, tmp_path / "free")
    assert not torch.equal(before, after)
