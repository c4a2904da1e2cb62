"""`latentwm sweep`: run a sweep's runs one after another (skipping done ones, resuming half-done ones), run exactly
one (`--only`), print one command per remaining run (`--emit-commands`), or aggregate (`--collect`).

A run's folder `<sweep>/<variant>/seed<k>/`:
    train/        an ordinary `latentwm train` run (train.out_dir; checkpoints/, best.pt, metrics.jsonl, tb/, its lock)
    eval/K<k>/    `latentwm eval` of the kept checkpoint with K denoising steps (metrics.json, plot)
    config.json   the resolved settings ({"experiment", "eval"}): a done run whose settings the sweep would now
                  change is refused, naming the fields, before anything runs
    status.json   running / failed (with the error) / done; error.txt holds a failed run's traceback
    eval.json     what the run measured (sweep/measure.py)
    done          written atomically last: the run is finished and is skipped from then on
The run folder is locked (io/lock.py) while a process works on it, so a scheduler's job and a local sweep never
run the same run twice at once; a failed run is retried by the next invocation.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import socket
import time
import traceback
from pathlib import Path

from latentwm.config import ConfigError, LatentwmError
from latentwm.config.sweep import SweepConfig, SweepEvalConfig
from latentwm.engine.checkpoint import list_checkpoints
from latentwm.io.files import read_json, write_json
from latentwm.io.lock import RunLock, RunLockedError
from latentwm.sweep.aggregate import report
from latentwm.sweep.measure import evaluate_run
from latentwm.sweep.spec import Run, SweepSpec, build_runs, find_run, spec_from_config
from latentwm.train.trainer import saved_config, train

DONE, STATUS, CONFIG, EVAL, ERROR, SPEC = "done", "status.json", "config.json", "eval.json", "error.txt", "sweep.json"
_LOCATION = {"experiment.train.out_dir"}  # where a run lives, not what it is: a moved sweep folder is the same sweep


class SweepRunsFailed(LatentwmError):
    """Runs of this invocation failed (each recorded in its folder and listed in results.md); exit code 2."""


def is_done(run_dir: Path) -> bool:
    return (run_dir / DONE).is_file()


def resolved(run: Run, ev: SweepEvalConfig) -> dict:
    """What config.json stores: the run's whole ExperimentConfig and the sweep's evaluation settings."""
    return {"experiment": run.config.to_dict(), "eval": dataclasses.asdict(ev)}


def config_diff(saved, now, prefix: str = "") -> list[str]:
    """'key: saved -> now' for every leaf that differs (lists and tuples compare equal), except _LOCATION."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return [
            d
            for k in sorted(set(saved) | set(now))
            if f"{prefix}{k}" not in _LOCATION
            for d in config_diff(saved.get(k), now.get(k), f"{prefix}{k}.")
        ]
    norm = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    return [] if norm(saved) == norm(now) else [f"{prefix.rstrip('.')}: {saved!r} -> {now!r}"]


def check_done_runs(runs: list[Run], ev: SweepEvalConfig) -> None:
    """Refuse (before anything runs) to go on with a sweep whose file now gives a done run other settings: its
    results would be mixed with runs of the new ones. Names the run, the fields and the way out."""
    for run in runs:
        if not is_done(run.dir):
            continue
        saved = read_json(run.dir / CONFIG, f"run settings of {run.name}", missing_ok=True)
        if saved is None:  # done before settings were recorded (a hand-made folder): nothing to compare
            continue
        saved = {"experiment": saved_config(saved.get("experiment", {})), "eval": saved.get("eval", {})}
        now = resolved(run, ev)
        if changed := config_diff(saved, now):
            shown = "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")
            raise ConfigError(
                f"sweep: run {run.name} is done with other settings than the sweep gives it now "
                f"({shown}). Restore the sweep file, or delete {run.dir} to rerun it, or use another "
                "--out-dir"
            )


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z")


def _train_and_evaluate(run: Run, spec: SweepSpec, device: str) -> dict:
    train_dir = Path(run.config.train.out_dir)
    resumed = bool(list_checkpoints(train_dir / "checkpoints"))
    t0 = time.monotonic()
    if run.trained_by is None:
        train(run.config)  # the same entry as `latentwm train` (train.resume is on: a half-done run continues)
    elif not is_done(run.trained_by.dir):
        raise ConfigError(
            f"run {run.name} evaluates the model of run {run.trained_by.name}, which is not done "
            "yet: run that one first (a local sweep runs it before; a scheduler retries this one)"
        )
    t1 = time.monotonic()
    res = evaluate_run(run.config, run.dir, spec.eval, device)
    t2 = time.monotonic()
    record = {
        "run": run.name,
        "variant": run.variant,
        "seed": run.seed,
        "resumed": resumed,
        "trained_by": run.trained_by.name if run.trained_by else None,
        "train_s": t1 - t0,
        "eval_s": t2 - t1,
        "wall_s": t2 - t0,
        **res,
    }
    write_json(run.dir / EVAL, record)
    write_json(run.dir / STATUS, {"state": "done", "finished": _now()})
    write_json(run.dir / DONE, {"finished": _now()})  # last: everything above is complete
    return record


def execute(run: Run, spec: SweepSpec, device: str = "auto") -> dict:
    """Train and evaluate one run unless it is done: {"run", "state": skipped | done | failed | trained, "error"}.
    A failure is recorded in the run folder (status.json, error.txt) and returned, not raised. Under torchrun every
    rank trains; rank 0 alone locks the folder, evaluates and writes the records. RunLockedError when another
    process holds the run."""
    if is_done(run.dir):
        return {"run": run.name, "state": "skipped"}
    if os.environ.get("RANK", "0") != "0":
        if run.trained_by is None:
            train(run.config)
        return {"run": run.name, "state": "trained"}
    with RunLock(run.dir, f"latentwm sweep ({run.name})"):
        if is_done(run.dir):  # finished by another process between the check above and taking the lock
            return {"run": run.name, "state": "skipped"}
        write_json(run.dir / CONFIG, resolved(run, spec.eval))
        write_json(
            run.dir / STATUS, {"state": "running", "started": _now(), "pid": os.getpid(), "host": socket.gethostname()}
        )
        (run.dir / ERROR).unlink(missing_ok=True)
        try:
            record = _train_and_evaluate(run, spec, device)
        except Exception as e:  # noqa: BLE001 — any failure of one run is recorded; the sweep goes on
            error = f"{type(e).__name__}: {' '.join(str(e).split())}"  # one line; error.txt has it all
            (run.dir / ERROR).write_text(traceback.format_exc())
            write_json(run.dir / STATUS, {"state": "failed", "error": error, "failed": _now()})
            return {"run": run.name, "state": "failed", "error": error}
    return {"run": run.name, "state": "done", "record": record}


def emit_commands(cfg: SweepConfig, runs: list[Run]) -> list[str]:
    """One command per run that is not done: this invocation's file and options plus `--only VARIANT/seedK`,
    started by cfg.launcher. Run them from the same working directory (paths are kept as given)."""
    args = [cfg.file]
    for flag, value in (("--preset", cfg.preset), ("--out-dir", cfg.out_dir), ("--seeds", cfg.seeds)):
        args += [flag, value] if value else []
    for s in cfg.set:
        args += ["--set", s]
    for v in cfg.variant:
        args += ["--variant", v]
    return [
        f"{cfg.launcher} sweep {' '.join(shlex.quote(a) for a in [*args, '--only', r.name])}"
        for r in runs
        if not is_done(r.dir)
    ]


def _run_local(spec: SweepSpec, runs: list[Run]) -> dict:
    """Every run in order (done ones skipped, a run held by another process left to it), then the aggregate."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            'sweep: under torchrun run one run per launch: `--emit-commands --launcher "torchrun '
            '... -m latentwm.cli"` prints them (each with --only)'
        )
    outcomes = []
    for i, run in enumerate(runs, 1):
        print(f"sweep {spec.name} [{i}/{len(runs)}] {run.name}", flush=True)
        try:
            outcomes.append(execute(run, spec))
        except RunLockedError as e:
            print(f"  skipped: {e}", flush=True)
            outcomes.append({"run": run.name, "state": "busy"})
            continue
        o = outcomes[-1]
        print(f"  {o['state']}" + (f": {o['error']}" if o.get("error") else ""), flush=True)
    summary = report(spec.out_dir)
    failed = [o for o in outcomes if o["state"] == "failed"]
    if failed:
        raise SweepRunsFailed(
            f"{len(failed)} of {len(runs)} runs failed (listed in {spec.out_dir / 'results.md'}): "
            + "; ".join(f"{o['run']}: {o['error']}" for o in failed)
        )
    return summary


def run_sweep(cfg: SweepConfig) -> dict:
    """`latentwm sweep`: --collect DIR aggregates; otherwise the sweep file is parsed and every run's config built
    and checked against done runs first, then --emit-commands prints, --only runs one run, or all run locally."""
    if cfg.collect:
        if not Path(cfg.collect).is_dir():
            raise ConfigError(f"sweep.collect: {cfg.collect} is not a folder")
        return report(Path(cfg.collect))
    if not cfg.file:
        raise ConfigError("sweep: give the sweep file (`latentwm sweep FILE`) or --collect DIR")
    spec = spec_from_config(cfg)
    runs = build_runs(spec)
    check_done_runs(runs, spec.eval)
    if os.environ.get("RANK", "0") == "0":
        write_json(spec.out_dir / SPEC, spec.to_dict())  # collect reads which runs to expect
    if cfg.emit_commands:
        lines = emit_commands(cfg, runs)
        print("\n".join(lines))
        return {"commands": lines}
    if cfg.only:
        run = find_run(runs, cfg.only)
        out = execute(run, spec)
        if out["state"] == "failed":
            raise SweepRunsFailed(f"run {run.name} failed: {out['error']} (traceback in {run.dir / ERROR})")
        print(
            f"sweep {spec.name}: {run.name} {'was already done' if out['state'] == 'skipped' else out['state']} "
            f"({run.dir})"
        )
        return out
    return _run_local(spec, runs)


__all__ = [
    "SweepRunsFailed",
    "check_done_runs",
    "config_diff",
    "emit_commands",
    "execute",
    "is_done",
    "resolved",
    "run_sweep",
]
