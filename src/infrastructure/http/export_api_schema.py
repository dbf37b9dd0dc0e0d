"""The Export API's response body, validated at the edge."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator


class DownloadUrl(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: StrictStr = Field(min_length=1)
    fileName: StrictStr = Field(min_length=1)
    fileSize: int | None = Field(None, ge=0)
    checksum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    expiresAt: datetime | None = None  # when the (presigned) URL stops working

    @field_validator("expiresAt", mode="before")
    @classmethod
    def _lenient(cls, value: object) -> object:
        """Not a timestamp we can read: unknown, not a reason to refuse the listing."""
        if value is None or isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None


class ExportError(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str | None = None
    message: str | None = None


class ExportResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    exportId: StrictStr
    status: Literal["pending", "processing", "ready", "failed", "expired"]
    downloadUrls: list[DownloadUrl] | None = None
    error: ExportError | None = None
    createdAt: str | None = None
    completedAt: str | None = None
    expiresAt: str | None = None
