"""The package's layers import one way: config -> data, models -> run_dir -> training -> evaluation -> inference ->
experiments -> cli (see ../shared/DESIGN.md). Read from the source with ast, so imports inside functions and under
TYPE_CHECKING count too: a layer may not reach up, not even lazily."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # needs neither ../shared/data nor training

SRC = Path(__file__).resolve().parents[1] / "src" / "medclass"

# Lowest first. Packages in one layer may not import each other; a module may import its own package freely.
LAYERS: list[set[str]] = [
    {"errors"},
    {"io", "lazy", "registry", "tasks", "wording", "chatter", "environment"},  # foundations
    {"metrics"},  # the metric registry: the config validates monitor names against it
    {"config"},
    {"data", "models"},
    {"run_dir"},
    {"training"},
    {"evaluation"},
    {"inference"},
    {"experiments"},
    {"cli", "__init__"},  # the CLI and the Python API (medclass/__init__.py) use everything
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str:
    """medclass.data.sources.files -> data; medclass.run_dir -> run_dir; medclass -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> list[tuple[str, str, int]]:
    """(importing module, imported medclass module, line) for every import statement in src/medclass."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against the package
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                targets = [target]
                if target == "medclass":  # `from medclass import x`: x may be a subpackage
                    targets = [f"medclass.{a.name}" for a in node.names if a.name != "__version__"]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found += [(module, t, node.lineno) for t in targets if t == "medclass" or t.startswith("medclass.")]
    return found


def test_every_package_has_a_layer() -> None:
    parts = {_part(_module_name(p)) for p in SRC.rglob("*.py")}
    assert parts <= set(RANK), f"give these a layer in LAYERS: {sorted(parts - set(RANK))}"


def test_no_layer_imports_from_above_or_beside_it() -> None:
    wrong = []
    for source, target, line in imports():
        a, b = _part(source), _part(target)
        if a == b or b == "__init__" and target == "medclass":
            continue
        if RANK[b] >= RANK[a]:
            wrong.append(f"{source}:{line} imports {target} ({b} is not below {a})")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_lazy_imports(tmp_path: Path) -> None:
    """The walk finds an import inside a function (the way cycles used to be dodged)."""
    tree = ast.parse("def f():\n    from medclass.cli import app\n")
    assert any(isinstance(n, ast.ImportFrom) and n.module == "medclass.cli" for n in ast.walk(tree))
    assert any(t.startswith("medclass.training") for s, t, _ in imports() if _part(s) == "evaluation")


@pytest.mark.parametrize("module", ["medclass.metrics", "medclass.config", "medclass.data", "medclass.models"])
def test_lower_layers_import_without_the_upper_ones(module: str) -> None:
    """Importing a low layer loads nothing above it (run in a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        f"import sys, {module}; "
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('medclass.') and m.count('.') >= 1}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(ast.literal_eval(out.strip()))
    above = {p for p in loaded if RANK.get(p, 0) > RANK[_part(module)]}
    assert not above, f"importing {module} loads {sorted(above)}"


def test_medclass_imports_are_at_module_level_outside_the_cli() -> None:
    """No medclass import hides inside a function (the way import cycles get dodged). The CLI may defer its
    imports: `medclass --help` and a config error should not wait for torch."""
    hidden = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        if _part(module) in ("cli", "__init__"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medclass"):
                    hidden.append(f"{module}:{node.lineno} imports {node.module} inside {function.name}()")
    assert not hidden, "\n".join(hidden)


def test_checking_a_config_imports_no_torch() -> None:
    """A config with every registry-named field set is validated without torch, timm or Lightning: a mistake in
    it is reported at once, not after seconds of imports."""
    import subprocess
    import sys

    code = (
        "import sys; from medclass.config import load_config\n"
        "load_config(None, ['model.head.type=mlp', 'data.augmentation=medical', 'scheduler.name=step',\n"
        "                   'checkpoint.monitor=f1_macro'], experiment='t', data={'flag': 'breastmnist'})\n"
        "print(sorted(m for m in ('torch', 'timm', 'lightning', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
