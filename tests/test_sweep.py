"""`latentwm sweep`: the sweep file and its overrides are validated before anything runs (errors name the variant
and the key); a sweep of 2 variants × 2 seeds trains and evaluates every run and aggregates mean/std/n of the
per-run numbers; a re-run skips done runs (checkpoints untouched), finishes a half-done one exactly as the
uninterrupted run did and retries failed ones; a failing variant is listed with its error while the others
aggregate; emitted commands run one run each; --collect reports a partly finished sweep; a done run whose settings
the file would change is refused; the shipped sweeps/*.toml build every variant's config."""

import contextlib
import dataclasses
import io
import json
import math
import os
import shlex
import shutil
import socket
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from latentwm.cli import main
from latentwm.config import ConfigError, EvalConfig
from latentwm.config.sweep import SweepConfig
from latentwm.data.episodes import Episode
from latentwm.data.latent_cache import Encoding, encode_to_cache
from latentwm.model.dynamics import DynamicsModel
from latentwm.sweep.aggregate import run_state
from latentwm.sweep.spec import build_runs, parse_variant, spec_from_config
from latentwm.train.evaluate import clip_subset, run_eval

REPO = Path(__file__).resolve().parents[1]
_W = np.random.default_rng(0).normal(size=(12, 64)).astype(np.float32)  # 2×2×3 pixels -> one 64-wide token


def _episode(i: int, T: int = 16) -> Episode:
    """A bright pixel random-walking on an 8×8 frame; the action is its move."""
    g = np.random.default_rng(i)
    pos = np.cumsum(g.integers(-1, 2, size=(T, 2)), 0) % 8
    frames = np.zeros((T, 8, 8, 3), np.uint8)
    frames[np.arange(T), pos[:, 0], pos[:, 1]] = 255
    actions = np.diff(pos, axis=0, append=pos[-1:]).astype(np.float32)
    return Episode(dataset="toy", episode_id=f"ep{i:02d}", fps=10.0, frames={"main": frames}, actions=actions)


def _encode(frames: np.ndarray) -> np.ndarray:
    """(T, 8, 8, 3) uint8 -> (T, 16, 64): the tiny preset's 4×4 grid of 64-wide latents."""
    x = frames.astype(np.float32).reshape(len(frames), 4, 2, 4, 2, 3).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(len(frames), 16, 12) / 255 @ _W


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sweep_cache")
    encode_to_cache(
        [(f"toy/ep{i:02d}", (lambda i=i: _episode(i))) for i in range(10)],
        Encoding(_encode, "toy"),
        d,
        episodes_per_shard=5,
        show_progress=False,
    )
    return d


VARIANTS = """
[variants.base]
[variants.r0]
"model.registers" = 0
"""
FAILING = """
[variants.bad]
# fine as a config, refused when the trainer splits the batch of 4 into micro-batches
"train.grad_accum" = 3
"""


def _sweep_file(path: Path, cache: Path, out: Path, variants: str = VARIANTS, base: str = "") -> Path:
    path.write_text(f"""
[sweep]
name = "toy"
preset = "tiny"
seeds = [0, 1]
out_dir = "{out}"

[base]
"data.cache_dir" = "{cache}"
"data.frame_skip" = 1
"data.eval_fraction" = 0.3
train.steps = 4
train.log_every = 1
train.ckpt_every = 2
train.eval_every = 4
train.warmup_steps = 1
train.condition_gain = false
objective.bootstrap_start = 2
objective.bootstrap_fraction = 0.5
{base}

[eval]
context = 2
horizon = 4
horizons = [1, 4]
sample_steps = [1, 2]
num_samples = 2
{variants}""")
    return path


def _main(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def done_sweep(cache, tmp_path_factory):
    """The 2 variants × 2 seeds sweep plus a variant that fails in the trainer, run once by `latentwm sweep`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sweep")
    f = _sweep_file(root / "s.toml", cache, root / "out", VARIANTS + FAILING)
    rc, out, err = _main(["sweep", str(f)])
    yield f, root / "out", rc, out, err
    torch.set_num_threads(threads)


def _eval(run_dir: Path) -> dict:
    return json.loads((run_dir / "eval.json").read_text())


def _config_of(done_sweep, variant: str):
    return next(
        r.config for r in build_runs(spec_from_config(SweepConfig(file=str(done_sweep[0])))) if r.variant == variant
    )


def _mtimes(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("checkpoints/**/*") if p.is_file()}


# ------------------------------------------------------------------------------------------------ parse / validate
def _spec(tmp_path, cache, variants, *, base="", **cli):
    f = _sweep_file(tmp_path / "s.toml", cache, tmp_path / "out", variants, base)
    return spec_from_config(SweepConfig(file=str(f), **cli))


@pytest.mark.parametrize(
    "variants, match",
    [
        ('[variants.oops]\n"model.widht" = 3', r"variant 'oops': unknown key 'model.widht' .*did you mean model.width"),
        ('[variants.neg]\n"model.width" = -8', r"variant 'neg': model.width must be > 0"),
        ('[variants.words]\n"train.steps" = "many"', r"variant 'words': train.steps expects an integer, got 'many'"),
        ('[variants.lit]\n"model.attention" = "fast"', r"variant 'lit': model.attention must be one of \['eager'"),
        ('[variants.own]\n"train.seed" = 3', r"variant 'own': train.seed is set by the sweep"),
        ('[variants.split]\n"data.seed" = 3', r"variant 'split': data.seed would change the held-out clips"),
        ('[variants.section]\n"model" = 3', r"variant 'section': model is a section"),
    ],
)
def test_bad_overrides_are_refused_naming_the_variant_and_key(tmp_path, cache, variants, match):
    spec = _spec(tmp_path, cache, VARIANTS + variants)
    with pytest.raises(ConfigError, match=match):
        build_runs(spec)


def test_errors_come_before_any_run_starts(tmp_path, cache):
    f = _sweep_file(tmp_path / "s.toml", cache, tmp_path / "out", VARIANTS + '[variants.late]\n"model.heads" = 5')
    rc, _, err = _main(["sweep", str(f)])
    assert rc == 2 and err.startswith("latentwm sweep: variant 'late': model.width (32) must be divisible by")
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()  # the first variants did not run either


def test_eval_and_file_errors(tmp_path, cache):
    spec = _spec(tmp_path, cache, VARIANTS)
    with pytest.raises(ConfigError, match=r"variant 'base': eval.sample_steps \[16\] exceed model.k_max \(8\)"):
        build_runs(dataclasses.replace(spec, eval=dataclasses.replace(spec.eval, sample_steps=(1, 16))))
    (tmp_path / "bad.toml").write_text("[sweep\nname = 1")
    with pytest.raises(ConfigError, match=r"bad.toml: malformed TOML"):
        spec_from_config(SweepConfig(file=str(tmp_path / "bad.toml")))
    (tmp_path / "unk.toml").write_text('[sweep]\nname = "x"\n[eval]\nhorizonz = 3\n')
    with pytest.raises(ConfigError, match=r"\[eval\]: unknown key 'horizonz' .*did you mean horizon"):
        spec_from_config(SweepConfig(file=str(tmp_path / "unk.toml")))
    (tmp_path / "k.toml").write_text('[sweep]\nname = "x"\n[eval]\nsample_steps = 4\n')
    with pytest.raises(ConfigError, match=r"\[eval\]: eval.sample_steps expects a list of integers, got 4"):
        spec_from_config(SweepConfig(file=str(tmp_path / "k.toml")))
    (tmp_path / "h.toml").write_text('[sweep]\nname = "x"\n[eval]\nhorizons = [1, 32]\n')
    with pytest.raises(ConfigError, match=r"eval.horizons must be a non-empty list of horizons in 1..eval.horizon"):
        spec_from_config(SweepConfig(file=str(tmp_path / "h.toml")))
    with pytest.raises(ConfigError, match=r"a variant name with a dot must be quoted"):
        build_runs(_spec(tmp_path, cache, '[variants.tau-0.9]\n"rollout.tau_ctx" = 0.9'))


def test_command_line_overrides_and_seeds(tmp_path, cache):
    spec = _spec(
        tmp_path,
        cache,
        VARIANTS,
        set=("train.steps=7", "rollout.tau_ctx=0.9", "model.softcap=none"),
        variant=("wide:model.width=64,model.heads=4", "r0:"),
        seeds="3,5",
    )
    runs = build_runs(spec)
    assert [r.name for r in runs] == ["base/seed3", "base/seed5", "r0/seed3", "r0/seed5", "wide/seed3", "wide/seed5"]
    wide = runs[-1].config
    assert (wide.model.width, wide.model.heads, wide.train.steps, wide.rollout.tau_ctx) == (64, 4, 7, 0.9)
    assert wide.model.softcap is None and runs[2].config.model.registers == 2  # --variant r0: replaced by the base
    # the seed is the training seed only: every run holds out the same episodes
    assert {r.config.train.seed for r in runs} == {3, 5} and {r.config.data.seed for r in runs} == {0}
    assert runs[0].config.train.out_dir == str(tmp_path / "out" / "base" / "seed3" / "train")
    assert parse_variant("v:eval.x=[1,2],a.b=c") == ("v", {"eval.x": "[1,2]", "a.b": "c"})


# ------------------------------------------------------------------------------------------------ run + aggregate
def test_sweep_runs_every_run_and_aggregates_mean_std_n(done_sweep):
    _, out, rc, stdout, err = done_sweep
    assert rc == 2 and "2 of 6 runs failed" in err and "bad/seed0: ConfigError: data.batch_size (4)" in err
    summary = json.loads(stdout.strip().splitlines()[-1])  # the last stdout line is the JSON
    assert summary == json.loads((out / "results.json").read_text())
    assert (summary["done"], summary["total"]) == (4, 6) and set(summary["variants"]) == {"base", "r0"}
    assert [f["run"] for f in summary["failed"]] == ["bad/seed0", "bad/seed1"]
    assert all("train.grad_accum (3)" in f["error"] for f in summary["failed"])
    for v in ("base", "r0"):
        evals = [_eval(out / v / f"seed{s}") for s in (0, 1)]
        for k in ("1", "2"):
            for h in (1, 4):
                vals = [e["K"][k]["model_error"][h - 1] for e in evals]
                cell = summary["variants"][v]["rollout_error"][f"K{k}"][f"h{h}"]
                assert cell["n"] == 2 and math.isclose(cell["mean"], statistics.mean(vals), rel_tol=1e-9)
                assert math.isclose(cell["std"], statistics.stdev(vals), rel_tol=1e-9)
        flows = [e["loss_flow"] for e in evals]
        assert math.isclose(summary["variants"][v]["loss_flow"]["mean"], statistics.mean(flows), rel_tol=1e-9)
        assert all(e["K"]["1"]["num_clips"] > 0 and e["frames_per_s"] > 0 and e["best"] for e in evals)
        with torch.device("meta"):
            params = DynamicsModel(_config_of(done_sweep, v).model).num_parameters()
        assert summary["variants"][v]["params"] == {"mean": params, "std": 0.0, "n": 2}
    assert summary["variants"]["r0"]["params"]["mean"] < summary["variants"]["base"]["params"]["mean"]
    # baselines do not depend on the model: one row, the same in every run
    assert summary["baselines"]["consistent"] and summary["baselines"]["copy_last"]["h1"]["std"] == 0.0
    md = (out / "results.md").read_text()
    assert "| copy-last frame |" in md and "## Failed runs" in md and "`bad/seed1`: ConfigError" in md and md in stdout
    assert (out / "results.csv").read_text().splitlines()[0] == "variant,metric,K,horizon,mean,std,n"
    assert all((out / p).is_file() for p in ("rollout_error_K1.png", "rollout_error_K2.png", "training_curves.png"))


def test_rerun_skips_done_runs_finishes_a_half_done_one_and_retries_failed(done_sweep, tmp_path):
    f, out, *_ = done_sweep
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    half = copy / "base" / "seed1"
    before = _eval(half)
    for p in (half / "done", half / "eval.json"):
        p.unlink()
    shutil.rmtree(half / "train" / "checkpoints" / "step_00000004")  # a crash after the step-2 checkpoint
    untouched = {p: t for p, t in _mtimes(copy).items() if not str(p).startswith(str(half))}
    rc, stdout, err = _main(["sweep", str(f), "--out-dir", str(copy)])
    assert rc == 2 and "bad/seed0: ConfigError" in err  # the failed runs were tried again
    assert stdout.count("  skipped") == 3 and stdout.count("  done") == 1 and stdout.count("  failed") == 2
    assert {p: t for p, t in _mtimes(copy).items() if p in untouched} == untouched  # no retraining
    after = _eval(half)
    assert after["resumed"] and (half / "done").is_file()
    for k in ("1", "2"):  # resume is exact: the same weights, the same numbers
        assert np.allclose(after["K"][k]["model_error"], before["K"][k]["model_error"], rtol=1e-6, atol=1e-7)
    rc, stdout, _ = _main(["sweep", str(f), "--out-dir", str(copy), "--variant", "bad:train.grad_accum=1"])
    assert rc == 0 and stdout.count("  skipped") == 4 and stdout.count("  done") == 2  # a fixed variant finishes
    assert json.loads(stdout.strip().splitlines()[-1])["failed"] == []


def test_max_clips_evaluates_an_evenly_spread_subset(done_sweep, tmp_path, one_thread):
    _, out, *_ = done_sweep
    ckpt = out / "base" / "seed0" / "train"
    full = run_eval(
        EvalConfig(
            checkpoint=str(ckpt),
            out_dir=str(tmp_path / "a"),
            context=2,
            horizon=4,
            sample_steps=1,
            videos=0,
            num_samples=1,
            action_swap=False,
        )
    )
    n = full["num_clips"]
    assert n >= 3
    part = run_eval(
        EvalConfig(
            checkpoint=str(ckpt),
            out_dir=str(tmp_path / "b"),
            context=2,
            horizon=4,
            sample_steps=1,
            videos=0,
            num_samples=1,
            action_swap=False,
            max_clips=2,
        )
    )
    assert part["num_clips"] == 2 and part["copy_last_error"] != full["copy_last_error"]
    assert [i * 10 // 3 for i in range(3)] == [0, 3, 6] and len(clip_subset(list(range(10)), 3)) == 3
    assert clip_subset(list(range(10)), 3)[1] == 3 and clip_subset(list(range(4)), 9) == list(range(4))


def test_eval_compile_compiles_the_sampling_model_and_scores_the_same(done_sweep, tmp_path, monkeypatch, one_thread):
    from latentwm.model.dynamics import DynamicsModel

    _, out, *_ = done_sweep
    ckpt = out / "base" / "seed0" / "train"
    calls = []
    orig = DynamicsModel.compile_sampling

    def compile_sampling(self, backend="inductor"):
        calls.append(backend)
        return orig(self, "aot_eager")  # traced, no kernels generated: quick

    monkeypatch.setattr(DynamicsModel, "compile_sampling", compile_sampling)
    kw = dict(
        checkpoint=str(ckpt),
        context=2,
        horizon=4,
        sample_steps=2,
        videos=0,
        num_samples=1,
        action_swap=False,
        max_clips=2,
    )
    eager = run_eval(EvalConfig(out_dir=str(tmp_path / "e"), **kw))
    assert calls == []
    comp = run_eval(EvalConfig(out_dir=str(tmp_path / "c"), compile=True, **kw))
    assert calls == ["inductor"]
    assert np.allclose(comp["model_error"], eager["model_error"], rtol=1e-4, atol=1e-6)


def test_an_evaluation_only_variant_reuses_the_trained_runs(done_sweep, tmp_path):
    f, out, *_ = done_sweep
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = _mtimes(copy)
    rc, stdout, _ = _main(
        [
            "sweep",
            str(f),
            "--out-dir",
            str(copy),
            "--variant",
            "bad:train.grad_accum=1",
            "--variant",
            "ctx09:from=base,rollout.tau_ctx=0.9",
        ]
    )
    assert rc == 0 and stdout.count("  done") == 4, (stdout, _)
    assert {p: t for p, t in _mtimes(copy).items() if p in before} == before  # nothing retrained
    for s in (0, 1):
        run, base = copy / "ctx09" / f"seed{s}", copy / "base" / f"seed{s}"
        assert not (run / "train").exists()
        ev, ref = _eval(run), _eval(base)
        assert ev["trained_by"] == f"base/seed{s}" and ev["K"]["1"]["tau_ctx"] == 0.9
        assert ev["checkpoint"] == str(base / "train" / "checkpoints" / "best.pt")
        assert ev["frames_per_s"] == ref["frames_per_s"]
        assert ev["K"]["2"]["model_error"] != ref["K"]["2"]["model_error"]  # re-noised context: other rollouts
        assert ev["K"]["1"]["copy_last_error"] == ref["K"]["1"]["copy_last_error"]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["variants"]["ctx09"]["params"] == summary["variants"]["base"]["params"]


@pytest.mark.parametrize(
    "variant, match",
    [
        ("ctx:from=nope,rollout.tau_ctx=0.9", r"variant 'ctx': from = 'nope' must name a variant that trains"),
        ("ctx:from=base,model.width=64", r"may set only rollout\.\* keys .*model.width"),
    ],
)
def test_evaluation_only_variants_are_checked(tmp_path, cache, variant, match):
    spec = _spec(tmp_path, cache, VARIANTS, variant=(variant,))
    with pytest.raises(ConfigError, match=match):
        build_runs(spec)


def test_a_changed_config_of_a_done_run_is_refused(done_sweep):
    f, out, *_ = done_sweep
    rc, _, err = _main(["sweep", str(f), "--set", "train.lr=0.01"])
    assert rc == 2 and "run base/seed0 is done with other settings" in err and "train.lr: 0.001 -> 0.01" in err
    rc, _, err = _main(["sweep", str(f), "--collect", str(out), "--only", "base/seed0"])
    assert rc == 2 and "--collect only aggregates" in err


def test_emitted_commands_run_one_run_each_and_collect_reports_the_rest(tmp_path, cache, one_thread):
    f = _sweep_file(tmp_path / "s.toml", cache, tmp_path / "out")
    rc, stdout, _ = _main(["sweep", str(f), "--emit-commands", "--set", "train.steps=2"])
    lines = stdout.strip().splitlines()
    assert rc == 0 and len(lines) == 4 and all(" --only " in line for line in lines)
    assert lines[0] == f"latentwm sweep {f} --set train.steps=2 --only base/seed0"
    rc, _, _ = _main(shlex.split(lines[2])[1:])  # what one job of a SLURM array runs
    assert rc == 0 and (tmp_path / "out" / "r0" / "seed0" / "done").is_file()
    assert not (tmp_path / "out" / "base" / "seed0").exists()  # --only ran exactly one run
    rc, stdout, _ = _main(
        [
            "sweep",
            str(f),
            "--emit-commands",
            "--set",
            "train.steps=2",
            "--launcher",
            "torchrun --nproc-per-node 8 -m latentwm.cli",
        ]
    )
    assert len(stdout.strip().splitlines()) == 3 and "r0/seed0" not in stdout
    assert stdout.startswith("torchrun --nproc-per-node 8 -m latentwm.cli sweep ")
    rc, stdout, _ = _main(["sweep", "--collect", str(tmp_path / "out")])
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert rc == 0 and (summary["done"], summary["total"]) == (1, 4) and list(summary["variants"]) == ["r0"]
    assert summary["variants"]["r0"]["rollout_error"]["K1"]["h1"]["std"] is None  # one seed: no spread
    assert {u["run"]: u["state"] for u in summary["unfinished"]} == {
        "base/seed0": "not started",
        "base/seed1": "not started",
        "r0/seed1": "not started",
    }


# ------------------------------------------------------------------------------------------------ shipped sweeps


@pytest.mark.parametrize("name", ["ablation-pusht", "ablation-small"])
def test_shipped_sweep_files_build_every_variant(name):
    spec = spec_from_config(SweepConfig(file=str(REPO / "sweeps" / f"{name}.toml")))
    assert len(spec.seeds) >= 2 and set(spec.eval.sample_steps) == {1, 4, 64}
    assert tuple(spec.eval.horizons) == (1, 4, 8, 16) and spec.eval.horizon == 16 and spec.eval.context == 4
    runs = build_runs(spec)
    assert len(runs) == len(spec.variants) * len(spec.seeds) and all(r.config.model.k_max >= 64 for r in runs)
    assert {r.variant for r in runs if r.trained_by} == {"tau-ctx-0.9"}
    keys = {k for o in spec.variants.values() for k in o}
    assert keys >= {
        "model.prediction",
        "model.dh_blocks",
        "objective.bootstrap_fraction",
        "rollout.tau_ctx",
        "objective.clean_context",
        "model.registers",
    }


def test_cli_lists_the_command(capsys):
    assert main(["--help"]) == 0 and "  sweep " in capsys.readouterr().out
    assert main(["sweep"]) == 2 and "give the sweep file" in capsys.readouterr().err


def test_run_state_tells_a_running_run_from_an_interrupted_one(tmp_path):
    d = tmp_path / "v" / "seed0"
    assert run_state(d) == {"state": "not started"}
    d.mkdir(parents=True)
    (d / "status.json").write_text(json.dumps({"state": "running"}))
    for pid, state in ((os.getpid(), "running"), (2**22 + 7, "interrupted")):  # above Linux's pid_max: gone
        (d / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
        assert run_state(d) == {"state": state}
    (d / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    assert run_state(d)["state"] == "running or interrupted (on elsewhere)"
    (d / "status.json").write_text(json.dumps({"state": "failed", "error": "ValueError: x"}))
    assert run_state(d) == {"state": "failed", "error": "ValueError: x"}
