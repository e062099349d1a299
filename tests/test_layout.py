"""The package's layout holds: imports run downward only between sub-packages, inference never
imports training, no module takes another's private names, and the Hub-portable model folder
imports nothing of finetune outside itself. Read from the source (every import, function-local
ones included), so a new arrow that breaks a rule fails here before it tangles the code."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "finetune"

# Floors, lowest first: a module may import its own floor's packages or lower ones, never higher.
# (The ground floor is the top-level modules: errors, files, processes, devices, model_files.)
FLOORS = {
    "ground": 0,
    "models": 1,
    "data": 2,
    "vectors": 2,
    "inference": 3,
    "evaluation": 4,
    "hub": 4,
    "config": 5,
    "training": 6,
    "inspection": 6,
    "pretrain": 7,
    "recipes": 8,
    "cli": 9,
}


def package_of(module: str) -> str:
    """`finetune.data.tables` -> "data"; a top-level module (`finetune.errors`) -> "ground", but `cli` its own."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return parts[1]
    return "cli" if parts[-1] == "cli" else "ground"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken, line) of every `import`/`from ... import` in the file, made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, [alias.name for alias in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
    return [(module, names, line) for module, names, line in found if module.split(".")[0] == "finetune"]


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_layout_is_read():
    assert len(SOURCES) > 60
    assert {package_of(module_name(path)) for path in SOURCES} >= set(FLOORS) - {"recipes"}


def upward_imports(source: str, imports) -> list[str]:
    """The imports of module `source` that reach a sub-package on a higher floor than its own."""
    here, upward = package_of(source), []
    for module, names, line in imports:
        # `from finetune import data` names sub-packages
        targets = [f"finetune.{name}" for name in names] if module == "finetune" else [module]
        for target in targets:
            there = package_of(target)
            if there != here and FLOORS[there] > FLOORS[here]:
                upward.append(f"line {line}: {there} ({target}) above {here}")
    return upward


def private_imports(source: str, imports) -> list[str]:
    return [f"line {line}: {name} from {module}" for module, names, line in imports
            for name in names if name.startswith("_") and module != source]  # fmt: skip


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_run_downward(path):
    source = module_name(path)
    if source == "finetune":
        return  # the package's face (registration with the Auto classes)
    upward = upward_imports(source, imports_of(path))
    assert not upward, f"{path.relative_to(PACKAGE)} imports upward: {upward}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_private_names_cross_modules(path):
    taken = private_imports(module_name(path), imports_of(path))
    assert not taken, f"{path.relative_to(PACKAGE)} imports private names: {taken}"


def test_inference_never_imports_training_or_evaluation():
    for path in (PACKAGE / "inference").rglob("*.py"):
        for module, _, line in imports_of(path):
            assert package_of(module) not in ("training", "evaluation", "config"), f"{path}:{line} imports {module}"


def test_the_portable_model_folder_imports_only_itself():
    folder = PACKAGE / "models" / "bilstm_attention"
    for path in folder.glob("*.py"):
        for module, _, line in imports_of(path):
            assert module.startswith("finetune.models.bilstm_attention"), f"{path.name}:{line} imports {module}"


def test_a_rule_breaker_is_caught():
    """The checks can fail: each rule's breach, as the parser reads it, is reported."""
    breach = [("finetune.training.loop", ["training_loop"], 3)]
    assert upward_imports("finetune.inference.classifier", breach) == [
        "line 3: training (finetune.training.loop) above inference"
    ]
    assert upward_imports("finetune.errors", [("finetune", ["data"], 1)])  # the ground floor names a package
    assert not upward_imports("finetune.training.loop", [("finetune.inference.classifier", ["explain"], 9)])
    assert private_imports("finetune.data.table_chunks", [("finetune.data.tables", ["_load", "read"], 4)]) == [
        "line 4: _load from finetune.data.tables"
    ]
    found = [module for module, _, _ in imports_of(PACKAGE / "inference" / "classifier.py")]
    assert "finetune.inference.text_scores" in found  # the parser sees this file's imports
