"""The layout's contracts that import-linter (`lint-imports`, pyproject.toml) cannot state: files a reader can
hold in mind, stage functions that fit on a screen, stages that never name a model kind, no private names
imported across modules, and no import cycle among the stage scripts (they import each other by file name,
which import-linter does not follow)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "src" / "monosem").rglob("*.py"), *(ROOT / "pipeline").glob("*.py")])


def test_no_file_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in SOURCES if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_no_stage_function_over_60_lines():
    long = {}
    for path in (ROOT / "pipeline").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 60:
                long[f"{path.name}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}


def test_no_stage_names_a_model_kind():
    """Stages ask a kind's family; none compares, defaults or looks up a kind by its name."""
    from monosem.toy.families import FAMILIES

    found = [f"{path.name}:{node.lineno} {node.value!r}" for path in (ROOT / "pipeline").glob("*.py")
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and node.value in FAMILIES and node.value != "power"]  # a row key too
    assert found == []


def test_no_import_cycle_among_the_stage_scripts():
    stages = {p.stem: p for p in (ROOT / "pipeline").glob("*.py")}
    imports = {name: {alias.name.split(".")[0] for node in ast.walk(ast.parse(path.read_text()))
                      for alias in (node.names if isinstance(node, ast.Import) else
                                    [ast.alias(node.module or "")] if isinstance(node, ast.ImportFrom) else [])
                      if alias.name.split(".")[0] in stages}
               for name, path in stages.items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join(path + (name,))}"
        if name not in done:
            for dep in imports[name]:
                visit(dep, path + (name,))
            done.add(name)

    for name in stages:
        visit(name, ())
    assert imports["train"] >= {"boot", "common"}  # the graph is read (the check has edges to follow)


def test_no_private_name_imported_across_modules():
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or node.level):
                found += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    assert found == []


def test_every_module_sits_in_a_layer_of_the_contract_and_the_layout_page_names_it():
    """Each top-level package or module of the library is a layer of pyproject.toml's `layers` contract (so
    import-linter checks it), and docs/layout.md names every source file of the library and the stages."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = {m.strip().removeprefix("monosem.") for layer in layers for m in layer.split("|")} - {"pipeline"}
    top = {p.stem for p in (ROOT / "src" / "monosem").iterdir()
           if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert top == named
    page = (ROOT / "docs" / "layout.md").read_text()
    files = [p for p in [*(ROOT / "src" / "monosem").rglob("*.py"), *(ROOT / "pipeline").glob("*.py")]
             if p.name != "__init__.py" or p.parent.name == "config"]
    assert [str(p.relative_to(ROOT)) for p in files if p.name not in page] == []
