"""Fault injection on pairings: a checkpoint with a latent cache of another encoder (same N and D: nothing else would
notice), an encode resumed with another encoder, and the pairing facts one by one."""

import numpy as np
import pytest

from latentwm.cli import main
from latentwm.data.episodes import Episode, save_episode
from latentwm.data.latent_cache import LatentCache
from latentwm.data.sources.pusht import episode_path
from latentwm.engine.checkpoint import CheckpointError
from latentwm.engine.pairing import check_pairing
from latentwm.planning.proprio import resolve_probe

SEED0, SEED1 = "random:tiny-random:seed0:56px", "random:tiny-random:seed1:56px"


def _episodes(root, n=6, T=24):
    rng = np.random.default_rng(0)
    for i in range(n):
        ep = Episode(
            dataset="toy",
            episode_id=f"ep{i}",
            fps=10.0,
            frames={"front": rng.integers(0, 256, (T, 32, 32, 3), dtype=np.uint8)},
            actions=rng.normal(size=(T, 2)).astype(np.float32),
            proprio=rng.normal(size=(T, 4)).astype(np.float32),
        )
        save_episode(ep, episode_path(root, i))
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two caches of the same episodes from two random encoders (seeds 0 and 1: same N = 16, D = 64) and a tiny
    model trained on the first."""
    tmp = tmp_path_factory.mktemp("pairing")
    root = _episodes(tmp / "episodes")
    for seed in (0, 1):
        assert (
            main(
                [
                    "encode",
                    "--preset",
                    "tiny",
                    "--root",
                    str(root),
                    "--out-dir",
                    str(tmp / f"cache{seed}"),
                    "--encoder.seed",
                    str(seed),
                ]
            )
            == 0
        )
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--data.cache-dir",
                str(tmp / "cache0"),
                "--data.frame-skip",
                "2",
                "--data.eval-fraction",
                "0.34",
                "--train.out-dir",
                str(tmp / "wm"),
                "--train.steps",
                "2",
                "--train.eval-every",
                "100",
                "--train.ckpt-every",
                "2",
            ]
        )
        == 0
    )
    return tmp


def _one_line(capsys, command):
    err = capsys.readouterr().err
    assert err.startswith(f"latentwm {command}: ") and len(err.strip().splitlines()) == 1, err
    return err


def test_eval_refuses_a_cache_of_another_encoder_with_the_same_shapes(runs, capsys):
    info0, info1 = LatentCache(runs / "cache0").info, LatentCache(runs / "cache1").info
    assert (info0["num_tokens"], info0["latent_dim"]) == (info1["num_tokens"], info1["latent_dim"])  # N, D alike
    assert (info0["encoder"], info1["encoder"]) == (SEED0, SEED1)
    args = ["eval", "--checkpoint", str(runs / "wm"), "--videos", "0"]
    assert main([*args, "--cache-dir", str(runs / "cache1"), "--out-dir", str(runs / "eval1")]) == 2
    err = _one_line(capsys, "eval")
    assert SEED0 in err and SEED1 in err and str(runs / "cache1") in err and str(runs / "wm") in err
    assert not (runs / "eval1" / "metrics.json").exists()  # no numbers
    assert main([*args, "--cache-dir", str(runs / "cache0"), "--out-dir", str(runs / "eval0")]) == 0  # its own


def test_plan_rl_and_the_probe_refuse_the_other_cache(runs, capsys):
    assert (
        main(
            [
                "plan",
                "--checkpoint",
                str(runs / "wm"),
                "--cache-dir",
                str(runs / "cache1"),
                "--episodes-dir",
                str(runs / "episodes"),
                "--proprio-probe",
                "none",
                "--out-dir",
                str(runs / "plan"),
            ]
        )
        == 2
    )
    assert SEED1 in _one_line(capsys, "plan")
    assert (
        main(
            [
                "rl",
                "--checkpoint",
                str(runs / "wm"),
                "--cache-dir",
                str(runs / "cache1"),
                "--phase",
                "heads",
                "--out-dir",
                str(runs / "rl"),
            ]
        )
        == 2
    )
    assert SEED1 in _one_line(capsys, "rl")
    with pytest.raises(CheckpointError, match="encoder .*seed0.* vs .*seed1"):
        resolve_probe(runs / "wm", "auto", runs / "cache1", log=lambda *_: None)


def test_encode_resumed_with_another_encoder_is_refused(runs, capsys):
    """Every shard of cache0 is written: the resume would write nothing, and used to report the cache complete."""

    def files():
        return {p.name: p.read_bytes() for p in (runs / "cache0").rglob("*") if p.is_file() and p.name != ".lock"}

    before = files()
    assert (
        main(
            [
                "encode",
                "--preset",
                "tiny",
                "--root",
                str(runs / "episodes"),
                "--out-dir",
                str(runs / "cache0"),
                "--encoder.seed",
                "1",
            ]
        )
        == 2
    )
    err = _one_line(capsys, "encode")
    assert SEED0 in err and SEED1 in err and str(runs / "cache0") in err
    assert (
        main(
            [
                "encode",
                "--preset",
                "tiny",
                "--root",
                str(runs / "episodes"),
                "--out-dir",
                str(runs / "cache0"),
                "--encoder.image-size",
                "112",
                "--encoder.pool",
                "2",
            ]
        )
        == 2
    )  # same N = 16, other size and pool
    assert "image_size 56 vs 112" in _one_line(capsys, "encode")
    assert files() == before


def _info(**kw):
    return dict(
        dict(format="latentwm-latent-cache", encoder=SEED0, image_size=56, pool=1, num_tokens=16, latent_dim=64), **kw
    )


@pytest.mark.parametrize(
    "fact,theirs", [("encoder", SEED1), ("image_size", 112), ("pool", 2), ("num_tokens", 4), ("latent_dim", 32)]
)
def test_check_pairing_names_each_fact_with_both_values_and_paths(fact, theirs):
    state = {"path": "/runs/wm/step_1", "cache_info": _info(), "encoder": SEED0}
    check_pairing(state, _info(), "/c")  # the same facts pair
    with pytest.raises(CheckpointError, match=rf"{fact} .*\(checkpoint\) vs .*\(cache\)") as e:
        check_pairing(state, _info(**{fact: theirs}), "/other/cache")
    assert "/runs/wm/step_1" in str(e.value) and "/other/cache" in str(e.value) and str(theirs) in str(e.value)


def test_check_pairing_of_older_checkpoints_and_caches():
    old_ckpt = {"path": "p", "encoder": SEED0, "config": {"model": {"latent_grid": 4, "latent_dim": 64}}}
    check_pairing(old_ckpt, _info(), "c")  # no cache_info: the label and the model's N, D are compared
    with pytest.raises(CheckpointError, match="num_tokens 16 .* vs 4"):
        check_pairing(old_ckpt, _info(num_tokens=4), "c")
    with pytest.raises(CheckpointError, match=r"encoder .*\(checkpoint\) vs 'random:tiny-random' \(cache\)"):
        check_pairing(old_ckpt, _info(encoder="random:tiny-random"), "c")  # a label that does not say the seed
    no_pool = {k: v for k, v in _info().items() if k != "pool"}  # written before pooling existed: pool 1
    check_pairing({"cache_info": no_pool}, _info(), "c")
    with pytest.raises(CheckpointError, match="pool 1 .* vs 2"):
        check_pairing({"cache_info": no_pool}, _info(pool=2), "c")
    copy = "pretrained:/elsewhere/dino#0123456789ab"  # the same weights (hash) in another folder pair
    check_pairing({"cache_info": _info(encoder="pretrained:/models/dino#0123456789ab")}, _info(encoder=copy), "c")


def test_plan_refuses_an_encoder_config_that_builds_other_weights(runs, capsys):
    """A model trained on seed-0 latents whose saved encoder config says seed 1: planning would observe the real
    environment through another encoder than the one its latents came from."""
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--data.cache-dir",
                str(runs / "cache0"),
                "--data.frame-skip",
                "2",
                "--data.eval-fraction",
                "0.34",
                "--train.out-dir",
                str(runs / "wm_seed1"),
                "--train.steps",
                "1",
                "--train.eval-every",
                "100",
                "--train.ckpt-every",
                "1",
                "--encoder.seed",
                "1",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "plan",
                "--checkpoint",
                str(runs / "wm_seed1"),
                "--cache-dir",
                str(runs / "cache0"),
                "--episodes-dir",
                str(runs / "episodes"),
                "--proprio-probe",
                "none",
                "--out-dir",
                str(runs / "plan_seed1"),
            ]
        )
        == 2
    )
    err = _one_line(capsys, "plan")
    assert f"trained on latents of {SEED0!r}" in err and f"builds {SEED1!r}" in err
