"""The model family table: prefix lookup, unknown ids, config extension."""

from __future__ import annotations

import pytest

from allm_proxy.capabilities import ModelCatalog
from allm_proxy.config import config_from_mapping


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("dall-e-2", "dall-e-2"),
        ("dall-e-3", "dall-e-3"),
        ("gpt-image-1", "gpt-image"),
        ("gpt-image-1.5", "gpt-image"),
        ("gpt-image-1-mini", "gpt-image"),
        ("chatgpt-image-latest", "gpt-image"),
        ("gpt-image-2", "gpt-image-2"),
        ("gpt-image-2-2026-04-21", "gpt-image-2"),
        ("gemini-3-pro-image", "gemini-3-pro-image"),
        ("models/gemini-3.1-flash-image", "gemini-3.1-flash-image"),
        ("gemini-3.1-flash-lite-image", "gemini-3.1-flash-lite-image"),
    ],
)
def test_known_ids_match_their_family_by_longest_prefix(model: str, family: str) -> None:
    found = ModelCatalog().lookup(model)
    assert found is not None and found.name == family


def test_unknown_ids_get_the_providers_permissive_family() -> None:
    catalog = ModelCatalog()
    assert catalog.lookup("gpt-image-9-turbo") is not None  # a new gpt-image still matches its family
    unknown = catalog.for_provider("brand-new-model", "openai")
    assert unknown.permissive and unknown.size_allowed("7x7")
    assert catalog.for_provider("gemini-9-ultra-image", "gemini").name == "gemini-generic"


def test_config_adds_a_family_like_a_builtin() -> None:
    config = config_from_mapping(
        {"families": {"gpt-image-3": {"like": "gpt-image-2", "match": ["gpt-image-3"], "n_max": 4}}}
    )
    catalog = ModelCatalog.from_config(config.families)
    family = catalog.lookup("gpt-image-3-preview")
    assert family is not None and family.name == "gpt-image-3" and family.n_max == 4
    assert family.size_allowed("1536x864")


def test_config_overrides_a_builtin_family() -> None:
    catalog = ModelCatalog.from_config({"dall-e-3": {"n_max": 2}})
    family = catalog.lookup("dall-e-3")
    assert family is not None and family.n_max == 2 and family.styles == ("vivid", "natural")


def test_config_family_with_unknown_key_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        ModelCatalog.from_config({"x": {"provider": "openai", "sizez": ["1x1"]}})


@pytest.mark.parametrize(
    ("size", "ok"),
    [
        ("1536x864", True),
        ("3840x2160", True),
        ("1000x1000", False),
        ("4000x1000", False),
        ("480x1600", False),
        ("2160x3840", True),
    ],
)
def test_gpt_image_2_flexible_sizes(size: str, ok: bool) -> None:
    family = ModelCatalog().lookup("gpt-image-2")
    assert family is not None and family.size_allowed(size) is ok
