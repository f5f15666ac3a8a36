"""No adapter knows the cassette layer exists: checked on the import graph of allm_proxy/adapters/."""

from __future__ import annotations

import ast
from pathlib import Path

import allm_proxy

ADAPTERS = Path(allm_proxy.__file__).parent / "adapters"


def imports_of(path: Path) -> set[tuple[str, str | None]]:
    """(absolute module, imported name or None) for every import in one source file."""
    parts = list(path.relative_to(ADAPTERS.parent.parent).with_suffix("").parts)
    package = parts[:-1]  # a module's package; for __init__.py, the package itself
    found: set[tuple[str, str | None]] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                found.add((module, alias.name))
                found.add((f"{module}.{alias.name}", None))  # `from .. import cassettes` imports a module
    return found


def adapter_sources() -> list[Path]:
    return sorted(ADAPTERS.rglob("*.py"))


def test_the_import_check_resolves_relative_imports() -> None:
    # The check below means nothing if relative imports resolve wrongly: pin two known ones.
    assert ("allm_proxy.errors", "UpstreamError") in imports_of(ADAPTERS / "gemini" / "adapter.py")
    assert ("allm_proxy.adapters.base", "AdapterInfo") in imports_of(ADAPTERS / "openai" / "__init__.py")


def test_no_adapter_module_imports_the_cassette_layer() -> None:
    sources = adapter_sources()
    assert len(sources) > 20  # every provider package is scanned
    offenders = sorted(
        f"{path.relative_to(ADAPTERS)}: {module}"
        for path in sources
        for module, _ in imports_of(path)
        if module == "allm_proxy.cassettes" or module.startswith("allm_proxy.cassettes.")
    )
    assert offenders == []


def test_no_adapter_module_singles_out_a_cassette_miss() -> None:
    # A cassette miss is raised by the transport under the adapter and passes through it like any
    # error the adapter did not make; an adapter that imports the class is special-casing it.
    offenders = sorted(
        str(path.relative_to(ADAPTERS))
        for path in adapter_sources()
        if any(name == "CassetteMissError" for _, name in imports_of(path))
    )
    assert offenders == []
