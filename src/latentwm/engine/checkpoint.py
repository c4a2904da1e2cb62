"""Atomic, verified checkpoints: never lose work, never load half a file.

Layout: `<root>/step_00001000/` holding `state.pt` (model, EMA, optimizer, scheduler, step, data position, config),
`rng_rank{r}.pt` (every rank's RNG states, so a resumed run draws the same noise) and `manifest.json` (size and
SHA-256 of every file), written last. Everything is first written to a temporary directory that is renamed into
place only when complete, so a crash mid-write leaves no directory that looks finished; a checkpoint damaged later
(truncated copy, disk error) fails its manifest check and `latest_checkpoint` falls back to the previous one.
Only `step_N` directories are checkpoints to resume from, list or prune; `best.pt` beside them (the weights of the
best held-out score, train/best.py) is a one-file checkpoint that `load_world_model` also loads.

Files are loaded with `torch.load(weights_only=True)` only: unpickling a crafted file runs arbitrary code, and a
recomputed manifest would not stop it. So everything saved is tensors and plain data (`plain_state` converts numpy
values and paths at save time, and refuses anything else by its key); RNG states are stored the same way.
Sharded (FSDP2, train.checkpoint_format "sharded"): model, EMA, optimizer in `dcp/` (each rank its shards, train/
sharded.py), `"dcp": [names]` in state.pt; each rank hashes its own files, rank 0 merges them into the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import secrets
import shutil
import socket
import time
import warnings
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np
import torch

from latentwm.config import ExperimentConfig
from latentwm.encoders.decoder import DecoderSpec, RAEDecoder
from latentwm.engine.export_file import is_export, read_export
from latentwm.engine.sharded import DCP_DIR, load_sharded_weights, save_sharded
from latentwm.engine.state_file import (
    CheckpointError,
    load_state_file,
)
from latentwm.engine.state_file import (
    load_file as _load,
)
from latentwm.engine.state_file import (
    save_file as _save_file,
)
from latentwm.io.files import fsync_dir as _fsync_dir
from latentwm.model.dynamics import DynamicsModel

_STEP_DIR = re.compile(r"^step_(\d{8})$")


def rng_state() -> dict:
    """Every RNG's state as tensors and plain numbers, so the file loads with `weights_only=True`."""
    version, internal, gauss_next = random.getstate()
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss_next],
        "numpy": {
            "kind": str(kind),
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_PLAIN = (str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device, torch.Size)


def plain_state(obj, where: str = "state"):
    """`obj` with numpy values and paths turned into tensors / numbers / strings; anything else that
    `torch.load(weights_only=True)` would refuse (a custom class) raises CheckpointError here, at save time, naming
    its key — rather than a checkpoint that cannot be loaded later."""
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN:
        return obj
    if type(obj) in (dict, OrderedDict) or isinstance(obj, defaultdict):
        out = {k: plain_state(v, f"{where}[{k!r}]") for k, v in obj.items()}
        return OrderedDict(out) if type(obj) is OrderedDict else out
    if type(obj) in (list, tuple, set):
        return type(obj)(plain_state(v, f"{where}[{i}]") for i, v in enumerate(obj))
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise CheckpointError(
        f"cannot save {where} of type {type(obj).__name__}: checkpoints hold only tensors and plain "
        "data (numbers, strings, lists, dicts), as they are loaded with weights_only=True"
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
_TMP_DIR = re.compile(r"^\.tmp_step_\d{8}(?:\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]+)?$")
STALE_TEMP_S = 24 * 3600  # a temp dir untouched this long is a crashed save wherever its writer ran


def _temp_name(step: int, pid: int | None = None, host: str | None = None) -> str:
    """`.tmp_step_N.<host>.<pid>.<random>`: unique per save, so two processes saving the same step never write into
    (or delete) each other's directory, and a leftover names the process that left it."""
    return f".tmp_step_{step:08d}.{host or _HOST}.{os.getpid() if pid is None else pid}.{secrets.token_hex(4)}"


def _agree_on_name(name: str, rank: int, world_size: int) -> str:
    """Rank 0's temp name on every rank. Rank 0 creates the directory and the others write their RNG files (and
    dcp shards) into it, so all must use one name; PIDs and hosts differ per rank, and a name derived from the
    environment (torchrun's run id, SLURM's job id) would repeat across restarts of the same job, so rank 0 draws
    it and broadcasts it (a collective: every rank calls save_checkpoint, as it always had to)."""
    if world_size == 1:
        return name
    import torch.distributed as tdist

    if not (tdist.is_available() and tdist.is_initialized()):
        raise CheckpointError(
            "save_checkpoint with world_size > 1 needs an initialized torch.distributed process "
            "group (the ranks agree on the temporary directory through it)"
        )
    cuda = tdist.get_backend() == "nccl"
    buf = torch.zeros(256, dtype=torch.uint8, device=f"cuda:{torch.cuda.current_device()}" if cuda else "cpu")
    if rank == 0:
        raw = name.encode()
        buf[: len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    tdist.broadcast(buf, src=0)
    return bytes(buf.cpu().tolist()).rstrip(b"\0").decode()


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there: rely on the age rule
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def _remove_stale_temps(root: Path) -> None:
    """Delete temp dirs of saves that crashed: their writer (a PID on this host) is gone, they carry no owner (the
    older `.tmp_step_N` naming), or they were untouched for STALE_TEMP_S (a writer on another host). A live
    writer's directory is left alone. Listing never sees them either way (`list_checkpoints` matches step_N only)."""
    for p in root.iterdir():
        m = _TMP_DIR.match(p.name)
        if m is None:
            continue
        try:
            age = time.time() - p.stat().st_mtime
        except OSError:
            continue
        gone = m["pid"] is None or (m["host"] == _HOST and not _pid_alive(int(m["pid"])))
        if gone or age > STALE_TEMP_S:
            shutil.rmtree(p, ignore_errors=True)


def step_dir(root: str | os.PathLike, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    state: dict,
    *,
    rank: int = 0,
    world_size: int = 1,
    barrier=lambda: None,
    keep_last: int = 3,
    sharded_state: dict | None = None,
) -> Path:
    """Write a checkpoint for `step` atomically; every rank calls this (rank 0 owns `state` and the rename).

    state: plain state (tensors, numbers) saved by rank 0. sharded_state: FSDP2 model/EMA/optimizer state dicts
    (engine/sharded.py `sharded_state`) saved collectively into dcp/, each rank its shards. Returns the final
    directory. A failed write (disk full) removes its temporary directory and raises CheckpointError naming it;
    the checkpoints already there are untouched.
    """
    root = Path(root)
    final = step_dir(root, step)
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(root)
    tmp = root / _agree_on_name(_temp_name(step) if rank == 0 else "", rank, world_size)
    try:
        if rank == 0:
            tmp.mkdir()
        barrier()
        _save_file(rng_state(), tmp / f"rng_rank{rank}.pt")
        if sharded_state is not None:
            save_sharded(sharded_state, tmp / DCP_DIR)
        if rank == 0:
            _save_file(plain_state({**state, "world_size": world_size}), tmp / "state.pt")
        hashed = _gather_hashes(_hash_own_files(tmp, rank), world_size)  # also the barrier: every rank's files done
        if rank == 0:
            _publish(tmp, final, step, world_size, hashed)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise CheckpointError(
                f"could not write checkpoint step {step} to {tmp}: {e}. The partial directory was "
                f"removed; earlier checkpoints in {root} are intact (free disk space?)"
            ) from e
        raise
    if rank == 0:
        prune(root, keep_last, protect=final)
    barrier()
    return final


def _hash_own_files(tmp: Path, rank: int) -> dict:
    """{relative name: {"bytes", "sha256"}} of the files this rank wrote: its RNG file and its DCP shards
    (`__<rank>_<i>.distcp`, FileSystemWriter's naming). Rank 0 hashes the rest at publication."""
    own = [tmp / f"rng_rank{rank}.pt", *sorted((tmp / DCP_DIR).glob(f"__{rank}_*.distcp"))]
    return {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in own if p.is_file()}


def _gather_hashes(mine: dict, world_size: int) -> dict:
    """Every rank's `_hash_own_files` merged (on every rank); a collective that doubles as the barrier after which
    all files exist."""
    if world_size == 1:
        return mine
    import torch.distributed as tdist

    parts: list = [None] * world_size
    tdist.all_gather_object(parts, mine)
    return {k: v for part in parts for k, v in part.items()}


def _publish(tmp: Path, final: Path, step: int, world_size: int, hashed: dict | None = None) -> None:
    """Manifest (written last, fsynced; files in `hashed` were hashed by the rank that wrote them), then the atomic
    rename of the finished directory into place."""
    hashed = hashed or {}
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {
        "step": step,
        "world_size": world_size,
        "files": {
            str(p.relative_to(tmp)): hashed.get(str(p.relative_to(tmp)))
            or {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in files
        },
    }
    with open(tmp / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step (e.g. final save after a periodic one)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    _KNOWN_GOOD[str(final)] = _fingerprint(final)


def verify(path: str | os.PathLike, full: bool = True, part: tuple[int, int] | None = None) -> None:
    """Raise CheckpointError unless every file listed in the manifest exists with its size and (full=True) hash.

    full=False reads no file data (manifest present, sizes right): it catches truncation and missing files cheaply.
    part=(rank, world_size): hash only every world_size-th file from the rank-th (sizes all), so the ranks of a
    resumed run share the reading instead of each hashing the whole checkpoint (`resume_checkpoint`'s agree).
    """
    path = Path(path)
    try:
        files = json.loads((path / "manifest.json").read_text())["files"]
        files = {str(k): (int(v["bytes"]), str(v["sha256"])) for k, v in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path}: manifest missing or unreadable ({e!r})") from e
    if not files or any(not (path / n).resolve().is_relative_to(path.resolve()) for n in files):
        raise CheckpointError(
            f"checkpoint {path}: its manifest lists no files or a file outside the checkpoint (damaged or crafted)"
        )
    for i, (name, (size, sha)) in enumerate(sorted(files.items())):
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path}: file {name} is missing")
        if f.stat().st_size != size:
            raise CheckpointError(
                f"checkpoint {path}: {name} has {f.stat().st_size} bytes, manifest says {size} (truncated?)"
            )
        if full and (part is None or i % part[1] == part[0]) and _sha256(f) != sha:
            raise CheckpointError(f"checkpoint {path}: {name} does not match its SHA-256 (corrupt)")
    if full and part is None:
        _KNOWN_GOOD[str(path)] = _fingerprint(path)


# Checkpoints this process wrote or fully verified -> (name, size, mtime) of their files then. `prune` trusts them
# while unchanged instead of hashing gigabytes at every save; explicit `verify` calls always hash.
_KNOWN_GOOD: dict[str, tuple] = {}


def _fingerprint(path: Path) -> tuple:
    try:
        return tuple(
            sorted(
                (str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns)
                for f in path.rglob("*")
                if f.is_file()
            )
        )
    except OSError:
        return ()


def _usable(path: Path) -> str | None:
    """None if the checkpoint verifies, else why not: the cheap check first, the hashes only when not known good."""
    try:
        verify(path, full=False)
        if _KNOWN_GOOD.get(str(path)) != _fingerprint(path):
            verify(path)
    except CheckpointError as e:
        return str(e)
    return None


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Finished checkpoint directories under root, oldest first (temporary ones are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name))


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest checkpoint that passes verification; damaged newer ones are reported and skipped."""
    for path in reversed(list_checkpoints(root)):
        try:
            verify(path)
            return path
        except CheckpointError as e:
            warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=2)
    return None


def resume_checkpoint(root: str | os.PathLike, part: tuple[int, int] | None = None, agree=None) -> Path | None:
    """The checkpoint to resume from: the newest that verifies (damaged newer ones are warned about and skipped);
    None when root holds no checkpoint at all. Ranks of a distributed run pass part=(rank, world_size) (each hashes
    its share of the files) and agree(ok) -> every rank's ok (a collective), so all pick the same checkpoint.

    Raises CheckpointError listing every checkpoint and why it failed when there are checkpoints but none verifies:
    starting over at step 0 beside them would silently discard the run (and, before `prune` protected new
    checkpoints, delete the new ones, which sorted as older).
    """
    ckpts, failures = list_checkpoints(root), []
    for path in reversed(ckpts):
        try:
            verify(path, part=part)
            why = None
        except CheckpointError as e:
            why = str(e)
        if (agree or (lambda ok: ok))(why is None):
            return path
        failures.append(why or f"checkpoint {path}: damaged (another rank's share of its files failed the hash)")
        warnings.warn(f"skipping damaged checkpoint: {failures[-1]}", stacklevel=2)
    if not ckpts:
        return None
    raise CheckpointError(
        f"cannot resume: none of the {len(ckpts)} checkpoints in {root} verifies:\n  "
        + "\n  ".join(failures)
        + "\nRestore them from a copy, or move them away to start over"
    )


def load_checkpoint(path: str | os.PathLike, rank: int = 0, map_location="cpu", verified: bool = False) -> dict:
    """Load `state.pt` (+ this rank's RNG state under key "rng") from a checkpoint directory, verified first unless
    `verified` (the caller just did, e.g. `resume_checkpoint`)."""
    path = Path(path)
    if not verified:
        verify(path)
    state = _load(path / "state.pt", map_location)
    rng = path / f"rng_rank{rank}.pt"
    state["rng"] = _load(rng) if rng.exists() else None
    state["path"] = path
    return state


def prune(root: str | os.PathLike, keep_last: int, protect: str | os.PathLike | None = None) -> None:
    """Keep the newest `keep_last` checkpoints that verify and delete the others, damaged ones always.

    `protect` (the checkpoint just written) is never deleted and counts toward keep_last, so damaged checkpoints of
    later steps (a run resumed behind them) can never push it, or the good ones before it, out.
    """
    keep = None if protect is None else Path(protect).name
    kept = 0
    for path in reversed(list_checkpoints(root)):
        if path.name == keep:
            kept += 1
            continue
        if kept < keep_last:
            why = _usable(path)
            if why is None:
                kept += 1
                continue
            warnings.warn(f"deleting damaged checkpoint: {why}", stacklevel=2)
        shutil.rmtree(path, ignore_errors=True)


def load_world_model(path: str | os.PathLike, ema: bool = True, device="cpu"):
    """(model, ExperimentConfig, state) from a checkpoint directory (full or sharded), the latest one under a run
    folder, a one-file checkpoint such as `<run>/checkpoints/best.pt` (the best held-out score's weights,
    train/best.py), or a `latentwm export` file (.safetensors).

    ema=True loads the EMA weights (what sampling uses); an export holds one set, chosen when it was written
    (state["weights"] says which). state holds the saved facts (data_stats, encoder, ...).
    """
    path = Path(path)
    if is_export(path):
        weights, state = read_export(path, device)
        if state["weights"] != ("ema" if ema else "model"):  # an export holds one set: say which one is used
            warnings.warn(f"{path} holds the {state['weights']} weights (exported so); using them", stacklevel=2)
        state["path"] = path
        return _build(state, weights, device, path), ExperimentConfig.from_dict(state["config"]), state
    if path.is_file():
        state = load_state_file(path, map_location=device)
    else:
        if not (path / "manifest.json").exists():
            found = latest_checkpoint(path / "checkpoints" if (path / "checkpoints").is_dir() else path)
            if found is None:
                raise CheckpointError(f"no complete checkpoint in {path}")
            path = found
        state = load_checkpoint(path, map_location=device)
    name = "ema" if ema else "model"
    sharded = name in (state.get("dcp") or ())
    if "config" not in state or not (sharded or name in state):  # e.g. a pretrain-encoder run or another file
        raise CheckpointError(
            f"{path} is not a world-model checkpoint (no {name} weights or config; it holds "
            f"{sorted(map(str, state))[:6]}): give a `latentwm train` run or checkpoint"
        )
    model = _build(state, None if sharded else state[name], device, path)
    if sharded:  # every shard read into one model (no process group needed)
        load_sharded_weights(path, model, name)
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:  # a run that diverged: numbers from these weights would all be NaN
        raise CheckpointError(
            f"{path}: the {name} weights hold NaN/inf in {len(bad)} tensors ({bad[0]}, ...); use an earlier checkpoint"
        )
    return model.eval().requires_grad_(False), ExperimentConfig.from_dict(state["config"]), state


def _build(state: dict, weights: dict | None, device, path: Path) -> DynamicsModel:
    """The DynamicsModel of state["config"] on `device`, with `weights` loaded (None: left to the caller)."""
    model = DynamicsModel(ExperimentConfig.from_dict(state["config"]).model).to(device)
    if weights is not None:
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:  # another model size
            raise CheckpointError(
                f"{path}: its weights do not fit its config's model ({str(e).splitlines()[0][:200]})"
            ) from e
    return model.eval().requires_grad_(False)


def load_decoder(path: str | os.PathLike, ema: bool = True, device="cpu") -> tuple[RAEDecoder, dict]:
    """(decoder in eval mode, saved state) from a `latentwm train-decoder` run folder (its latest complete checkpoint)
    or one checkpoint directory. ema=True loads the EMA weights (what the run's metrics are computed with)."""
    path = Path(path)
    if not (path / "manifest.json").exists():
        found = latest_checkpoint(path / "checkpoints" if (path / "checkpoints").is_dir() else path)
        if found is None:
            raise CheckpointError(
                f"decoder: no complete checkpoint in {path} (train one with `latentwm train-decoder`)"
            )
        path = found
    state = load_checkpoint(path, map_location=device)
    if "decoder_spec" not in state:
        raise CheckpointError(f"{path} is not a decoder checkpoint (no decoder_spec); a dynamics checkpoint?")
    dec = RAEDecoder(DecoderSpec(**state["decoder_spec"])).to(device)
    dec.load_state_dict(state["ema" if ema else "model"])
    return dec.eval().requires_grad_(False), state
