from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from src.domain.time import iso_ms, parse_iso


def test_iso_ms_has_milliseconds_and_z():
    assert iso_ms(datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)) == "2024-05-01T12:00:00.123Z"


def test_iso_ms_pads_whole_seconds_to_three_digits():
    assert iso_ms(datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)) == "2024-05-01T12:00:00.000Z"


def test_iso_ms_converts_other_offsets_to_utc():
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2024, 5, 1, 14, 30, 0, 5000, tzinfo=plus_two)
    assert iso_ms(moment) == "2024-05-01T12:30:00.005Z"


def test_parse_iso_reads_what_iso_ms_writes():
    moment = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert parse_iso(iso_ms(moment)) == moment
