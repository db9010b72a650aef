"""The package's structure, read from its sources: layers, no hidden cycles, every module importable alone.

Layers, lowest first (a module imports only from its own layer or below)::

    0  version, errors, fileio, config, runtime, machine
    1  data, models
    2  engine
    3  predict, export, api, study
    4  serve, commands, cli, __main__

Inside ``data/`` the rooms have layers of their own (:data:`DATA_ROOMS`): ``video`` (one file: decode,
flow) imports no other room, ``synthetic`` and ``prepare`` only ``video``, and the datasets (the modules
directly in ``data/``) read what prepare wrote but never import the synthetic generator.

Commands import their heavy modules inside ``run`` (so ``stfn --help`` stays fast). In ``engine/`` no
stfn module is imported inside a function; elsewhere only a deliberately lazy one (e.g. one that loads
torch, which ``stfn prepare``'s workers do without), with a comment saying why.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "stfn"
LAYERS = {
    "version": 0, "errors": 0, "fileio": 0, "config": 0, "runtime": 0, "machine": 0,
    "data": 1, "models": 1,
    "engine": 2,
    "predict": 3, "export": 3, "api": 3, "study": 3, "sharing": 3, "mmaction": 3,
    "serve": 4, "commands": 4, "cli": 4, "__main__": 4,
}

# what each room of data/ may import from data/ ("datasets": the modules directly in data/)
DATA_ROOMS = {
    "video": {"video"},
    "synthetic": {"synthetic", "video"},
    "prepare": {"prepare", "video"},
    "datasets": {"datasets", "prepare", "video"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _stfn_imports(tree: ast.AST, name: str) -> list[tuple[str, ast.AST, bool]]:
    """``(imported stfn module, node, inside a function)`` for every import of an stfn module."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, child, inner) for a in child.names if a.name.split(".")[0] == "stfn")
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolve against this module's package
                    base = name.split(".")[: -child.level] if not name.endswith("__init__") else name.split(".")
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                if module.split(".")[0] == "stfn":
                    found.append((module, child, inner))
            visit(child, inner)

    visit(tree, False)
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


MODULES = _modules()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_respect_the_layers(name: str) -> None:
    text = MODULES[name].read_text()
    tree, lines = ast.parse(text, str(MODULES[name])), text.splitlines()
    own = _layer(name)
    for module, node, inside in _stfn_imports(tree, name):
        target = _layer(module)
        if own is not None and target is not None:
            assert target <= own, f"{name}:{node.lineno} imports {module} from a higher layer"
        if not inside or name.startswith("stfn.commands."):
            continue
        if name.startswith("stfn.engine."):
            pytest.fail(f"{name}:{node.lineno} imports {module} inside a function")
        said = "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
        assert said, f"{name}:{node.lineno} imports {module} inside a function without a comment saying why"


def _data_room(module: str) -> str | None:
    """The room of ``data/`` that ``module`` is in (``None`` outside ``stfn.data``)."""
    parts = module.split(".")
    if parts[:2] != ["stfn", "data"] or len(parts) < 3:
        return None
    return parts[2] if parts[2] in DATA_ROOMS else "datasets"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _data_room(n)))
def test_data_rooms_import_only_downwards(name: str) -> None:
    """video cannot import prepare, the datasets cannot import synthetic, prepare cannot import the datasets."""
    room = _data_room(name)
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    for module, node, _ in _stfn_imports(tree, name):
        target = _data_room(module)
        if target is not None:
            assert target in DATA_ROOMS[room], f"{name}:{node.lineno} ({room}) imports {module} ({target})"


def test_data_rooms_are_sub_packages() -> None:
    """Every room but the datasets is a folder, so a new module lands in one by where it is saved."""
    for room in set(DATA_ROOMS) - {"datasets"}:
        assert (PACKAGE / "data" / room / "__init__.py").is_file(), room
    flat = {p.stem for p in (PACKAGE / "data").glob("*.py")} - {"__init__"}
    assert not flat & {"video", "flow", "raft", "prepare", "manifest", "pool", "synthetic"}, flat


def test_every_layer_is_known() -> None:
    unknown = {n.split(".")[1] for n in MODULES if n != "stfn" and _layer(n) is None}
    assert unknown == set(), f"put these in LAYERS: {sorted(unknown)}"


@pytest.mark.e2e
def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    """Each module first, in its own process: an import cycle fails whichever module starts it."""
    names = sorted(n for n in MODULES if n != "stfn.__main__")
    script = (
        "import importlib, sys, traceback\n"
        "bad = []\n"
        "for name in sys.argv[1:]:\n"
        "    for m in [k for k in sys.modules if k == 'stfn' or k.startswith('stfn.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        bad.append(name + ': ' + traceback.format_exc().splitlines()[-1])\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
