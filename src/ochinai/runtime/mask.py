"""Personal data replaced by tokens: the same value gives the same token under one key.

A token is ``m_`` and the first 20 hex digits of HMAC-SHA256(key, value as UTF-8): it
joins like the value (the same customer has the same token in every file masked with
the key) and says nothing of it without the key. Empty and missing values stay so.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from ochinai.runtime.declare import parse_text, setting
from ochinai.runtime.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa


def mask_key_setting() -> str | None:
    """The ``OCHINAI_MASK_KEY`` field of a job's settings (the backup's and the report's)."""
    return setting(
        "OCHINAI_MASK_KEY",
        parse_text,
        None,
        "the HMAC key of masked values (a secret)",
        secret=True,
    )


class Masker:
    """Tokens under one key (OCHINAI_MASK_KEY)."""

    def __init__(self, key: str | None) -> None:
        if not key:
            raise ConfigError("OCHINAI_MASK_KEY is not set; masking columns needs a secret key")
        if len(key.encode()) < 16:
            raise ConfigError("OCHINAI_MASK_KEY is too short: use 16 bytes or more")
        self._key = key.encode()

    def token(self, value: str | bytes) -> str:
        """The token of one value."""
        data = value.encode() if isinstance(value, str) else value
        return "m_" + hmac.new(self._key, data, hashlib.sha256).hexdigest()[:20]

    def array(self, values: pa.Array) -> pa.Array:
        """A string array's values replaced by their tokens; '' and null kept."""
        import pyarrow as pa  # here: the settings that import this module load no pyarrow
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(values)
        words = encoded.dictionary.to_pylist()
        tokens = pa.array([w if w == "" else self.token(w) for w in words], pa.string())
        return pc.take(tokens, encoded.indices)
