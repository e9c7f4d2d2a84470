"""What a receiver answers, made safe to store and show.

Anything a destination sends back is hostile input: a traffic source answering its 1x1 GIF
pixel, a ``500`` whose body holds NUL bytes, a ``Location`` header with a NUL in it, a gzip
that decodes to zeros. PostgreSQL ``text`` columns refuse NUL (``DataError``), and one such
row would fail the whole batch it is written with, so every answer passes through here
before it reaches the postback log.
"""

from __future__ import annotations

import re

# Content types whose bodies are bytes, not text: shown as a description.
_BINARY_TYPES = ("image/", "audio/", "video/", "font/")
_BINARY_SUBTYPES = frozenset(
    {
        "application/octet-stream",
        "application/pdf",
        "application/zip",
        "application/gzip",
        "application/x-gzip",
        "application/x-protobuf",
        "application/protobuf",
        "application/wasm",
    }
)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
HEX_PREVIEW_BYTES = 16


def storable(text: str) -> str:
    """``text`` as any database text column takes it: each NUL becomes the four visible
    characters ``\\x00`` and lone surrogates (not encodable as UTF-8) become U+FFFD. Text
    without either is returned as it is (the common case costs one scan)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii() and _LONE_SURROGATE.search(text):
        text = _LONE_SURROGATE.sub("\ufffd", text)
    return text


def is_binary(raw: bytes, content_type: str = "") -> bool:
    """Whether an answer is bytes rather than text: a binary content type (``image/*``,
    ``application/octet-stream``...) or a NUL byte in what was read."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media.startswith(_BINARY_TYPES) or media in _BINARY_SUBTYPES:
        return True
    return b"\x00" in raw


def describe_binary(raw: bytes, content_type: str = "", *, truncated: bool = False) -> str:
    """The log's text for a binary answer, e.g. ``[binary answer: image/gif, 43 bytes:
    47 49 46 38 39 61 01 00 01 00 80 00 00 ff ff ff …]`` (the first 16 bytes in hex;
    ``more than N bytes`` when the read stopped at the body cap)."""
    media = content_type.split(";", 1)[0].strip().lower() or "no content type"
    size = f"more than {len(raw)} bytes" if truncated else f"{len(raw)} bytes"
    preview = raw[:HEX_PREVIEW_BYTES].hex(" ")
    more = " …" if len(raw) > HEX_PREVIEW_BYTES else ""
    return f"[binary answer: {media}, {size}: {preview}{more}]" if raw else f"[{media}, 0 bytes]"


def shown_answer(raw: bytes, text: str, content_type: str = "", *, truncated: bool = False) -> str:
    """What the postback log keeps of an answer: ``text`` (its decoded form) made
    :func:`storable`, or :func:`describe_binary` for a binary one."""
    if is_binary(raw, content_type):
        return describe_binary(raw, content_type, truncated=truncated)
    return storable(text)
