"""`latentwm rl`: phase `heads` (BC + reward model), phase `imagine` (PMPO in the frozen model), phase `eval` (the
real environment), or `all` in sequence. Each phase checkpoints atomically into out_dir/<phase>/ and resumes from
its latest checkpoint; later phases start from the previous phase's final heads.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from latentwm.config import ConfigError, RLConfig
from latentwm.data.batch import collate
from latentwm.data.cache_integrity import same_encoder
from latentwm.data.clip_sets import model_clip_options
from latentwm.data.clips import LatentClipDataset
from latentwm.data.episodes import NormStats
from latentwm.data.proprio import proprio_stats_of
from latentwm.encoders.dino import DinoEncoder
from latentwm.engine import checkpoint as ckpt
from latentwm.engine.checkpoint import load_world_model
from latentwm.engine.logging import RunLogger
from latentwm.engine.loop import Checkpointing, Loop, NonFiniteGuard, Schedule, optimizer_step, sample_seed
from latentwm.engine.pairing import check_pairing
from latentwm.objectives import TrainStep, make_objective
from latentwm.planning.mpc import ActionCodec, LatentObserver
from latentwm.rl.bc import dataset_features, heads_loss
from latentwm.rl.evaluate import evaluate_agents
from latentwm.rl.heads import AgentHeads
from latentwm.rl.imagination import imagination_loss, imagine, trainable_parameters


class RLRun:
    def __init__(self, cfg: RLConfig):
        self.cfg = cfg
        self.device = torch.device(
            cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.model, self.exp, state = load_world_model(cfg.checkpoint, ema=True, device=self.device)
        self.model.requires_grad_(False).eval()
        self.out = Path(cfg.out_dir)
        if cfg.phase not in ("heads", "all"):
            self._load_finetuned()
        self.state = state
        d = self.exp.data
        self.data = LatentClipDataset(
            cfg.cache_dir or d.cache_dir, cfg.clip_len, "train", model_clip_options(self.exp, text=False)
        )
        check_pairing(state, self.data.cache.info, self.data.cache.path)  # heads on another encoder's latents
        if len(self.data) == 0:
            raise ConfigError(f"rl: no training clip of {cfg.clip_len} frames in {self.data.cache.path}")
        ds = state["data_stats"]["datasets"]
        stats = (ds.get("pusht") or next(iter(ds.values())))["actions"]
        if stats is None:
            raise ConfigError("rl: the model's dataset has no actions (trained action-free); RL needs actions")
        self.codec = ActionCodec.from_stats(
            stats,
            state.get("frame_skip") or d.frame_skip,
            self.exp.model.action_dim,
            repeat=False,
            relative=d.relative_actions,
        )
        self.low, self.high = (t.to(self.device) for t in self.codec.bounds())
        self.feature_dim = self.model.layout.registers * self.model.cfg.width
        if self.feature_dim == 0:
            raise ConfigError(
                "rl: the agent heads read the world model's register tokens (rl.heads.frame_features) "
                "and this model has none (model.registers = 0); train it with model.registers >= 1"
            )

    def new_heads(self):
        return AgentHeads(
            self.feature_dim,
            self.exp.model.action_dim,
            self.low,
            self.high,
            hidden=self.cfg.hidden,
            reward_steps=self.cfg.reward_steps,
        ).to(self.device)

    def batch(self, step: int):
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)  # resumable: data depends on the step
        idx = torch.randint(len(self.data), (self.cfg.batch_size,), generator=g).tolist()
        return collate([self.data[i] for i in idx], action_dim=self.exp.model.action_dim).to(self.device)

    # -------------------------------------------------------------------------------------------------------------
    def _load_finetuned(self) -> None:
        """Use the world model fine-tuned in phase heads, when it was."""

        last = ckpt.latest_checkpoint(self.out / "heads" / "checkpoints")
        if last is not None:
            st = ckpt.load_checkpoint(last, map_location=self.device)
            if "world_model" in st:
                self.model.load_state_dict(st["world_model"])
                print(f"rl: using the world model fine-tuned in phase heads ({last})")

    def _train(self, phase: str, steps: int, heads, params, loss_fn, model=None) -> None:
        """Run one phase on the loop core: out_dir/<phase>/ holds its checkpoints (resumed automatically) and logs.
        loss_fn(step) -> (loss, stats)."""
        c = self.cfg
        root = self.out / phase
        groups = [{"params": params}]
        if model is not None:  # fine-tuning the world model too, at a smaller learning rate
            groups.append({"params": list(model.parameters()), "lr": c.lr * c.world_model_lr_scale})
        opt = torch.optim.AdamW(groups, lr=c.lr, weight_decay=0.0)
        every = [p for g in groups for p in g["params"]]
        log = RunLogger(root, config=asdict(c))
        guard = NonFiniteGuard(f"rl {phase}", c.max_nonfinite, root / "checkpoints", "rl.max_nonfinite")

        def state_fn() -> dict:
            st = {
                "heads": heads.state_dict(),
                "optimizer": opt.state_dict(),
                "config": asdict(c),
                "nonfinite": guard.count,
            }
            return {**st, "world_model": model.state_dict()} if model is not None else st

        def load_fn(st: dict) -> None:
            heads.load_state_dict(st["heads"])
            if model is not None:
                model.load_state_dict(st["world_model"])
            opt.load_state_dict(st["optimizer"])
            guard.count = st.get("nonfinite", 0)

        def step_fn(step: int) -> dict:
            loss, stats = loss_fn(step)
            opt.zero_grad(set_to_none=True)
            if not guard.ok(loss.detach(), step, log):
                return {}
            loss.backward()
            if optimizer_step(opt, every, 1.0, guard, step, log=log) is None:
                return {}
            return {"loss": loss.detach(), **stats}

        loop = Loop(
            f"rl {phase}",
            root,
            Schedule(steps, c.log_every),
            Checkpointing(state_fn, load_fn, c.ckpt_every, keep_last=2),
            logger=log,
            log_prefix=f"{phase}/",
        )
        loop.fit(step_fn, resume=True, map_location=self.device)
        log.close()

    def final_heads(self, phase: str):
        last = ckpt.latest_checkpoint(self.out / phase / "checkpoints")
        if last is None:
            raise ConfigError(f"rl: phase {phase!r} has no checkpoint in {self.out / phase} (run it first)")
        heads = self.new_heads()
        heads.load_state_dict(ckpt.load_checkpoint(last, map_location=self.device)["heads"])
        return heads

    def phase_heads(self) -> None:
        heads = self.new_heads()
        heads.set_feature_stats(
            torch.cat([dataset_features(self.model, self.batch(-1 - i)).flatten(0, 1) for i in range(8)])
        )  # fixed from here on (a resume reloads them)
        ft = self.cfg.finetune_world_model
        if ft:
            self.model.requires_grad_(True).train()
            objective = make_objective(self.exp.objective, self.model.cfg)

        def loss_fn(step):
            b = self.batch(step)
            loss, stats = heads_loss(heads, dataset_features(self.model, b, grad=ft), b)
            if ft:  # keep it a world model: its own objective on the same clips, bootstrap on
                seeds = [sample_seed(self.cfg.seed, step * len(b.latents) + i) for i in range(len(b.latents))]
                wm, _ = objective(self.model, b.latents, b.conditions, b.valid, TrainStep(10**9, seeds=seeds))
                loss = loss + wm
                stats["world_model/loss"] = float(wm.detach())
            return loss, stats

        self._train(
            "heads", self.cfg.heads_steps, heads, list(heads.parameters()), loss_fn, model=self.model if ft else None
        )
        self.model.requires_grad_(False).eval()

    def phase_imagine(self) -> None:
        prior = self.final_heads("heads").requires_grad_(False)
        heads = copy.deepcopy(prior).requires_grad_(True)
        c = self.cfg
        C = min(c.context, c.clip_len)

        def loss_fn(step):
            b = self.batch(10**9 + step)  # a different stream from phase 1's
            gen = torch.Generator(device=self.device).manual_seed(c.seed * 7919 + step)
            traj = imagine(
                self.model,
                heads,
                b.latents[:, :C],
                b.actions[:, : C - 1],
                b.action_mask[:, : C - 1],
                c,
                generator=gen,
            )
            return imagination_loss(heads, prior, traj, c, policy_weight=float(step >= c.value_warmup))

        self._train("imagine", c.imagine_steps, heads, trainable_parameters(heads), loss_fn)

    def phase_eval(self) -> dict:
        policies = {"bc": self.final_heads("heads")}
        if (self.out / "imagine" / "checkpoints").is_dir():
            policies["pmpo"] = self.final_heads("imagine")
        encoder = DinoEncoder.from_config(self.exp.encoder, device=self.device)
        if (trained := self.state.get("encoder")) and not same_encoder(trained, encoder.weights_label):
            raise ConfigError(
                f"rl: the model was trained on latents of {trained!r}, its encoder config builds "
                f"{encoder.weights_label!r}"
            )
        observer = LatentObserver(
            encoder.encode,
            NormStats.from_dict(self.state["data_stats"]["latents"]),
            device=self.device,
            proprio_stats=proprio_stats_of(self.state["data_stats"], self.model.cfg),
        )
        t0 = time.time()
        res = evaluate_agents(self.model, policies, observer, self.codec, self.cfg)
        out = {
            "methods": res,
            "episodes": self.cfg.eval_episodes,
            "max_model_steps": self.cfg.eval_max_steps,
            "frame_skip": self.codec.frame_skip,
            "wall_time_s": time.time() - t0,
            "convention": "gym-pusht: success = goal-zone coverage > 95 % at any step; max_coverage = best "
            "coverage reached; return = sum of env rewards",
        }
        (self.out / "eval").mkdir(parents=True, exist_ok=True)
        (self.out / "eval" / "metrics.json").write_text(json.dumps(out, indent=1))
        return out


def rl_table(res: dict) -> str:
    lines = ["| policy | success rate | max coverage | return |", "|---|---|---|---|"]
    for m, r in res["methods"].items():
        lines.append(f"| {m} | {r['success']:.2f} | {r['max_coverage']:.3f} | {r['return']:.2f} |")
    return "\n".join(lines)


def run_rl(cfg: RLConfig) -> dict | None:
    run = RLRun(cfg)
    phases = ["heads", "imagine", "eval"] if cfg.phase == "all" else [cfg.phase]
    res = None
    for p in phases:
        print(f"rl: phase {p}")
        if p == "heads":
            run.phase_heads()
        elif p == "imagine":
            run.phase_imagine()
        else:
            res = run.phase_eval()
            print(rl_table(res))
    return res
