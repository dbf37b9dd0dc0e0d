from __future__ import annotations

import pytest

from src.infrastructure.config.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("given", "level"),
    [
        ("log", "info"),
        ("warn", "warning"),
        ("verbose", "debug"),
        ("fatal", "critical"),
        ("DEBUG", "debug"),
    ],
)
def test_the_original_services_log_levels_still_start(
    monkeypatch: pytest.MonkeyPatch, given: str, level: str
) -> None:
    monkeypatch.setenv("LOG_LEVEL", given)
    assert load_settings().log_level == level


def test_auth_can_be_disabled_only_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_AUTH_DISABLED", "true")
    assert load_settings().admin_auth_disabled
    monkeypatch.setenv("ADMIN_HOST", "0.0.0.0")
    with pytest.raises(SettingsError, match="ADMIN_AUTH_DISABLED=true needs ADMIN_HOST"):
        load_settings()
