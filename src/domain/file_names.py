"""File names from the Export API made safe to use inside an S3 key."""

from __future__ import annotations

import re
import unicodedata

MAX_NAME_CHARS = 200
# Keep the name as the Export API gave it (any language) except the characters AWS
# advises against in object keys; directories and control characters go earlier.
_UNSAFE = re.compile(r'[\\{}^%`\[\]"<>~#|?*]')


def safe_file_name(raw: str, index: int) -> str:
    """No directories, no traversal, no control characters, bounded length; never empty.
    The index prefix in the key (`{index}_{name}`) keeps names unique within a job."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE.sub("_", name).strip(" .")
    if not name:
        name = f"file-{index}"
    if len(name) > MAX_NAME_CHARS:
        _stem, dot, ext = name.rpartition(".")
        keep = ext if dot and len(ext) <= 16 else ""
        name = name[: MAX_NAME_CHARS - len(keep) - 1].rstrip(" .") + ("." + keep if keep else "")
    return name


def object_key(prefix: str, job_id: str, index: int, file_name: str) -> str:
    """`{S3_PREFIX}{jobId}/{index}_{fileName}`, the original's layout."""
    return f"{prefix}{job_id}/{index}_{safe_file_name(file_name, index)}"
