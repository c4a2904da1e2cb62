"""The package's layers (docs/design.md section 2, as built): a module imports only from its own package or a lower
layer — so there are no cycles between packages — and imports of latentwm itself sit at module top.

Lowest first. A package spans one layer; a top-level module (rollout.py, demo.py, ...) is its own package.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "latentwm"

LAYERS = [
    {"config", "conditions"},  # frozen settings, registries, presets; the conditions value: nothing of latentwm
    {"envs", "model", "distributed", "io", "objectives", "rollout"},  # simulators; the dynamics transformer and its
    # objectives and sampling; torch.distributed setup; atomic files, JSON, the out-dir lock
    {"data"},  # episodes, sources, clips, latent caches
    {"encoders"},  # frozen DINO encoder, decoder, encode command
    {"engine", "eval"},  # the loop core, checkpoints and model loading, run logs; metrics and pictures
    {"train", "planning"},  # the trainers; costs, planners, MPC, probes, planning evaluation (neither imports the
    # other: planning loads trained models through engine)
    {"rl", "sweep", "api"},  # heads, imagination, PMPO; ablation sweeps (they run training); the Python API
    {"report"},  # the demo's report (tables of planning and RL results)
    {"demo"},  # the embedded default, composed from the commands' building blocks
    {"cli"},  # the command table
]
LAYER = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"


def layer_picture() -> str:
    """The layers as docs/design.md draws them, top (cli) to bottom (config): one line per layer."""
    return "\n".join(f"{i + 1:2d}  " + "   ".join(sorted(LAYERS[i])) for i in reversed(range(len(LAYERS))))


def _modules(src: Path = SRC):
    """(path, dotted module name) of every module under src; no modules is an error, not a pass."""
    found = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        found.append((path, ".".join(["latentwm", *parts])))
    if not found:
        raise AssertionError(f"no modules found under {src}: the layering checks would pass on nothing")
    return found


def _package(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def _imports(path: Path, module: str):
    """(imported latentwm module, line, at module top?) for every import of latentwm in the file, with relative
    imports resolved against the module's package and `from latentwm import x` read as the module latentwm.x."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            if base == "latentwm":
                for a in node.names:
                    yield f"latentwm.{a.name}", node.lineno, id(node) in top
            elif base.startswith("latentwm."):
                yield base, node.lineno, id(node) in top
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("latentwm"):
                    yield a.name, node.lineno, id(node) in top


def upward_imports(src: Path = SRC) -> list[str]:
    """Every import that goes to the same or a higher layer of another package (a cycle waiting to happen)."""
    bad = []
    for path, mod in _modules(src):
        if mod == "latentwm":
            continue
        here = _package(mod)
        for target, line, _ in _imports(path, mod):
            there = _package(target)
            if there and there != here and LAYER.get(there, len(LAYERS)) >= LAYER.get(here, -1):
                bad.append(
                    f"{path.relative_to(src)}:{line} ({here}, layer {LAYER.get(here)}) imports {target} "
                    f"({there}, layer {LAYER.get(there)})"
                )
    return bad


def inner_imports(src: Path = SRC) -> list[str]:
    return [
        f"{path.relative_to(src)}:{line} imports {target} inside a function or block"
        for path, mod in _modules(src)
        for target, line, top in _imports(path, mod)
        if not top
    ]


def dynamic_imports(src: Path = SRC) -> list[str]:
    """importlib and __import__ would hide an import from the checks above."""
    bad = []
    for path, _ in _modules(src):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
            if any(n.split(".")[0] == "importlib" for n in names) or (
                isinstance(node, ast.Name) and node.id == "__import__"
            ):
                bad.append(f"{path.relative_to(src)}:{node.lineno} imports dynamically")
    return bad


def test_every_package_has_a_layer():
    pkgs = {_package(m) for _, m in _modules() if m != "latentwm"}
    assert pkgs <= set(LAYER), f"packages without a layer: {sorted(pkgs - set(LAYER))}"


def test_no_upward_imports_and_no_cycles_between_packages():
    bad = upward_imports()
    assert not bad, "imports that go up or sideways:\n" + "\n".join(bad)


def test_latentwm_imports_sit_at_module_top():
    inner = inner_imports()
    assert not inner, "\n".join(inner)


def test_no_dynamic_imports():
    bad = dynamic_imports()
    assert not bad, "\n".join(bad)


ESCAPES = {
    "from latentwm import": "from latentwm import train\n",
    "relative import": "from ..train import loop\n",
    "importlib": "import importlib\nloop = importlib.import_module('latentwm.engine.loop')\n",
    "__import__": "loop = __import__('latentwm.engine.loop')\n",
}


@pytest.mark.parametrize("escape", list(ESCAPES))
def test_the_checks_catch_each_escape(tmp_path, escape):
    """A low package (data) reaching up to train, written each way the import graph could be dodged."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "__init__.py").write_text("")
    (tmp_path / "data" / "reader.py").write_text(ESCAPES[escape])
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "__init__.py").write_text("")
    (tmp_path / "train" / "loop.py").write_text("")
    assert upward_imports(tmp_path) or dynamic_imports(tmp_path), f"{escape} was not caught"
    (tmp_path / "data" / "reader.py").write_text("from latentwm.config import base\nfrom . import other\n")
    assert not upward_imports(tmp_path) and not dynamic_imports(tmp_path)  # downward and same-package: fine


def test_an_empty_source_tree_fails(tmp_path):
    with pytest.raises(AssertionError, match="no modules found"):
        _modules(tmp_path)


def test_the_design_document_draws_these_layers():
    assert layer_picture() in DESIGN.read_text(), "docs/design.md section 2 must show:\n" + layer_picture()


def test_consumers_of_a_trained_model_do_not_import_the_trainers():
    """Planning, RL, the report and the API load models through engine; only the CLI, the demo and sweeps (which run
    training) import train."""
    bad = [
        f"{path.relative_to(SRC)}:{line} imports {target}"
        for path, mod in _modules()
        if _package(mod) in {"planning", "rl", "report", "api"}
        for target, line, _ in _imports(path, mod)
        if _package(target) == "train"
    ]
    assert not bad, "\n".join(bad)
