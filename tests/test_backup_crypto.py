"""Encrypted backups: OCHINAI_BACKUP_KEY, Parquet Modular Encryption, rotation, keygen.

Runs the job in this process as tests/test_backup.py does (Runner, S3 lock, moto), on
the same sources: every file of a generation written with a key is unreadable without
it, reads back to every value with it (the job's verify and restore, or an operator's
plain pyarrow), and a missing or wrong key is a ConfigError (78) that says which key.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

from ochinai.jobs.backup import crypto
from ochinai.jobs.backup.settings import BackupSettings
from ochinai.runtime.declare import load
from ochinai.runtime.errors import ConfigError
from tests.test_backup import DAY, SALES, Backup, dump, make_shop

KEY = base64.b64encode(bytes(range(32))).decode()  # as `ochinai backup keygen` prints one
NEW_KEY = base64.b64encode(bytes(range(32, 64))).decode()
SOURCES = {
    "sales.csv": SALES.encode(),
    "sjis.csv": SALES.encode("cp932"),
    "bom.csv": b"\xef\xbb\xbf" + SALES.encode(),
}


@pytest.fixture
def backup(moto_ops: Any, tmp_path: Path) -> Backup:
    return Backup(moto_ops, tmp_path)


def files_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for e in manifest["sources"] for f in e.get("files", [])]


def put_sources(backup: Backup, tmp_path: Path) -> Path:
    for name, body in SOURCES.items():
        backup.put(f"data/source/{name}", body)
    shop = tmp_path / "shop.sqlite"
    make_shop(shop)
    backup.put("data/source/shop.sqlite", shop.read_bytes())
    return shop


def test_an_encrypted_generation_restores_every_cell_and_verifies(
    backup: Backup, tmp_path: Path
) -> None:
    """CSV byte for byte (its encoding, BOM, line ends) and SQLite cell by cell, as the
    unencrypted restore gives them; the manifest names the key by its id, never itself."""
    shop = put_sources(backup, tmp_path)
    assert backup.run(OCHINAI_BACKUP_KEY=KEY) == 0, backup.buf.getvalue()[-3000:]
    assert backup.summary["verified"] == backup.summary["files_written"] == 9
    manifest = backup.manifest()
    for file in files_of(manifest):
        assert file["encryption"] == {
            "algorithm": "AES_GCM_V1",
            "key_id": crypto.key_id(KEY),
            "key_wrap": crypto.KEY_WRAP,
        }
        assert backup.get(file["key"])[-4:] == b"PARE"  # an encrypted footer
    assert all(e["options"]["key_id"] == crypto.key_id(KEY) for e in manifest["sources"])
    text = json.dumps(manifest)
    assert KEY not in text and base64.b64decode(KEY).hex() not in text
    assert backup.run("verify", OCHINAI_BACKUP_KEY=KEY) == 0, backup.buf.getvalue()[-3000:]
    assert backup.summary["verified"] == 9
    restored = backup.restore(OCHINAI_BACKUP_KEY=KEY)
    for name, body in SOURCES.items():
        assert (restored / name).read_bytes() == body, name
    assert backup.summary["csv_identical"] == 3
    assert dump(restored / "shop.sqlite") == dump(shop)


def test_without_the_key_a_file_does_not_open_and_with_it_plain_pyarrow_reads_it(
    backup: Backup, tmp_path: Path
) -> None:
    """What an operator does in a disaster: pyarrow, our KMS client (or its few lines
    rewritten from crypto.py's docstring) and the key. Masked columns stay tokens."""
    backup.put("data/source/sales.csv", SALES.encode())
    backup.put("data/source/customers.csv", "名前,電話\n山田,03-1234-5678\n".encode())
    env = {
        "OCHINAI_BACKUP_KEY": KEY,
        "OCHINAI_BACKUP_MASK_COLUMNS": "customers.csv:電話",
        "OCHINAI_MASK_KEY": "a secret of sixteen bytes or more",
    }
    assert backup.run(**env) == 0, backup.buf.getvalue()[-3000:]
    by_name = {e["name"]: e for e in backup.manifest()["sources"]}
    [sales] = by_name["sales.csv"]["files"]
    [customers] = by_name["customers.csv"]["files"]
    body = backup.get(sales["key"])
    for reading in (pq.read_table, pq.read_metadata, pq.read_schema):
        with pytest.raises(OSError, match="encrypted"):
            reading(io.BytesIO(body))
    assert b"000124" not in body and "みかん".encode() not in body

    # The recipe, with ochinai installed.
    ring = crypto.KeyRing.of(KEY)
    factory = pe.CryptoFactory(ring.kms_client)
    properties = factory.file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration()
    )
    table = pq.read_table(io.BytesIO(body), decryption_properties=properties)
    assert table.column("伝票番号").to_pylist() == ["000123", "000124", "000125"]
    assert table.column("備考").to_pylist() == [None, "", "返品"]
    phones = pq.read_table(
        io.BytesIO(backup.get(customers["key"])),
        decryption_properties=factory.file_decryption_properties(
            pe.KmsConnectionConfig(), pe.DecryptionConfiguration()
        ),
    ).column("電話")
    assert phones.to_pylist()[0].startswith("m_")  # masked before it was encrypted

    # The same without ochinai: the key's derivation and the wrapped key's format.
    master = hashlib.sha256(b"ochinai-backup-master-key\x00" + KEY.encode()).digest()
    ident = hashlib.sha256(b"ochinai-backup-key-id\x00" + KEY.encode()).hexdigest()[:16]
    assert ident == sales["encryption"]["key_id"]

    class Kms(pe.KmsClient):  # type: ignore[misc]
        def unwrap_key(self, wrapped: str, master_key_identifier: str) -> bytes:
            assert master_key_identifier == ident
            aad = b"ochinai-backup-kek:" + master_key_identifier.encode()
            props = pe.create_decryption_properties(master, aad_prefix=aad)
            key = pq.read_table(
                pa.BufferReader(base64.b64decode(wrapped)), decryption_properties=props
            )
            return bytes(key.column(0)[0].as_py())

    bare = pe.CryptoFactory(lambda config: Kms()).file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration()
    )
    assert pq.read_table(io.BytesIO(body), decryption_properties=bare).equals(table)


def test_verify_and_restore_without_the_key_end_78_naming_it(
    backup: Backup, tmp_path: Path
) -> None:
    put_sources(backup, tmp_path)
    assert backup.run(OCHINAI_BACKUP_KEY=KEY) == 0
    needed = crypto.key_id(KEY)
    assert backup.run("verify") == 78
    assert backup.summary["outcome"] == "config_error"
    assert "OCHINAI_BACKUP_KEY is not set" in backup.error and needed in backup.error
    target = tmp_path / "nothing"
    assert backup.run("restore", OCHINAI_BACKUP_RESTORE_TO=str(target)) == 78
    assert "OCHINAI_BACKUP_KEY" in backup.error and needed in backup.error
    assert not target.exists()  # refused before anything was written


def test_a_wrong_key_ends_78_naming_the_key_id_the_generation_needs(
    backup: Backup, tmp_path: Path
) -> None:
    put_sources(backup, tmp_path)
    assert backup.run(OCHINAI_BACKUP_KEY=KEY) == 0
    for action, extra in (("verify", {}), ("restore", {"OCHINAI_BACKUP_RESTORE_TO": "x"})):
        assert backup.run(action, OCHINAI_BACKUP_KEY=NEW_KEY, **extra) == 78, action
        assert backup.summary["outcome"] == "config_error"
        error = backup.error
        assert f"encrypted with the key of id {crypto.key_id(KEY)}" in error
        assert f"OCHINAI_BACKUP_KEY has id {crypto.key_id(NEW_KEY)}" in error
        assert KEY not in backup.buf.getvalue() and NEW_KEY not in backup.buf.getvalue()


def test_a_file_whose_key_the_ring_lacks_is_78_even_past_the_manifest(tmp_path: Path) -> None:
    """Read below the job (a manifest that says nothing of encryption): the KMS client,
    asked for a key id it does not hold, names it; no key at all names the setting."""
    from ochinai.jobs.backup import parquet

    path = tmp_path / "t.parquet"
    with parquet.Writer(path, pa.schema([("a", pa.int64())]), crypto.KeyRing.of(KEY)) as w:
        w.write(pa.record_batch([pa.array([1, 2])], names=["a"]))
    with pytest.raises(ConfigError, match=f"key of id {crypto.key_id(KEY)}"):
        list(parquet.read_batches(path, ring=crypto.KeyRing.of(NEW_KEY)))
    with pytest.raises(ConfigError, match="is encrypted: reading it needs OCHINAI_BACKUP_KEY"):
        parquet.read_schema(path)
    batches = parquet.read_batches(path, ring=crypto.KeyRing.of(NEW_KEY, KEY))
    assert [b.column(0).to_pylist() for b in batches] == [[1, 2]]


def test_after_a_rotation_old_keys_read_earlier_generations_and_new_ones_use_the_new_key(
    backup: Backup, tmp_path: Path
) -> None:
    shop = put_sources(backup, tmp_path)
    assert backup.run(OCHINAI_BACKUP_KEY=KEY) == 0
    rotated = {"OCHINAI_BACKUP_KEY": NEW_KEY, "OCHINAI_BACKUP_OLD_KEYS": f" {KEY} ,"}
    later = DAY + timedelta(days=1)
    assert backup.run(day=later, **rotated) == 0, backup.buf.getvalue()[-3000:]
    ids = {f["encryption"]["key_id"] for f in files_of(backup.manifest(later))}
    assert ids == {crypto.key_id(NEW_KEY)}
    assert backup.run("verify", later, OCHINAI_BACKUP_VERIFY_ALL="true", **rotated) == 0
    assert (backup.summary["generations"], backup.summary["verified"]) == (2, 18)
    restored = backup.restore(DAY, **rotated)  # the earlier generation, by its old key
    assert (restored / "sales.csv").read_bytes() == SOURCES["sales.csv"]
    assert dump(restored / "shop.sqlite") == dump(shop)
    assert backup.run("verify", DAY, OCHINAI_BACKUP_KEY=NEW_KEY) == 78  # without the old one
    assert crypto.key_id(KEY) in backup.error
    # Old keys with no current key would write the next generation unencrypted: refused.
    assert backup.run(day=later + timedelta(days=1), OCHINAI_BACKUP_OLD_KEYS=KEY) == 78
    assert "OCHINAI_BACKUP_KEY is not" in backup.error


def test_a_same_day_rerun_with_the_key_writes_nothing(backup: Backup, tmp_path: Path) -> None:
    """Encrypted bytes differ at every write (fresh data keys): an unchanged source is known
    by its sha256. A new key the same day writes the day's files again, with it."""
    put_sources(backup, tmp_path)
    assert backup.run(OCHINAI_BACKUP_KEY=KEY) == 0
    first = backup.etags()
    assert backup.run(OCHINAI_BACKUP_KEY=KEY) == 0
    assert backup.summary["outcome"] == "unchanged" and backup.summary["files_written"] == 0
    assert backup.summary["files_unchanged"] == 9 and backup.etags() == first

    assert backup.run(day=DAY + timedelta(days=1), OCHINAI_BACKUP_KEY=KEY) == 0
    one = {f["key"].split("/", 2)[2]: f for f in files_of(backup.manifest())}
    two = {f["key"].split("/", 2)[2]: f for f in files_of(backup.manifest(DAY + timedelta(1)))}
    assert one.keys() == two.keys()
    for name, file in one.items():  # the same values, not the same bytes
        assert file["fingerprint"] == two[name]["fingerprint"] and file["rows"] == two[name]["rows"]
        assert file["sha256"] != two[name]["sha256"]

    rotated = {"OCHINAI_BACKUP_KEY": NEW_KEY, "OCHINAI_BACKUP_OLD_KEYS": KEY}
    assert backup.run(**rotated) == 0
    assert backup.summary["outcome"] == "ok" and backup.summary["files_written"] == 9
    ids = {f["encryption"]["key_id"] for f in files_of(backup.manifest())}
    assert ids == {crypto.key_id(NEW_KEY)} and backup.summary["verified"] == 9


def test_keygen_prints_a_new_key_and_writes_nothing(
    backup: Backup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert backup.run("keygen", OCHINAI_DRY_RUN="true") == 0
    key = capsys.readouterr().out.strip()
    assert len(base64.b64decode(key, validate=True)) == 32
    assert backup.summary["key_id"] == crypto.key_id(key)
    assert key not in backup.buf.getvalue()  # on stdout, never in the log
    assert backup.listed("") == []  # a dry run: no lock, no run record
    assert backup.run("keygen", OCHINAI_DRY_RUN="true") == 0
    assert capsys.readouterr().out.strip() != key
    settings = load(BackupSettings, {"OCHINAI_BACKUP_KEY": key + "\n"})
    assert settings.key == key  # a Secret made with `echo` has a line break: not the key


@pytest.mark.parametrize(
    ("variable", "value", "why"),
    [
        ("OCHINAI_BACKUP_KEY", "too short a key", "shorter than 32 characters"),
        ("OCHINAI_BACKUP_KEY", "", "shorter than 32 characters"),
        ("OCHINAI_BACKUP_KEY", KEY + "," + NEW_KEY, "has a comma"),
        ("OCHINAI_BACKUP_OLD_KEYS", f"{KEY},short", "key 2 is shorter than 32"),
    ],
)
def test_a_malformed_key_is_78_without_showing_it(variable: str, value: str, why: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(BackupSettings, {variable: value})
    assert f"{variable}=*** is invalid" in str(raised.value) and why in str(raised.value)
    assert "short a key" not in str(raised.value) and KEY not in str(raised.value)
