"""Config values checked where they enter: the record mode."""

from __future__ import annotations

import pytest

from allm_proxy.config import CassetteSettings, RecordMode


def test_record_mode_is_a_str_enum_of_vcrpy_modes_plus_off() -> None:
    assert [mode.value for mode in RecordMode] == ["off", "none", "once", "new_episodes", "all"]
    assert RecordMode("new_episodes") == "new_episodes"
    assert CassetteSettings(record_mode="none").record_mode is RecordMode.NONE


def test_an_unknown_record_mode_is_refused_with_the_valid_ones_listed() -> None:
    with pytest.raises(ValueError, match="record mode 'sometimes' is not one of off, none, once, new_episodes, all"):
        RecordMode("sometimes")
    with pytest.raises(ValueError, match="is not one of off, none, once"):
        CassetteSettings(record_mode="sometimes")
