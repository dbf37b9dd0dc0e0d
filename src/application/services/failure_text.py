"""An exception said in one line that is safe to store on a job and send to a workflow."""

from __future__ import annotations

import re

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
MAX_CHARS = 300


def describe(err: BaseException) -> str:
    """Type and first line of the message, addresses removed (a presigned URL's query
    string is a secret), bounded in length."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = _URL.sub("<url>", text)
    line = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return line[:MAX_CHARS]
