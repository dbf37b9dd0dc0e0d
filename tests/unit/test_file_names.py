from __future__ import annotations

import pytest

from src.domain.file_names import MAX_NAME_CHARS, object_key, safe_file_name
from tests.unit.builders import JOB_ID

PREFIX = f"exports/{JOB_ID}/"


def assert_contained(key: str) -> None:
    assert key.startswith(PREFIX)
    rest = key[len(PREFIX) :]
    assert "/" not in rest
    assert "\\" not in rest
    assert ".." not in key.split("/")


def test_plain_name_is_kept():
    assert safe_file_name("report-2024_05.csv", 0) == "report-2024_05.csv"


def test_key_is_prefix_job_id_index_and_name():
    assert object_key("exports/", JOB_ID, 3, "data.csv") == f"exports/{JOB_ID}/3_data.csv"


def test_prefix_is_concatenated_as_given():
    assert object_key("out-", JOB_ID, 0, "a.csv") == f"out-{JOB_ID}/0_a.csv"


@pytest.mark.parametrize(
    "raw",
    [
        "../../etc/passwd",
        "..\\..\\windows\\system.ini",
        "a/../../b",
        "../",
        "..",
        "./..",
        "dir/../../../",
    ],
)
def test_traversal_never_leaves_the_jobs_folder(raw: str):
    name = safe_file_name(raw, 4)
    assert "/" not in name
    assert "\\" not in name
    assert name not in ("", ".", "..")
    assert_contained(object_key("exports/", JOB_ID, 4, raw))


def test_traversal_keeps_only_the_last_segment():
    assert safe_file_name("../../etc/passwd", 0) == "passwd"
    assert object_key("exports/", JOB_ID, 0, "../../etc/passwd") == f"{PREFIX}0_passwd"


@pytest.mark.parametrize("raw", ["/etc/passwd", "C:\\Users\\x\\passwd", "//server/share/passwd"])
def test_absolute_paths_lose_their_directories(raw: str):
    assert safe_file_name(raw, 0) == "passwd"


@pytest.mark.parametrize("raw", ["a\x00b.csv", "a\nb.csv", "a\rb.csv", "a\x1bb.csv", "a\x7fb.csv"])
def test_control_characters_are_removed(raw: str):
    name = safe_file_name(raw, 0)
    assert name == "ab.csv"
    assert all(ch.isprintable() for ch in name)


def test_unsafe_characters_are_replaced():
    name = safe_file_name('we"ird<na>me?*|.csv', 0)
    assert name.endswith(".csv")
    assert not set('"<>?*|') & set(name)


@pytest.mark.parametrize("raw", ["", "   ", "...", "/", "dir/", "\x00\x01"])
def test_empty_names_become_file_index(raw: str):
    assert safe_file_name(raw, 7) == "file-7"


def test_long_names_are_bounded_and_keep_the_extension():
    name = safe_file_name("x" * 500 + ".parquet", 0)
    assert len(name) <= MAX_NAME_CHARS == 200
    assert name.endswith(".parquet")
    assert name.startswith("xxx")


def test_long_names_without_extension_are_bounded():
    assert len(safe_file_name("y" * 1000, 0)) <= 200


def test_names_at_the_limit_are_kept_whole():
    exact = "z" * 196 + ".csv"
    assert safe_file_name(exact, 0) == exact


def test_same_name_twice_gets_distinct_keys_by_index():
    assert object_key("exports/", JOB_ID, 0, "a.csv") != object_key("exports/", JOB_ID, 1, "a.csv")


def test_names_in_any_language_are_kept_as_given():
    assert safe_file_name("résumé 2026 データ.csv", 0) == "résumé 2026 データ.csv"
    assert safe_file_name("o'brien & co!.csv", 1) == "o'brien & co!.csv"
