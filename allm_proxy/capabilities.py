"""What each model family accepts: the one table of model capabilities.

Model ids churn (OpenAI retired DALL-E and gpt-image-1 in 2026; Google
retires Gemini image models every few months), so nothing here is a closed
list of models. A family matches model ids by prefix; the longest prefix
wins; an id no family matches gets its provider's permissive `generic`
family and is passed to the provider as is. A config file can add families
or override any field of a built-in one (`[families.NAME]`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .types import OPTION_FIELDS, ImageRequest, parse_size

STANDARD_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
EXTENDED_RATIOS = (*STANDARD_RATIOS, "1:4", "4:1", "1:8", "8:1")

# GPT image models take every provider option but DALL-E 3's `style`; `input_fidelity` only in edits.
GPT_FIELDS = frozenset(OPTION_FIELDS) - {"style", "input_fidelity"}
GPT_EDIT_FIELDS = GPT_FIELDS | {"input_fidelity"}


@dataclass(frozen=True)
class FlexibleSizes:
    """Sizes given as any WxH within bounds (gpt-image-2 style)."""

    multiple_of: int = 16
    min_ratio: float = 1 / 3
    max_ratio: float = 3.0
    max_long_edge: int = 3840
    max_short_edge: int = 2160
    min_edge: int = 16

    def check(self, w: int, h: int) -> str | None:
        """None when (w, h) is allowed, else the reason why not."""
        if w % self.multiple_of or h % self.multiple_of:
            return f"width and height must be multiples of {self.multiple_of}"
        if min(w, h) < self.min_edge:
            return f"width and height must be at least {self.min_edge}"
        if max(w, h) > self.max_long_edge or min(w, h) > self.max_short_edge:
            return f"the largest size is {self.max_long_edge}x{self.max_short_edge} (either orientation)"
        ratio = w / h
        if ratio < self.min_ratio - 1e-9 or ratio > self.max_ratio + 1e-9:
            return f"the aspect ratio must be between {self._ratio_text()}"
        return None

    def _ratio_text(self) -> str:
        return f"1:{round(1 / self.min_ratio):g} and {self.max_ratio:g}:1"

    def describe(self) -> str:
        multiple = f" with both multiples of {self.multiple_of}" if self.multiple_of > 1 else ""
        return (
            f"any WIDTHxHEIGHT{multiple}, aspect ratio between {self._ratio_text()}, "
            f"at most {self.max_long_edge}x{self.max_short_edge}"
        )


@dataclass(frozen=True)
class ModelFamily:
    """The rules one family of models follows (docs/spec/openai-images.md §5).

    `accepts` names the optional typed fields the family takes beyond
    model/prompt/n/size/response_format/user; the wire validator rejects the
    others with `unknown_parameter`, as OpenAI does.
    """

    name: str
    provider: str
    prefixes: tuple[str, ...] = ()
    operations: frozenset[str] = frozenset({"generate", "edit"})
    prompt_max: int = 32000
    n_max: int = 10
    sizes: tuple[str, ...] = ()
    flexible_sizes: FlexibleSizes | None = None
    qualities: tuple[str, ...] = ()
    styles: tuple[str, ...] = ()
    accepts: frozenset[str] = frozenset()
    edit_accepts: frozenset[str] | None = None
    # True where the provider only ever returns base64 (the proxy hosts URLs for it).
    b64_only: bool = False
    # True where the response carries usage and the echo fields (GPT-image style).
    gpt_style_response: bool = False
    revised_prompt: bool = False
    max_input_images: int = 16
    square_png_input: bool = False
    default_size: str | None = None
    default_quality: str | None = None
    # Gemini: aspect ratios and imageSize tiers the model supports.
    aspect_ratios: tuple[str, ...] = ()
    image_sizes: tuple[str, ...] = ()
    output_tokens_per_image: int = 0
    # Permissive families validate only types, never values.
    permissive: bool = False

    def accepted_fields(self, operation: str) -> frozenset[str]:
        if operation == "edit" and self.edit_accepts is not None:
            return self.edit_accepts
        return self.accepts

    def size_allowed(self, size: str) -> bool:
        if self.permissive or size in self.sizes:
            return True
        if self.flexible_sizes is None:
            return False
        try:
            wh = parse_size(size)
        except ValueError:
            return False
        return wh is not None and self.flexible_sizes.check(*wh) is None

    def describe_sizes(self) -> str:
        listed = ", ".join(self.sizes)
        if self.flexible_sizes is not None:
            return f"{listed}, or {self.flexible_sizes.describe()}" if listed else self.flexible_sizes.describe()
        return listed


_DALLE2 = ModelFamily(
    name="dall-e-2",
    provider="openai",
    prefixes=("dall-e-2",),
    operations=frozenset({"generate", "edit", "variation"}),
    prompt_max=1000,
    sizes=("256x256", "512x512", "1024x1024"),
    qualities=("standard",),
    max_input_images=1,
    square_png_input=True,
    default_size="1024x1024",
    accepts=frozenset({"quality"}),
)
_DALLE3 = ModelFamily(
    name="dall-e-3",
    provider="openai",
    prefixes=("dall-e-3",),
    operations=frozenset({"generate"}),
    prompt_max=4000,
    n_max=1,
    sizes=("1024x1024", "1792x1024", "1024x1792"),
    qualities=("standard", "hd"),
    styles=("vivid", "natural"),
    revised_prompt=True,
    default_size="1024x1024",
    default_quality="standard",
    accepts=frozenset({"quality", "style"}),
)
_GPT_IMAGE = ModelFamily(
    name="gpt-image",
    provider="openai",
    prefixes=("gpt-image", "chatgpt-image"),
    sizes=("1024x1024", "1536x1024", "1024x1536", "auto"),
    qualities=("low", "medium", "high", "auto"),
    accepts=GPT_FIELDS,
    edit_accepts=GPT_EDIT_FIELDS - {"moderation"},
    b64_only=True,
    gpt_style_response=True,
    default_size="1024x1024",
    default_quality="high",
)
_GPT_IMAGE_2 = dataclasses.replace(
    _GPT_IMAGE,
    name="gpt-image-2",
    prefixes=("gpt-image-2",),
    flexible_sizes=FlexibleSizes(),
    qualities=("low", "medium", "high", "auto", "xhigh", "max"),
    edit_accepts=GPT_EDIT_FIELDS - {"moderation", "input_fidelity"},
)
_OPENAI_GENERIC = ModelFamily(
    name="openai-generic",
    provider="openai",
    operations=frozenset({"generate", "edit", "variation"}),
    permissive=True,
    accepts=GPT_EDIT_FIELDS | {"style"},
)

_GEMINI_COMMON: dict[str, Any] = {
    "provider": "gemini",
    "operations": frozenset({"generate", "edit", "variation"}),
    # "auto" leaves the ratio and tier to the model (the gemini adapter then omits imageConfig).
    "sizes": ("auto",),
    "flexible_sizes": FlexibleSizes(
        multiple_of=1, min_ratio=1 / 8, max_ratio=8.0, max_long_edge=8192, max_short_edge=8192, min_edge=1
    ),
    "qualities": ("low", "medium", "high", "auto", "standard", "hd"),
    "styles": ("vivid", "natural"),
    "accepts": GPT_EDIT_FIELDS | {"style"},
    "b64_only": True,
    "gpt_style_response": True,
    "max_input_images": 14,
}
_GEMINI_FAMILIES = (
    ModelFamily(
        name="gemini-nano-banana-2.1",
        prefixes=("gemini-nano-banana-2.1",),
        aspect_ratios=EXTENDED_RATIOS,
        image_sizes=("1K", "2K", "4K"),
        output_tokens_per_image=1120,
        **_GEMINI_COMMON,
    ),
    ModelFamily(
        name="gemini-3-pro-image",
        prefixes=("gemini-3-pro-image",),
        aspect_ratios=STANDARD_RATIOS,
        image_sizes=("1K", "2K", "4K"),
        output_tokens_per_image=1120,
        **_GEMINI_COMMON,
    ),
    ModelFamily(
        name="gemini-3.1-flash-lite-image",
        prefixes=("gemini-3.1-flash-lite-image",),
        aspect_ratios=EXTENDED_RATIOS,
        image_sizes=("1K",),
        output_tokens_per_image=1120,
        **_GEMINI_COMMON,
    ),
    ModelFamily(
        name="gemini-3.1-flash-image",
        prefixes=("gemini-3.1-flash-image",),
        aspect_ratios=EXTENDED_RATIOS,
        image_sizes=("512", "1K", "2K", "4K"),
        output_tokens_per_image=1120,
        **_GEMINI_COMMON,
    ),
    ModelFamily(
        name="gemini-2.5-flash-image",
        prefixes=("gemini-2.5-flash-image",),
        aspect_ratios=STANDARD_RATIOS,
        image_sizes=(),
        output_tokens_per_image=1290,
        **{**_GEMINI_COMMON, "max_input_images": 3},
    ),
)
_GEMINI_GENERIC = ModelFamily(
    name="gemini-generic",
    prefixes=(),
    aspect_ratios=STANDARD_RATIOS,
    image_sizes=("1K", "2K", "4K"),
    output_tokens_per_image=1120,
    **_GEMINI_COMMON,
)

BUILTIN_FAMILIES: tuple[ModelFamily, ...] = (_DALLE2, _DALLE3, _GPT_IMAGE, _GPT_IMAGE_2, *_GEMINI_FAMILIES)
# The family an unknown model id gets, by the rules its provider follows (`AdapterInfo.rules`).
GENERIC_FAMILIES: dict[str, ModelFamily] = {"openai": _OPENAI_GENERIC, "gemini": _GEMINI_GENERIC}


@dataclass(frozen=True)
class ModelDefault:
    """The model a request that names none gets: a provider's rule (`AdapterInfo.default_model`).

    `fixed` is one model for every request. Without it, `legacy` and `gpt`
    follow OpenAI's documented rule (docs/spec/openai-images.md §2-4):
    `legacy` (dall-e-2) unless the request uses a parameter only the GPT-image
    models have, then `gpt`; variations always get `legacy`. With neither,
    the proxy names no model and the provider applies its own default.
    """

    fixed: str | None = None
    legacy: str | None = None
    gpt: str | None = None

    def choose(self, request: ImageRequest) -> str | None:
        if self.fixed is not None or self.legacy is None:
            return self.fixed
        if request.operation == "variation" or self.gpt is None or not uses_gpt_image_parameters(request):
            return self.legacy
        return self.gpt

    def describe(self) -> str:
        """For `/healthz`, the `serve` banner and `--help`."""
        if self.fixed is not None:
            return self.fixed
        if self.legacy is None:
            return (
                "none (the provider chooses: OpenAI takes dall-e-2, or its GPT-image default when GPT-image "
                "parameters are used)"
            )
        return f"auto ({self.legacy}, or {self.gpt} when GPT-image parameters are used)"


def uses_gpt_image_parameters(request: ImageRequest) -> bool:
    """True when `request` uses a parameter that only the GPT-image models have (docs/spec/openai-images.md §2).

    `stream=false` is what the SDK sends for "no streaming", so only `stream=true` counts.
    """
    for name in GPT_EDIT_FIELDS:
        value = getattr(request, name)
        if name == "stream":
            if value:
                return True
        elif name == "quality":
            if value in _GPT_ONLY_QUALITIES:
                return True
        elif value is not None:
            return True
    return False


_GPT_ONLY_QUALITIES = frozenset({"low", "medium", "high", "auto"})

# What OpenAI's Images API does with a request that names no model, and so what the fake does.
OPENAI_DOCUMENTED_DEFAULT = ModelDefault(legacy="dall-e-2", gpt="gpt-image-1.5")
# The proxy names no model; the provider applies its own default (OpenAI pass-through).
PROVIDER_DECIDES = ModelDefault()

_TUPLE_FIELDS = {"prefixes", "sizes", "qualities", "styles", "aspect_ratios", "image_sizes"}
_SET_FIELDS = {"operations", "accepts", "edit_accepts"}


@dataclass
class ModelCatalog:
    """Looks model ids up in the family table (built-ins plus config)."""

    families: list[ModelFamily] = field(default_factory=lambda: list(BUILTIN_FAMILIES))
    generic: dict[str, ModelFamily] = field(default_factory=lambda: dict(GENERIC_FAMILIES))

    @classmethod
    def from_config(cls, overrides: Mapping[str, Mapping[str, Any]] | None) -> ModelCatalog:
        """Built-ins, then each `[families.NAME]` table: a new family or changes to one."""
        catalog = cls()
        for name, raw in (overrides or {}).items():
            catalog.add(_family_from_config(name, raw, catalog.family_named(name)))
        return catalog

    def family_named(self, name: str) -> ModelFamily | None:
        return next((f for f in self.families if f.name == name), None)

    def add(self, family: ModelFamily) -> None:
        self.families = [f for f in self.families if f.name != family.name] + [family]

    def lookup(self, model: str | None) -> ModelFamily | None:
        """The family whose longest prefix matches `model`, or None for an unknown id."""
        if not model:
            return None
        bare = model.removeprefix("models/")
        best: tuple[int, ModelFamily] | None = None
        for family in self.families:
            for prefix in family.prefixes:
                if bare.startswith(prefix) and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), family)
        return best[1] if best else None

    def for_provider(self, model: str | None, rules: str) -> ModelFamily:
        """The family of `model`, or the permissive generic family of `rules` (`AdapterInfo.rules`)."""
        family = self.lookup(model)
        if family is not None:
            return family
        try:
            return self.generic[rules]
        except KeyError:
            raise ValueError(f"no model rules named {rules!r}; known: {', '.join(sorted(self.generic))}") from None

    def known_prefixes(self) -> Iterable[str]:
        for family in self.families:
            yield from family.prefixes


def _family_from_config(name: str, raw: Mapping[str, Any], base: ModelFamily | None) -> ModelFamily:
    valid = {f.name for f in dataclasses.fields(ModelFamily)}
    unknown = set(raw) - valid - {"match", "like"}
    if unknown:
        raise ValueError(f"[families.{name}]: unknown keys {sorted(unknown)}; valid keys: {sorted(valid)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "like":
            continue
        key = "prefixes" if key == "match" else key
        if key in _TUPLE_FIELDS:
            value = (value,) if isinstance(value, str) else tuple(value)
        elif key in _SET_FIELDS:
            value = frozenset([value] if isinstance(value, str) else value)
        elif key == "flexible_sizes":
            value = FlexibleSizes(**value) if isinstance(value, Mapping) else None
        values[key] = value
    template = base
    if "like" in raw:
        template = next((f for f in BUILTIN_FAMILIES if f.name == raw["like"]), None)
        if template is None:
            names = ", ".join(f.name for f in BUILTIN_FAMILIES)
            raise ValueError(f"[families.{name}]: like = {raw['like']!r} is not a built-in family ({names})")
    if template is None:
        if "provider" not in values:
            raise ValueError(f'[families.{name}]: a new family needs provider = "openai" or "gemini"')
        return ModelFamily(name=name, **values)
    return dataclasses.replace(template, name=name, **values)
