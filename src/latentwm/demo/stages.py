"""Stage caches for a pipeline of resumable stages: a stage's output is reused when its settings and its inputs'
identity match what made it, and redone (with everything that depends on it) when they do not.

Each stage owns a folder and records `stage.json` there: its name, its key (a hash of its settings and of its
inputs' identities), the settings themselves, the inputs' identities, whether it finished, and the identity of what
it made (new each time the stage is made). Because a key includes the identities of the stage's inputs, a changed
setting — or an input made again for any reason — changes the key of every stage downstream: they are redone, the
rest is reused. A stage that was interrupted (same key, not finished) keeps its folder, so its own resume logic
(checkpoints, finished shards, finished episodes) continues it; a stage whose key changed has its folder emptied
first (a checkpoint of other settings must not be resumed).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentwm.config.base import LatentwmError
from latentwm.io.files import read_json, write_json

RECORD = "stage.json"


def _canonical(obj: Any) -> Any:
    """JSON-able, order-independent form of settings (tuples → lists, Paths → str, dict keys sorted on dump)."""
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"stage settings must be JSON-able, got {type(obj).__name__}: {obj!r}")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@dataclass
class Stages:
    """The stages of one pipeline run. `run(name, folder, settings, inputs, make)` returns the stage's result:
    the recorded one when the stage is done with this key, else `make()`'s (recorded on success).

    redo: stage names to redo whatever their record says (their dependants follow through the keys' chain only if
    their output changes; `redo` names them explicitly when needed). The run keeps `reused` and `made`, in order,
    for the caller to print."""

    redo: frozenset[str] = frozenset()
    keys: dict[str, str] = field(default_factory=dict)  # stage -> the identity of its output
    reused: list[str] = field(default_factory=list)
    made: list[str] = field(default_factory=list)

    def key(self, name: str, settings: dict, inputs: tuple[str, ...]) -> str:
        missing = [i for i in inputs if i not in self.keys]
        if missing:
            raise RuntimeError(f"stage {name!r} needs {missing} to run first")
        blob = json.dumps(
            {"stage": name, "settings": _canonical(settings), "inputs": {i: self.keys[i] for i in inputs}},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def run(self, name: str, folder: Path, settings: dict, inputs: tuple[str, ...], make: Callable[[], dict]) -> dict:
        """The stage's result dict (JSON-able): reused from `folder/stage.json` when finished with this key, else
        made now. A redone stage (changed key, or named in `redo`) starts from an emptied folder."""
        folder = Path(folder)
        key = self.key(name, settings, inputs)
        rec_path = folder / RECORD
        try:
            rec = read_json(rec_path, f"the {name} stage's record", missing_ok=True)
        except LatentwmError as e:  # a damaged record cannot vouch for the folder: redo the stage
            print(f"  {e}", flush=True)
            rec = None
        if rec is not None and rec.get("key") == key and rec.get("done") and name not in self.redo:
            self.keys[name] = rec["output"]
            self.reused.append(name)
            print(
                f"  reused: {name} (finished {rec.get('finished', '?')}, settings and inputs unchanged; {folder})",
                flush=True,
            )
            return rec["result"]
        if folder.exists() and (rec is None or rec.get("key") != key or name in self.redo):
            why = self._why(name, rec, settings, inputs)
            print(f"  redo: {name} ({why}); emptying {folder}", flush=True)
            shutil.rmtree(folder)
        elif rec is not None:
            print(f"  resume: {name} (interrupted before; continuing in {folder})", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        base = {
            "stage": name,
            "key": key,
            "settings": _canonical(settings),
            "inputs": {i: self.keys[i] for i in inputs},
        }
        write_json(rec_path, {**base, "done": False})
        t = time.time()
        result = make()
        output = hashlib.sha256(f"{key}:{time.time_ns()}".encode()).hexdigest()[:16]
        write_json(
            rec_path,
            {
                **base,
                "done": True,
                "output": output,
                "seconds": round(time.time() - t, 1),
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                "result": _canonical(result),
            },
        )
        self.keys[name] = output
        self.made.append(name)
        return result

    def _why(self, name: str, rec: dict | None, settings: dict, inputs: tuple[str, ...]) -> str:
        if name in self.redo:
            return "asked to redo it"
        if rec is None:
            return "no record of what made this folder"
        old, new = _flat(rec.get("settings", {})), _flat(_canonical(settings))
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k, "<unset>") != new.get(k, "<unset>"))
        if changed:
            shown = ", ".join(f"{k}: {old.get(k, '<unset>')} → {new.get(k, '<unset>')}" for k in changed[:4])
            return f"settings changed: {shown}" + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        ups = [i for i in inputs if rec.get("inputs", {}).get(i) != self.keys[i]]
        return f"its input changed: {', '.join(ups)}" if ups else "its record is of another stage"


__all__ = ["RECORD", "Stages"]
