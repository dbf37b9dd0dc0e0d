from __future__ import annotations

from src.processing.api.auth import Access, ApiKeys, split_keys


def test_full_and_read_only_keys_and_nothing_else() -> None:
    keys = ApiKeys(["full-1", "full-2"], ["ro"])
    assert keys.access_of("full-2") is Access.WRITE
    assert keys.access_of("ro") is Access.READ
    assert keys.access_of("RO") is None
    assert keys.access_of("") is None
    assert keys.access_of(None) is None
    assert keys.configured


def test_a_key_listed_as_both_gets_full_access() -> None:
    assert ApiKeys(["k"], ["k"]).access_of("k") is Access.WRITE


def test_keys_are_kept_only_as_digests() -> None:
    keys = ApiKeys(["secret-admin-key"], [])
    assert "secret-admin-key" not in repr(vars(keys))


def test_no_keys_refuse_everyone_unless_auth_is_disabled_explicitly() -> None:
    assert not ApiKeys().configured and ApiKeys().access_of("anything") is None
    assert ApiKeys(disabled=True).access_of(None) is Access.WRITE


def test_comma_separated_settings() -> None:
    assert split_keys(" a, b ,,c ") == ["a", "b", "c"]
    assert split_keys("") == []
