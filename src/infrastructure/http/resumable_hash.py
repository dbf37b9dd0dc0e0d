"""A sha256 whose running state can be saved as a short string and resumed on another replica.

Why this exists: a file is copied from HTTP into an S3 multipart upload while its sha256 is
computed on the fly. When a replica dies mid-file, another one resumes from the last uploaded
part with an HTTP Range request. S3 cannot give back the bytes of the parts of an unfinished
multipart upload, so the hash cannot be recomputed from them; the new replica needs the hash
state at that part boundary, which is kept as a small string on the task record in DynamoDB.
hashlib cannot export its state, and no maintained library offers this for OpenSSL 3 ("rehash"
pokes at CPython's private objects and refuses OpenSSL 3; "hashstate" is an sdist-only fork of
the 2018 hashlib).

How: ctypes over OpenSSL's low-level SHA256_Init/SHA256_Update/SHA256_Final. They are
deprecated since OpenSSL 3.0 but still exported, and SHA256_CTX in <openssl/sha.h> is public
ABI, unchanged since OpenSSL 0.9.8. The state string is a version prefix and the base64 of the
context's fields written explicitly as little-endian integers (the 64-byte block buffer, which
OpenSSL fills with memcpy, as raw bytes), so replicas on other architectures or OpenSSL builds
read it the same. ctypes releases the GIL during each call, so big chunks do not stall the loop.

The libcrypto used is the one Python's own hashlib has loaded (read from /proc/self/maps on
Linux), else ctypes.util.find_library("crypto"), else the usual sonames; each candidate must pass
a known-answer test that also checks the struct layout. Fallback: when none does (no libcrypto,
or one built with no-deprecated), available() is False and constructing raises RuntimeError;
callers then hash with hashlib and restart an interrupted file from byte 0 instead of resuming.

An instance has one owner at a time: concurrent update() calls from threads would corrupt it.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import hashlib  # imports _hashlib, which maps the libcrypto Python itself uses
import os
import struct
from functools import cache

_VERSION = "s256v1:"
_DIGEST_SIZE = 32
_BLOCK_SIZE = 64
_FALLBACK_NAMES = ("libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.3.dylib", "libcrypto.1.1.dylib")
# h[8], Nl, Nh as little-endian u32; data[16] as the raw bytes of the block buffer; num, md_len.
_STATE_LAYOUT = struct.Struct("<10I64s2I")


class _Sha256Ctx(ctypes.Structure):
    _fields_ = [
        ("h", ctypes.c_uint * 8),
        ("Nl", ctypes.c_uint),
        ("Nh", ctypes.c_uint),
        ("data", ctypes.c_uint * 16),
        ("num", ctypes.c_uint),
        ("md_len", ctypes.c_uint),
    ]


if ctypes.sizeof(_Sha256Ctx) != _STATE_LAYOUT.size:  # 112 bytes in <openssl/sha.h>
    raise ImportError("SHA256_CTX mirror is not 112 bytes on this platform")


class ResumableSha256:
    """sha256 of a byte stream whose state() can be resumed later with from_state()."""

    __slots__ = ("_ctx", "_lib")

    def __init__(self) -> None:
        lib = _libcrypto()
        if lib is None:
            raise RuntimeError(
                "ResumableSha256 needs OpenSSL's libcrypto with SHA256_Init/Update/Final; "
                f"none could be loaded from {_candidates()}"
            )
        self._lib = lib
        self._ctx = _Sha256Ctx()
        if lib.SHA256_Init(ctypes.byref(self._ctx)) != 1:
            raise RuntimeError("SHA256_Init failed")

    @staticmethod
    def available() -> bool:
        return _libcrypto() is not None

    @property
    def byte_count(self) -> int:
        """Bytes hashed so far; lets a resumer check the state matches its Range offset."""
        return int((self._ctx.Nh << 32) | self._ctx.Nl) >> 3

    def update(self, data: bytes | bytearray | memoryview) -> None:
        buffer = _without_copy(data)
        if not len(buffer):
            return
        if self._lib.SHA256_Update(ctypes.byref(self._ctx), buffer, len(buffer)) != 1:
            raise RuntimeError("SHA256_Update failed")

    def digest(self) -> bytes:
        work = _Sha256Ctx.from_buffer_copy(self._ctx)  # Final destroys the context it is given
        out = (ctypes.c_ubyte * _DIGEST_SIZE)()
        if self._lib.SHA256_Final(out, ctypes.byref(work)) != 1:
            raise RuntimeError("SHA256_Final failed")
        return bytes(out)

    def hexdigest(self) -> str:
        return self.digest().hex()

    def copy(self) -> ResumableSha256:
        twin = ResumableSha256()
        ctypes.memmove(ctypes.byref(twin._ctx), ctypes.byref(self._ctx), ctypes.sizeof(_Sha256Ctx))
        return twin

    def state(self) -> str:
        ctx = self._ctx
        # Bytes past num are leftovers of earlier blocks: zero them so equal states give equal text.
        block = bytes(ctx.data)[: ctx.num].ljust(_BLOCK_SIZE, b"\0")
        raw = _STATE_LAYOUT.pack(*ctx.h, ctx.Nl, ctx.Nh, block, ctx.num, ctx.md_len)
        return _VERSION + base64.b64encode(raw).decode("ascii")

    @classmethod
    def from_state(cls, text: str) -> ResumableSha256:
        if not isinstance(text, str) or not text.startswith(_VERSION):
            raise ValueError("not a ResumableSha256 state of a supported version")
        try:
            raw = base64.b64decode(text[len(_VERSION) :], validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError("ResumableSha256 state is not valid base64") from error
        if len(raw) != _STATE_LAYOUT.size:
            raise ValueError("ResumableSha256 state has the wrong length")
        *h, nl, nh, block, num, md_len = _STATE_LAYOUT.unpack(raw)
        if md_len != _DIGEST_SIZE or nl % 8 or num != (nl >> 3) % _BLOCK_SIZE or any(block[num:]):
            raise ValueError("ResumableSha256 state is inconsistent")
        hasher = cls()
        ctx = hasher._ctx
        ctx.h[:] = h
        ctx.Nl, ctx.Nh, ctx.num, ctx.md_len = nl, nh, num, md_len
        ctypes.memmove(ctx.data, block, _BLOCK_SIZE)
        return hasher


def _without_copy(data: bytes | bytearray | memoryview) -> bytes | ctypes.Array[ctypes.c_char]:
    if isinstance(data, bytes):
        return data  # ctypes passes a pointer to the bytes object's own buffer
    view = memoryview(data)
    if view.readonly or not view.c_contiguous:
        return view.tobytes()
    return (ctypes.c_char * view.nbytes).from_buffer(view)


def _candidates() -> list[str]:
    names = [_loaded_by_python(), ctypes.util.find_library("crypto"), *_FALLBACK_NAMES]
    return list(dict.fromkeys(name for name in names if name))


def _loaded_by_python() -> str | None:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and os.path.basename(fields[5]).startswith("libcrypto.so"):
                    return fields[5].rstrip("\n")
    except OSError:
        pass  # not Linux: find_library and the sonames remain
    return None


@cache
def _libcrypto() -> ctypes.CDLL | None:
    for name in _candidates():
        try:
            lib = ctypes.CDLL(name)
            _declare(lib)
        except (OSError, AttributeError):
            continue
        if _passes_known_answer(lib):
            return lib
    return None


def _declare(lib: ctypes.CDLL) -> None:
    ctx = ctypes.POINTER(_Sha256Ctx)
    for name, argtypes in (
        ("SHA256_Init", [ctx]),
        ("SHA256_Update", [ctx, ctypes.c_void_p, ctypes.c_size_t]),
        ("SHA256_Final", [ctypes.c_void_p, ctx]),
    ):
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, ctypes.c_int


def _passes_known_answer(lib: ctypes.CDLL) -> bool:
    ctx, out = _Sha256Ctx(), (ctypes.c_ubyte * _DIGEST_SIZE)()
    lib.SHA256_Init(ctypes.byref(ctx))
    lib.SHA256_Update(ctypes.byref(ctx), b"abc", 3)
    layout_ok = (ctx.Nl, ctx.Nh, ctx.num, ctx.md_len, bytes(ctx.data)[:3]) == (24, 0, 3, 32, b"abc")
    lib.SHA256_Final(out, ctypes.byref(ctx))
    return layout_ok and bytes(out) == hashlib.sha256(b"abc").digest()
