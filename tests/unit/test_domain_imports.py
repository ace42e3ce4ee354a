"""The domain depends on the standard library and itself only."""

import ast
import pathlib
import sys

import fastim.domain

DOMAIN = pathlib.Path(fastim.domain.__file__).parent


def imported_roots(path: pathlib.Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            if node.module == "fastim.domain" or (node.module or "").startswith("fastim.domain."):
                continue
            roots.add(node.module.split(".")[0])
    return roots


def test_domain_imports_only_the_standard_library_and_itself():
    offenders = {}
    for path in DOMAIN.glob("*.py"):
        foreign = {root for root in imported_roots(path) if root not in sys.stdlib_module_names}
        if foreign:
            offenders[path.name] = foreign
    assert offenders == {}
