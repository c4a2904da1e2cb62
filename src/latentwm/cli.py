"""`latentwm <command>`: the command table and argument parsing — nothing else.

Every command is a frozen dataclass config (`latentwm.config`) parsed by tyro from the defaults of a preset
(`--preset NAME`), and a body that lives in the module of its concept. Users see one line
`latentwm <command>: <message>` for an error they can fix (`--debug` shows the traceback).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import tyro

from latentwm.config import (
    PRESETS,
    ConfigError,
    DemoConfig,
    EncodeConfig,
    EvalConfig,
    ExportConfig,
    GenerateConfig,
    ImagineConfig,
    LatentwmError,
    PlanRunConfig,
    PretrainEncoderConfig,
    VerifyConfig,
)
from latentwm.config import preset as get_full_preset
from latentwm.config.sweep import SweepConfig
from latentwm.data.sources.pusht import run_generate
from latentwm.data.verify import run_verify
from latentwm.demo import run_demo
from latentwm.encoders.encode import run_encode
from latentwm.io.lock import RunLock
from latentwm.planning.evaluate import run_plan
from latentwm.planning.imagine import run_imagine
from latentwm.rl.runner import run_rl
from latentwm.sweep.runner import run_sweep
from latentwm.train.decoder_trainer import run_train_decoder
from latentwm.train.encoder_pretrain import run_pretrain_encoder
from latentwm.train.evaluate import run_eval
from latentwm.train.export import run_export
from latentwm.train.trainer import train


@dataclass(frozen=True)
class Command:
    summary: str
    make_default: Callable[[str], object]  # preset name -> the command's default config
    run: Callable[[object], object]
    lock: bool = True
    """Hold the config's out dir (train.out_dir for train) for the whole command, before any data is read."""
    default_preset: str = "cpu"
    """The preset when --preset is not given ("": the command reads it from elsewhere, e.g. a sweep file)."""
    tyro_config: tuple = ()
    """tyro markers for the command's flags (e.g. UseAppendAction: a flag repeated adds values)."""


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "the embedded default, end to end on CPU (Push-T): generate → encode → decoder → train → "
        "roll out → plan → report",
        lambda p: DemoConfig(preset=p),
        run_demo,
    ),
    "generate": Command(
        "simulated Push-T episodes (goal-directed, random-target and random-walk policies)",
        lambda p: GenerateConfig(),
        run_generate,
    ),
    "encode": Command(
        "frames → DINO latents → cache shards (resumable, torchrun-parallel)",
        lambda p: EncodeConfig(encoder=get_full_preset(p).encoder),
        run_encode,
    ),
    "train": Command(
        "dynamics training with shortcut forcing (single process or torchrun)",
        lambda p: get_full_preset(p).experiment,
        train,
    ),
    "rollout": Command(
        "predict futures of held-out clips from their context and actions; side-by-side videos",
        lambda p: EvalConfig(videos=8, out_dir="runs/rollout"),
        run_eval,
    ),
    "plan": Command(
        "goal-conditioned MPC (CEM / MPPI / gradient) in the real Push-T env vs random and dataset actions",
        lambda p: PlanRunConfig(plan=get_full_preset(p).plan, probe=get_full_preset(p).probe),
        run_plan,
    ),
    "imagine": Command(
        "the future a sentence describes, imagined from a real context without actions (text-guided);"
        " GIF beside the real continuation and the goal latent",
        lambda p: ImagineConfig(),
        run_imagine,
    ),
    "eval": Command(
        "rollout error of a trained model vs ground truth and copy-last-frame; plot and videos",
        lambda p: EvalConfig(),
        run_eval,
    ),
    "train-decoder": Command(
        "RAE-style decoder from latents back to pixels (cache or online encoding; PSNR/SSIM, reconstruction grids)",
        lambda p: get_full_preset(p).decoder,
        run_train_decoder,
    ),
    "pretrain-encoder": Command(
        "a small DINOv2-architecture encoder, self-supervised on your training episodes "
        "(dino / masked-pixels / time-contrastive) → --encoder.name OUT/encoder",
        lambda p: PretrainEncoderConfig(),
        run_pretrain_encoder,
    ),
    "rl": Command(
        "offline RL in the frozen model: BC + reward heads, PMPO imagination training, gym-pusht eval",
        lambda p: get_full_preset(p).rl,
        run_rl,
    ),
    "sweep": Command(
        "ablation sweep: a preset + variants (config overrides) × seeds from a TOML file, run one after "
        "another (resumable) or emitted as commands for a scheduler; tables, plots, JSON (--collect DIR)",
        lambda p: SweepConfig(preset=p),
        run_sweep,
        lock=False,
        default_preset="",
        tyro_config=(tyro.conf.UseAppendAction,),
    ),
    "export": Command(
        "a checkpoint (full or sharded) → one .safetensors file (EMA weights + config and facts) that "
        "eval / plan load on one device",
        lambda p: ExportConfig(),
        run_export,
        lock=False,
    ),
    "verify": Command(
        "check a latent cache's shards against their checksums (exit 2 when one is damaged)",
        lambda p: VerifyConfig(),
        run_verify,
        lock=False,
    ),
}


def _usage() -> str:
    lines = [
        "usage: latentwm <command> [--preset NAME] [--section.field VALUE ...] [--print-config] [--debug]",
        "",
        "Latent world models on frozen DINO features.",
        "",
        "commands:",
    ]
    width = max(map(len, COMMANDS))
    lines += [f"  {name:<{width}} {cmd.summary}" for name, cmd in COMMANDS.items()]
    lines += [
        "",
        f"presets: {', '.join(PRESETS)} (default cpu)",
        "`latentwm <command> --help` lists every field of a command; --print-config prints the resolved config",
        "(preset and flags, validated) as JSON and runs nothing.",
    ]
    return "\n".join(lines)


def _pop_flag(args: list[str], flag: str, takes_value: bool, default=None):
    """(value, remaining args) for `--flag VALUE` / `--flag=VALUE` (or a bare `--flag` when takes_value is False)."""
    out, value, i = [], default, 0
    while i < len(args):
        a = args[i]
        if a == flag and not takes_value:
            value, i = True, i + 1
        elif a == flag:
            if i + 1 >= len(args):
                raise ConfigError(f"{flag} needs a value")
            value, i = args[i + 1], i + 2
        elif takes_value and a.startswith(flag + "="):
            value, i = a.split("=", 1)[1], i + 1
        else:
            out.append(a)
            i += 1
    return value, out


def _check_utf8(args: list[str]) -> None:
    """Arguments are sentences and paths that end up in tokenizers, logs and JSON: bytes that are not UTF-8 (the
    shell hands them over as surrogates) are refused here, not as a traceback deep inside."""
    for a in args:
        try:
            a.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(
                f"argument {ascii(a)} is not valid UTF-8; give sentences and paths as UTF-8 text"
            ) from None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name == "generate" and rest and rest[0] == "pusht":
        rest = rest[1:]  # `latentwm generate pusht`: Push-T is the one simulator so far
    if name == "verify" and rest and not rest[0].startswith("-"):
        rest = ["--cache-dir", *rest]  # `latentwm verify CACHE`
    if name == "sweep" and rest and not rest[0].startswith("-"):
        rest = ["--file", *rest]  # `latentwm sweep FILE`
    if name not in COMMANDS:
        print(f"latentwm: {name!r} is not a latentwm command\n\n{_usage()}", file=sys.stderr)
        return 2
    cmd = COMMANDS[name]
    debug, rest = _pop_flag(rest, "--debug", takes_value=False, default=False)
    show, rest = _pop_flag(rest, "--print-config", takes_value=False, default=False)
    try:
        _check_utf8(rest)
        preset, rest = _pop_flag(rest, "--preset", takes_value=True, default=cmd.default_preset)
        default = cmd.make_default(preset)
        cfg = tyro.cli(
            type(default),
            args=rest,
            default=default,
            prog=f"latentwm {name}",
            config=cmd.tyro_config,
            description=cmd.summary + (f" (defaults from preset {preset!r})" if preset else ""),
        )
        if show:  # the resolved config (preset + flags, validated), as JSON; nothing runs
            print(json.dumps(dataclasses.asdict(cfg), indent=1, default=str))
            return 0
        out = (cfg.train.out_dir if name == "train" else getattr(cfg, "out_dir", "")) if cmd.lock else ""
        # one writer per out dir; under torchrun rank 0 holds it for all ranks
        with RunLock(out or ".", f"latentwm {name}", enabled=bool(out) and os.environ.get("RANK", "0") == "0"):
            cmd.run(cfg)
    except (LatentwmError, OSError) as e:
        if debug:
            raise
        print(f"latentwm {name}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
