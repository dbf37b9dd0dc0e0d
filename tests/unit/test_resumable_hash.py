import base64
import hashlib
import random

import pytest

from src.infrastructure.http import resumable_hash
from src.infrastructure.http.resumable_hash import ResumableSha256

pytestmark = pytest.mark.skipif(
    not ResumableSha256.available(), reason="no usable libcrypto on this machine"
)


def test_resuming_through_state_at_random_points_gives_the_sha256_of_the_whole_data() -> None:
    rng = random.Random(20240601)
    data = rng.randbytes(3 * 1024 * 1024 + 17)
    cuts = sorted(rng.sample(range(1, len(data)), 6))
    hasher = ResumableSha256()
    start = 0
    for cut in [*cuts, len(data)]:
        chunk = data[start:cut]
        for piece in (chunk[: len(chunk) // 3], bytearray(chunk[len(chunk) // 3 :])):
            hasher.update(piece)
        state = hasher.state()
        hasher = ResumableSha256.from_state(state)
        assert hasher.byte_count == cut
        assert hasher.state() == state
        start = cut
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


def test_resuming_at_block_boundaries_and_inside_the_first_block() -> None:
    data = bytes(range(256)) * 3
    for cut in (0, 1, 55, 56, 63, 64, 65, 128, 700):
        hasher = ResumableSha256()
        hasher.update(data[:cut])
        resumed = ResumableSha256.from_state(hasher.state())
        resumed.update(data[cut:])
        assert resumed.hexdigest() == hashlib.sha256(data).hexdigest(), cut


def test_empty_input() -> None:
    hasher = ResumableSha256()
    hasher.update(b"")
    assert hasher.hexdigest() == hashlib.sha256(b"").hexdigest()
    assert ResumableSha256.from_state(hasher.state()).hexdigest() == hashlib.sha256().hexdigest()


def test_accepts_bytes_bytearray_and_memoryviews() -> None:
    data = bytes(range(200))
    hasher = ResumableSha256()
    hasher.update(data[:50])
    hasher.update(bytearray(data[50:100]))
    hasher.update(memoryview(data)[100:150])  # read-only
    hasher.update(memoryview(bytearray(data[150:])))  # writable
    assert hasher.digest() == hashlib.sha256(data).digest()


def test_copy_is_independent() -> None:
    original = ResumableSha256()
    original.update(b"common prefix ")
    twin = original.copy()
    original.update(b"left")
    twin.update(b"right")
    assert original.hexdigest() == hashlib.sha256(b"common prefix left").hexdigest()
    assert twin.hexdigest() == hashlib.sha256(b"common prefix right").hexdigest()


def test_hexdigest_does_not_change_the_state() -> None:
    hasher = ResumableSha256()
    hasher.update(b"x" * 100)
    state = hasher.state()
    assert hasher.hexdigest() == hasher.hexdigest()
    assert hasher.state() == state
    hasher.update(b"y")
    assert hasher.hexdigest() == hashlib.sha256(b"x" * 100 + b"y").hexdigest()


def test_state_is_short_ascii() -> None:
    hasher = ResumableSha256()
    hasher.update(b"\xff" * 1000)
    state = hasher.state()
    assert state.isascii()
    assert len(state) < 300


def _state_with(raw: bytes) -> str:
    return "s256v1:" + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "s256v1:",
        "s256v1:!!!not base64!!!",
        "s256v1:é",
        "s256v9:" + base64.b64encode(bytes(112)).decode(),
        _state_with(bytes(111)),
        _state_with(bytes(113)),
        _state_with(bytes(112)),  # md_len 0: not a sha256 context
    ],
)
def test_from_state_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError):
        ResumableSha256.from_state(text)


def test_from_state_rejects_wrong_version_and_tampered_counts() -> None:
    hasher = ResumableSha256()
    hasher.update(b"abc")
    state = hasher.state()
    with pytest.raises(ValueError):
        ResumableSha256.from_state("s256v2:" + state.removeprefix("s256v1:"))
    raw = bytearray(base64.b64decode(state.removeprefix("s256v1:")))
    raw[32] = 32  # Nl says 4 bytes while num says 3
    with pytest.raises(ValueError):
        ResumableSha256.from_state(_state_with(bytes(raw)))


def test_without_libcrypto_it_says_unavailable_and_refuses_to_construct(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resumable_hash, "_libcrypto", lambda: None)
    assert not ResumableSha256.available()
    with pytest.raises(RuntimeError, match="libcrypto"):
        ResumableSha256()
