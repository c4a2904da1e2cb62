"""Rollout metrics that a blurry model cannot win: the context-average baseline, mean-of-N samples and swapped
actions (rollout_errors), and `latentwm eval` writing them."""

import json

import numpy as np
import pytest
import torch

from latentwm.cli import main
from latentwm.conditions import Conditions
from latentwm.config import ConfigError, EvalConfig, get_preset
from latentwm.data.batch import ClipSample, WorldBatchMetadata, collate
from latentwm.eval.metrics import EvalOptions, latent_mse, rollout_errors, swap_future_actions
from latentwm.model.dynamics import DynamicsModel
from latentwm.rollout import Sampling, rollout

CFG = get_preset("tiny").model
C, H = 2, 3


def _model(seed=0):
    torch.manual_seed(seed)
    m = DynamicsModel(CFG).eval()
    with torch.no_grad():  # non-zero output weights so the outputs depend on everything (actions included)
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m


def _batch(n, T=C + H, start=0, actions=None, dataset="toy"):
    g = torch.Generator().manual_seed(100 + start)
    clips = [
        ClipSample(
            latents=torch.randn(T, CFG.num_latent_tokens, CFG.latent_dim, generator=g),
            actions=torch.randn(T, 3, generator=g) if actions is None else actions.clone(),
            meta=WorldBatchMetadata(dataset, f"ep{start + i}"),
        )
        for i in range(n)
    ]
    return collate(clips, action_dim=CFG.action_dim)


def test_context_average_error_is_the_mean_of_the_observed_frames():
    b = _batch(3)
    out = rollout_errors(_model(), [b], C, H, options=EvalOptions(sample_steps=1))
    x = b.latents
    guess = x[:, :C].mean(1, keepdim=True)  # (B, 1, N, D): one blurred frame for every future step
    hand = ((guess - x[:, C:]) ** 2).mean(dim=(0, 2, 3))  # (H,)
    np.testing.assert_allclose(out["context_average_error"], hand.tolist(), rtol=1e-6)
    np.testing.assert_allclose(out["by_group"]["toy/main"]["context_average_error"], hand.tolist(), rtol=1e-6)


def test_one_sample_without_swap_is_todays_evaluation_bit_for_bit():
    m, batches = _model(), [_batch(3), _batch(1, start=3), _batch(2, start=4)]
    gen, err_m, err_c = torch.Generator().manual_seed(5), [], []
    for b in batches:  # the evaluation before mean-of-N and swaps: one generator, one rollout per batch
        x = b.latents
        pred = rollout(
            m,
            x[:, :C],
            H,
            Conditions(b.actions[:, : C + H - 1], b.action_mask[:, : C + H - 1]),
            Sampling(2, tau_ctx=0.9),
            generator=gen,
        )
        err_m.append(latent_mse(pred, x[:, C:]).double())
        err_c.append(latent_mse(x[:, C - 1 : C].expand_as(pred), x[:, C:]).double())
    want_m = sum(e.sum(0) for e in err_m) / 6
    want_c = sum(e.sum(0) for e in err_c) / 6
    base = rollout_errors(m, batches, C, H, options=EvalOptions(sample_steps=2, tau_ctx=0.9, seed=5))
    assert base["model_error"] == want_m.tolist() and base["copy_last_error"] == want_c.tolist()
    assert "sample_error" not in base and "swapped_actions_error" not in base and base["num_samples"] == 1
    # the extra samples and the swapped run draw their own noise: model_error keeps its meaning and its value
    more = rollout_errors(
        m, batches, C, H, options=EvalOptions(sample_steps=2, tau_ctx=0.9, seed=5, num_samples=3, action_swap=True)
    )
    for k in ("model_error", "copy_last_error", "context_average_error", "num_clips"):
        assert more[k] == base[k]
    assert more["by_group"]["toy/main"]["model_error"] == base["by_group"]["toy/main"]["model_error"]


def test_mean_of_samples_is_never_worse_than_one_sample():
    out = rollout_errors(
        _model(),
        [_batch(3), _batch(2, start=3, dataset="other")],
        C,
        H,
        options=EvalOptions(sample_steps=2, num_samples=4, seed=1),
    )
    s, mos, spread = (np.array(out[k]) for k in ("sample_error", "mean_of_samples_error", "sample_spread"))
    assert (mos <= s).all() and (spread > 0).all()  # Jensen: the mean of the samples is closer than one sample
    np.testing.assert_allclose(s, mos + spread, rtol=1e-5)  # bias-variance: single = mean-of-N + spread
    for g in ("toy/main", "other/main"):
        grp = out["by_group"][g]
        assert all(a <= b for a, b in zip(grp["mean_of_samples_error"], grp["sample_error"]))
    again = rollout_errors(
        _model(),
        [_batch(3), _batch(2, start=3, dataset="other")],
        C,
        H,
        options=EvalOptions(sample_steps=2, num_samples=4, seed=1),
    )
    assert again["mean_of_samples_error"] == out["mean_of_samples_error"]  # deterministic by seed
    with pytest.raises(ValueError, match="num_samples"):
        rollout_errors(_model(), [_batch(2)], C, H, options=EvalOptions(sample_steps=1, num_samples=0))


def test_swapped_actions_are_noise_matched():
    m = _model()
    same = torch.randn(C + H, 3)
    ident = rollout_errors(
        m,
        [_batch(3, actions=same), _batch(2, start=3, actions=same)],
        C,
        H,
        options=EvalOptions(sample_steps=2, tau_ctx=0.9, action_swap=True),
    )
    assert ident["swapped_actions_error"] == ident["model_error"] and ident["action_sensitivity"] == 0.0
    batches = [_batch(3), _batch(1, start=3), _batch(2, start=4)]
    out = rollout_errors(m, batches, C, H, options=EvalOptions(sample_steps=2, tau_ctx=0.9, action_swap=True))
    assert out["swapped_actions_error"] != out["model_error"] and out["action_sensitivity"] != 0.0
    assert out["swap_skipped_clips"] == 1 and out["num_clips"] == 6  # the batch of one cannot swap
    alone = rollout_errors(m, [_batch(1)], C, H, options=EvalOptions(sample_steps=1, action_swap=True))
    assert alone["swapped_actions_error"] is None and alone["action_sensitivity"] is None


def test_swap_moves_future_actions_and_their_masks_only():
    a = torch.arange(3 * 4, dtype=torch.float).reshape(3, 4, 1)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [True] * 4])
    sa, sm = swap_future_actions(a, mask, context=2)
    assert torch.equal(sa[:, :1], a[:, :1]) and torch.equal(sm[:, :1], mask[:, :1])  # observed history stays
    assert torch.equal(sa[0, 1:], a[1, 1:]) and torch.equal(sa[2, 1:], a[0, 1:])  # clip i gets clip i+1's
    assert sm[0].tolist() == [True, True, False, False] and sm[1].tolist() == [True] * 4


def test_eval_config_names_a_bad_num_samples():
    with pytest.raises(ConfigError, match="eval.num_samples"):
        EvalConfig(num_samples=0)


def test_eval_command_writes_the_new_metrics(tmp_path, capsys):
    from latentwm.data.episodes import Episode, save_episode
    from latentwm.data.sources.pusht import episode_path

    rng = np.random.default_rng(0)
    for i in range(4):
        save_episode(
            Episode(
                dataset="toy",
                episode_id=f"ep{i}",
                fps=10.0,
                frames={"front": rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)},
                actions=rng.normal(size=(16, 2)).astype(np.float32),
            ),
            episode_path(tmp_path / "eps", i),
        )
    assert main(["encode", "--preset", "tiny", "--root", str(tmp_path / "eps"), "--out-dir", str(tmp_path / "c")]) == 0
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--data.cache-dir",
                str(tmp_path / "c"),
                "--data.frame-skip",
                "2",
                "--train.out-dir",
                str(tmp_path / "wm"),
                "--train.steps",
                "1",
                "--train.eval-every",
                "100",
                "--train.ckpt-every",
                "1",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(tmp_path / "wm"),
                "--out-dir",
                str(tmp_path / "ev"),
                "--videos",
                "0",
                "--split",
                "all",
                "--num-samples",
                "2",
            ]
        )
        == 0
    )
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    H = len(m["horizons"])
    for k in (
        "model_error",
        "copy_last_error",
        "context_average_error",
        "sample_error",
        "mean_of_samples_error",
        "sample_spread",
        "swapped_actions_error",
    ):
        assert len(m[k]) == H, k
    assert m["num_samples"] == 2 and isinstance(m["action_sensitivity"], float) and m["swap_skipped_clips"] >= 0
    assert "mean-of-N" in capsys.readouterr().out and (tmp_path / "ev" / "rollout_error.png").stat().st_size > 0
