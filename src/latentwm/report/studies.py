"""Benchmark studies the demo's report brings in beside its own stages: the encoder table (which frozen encoder gives
a latent cost that resolves the block, `benchmarks/bench_encoder_pretrain.py`) and the data-scaling curve (planning
success against training trajectories beside DINO-WM's Table 5, `benchmarks/bench_data_scaling.py`).

Each study is a benchmark's output folder holding one JSON file its benchmark writes (ENCODERS_FILE, SCALING_FILE);
`latentwm demo --encoder-table DIR --data-scaling DIR` reads them before any stage runs, so a wrong folder fails at
once with one line naming the file, not after hours of work.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from latentwm.config import LatentwmError
from latentwm.report.sections import rate_or_px

ENCODERS_FILE = "encoders.json"
SCALING_FILE = "scaling.json"
SCALING_FIGURE = "data_scaling.png"

_ENCODER_COLUMNS = (
    ("nearest_block_within_20", "nearest frame: block within 20 px & 20°", "{:.2f}"),
    ("nearest_block_px", "nearest frame: block px (median)", "{:.0f}"),
    ("probe_block_px", "probe: block px", "{:.0f}"),
    ("rank_corr", "cost rank corr.", "{:.2f}"),
    ("rank_corr_block_moves", "rank corr., block must move", "{:.2f}"),
    ("cem_on_simulator_success", "CEM on the simulator", "{:.2f}"),
    ("cem_proprio_block_moves", "CEM on the simulator, latent + proprio cost, block must move", "{:.2f}"),
    ("effective_rank", "effective rank", "{:.1f}"),
)
"""metrics.json's encoder.table keeps these per row (plus the encoder's name and objective)."""
_SCALING_KEYS = (
    "trajectories",
    "steps",
    "goals",
    "block_moving_goals",
    "cem_success",
    "cem_success_joint",
    "cem_block_moves",
    "cem_block_px",
    "random_block_moves",
    "random_block_px",
    "sim_state_block_moves",
    "sim_latent_block_moves",
    "sim_latent_proprio_block_moves",
    "state_model_block_moves",
    "dino_wm_table5_success",
)
"""metrics.json's planning.data_scaling keeps these per size."""


def read_study(folder: Path, name: str, bench: str, expected: str) -> dict:
    """`folder`/`name`, the JSON file benchmarks/`bench` leaves in its output folder: a dict with a non-empty "rows"
    list, or a LatentwmError naming the file (missing, not JSON, or not what `expected` describes)."""
    f = Path(folder) / name
    if not f.is_file():
        raise LatentwmError(f"{f}: no {name} (a benchmarks/{bench} output folder has one)")
    try:
        study = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LatentwmError(f"{f}: not JSON ({e})") from None
    if not isinstance(study, dict) or not isinstance(study.get("rows"), list) or not study["rows"]:
        raise LatentwmError(f"{f}: expected {expected} as {bench} writes it")
    return study


def read_encoder_table(folder: Path) -> dict:
    """bench_encoder_pretrain's encoders.json: {episodes, steps_per_objective, goals, samples, rows: [...]}."""
    study = read_study(folder, ENCODERS_FILE, "bench_encoder_pretrain.py", "{steps_per_objective, rows: [...]}")
    if any(not isinstance(r, dict) or "encoder" not in r for r in study["rows"]):
        raise LatentwmError(f"{Path(folder) / ENCODERS_FILE}: every row needs an 'encoder' name")
    return study


def read_data_scaling(folder: Path) -> dict:
    """bench_data_scaling's scaling.json (and its figure's path under "figure", None when not drawn)."""
    study = read_study(folder, SCALING_FILE, "bench_data_scaling.py", "{steps, rows: [{trajectories, ...}, ...]}")
    if any(not isinstance(r, dict) or "trajectories" not in r for r in study["rows"]):
        raise LatentwmError(f"{Path(folder) / SCALING_FILE}: every row needs 'trajectories'")
    fig = Path(folder) / SCALING_FIGURE
    return {**study, "figure": str(fig) if fig.is_file() else None}


def _cell(v, fmt: str) -> str:
    return "–" if v is None else fmt.format(v)


def _label(r: dict) -> str:
    obj = r.get("objective")
    return r["encoder"] + (f", {obj}" if obj and obj != "-" else "")


def encoder_table_metrics(study: dict) -> dict:
    """metrics.json's encoder.table: the settings and, per encoder, the columns the table shows."""
    return {
        "steps_per_objective": study.get("steps_per_objective"),
        "goals": study.get("goals"),
        "rows": [{"encoder": _label(r), **{k: r.get(k) for k, _, _ in _ENCODER_COLUMNS}} for r in study["rows"]],
        "quick": study.get("quick", False),
    }


def encoder_table_section(study: dict, chosen: str | None = None) -> str:
    """Markdown: every candidate encoder scored on what the planning cost must resolve (the block), the best named:
    by CEM on the simulator under the latent + proprio cost on block-moving goals where every row has it (the cost
    a proprio model plans on: the agent is the proprio term's, the block the latent cost's; ties by rank
    correlation), else by rank correlation on block-moving goals; `chosen`: the demo's own encoder, said beside."""
    rows = study["rows"]
    by_cem = all(r.get("cem_proprio_block_moves") is not None for r in rows)
    key = "cem_proprio_block_moves" if by_cem else "rank_corr_block_moves"
    ranked = [r for r in rows if r.get(key) is not None]
    best = max(ranked, key=lambda r: (r[key], r.get("rank_corr_block_moves") or 0.0)) if ranked else None
    head = "| encoder | " + " | ".join(name for _, name, _ in _ENCODER_COLUMNS) + " |"
    quick = (
        ["", "**Quick run** (a few steps on tiny data): the numbers test the pipeline."] if study.get("quick") else []
    )
    lines = [
        "### Which encoder resolves the block? (the encoder table)",
        "",
        f"Candidates pretrained {study.get('steps_per_objective', '?')} steps each on the same episodes "
        f"(`benchmarks/bench_encoder_pretrain.py`) and scored with the simulator as the model, on "
        f"{study.get('goals', '?')} held-out goals: the training frame nearest by latent cost and its block error, a "
        "ridge probe of the block's position, the rank correlation of the latent cost with the true state distance "
        "(all goals, and those whose block must move), CEM on the simulator with the latent cost and with the latent "
        "+ proprio cost (DINO-WM's objective on the true agent state: what a model with proprio channels plans on), "
        "and the effective rank of the latents (≈ 1: collapsed).",
        *quick,
        "",
        head,
        "|---" * (len(_ENCODER_COLUMNS) + 1) + "|",
        *(
            f"| {_label(r)} | " + " | ".join(_cell(r.get(k), fmt) for k, _, fmt in _ENCODER_COLUMNS) + " |"
            for r in rows
        ),
        "",
    ]
    if best is not None:
        what = (
            "Best CEM on the simulator under the latent + proprio cost where the block must move"
            if by_cem
            else "Best cost ranking where the block must move"
        )
        said = f"{what}: **{_label(best)}** ({best[key]:.2f})"
        runner = max((r for r in ranked if r is not best), key=lambda r: r[key], default=None)
        n = best.get("block_moving_goals")
        if by_cem and runner is not None and n:
            # a success rate over n goals: one binomial standard error of the difference of two such rates
            se = math.sqrt(sum(p * (1 - p) for p in (best[key], runner[key])) / n)
            if best[key] - runner[key] <= 2 * se:  # a tie too
                said += f", within noise of {_label(runner)} ({runner[key]:.2f}; ± {se:.2f} over {n} goals)"
        lines.append(said + (f"; this demo ran with `{chosen}`." if chosen else "."))
    return "\n".join(lines)


def data_scaling_metrics(study: dict) -> dict:
    """metrics.json's planning.data_scaling: per size, success (all goals, DINO-WM's joint test, block-moving goals),
    block error beside random actions', the ladder's rungs on block-moving goals and DINO-WM's Table 5 there."""
    return {"rows": [{k: r.get(k) for k in _SCALING_KEYS} for r in study["rows"]], "quick": study.get("quick", False)}


def data_scaling_section(study: dict, figure: str | None) -> str:
    """Markdown: the data-scaling table, smallest size first, with the curve (figure: its link, or None)."""
    rows = sorted(study["rows"], key=lambda r: r["trajectories"])
    f = rate_or_px
    table = "\n".join(
        f"| {r['trajectories']:,} | {f(r.get('cem_success'))} | {f(r.get('cem_block_moves'))} | "
        f"{f(r.get('cem_block_px'), True)} | {f(r.get('random_block_px'), True)} | "
        f"{f(r.get('sim_latent_block_moves'))} | {f(r.get('state_model_block_moves'))} | "
        f"{f(r.get('dino_wm_table5_success'))} |"
        for r in rows
    )
    steps = rows[0].get("steps", study.get("steps", "?"))
    quick = " **Quick run**: tiny sizes, not a measurement." if study.get("quick") else ""
    cols = (
        "| trajectories | CEM success | CEM, block must move | block px | random block px | encoder's ceiling, block "
        "must move | state model, block must move | DINO-WM Table 5 |"
    )
    return f"""### Data scaling (`benchmarks/bench_data_scaling.py`)

The same training steps ({steps}) at every size, so the data alone varies; CEM with the latent model on each size's
held-out goals, beside the ladder's rungs on the same goals (the simulator with the latent cost: the encoder's
ceiling; the state model: privileged) and DINO-WM's Table 5 at that size (pretrained DINOv2, its data and its CEM
budget: another encoder and other data, a reference, not a target).{quick}

{cols}
|---|---|---|---|---|---|---|---|
{table}
{f"{chr(10)}![data scaling]({figure})" if figure else ""}
"""


__all__ = [
    "ENCODERS_FILE",
    "SCALING_FIGURE",
    "SCALING_FILE",
    "data_scaling_metrics",
    "data_scaling_section",
    "encoder_table_metrics",
    "encoder_table_section",
    "read_data_scaling",
    "read_encoder_table",
    "read_study",
]
