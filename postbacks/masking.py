"""Masking of secrets in anything stored or shown: URLs, error texts, log lines.

One function, :func:`mask_secrets`, is used wherever a postback URL or an error that may
quote it is written (Attempt.url, Attempt.error, Delivery.last_error, the worker log) or
shown (the Delivery admin page). It replaces only the secret values and leaves every other
character as it was, so the masked URL differs from the sent one only where it says ``***``
(no re-encoding: ``%20`` stays ``%20``).

What counts as a secret comes from settings:

- ``POSTBACKS_MASK_PARAMS``: query parameter names, as case-insensitive shell-style globs
  (``*token*``, ``sig``); the value of every matching ``name=value`` pair is masked.
- ``POSTBACKS_MASK_PATH_PATTERNS``: regular expressions whose first group is a secret in
  the path, e.g. a Telegram bot token in ``/bot<token>/sendMessage``.
"""

from __future__ import annotations

import functools
import re

from django.conf import settings
from django.core.signals import setting_changed

MASK = "***"


NAME_CHAR = r"[^=&;#?\s]"


def _glob_regex(glob: str) -> str:
    """A parameter-name glob (``*`` any run, ``?`` one character) as a regex fragment."""
    return "".join(
        f"{NAME_CHAR}*" if c == "*" else NAME_CHAR if c == "?" else re.escape(c) for c in glob
    )


@functools.cache
def _patterns() -> tuple[re.Pattern[str], list[re.Pattern[str]]]:
    names = "|".join(_glob_regex(glob) for glob in settings.POSTBACKS_MASK_PARAMS)
    # name=value after ?, & or ; (also inside error texts that quote a URL); the value runs
    # to the next separator, quote or white space.
    params = re.compile(rf"(?i)(?<=[?&;])((?:{names})=)([^&;#\s'\"<>]+)")
    paths = [re.compile(p) for p in settings.POSTBACKS_MASK_PATH_PATTERNS]
    return params, paths


def _mask_group(match: re.Match[str]) -> str:
    start, end = match.span(1)
    text = match.group(0)
    offset = match.start(0)
    return text[: start - offset] + MASK + text[end - offset :]


def mask_secrets(text: str) -> str:
    """``text`` with secret query values and path secrets replaced by ``***``.

    Byte-exact elsewhere: the rest of ``text`` is returned unchanged. Empty values are
    left empty. Raises nothing for any input string.
    """
    if not text:
        return text
    params, paths = _patterns()
    text = params.sub(lambda m: m.group(1) + MASK, text)
    for pattern in paths:
        text = pattern.sub(_mask_group, text)
    return text


def _settings_changed(setting: str, **kwargs: object) -> None:
    if setting.startswith("POSTBACKS_MASK_"):
        _patterns.cache_clear()


setting_changed.connect(_settings_changed, dispatch_uid="postbacks-masking")
