"""The runtime's JSON records in the store: their value type, their bytes, their fields read
by type, and the format version each one carries (a record without one is version 1).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TypeAlias, cast

JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"
JsonObject: TypeAlias = "dict[str, JsonValue]"

VERSION = "version"  # the key of a record's format version


def json_value(value: object) -> JsonValue:
    """``value`` as its JSON reads back: what JSON has no form for (a date, a path) as text."""
    stored: JsonValue = json.loads(json.dumps(value, ensure_ascii=False, default=str))
    return stored


def sorted_json(value: JsonValue) -> bytes:
    """A record as stored: sorted keys, one key a line, UTF-8."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, indent=1).encode()


def parse_object(body: bytes) -> Fields:
    """The JSON object in ``body``: ValueError when it is not JSON, TypeError when not an object."""
    value: object = json.loads(body)
    if not isinstance(value, dict):
        raise TypeError("not a JSON object")
    return Fields(cast(dict[str, object], value))


class Fields:
    """A JSON object read field by field, each as its type: a field missing or of another
    type is a ValueError or TypeError naming it. Keys the reader does not ask for are
    ignored, so a record may gain a field without a new version."""

    def __init__(self, doc: Mapping[str, object]) -> None:
        self.doc = doc

    def version(self, supported: int) -> int:
        """The record's format version: 1 when it says none (written before records said
        it); a ValueError when it is newer than ``supported``."""
        found = self.optional_integer(VERSION)
        version = 1 if found is None else found
        if not 1 <= version <= supported:
            raise ValueError(f"format version {version}; this ochinai reads 1 to {supported}")
        return version

    def _get(self, key: str) -> object:
        if key not in self.doc:
            raise ValueError(f"{key!r} is missing")
        return self.doc[key]

    def _wrong(self, key: str, value: object, wanted: str) -> TypeError:
        return TypeError(f"{key!r} is {type(value).__name__}, not {wanted}")

    def text(self, key: str, default: str | None = None) -> str:
        """The string under ``key``; ``default`` when it is missing (if given)."""
        if default is not None and key not in self.doc:
            return default
        value = self._get(key)
        if not isinstance(value, str):
            raise self._wrong(key, value, "a string")
        return value

    def optional_text(self, key: str) -> str | None:
        """The string under ``key``; None when it is null or missing."""
        return None if self.doc.get(key) is None else self.text(key)

    def integer(self, key: str, default: int | None = None) -> int:
        """The integer under ``key`` (not a boolean); ``default`` when it is missing (if given)."""
        if default is not None and key not in self.doc:
            return default
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._wrong(key, value, "an integer")
        return value

    def optional_integer(self, key: str) -> int | None:
        """The integer under ``key``; None when it is null or missing."""
        return None if self.doc.get(key) is None else self.integer(key)

    def number(self, key: str) -> float:
        """The number under ``key``, integer or not (never a boolean)."""
        value = self._get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self._wrong(key, value, "a number")
        return value

    def optional_flag(self, key: str) -> bool | None:
        """The boolean under ``key``; None when it is null or missing."""
        value = self.doc.get(key)
        if value is not None and not isinstance(value, bool):
            raise self._wrong(key, value, "a boolean")
        return value

    def nested(self, key: str) -> Fields:
        """The object under ``key``, to read in turn."""
        value = self._get(key)
        if not isinstance(value, dict):
            raise self._wrong(key, value, "an object")
        return Fields(cast(dict[str, object], value))

    def optional_nested(self, key: str) -> Fields | None:
        """The object under ``key``; None when it is null or missing."""
        return None if self.doc.get(key) is None else self.nested(key)

    def nested_list(self, key: str) -> list[Fields]:
        """The objects listed under ``key``; none when it is null or missing."""
        value = self.doc.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._wrong(key, value, "a list")
        listed: list[object] = value
        if not all(isinstance(item, dict) for item in listed):
            raise TypeError(f"{key!r} lists something that is not an object")
        return [Fields(cast(dict[str, object], item)) for item in listed]

    def json_object(self, key: str) -> JsonObject:
        """The object under ``key`` as the JSON it is (a parsed document holds JSON only)."""
        return cast(JsonObject, dict(self.nested(key).doc))
