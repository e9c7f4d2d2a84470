"""An affiliate network's status and parameter mappings, edited as text: the fields that
read, check and write them, shared by the admin's network form and the REST API (which
checks a JSON object through the same fields). Raises ``ValidationError`` naming the line.
"""

from __future__ import annotations

from collections.abc import Mapping

from django import forms
from django.core.exceptions import ValidationError

from campaigns.models import STATUS_ALIASES, STATUS_VALUES, param_name_validator

# Our /cv parameter names a network may send under its own names.
OUR_PARAM_NAMES = (
    "click_id",
    "txid",
    "payout",
    "payout_currency",
    "ct",
    "status",
    "rejection_reason",
    *(f"param{i}" for i in range(1, 21)),
)
MAP_VALUE_MAX = 64


class MappingField(forms.CharField):
    """A JSON object edited as text, one ``left = right`` pair a line.

    Blank lines and lines starting with ``#`` are ignored, spaces around both sides dropped.
    Subclasses read and check one line in :meth:`pair`; every bad line is reported.
    """

    widget = forms.Textarea(attrs={"rows": 5, "cols": 60})
    example = "left = right"

    def prepare_value(self, value: object) -> object:
        if isinstance(value, dict):
            return "\n".join(f"{key} = {item}" for key, item in value.items())
        return value

    # A text field whose value is a mapping, not the text.
    def to_python(self, value: object) -> dict[str, str]:  # type: ignore[override]
        if isinstance(value, dict):
            return value
        mapping: dict[str, str] = {}
        line_of: dict[str, int] = {}  # folded key -> its line
        errors: list[str] = []
        for number, line in enumerate(str(value or "").splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                folded, key, item = self._read(line, mapping, line_of, "is already on line")
            except ValidationError as exc:
                errors.extend(f"Line {number}: {message}" for message in exc.messages)
                continue
            line_of[folded] = number
            mapping[key] = item
        if errors:
            raise ValidationError(errors)
        return mapping

    def from_json(self, value: dict[str, object]) -> dict[str, str]:
        """The mapping of a JSON object (the API's form of this field), each pair checked as
        a ``key = value`` line is. Raises ValidationError naming each bad key."""
        mapping: dict[str, str] = {}
        key_of: dict[str, str] = {}  # folded key -> the key as first written
        errors: list[str] = []
        for key, item in value.items():
            try:
                if not isinstance(item, str) or "\n" in key or "\n" in item:
                    raise ValidationError("the value must be a text on one line.")
                line = f"{key.strip()} = {item.strip()}"
                folded, left, right = self._read(line, mapping, key_of, "is the same key as")
            except ValidationError as exc:
                errors.extend(f"{key}: {message}" for message in exc.messages)
                continue
            key_of[folded] = left
            mapping[left] = right
        if errors:
            raise ValidationError(errors)
        return mapping

    def _read(
        self, line: str, mapping: dict[str, str], firsts: Mapping[str, object], repeated: str
    ) -> tuple[str, str, str]:
        """(folded key, key, value) of one line checked against ``mapping`` so far;
        ``firsts``: folded key -> where it first stood (for "“key” <repeated> <where>.")."""
        key, item = self.pair(line)
        folded = self.fold(key)
        if folded in firsts:
            where = firsts[folded]
            raise ValidationError(
                f"“{key}” {repeated} {f'“{where}”' if isinstance(where, str) else where}."
            )
        self.check(mapping, item)
        return folded, key, item

    def split(self, line: str, *, last: bool = False) -> tuple[str, str]:
        """``line`` cut at its first (or ``last``) "=", both sides stripped and non-empty."""
        left, sep, right = line.rpartition("=") if last else line.partition("=")
        left, right = left.strip(), right.strip()
        if not (sep and left and right):
            raise ValidationError(f"write {self.example}.")
        return left, right

    def pair(self, line: str) -> tuple[str, str]:
        """The key and value of one line; raise ValidationError when it is wrong."""
        raise NotImplementedError

    def fold(self, key: str) -> str:
        """The form under which two keys count as the same."""
        return key

    def check(self, mapping: dict[str, str], item: str) -> None:
        """Checks of a value against the lines before it; raise ValidationError."""


class StatusMapField(MappingField):
    """``their_value = our_status``, e.g. ``1 = approved``: our status in any case."""

    example = "their value = our status, e.g. 1 = approved"

    def pair(self, line: str) -> tuple[str, str]:
        theirs, ours = self.split(line, last=True)  # their value may hold "=", ours never
        if len(theirs) > MAP_VALUE_MAX:
            raise ValidationError(f"“{theirs[:20]}…” is longer than {MAP_VALUE_MAX} characters.")
        status = ours.lower()
        if status not in STATUS_VALUES:
            hint = f" (did you mean {STATUS_ALIASES[status]}?)" if status in STATUS_ALIASES else ""
            raise ValidationError(
                f"“{ours}” is not one of our statuses: {', '.join(STATUS_VALUES)}{hint}."
            )
        return theirs, status

    def fold(self, key: str) -> str:
        return key.lower()  # the network's values are matched in any case


class ParamMapField(MappingField):
    """``our_name = their_name``, e.g. ``txid = transaction_id``."""

    example = "our name = their name, e.g. txid = transaction_id"

    def pair(self, line: str) -> tuple[str, str]:
        ours, theirs = self.split(line)
        if ours not in OUR_PARAM_NAMES:
            raise ValidationError(
                f"“{ours}” is not one of our parameter names: "
                f"{', '.join(OUR_PARAM_NAMES[:7])}, param1..param20."
            )
        try:
            param_name_validator(theirs)
        except ValidationError:
            raise ValidationError(
                f"“{theirs}”: use 1-64 letters, digits, '_', '.' or '-' (a parameter name)."
            ) from None
        if theirs != ours and theirs in OUR_PARAM_NAMES:
            raise ValidationError(f"“{theirs}” is our own name for another value.")
        return ours, theirs

    def check(self, mapping: dict[str, str], item: str) -> None:
        other = next((ours for ours, theirs in mapping.items() if theirs == item), None)
        if other is not None:
            raise ValidationError(f"“{item}” is already the network's name for {other}.")
