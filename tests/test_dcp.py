"""Sharded (DCP) checkpoints under FSDP2 and `latentwm export`.

The 2-process runs (gloo, like tests/test_trainer.py) are slow; the format, crash and export properties are also
checked in one process, where DCP writes a world-of-one sharded checkpoint through the same code.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from latentwm import cli
from latentwm.config import ConfigError, ExportConfig, get_preset
from latentwm.data.sources.synthetic import MovingBlobClips
from latentwm.engine import checkpoint as ckpt
from latentwm.engine.export_file import read_export
from latentwm.engine.logging import read_metrics
from latentwm.engine.sharded import load_sharded, sharded_state
from latentwm.engine.state_file import CheckpointError
from latentwm.model.dynamics import DynamicsModel
from latentwm.train.export import export_checkpoint
from latentwm.train.trainer import Trainer

SCRIPT = Path(__file__).parent / "scripts" / "toy_train.py"


def _cfg(out, **kw):
    base = dict(
        train__out_dir=str(out),
        train__steps=8,
        train__log_every=1,
        train__ckpt_every=4,
        train__keep_last=5,
        train__eval_every=1000,
        train__warmup_steps=2,
        data__batch_size=4,
        objective__bootstrap_start=2,
        objective__bootstrap_fraction=0.5,
        train__distributed="fsdp",
    )
    base.update(kw)
    return get_preset("tiny").replace(**base)


def _losses(out):
    return {r["step"]: r["train/loss"] for r in read_metrics(Path(out) / "metrics.jsonl") if "train/loss" in r}


def _torchrun(cfg, port):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(port),
        str(SCRIPT),
        json.dumps(cfg.to_dict()),
    ]
    r = subprocess.run(cmd, capture_output=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, (r.stdout + r.stderr).decode()[-3000:]


def _consolidated(step_dir, tmp_path):
    """The DCP data of a step directory read by torch's own converter (independent of latentwm's loader)."""
    out = tmp_path / f"consolidated_{step_dir.parent.parent.name}_{step_dir.name}.pt"
    dcp_to_torch_save(str(step_dir / "dcp"), str(out))
    return torch.load(out, weights_only=False)


def _same(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _probe(model):
    """A fixed forward pass: what "identical outputs" compares."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, cfg.latent_grid**2, cfg.latent_dim, generator=g)
    tau = torch.full((2, 3), 0.5)
    d = torch.full((2, 3), 0.25)
    a = torch.randn(2, 3, cfg.action_dim, generator=g)
    with torch.no_grad():
        return model(x, tau, d, actions=a)


@pytest.mark.slow
def test_sharded_save_at_two_resumes_exactly_at_two_and_at_one(tmp_path):
    full = _cfg(tmp_path / "a")
    _torchrun(full, 29641)
    ref = _losses(tmp_path / "a")
    assert sorted(ref) == list(range(1, 9))
    s4 = ckpt.step_dir(tmp_path / "a" / "checkpoints", 4)
    st = ckpt.load_checkpoint(s4)
    assert st["dcp"] == ["model", "ema", "optimizer"] and "model" not in st and st["world_size"] == 2
    manifest = json.loads((s4 / "manifest.json").read_text())["files"]
    assert {"dcp/.metadata", "dcp/__0_0.distcp", "dcp/__1_0.distcp", "rng_rank1.pt"} <= set(manifest)

    # resume at world size 2 from step 4: steps 5..8 repeat bit for bit, and so do the final weights
    for name in ("b", "c"):
        shutil.copytree(tmp_path / "a", tmp_path / name)
        shutil.rmtree(ckpt.step_dir(tmp_path / name / "checkpoints", 8))
    _torchrun(_cfg(tmp_path / "b", train__resume=True), 29642)
    got = _losses(tmp_path / "b")
    assert got == ref
    a8, b8 = (_consolidated(ckpt.step_dir(tmp_path / n / "checkpoints", 8), tmp_path) for n in "ab")
    _same(a8["model"], b8["model"])
    _same(a8["ema"], b8["ema"])

    # resume at world size 1 (no FSDP): DCP reshards onto one process; the loaded state is the saved one
    one = _cfg(tmp_path / "c", train__resume=True)
    m = one.model
    data = MovingBlobClips(grid=m.latent_grid, dim=m.latent_dim, frames=one.data.clip_len, seed=0, text_dim=m.text_dim)
    t = Trainer(one, data, None, device="cpu")
    t.loop.resume(True)
    saved = _consolidated(s4, tmp_path)
    _same(t.model.state_dict(), saved["model"])
    _same(t.ema.state_dict(), saved["ema"])
    opt = saved["optimizer"]["state"]
    name = "blocks.0.attn.qkv.weight" if "blocks.0.attn.qkv.weight" in opt else sorted(opt)[0]
    param = dict(t.model.named_parameters())[name]
    assert torch.equal(t.opt.state[param]["exp_avg"], opt[name]["exp_avg"])
    t.log.close()
    Trainer(one, data, None, device="cpu").fit()
    got1 = _losses(tmp_path / "c")
    assert sorted(got1) == sorted(ref)
    for s in ref:  # another reduction order than 2 ranks: equal to float tolerance, not bitwise
        assert abs(got1[s] - ref[s]) < 1e-4 * max(1.0, ref[s]), (s, got1[s], ref[s])

    # export from the sharded checkpoint: one file, the same EMA weights, the same outputs
    path = export_checkpoint(tmp_path / "a", tmp_path / "a.safetensors")
    exported, _, facts = ckpt.load_world_model(path)
    direct, _, _ = ckpt.load_world_model(tmp_path / "a")
    _same(exported.state_dict(), a8["ema"])
    assert facts["step"] == 8 and facts["weights"] == "ema"
    assert torch.equal(_probe(exported), _probe(direct))


# ----------------------------------------------------------------------------------------------- one process
def _world_of_one(tmp_path, sharded: bool):
    """A checkpoint of the tiny model written as a training run would (sharded: through DCP); returns
    (root, model, ema, optimizer)."""
    cfg = _cfg(tmp_path)
    torch.manual_seed(0)
    model, ema = DynamicsModel(cfg.model), DynamicsModel(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    facts = {"config": cfg.to_dict(), "step": 3, "data_stats": {"latents": {"mean": torch.zeros(4), "std": 2.0}}}
    root = tmp_path / "checkpoints"
    if sharded:
        ckpt.save_checkpoint(
            root,
            3,
            {**facts, "dcp": ["model", "ema", "optimizer"]},
            sharded_state=sharded_state({"model": model, "ema": ema}, opt),
        )
    else:
        ckpt.save_checkpoint(
            root, 3, {**facts, "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict()}
        )
    return root, model, ema, opt


@pytest.mark.parametrize("sharded", [True, False])
def test_export_loads_with_load_world_model_and_gives_identical_outputs(tmp_path, sharded):
    root, model, ema, _ = _world_of_one(tmp_path, sharded)
    for use_ema, ref in ((True, ema), (False, model)):
        direct, cfg, _ = ckpt.load_world_model(root, ema=use_ema)
        _same(direct.state_dict(), ref.state_dict())
        out = export_checkpoint(root, tmp_path / f"m_{use_ema}.safetensors", ema=use_ema)
        loaded, cfg2, facts = ckpt.load_world_model(out)
        assert cfg2 == cfg and facts["weights"] == ("ema" if use_ema else "model") and facts["step"] == 3
        assert torch.equal(facts["data_stats"]["latents"]["mean"], torch.zeros(4))
        assert "optimizer" not in facts
        assert torch.equal(_probe(loaded), _probe(ref.eval()))


def test_sharded_state_loads_into_a_fresh_model_and_optimizer(tmp_path):
    root, model, ema, opt = _world_of_one(tmp_path, sharded=True)
    path = ckpt.latest_checkpoint(root)
    assert (path / "dcp" / "__0_0.distcp").is_file() and "model" not in ckpt.load_checkpoint(path)
    cfg = _cfg(tmp_path).model
    m2, e2 = DynamicsModel(cfg), DynamicsModel(cfg)
    o2 = torch.optim.AdamW(m2.parameters(), lr=1e-3)
    load_sharded(path, {"model": m2, "ema": e2}, o2)
    _same(m2.state_dict(), model.state_dict())
    _same(e2.state_dict(), ema.state_dict())
    a, b = opt.state_dict()["state"], o2.state_dict()["state"]
    assert sorted(a) == sorted(b) and all(torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"]) for i in a)


def test_crash_before_the_rename_leaves_no_checkpoint_resume_would_pick(tmp_path, monkeypatch):
    root, model, ema, opt = _world_of_one(tmp_path, sharded=True)  # step 3, complete

    def crash(*a, **k):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(ckpt, "_publish", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(root, 7, {"config": {}, "dcp": ["model"]}, sharded_state=sharded_state({"model": model}))
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000003"]
    assert ckpt.resume_checkpoint(root).name == "step_00000003"
    # a hard kill leaves its temp dir (shards written, no rename): never listed, never resumed from
    shutil.copytree(root / "step_00000003", root / ".tmp_step_00000009.somehost.1.abcd")
    assert ckpt.resume_checkpoint(root).name == "step_00000003"


def test_corrupt_exports_and_dcp_dirs_get_one_line_errors(tmp_path):
    root, *_ = _world_of_one(tmp_path, sharded=True)
    good = export_checkpoint(root, tmp_path / "good.safetensors")
    data = good.read_bytes()
    cases = {"truncated.safetensors": data[: len(data) - 100], "garbage.safetensors": b"not a safetensors file"}
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF  # inside the last tensor's data: only the digest notices
    cases["flipped.safetensors"] = bytes(flipped)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
    for name, why in [
        ("truncated", "unreadable export"),
        ("garbage", "unreadable export"),
        ("flipped", "digest"),
        ("foreign", "not a latentwm export"),
    ]:
        with pytest.raises(CheckpointError, match=why) as e:
            ckpt.load_world_model(tmp_path / f"{name}.safetensors")
        assert "\n" not in str(e.value) and f"{name}.safetensors" in str(e.value)
    step = ckpt.latest_checkpoint(root)
    (step / "dcp" / ".metadata").unlink()
    with pytest.raises(CheckpointError, match="metadata is missing"):
        load_sharded(step, {"ema": DynamicsModel(_cfg(tmp_path).model)})


def test_export_command_and_config(tmp_path, capsys):
    root, _, ema, _ = _world_of_one(tmp_path, sharded=True)
    out = tmp_path / "cli" / "model.safetensors"
    assert cli.main(["export", "--checkpoint", str(root.parent), "--out", str(out)]) == 0
    assert "exported ema weights" in capsys.readouterr().out
    weights, facts = read_export(out)
    _same(weights, ema.state_dict())
    with pytest.raises(ConfigError, match="export.out"):
        ExportConfig(out="model.pt")
    assert cli.main(["export", "--checkpoint", str(tmp_path / "nothing"), "--out", str(out)]) == 2


def test_ranks_share_the_hashing_and_agree_on_a_damaged_checkpoint(tmp_path):
    """Distributed resume: rank r of W hashes every W-th file, so only one rank sees a flipped byte; the agreement
    (a collective in Loop.resume, a function here) makes every rank skip the checkpoint alike."""
    root, model, ema, opt = _world_of_one(tmp_path, sharded=True)
    ckpt.save_checkpoint(root, 5, {"config": {}, "dcp": ["ema"]}, sharded_state=sharded_state({"ema": ema}))
    newest = ckpt.step_dir(root, 5)
    shard = newest / "dcp" / "__0_0.distcp"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size: only a hash notices
    shard.write_bytes(bytes(raw))
    caught = []
    for r in range(2):
        try:
            ckpt.verify(newest, part=(r, 2))
            caught.append(False)
        except CheckpointError:
            caught.append(True)
    assert sorted(caught) == [False, True]  # exactly one rank hashed the shard
    # two "ranks" as threads; agree = the all-reduce of their verdicts, round by round
    votes, barrier, picked = [[], []], threading.Barrier(2, timeout=60), [None, None]

    def rank(r):
        def agree(ok):
            votes[r].append(ok)
            barrier.wait()
            both = votes[0][len(votes[r]) - 1] and votes[1][len(votes[r]) - 1]
            barrier.wait()
            return both

        picked[r] = ckpt.resume_checkpoint(root, part=(r, 2), agree=agree)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert [p.name for p in picked] == ["step_00000003", "step_00000003"]
    assert sorted(v[0] for v in votes) == [False, True] and votes[0][1] and votes[1][1]
