"""The sweep file and its overrides: parse, type-check, and build every run's ExperimentConfig before anything runs.

A sweep file (TOML, read with tomllib):

    [sweep]
    name = "ablation-pusht"          # required; the sweep folder defaults to runs/sweeps/<name>
    preset = "cpu"                   # the base preset (latentwm.config.get_preset)
    seeds = [0, 1]                   # training seeds: every variant runs once per seed
    out_dir = "runs/sweeps/x"        # optional

    [base]                           # overrides of every run: dotted keys (quoted, or as nested TOML keys)
    "train.steps" = 400
    model.k_max = 64

    [eval]                           # latentwm.config.SweepEvalConfig: context, horizon, horizons, sample_steps, ...
    sample_steps = [1, 4, 64]

    [variants.base]                  # an empty table is the base itself
    [variants.v-pred]
    "model.prediction" = "v"
    [variants.ctx09]                 # evaluation only: base's trained runs, sampled with other rollout.* settings
    from = "base"
    "rollout.tau_ctx" = 0.9

Keys are generic: `section.field` (or deeper, `plan.cem.population`) of ExperimentConfig, checked against the
dataclass fields that exist (an unknown one is a ConfigError naming the variant and the key, with the closest
names), values coerced to the field's type (a string from the command line is read as that type), and every run's
whole config is built — so the config classes' own checks run — before the first run starts.

Seeds: a run's seed sets train.seed (initial weights, noise, sample order) and nothing else. data.seed, which picks
the held-out episodes, stays the base's for every run, so every run is evaluated on the same clips and the numbers
and baselines compare; variants may not change the held-out split (data.seed, eval_fraction, cache, ...) either.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import tomllib

from latentwm.config import ConfigError, ExperimentConfig, get_preset
from latentwm.config.sweep import SweepConfig, SweepEvalConfig

SWEEP_OWNED = {"preset", "train.out_dir", "train.seed", "train.resume"}
"""Keys the sweep sets itself: the run folder, the seed, resume (always on: a half-done run continues)."""
SPLIT_KEYS = {
    "data.seed",
    "data.eval_fraction",
    "data.cache_dir",
    "data.mixture",
    "data.mixture_block",
    "data.online_encode",
    "data.episodes_dir",
    "data.source",
    "data.frame_skip",
}
"""Keys that decide the held-out clips: [base] may set them, a variant may not (its numbers would not compare)."""
FROM = "from"
"""The key of an evaluation-only variant: `from = "base"` evaluates that variant's trained runs (same seeds) with
this variant's rollout.* settings, e.g. the context's signal level rollout.tau_ctx, without training again."""
EVAL_ONLY_PREFIX = "rollout."
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_TOP = {"sweep", "base", "eval", "variants"}
_SWEEP_KEYS = {"name", "preset", "seeds", "out_dir"}


class UnknownKeyError(ConfigError):
    """An override names a config field that does not exist; `key` is the dotted key."""

    def __init__(self, message: str, key: str):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Run:
    """One run of a sweep: a variant at a seed, its full config and its folder `<sweep>/<variant>/seed<k>/`."""

    variant: str
    seed: int
    config: ExperimentConfig
    dir: Path
    trained_by: Run | None = None
    """An evaluation-only variant (`from = "<variant>"`): the run of that variant at the same seed whose trained
    model this run evaluates with its own rollout settings (no training of its own)."""

    @property
    def name(self) -> str:
        return f"{self.variant}/seed{self.seed}"


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep: name, base preset, seeds, [base] overrides, variants (name -> overrides), the evaluation,
    the sweep folder, and the command-line parts (for the commands --emit-commands prints)."""

    name: str
    preset: str
    seeds: tuple[int, ...]
    base: dict
    variants: dict
    eval: SweepEvalConfig
    out_dir: Path
    file: str = ""

    def to_dict(self) -> dict:
        """What `<sweep>/sweep.json` records (collect reads it: the runs to expect, the tables' columns)."""
        return {
            "name": self.name,
            "preset": self.preset,
            "seeds": list(self.seeds),
            "base": self.base,
            "variants": self.variants,
            "eval": dataclasses.asdict(self.eval),
            "file": self.file,
            "out_dir": str(self.out_dir),
        }

    def run_dir(self, variant: str, seed: int) -> Path:
        return self.out_dir / variant / f"seed{seed}"


def read_sweep_file(path: str) -> dict:
    """The TOML tables of a sweep file; a missing or malformed file is a ConfigError naming it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sweep file {p} does not exist")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"sweep file {p}: malformed TOML ({e})") from e
    if unknown := sorted(set(data) - _TOP):
        raise ConfigError(f"sweep file {p}: unknown table(s) {unknown}; expected {sorted(_TOP)}")
    return data


def flatten(table: dict, prefix: str = "") -> dict:
    """{"model": {"k_max": 64}, "train.steps": 4} -> {"model.k_max": 64, "train.steps": 4}."""
    out = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_assignment(text: str, where: str) -> tuple[str, str]:
    """ "key=value" -> (key, value as a string; coerce() reads it as the field's type)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{where}: expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def parse_variant(text: str) -> tuple[str, dict]:
    """ "name:k=v,k2=v2" -> (name, {k: v, k2: v2}); a comma starts a new assignment only before `key=`, so list
    values such as [1,2] keep theirs."""
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep:
        raise ConfigError(f"sweep.variant must be NAME:KEY=VALUE,... (or NAME: for the base), got {text!r}")
    parts = [p for p in re.split(r",(?=\s*[A-Za-z_][\w.]*\s*=)", rest) if p.strip()]
    return name, dict(parse_assignment(p, f"--variant {name}") for p in parts)


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def field_type(key: str, where: str, root=ExperimentConfig):
    """The declared type of field `key` (dotted) of dataclass `root`; UnknownKeyError naming the closest fields."""
    cls, parts = root, key.split(".")
    for i, part in enumerate(parts):
        hints = _hints(cls)
        if part not in hints:
            path = ".".join(parts[:i])
            known = [f"{path}.{n}" if path else n for n in hints]
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            if i == 0 and where.startswith("variant"):
                hint += '; a variant name with a dot must be quoted in its TOML header: [variants."a.b"]'
            raise UnknownKeyError(f"{where}: unknown key {key!r} ({cls.__name__} has no field {part!r}{hint})", key)
        tp = hints[part]
        if i < len(parts) - 1:
            if not dataclasses.is_dataclass(tp):
                raise UnknownKeyError(
                    f"{where}: unknown key {key!r} ({'.'.join(parts[: i + 1])} is a value, not a section)", key
                )
            cls = tp
    return tp


def coerce(value, tp, key: str, where: str):
    """`value` (a TOML value, or a string from the command line) as field type `tp`; ConfigError otherwise."""
    bad = ConfigError(f"{where}: {key} expects {_describe(tp)}, got {value!r}")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        raise ConfigError(f"{where}: {key} is a section; set its fields ({key}.FIELD = VALUE)")
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return coerce(value, a, key, where)
            except ConfigError:
                continue
        raise bad
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: {key} must be one of {list(args)}, got {value!r}")
    if origin is tuple:
        items = value
        if isinstance(value, str):
            items = [s.strip() for s in value.strip().strip("[]()").split(",") if s.strip()]
        if not isinstance(items, (list, tuple)):
            raise bad
        return tuple(coerce(v, args[0], key, where) for v in items)
    return _scalar(value, tp, bad)


def _scalar(value, tp, bad: ConfigError):
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, bool):
            return value
        raise bad
    if tp in (int, float):
        if isinstance(value, str):
            try:
                value = tp(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (tp is int and isinstance(value, float)):
            raise bad
        return tp(value)
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    return value


def _describe(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        return "a list of " + {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}.get(
            args[0], str(args[0])
        )
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def apply_overrides(cfg: ExperimentConfig, overrides: dict, where: str) -> ExperimentConfig:
    """`cfg` with dotted-key overrides, re-validated; every error names `where` (a variant, [base], --set)."""
    kw = {}
    for key, value in overrides.items():
        if key in SWEEP_OWNED:
            raise ConfigError(f"{where}: {key} is set by the sweep (run folder, seed, resume); remove it")
        kw[key.replace(".", "__")] = coerce(value, field_type(key, where), key, where)
    try:
        return cfg.replace(**kw)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from e


def spec_from_config(cfg: SweepConfig) -> SweepSpec:
    """The sweep a SweepConfig describes: its file, then the command line's --preset, --set, --variant, --seeds."""
    data = read_sweep_file(cfg.file)
    head = data.get("sweep", {})
    if unknown := sorted(set(head) - _SWEEP_KEYS):
        raise ConfigError(f"sweep file {cfg.file}: unknown key(s) {unknown} in [sweep]; expected {sorted(_SWEEP_KEYS)}")
    name = head.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"sweep file {cfg.file}: [sweep] name must be a folder-safe name, got {name!r}")
    base = flatten(data.get("base", {}))
    base.update(parse_assignment(s, "--set") for s in cfg.set)
    variants = {n: flatten(v) if isinstance(v, dict) else v for n, v in data.get("variants", {}).items()}
    variants.update(parse_variant(v) for v in cfg.variant)
    seeds = [s.strip() for s in cfg.seeds.split(",") if s.strip()] if cfg.seeds else head.get("seeds", [0, 1])
    where = f"sweep file {cfg.file} [eval]"
    ev = {
        k: coerce(v, field_type(k, where, SweepEvalConfig), f"eval.{k}", where)
        for k, v in flatten(data.get("eval", {})).items()
    }
    try:
        eval_cfg = SweepEvalConfig(**ev)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from e
    out = cfg.out_dir or head.get("out_dir") or f"runs/sweeps/{name}"
    return SweepSpec(
        name=name,
        preset=cfg.preset or head.get("preset", "cpu"),
        seeds=_seeds(seeds),
        base=base,
        variants=_variants(variants),
        eval=eval_cfg,
        out_dir=Path(out),
        file=cfg.file,
    )


def _seeds(seeds) -> tuple[int, ...]:
    try:
        out = tuple(coerce(s, int, "seeds", "sweep") for s in seeds)
    except (ConfigError, TypeError):
        raise ConfigError(f"sweep.seeds must be a list of integers >= 0, got {seeds!r}") from None
    if not out or any(s < 0 for s in out) or len(set(out)) != len(out):
        raise ConfigError(f"sweep.seeds must be a non-empty list of distinct integers >= 0, got {list(out)}")
    return out


def _variants(variants: dict) -> dict:
    for name, v in variants.items():
        if not _NAME.match(name):
            raise ConfigError(f"variant {name!r}: a name is letters, digits and _ . + - (it names a folder)")
        if not isinstance(v, dict):
            raise ConfigError(f"variant {name!r}: expected a table of KEY = VALUE overrides, got {v!r}")
    return variants or {"base": {}}


def build_runs(spec: SweepSpec) -> list[Run]:
    """Every run's config (preset → [base] and --set → variant → seed, folder, resume), built and cross-checked
    with the evaluation, in order variant by variant; the first problem is a ConfigError naming where it is."""
    base = apply_overrides(get_preset(spec.preset), spec.base, "[base]")
    runs, trained = [], {}
    for name, overrides in spec.variants.items():
        where = f"variant {name!r}"
        overrides = dict(overrides)
        src_name = overrides.pop(FROM, None)
        source = _eval_only_source(src_name, overrides, trained, where)
        if split := sorted(set(overrides) & SPLIT_KEYS):
            raise ConfigError(
                f"{where}: {', '.join(split)} would change the held-out clips, so its numbers would "
                "not compare with the other variants'; set it in [base]"
            )
        cfg = apply_overrides(base if source is None else source, overrides, where)
        _check_eval(cfg, spec.eval, where)
        for seed in spec.seeds:
            d = spec.run_dir(name, seed)
            src = trained[src_name, seed] if source is not None else None
            out = src.config.train.out_dir if src is not None else str(d / "train")
            run = Run(name, seed, cfg.replace(train__seed=seed, train__out_dir=out, train__resume=True), d, src)
            runs.append(run)
            if source is None:
                trained[name, seed] = run
        if source is None:
            trained[name] = cfg
    return runs


def _eval_only_source(source, overrides: dict, trained: dict, where: str) -> ExperimentConfig | None:
    """The config of the variant an evaluation-only variant reuses (None for a variant that trains): it must be a
    training variant declared before this one, and only evaluation-time settings (rollout.*) may differ — the
    model and its training are that variant's."""
    if source is None:
        return None
    if not isinstance(source, str) or source not in trained:
        raise ConfigError(
            f"{where}: from = {source!r} must name a variant that trains, declared above it "
            f"(known: {sorted(k for k in trained if isinstance(k, str))})"
        )
    if bad := sorted(k for k in overrides if not k.startswith(EVAL_ONLY_PREFIX)):
        raise ConfigError(
            f"{where}: an evaluation-only variant (from = {source!r}) may set only "
            f"{EVAL_ONLY_PREFIX}* keys (it reuses {source!r}'s training), got {bad}"
        )
    return trained[source]


def _check_eval(cfg: ExperimentConfig, ev: SweepEvalConfig, where: str) -> None:
    m = cfg.model
    if too_fine := [k for k in ev.sample_steps if k > m.k_max]:
        raise ConfigError(
            f"{where}: eval.sample_steps {too_fine} exceed model.k_max ({m.k_max}); raise "
            "model.k_max in [base] or drop them"
        )
    if ev.context > m.context_frames:
        raise ConfigError(f"{where}: eval.context ({ev.context}) must be <= model.context_frames ({m.context_frames})")


def find_run(runs: list[Run], only: str) -> Run:
    """The run `VARIANT/seedK` (or VARIANT/K) names; a ConfigError listing the runs otherwise."""
    variant, _, seed = only.partition("/")
    seed = seed.removeprefix("seed")
    for r in runs:
        if r.variant == variant and seed.isdigit() and r.seed == int(seed):
            return r
    raise ConfigError(f"sweep.only: no run {only!r} in this sweep; runs: {', '.join(r.name for r in runs)}")


__all__ = [
    "Run",
    "SPLIT_KEYS",
    "SWEEP_OWNED",
    "SweepSpec",
    "UnknownKeyError",
    "apply_overrides",
    "build_runs",
    "coerce",
    "field_type",
    "find_run",
    "flatten",
    "parse_assignment",
    "parse_variant",
    "read_sweep_file",
    "spec_from_config",
]
