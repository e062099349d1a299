"""The distribution `finetune-zh`: pyproject's package list names every folder, and a wheel built from
the source holds the recipes, their configs and accelerate configs as `finetune/recipes/...`, with no
top-level `recipes` to land in site-packages."""

import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT

import finetune

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def folders(root, package: str) -> set[str]:
    return {package} | {
        ".".join((package, *path.relative_to(root).parts))
        for path in root.rglob("*")
        if path.is_dir() and "__pycache__" not in path.parts
    }


def test_the_package_list_names_every_folder():
    setuptools = pyproject()["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"finetune.recipes": "recipes"}
    on_disk = folders(ROOT / "finetune", "finetune") | folders(ROOT / "recipes", "finetune.recipes")
    assert set(setuptools["packages"]) == on_disk


def test_the_name_and_the_one_version():
    project = pyproject()["project"]
    assert project["name"] == "finetune-zh" and project["dynamic"] == ["version"]
    assert pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "finetune.__version__"}
    assert project["scripts"] == {"finetune": "finetune.cli:main"}
    assert finetune.__version__.count(".") == 2


def test_the_wheel_ships_the_recipes_inside_the_package(tmp_path):
    # A clean copy of what the build reads (no build/ or egg-info left by an earlier build), without git
    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    for folder in ("finetune", "recipes"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(tmp_path / "wheel"), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    assert wheel.name == f"finetune_zh-{finetune.__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {name.split("/")[0] for name in names} == {"finetune", f"finetune_zh-{finetune.__version__}.dist-info"}
    recipes = {path.relative_to(ROOT).as_posix() for path in (ROOT / "recipes").rglob("*") if path.is_file()}
    recipes = {name for name in recipes if "__pycache__" not in name}
    assert {f"finetune/{name}" for name in recipes} <= names
    assert "finetune/recipes/configs/word2vec_bilstm_attn.yaml" in names
    assert "finetune/recipes/accelerate_configs/single_device.yaml" in names
    assert "finetune/hub/templates/model_card.md" in names
    assert "finetune/evaluation/evaluate_modules/classification_report/classification_report.py" in names
