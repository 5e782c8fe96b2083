"""The package as a whole: a light face whose names are what its documentation says, the layout of
the design card, one module per thing with a first line saying what it owns, and imports that run
one way (no cycle, nothing inside the package importing the face)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import umd_dataset

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "umd_dataset"
#: Subpackages that need an optional dependency to import are listed here (none yet).
OPTIONAL: dict[str, str] = {}


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(umd_dataset.__path__, "umd_dataset."))


def _documented_kinds() -> dict[str, str]:
    """Name -> kind, from the sections of the face's docstring (Functions, Classes, Errors, Constants)."""
    kinds = {}
    for section, body in re.findall(r"^(Functions|Classes|Errors|Constants):\n((?:    .*\n)+)", umd_dataset.__doc__, flags=re.M):
        for name in re.split(r"[,\s]+", body.strip()):
            kinds[name] = section
    return kinds


def test_import_is_light():
    code = (
        "import sys, umd_dataset;"
        "heavy = [m for m in ('torch', 'torchio', 'monai', 'nibabel', 'datasets', 'pyarrow', 'scipy', 'pandas', 'numba') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _check_kinds() -> None:
    documented = _documented_kinds()
    assert sorted(documented) == sorted(umd_dataset.__all__), "the face's docstring must document exactly __all__"
    for name, kind in documented.items():
        value = getattr(umd_dataset, name)
        if kind == "Functions":
            assert inspect.isfunction(inspect.unwrap(value)), f"umd_dataset.{name} is documented as a function, got {value!r}"
        elif kind == "Classes":
            assert inspect.isclass(value) and not issubclass(value, BaseException), f"umd_dataset.{name} is not a class"
        elif kind == "Errors":
            assert inspect.isclass(value) and issubclass(value, umd_dataset.UMDError), f"umd_dataset.{name} is no UMDError"
        else:
            assert isinstance(value, str), f"umd_dataset.{name} is documented as a constant"


def test_public_names_are_the_kind_the_documentation_says():
    _check_kinds()


def test_public_names_stay_right_after_every_submodule_is_imported():
    """Importing a submodule must never shadow a public function (``umd_dataset.modalities`` once
    became the module after `open_release` imported it, and calling it raised TypeError)."""
    code = (
        "import importlib, pkgutil, umd_dataset\n"
        "for m in pkgutil.walk_packages(umd_dataset.__path__, 'umd_dataset.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(umd_dataset.modalities().domain_keys, callable(umd_dataset.coverage))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('ct', 'petct_pet', 'mri', 'petmri_pet') True"
    for name in _modules():
        if name not in OPTIONAL:
            importlib.import_module(name)
    _check_kinds()


def test_modalities_is_callable_after_open_release(small_release_root):
    code = f"import umd_dataset; umd_dataset.open_release({str(small_release_root)!r}); print(umd_dataset.modalities().splits)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('train', 'validation', 'test')"


def test_the_face_exports_what_callers_catch_and_configure():
    from umd_dataset.labels import harmonize

    for name in ("EvalConfig", "EvalResult", "HarmonizeOptions", "ReleaseCounts", "ReleaseSummary"):
        assert name in umd_dataset.__all__
    raised = set(re.findall(r"raise (\w+Error)\(", Path(harmonize.__file__).read_text()))
    assert raised and raised <= set(umd_dataset.__all__), raised - set(umd_dataset.__all__)
    assert umd_dataset.__version__ == importlib.import_module("umd_dataset._version").__version__


def test_errors_derive_from_the_matching_builtin():
    assert issubclass(umd_dataset.ReleaseNotFoundError, FileNotFoundError)
    assert issubclass(umd_dataset.InputNotFoundError, FileNotFoundError)
    assert issubclass(umd_dataset.OutputExistsError, FileExistsError)
    assert issubclass(umd_dataset.UnknownNameError, ValueError)
    for name in umd_dataset.errors.__all__:
        assert issubclass(getattr(umd_dataset.errors, name), umd_dataset.UMDError)


def test_import_creates_nothing(tmp_path):
    subprocess.run([sys.executable, "-c", "import umd_dataset"], cwd=tmp_path, check=True)
    assert list(tmp_path.iterdir()) == []


# --- the house ---------------------------------------------------------------------------------

PARTS = ("schema", "io", "labels", "release", "synthetic", "ingest", "views", "evaluation")


def test_the_top_level_is_the_design_card():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    names = {line.split("/")[0] for line in tracked.stdout.split()} if tracked.returncode == 0 else {p.name for p in REPO.iterdir()}
    assert {"pyproject.toml", "umd_dataset", "tests", "dataset_card.md", "scripts", "README.md"} <= names
    assert not (REPO / "src").exists()
    modules = {p.name for p in PACKAGE.glob("*.py")}
    assert modules == {"__init__.py", "_version.py", "errors.py", "cli.py"}
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == set(PARTS)


def test_tests_mirror_the_parts():
    assert {p.name for p in (REPO / "tests").iterdir() if p.is_dir() and p.name in PARTS} == set(PARTS)


def test_every_module_opens_with_a_line_that_says_what_it_owns():
    for path in sorted(PACKAGE.rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc.splitlines()[0]) > 20, f"{path.relative_to(REPO)} has no opening line saying what it owns"


def _imports(path: Path) -> set[str]:
    """The umd_dataset modules a file imports, anywhere in it (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("umd_dataset"):
            found.add(node.module)
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("umd_dataset")}
    return found


def _module_graph() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_nothing_inside_the_package_imports_the_face():
    graph = _module_graph()
    importers = sorted(name for name, targets in graph.items() if "umd_dataset" in targets and name != "umd_dataset")
    assert importers == []


def test_no_import_cycle_inside_the_package():
    graph = _module_graph()
    graph.pop("umd_dataset")  # the face imports everything; nothing imports it (test above)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if target == "umd_dataset" or target not in graph:
                continue
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target] if target in path else [node, target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_parts_import_downwards_only():
    """Each part imports only the parts below it (release -> synthetic is the one exception:
    resolving "umd-mini" generates it on first use), and views never import ingest."""
    order = ["errors", "_version", "schema", "io", "labels", "release", "synthetic", "ingest", "views", "evaluation"]
    allowed_up = {("release", "synthetic")}
    forbidden = {("views", "ingest"), ("evaluation", "ingest")}
    for name, targets in _module_graph().items():
        part = name.split(".")[1] if name.count(".") else None
        if part not in order:
            continue
        for target in targets:
            other = target.split(".")[1] if target.count(".") else "face"
            upwards = other in order and order.index(other) > order.index(part) and (part, other) not in allowed_up
            if upwards or (part, other) in forbidden:
                pytest.fail(f"{name} imports {target}: {part} must not import {other}")
