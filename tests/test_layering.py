"""The package's layers (docs/design.md section 2, as built): a module imports only from its own package or a lower
layer — so there are no cycles between packages — and imports of latentwm itself sit at module top.

Lowest first. A package spans one layer; a top-level module (rollout.py, demo.py, ...) is its own package.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "latentwm"

LAYERS = [
    {"config"},                      # frozen settings, registries, presets: imports nothing of latentwm
    {"envs", "model", "distributed"},  # simulators; the dynamics transformer; torch.distributed setup
    {"data"},                        # episodes, sources, clips, latent caches
    {"encoders"},                    # frozen DINO encoder, decoder, encode command
    {"objectives", "rollout"},       # shortcut forcing; K-step sampling with the KV cache
    {"eval"},                        # metrics, pictures (used by training's periodic evaluation)
    {"train"},                       # the loop core, trainers, checkpoints, locks, logging
    {"planning", "sweep"},           # costs, planners, MPC, probes, planning evaluation; ablation sweeps (they
                                     # need only train's entry, locks and logs and eval's metrics: beside planning,
                                     # so neither imports the other and nothing below can reach them)
    {"rl"},                          # heads, imagination, PMPO (uses planning's action codec / observer)
    {"report"},                      # the demo's report (tables of planning and RL results)
    {"demo"},                        # the embedded default, composed from the commands' building blocks
    {"cli"},                         # the command table
]
LAYER = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        yield path, ".".join(["latentwm", *parts])


def _package(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def _imports(path: Path):
    """(imported latentwm module, line, at module top?) for every import of latentwm in the file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("latentwm"):
            yield node.module, node.lineno, id(node) in top
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("latentwm"):
                    yield a.name, node.lineno, id(node) in top


def test_every_package_has_a_layer():
    pkgs = {_package(m) for _, m in _modules() if m != "latentwm"}
    assert pkgs <= set(LAYER), f"packages without a layer: {sorted(pkgs - set(LAYER))}"


def test_no_upward_imports_and_no_cycles_between_packages():
    bad = []
    for path, mod in _modules():
        if mod == "latentwm":
            continue
        here = _package(mod)
        for target, line, _ in _imports(path):
            there = _package(target)
            if there and there != here and LAYER[there] >= LAYER[here]:
                bad.append(f"{path.relative_to(SRC)}:{line} ({here}, layer {LAYER[here]}) imports {target} "
                           f"({there}, layer {LAYER[there]})")
    assert not bad, "imports that go up or sideways:\n" + "\n".join(bad)


def test_latentwm_imports_sit_at_module_top():
    inner = [f"{path.relative_to(SRC)}:{line} imports {target} inside a function or block"
             for path, _ in _modules() for target, line, top in _imports(path) if not top]
    assert not inner, "\n".join(inner)


@pytest.mark.parametrize("limit", [60])
def test_no_function_is_longer_than_the_limit(limit):
    long = []
    for path, _ in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: {n} lines")
    assert not long, "\n".join(long)


def test_no_module_is_much_longer_than_400_lines():
    big = [f"{path.relative_to(SRC)}: {n} lines" for path, _ in _modules()
           if (n := len(path.read_text().splitlines())) > 430]
    assert not big, "\n".join(big)
