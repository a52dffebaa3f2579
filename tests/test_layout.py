"""The layout's contracts (issue 17): files a reader can hold in mind, stage functions that fit on a screen,
stages that never branch on a model kind's name, no private names imported across modules."""

import ast
import re
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


def test_no_stage_compares_a_model_kind_string():
    kinds = r"(jermyn|tms_relu|tms_hidden|power)"
    found = [f"{path.name}:{i}" for path in (ROOT / "pipeline").glob("*.py")
             for i, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(rf"kind\s*(==|!=|in)\s*.*['\"]{kinds}['\"]", line)]
    assert found == []


def test_no_private_name_imported_across_modules():
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or node.level):
                found += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    assert found == []
