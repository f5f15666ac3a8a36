"""A third-party adapter, installed for real: a package plus its `*.dist-info` with entry points.

`install_tiny_adapter(tmp_path)` writes both into a directory; put that
directory on `sys.path` (or `PYTHONPATH`) and `importlib.metadata` lists the
entry point `tiny` in the group `allm_proxy.adapters`, as it would after
`pip install tiny-adapter`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

# What a third party would publish: an options dataclass, the adapter, and its AdapterInfo.
TINY_SOURCE = textwrap.dedent('''
    """tiny: one solid-colour PNG per image, from a provider that lives outside allm-proxy."""

    from __future__ import annotations

    import io
    from dataclasses import dataclass
    from typing import ClassVar

    from PIL import Image as PILImage

    from allm_proxy import AdapterInfo, Call, Image, ImageRequest, ImageResponse
    from allm_proxy.adapters import AdapterOptions, AdapterSetup
    from allm_proxy.errors import UnsupportedOperationError


    @dataclass(frozen=True)
    class TinyOptions(AdapterOptions):
        provider: ClassVar[str] = "tiny"
        colour: str = "teal"


    class TinyImages:
        name = "tiny"

        def __init__(self, setup: AdapterSetup) -> None:
            self.options = TinyOptions.from_mapping(setup.options)

        async def generate(self, request: ImageRequest, ctx: Call) -> ImageResponse:
            buffer = io.BytesIO()
            PILImage.new("RGB", (8, 8), self.options.colour).save(buffer, "PNG")
            images = [Image(buffer.getvalue(), mime_type="image/png", revised_prompt=f"tiny: {request.prompt}")
                      for _ in range(request.count)]
            return ImageResponse(images=images, model=ctx.model)

        async def edit(self, request: ImageRequest, ctx: Call) -> ImageResponse:
            raise UnsupportedOperationError("tiny makes no edits")

        async def variation(self, request: ImageRequest, ctx: Call) -> ImageResponse:
            raise UnsupportedOperationError("tiny makes no variations")

        async def aclose(self) -> None:
            pass


    def info() -> AdapterInfo:
        return AdapterInfo(name="tiny", factory=TinyImages, needs_key=False, default_model="tiny-1",
                           rules="openai")
''')


def install_tiny_adapter(root: Path, *, entry_point: str = "tiny_adapter:info", name: str = "tiny") -> Path:
    """Write the `tiny_adapter` package and a dist-info declaring `name = entry_point`; returns `root`."""
    package = root / "tiny_adapter"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(TINY_SOURCE)
    dist = root / "tiny_adapter-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-adapter\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[allm_proxy.adapters]\n{name} = {entry_point}\n")
    return root
