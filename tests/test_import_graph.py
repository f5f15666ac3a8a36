"""The package's layering, read from the source: data flows one way, so imports do too.

Every import counts, the lazy ones inside functions included (they run too); only those under
`if TYPE_CHECKING:` do not, since they never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "allm_proxy"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The modules (and `module.name`s) `path` imports, absolute, lazy imports included."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def test_the_package_has_no_import_cycles() -> None:
    edges = graph()
    # A package's __init__ re-exports its parts: an edge into a parent package is the parent's own business.
    edges = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in edges.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                cycles.append([*trail[trail.index(dep) :], dep] if dep in trail else [node, dep])
            elif dep not in state:
                visit(dep, [*trail, dep])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_the_cassette_layer_knows_no_server() -> None:
    for path in (PACKAGE / "cassettes").rglob("*.py"):
        bad = {m for m in imports_of(path) if m.split(".")[0] == "starlette" or m.startswith("allm_proxy.server")}
        assert bad == set(), f"{path.name} imports {sorted(bad)}"


def test_relative_imports_resolve_to_the_right_modules() -> None:
    # The checks here mean nothing if relative imports resolve wrongly: pin known ones.
    assert "allm_proxy.errors.UpstreamError" in imports_of(PACKAGE / "adapters" / "gemini" / "adapter.py")
    assert "allm_proxy.adapters.base.AdapterInfo" in imports_of(PACKAGE / "adapters" / "openai" / "__init__.py")
    assert "allm_proxy.engine" in imports_of(PACKAGE / "server" / "app.py")


def test_no_adapter_singles_out_a_cassette_miss() -> None:
    # A cassette miss is raised by the transport under the adapter and passes through it like any
    # error the adapter did not make; an adapter that imports the class is special-casing it.
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in (PACKAGE / "adapters").rglob("*.py")
        if "allm_proxy.errors.CassetteMissError" in imports_of(path)
    ]
    assert offenders == []


def test_no_adapter_knows_the_cassette_layer_or_the_server() -> None:
    assert len(list((PACKAGE / "adapters").rglob("*.py"))) > 20  # every provider package is scanned
    for path in (PACKAGE / "adapters").rglob("*.py"):
        bad = {m for m in imports_of(path) if m.startswith(("allm_proxy.cassettes", "allm_proxy.server", "starlette"))}
        assert bad == set(), f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_core_types_know_nothing_above_them() -> None:
    for name in ("types.py", "errors.py", "capabilities.py", "call.py"):
        deps = {m for m in imports_of(PACKAGE / name) if m.startswith("allm_proxy.")}
        above = {m for m in deps if m.split(".")[1] in ("engine", "server", "adapters", "cassettes", "wire")}
        assert above == set(), f"{name} imports {sorted(above)}"


def test_a_proxy_that_keeps_no_cassette_imports_no_vcrpy() -> None:
    """vcrpy imports every HTTP library it can patch (230 modules, 10 MB of a pass-through's RSS):
    the server, the CLI and the pytest plugin load it only once a cassette is used."""
    code = (
        "import sys\n"
        "from allm_proxy.config import ProxyConfig\n"
        "from allm_proxy.engine import Engine\n"
        "from allm_proxy.server.app import create_app\n"
        "import allm_proxy.cli, allm_proxy.pytest_plugin\n"
        "config = ProxyConfig(provider='openai')\n"
        "create_app(Engine.from_config(config), config)\n"
        "from allm_proxy.cassettes import SecretFilter\n"
        "print(SecretFilter().url('https://example.test/v1/x'))\n"
        "print(sorted(m for m in ('vcr', 'requests', 'urllib3') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.splitlines() == ["https://example.test/v1/x", "[]"], done.stderr


def test_the_cassette_package_still_gives_its_parts() -> None:
    """In a fresh interpreter: the package alone loads no vcrpy; asking for a part brings it in, and
    the part stays in the module (a second lookup is an ordinary attribute); dir() lists them all."""
    code = (
        "import sys\n"
        "import allm_proxy.cassettes as cassettes\n"
        "print('vcr' in sys.modules, sorted(set(cassettes.__all__) - set(dir(cassettes))))\n"
        "parts = {name: getattr(cassettes, name).__name__ for name in cassettes.__all__}\n"
        "print(parts == {name: name for name in cassettes.__all__}, 'vcr' in sys.modules)\n"
        "print(all(name in vars(cassettes) for name in cassettes.__all__))\n"
        "try:\n"
        "    cassettes.CassetteLibary\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.splitlines() == [
        "False []",
        "True True",
        "True",
        "module 'allm_proxy.cassettes' has no attribute 'CassetteLibary'",
    ], done.stderr
