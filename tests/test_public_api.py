"""The curated public surface: __all__ matches what the package exports."""

from __future__ import annotations

import allm_proxy


def test_all_names_exist_and_are_public() -> None:
    import inspect

    for name in allm_proxy.__all__:
        assert hasattr(allm_proxy, name), name
    exported = {
        name
        for name, value in vars(allm_proxy).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert exported == set(allm_proxy.__all__) - {"__version__"}


def test_importing_the_package_does_no_io_and_loads_no_adapter() -> None:
    import subprocess
    import sys

    # The seam, the registry and the fake's declaration and script (FakeScript is re-exported);
    # no provider's implementation (fake.adapter and its renderer, openai, gemini).
    pieces = (
        "allm_proxy.adapters.base",
        "allm_proxy.adapters.options",
        "allm_proxy.adapters.registry",
        "allm_proxy.adapters.fake",
        "allm_proxy.adapters.fake.script",
    )
    code = (
        f"PIECES = {pieces!r}; import sys, allm_proxy; "
        "print(sorted(m for m in sys.modules if m.startswith('allm_proxy.adapters.') "
        "and m not in PIECES))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # provider adapters load on first use
