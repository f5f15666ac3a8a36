"""The `fake` provider: deterministic generated images and scripted replies; no key, no network.

    engine = Engine(image_adapter="fake", image_adapter_opts={"script_path": "replies.yaml"})

`allm_proxy` re-exports `FakeScript`, and importing `allm_proxy` must stay
cheap, so this package loads the image renderer (Pillow drawing, the job
planner) only when the adapter is built or one of its names is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...capabilities import OPENAI_DOCUMENTED_DEFAULT
from ..base import AdapterInfo, AdapterSetup, ImageAdapter
from .script import FakeScript

if TYPE_CHECKING:
    from .adapter import FakeImages, script_from_options, usage_for

_LAZY = frozenset({"FakeImages", "script_from_options", "usage_for"})


def _build(setup: AdapterSetup) -> ImageAdapter:
    from .adapter import FakeImages

    return FakeImages(setup.options, state=setup.state)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import adapter

        return getattr(adapter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


INFO = AdapterInfo(
    name="fake",
    factory=_build,
    key_env=(),
    needs_key=False,
    default_model=OPENAI_DOCUMENTED_DEFAULT,
    # The fake stands in for OpenAI: unknown model ids get OpenAI's permissive rules.
    rules="openai",
)

__all__ = ["INFO", "FakeImages", "FakeScript", "script_from_options", "usage_for"]
