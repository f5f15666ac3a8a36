"""One base for every adapter's options: an unknown key is an error that lists the valid ones.

A provider's options come from `[providers.NAME]` in the config, from flags,
or from `Engine(image_adapter_opts=...)`. A misspelt key (`max_concurency`)
silently ignored would leave the user wondering why the setting does nothing,
so each adapter declares its options as a frozen dataclass deriving from
`AdapterOptions`; the dataclass fields are the adapter's own keys, and
`from_mapping` refuses any other key before a value is read.

    @dataclass(frozen=True)
    class TinyOptions(AdapterOptions):
        provider: ClassVar[str] = "tiny"
        colour: str = "red"

    TinyOptions.from_mapping({"colour": "blue"})     # TinyOptions(colour='blue')
    TinyOptions.from_mapping({"color": "blue"})      # ValueError naming color and the valid keys
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

# Read by the engine for every provider (key resolution, URL fetching), not by adapters;
# listed here so that they are valid keys for every adapter and a typo in any other is an error.
ENGINE_KEYS = frozenset({"api_key", "api_key_env", "materialize_urls"})


@dataclass(frozen=True)
class AdapterOptions:
    """Base of an adapter's options; subclasses are frozen dataclasses, one field per key.

    `provider` names the adapter in error messages. Override `_values` to
    check or convert values (the keys are known to be valid by then); the
    default takes every field's value as given.
    """

    provider: ClassVar[str] = "adapter"

    @classmethod
    def own_keys(cls) -> frozenset[str]:
        """The adapter's own keys: the dataclass fields."""
        return frozenset(f.name for f in dataclasses.fields(cls))

    @classmethod
    def valid_keys(cls) -> frozenset[str]:
        """Every key the provider's options may hold: its own plus the engine's."""
        return cls.own_keys() | ENGINE_KEYS

    @classmethod
    def check_keys(cls, raw: Mapping[str, Any]) -> None:
        """Raise ValueError naming each unknown key and listing the valid ones."""
        unknown = set(raw) - cls.valid_keys()
        if unknown:
            raise ValueError(
                f"unknown options for the {cls.provider} provider: {sorted(unknown)}; "
                f"known: {', '.join(sorted(cls.valid_keys()))}"
            )

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Self:
        """The options `raw` gives; unknown keys and bad values fail now, with what is valid named."""
        cls.check_keys(raw)
        return cls(**cls._values(raw))

    @classmethod
    def _values(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        own = cls.own_keys()
        return {key: value for key, value in raw.items() if key in own}
