"""The shape the code promises (docs/architecture.md), checked by reading the source: types import
nothing of ours, no import cycles, host paths and hardware facts are spelled in one place each,
every module says its job (that the product imports nothing of the sandbox: test_product_apart)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ROOT / "fleetserve"
PRODUCT_FILES = sorted(PRODUCT.rglob("*.py"))
CHECKOUT_CODE = PRODUCT_FILES + sorted((ROOT / "roles").glob("*.py")) + sorted((ROOT / "files").glob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, `from fleetserve import hostpaths` counted as fleetserve.hostpaths."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _resolved(path: Path, name: str) -> set[str]:
    """What a module imports, relative imports (the vLLM package's) made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set(imports_of(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = ".".join(package[:len(package) - (node.level - 1)] + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def product_modules() -> dict[str, Path]:
    """Every module of the installed package (roles/ ships as fleetserve.roles)."""
    modules = {module_name(p): p for p in PRODUCT_FILES}
    modules.update({"fleetserve." + module_name(p): p for p in sorted((ROOT / "roles").glob("*.py"))})
    return modules


def product_graph() -> dict[str, set[str]]:
    modules = product_modules()
    return {name: {m for m in _resolved(path, name) if m in modules and m != name} for name, path in modules.items()}


def floors() -> dict[str, int]:
    """docs/architecture.md's floors: module or package -> floor."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("<!-- floors: read by tests/test_architecture.py -->")[1].split("<!-- end floors -->")[0]
    found = {}
    for row in table.strip().splitlines()[2:]:
        floor, modules, _ = [cell.strip() for cell in row.strip("|").split("|")]
        found.update({module.strip("`"): int(floor) for module in modules.split()})
    return found


def floor_of(module: str, table: dict[str, int]) -> int:
    """The floor of the longest prefix the table names (fleetserve.plan.caches: fleetserve.plan's)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in table:
            return table[".".join(parts[:end])]
    raise AssertionError(f"{module} stands on no floor of docs/architecture.md")


def test_every_module_stands_on_a_floor_and_imports_only_its_floor_or_below():
    table = floors()
    graph = product_graph()
    upward = [f"{m} (floor {floor_of(m, table)}) imports {d} (floor {floor_of(d, table)})"
              for m, deps in sorted(graph.items()) for d in sorted(deps) if floor_of(d, table) > floor_of(m, table)]
    assert upward == []


@pytest.mark.parametrize("path", sorted((PRODUCT / "schema").glob("*.py")), ids=lambda p: p.name)
def test_the_schema_imports_nothing_of_ours_but_itself(path):
    assert [m for m in imports_of(path) if m.startswith("fleetserve") and not m.startswith("fleetserve.schema")] == []


def test_no_import_cycles_in_the_product():
    graph = product_graph()
    state: dict[str, str] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle.extend(stack[stack.index(nxt):] + [node, nxt] if nxt in stack else [node, nxt])
                return True
            if nxt not in state and visit(nxt, stack + [node]):
                return True
        state[node] = "done"
        return False

    assert not any(visit(n, []) for n in sorted(graph) if n not in state), f"import cycle: {' -> '.join(cycle)}"


def _string_constants(path: Path) -> list[str]:
    """String literals that are not docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


@pytest.mark.parametrize("needle", ["/etc/fleetserve", "/usr/local/lib/fleetserve", ".fleetserve-verified",
                                    "/etc/systemd/system", "/var/cache/fleetserve", ".fleetserve-partial"])
def test_host_paths_are_spelled_only_in_hostpaths(needle):
    spelled = [str(p.relative_to(ROOT)) for p in CHECKOUT_CODE
               if p.name != "hostpaths.py" and any(needle in s for s in _string_constants(p))]
    assert spelled == []


@pytest.mark.parametrize("needle", ["/dev/davinci", "/dev/nvidia", "ASCEND_RT_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES",
                                    "nvidia.com/gpu", "/usr/local/Ascend", "/usr/local/dcmi", "hccn_tool"])
def test_hardware_facts_are_spelled_only_in_hardware_yaml(needle):
    spelled = [str(p.relative_to(ROOT)) for p in CHECKOUT_CODE if any(needle in s for s in _string_constants(p))]
    assert spelled == []


@pytest.mark.parametrize("path", CHECKOUT_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_opens_with_one_line_saying_its_job(path):
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert docstring and docstring.splitlines()[0].strip(), f"{path} has no module docstring"


def test_the_inventory_doc_tables_are_generated_from_the_code():
    import runpy

    generator = runpy.run_path(str(ROOT / "tools" / "gen_inventory_doc.py"))
    current = (ROOT / "docs" / "inventory.md").read_text(encoding="utf-8")
    assert generator["rendered"](current) == current, "run: python tools/gen_inventory_doc.py"
