"""The import structure of the package: lower layers never import higher ones, and the model code
is pure PyTorch. A new module must be placed in LAYERS, which is the architecture in one table."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "reactdiff"

# Unit → layer. A unit may import units of its own or a lower layer. A unit is a module or a
# subpackage; a dotted entry inside a subpackage (data.layout) is a unit of its own.
LAYERS = {
    "config": 0,
    "console": 0,
    "data.layout": 0,
    "request_checks": 0,
    "ray_compat": 0,
    "atomic_io": 0,
    "errors": 0,
    "tags": 0,
    "models": 1,
    "ray_runtime": 1,
    "mlflow_server": 1,
    "render.face": 1,
    "data": 2,
    "tracking": 2,
    "pyfunc": 2,
    "predict": 2,
    "registry": 3,
    "registry_lock": 3,
    "generate": 3,
    "render": 4,
    "serve": 4,
    "evaluate": 5,
    "train": 6,
    "tune": 7,
    "demo": 8,
    "commands": 9,
    "cli": 10,
}
# What the pure-PyTorch model code may use from the rest of the package: typed configs and the
# REACT2024 layout constants, and the stdlib atomic-write helper. Never Ray, MLflow or the data pipeline.
MODELS_MAY_IMPORT = {"atomic_io", "config", "data.layout", "models"}
FORBIDDEN_IN_MODELS = ("ray", "mlflow")


def unit_of(module: str) -> str:
    """'reactdiff.data.store' → 'data'; 'reactdiff.data.layout' → 'data.layout'."""
    parts = module.split(".")[1:]
    for length in (2, 1):
        name = ".".join(parts[:length])
        if len(parts) >= length and name in LAYERS:
            return name
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[str]:
    """Absolute names of everything `path` imports (`from reactdiff import x` → reactdiff.x)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; the package uses absolute imports"
            if node.module == "reactdiff":
                names += [f"reactdiff.{alias.name}" for alias in node.names]
            elif node.module:
                names.append(node.module)
    return names


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_upward_imports():
    upward = []
    for path in sources():
        module = module_name(path)
        if module == "reactdiff":
            continue
        unit = unit_of(module)
        for imported in imports_of(path):
            if imported.startswith("reactdiff.") and unit_of(imported) != unit:
                if LAYERS[unit_of(imported)] > LAYERS[unit]:
                    upward.append(
                        f"{module} (layer {LAYERS[unit]}) imports {imported} (layer {LAYERS[unit_of(imported)]})"
                    )
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_models_are_pure_pytorch():
    offending = []
    for path in sorted((PACKAGE / "models").rglob("*.py")):
        for imported in imports_of(path):
            top = imported.split(".")[0]
            if top in FORBIDDEN_IN_MODELS or (top == "reactdiff" and unit_of(imported) not in MODELS_MAY_IMPORT):
                offending.append(f"{module_name(path)} imports {imported}")
    assert not offending, "reactdiff/models must stay pure PyTorch:\n" + "\n".join(offending)


def test_unplaced_module_is_named():
    # The check itself: an unknown module fails with the table to edit, not a KeyError.
    try:
        unit_of("reactdiff.nowhere")
    except AssertionError as error:
        assert "add it to LAYERS" in str(error)
    else:
        raise AssertionError("unit_of accepted a module that is in no layer")
