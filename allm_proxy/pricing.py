"""What an image call costs, from ONE price table: shipped defaults, overridden or extended by config.

    [prices."gpt-image-1"]                 # per million tokens, USD
    input_text = 5.0
    input_image = 10.0
    output = 40.0

    [prices."dall-e-3".per_image]          # per image, USD, by quality then size ("*" matches any)
    standard = { "1024x1024" = 0.04, "1024x1792" = 0.08, "1792x1024" = 0.08 }
    hd = { "1024x1024" = 0.08, "1024x1792" = 0.12, "1792x1024" = 0.12 }

A table key is a model id, which also prices that id's dated snapshots and
previews (`gpt-image-2` prices `gpt-image-2-2026-04-21`, never `gpt-image-2.5`
or `gpt-image-2-mini`: a new model is not a snapshot), or a prefix that says so
by ending in `-` or `*` (`house-`). The longest matching key wins, and a config
key replaces the default of the same key whole. Token prices apply when the answer carries usage; else the per-image
price of the request's quality and size. Anything else (an unknown model, a
quality or size the table does not list) has no cost: never a guess.

    table = PriceTable.from_config({})
    table.cost("dall-e-3", images=1, quality="hd", size="1024x1024")   # 0.08
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .types import Usage

if TYPE_CHECKING:
    from .call import Call

MILLION = 1_000_000
ANY = "*"
# What may follow a model id in the id of one of its snapshots: a date (-2026-04-21, -2025, -0521),
# or a preview/latest/experimental tag. Anything else is another model.
_SNAPSHOT = re.compile(r"-(\d{4}(-\d{2}){0,2}|\d{2}-\d{2}|preview([-.]\w+)*|latest|exp([-.]\w+)*)")


@dataclass(frozen=True)
class Price:
    """The price of one model (or prefix). Token prices are USD per million tokens."""

    per_image: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    input_text: float | None = None
    input_image: float | None = None
    output: float | None = None
    # Output text tokens (Gemini's thinking text) when priced apart from image output tokens.
    output_text: float | None = None
    # The quality a request that names none is billed at (dall-e-2/3: "standard").
    default_quality: str | None = None
    source: str = ""
    checked: str = ""

    def cost(
        self, *, usage: Usage | None = None, images: int = 0, quality: str | None = None, size: str | None = None
    ) -> float | None:
        """USD for one answer, or None when this price cannot say."""
        if usage is not None and self.output is not None:
            return self._tokens(usage)
        if not self.per_image or images <= 0:
            return None
        by_size = self.per_image.get(quality or self.default_quality or ANY) or self.per_image.get(ANY)
        if by_size is None:
            return None
        each = by_size.get(size or ANY, by_size.get(ANY))
        return None if each is None else each * images

    def _tokens(self, usage: Usage) -> float:
        assert self.output is not None
        text_in = self.input_text if self.input_text is not None else 0.0
        image_in = self.input_image if self.input_image is not None else text_in
        total = usage.input_text_tokens * text_in + usage.input_image_tokens * image_in
        if self.output_text is not None and usage.output_image_tokens is not None:
            total += usage.output_image_tokens * self.output + (usage.output_text_tokens or 0) * self.output_text
        else:
            total += usage.output_tokens * self.output
        return total / MILLION


_OPENAI = "https://platform.openai.com/docs/pricing"
_GOOGLE = "https://ai.google.dev/gemini-api/docs/pricing"

# The shipped defaults. `checked` says when and how far each was confirmed; where it says
# "not confirmed", the figure is the last one we knew and should be checked against the page.
DEFAULT_PRICES: dict[str, Price] = {
    "dall-e-2": Price(
        per_image={"standard": {"256x256": 0.016, "512x512": 0.018, "1024x1024": 0.020}},
        default_quality="standard",
        source=_OPENAI,
        checked="2026-05; not confirmed against the page here (no network), figures as long published",
    ),
    "dall-e-3": Price(
        per_image={
            "standard": {"1024x1024": 0.040, "1024x1792": 0.080, "1792x1024": 0.080},
            "hd": {"1024x1024": 0.080, "1024x1792": 0.120, "1792x1024": 0.120},
        },
        default_quality="standard",
        source=_OPENAI,
        checked="2026-05; not confirmed against the page here (no network), figures as long published",
    ),
    "gpt-image-1": Price(
        input_text=5.0,
        input_image=10.0,
        output=40.0,
        per_image={
            "low": {"1024x1024": 0.011, "1024x1536": 0.016, "1536x1024": 0.016},
            "medium": {"1024x1024": 0.042, "1024x1536": 0.063, "1536x1024": 0.063},
            "high": {"1024x1024": 0.167, "1024x1536": 0.25, "1536x1024": 0.25},
        },
        source=_OPENAI,
        checked="2026-05; per-image 1024x1024 figures seen in secondary sources, the rest not confirmed",
    ),
    "gpt-image-1-mini": Price(
        input_text=2.0,
        input_image=2.5,
        output=8.0,
        per_image={"low": {"1024x1024": 0.005}, "medium": {"1024x1024": 0.011}, "high": {"1024x1024": 0.036}},
        source=_OPENAI,
        checked="2026-05; per-image figures seen in secondary sources, token prices not confirmed",
    ),
    "gpt-image-1.5": Price(
        input_text=5.0,
        input_image=8.0,
        output=32.0,
        per_image={
            "low": {"1024x1024": 0.009, "1024x1536": 0.013, "1536x1024": 0.013},
            "medium": {"1024x1024": 0.034, "1024x1536": 0.050, "1536x1024": 0.050},
            "high": {"1024x1024": 0.133, "1024x1536": 0.200, "1536x1024": 0.200},
        },
        source=_OPENAI,
        checked="2026-05; seen in secondary sources (llmreference.com, imagine.art, Mar-May 2026), "
        "not on OpenAI's page itself",
    ),
    "gpt-image-2": Price(
        input_text=5.0,
        input_image=8.0,
        output=30.0,
        source=_OPENAI,
        checked="2026-12; token prices as quoted from OpenAI's pricing page by secondary sources "
        "(xairouter.com, robotsatlas.com, read 2026-12-02), not on OpenAI's page itself; no per-image table",
    ),
    "gemini-2.5-flash-image": Price(
        input_text=0.30,
        input_image=0.30,
        output=30.0,
        source=_GOOGLE,
        checked="2026-05; not confirmed against the page here (1290 output tokens = $0.039 an image)",
    ),
    "gemini-3-pro-image": Price(
        input_text=2.0,
        input_image=2.0,
        output=120.0,
        output_text=12.0,
        source=_GOOGLE,
        checked="2026-05; not confirmed against the page here (1K/2K image 1120 tokens = $0.134)",
    ),
    # gemini-3.1-flash-image, gemini-3.1-flash-lite-image, gemini-nano-banana-2.1: no price we could
    # confirm, so none is shipped.
}

_PRICE_KEYS = {f.name for f in fields(Price)}


def _prices(key: str, model: str) -> bool:
    """Whether table key `key` applies to `model` (see the module docstring)."""
    if key.endswith("*"):
        return model.startswith(key[:-1])
    if key.endswith("-"):
        return model.startswith(key)
    return model == key or (model.startswith(key) and _SNAPSHOT.fullmatch(model[len(key) :]) is not None)


class PriceTable:
    """Model id or prefix -> `Price`; the longest matching key wins."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self.prices = dict(prices)
        self._by_length = sorted(self.prices, key=len, reverse=True)

    @classmethod
    def from_config(cls, raw: Mapping[str, Mapping[str, Any]], *, defaults: bool = True) -> PriceTable:
        """The shipped defaults with `[prices."KEY"]` tables over them; a bad table is a `ValueError`."""
        prices = dict(DEFAULT_PRICES) if defaults else {}
        for key, table in raw.items():
            prices[key] = _parse(key, table)
        return cls(prices)

    def lookup(self, model: str | None) -> Price | None:
        """The price of `model`: its own key, a key it is a snapshot of, or the longest prefix key
        (ending in `-` or `*`) it starts with; None when unknown."""
        if not model:
            return None
        return next((self.prices[k] for k in self._by_length if _prices(k, model)), None)

    def cost(
        self,
        model: str | None,
        *,
        usage: Usage | None = None,
        images: int = 0,
        quality: str | None = None,
        size: str | None = None,
    ) -> float | None:
        """USD for one answer of `model`, or None when no price applies."""
        price = self.lookup(model)
        return None if price is None else price.cost(usage=usage, images=images, quality=quality, size=size)


def format_usd(amount: float) -> str:
    """The `x-allm-cost-usd` header value: plain decimal, enough places for a fraction of a cent."""
    return f"{amount:.6f}".rstrip("0").rstrip(".") if amount else "0"


def _parse(key: str, table: Mapping[str, Any]) -> Price:
    where = f'[prices."{key}"]'
    if not isinstance(table, Mapping):
        raise ValueError(f"{where} must be a table")
    unknown = set(table) - _PRICE_KEYS
    if unknown:
        raise ValueError(
            f"{where}: unknown keys {sorted(unknown)}; allowed: per_image, input_text, input_image, "
            "output, output_text, default_quality, source, checked"
        )
    values: dict[str, Any] = {}
    for name in ("input_text", "input_image", "output", "output_text"):
        if name in table:
            values[name] = _usd(table[name], f"{where} {name}")
    per_image = table.get("per_image", {})
    if not isinstance(per_image, Mapping):
        raise ValueError(f"{where} per_image must be a table of quality = {{ size = USD }}")
    values["per_image"] = {
        str(quality): {str(size): _usd(v, f"{where} per_image.{quality}.{size}") for size, v in _table(sizes, where)}
        for quality, sizes in per_image.items()
    }
    if not values["per_image"] and values.get("output") is None:
        raise ValueError(f"{where} needs per_image prices or an output token price")
    for name in ("default_quality", "source", "checked"):
        if name in table:
            values[name] = str(table[name])
    return Price(**values)


def _table(value: Any, where: str) -> list[tuple[str, Any]]:
    if not isinstance(value, Mapping):
        raise ValueError(f'{where} per_image: each quality maps sizes to USD, e.g. standard = {{ "1024x1024" = 0.04 }}')
    return list(value.items())


def _usd(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{where} must be a non-negative number of USD, got {value!r}")
    return float(value)


def account(
    call: Call,
    prices: PriceTable,
    *,
    model: str | None,
    images: int,
    usage: Usage | None,
    quality: str | None,
    size: str | None,
) -> float | None:
    """Note an answer's images, usage and cost on its call; return the cost (None: no price applies).

    Called by whoever answers the client, once per answer (a stream: per completed image). The
    fake provider costs nothing, so it has no cost; a replayed answer costs what it cost when
    recorded (what the cassette saves).
    """
    call.images += images
    if usage is not None:
        call.usage = usage if call.usage is None else call.usage + usage
    if call.route is None or call.route.provider == "fake":
        return None
    cost = prices.cost(model, usage=call.usage, images=call.images, quality=quality, size=size)
    if cost is not None:
        call.cost_usd = cost
    return cost
