"""Serving the JS tag (``GET /t.js``): compressed with gzip when the browser accepts it, with an
``ETag`` so a cached copy is revalidated with a ``304``.

Example::

    tag = Tag.load(STATIC / "t.js")
    body, encoding, etag = tag.variant(request.headers.get("Accept-Encoding", ""))
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Tag:
    """The tag's bytes, plain and gzip-compressed (once, at start-up)."""

    plain: bytes
    gzipped: bytes
    digest: str

    @classmethod
    def load(cls, path: Path) -> Tag:
        plain = path.read_bytes()
        return cls(
            plain=plain,
            gzipped=gzip.compress(plain, compresslevel=9, mtime=0),
            digest=hashlib.sha256(plain).hexdigest()[:20],
        )

    def variant(self, accept_encoding: str) -> tuple[bytes, str | None, str]:
        """``(body, Content-Encoding or None, ETag)`` for a request's ``Accept-Encoding``."""
        if accepts_gzip(accept_encoding):
            return self.gzipped, "gzip", f'"{self.digest}-gzip"'
        return self.plain, None, f'"{self.digest}"'


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header allows gzip (``gzip``, ``x-gzip`` or ``*``, q > 0).

    Example::

        accepts_gzip("gzip, deflate, br")  # True
        accepts_gzip("gzip;q=0, br")       # False
    """
    allowed: dict[str, float] = {}
    for item in accept_encoding.lower().split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if not coding:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        allowed[coding] = quality
    for coding in ("gzip", "x-gzip"):
        if coding in allowed:
            return allowed[coding] > 0
    return allowed.get("*", 0.0) > 0


def not_modified(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, or ``*``)."""
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags
