"""One prepared GPU check (issue 18): the device tests and the throughput figures of a GPU, in one command.

    bash benchmarks/gpu_check.sh            # installs the project, then runs this; at most ~8 minutes on an H100/H200
    python benchmarks/gpu_check.py [--quick] [--no-record] [--only a,b] [--skip-tests] [--budget-s 450]

Sections, in the order they run (each guarded: a failure is recorded in the JSON under its "error" and the others
still run; each has a wall-clock budget; on CUDA each runs in a child process that is killed at its budget, keeping
what it measured so far):
  tests        the device-agnostic tests on the device: LATENTWM_TEST_DEVICE=<device> pytest -m "uses_device and not
               cpu_only" over the model / layer / rollout / objective test files (KV-cache equivalence and causality
               in fp32 and bf16 autocast, backends agreeing, flex_attention really running, no graph breaks where
               torch.compile traces the model on the device)
  peak         bf16 matmul TFLOP/s measured here (8192³ on CUDA): the peak MFU is relative to
  attention    one attention layer (projections, QK-norm, RoPE, attention, output) forward + backward at `base`
               width, heads and token counts, bf16 autocast: eager (soft cap) vs flex_attention (compiled kernel,
               soft cap as score_mod) vs SDPA (no cap), on the space shape (B·T frames × S tokens) and the time
               shape (B·S slots × T frames, causal window)
  generation   KV-cached generation at `base`, batch 1, bf16 autocast: frames/s at K = 1 and 4 denoising steps with
               16 and 32 cached context frames (the time window raised to 33 so that 32 are really attended); a
               frame is 224 px → 16×16 DINOv2-B latent tokens (grouped 2×2: 64 model tokens + 6 special)
  planning     one CEM call at DINO-WM's settings (population 300, 30 elites, 30 iterations, horizon 5, K = 1) on the
               `small` preset after 4 observed frames: seconds per call (bf16 autocast on CUDA; with --plan-fp32
               also in fp32 if time is left)
  encoder      ViT-S/14 and ViT-B/14 DINOv2 (random weights: the real architectures, no downloads), 224 px uint8
               frames → latents through `DinoEncoder.encode` (bf16 autocast on CUDA): images/s
  train_small, train_base
               one shortcut-forcing optimizer step (flow-only loss, backward, grad clip, fused AdamW) at the `small`
               and `base` presets, bf16 autocast, eager vs torch.compile (the whole model, as train.compile does;
               --compile-scope blocks compiles each block instead): frames/s, tokens/s, peak memory, MFU = 3 ×
               analytic forward FLOPs (DynamicsModel.flops_per_frame) per second ÷ the measured bf16 peak; the first
               step's time (compilation included) is reported beside the steady-state one

After the sections, one verdict line per throughput target (TARGETS: base-preset training MFU >= 0.35, batch-1
K = 4 generation at 16 cached frames >= 20 frames/s, CEM 300 x 30 x 30 <= 3 s per call), read from the best row of
its section (eager or compiled, bf16 or fp32): met / NOT met / not measured (with the section's error), in the JSON
under "verdicts" and in the markdown section.

Random weights and random latents throughout (timing does not depend on them). `--quick`: tiny sizes on the CPU
(the `tiny` preset in the small and base roles, a tiny random ViT, CEM 32 × 4 × 3, torch.compile with the aot_eager
backend), under a minute on 2 cores: the test suite runs it so the script cannot rot; it writes the JSON but not
RESULTS.md. Everything is written as JSON to $OUT/gpu_check.json (OUT defaults to runs/gpu_check) after every
section, so a run that is cut short still leaves what it measured; the log goes to $OUT/gpu_check.log, pytest's
output to $OUT/pytest.log, and the markdown section appended to benchmarks/RESULTS.md also to $OUT/gpu_check.md.
The last stdout line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

ORDER = ["tests", "peak", "attention", "generation", "planning", "encoder", "train_small", "train_base"]
"""Cheap sections first; the two training sections (torch.compile) last, the base one taking what time is left."""

BUDGET_S = {
    "tests": 135,
    "peak": 25,
    "attention": 60,
    "generation": 70,
    "planning": 40,
    "encoder": 30,
    "train_small": 110,
    "train_base": 600,
}
"""Wall-clock seconds per section on a GPU (a child process is killed at its budget); unused time flows on."""
MIN_S = {
    "tests": 30,
    "peak": 8,
    "attention": 15,
    "generation": 12,
    "planning": 12,
    "encoder": 10,
    "train_small": 30,
    "train_base": 45,
}
"""Below this a section is skipped (with the reason recorded) rather than started."""
QUICK_BUDGET_S, QUICK_MIN_S = 60.0, 3.0
"""--quick: every section's nominal budget and minimum; under --quick no section is skipped or cut short for time
(tiny sizes: only the timing loops' own budgets bound them), so a busy machine gives the same sections."""

TEST_FILES = [
    "tests/test_dynamics.py",
    "tests/test_transformer.py",
    "tests/test_rollout.py",
    "tests/test_layers.py",
    "tests/test_objective.py",
    "tests/test_host_sync.py",
    "tests/test_compile_sampling.py",
    "tests/test_graph_breaks.py",
]


# ------------------------------------------------------------------------------------------------ plumbing


class Recorder:
    """A section's results: scalar fields plus `rows` (one dict per measurement). In a child process every
    update is written to `path` at once (atomically), so the parent keeps what was measured if it has to kill us."""

    def __init__(self, path: Path | None = None):
        self.data: dict = {"rows": []}
        self.path = path

    def update(self, **kw) -> None:
        self.data.update(kw)
        self._flush()

    def row(self, **kw) -> dict:
        self.data["rows"].append(kw)
        self._flush()
        print("  " + ", ".join(f"{k}={_fmt(v)}" for k, v in kw.items()), flush=True)
        return kw

    def _flush(self) -> None:
        if self.path is not None:
            _write_json(self.path, self.data)


@dataclasses.dataclass
class Ctx:
    args: argparse.Namespace
    device: torch.device  # noqa: F821
    quick: bool
    deadline: float  # time.monotonic() by which the section must be done

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(
    fn, ctx: Ctx, *, budget_s: float, min_reps: int = 3, max_reps: int = 50, warmup: int = 1
) -> tuple[float, int]:
    """Median wall seconds of fn() (device-synchronized) and the repeat count: at least `min_reps`, then more while
    `budget_s` and the section's deadline allow, at most `max_reps`."""
    for _ in range(warmup):
        fn()
    _sync(ctx.device)
    times: list[float] = []
    stop = time.monotonic() + min(budget_s, max(ctx.left() - 2.0, 0.0))
    while len(times) < max_reps and (len(times) < min_reps or time.monotonic() < stop):
        t = time.perf_counter()
        fn()
        _sync(ctx.device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), len(times)


def _peak_mem_gb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process max RSS (KiB on Linux) in GiB


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _amp(device):
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16)


def _preset(ctx: Ctx, role: str):
    """The experiment config playing `role` (small / base): the real preset, or `tiny` under --quick."""
    from latentwm.config import get_preset

    return get_preset("tiny" if ctx.quick else role)


def _plan_config(population: int, elites: int, iterations: int, horizon: int):
    """A PlanConfig for CEM with these sizes: flat fields, or the nested `cem` section of the newer config."""
    from latentwm.config import PlanConfig

    cfg = PlanConfig()
    if hasattr(cfg, "cem"):
        cem = dataclasses.replace(cfg.cem, population=population, elites=elites, iterations=iterations)
        return dataclasses.replace(cfg, cem=cem, horizon=horizon, planner="cem", sample_steps=1)
    return dataclasses.replace(
        cfg, population=population, elites=elites, iterations=iterations, horizon=horizon, planner="cem", sample_steps=1
    )


# ------------------------------------------------------------------------------------------------ sections


def sec_tests(ctx: Ctx, rec: Recorder) -> None:
    """pytest over the device-agnostic tests with LATENTWM_TEST_DEVICE set to this run's device."""
    out = Path(ctx.args.out)
    log = out / "pytest.log"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-v",
        "-p",
        "no:cacheprovider",
        "--durations=10",
        "-m",
        "uses_device and not cpu_only",
        *TEST_FILES,
    ]
    import importlib.util

    if ctx.device.type != "cpu" and importlib.util.find_spec("xdist") is not None:
        cmd[3:3] = ["-n", "4"]  # the GPU tests are mostly flex_attention compilations: run them 4 at a time
    env = {**os.environ, "LATENTWM_TEST_DEVICE": str(ctx.device), "PYTHONUNBUFFERED": "1"}
    rec.update(command=" ".join(cmd[1:]), device=str(ctx.device))
    print(f"  LATENTWM_TEST_DEVICE={ctx.device} {' '.join(cmd[1:])}  (log: {log})", flush=True)
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(ctx.left() - 3.0, 1.0))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
    text = log.read_text(errors="replace")
    counts = {
        k: int(n)
        for n, k in re.findall(
            r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)",
            text.splitlines()[-1] if text.strip() else "",
        )
    }
    counts = {("errors" if k == "error" else k): v for k, v in counts.items()}
    if rc is None:  # killed: no summary line; count the verbose per-test lines written so far
        for word, key in (("PASSED", "passed"), ("FAILED", "failed"), ("SKIPPED", "skipped"), ("ERROR", "errors")):
            counts[key] = len(re.findall(rf"(?:::\S+ {word}\b|\] {word} tests/)", text))
    failures = sorted({ln for ln in text.splitlines() if ln.startswith(("FAILED ", "ERROR "))})[:20]
    rec.update(
        rc=rc,
        seconds=time.monotonic() - t0,
        passed=counts.get("passed", 0),
        failed=counts.get("failed", 0),
        errors=counts.get("errors", 0),
        skipped=counts.get("skipped", 0),
        deselected=counts.get("deselected", 0),
        failures=failures,
    )
    rec.row(
        device=str(ctx.device),
        passed=counts.get("passed", 0),
        failed=counts.get("failed", 0),
        errors=counts.get("errors", 0),
        skipped=counts.get("skipped", 0),
        seconds=time.monotonic() - t0,
    )
    if rc is None:
        rec.update(error=f"pytest timed out after {time.monotonic() - t0:.0f} s (see pytest.log)")
    elif rc != 0:
        rec.update(error=f"pytest exited {rc}: " + ("; ".join(failures) or text.strip().splitlines()[-1][:300]))


def sec_peak(ctx: Ctx, rec: Recorder) -> None:
    """bf16 matmul throughput: the best of a few timed batches of n³ products."""
    import torch

    dev = ctx.device
    # CPUs without bf16 units (AMD EPYC: 2.7 s per 1024³ bf16 product) must fit the section's 25 s budget
    n = 8192 if dev.type == "cuda" else (512 if ctx.quick else 1024)
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16, generator=g)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16, generator=g)
    reps = 10 if dev.type == "cuda" else 2
    for _ in range(3):
        torch.mm(a, b)
    _sync(dev)
    best = float("inf")
    stop = time.monotonic() + min(5.0, max(ctx.left() - 2.0, 0.5))
    tries = 0
    while tries < 3 or (time.monotonic() < stop and tries < 10):
        t = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        _sync(dev)
        best = min(best, (time.perf_counter() - t) / reps)
        tries += 1
    info = {}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        info = dict(
            gpu=p.name,
            capability=f"{p.major}.{p.minor}",
            gpu_memory_gb=p.total_memory / 2**30,
            multiprocessors=p.multi_processor_count,
            cuda=torch.version.cuda,
        )
    rec.update(bf16_matmul_tflops=2 * n**3 / best / 1e12, n=n, **info)
    rec.row(what=f"bf16 matmul {n}³", tflops=2 * n**3 / best / 1e12, ms=best * 1e3)


def _train_step_fn(model, net, obj, opt, batch, device):
    import torch

    from latentwm.conditions import Conditions

    x, actions, mask, valid = batch

    def step():
        with _amp(device):
            loss, _ = obj(net, x, Conditions(actions, mask), valid)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sec_train(ctx: Ctx, rec: Recorder, role: str) -> None:
    """Training throughput of one preset, eager then torch.compile (the same weights and optimizer)."""
    import torch

    from latentwm.config import ObjectiveConfig
    from latentwm.model import DynamicsModel
    from latentwm.objectives.shortcut_forcing import ShortcutForcing

    exp = _preset(ctx, role)
    m, dev = exp.model, ctx.device
    B = 4 if ctx.quick else {"small": ctx.args.batch_small, "base": ctx.args.batch_base}[role]
    T = exp.data.clip_len
    torch.manual_seed(0)
    with torch.device(dev):  # initialized where it runs (272M parameters: seconds on a CPU)
        model = DynamicsModel(m)
    N, D, A = m.num_latent_tokens, m.frame_dim, m.action_dim
    batch = (
        torch.randn(B, T, N, D, device=dev),
        torch.randn(B, T, A, device=dev),
        torch.ones(B, T, dtype=torch.bool, device=dev),
        torch.ones(B, T, dtype=torch.bool, device=dev),
    )
    obj = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=0.0, bootstrap_start=0), m.k_max)  # flow-only: 3× fwd
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
    fwd_flops = B * sum(model.flops_per_frame(t) for t in range(T))
    S = model.tokens_per_frame
    rec.update(
        preset=exp.preset,
        role=role,
        params=model.num_parameters(),
        batch=B,
        clip_len=T,
        tokens_per_frame=S,
        attention=m.attention,
        softcap=m.softcap,
        fwd_gflop_per_step=fwd_flops / 1e9,
    )
    modes = ["eager"] if ctx.args.no_compile else ["eager", "compile"]
    for mode in modes:
        if mode == "compile" and ctx.left() < (10 if ctx.quick else 25):
            rec.update(compile_skipped=f"only {ctx.left():.0f} s left")
            continue
        net, label = model, mode
        if mode == "compile" and ctx.args.compile_scope == "blocks":  # regional: each block compiled, reused
            model.transformer.blocks = torch.nn.ModuleList(
                torch.compile(b, backend=ctx.args.compile_backend) for b in model.transformer.blocks
            )
            label = f"compile ({ctx.args.compile_backend}, per block)"
        elif mode == "compile":  # the whole model, as the trainer's train.compile does
            net = torch.compile(model, backend=ctx.args.compile_backend)
            label = f"compile ({ctx.args.compile_backend})"
        step = _train_step_fn(model, net, obj, opt, batch, dev)
        _reset_peak(dev)
        rec.update(
            last_phase=f"{mode}: first step (compiles)",
            last_phase_budget_left_s=None if ctx.quick else round(ctx.left(), 1),
        )
        t0 = time.perf_counter()
        step()  # includes compilation (flex kernels in eager mode on CUDA, the whole model with torch.compile)
        _sync(dev)
        first = time.perf_counter() - t0
        t, n = _time(step, ctx, budget_s=2.0 if ctx.quick else 8.0, min_reps=3, max_reps=30, warmup=1)
        rec.row(
            preset=exp.preset,
            mode=label,
            batch=B,
            step_s=t,
            frames_per_s=B * T / t,
            tokens_per_s=B * T * S / t,
            model_tflops_per_s=3 * fwd_flops / t / 1e12,
            peak_mem_gb=_peak_mem_gb(dev),
            first_step_s=first,
            reps=n,
        )
        rec.update(last_phase=f"{mode}: done")
    from latentwm.model import layers

    rec.update(flex_fell_back=dev.type in layers._flex_broken)


def _base_attention_shapes(ctx: Ctx):
    """(model config, clips B, frames T, tokens per frame S) at the base size (tiny under --quick)."""
    import torch

    from latentwm.model import DynamicsModel

    exp = _preset(ctx, "base")
    with torch.device("meta"):
        S = DynamicsModel(exp.model).tokens_per_frame
    B = 2 if ctx.quick else ctx.args.batch_base
    return exp, B, exp.data.clip_len, S


def sec_attention(ctx: Ctx, rec: Recorder) -> None:
    """One attention layer fwd + bwd per backend on the space and the time shapes of a base training batch."""
    import torch

    from latentwm.model import layers

    exp, B, T, S = _base_attention_shapes(ctx)
    mc, dev = exp.model, ctx.device
    W, E = mc.width, mc.head_dim
    g = mc.latent_grid // mc.patch_group
    special = S - g * g
    idx = torch.arange(g * g, device=dev)
    zero = torch.zeros(special, dtype=idx.dtype, device=dev)
    space_rope = layers.rope_2d(torch.cat([zero, idx // g + 1]), torch.cat([zero, idx % g + 1]), E, mc.rope_base)
    time_rope = layers.rope_1d(torch.arange(T, device=dev), E, mc.rope_base)
    shapes = {
        "space": ((B * T, S, W), space_rope, dict()),
        "time": ((B * S, T, W), time_rope, dict(window=mc.context_frames, causal=True)),
    }
    backends = [("eager", "eager", mc.softcap), ("flex", "fused", mc.softcap), ("sdpa", "fused", None)]
    rec.update(
        width=W,
        heads=mc.heads,
        kv_heads=mc.kv_heads,
        head_dim=E,
        softcap=mc.softcap,
        clips=B,
        frames=T,
        tokens_per_frame=S,
        preset=exp.preset,
    )
    base_ms: dict[str, float] = {}
    for shape_name, (shape, (cos, sin), kw) in shapes.items():
        for label, backend, cap in backends:
            if ctx.left() < 5:
                rec.update(**{f"skipped_{shape_name}_{label}": f"only {ctx.left():.0f} s left"})
                continue
            torch.manual_seed(0)
            layer = layers.Attention(W, mc.heads, mc.kv_heads, cap, backend).to(dev)
            x = torch.randn(*shape, device=dev, requires_grad=True)
            gy = torch.randn(*shape, device=dev)

            def fwd_bwd(layer=layer, x=x, gy=gy, cos=cos, sin=sin, kw=kw):
                with _amp(dev):
                    y = layer(x, cos, sin, **kw)
                y.backward(gy)

            ran = label
            if label == "flex" and (dev.type == "cpu" or dev.type in layers._flex_broken):
                ran = "eager math (flex has no CPU backward)" if dev.type == "cpu" else "eager math (flex failed)"
            _reset_peak(dev)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fwd_bwd()  # first call: flex compiles its forward and backward kernels here
                _sync(dev)
                first = time.perf_counter() - t0
                t, n = _time(fwd_bwd, ctx, budget_s=1.0 if ctx.quick else 3.0, min_reps=3, max_reps=50)
            if label == "flex" and dev.type in layers._flex_broken:
                ran = "eager math (flex failed)"
            base_ms.setdefault(shape_name, t * 1e3)
            bprime, L = shape[0], shape[1]
            keys = min(L, mc.context_frames) if kw.get("causal") else L
            core = 3 * 4 * bprime * L * keys * mc.heads * E  # logits + values, fwd + 2× bwd (matmul FLOPs)
            rec.row(
                shape=f"{shape_name} ({bprime}×{L}×{W})",
                backend=label,
                ran=ran,
                softcap=cap,
                ms=t * 1e3,
                vs_eager=base_ms[shape_name] / (t * 1e3),
                attn_core_tflops_per_s=core / t / 1e12,
                peak_mem_gb=_peak_mem_gb(dev),
                first_call_s=first,
                reps=n,
            )
            del layer, x, gy
    rec.update(flex_fell_back=dev.type in layers._flex_broken)


def sec_generation(ctx: Ctx, rec: Recorder) -> None:
    """KV-cached generation, batch 1: K denoising steps + one commit pass per frame, after C cached frames."""
    import torch

    from latentwm.conditions import Conditions, FrameConditions
    from latentwm.model import DynamicsModel
    from latentwm.rollout import commit_frame, observe, sample_frame

    exp = _preset(ctx, "base")
    dev = ctx.device
    window = 33
    # GPU_CHECK_ATTENTION=eager|fused: the decode path's backend (fused = flex with the soft cap, which compiles per
    # context length in a KV-cached loop)
    mc = dataclasses.replace(
        exp.model, context_frames=window, attention=os.environ.get("GPU_CHECK_ATTENTION", exp.model.attention)
    )
    torch.manual_seed(0)
    with torch.device(dev):
        model = DynamicsModel(mc).eval().requires_grad_(False)
    N, D, A = mc.num_latent_tokens, mc.frame_dim, mc.action_dim
    contexts = (16, 32)
    rec.update(
        preset=exp.preset,
        params=model.num_parameters(),
        latent_tokens=N,
        model_tokens_per_frame=model.tokens_per_frame,
        window=window,
        attention=mc.attention,
        preset_window=exp.model.context_frames,
        batch=1,
        image_px=exp.encoder.image_size,
        precision="bf16 autocast",
    )
    g = torch.Generator(device=dev).manual_seed(0)
    frames = torch.randn(1, max(contexts) + 1, N, D, device=dev, generator=g)
    actions = torch.randn(1, max(contexts) + 1, A, device=dev, generator=g)
    known = torch.ones(1, dtype=torch.bool, device=dev)
    # eager, then --rollout.compile's compiled denoising pass (DynamicsModel.compile_sampling, in place: last)
    runs = [
        (mode, C, K)
        for mode in (["eager"] if ctx.args.no_compile else ["eager", "compiled"])
        for C in contexts
        for K in (1, 4)
    ]
    for mode, C, K in runs:
        if mode == "compiled":
            model.compile_sampling(ctx.args.compile_backend)
        with torch.no_grad(), _amp(dev):
            cache = observe(model, frames[:, :C], Conditions(actions[:, : C - 1]))
        if ctx.left() < (3 if mode == "eager" else 15):
            rec.update(**{f"skipped_{mode}_ctx{C}_k{K}": f"only {ctx.left():.0f} s left"})
            continue
        noise = frames[:, C]
        a = actions[:, C - 1]

        def frame(cache=cache, K=K, noise=noise, a=a):
            c = cache.clone()  # O(1): a commit never writes into the shared tensors
            with torch.no_grad(), _amp(dev):
                x = sample_frame(model, c, K, noise, FrameConditions(a, known))
                commit_frame(model, c, x, FrameConditions(a, known))

        t, n = _time(frame, ctx, budget_s=1.0 if ctx.quick else 3.0, min_reps=5, max_reps=100, warmup=2)
        rec.row(
            mode=mode,
            context=C,
            K=K,
            ms_per_frame=t * 1e3,
            frames_per_s=1 / t,
            passes_per_frame=K + 1,
            model_gflop_per_frame=(K + 1) * model.flops_per_frame(C) / 1e9,
            reps=n,
        )


def sec_planning(ctx: Ctx, rec: Recorder) -> None:
    """One CEM planning call (planning.plan) at DINO-WM's sizes on the small preset."""
    import torch

    from latentwm.model import DynamicsModel
    from latentwm.planning import PlanProblem, plan

    exp = _preset(ctx, "small")
    dev = ctx.device
    P, E, IT, H = (32, 4, 3, 5) if ctx.quick else (300, 30, 30, 5)
    cfg = _plan_config(P, E, IT, H)
    torch.manual_seed(0)
    mc = dataclasses.replace(exp.model, attention=os.environ.get("GPU_CHECK_ATTENTION", exp.model.attention))
    with torch.device(dev):
        model = DynamicsModel(mc).eval().requires_grad_(False)
    N, D, A, C = mc.num_latent_tokens, mc.frame_dim, mc.action_dim, exp.rollout.context
    g = torch.Generator(device=dev).manual_seed(0)
    hist = torch.randn(1, C, N, D, device=dev, generator=g)
    hist_actions = torch.randn(1, C - 1, A, device=dev, generator=g)
    goal = torch.randn(N, D, device=dev, generator=g)
    low, high = torch.full((A,), -1.0, device=dev), torch.full((A,), 1.0, device=dev)
    rec.update(
        preset=exp.preset,
        params=model.num_parameters(),
        population=P,
        elites=E,
        iterations=IT,
        horizon=H,
        context=C,
        sample_steps=1,
        attention=mc.attention,
    )
    precisions = (["bf16", "fp32"] if ctx.args.plan_fp32 else ["bf16"]) if dev.type == "cuda" else ["fp32"]
    for prec in precisions:
        bf16 = prec == "bf16"
        warm = _plan_config(P, E, 1, H)
        t0 = time.perf_counter()
        plan(
            model,
            PlanProblem(hist, goal, low, high, history_actions=hist_actions),
            warm,
            bf16=bf16,
            generator=torch.Generator(device=dev).manual_seed(0),
        )  # warm-up: one iteration
        _sync(dev)
        one_iter = time.perf_counter() - t0
        if prec != precisions[0] and one_iter * IT * 1.3 > ctx.left():
            rec.update(**{f"skipped_{prec}": f"one iteration took {one_iter:.2f} s, {ctx.left():.0f} s left"})
            continue
        t0 = time.perf_counter()
        res = plan(
            model,
            PlanProblem(hist, goal, low, high, history_actions=hist_actions),
            cfg,
            bf16=bf16,
            generator=torch.Generator(device=dev).manual_seed(0),
        )
        _sync(dev)
        wall = time.perf_counter() - t0
        rec.row(
            precision=prec,
            seconds_per_call=wall,
            evaluations=res.evaluations,
            candidates_per_s=res.evaluations / wall,
            first_iteration_s=one_iter,
            best_cost=float(res.cost),
        )


def sec_encoder(ctx: Ctx, rec: Recorder) -> None:
    """DinoEncoder.encode throughput on random-weight DINOv2 ViT-S/14 and ViT-B/14 at 224 px."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    from latentwm.config import EncoderConfig
    from latentwm.encoders.dino import DinoEncoder

    dev = ctx.device
    if ctx.quick:  # tiny stand-ins for both roles
        specs = [
            ("ViT-S/14 (tiny: 64 wide, 2 layers)", 64, 2, 4, "tiny-random"),
            ("ViT-B/14 (tiny: 128 wide, 2 layers)", 128, 2, 4, "tiny-random"),
        ]
        size, B = 56, 8
    else:
        specs = [("ViT-S/14", 384, 12, 6, "dinov2-s"), ("ViT-B/14", 768, 12, 12, "dinov2-b")]
        size, B = 224, ctx.args.encoder_batch
    rec.update(image_px=size, batch=B, precision="bf16 autocast" if dev.type == "cuda" else "fp32")
    for label, width, depth, heads, name in specs:
        if ctx.left() < 3:
            rec.update(**{f"skipped_{label}": f"only {ctx.left():.0f} s left"})
            continue
        torch.manual_seed(0)
        backbone = Dinov2Model(
            Dinov2Config(
                hidden_size=width,
                num_hidden_layers=depth,
                num_attention_heads=heads,
                mlp_ratio=4,
                patch_size=14,
                image_size=size,
            )
        )
        enc = DinoEncoder(
            backbone,
            EncoderConfig(name=name, image_size=size, batch_size=B),
            f"random:{label}",
            fold_normalization=dev.type == "cpu",
        ).to(dev)
        frames = torch.randint(0, 256, (B, size, size, 3), dtype=torch.uint8, device=dev)
        _reset_peak(dev)
        t, n = _time(
            lambda enc=enc, frames=frames: enc.encode(frames),
            ctx,
            budget_s=1.0 if ctx.quick else 4.0,
            min_reps=3,
            max_reps=50,
            warmup=2,
        )
        rec.row(
            encoder=label,
            params=sum(p.numel() for p in backbone.parameters()),
            tokens=enc.num_tokens,
            images_per_s=B / t,
            ms_per_batch=t * 1e3,
            peak_mem_gb=_peak_mem_gb(dev),
            attn_impl=str(getattr(backbone.config, "_attn_implementation", "?")),
            reps=n,
        )
        del enc, backbone


SECTIONS = {
    "tests": sec_tests,
    "peak": sec_peak,
    "attention": sec_attention,
    "generation": sec_generation,
    "planning": sec_planning,
    "encoder": sec_encoder,
    "train_small": lambda ctx, rec: sec_train(ctx, rec, "small"),
    "train_base": lambda ctx, rec: sec_train(ctx, rec, "base"),
}
assert list(SECTIONS) == ORDER


# ------------------------------------------------------------------------------------------------ running


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def _run_inline(name: str, ctx: Ctx) -> dict:
    rec = Recorder()
    try:
        SECTIONS[name](ctx, rec)
    except Exception as e:  # noqa: BLE001 - a failing section is recorded; the others still run
        rec.data["error"] = f"{type(e).__name__}: {e}"
        rec.data["traceback"] = traceback.format_exc(limit=6)
        print(rec.data["traceback"], flush=True)
    return rec.data


def _child_argv(args: argparse.Namespace) -> list[str]:
    out = [
        "--out",
        args.out,
        "--device",
        args.device,
        "--compile-backend",
        args.compile_backend,
        "--compile-scope",
        args.compile_scope,
        "--batch-small",
        str(args.batch_small),
        "--batch-base",
        str(args.batch_base),
        "--encoder-batch",
        str(args.encoder_batch),
    ]
    if args.quick:
        out.append("--quick")
    if args.no_compile:
        out.append("--no-compile")
    if args.plan_fp32:
        out.append("--plan-fp32")
    return out


def _run_child(name: str, args: argparse.Namespace, budget: float, tmp: Path, emit) -> dict:
    """Run one section in a child process (its own process group), streaming its output; kill it at `budget`."""
    path = tmp / f"{name}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        name,
        "--child-out",
        str(path),
        "--child-deadline",
        f"{time.time() + budget:.3f}",
        *_child_argv(args),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    tail: list[str] = []

    def pump():
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            del tail[:-30]
            emit(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        rc = proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        rc = proc.returncode
    reader.join(timeout=5)
    data = {"rows": []}
    if path.exists():
        with contextlib.suppress(ValueError):
            data = json.loads(path.read_text())
    if timed_out:
        data.setdefault("error", f"timed out after {budget:.0f} s (its budget); the figures above it were kept")
    elif rc != 0 and "error" not in data:
        data["error"] = f"child process exited with {rc}: " + " | ".join(tail[-5:])[-600:]
    return data


def _child_main(args: argparse.Namespace) -> int:
    import torch

    # the parent's deadline is wall-clock (epoch) time: our own start-up already used part of the budget
    ctx = Ctx(args, torch.device(args.device), args.quick, time.monotonic() + args.child_deadline - time.time())
    rec = Recorder(Path(args.child_out))
    rec.update()  # the file exists from the start
    try:
        SECTIONS[args.child](ctx, rec)
    except Exception as e:  # noqa: BLE001
        rec.update(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=6))
        print(rec.data["traceback"], flush=True)
        return 1
    if os.environ.get("GPU_CHECK_HANG") == args.child:  # tests: a section that overruns its budget
        time.sleep(3600)
    return 0


# ------------------------------------------------------------------------------------------------ reporting


TABLE_COLUMNS = {
    "tests": ["device", "passed", "failed", "errors", "skipped", "seconds"],
    "peak": ["what", "tflops", "ms"],
    "attention": [
        "shape",
        "backend",
        "ran",
        "softcap",
        "ms",
        "vs_eager",
        "attn_core_tflops_per_s",
        "peak_mem_gb",
        "first_call_s",
    ],
    "generation": ["mode", "context", "K", "ms_per_frame", "frames_per_s", "passes_per_frame", "model_gflop_per_frame"],
    "planning": ["precision", "seconds_per_call", "evaluations", "candidates_per_s", "first_iteration_s"],
    "encoder": ["encoder", "params", "tokens", "images_per_s", "ms_per_batch", "peak_mem_gb", "attn_impl"],
    "train_small": [
        "preset",
        "mode",
        "batch",
        "step_s",
        "frames_per_s",
        "tokens_per_s",
        "model_tflops_per_s",
        "mfu",
        "peak_mem_gb",
        "first_step_s",
    ],
}
TABLE_COLUMNS["train_base"] = TABLE_COLUMNS["train_small"]

TITLES = {
    "tests": "1. device tests",
    "peak": "bf16 matmul peak",
    "attention": "3. attention layer fwd+bwd (base)",
    "generation": "4. KV-cached generation (base, batch 1)",
    "planning": "5. CEM planning call (small)",
    "encoder": "6. encoder throughput",
    "train_small": "2. training step (small)",
    "train_base": "2. training step (base)",
}


def section_markdown(name: str, data: dict) -> str:
    from common import table

    lines = [f"**{TITLES[name]}**"]
    meta = {
        k: v
        for k, v in data.items()
        if k not in ("rows", "traceback", "failures", "error", "skipped") and not isinstance(v, (dict, list))
    }
    if meta:
        lines.append("; ".join(f"{k} {_fmt(v)}" for k, v in meta.items()))
    if data.get("rows"):
        lines += ["", table(data["rows"], TABLE_COLUMNS[name])]
    if data.get("skipped"):
        lines.append(f"\nskipped: {data['skipped']}")
    if data.get("error"):
        lines.append(f"\nerror: {data['error']}")
    if data.get("failures"):
        lines.append("\n" + "\n".join(f"- {f}" for f in data["failures"]))
    return "\n".join(lines)


def headline(sections: dict) -> dict:
    """The figures one looks for first, flat (absent where a section did not measure them)."""
    h: dict = {}
    t = sections.get("tests", {})
    if "passed" in t:
        h.update(tests_passed=t["passed"], tests_failed=t.get("failed", 0) + t.get("errors", 0))
    p = sections.get("peak", {})
    if "bf16_matmul_tflops" in p:
        h["peak_bf16_tflops"] = p["bf16_matmul_tflops"]
    for role in ("small", "base"):
        for r in sections.get(f"train_{role}", {}).get("rows", []):
            mode = r["mode"].split()[0]
            for k in ("frames_per_s", "tokens_per_s", "mfu", "peak_mem_gb"):
                if k in r:
                    h[f"train_{role}_{mode}_{k}"] = r[k]
    for r in sections.get("attention", {}).get("rows", []):
        h[f"attn_{r['shape'].split()[0]}_{r['backend']}_ms"] = r["ms"]
    for r in sections.get("generation", {}).get("rows", []):
        tag = "" if r.get("mode", "eager") == "eager" else f"_{r['mode']}"
        h[f"gen_fps_k{r['K']}_ctx{r['context']}{tag}"] = r["frames_per_s"]
    for r in sections.get("planning", {}).get("rows", []):
        h[f"cem_seconds_per_call_{r['precision']}"] = r["seconds_per_call"]
    for r in sections.get("encoder", {}).get("rows", []):
        h[f"encoder_{r['encoder'].split()[0].replace('/', '').lower()}_images_per_s"] = r["images_per_s"]
    return h


TARGETS = (
    ("train_base", "base-preset training MFU", "mfu", ">=", 0.35, {}),
    ("generation", "batch-1 K = 4 generation at 224 px (16 cached frames), frames/s", "frames_per_s", ">=", 20.0,
     {"K": 4, "context": 16}),
    ("planning", "CEM 300 × 30 × 30, horizon 5 (small), s per call", "seconds_per_call", "<=", 3.0, {}),
)  # fmt: skip
"""The throughput targets a GPU run is judged against: (section, what, row field, comparison, goal, the values a row
must have to count)."""


def verdicts(sections: dict, quick: bool) -> list[dict]:
    """One verdict per target: the best row's figure (over eager / compiled modes and precisions), whether it meets
    the goal (None where the section measured no such row, with the reason, or in a quick run) and which row."""
    out = []
    for section, what, field, cmp, goal, where in TARGETS:
        sec = sections.get(section, {})
        rows = [
            r
            for r in sec.get("rows", [])
            if isinstance(r.get(field), (int, float)) and all(r.get(k) == x for k, x in where.items())
        ]
        v: dict = {"target": what, "goal": goal, "comparison": cmp, "measured": None, "met": None, "row": None}
        if rows:
            best = (max if cmp == ">=" else min)(rows, key=lambda r: r[field])
            v["measured"] = best[field]
            v["met"] = best[field] >= goal if cmp == ">=" else best[field] <= goal
            v["row"] = {k: best[k] for k in ("mode", "precision", "context", "K") if k in best}
        elif sec.get("rows"):  # e.g. MFU needs the peak section's figure
            v["reason"] = f"no row of {section} has {field}" + "".join(f", {k} {x}" for k, x in where.items())
        else:
            v["reason"] = sec.get("error") or sec.get("skipped") or f"section {section} not run"
        if quick:  # measured, not judged: tiny sizes say nothing about the target
            v["met"], v["reason"] = None, "quick run: tiny sizes on this device, not the target's setting"
        out.append(v)
    return out


def verdict_lines(vs: list[dict]) -> str:
    """The verdicts as markdown, one line per target."""
    lines = ["**Targets**"]
    for v in vs:
        if v["measured"] is None:
            state = f"not measured ({v.get('reason', '')})"
        else:
            state = {True: "met", False: "NOT met", None: "not judged"}[v["met"]]
            row = ", ".join(f"{k} {x}" for k, x in (v["row"] or {}).items())
            state += f": {_fmt(v['measured'])} {v['comparison']} {_fmt(v['goal'])}" + (f" ({row})" if row else "")
            if v.get("reason"):
                state += f" — {v['reason']}"
        lines.append(f"- {v['target']}: {state}")
    return "\n".join(lines)


def _machine() -> str:
    from common import machine

    return machine()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CPU, < 1 min); implies --no-record")
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    ap.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu_check", help="folder for the JSON and logs")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cpu, ...")
    ap.add_argument("--only", default="", help=f"comma-separated sections (default all): {','.join(ORDER)}")
    ap.add_argument(
        "--skip-tests",
        action="store_true",
        default=bool(os.environ.get("GPU_CHECK_SKIP_TESTS")),
        help="skip the pytest section (env GPU_CHECK_SKIP_TESTS=1)",
    )
    ap.add_argument(
        "--budget-s",
        type=float,
        default=float(os.environ.get("GPU_CHECK_BUDGET_S", 450)),
        help="wall-clock seconds for all sections together (env GPU_CHECK_BUDGET_S)",
    )
    ap.add_argument(
        "--isolate",
        choices=["auto", "yes", "no"],
        default="auto",
        help="run each section in a child process killed at its budget (auto: on CUDA)",
    )
    ap.add_argument(
        "--compile-backend", default=None, help="torch.compile backend (default inductor; aot_eager under --quick)"
    )
    ap.add_argument("--no-compile", action="store_true", help="training: eager only")
    ap.add_argument(
        "--compile-scope",
        choices=["model", "blocks"],
        default="model",
        help="training: torch.compile the whole model (as the trainer does) or each block (regional "
        "compilation: the compiled block is reused, so it compiles much faster)",
    )
    ap.add_argument("--batch-small", type=int, default=32, help="clips per training step at small")
    ap.add_argument("--batch-base", type=int, default=16, help="clips per training step at base (and attention)")
    ap.add_argument("--encoder-batch", type=int, default=256)
    ap.add_argument("--plan-fp32", action="store_true", help="planning: also one call in fp32 (CUDA)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.compile_backend is None:
        args.compile_backend = "aot_eager" if args.quick else "inductor"
    if args.child:
        return _child_main(args)
    unknown = set(filter(None, args.only.split(","))) - set(ORDER)
    if unknown:
        ap.error(f"--only: unknown sections {sorted(unknown)}; known: {','.join(ORDER)}")
    wanted = [s for s in ORDER if not args.only or s in args.only.split(",")]

    t_start = time.monotonic()
    out = Path(args.out).resolve()
    args.out = str(out)  # children run in the repository root
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "gpu_check.log", "a")

    def emit(line: str = "") -> None:
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    isolate = args.isolate == "yes" or (args.isolate == "auto" and device.type == "cuda")
    total = min(args.budget_s, 150.0) if args.quick else args.budget_s
    deadline = t_start + total
    started = _dt.datetime.now().isoformat(timespec="seconds")
    emit(
        f"== gpu_check {started}: device {device}, torch {torch.__version__}, quick {args.quick}, budget "
        f"{total:.0f} s, sections {','.join(wanted)}, {'child process per section' if isolate else 'in-process'}"
    )
    result = {
        "check": "gpu_check",
        "started": started,
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "quick": args.quick,
        "budget_s": total,
        "compile_backend": args.compile_backend,
        "sections": {},
        "headline": {},
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    json_path = out / "gpu_check.json"
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for i, name in enumerate(wanted):
            if name == "tests" and args.skip_tests:
                result["sections"][name] = {"rows": [], "skipped": "--skip-tests / GPU_CHECK_SKIP_TESTS"}
                emit(f"\n-- {name}: skipped (--skip-tests)")
                continue
            mins = {k: QUICK_MIN_S for k in MIN_S} if args.quick else MIN_S
            later = sum(mins[s] for s in wanted[i + 1 :] if not (s == "tests" and args.skip_tests))
            avail = deadline - time.monotonic() - later
            # --quick (the test suite's run on a CPU): every section runs to the end whatever the machine's load;
            # the per-loop budgets only bound how many repetitions are timed, never whether a section has rows
            budget = QUICK_BUDGET_S if args.quick else min(BUDGET_S[name], avail)
            if not args.quick and budget < mins[name]:
                result["sections"][name] = {"rows": [], "skipped": f"not enough time left ({budget:.0f} s)"}
                emit(f"\n-- {name}: skipped, not enough time left ({budget:.0f} s)")
                continue
            emit(f"\n-- {name} (budget {budget:.0f} s)")
            t0 = time.monotonic()
            if isolate and name != "tests":
                data = _run_child(name, args, budget, Path(tmp), emit)
            else:
                ctx = Ctx(args, device, args.quick, float("inf") if args.quick else time.monotonic() + budget)
                data = _run_inline(name, ctx)
            data["seconds"] = data.get("seconds", time.monotonic() - t0)
            data["section_seconds"] = time.monotonic() - t0
            result["sections"][name] = data
            _add_mfu(result)
            result["headline"] = headline(result["sections"])
            result["elapsed_s"] = time.monotonic() - t_start
            _write_json(json_path, result)
            emit(section_markdown(name, data))
    result["elapsed_s"] = time.monotonic() - t_start
    result["machine"] = _machine()
    result["errors"] = {k: v["error"] for k, v in result["sections"].items() if v.get("error")}
    _add_mfu(result)
    result["headline"] = headline(result["sections"])
    result["verdicts"] = verdicts(result["sections"], args.quick)
    _write_json(json_path, result)
    emit("\n" + verdict_lines(result["verdicts"]))
    md = (
        f"\n## gpu_check — {started[:16].replace('T', ' ')}\n\nMachine: {result['machine']}. "
        f"Device {device}{' (' + result['gpu'] + ')' if 'gpu' in result else ''}, python {result['python']}, "
        f"torch.compile backend {args.compile_backend}; {result['elapsed_s']:.0f} s for the sections. "
        "Random weights and latents; bf16 autocast. `bash benchmarks/gpu_check.sh` (see benchmarks/gpu_check.py "
        "for what each section measures).\n\n"
        + "\n\n".join(section_markdown(n, d) for n, d in result["sections"].items())
        + "\n\n"
        + verdict_lines(result["verdicts"])
        + f"\n\n```json\n{json.dumps(result['headline'])}\n```\n"
    )
    (out / "gpu_check.md").write_text(md)
    if not (args.quick or args.no_record):
        from common import RESULTS

        if not RESULTS.exists():
            RESULTS.write_text("# Benchmark results\n\nAppended by the scripts in `benchmarks/`; newest last.\n")
        with open(RESULTS, "a") as f:
            f.write(md)
        emit(f"\nappended to {RESULTS}")
    emit(
        f"\nJSON: {json_path}; log: {out / 'gpu_check.log'}; {result['elapsed_s']:.0f} s; errors: "
        f"{sorted(result['errors']) or 'none'}"
    )
    log.close()
    print(json.dumps(result, default=str), flush=True)
    return 0


def _add_mfu(result: dict) -> None:
    peak = result["sections"].get("peak", {}).get("bf16_matmul_tflops")
    for role in ("small", "base"):
        for r in result["sections"].get(f"train_{role}", {}).get("rows", []):
            if peak:
                r["mfu"] = r["model_tflops_per_s"] / peak


if __name__ == "__main__":
    sys.exit(main())
