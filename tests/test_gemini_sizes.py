"""OpenAI sizes as Gemini imageConfig (spec/gemini-images.md section 11 table), per target model."""

from __future__ import annotations

import pytest

from allm_proxy.adapters.gemini.sizes import GeminiImageConfig, image_config_for
from allm_proxy.capabilities import ModelCatalog
from allm_proxy.errors import InvalidRequestError

CATALOG = ModelCatalog()


def config(size: str | None, model: str = "gemini-3-pro-image", quality: str | None = None) -> GeminiImageConfig:
    return image_config_for(size, quality, CATALOG.for_provider(model, "gemini"), model=model)


# (OpenAI family, size, quality, aspectRatio, imageSize on gemini-3-pro-image): every size of every
# OpenAI family, with the tier one up for high/hd.
SPEC_TABLE = [
    ("dall-e-2", "256x256", None, "1:1", "1K"),
    ("dall-e-2", "512x512", None, "1:1", "1K"),
    ("dall-e-2", "1024x1024", None, "1:1", "1K"),
    ("dall-e-3", "1024x1024", "standard", "1:1", "1K"),
    ("dall-e-3", "1024x1024", "hd", "1:1", "2K"),
    ("dall-e-3", "1792x1024", "standard", "16:9", "1K"),
    ("dall-e-3", "1792x1024", "hd", "16:9", "2K"),
    ("dall-e-3", "1024x1792", "standard", "9:16", "1K"),
    ("dall-e-3", "1024x1792", "hd", "9:16", "2K"),
    ("gpt-image", "1024x1024", "medium", "1:1", "1K"),
    ("gpt-image", "1024x1024", "high", "1:1", "2K"),
    ("gpt-image", "1536x1024", "auto", "3:2", "1K"),
    ("gpt-image", "1536x1024", "high", "3:2", "2K"),
    ("gpt-image", "1024x1536", "low", "2:3", "1K"),
    ("gpt-image", "1024x1536", "high", "2:3", "2K"),
    ("gpt-image-2", "2048x1152", None, "16:9", "2K"),
    ("gpt-image-2", "3840x2160", None, "16:9", "4K"),
    ("gpt-image-2", "1200x1600", None, "3:4", "2K"),
    ("gpt-image-2", "2000x1600", "high", "5:4", "4K"),
    ("gpt-image-2", "2560x1088", None, "21:9", "2K"),
]


@pytest.mark.parametrize(
    ("family", "size", "quality", "ratio", "tier"), SPEC_TABLE, ids=[f"{r[0]}-{r[1]}-{r[2]}" for r in SPEC_TABLE]
)
def test_openai_sizes_map_as_tabulated(family: str, size: str, quality: str | None, ratio: str, tier: str) -> None:
    openai_family = CATALOG.family_named(family)
    assert openai_family is not None and openai_family.size_allowed(size)  # a size that family really takes
    assert config(size, quality=quality) == GeminiImageConfig(ratio, tier)


@pytest.mark.parametrize("size", ["256x256", "512x512"])
def test_small_dall_e_2_sizes_use_the_512_tier_where_the_model_has_it(size: str) -> None:
    assert config(size, "gemini-3.1-flash-image") == GeminiImageConfig("1:1", "512")


@pytest.mark.parametrize("size", ["auto", None])
def test_auto_or_absent_size_omits_the_image_config(size: str | None) -> None:
    assert config(size, quality="high").to_json() == {}


@pytest.mark.parametrize("size", ["1024x1024", "1792x1024", "1024x1536", "1536x1024"])
def test_gemini_25_flash_gets_a_ratio_but_never_an_image_size(size: str) -> None:
    got = config(size, "gemini-2.5-flash-image", quality="hd")
    assert got.image_size is None and got.aspect_ratio is not None
    assert "imageSize" not in got.to_json()


def test_quality_bump_stays_where_the_model_has_no_higher_tier() -> None:
    assert config("1792x1024", "gemini-3.1-flash-lite-image", "hd") == GeminiImageConfig("16:9", "1K")


def test_extended_ratio_models_get_the_tall_ratios() -> None:
    assert config("1024x3072", "gemini-3.1-flash-image") == GeminiImageConfig("1:4", "2K")
    assert config("1024x3072", "gemini-nano-banana-2.1").aspect_ratio == "1:4"


def test_nearest_ratio_minimises_the_log_distance() -> None:
    # 1.6 lies between 3:2 (1.5) and 16:9 (1.78): |ln 1.6 - ln 1.5| = 0.065 < |ln 1.6 - ln 1.78| = 0.105.
    assert config("1600x1000").aspect_ratio == "3:2"
    assert config("1700x1000").aspect_ratio == "16:9"


def test_a_size_beyond_the_largest_tier_is_a_400_listing_what_is_possible() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        config("2048x2048", "gemini-3.1-flash-lite-image")
    err = caught.value
    assert (err.status, err.param, err.code) == (400, "size", "invalid_size")
    assert "1K" in err.message and "1536" in err.message and "16:9" in err.message


def test_fixed_1k_model_refuses_a_2k_size() -> None:
    with pytest.raises(InvalidRequestError, match="fixed ~1K"):
        config("2752x1536", "gemini-2.5-flash-image")


def test_a_ratio_far_outside_the_models_range_is_a_400_not_a_squash() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        config("1024x3072", "gemini-3-pro-image")
    assert caught.value.code == "invalid_size" and "9:16" in caught.value.message


def test_unknown_model_uses_the_generic_gemini_family() -> None:
    assert config("1792x1024", "gemini-9-ultra-image", "hd") == GeminiImageConfig("16:9", "2K")


def test_config_can_teach_a_new_model_its_ratios_and_tiers() -> None:
    catalog = ModelCatalog.from_config(
        {
            "gemini-4-image": {
                "like": "gemini-3.1-flash-image",
                "match": ["gemini-4-image"],
                "aspect_ratios": ["1:1", "16:9"],
                "image_sizes": ["1K", "4K"],
            }
        }
    )
    family = catalog.for_provider("gemini-4-image-001", "gemini")
    got = image_config_for("1536x1024", "high", family, model="gemini-4-image-001")
    assert got == GeminiImageConfig("16:9", "4K")
