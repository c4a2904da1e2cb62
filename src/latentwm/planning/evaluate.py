"""Push-T planning evaluation: DINO-WM's goal protocol, the planners and two baselines on the same goals and seeds.

Goals (DINO-WM, `goal_source: dset`): goal i picks a held-out episode (the training run's own split: the cache's
episode keys, `eval_fraction`, `seed`) and a start step t0, both uniformly at random from (seed, i); the goal is
the observation and state `goal_offset` env steps later (25 = 5 model steps with frame skip 5); the environment is
reset exactly to the start state (`PushTEnv.reset(state=...)`, which reproduces the recorded frame).

Methods: every planner in `planners` (receding-horizon MPC on the world model, `mpc.MPCPolicy`), `random` (random
actions from the planners' initial sampling distribution, same chunks and budget) and `dataset_actions` (replay the
episode's own `goal_offset` actions from the start state: the open-loop oracle, it produced the goal). Planners and
`random` get `max_replans` chunks of `exec_steps` model steps (default: a budget of twice the goal distance).

Scoring (DINO-WM's convention, see `mpc.py`): success = the Push-T test (block within 20 px, angle within π/9,
agent within 20 px of the goal state's) passes at the end of any executed chunk (the episode stops there);
final distance = `state_distance` (block px + agent px + angle degrees) of the last state.

Text goals (`PlanningOptions.goal_text`): the planners run again on the same starts and seeds with each goal given
as a sentence (planning/results.py: a held-out paraphrase of its Push-T description, or one given sentence); the
model imagines the goal (planning/imagine.py) and the episode is scored against the true goal state as above.
Both runs are also scored by the goal's words (`sentence_success_rate`: the change from the start does what the
sentence says, `pusht_language.sentence_fits`, at the end of any chunk), so random actions give the words' chance level.
Summaries, sentences and the table: planning/results.py.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentwm.config import BASELINE_NAMES, PLANNER_NAMES, ConfigError, ExperimentConfig, PlanConfig, PlanRunConfig
from latentwm.data.cache_integrity import same_encoder
from latentwm.data.clips import split_episodes, training_stats
from latentwm.data.episodes import NormStats, load_episode
from latentwm.data.latent_cache import LatentCache
from latentwm.data.proprio import proprio_stats_of
from latentwm.encoders.dino import DinoEncoder
from latentwm.engine.checkpoint import load_world_model
from latentwm.engine.pairing import check_pairing
from latentwm.envs.pusht import PushTEnv, proprio_from_state
from latentwm.eval.visualize import save_gif, side_by_side
from latentwm.io.lock import writable_out_dir
from latentwm.model.dynamics import DynamicsModel
from latentwm.planning.base import bf16_is_fast
from latentwm.planning.imagine import text_encoder_for
from latentwm.planning.mpc import (
    ActionCodec,
    EpisodeGoal,
    LatentObserver,
    MPCOptions,
    MPCPolicy,
    RandomPolicy,
    ReplayPolicy,
    derive_seed,
    run_episode,
)
from latentwm.planning.proprio import ProprioProbe, resolve_probe
from latentwm.planning.results import (
    block_must_move,
    goal_texts,
    imagined_goal_facts,
    planning_table,
    summarize,
    summarize_text_goals,
)
from latentwm.planning.state_probe import STATE_PROBE_FILE, StateProbe


@dataclass
class WorldModelRun:
    """A trained dynamics model with what acting in an environment needs from its run: the config, the
    normalization statistics ({"latents": NormStats-dict, "datasets": {name: DatasetStats-dict}}), the frame skip,
    the encoder label its latents came from (None: not recorded) and, loaded from a checkpoint, the facts of what it
    was trained on (`check_pairing`'s state: path, encoder, cache_info, config)."""

    model: DynamicsModel
    exp: ExperimentConfig
    data_stats: dict
    frame_skip: int
    encoder_label: str | None = None
    facts: dict | None = None

    @classmethod
    def load(cls, checkpoint: str | os.PathLike, device="cpu") -> WorldModelRun:
        """A run folder or checkpoint: EMA weights, statistics and frame skip as saved."""
        model, exp, state = load_world_model(checkpoint, ema=True, device=device)
        return cls(
            model,
            exp,
            state["data_stats"],
            int(state.get("frame_skip") or exp.data.frame_skip),
            state.get("encoder"),
            {k: state.get(k) for k in ("path", "encoder", "cache_info", "config")},
        )

    @classmethod
    def from_cache(cls, model, exp: ExperimentConfig, cache_dir: str | os.PathLike | None = None) -> WorldModelRun:
        """A model in memory (e.g. the trainer's EMA) with the statistics of its latent cache, as its training
        normalized them (relative actions: the offsets' statistics)."""
        cache = LatentCache(cache_dir or exp.data.cache_dir)
        stats = dict(latents=cache.latent_stats.to_dict(), datasets=training_stats(cache, exp))
        return cls(model, exp, stats, exp.data.frame_skip, None)


@dataclass(frozen=True)
class PlanningOptions:
    """What is evaluated and how (beside the planner settings, PlanConfig)."""

    planners: tuple[str, ...] = PLANNER_NAMES
    baselines: tuple[str, ...] = BASELINE_NAMES
    num_goals: int | None = None
    """None: plan_cfg.num_goals."""
    seed: int | None = None
    """None: plan_cfg.seed."""
    max_replans: int | None = None
    """None: a budget of twice the goal distance, ceil(2 · goal_offset / (exec_steps · frame_skip))."""
    context: int | None = None
    """History frames the planner observes (None: the run's rollout.context)."""
    repeat_actions: bool = True
    num_videos: int = 2
    bf16: bool | None = None
    """Candidate rollouts under bf16 autocast (None: where it is fast, `bf16_is_fast`)."""
    goal_text: str = ""
    """Also run the planners with goals given as sentences on the same starts: "auto" (each goal's Push-T
    description, a held-out paraphrase) or one sentence for every goal; empty: image goals only."""
    text_goal_planners: tuple[str, ...] | None = None
    """The planners run toward text goals (None: all of `planners`)."""

    def __post_init__(self):
        unknown = (set(self.planners) | set(self.text_goal_planners or ())) - set(PLANNER_NAMES) | (
            set(self.baselines) - set(BASELINE_NAMES)
        )
        if unknown:
            raise ValueError(
                f"evaluate_planning: unknown methods {sorted(unknown)}; planners "
                f"{list(PLANNER_NAMES)}, baselines {list(BASELINE_NAMES)}"
            )
        if self.goal_text.strip() and not self.planners:
            raise ValueError("evaluate_planning: goal_text needs at least one planner (baselines ignore the goal)")


@dataclass(frozen=True)
class PlanningModels:
    """The learned models an evaluation uses beside the world model: the encoders that read observations and
    sentences, and the probes whose terms the planners add to the cost. None: each field's default below."""

    encoder: Any = None
    """None: `DinoEncoder` from the run's encoder config (checked against the encoder its latents came from); a
    DinoEncoder; or a callable frames (B, H, W, 3) uint8 -> (B, N, D) LayerNorm-ed latents without dataset
    statistics."""
    proprio_probe: ProprioProbe | str | os.PathLike | None = None
    """A `ProprioProbe` (or its file): planners add DINO-WM's proprio term (weight plan_cfg.proprio_weight); None:
    no proprio term."""
    state_probe: StateProbe | str | os.PathLike | None = None
    """A `StateProbe` (or its file): planners add its pose term on the last predicted frame toward each goal's state
    (weight plan_cfg.state_weight; with plan_cfg.visual_weight 0 the diagnosis "the learned model under a pose
    cost")."""
    text_encoder: Any = None
    """For options.goal_text, the sentence encoder (a TextEncoder or a function list[str] -> (U, E)); None:
    `text_encoder_for` the run's facts (the one its training cache used, verified)."""


@dataclass
class _Session:
    """Everything one evaluation resolved once: the planner settings, codec, observer and budget."""

    run: WorldModelRun
    cfg: PlanConfig
    opts: PlanningOptions
    codec: ActionCodec
    observer: LatentObserver
    context: int
    bf16: bool
    max_replans: int
    probe: ProprioProbe | None
    seed: int
    state_probe: StateProbe | None = None  # a cost term (plan.state_weight > 0)
    pose_reader: StateProbe | None = None  # the same probe as a measurement (imagined goals' poses), any weight

    @property
    def exec_steps(self) -> int:
        return self.cfg.executed_steps

    def policy(self, method: str, goal: PlanningGoal):
        """(policy, chunks) of a method on one goal."""
        if method in self.opts.planners:
            return MPCPolicy(
                self.run.model,
                self.observer,
                self.codec,
                self.cfg,
                MPCOptions(planner=method, context=self.context, bf16=self.bf16),
                proprio_probe=self.probe,
                state_probe=self.state_probe,
            ), self.max_replans
        if method == "random":
            return RandomPolicy(self.codec, self.cfg), self.max_replans
        return ReplayPolicy(goal.actions), 1


@dataclass
class PlanningGoal:
    index: int
    episode: str  # dataset/episode_id
    t0: int
    start_state: np.ndarray  # (7,)
    goal_state: np.ndarray  # (7,)
    start_frame: np.ndarray  # (H, W, 3) uint8
    goal_frame: np.ndarray  # (H, W, 3) uint8
    actions: np.ndarray  # (goal_offset, 2) the dataset's env actions from t0


def held_out_episodes(
    episodes_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    eval_fraction: float = 0.1,
    split_seed: int = 0,
) -> list[Path]:
    """Episode files of the held-out split, as `LatentClipDataset(split="eval")` chooses it (keys
    "dataset/episode_id" from the cache when given, else "pusht/<file stem>" for the files in episodes_dir)."""
    episodes_dir = Path(episodes_dir)
    if cache_dir is not None and (Path(cache_dir) / "cache.json").exists():
        keys = sorted({f"{e['dataset']}/{e['episode_id']}" for e in LatentCache(cache_dir).entries})
    else:
        keys = [f"pusht/{p.stem}" for p in sorted(episodes_dir.glob("episode_*.npz"))]
    held = sorted(split_episodes(keys, eval_fraction, split_seed))
    paths = [episodes_dir / f"{k.split('/', 1)[1]}.npz" for k in held]
    paths = [p for p in paths if p.exists()]
    if not paths:
        raise ValueError(
            f"no held-out episode file in {episodes_dir} (eval_fraction {eval_fraction}, {len(keys)} episodes)"
        )
    return paths


def sample_goals(episode_paths: list[Path], num_goals: int, goal_offset: int, seed: int = 0) -> list[PlanningGoal]:
    """Goal i: episode and start uniform from (seed, i) among episodes longer than goal_offset env steps (each file
    is read once). Episodes stored every k-th env step (frame_skip k) start on a stored frame and reach the goal
    goal_offset / k stored frames later (k must divide goal_offset); t0 is in env steps either way."""
    eps = {}
    for p in episode_paths:
        ep = load_episode(p)
        k = ep.frame_skip
        if goal_offset % k:
            raise ValueError(
                f"{p}: stored every {k} env steps, which does not divide plan.goal_offset = {goal_offset} env steps"
            )
        if ep.states is not None and ep.actions is not None and len(ep) > goal_offset // k:
            eps[p] = ep
    if not eps:
        raise ValueError(f"no held-out episode has states, actions and more than goal_offset = {goal_offset} steps")
    paths = sorted(eps)
    goals = []
    for i in range(num_goals):
        rng = np.random.default_rng([seed, i, 0x60A1])
        ep = eps[paths[int(rng.integers(len(paths)))]]
        assert ep.states is not None and ep.actions is not None  # only such episodes were kept
        k = ep.frame_skip
        off = goal_offset // k
        t0 = int(rng.integers(0, len(ep) - off))
        frames = ep.frames[ep.cameras[0]]
        assert isinstance(frames, np.ndarray)  # load_episode reads arrays (not a FrameSource)
        acts = ep.actions[t0 : t0 + off].astype(np.float64)
        goals.append(
            PlanningGoal(
                i,
                f"{ep.dataset}/{ep.episode_id}",
                t0 * k,
                ep.states[t0].copy(),
                ep.states[t0 + off].copy(),
                np.asarray(frames[t0]),
                np.asarray(frames[t0 + off]),
                acts.reshape(len(acts) * k, -1),
            )
        )
    return goals


def _video(frames: np.ndarray, goal_frame: np.ndarray, success_step: int | None, scale: int = 2) -> np.ndarray:
    """Executed frames beside the goal image, enlarged; a strip under the episode turns green once successful."""
    T = len(frames)
    ok = np.zeros(T, bool) if success_step is None else np.arange(T) >= success_step
    strip = np.where(ok[:, None, None, None], np.array([40, 180, 60], np.uint8), np.array([150, 150, 150], np.uint8))
    ep = np.concatenate([frames, np.broadcast_to(strip, (T, 6, frames.shape[2], 3))], 1)
    goal = np.broadcast_to(goal_frame[None], (T, *goal_frame.shape))
    out = side_by_side(ep, goal)
    return out.repeat(scale, 1).repeat(scale, 2)


def _session(run: WorldModelRun, cfg: PlanConfig, opts: PlanningOptions, models: PlanningModels) -> _Session:
    encoder, proprio_probe, state_probe = models.encoder, models.proprio_probe, models.state_probe
    datasets = run.data_stats["datasets"]
    ds = datasets.get("pusht") or next(iter(datasets.values()))
    if ds.get("actions") is None:
        raise ValueError("evaluate_planning: the run's dataset has no action statistics (trained without actions)")
    codec = ActionCodec.from_stats(
        ds["actions"],
        int(run.frame_skip),
        run.model.cfg.action_dim,
        repeat=opts.repeat_actions,
        relative=run.exp.data.relative_actions,
    )
    dev = next(run.model.parameters()).device
    if encoder is None:
        encoder = DinoEncoder.from_config(run.exp.encoder, device=dev)
        if run.encoder_label and not same_encoder(encoder.weights_label, run.encoder_label):
            raise ConfigError(
                f"evaluate_planning: the model was trained on latents of {run.encoder_label!r}, the "
                f"encoder config builds {encoder.weights_label!r}"
            )
    encode = encoder.encode if hasattr(encoder, "encode") else encoder
    observer = LatentObserver(
        encode,
        NormStats.from_dict(run.data_stats["latents"]),
        device=dev,
        proprio_stats=proprio_stats_of(run.data_stats, run.model.cfg),
    )
    if isinstance(proprio_probe, (str, os.PathLike)):
        proprio_probe = ProprioProbe.load(proprio_probe, device=dev)
    if isinstance(state_probe, (str, os.PathLike)):
        state_probe = StateProbe.load(state_probe, device=dev)
    if cfg.visual_weight == 0 and opts.planners and (state_probe is None or cfg.state_weight == 0):
        raise ValueError(
            "evaluate_planning: plan.visual_weight is 0, so the planners need a state probe "
            "(state_probe=...) and plan.state_weight > 0"
        )
    exec_steps = cfg.executed_steps
    max_replans = (
        max(1, math.ceil(2 * cfg.goal_offset / (exec_steps * codec.frame_skip)))
        if opts.max_replans is None
        else opts.max_replans
    )
    return _Session(
        run,
        cfg,
        opts,
        codec,
        observer,
        context=run.exp.rollout.context if opts.context is None else opts.context,
        bf16=bf16_is_fast(dev.type) if opts.bf16 is None else opts.bf16,
        max_replans=max_replans,
        probe=proprio_probe if proprio_probe is not None and cfg.proprio_weight > 0 else None,
        seed=cfg.seed if opts.seed is None else opts.seed,
        state_probe=state_probe if state_probe is not None and cfg.state_weight > 0 else None,
        pose_reader=state_probe,
    )


def planning_session(
    run: WorldModelRun, plan_cfg: PlanConfig, options: PlanningOptions | None = None, encoder=None
) -> _Session:
    """What an evaluation resolves once (the action codec, observer, replanning budget, seed) for other planners
    on the same protocol (the ladder's rungs); encoder as in `evaluate_planning`."""
    opts = options or PlanningOptions(planners=("cem",), baselines=())
    return _session(run, plan_cfg, opts, PlanningModels(encoder=encoder))


def evaluate_planning(
    run: WorldModelRun,
    episodes_dir: str | os.PathLike,
    plan_cfg: PlanConfig | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    options: PlanningOptions = PlanningOptions(),
    models: PlanningModels = PlanningModels(),
    out_dir: str | os.PathLike | None = None,
    log=print,
) -> dict:
    """Score the planners and baselines of `options` on the same Push-T goals; returns the metrics dict.

    run: the model and its statistics (`WorldModelRun.load(checkpoint)` or `.from_cache(model, exp)`). plan_cfg:
    default run.exp.plan. cache_dir: the training latent cache (its episode keys define the held-out split; default
    run.exp.data.cache_dir when it exists, else the episode files). models: the encoders and probes
    (`PlanningModels`; by default the run's encoder and no probe). out_dir: writes planning.json (the returned
    dict), planning_goals.json (per goal and method) and GIFs of the first `num_videos` goals for every method, and
    of each planner's first success, under videos/.

    Returns {"success_rate": {method: float}, "final_distance": {method: float}, "seconds_per_plan": {planner:
    float}, "num_goals", "videos": [paths relative to out_dir], "block_pos_diff" / "agent_pos_diff" /
    "angle_diff_deg": {method: float}, "block_static_goals", "start_success_rate", "start_distance",
    "success_step", "settings", "convention", "wall_time_s"}; methods = planners + baselines. With
    options.goal_text also "sentence_success_rate" {method: float} and "text_goal" (`results.summarize_text_goals`:
    the planners' success_rate, sentence_success_rate, final_distance, block/agent_pos_diff, angle_diff_deg,
    success_step, seconds_per_plan, imagine_seconds, imagined_goal_mse, start_goal_mse, goals with their sentences,
    settings), per-goal rows in planning_goals_text.json.
    """
    t_start = time.time()
    s = _session(run, plan_cfg or run.exp.plan, options, models)
    if cache_dir is None and Path(run.exp.data.cache_dir).is_dir():
        cache_dir = run.exp.data.cache_dir
    if run.facts is not None and cache_dir is not None and (Path(cache_dir) / "cache.json").exists():
        check_pairing(run.facts, LatentCache(cache_dir).info, cache_dir)  # its episodes choose the held-out split
    paths = held_out_episodes(episodes_dir, cache_dir, run.exp.data.eval_fraction, run.exp.data.seed)
    goals = sample_goals(paths, options.num_goals or s.cfg.num_goals, s.cfg.goal_offset, s.seed)
    texts = goal_texts(s, goals, models.text_encoder, cache_dir) if options.goal_text.strip() else None
    methods = list(options.planners) + list(options.baselines)
    log(
        f"planning: {len(goals)} goals {s.cfg.goal_offset} env steps ahead from {len(paths)} held-out episodes; "
        f"{', '.join(methods)}; ≤ {s.max_replans} plans × {s.exec_steps} model steps; horizon {s.cfg.horizon}, "
        f"K = {s.cfg.sample_steps}; cost: {_cost_text(s)}"
    )
    out = Path(out_dir) if out_dir is not None else None
    words = None if texts is None else texts[0]  # image goals are scored by their words too, beside the image test
    rows, videos = _run_goals(s, goals, methods, out, log, words)
    res = summarize(s, goals, rows, methods, held_out=len(paths))
    if texts is not None:
        log(
            f"text goals ({'held-out paraphrases' if options.goal_text.strip() == 'auto' else 'given sentence'}, "
            f"text guidance {s.cfg.text_guidance:g}): the same starts and seeds"
        )
        text_rows, text_videos = _run_goals(
            s, goals, list(options.text_goal_planners or options.planners), out, log, words, texts[1]
        )
        res["text_goal"] = summarize_text_goals(s, goals, text_rows, texts[0], texts[2])
        videos += text_videos
    res.update(videos=videos, wall_time_s=time.time() - t_start)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "planning.json").write_text(json.dumps(res, indent=1))
        (out / "planning_goals.json").write_text(json.dumps(rows, indent=1, default=_json_default))
        if texts is not None:
            (out / "planning_goals_text.json").write_text(json.dumps(text_rows, indent=1, default=_json_default))
    return res


def _cost_text(s: _Session) -> str:
    terms = (
        []
        if s.cfg.visual_weight == 0
        else [("" if s.cfg.visual_weight == 1 else f"{s.cfg.visual_weight:g} × ") + "visual MSE"]
    )
    terms += [f"{s.cfg.proprio_weight:g} × proprio MSE (probe)"] if s.probe is not None else []
    if s.run.model.cfg.proprio_dim and s.cfg.proprio_weight:
        terms += [f"{s.cfg.proprio_weight:g} × proprio MSE (the model's predicted proprio)"]
    terms += [f"{s.cfg.state_weight:g} × pose error (state probe)"] if s.state_probe is not None else []
    return " + ".join(terms)


def _run_goals(
    s: _Session,
    goals: list[PlanningGoal],
    methods: list[str],
    out: Path | None,
    log,
    words: list[str] | None = None,
    texts: torch.Tensor | None = None,
) -> tuple[dict[str, list[dict]], list[str]]:
    """Every method on every goal, from the same start state and seed; GIFs of the first goals and of each
    planner's first success. words: goal i's sentence, scored beside the image test (`EpisodeGoal.sentence`).
    texts: (G, E) sentence embeddings: goal i is given as texts[i] instead of its image (the rows gain
    `imagined_goal_facts`; GIFs are named ..._text_...)."""
    tag = "" if texts is None else "_text"
    env = PushTEnv(image_size=goals[0].goal_frame.shape[0])
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    videos: list[str] = []
    shown_success: set[str] = set()
    try:
        for g in goals:
            line = []
            goal = EpisodeGoal(
                g.start_state,
                g.goal_state,
                g.goal_frame,
                proprio=proprio_from_state(g.goal_state),
                text=None if texts is None else texts[g.index],
                sentence=None if words is None else words[g.index],
            )
            for m in methods:
                policy, chunks = s.policy(m, g)
                with torch.random.fork_rng(devices=[]):
                    r = run_episode(
                        env,
                        policy,
                        goal,
                        chunks,
                        s.codec.frame_skip,
                        seed=derive_seed(s.seed, g.index),
                        record=out is not None,
                    )
                if texts is not None:
                    r.update(imagined_goal_facts(s.observer, policy, g, s.pose_reader))
                frames = r.pop("frames")
                first_success = m in s.opts.planners and r["success"] and m not in shown_success
                if out is not None and (g.index < s.opts.num_videos or first_success):
                    shown_success.update([m] if first_success else [])
                    name = f"videos/goal{g.index:02d}_{m}{tag}_{'success' if r['success'] else 'failure'}.gif"
                    save_gif(out / name, _video(frames, g.goal_frame, r["success_step"]), fps=10)
                    videos.append(name)
                rows[m].append({"goal": g.index, "episode": g.episode, "t0": g.t0, **r})
                said = "" if r["sentence_success"] is None else f" words {'✓' if r['sentence_success'] else '✗'}"
                line.append(f"{m} {'✓' if r['success'] else '✗'} {r['final_distance']:.0f}{said}")
            log(f"  goal {g.index:2d} ({g.episode} t0={g.t0}){tag.replace('_', ' ')}: " + " | ".join(line))
    finally:
        env.close()
    return rows, videos


def run_plan(cfg: PlanRunConfig) -> dict:
    """`latentwm plan`: load the run, resolve the proprio probe, evaluate, print the table."""
    writable_out_dir(cfg.out_dir)  # before loading anything: an unwritable out dir fails now, not after the work
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    run = WorldModelRun.load(cfg.checkpoint, device=device)
    probe = None  # a model with proprio channels predicts the proprio itself: no probe
    if cfg.plan.proprio_weight > 0 and cfg.planners and not run.model.cfg.proprio_dim:
        probe = resolve_probe(
            cfg.checkpoint, cfg.proprio_probe, cfg.cache_dir, cfg.out_dir, probe_cfg=cfg.probe, device=device
        )
    opts = PlanningOptions(
        planners=tuple(cfg.planners),
        baselines=tuple(cfg.baselines),
        max_replans=cfg.max_replans,
        context=cfg.context,
        repeat_actions=cfg.repeat_actions,
        num_videos=cfg.videos,
        bf16=None if cfg.bf16 == "auto" else cfg.bf16 == "on",
        goal_text=cfg.goal_text or "",
    )
    if cfg.compile:
        run.model.compile_sampling()
    assert run.facts is not None  # WorldModelRun.load records them
    text_encoder = text_encoder_for(run.facts, cfg.text_encoder, "plan.goal_text") if cfg.goal_text else None
    # a probe is a cost term at state weight > 0, and for text goals also the reader of the imagined goal's pose
    uses_probe = cfg.plan.state_weight > 0 or bool(cfg.goal_text)
    res = evaluate_planning(
        run,
        cfg.episodes_dir,
        cfg.plan,
        cache_dir=cfg.cache_dir,
        options=opts,
        models=PlanningModels(
            proprio_probe=probe,
            state_probe=_state_probe_path(cfg, required=cfg.plan.state_weight > 0) if uses_probe else None,
            text_encoder=text_encoder,
        ),
        out_dir=cfg.out_dir,
    )
    print(planning_table(res))
    print(f"planning.json, per-goal results and videos in {cfg.out_dir}")
    return res


def _state_probe_path(cfg: PlanRunConfig, required: bool = True) -> Path | None:
    """--state-probe: a path as given; 'auto': state_probe.safetensors next to the checkpoint (the run folder or
    its parents, where the demo saves it); none found: a ConfigError when `required` (the cost needs it), else None
    (only a measurement would have used it)."""
    if cfg.state_probe != "auto":
        return Path(cfg.state_probe)
    ck = Path(cfg.checkpoint)
    for d in (ck, ck.parent, ck.parent.parent):
        if (d / STATE_PROBE_FILE).exists():
            return d / STATE_PROBE_FILE
    if not required:
        return None
    raise ConfigError(
        f"plan: plan.state_weight > 0 needs a state probe and none is saved next to {ck}; pass "
        "--state-probe PATH (the demo writes <run>/train/state_probe.safetensors)"
    )


def _json_default(o):
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


__all__ = [
    "PlanningGoal",
    "PlanningModels",
    "PlanningOptions",
    "WorldModelRun",
    "evaluate_planning",
    "held_out_episodes",
    "planning_table",
    "run_plan",
    "sample_goals",
    "block_must_move",
]
