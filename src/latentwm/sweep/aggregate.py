"""Aggregate a sweep folder: whatever runs have finished, per variant mean ± std over seeds (and n) of every metric;
results.csv (long format), results.md (tables), results.json (everything, one JSON), plots; failed and unfinished
runs listed with their error or state. `latentwm sweep --collect DIR` and the end of a local sweep call `report`.

Tables: rollout error (normalized latent MSE, the latents being normalized per channel by the cache's statistics)
at the [eval] horizons × K, with the copy-last-frame and context-average baselines as rows of their own — they do
not depend on the model, and every run evaluates the same held-out clips, so they are shown once (mean over runs;
`baselines.consistent` says whether the runs agree); the error of the mean of N samples likewise; the action
sensitivity (swapped − true actions) per K; and per variant the parameter count, training frames/s, final flow and
bootstrap losses and wall time.
"""

from __future__ import annotations

import csv
import json
import math
import os
import socket
from pathlib import Path

from latentwm.io.files import read_json, write_json
from latentwm.io.lock import RunLock
from latentwm.sweep.plots import plot_rollout_errors, plot_training_curves

_SCALARS = [
    ("params", "params"),
    ("frames_per_s", "frames/s"),
    ("loss_flow", "final flow loss"),
    ("loss_bootstrap", "final bootstrap loss"),
    ("loss", "final loss"),
    ("wall_s", "wall time (s)"),
]
_PER_HORIZON = [
    ("rollout_error", "model_error", "Rollout error (normalized latent MSE)"),
    ("mean_of_samples_error", "mean_of_samples_error", "Error of the mean of N samples"),
]
_BASELINES = [
    ("copy_last", "copy_last_error", "copy-last frame"),
    ("context_average", "context_average_error", "context average"),
]


def stat(values) -> dict:
    """{"mean", "std" (sample standard deviation, None with fewer than 2 values), "n"} of the non-None values."""
    v = [float(x) for x in values if x is not None]
    n = len(v)
    if not n:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(v) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n}


def _alive(holder: dict) -> str:
    """'running' when the lock holder is a live process of this host, else 'interrupted' (or 'running or
    interrupted' when it ran on another host, which this process cannot see)."""
    if holder.get("host") and holder["host"] != socket.gethostname():
        return f"running or interrupted (on {holder['host']})"
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except (OSError, ValueError, OverflowError):
        return "interrupted"
    return "running"


def run_state(run_dir: Path) -> dict:
    """{"state": done | failed | running | interrupted | not started, "error" (failed), "eval" (done)}."""
    if (run_dir / "done").is_file():
        return {"state": "done", "eval": read_json(run_dir / "eval.json", "run results")}
    status = read_json(run_dir / "status.json", "run status", missing_ok=True)
    if status is None:
        return {"state": "not started"}
    if status.get("state") == "failed":
        return {"state": "failed", "error": status.get("error", "unknown error")}
    return {"state": _alive(RunLock(run_dir, "").holder())}


def gather(sweep_dir: Path) -> tuple[dict, list[dict]]:
    """(the sweep's sweep.json or {}, one record per run: variant, seed, folder and run_state) — the runs sweep.json
    expects, then any other `<variant>/seed<k>` folder found (a variant since removed from the file)."""
    spec = read_json(sweep_dir / "sweep.json", "sweep description", missing_ok=True) or {}
    pairs = [(v, s) for v in spec.get("variants", {}) for s in spec.get("seeds", [])]
    found = sorted(
        (d.parent.name, int(d.name[4:])) for d in sweep_dir.glob("*/seed*") if d.is_dir() and d.name[4:].isdigit()
    )
    pairs += [p for p in found if p not in pairs]
    return spec, [
        {
            "variant": v,
            "seed": s,
            "run": f"{v}/seed{s}",
            "dir": str(sweep_dir / v / f"seed{s}"),
            **run_state(sweep_dir / v / f"seed{s}"),
        }
        for v, s in pairs
    ]


def _variant_summary(done: list[dict], ks: list[str], horizons: list[int]) -> dict:
    evals = [r["eval"] for r in done]
    out = {"n": len(done), "seeds": [r["seed"] for r in done]}
    for name, key, _ in _PER_HORIZON:
        out[name] = {f"K{k}": {f"h{h}": stat(_at(e, k, key, h) for e in evals) for h in horizons} for k in ks}
    out["action_sensitivity"] = {f"K{k}": stat(e["K"].get(k, {}).get("action_sensitivity") for e in evals) for k in ks}
    out.update({key: stat(e.get(key) for e in evals) for key, _ in _SCALARS})
    return out


def _at(ev: dict, k: str, key: str, h: int):
    """Run result `ev`'s `key` at horizon h for K = k (None when it was not measured)."""
    res = ev["K"].get(k) or {}
    values, hs = res.get(key), res.get("horizons") or []
    return values[hs.index(h)] if values is not None and h in hs else None


def _baselines(evals: list[dict], horizons: list[int]) -> dict:
    """Copy-last and context-average per horizon over every done run's first K (they do not depend on K)."""
    out, consistent = {}, True
    for name, key, _ in _BASELINES:
        out[name] = {}
        for h in horizons:
            vals = [v for e in evals if e["K"] and (v := _at(e, next(iter(e["K"])), key, h)) is not None]
            out[name][f"h{h}"] = stat(vals)
            consistent &= not vals or max(vals) - min(vals) <= 1e-5 * (1 + abs(max(vals)))
    out["consistent"] = consistent
    return out


def summarize(sweep_dir: Path, spec: dict, records: list[dict]) -> dict:
    """The one JSON of a sweep (results.json): per variant the per-metric statistics, the baselines, the runs that
    failed (with their error) and those not finished (with their state)."""
    done = [r for r in records if r["state"] == "done"]
    ev = spec.get("eval", {})
    ks = [str(k) for k in ev.get("sample_steps", [])] or sorted({k for r in done for k in r["eval"]["K"]}, key=int)
    horizons = list(ev.get("horizons", [])) or [
        h
        for h in (1, 4, 8, 16)
        if any(h in (r["eval"]["K"][k].get("horizons") or []) for r in done for k in r["eval"]["K"])
    ]
    order = list(dict.fromkeys(r["variant"] for r in records))
    variants = {}
    for v in order:
        mine = [r for r in done if r["variant"] == v]
        if mine:
            variants[v] = {"overrides": spec.get("variants", {}).get(v), **_variant_summary(mine, ks, horizons)}
    return {
        "sweep": spec.get("name", sweep_dir.name),
        "dir": str(sweep_dir),
        "preset": spec.get("preset"),
        "horizons": horizons,
        "sample_steps": [int(k) for k in ks],
        "done": len(done),
        "total": len(records),
        "variants": variants,
        "baselines": _baselines([r["eval"] for r in done], horizons),
        "failed": [{"run": r["run"], "error": r["error"]} for r in records if r["state"] == "failed"],
        "unfinished": [{"run": r["run"], "state": r["state"]} for r in records if r["state"] not in ("done", "failed")],
    }


def _fmt(s: dict, digits: int = 4) -> str:
    if s["mean"] is None:
        return "–"
    if digits == 0:  # a count (parameters): the same for every seed
        return f"{s['mean']:,.0f}" if not s["std"] else f"{s['mean']:,.0f} ± {s['std']:,.0f}"
    m = f"{s['mean']:.{digits}g}"
    return m if s["std"] is None else f"{m} ± {s['std']:.2g}"


def markdown(summary: dict) -> str:
    """results.md: a table per metric (rows: variants, then the baselines; cells mean ± std over seeds)."""
    ks, hs = summary["sample_steps"], summary["horizons"]
    cols = [f"K={k} h{h}" for k in ks for h in hs]
    lines = [f"# Sweep {summary['sweep']}: {summary['done']} of {summary['total']} runs done", ""]
    for name, _, title in _PER_HORIZON:
        lines += [f"## {title}: mean ± std over seeds", "", *_header(cols)]
        for v, s in summary["variants"].items():
            lines.append(_row([v, s["n"], *(_fmt(s[name][f"K{k}"][f"h{h}"]) for k in ks for h in hs)]))
        if name == "rollout_error":
            for b, _, label in _BASELINES:
                row = summary["baselines"][b]
                lines.append(
                    _row([label, row[f"h{hs[0]}"]["n"] if hs else 0, *(_fmt(row[f"h{h}"]) for _ in ks for h in hs)])
                )
            if not summary["baselines"]["consistent"]:
                lines += ["", "Warning: the runs' baselines differ — they were not evaluated on the same clips."]
        lines.append("")
    lines += [
        "## Action sensitivity (swapped − true actions, mean over horizons)",
        "",
        *_header([f"K={k}" for k in ks]),
    ]
    lines += [
        _row([v, s["n"], *(_fmt(s["action_sensitivity"][f"K{k}"]) for k in ks)]) for v, s in summary["variants"].items()
    ]
    lines += ["", "## Training", "", *_header([t for _, t in _SCALARS])]
    lines += [
        _row([v, s["n"], *(_fmt(s[k], 0 if k == "params" else 4) for k, _ in _SCALARS)])
        for v, s in summary["variants"].items()
    ]
    if summary["failed"]:
        lines += ["", "## Failed runs", ""] + [f"- `{f['run']}`: {f['error']}" for f in summary["failed"]]
    if summary["unfinished"]:
        lines += ["", "## Unfinished runs", ""] + [f"- `{u['run']}`: {u['state']}" for u in summary["unfinished"]]
    return "\n".join(lines) + "\n"


def _header(cols: list[str]) -> list[str]:
    return [_row(["variant", "n", *cols]), _row(["---"] * (2 + len(cols)))]


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def csv_rows(summary: dict) -> list[list]:
    """results.csv, long format: variant, metric, K, horizon, mean, std, n (K / horizon empty where they do not
    apply; the baselines as variants of their own)."""
    rows = [["variant", "metric", "K", "horizon", "mean", "std", "n"]]
    for v, s in summary["variants"].items():
        for name, _, _ in _PER_HORIZON:
            rows += [
                [v, name, k, h, *_cells(s[name][f"K{k}"][f"h{h}"])]
                for k in summary["sample_steps"]
                for h in summary["horizons"]
            ]
        rows += [
            [v, "action_sensitivity", k, "", *_cells(s["action_sensitivity"][f"K{k}"])] for k in summary["sample_steps"]
        ]
        rows += [[v, key, "", "", *_cells(s[key])] for key, _ in _SCALARS]
    for b, _, _ in _BASELINES:
        rows += [[b, "rollout_error", "", h, *_cells(summary["baselines"][b][f"h{h}"])] for h in summary["horizons"]]
    return rows


def _cells(s: dict) -> list:
    return ["" if s["mean"] is None else s["mean"], "" if s["std"] is None else s["std"], s["n"]]


def report(sweep_dir: Path) -> dict:
    """Aggregate `sweep_dir` into results.{csv,md,json} and the plots; print the Markdown and, as the last stdout
    line, the JSON. Returns the summary."""
    sweep_dir = Path(sweep_dir)
    spec, records = gather(sweep_dir)
    summary = summarize(sweep_dir, spec, records)
    md = markdown(summary)
    (sweep_dir / "results.md").write_text(md)
    with open(sweep_dir / "results.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(csv_rows(summary))
    done = [r for r in records if r["state"] == "done"]
    summary["plots"] = [str(p) for p in plot_rollout_errors(sweep_dir, done, summary["sample_steps"])]
    summary["plots"].append(str(plot_training_curves(sweep_dir / "training_curves.png", done)))
    write_json(sweep_dir / "results.json", summary)
    print(md)
    print(json.dumps(summary))
    return summary


__all__ = ["csv_rows", "gather", "markdown", "report", "run_state", "stat", "summarize"]
