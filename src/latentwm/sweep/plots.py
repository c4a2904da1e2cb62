"""The sweep's plots: rollout error vs horizon per variant with ±std bands over seeds (one figure per K, the
model-free baselines dashed), and training loss vs step per variant (mean over seeds)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from latentwm.sweep.measure import loss_curve

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)


def _by_variant(done: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in done:
        out.setdefault(r["variant"], []).append(r)
    return out


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_rollout_errors(sweep_dir: Path, done: list[dict], ks: list[int]) -> list[Path]:
    """`rollout_error_K<k>.png` for every K: per variant the mean over seeds of the error per horizon, a band of ±
    one standard deviation (with 2+ seeds), and the copy-last / context-average baselines (dashed). `done`: run
    records with their eval.json as "eval"."""
    paths = []
    for k in ks:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        base = None
        for variant, runs in _by_variant(done).items():
            res = [r["eval"]["K"].get(str(k)) for r in runs]
            res = [x for x in res if x and x.get("model_error")]
            if not res:
                continue
            base = base or res[0]
            n = min(len(x["model_error"]) for x in res)
            errs = np.array([x["model_error"][:n] for x in res])  # (seeds, horizons)
            hs = np.array(res[0]["horizons"][:n])
            mean = errs.mean(0)
            (line,) = ax.plot(hs, mean, marker="o" if n < 30 else None, ms=3, label=f"{variant} (n={len(res)})")
            if len(res) > 1:
                std = errs.std(0, ddof=1)
                ax.fill_between(hs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        if base is not None:
            for key, label in (("copy_last_error", "copy-last frame"), ("context_average_error", "context average")):
                if base.get(key):
                    ax.plot(
                        base["horizons"],
                        base[key],
                        ls="--",
                        color="grey" if "copy" in key else "black",
                        lw=1,
                        label=label,
                    )
        ax.set(
            title=f"Rollout error, K = {k} (mean ± std over seeds)",
            xlabel="horizon (model steps)",
            ylabel="normalized latent MSE",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        paths.append(_save(fig, sweep_dir / f"rollout_error_K{k}.png"))
    return paths


def plot_training_curves(path: Path, done: list[dict]) -> Path:
    """Training loss vs step per variant: the mean over seeds at the steps every seed logged."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant, runs in _by_variant(done).items():
        if any(r["eval"].get("trained_by") for r in runs):  # evaluation-only: the curve of the variant it reuses
            continue
        curves = [dict(zip(*loss_curve(Path(r["dir"]) / "train"))) for r in runs]
        steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if steps:
            ax.plot(steps, [np.mean([c[s] for c in curves]) for s in steps], label=f"{variant} (n={len(curves)})")
    ax.set(title="Training loss (mean over seeds)", xlabel="step", ylabel="shortcut-forcing loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    return _save(fig, path)


__all__ = ["plot_rollout_errors", "plot_training_curves"]
