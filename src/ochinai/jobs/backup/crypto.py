"""Backups encrypted at rest: pyarrow's Parquet Modular Encryption under OCHINAI_BACKUP_KEY,
its keys served by a KMS client of ours over a ring (the current key and earlier ones)."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
import secrets
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe

from ochinai.jobs.backup.manifest import Encryption
from ochinai.runtime import logs
from ochinai.runtime.errors import ConfigError
from ochinai.runtime.job import Context, Summary

if TYPE_CHECKING:
    from ochinai.jobs.backup.manifest import ParquetFile
    from ochinai.jobs.backup.settings import BackupSettings

log = logging.getLogger("ochinai.jobs.backup")

ALGORITHM = "AES_GCM_V1"  # the files' modules (footer, pages): AES-GCM, authenticated
KEY_WRAP = "parquet-aes-gcm-v1"  # a key-encryption key wrapped as KeyRing.wrap does
DATA_KEY_BITS = 256
CACHE = timedelta(minutes=10)  # how long pyarrow keeps a key-encryption key (unwrapped)
_ID_LABEL = b"ochinai-backup-key-id\x00"
_MASTER_LABEL = b"ochinai-backup-master-key\x00"
_AAD = b"ochinai-backup-kek:"


def key_id(key: str) -> str:
    """The id of a key: the first 16 hex digits of SHA-256 over ``ochinai-backup-key-id``,
    a NUL byte and the key (surrounding whitespace not part of it).

    The manifest gives it for each file (``encryption.key_id``), and pyarrow keeps it in
    each file as the master key's identifier: a generation says which key it needs and
    nothing of the key. ``printf 'ochinai-backup-key-id\\0%s' "$KEY" | sha256sum | cut
    -c1-16`` gives it in a shell.
    """
    return hashlib.sha256(_ID_LABEL + key.strip().encode()).hexdigest()[:16]


def new_key() -> str:
    """A new key: 32 random bytes in base64."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@dataclass(frozen=True)
class MasterKey:
    """A key as the ring holds it: its id and the AES-256 key derived from it, SHA-256
    over ``ochinai-backup-master-key``, a NUL byte and the key; it never leaves the
    process."""

    id: str
    secret: bytes = field(repr=False)

    @classmethod
    def of(cls, key: str) -> MasterKey:
        text = key.strip()
        return cls(key_id(text), hashlib.sha256(_MASTER_LABEL + text.encode()).digest())


class UnknownKey(ConfigError):
    """A file names a key the ring does not hold (78)."""


class KeyRing:
    """The current key (new files) and the earlier ones (reading): what pyarrow's
    CryptoFactory gets from us. One CryptoFactory a ring, so its caches (key-encryption
    keys, KMS clients) never outlive the keys they came from.

    In a disaster (the job gone; a file and the key at hand), with this package::

        import pyarrow.parquet as pq
        import pyarrow.parquet.encryption as pe
        from ochinai.jobs.backup.crypto import KeyRing

        ring = KeyRing.of(key)  # KeyRing.of(key, old_key, ...) after a rotation
        factory = pe.CryptoFactory(ring.kms_client)
        properties = factory.file_decryption_properties(
            pe.KmsConnectionConfig(), pe.DecryptionConfiguration()
        )
        table = pq.read_table("sales.csv~0123456789ab.parquet", decryption_properties=properties)

    Without it, ``ring.kms_client`` is a ``pe.KmsClient`` whose ``unwrap_key(wrapped, id)``
    returns ``pq.read_table(pa.BufferReader(base64.b64decode(wrapped)),
    decryption_properties=pe.create_decryption_properties(master,
    aad_prefix=b"ochinai-backup-kek:" + id.encode())).column(0)[0].as_py()``, ``master``
    derived from the key as MasterKey says.
    """

    def __init__(self, current: MasterKey | None, old: Iterable[MasterKey] = ()) -> None:
        if not hasattr(pe, "create_encryption_properties"):
            raise ConfigError(
                f"OCHINAI_BACKUP_KEY needs a pyarrow with Parquet encryption by key "
                f"(pyarrow.parquet.encryption.create_encryption_properties); this is "
                f"pyarrow {pa.__version__}"
            )
        self.current = current
        self.keys = {k.id: k for k in old}
        if current is not None:
            self.keys[current.id] = current
        self._factory: pe.CryptoFactory | None = None

    @classmethod
    def of(cls, key: str | None, *old: str) -> KeyRing:
        """A ring of ``key`` (None: reading only) and the earlier keys ``old``."""
        return cls(None if key is None else MasterKey.of(key), [MasterKey.of(k) for k in old])

    @property
    def writes(self) -> bool:
        """Whether new files are encrypted: a current key."""
        return self.current is not None

    def kms_client(self, config: pe.KmsConnectionConfig) -> pe.KmsClient:
        """The KMS client factory a ``pe.CryptoFactory`` takes: ours, over this ring."""
        return _Kms(self)

    @property
    def factory(self) -> pe.CryptoFactory:
        if self._factory is None:
            self._factory = pe.CryptoFactory(self.kms_client)
        return self._factory

    def encryption_properties(self) -> Any:
        """A new file's: its footer and every column encrypted with AES_GCM_V1 under a data
        key drawn at random for that file (the same rows never give the same bytes twice:
        an unchanged source is known by its sha256 in the manifest). The data key is
        wrapped by a key-encryption key pyarrow draws and caches (double wrapping), and
        that one by the master key (``wrap``); what is wrapped is kept in the footer."""
        if self.current is None:
            raise ConfigError("OCHINAI_BACKUP_KEY is not set: nothing to encrypt with")
        config = pe.EncryptionConfiguration(
            footer_key=self.current.id,
            uniform_encryption=True,  # every column, under the footer's key
            encryption_algorithm=ALGORITHM,
            plaintext_footer=False,
            double_wrapping=True,
            internal_key_material=True,  # in the file's footer, no files beside it
            data_key_length_bits=DATA_KEY_BITS,
            cache_lifetime=CACHE,
        )
        return self.factory.file_encryption_properties(pe.KmsConnectionConfig(), config)

    def decryption_properties(self) -> Any:
        """An encrypted file's, whichever key of the ring it was written with."""
        config = pe.DecryptionConfiguration(cache_lifetime=CACHE)
        return self.factory.file_decryption_properties(pe.KmsConnectionConfig(), config)

    def encryption(self) -> Encryption:
        """What a new file's manifest entry says of its encryption."""
        if self.current is None:
            raise ConfigError("OCHINAI_BACKUP_KEY is not set: nothing was encrypted")
        return Encryption(algorithm=ALGORITHM, key_id=self.current.id, key_wrap=KEY_WRAP)

    def described(self) -> str:
        """Which keys the ring holds, by id, for messages."""
        current = self.current.id if self.current else "unset"
        old = sorted(set(self.keys) - {current})
        return f"OCHINAI_BACKUP_KEY has id {current}; OCHINAI_BACKUP_OLD_KEYS " + (
            f"ids {', '.join(old)}" if old else "none"
        )

    def _master(self, wanted: str) -> MasterKey:
        try:
            return self.keys[wanted]
        except KeyError:
            raise UnknownKey(
                f"a file was encrypted with the key of id {wanted}, which this run does not "
                f"have ({self.described()}): set that key in OCHINAI_BACKUP_KEY, or in "
                "OCHINAI_BACKUP_OLD_KEYS after a rotation"
            ) from None

    def wrap(self, key: bytes, wanted: str) -> str:
        """``key`` encrypted with the master key of id ``wanted`` (``KEY_WRAP``).

        pyarrow offers AES-GCM with a key of ours only as a Parquet file's encryption, and
        nothing else of the kind ships with the job, so a wrapped key is a Parquet file of
        one row, one binary column ``key``, footer and column encrypted with the master
        key (AES_GCM_V1), its AAD prefix ``ochinai-backup-kek:<key id>`` not stored in it
        (a wrapped key does not open under another id), in base64.
        """
        master = self._master(wanted)
        properties = pe.create_encryption_properties(
            master.secret,
            aad_prefix=_AAD + wanted.encode(),
            store_aad_prefix=False,
            encryption_algorithm=ALGORITHM,
        )
        # From buffers, and read back by ParquetFile: pa.array() of Python values and
        # pq.read_table() import pandas, 50 MB and 0.2 s that the job otherwise never pays.
        offsets = pa.py_buffer((0).to_bytes(4, "little") + len(key).to_bytes(4, "little"))
        column = pa.Array.from_buffers(pa.binary(), 1, [None, offsets, pa.py_buffer(key)])
        sink = pa.BufferOutputStream()
        pq.write_table(
            pa.Table.from_arrays([column], names=["key"]),
            sink,
            encryption_properties=properties,
            compression="none",
            use_dictionary=False,
            write_statistics=False,  # min and max would be the key
            store_schema=False,
        )
        return base64.b64encode(sink.getvalue().to_pybytes()).decode("ascii")

    def unwrap(self, wrapped: str, wanted: str) -> bytes:
        """The key ``wrap`` wrapped; OSError (pyarrow's) when it does not authenticate."""
        master = self._master(wanted)
        properties = pe.create_decryption_properties(
            master.secret, aad_prefix=_AAD + wanted.encode()
        )
        try:
            body = base64.b64decode(wrapped, validate=True)
        except binascii.Error as exc:
            raise OSError(f"a wrapped key is not base64 ({exc})") from None
        envelope = pq.ParquetFile(pa.BufferReader(body), decryption_properties=properties)
        return bytes(envelope.read().column(0)[0].as_py())


class _Kms(pe.KmsClient):  # type: ignore[misc]  # pyarrow's classes are untyped
    """pyarrow's KMS client interface over a KeyRing: the master key identifier is a
    key id."""

    def __init__(self, ring: KeyRing) -> None:
        super().__init__()
        self._ring = ring

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        return self._ring.wrap(bytes(key_bytes), master_key_identifier)

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        return self._ring.unwrap(wrapped_key, master_key_identifier)


def ring(settings: BackupSettings, *, writing: bool = False) -> KeyRing | None:
    """The keys the settings give: None when neither OCHINAI_BACKUP_KEY nor
    OCHINAI_BACKUP_OLD_KEYS is set (unencrypted). New files use OCHINAI_BACKUP_KEY; a
    file is opened with whichever key of the ring has the id pyarrow reads in it.

    ``writing``: for a backup, which would write unencrypted files with earlier keys set
    and no current one; that is refused (a key removed by mistake must not turn
    encryption off silently).
    """
    if writing and settings.old_keys and not settings.key:
        raise ConfigError(
            "OCHINAI_BACKUP_OLD_KEYS is set but OCHINAI_BACKUP_KEY is not: the new generation "
            "would be written unencrypted; set OCHINAI_BACKUP_KEY (or unset both)"
        )
    return _ring(settings.key, settings.old_keys)


@functools.lru_cache(maxsize=4)
def _ring(key: str | None, old_keys: str | None) -> KeyRing | None:
    """One ring for the same keys: pyarrow's caches serve every file of a run."""
    old = [k for k in (old_keys or "").split(",") if k.strip()]
    if key is None and not old:
        return None
    logs.redactor.add(key, *old)  # each old key too, not only the setting's whole text
    return KeyRing.of(key, *old)


def require(keys: KeyRing | None, files: Iterable[ParquetFile], where: str) -> None:
    """Before reading: ConfigError (78) unless ``keys`` hold the key of every encrypted
    file, naming OCHINAI_BACKUP_KEY and the ids needed."""
    needed = sorted({f.encryption.key_id for f in files if f.encryption is not None})
    missing = [k for k in needed if keys is None or k not in keys.keys]
    if not missing:
        return
    ids = ", ".join(missing)
    if keys is None:
        raise ConfigError(
            f"{where} is encrypted (key id {ids}) and OCHINAI_BACKUP_KEY is not set: set it "
            "to that key (or list the key in OCHINAI_BACKUP_OLD_KEYS after a rotation)"
        )
    raise ConfigError(
        f"{where} was encrypted with the key of id {ids}, which this run does not have "
        f"({keys.described()}): set that key in OCHINAI_BACKUP_KEY, or in "
        "OCHINAI_BACKUP_OLD_KEYS after a rotation"
    )


def keygen(ctx: Context[BackupSettings]) -> Summary:
    """``ochinai backup keygen``: a new key on stdout, its id in the log; no store read."""
    key = new_key()
    sys.stdout.write(key + "\n")
    sys.stdout.flush()
    ident = key_id(key)
    log.info(
        "a new backup key is printed above, id %s: put it in the Secret as OCHINAI_BACKUP_KEY "
        "(the old one, if any, in OCHINAI_BACKUP_OLD_KEYS) and keep a copy apart from the "
        "backups; without it no generation written with it can be read",
        ident,
        extra={"key_id": ident},
    )
    return Summary("ok", {"key_id": ident})
