"""The backup manifest: today's manifests read into their records and written back byte
for byte; a document that is not one refused, naming the field.

The samples are manifests exactly as the backup wrote them (``ochinai backup run`` on
moto), one a variant: CSV sources (CP932 with CRLF, a masked column, a local file, one
that failed), SQLite sources (a masked column, WITHOUT ROWID, one that is not a
database), an encrypted generation, and one under Object Lock.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from ochinai.jobs.backup.crypto import key_id
from ochinai.jobs.backup.manifest import (
    VERSION,
    CsvEntry,
    DatabaseSchema,
    FailedEntry,
    Manifest,
    ObjectLock,
    Options,
    SourceState,
    SqliteEntry,
    TableFile,
    Totals,
    WrittenBy,
    encode_manifest,
    files_of,
    parse_manifest,
)
from ochinai.runtime.errors import DataError
from tests.test_backup_crypto import KEY

WHERE = "s3://ops/backup/20261201/manifest.json"

CSV_SOURCES = r"""{
 "date": "2026-12-01",
 "generation": "20261201",
 "shards": 1,
 "sources": [
  {
   "encoding": "utf-8",
   "files": [
    {
     "bytes": 799,
     "columns": [
      {
       "name": "名前",
       "type": "string"
      },
      {
       "name": "電話",
       "type": "string"
      }
     ],
     "fingerprint": "5441ff86deb8b0138f546c5936855abb89bef571d17236ca0c1b6f22962f5f0a",
     "key": "backup/20261201/customers.csv~970c9a68f197.parquet",
     "masked": [
      "電話"
     ],
     "rows": 1,
     "sha256": "df69c20dd2ee244664b3f7d05cb6c8f010aa4b26d218c1b3f11c03b1d46082bb"
    }
   ],
   "header": [
    "名前",
    "電話"
   ],
   "kind": "csv",
   "name": "customers.csv",
   "newline": "\n",
   "options": {
    "encoding": "auto",
    "mask": [
     "電話"
    ]
   },
   "origin": "s3://ops/data/source/customers.csv",
   "source_bytes": 35,
   "source_etag": "\"dd9f9d70fc2f1e27088fcb3943317be8\"",
   "source_sha256": "970c9a68f197480fa79aad1a328eef83a3c50a13743706845273d048149fdc61",
   "status": "ok"
  },
  {
   "encoding": "utf-8",
   "files": [
    {
     "bytes": 787,
     "columns": [
      {
       "name": "x",
       "type": "int64"
      },
      {
       "name": "y",
       "type": "int64"
      }
     ],
     "fingerprint": "f861dde48fc4af528de5588e0f7a8bf776e83e3988fbbea71887fd2f431fa60a",
     "key": "backup/20261201/local_here.csv-dc6edaf1~81bf9fa83c6f.parquet",
     "masked": [],
     "rows": 1,
     "sha256": "6e2fedeadfe7b603ba0a8cb342c87fa197e094f190705221d5c63782b1b0c0e3"
    }
   ],
   "header": [
    "x",
    "y"
   ],
   "kind": "csv",
   "name": "local/here.csv",
   "newline": "\n",
   "options": {
    "encoding": "auto",
    "mask": []
   },
   "origin": "/srv/exports/local/here.csv",
   "source_bytes": 8,
   "source_etag": null,
   "source_sha256": "81bf9fa83c6f7f151bd491a98cd7d933de3965289e3ebd77c6c425f7eaa16392",
   "status": "ok"
  },
  {
   "error": "s3://ops/data/source/open.csv line 2: a quoted value opens here and never closes, so the rest of the file (14 bytes) would be that one value; end the value with a quote, and write a quote inside a value as two (\"\")",
   "kind": "csv",
   "name": "open.csv",
   "options": {
    "encoding": "auto",
    "mask": []
   },
   "origin": "s3://ops/data/source/open.csv",
   "source_bytes": 20,
   "source_etag": "\"0baaa9d3a960a739d90e293b734b8455\"",
   "source_sha256": "5156cd098248eae2fc86cd0a2c00a83e2153b5da10cf8266eccde3562d0211d0",
   "status": "failed"
  },
  {
   "encoding": "cp932",
   "files": [
    {
     "bytes": 748,
     "columns": [
      {
       "name": "伝票番号",
       "type": "string"
      },
      {
       "name": "金額",
       "type": "string"
      }
     ],
     "fingerprint": "8d81ae180a88b4cf8e8284913108a3e30d1e4cd96e7db810bd16fd8fbfff66b4",
     "key": "backup/20261201/sales.csv~13136ab19495.parquet",
     "masked": [],
     "rows": 2,
     "sha256": "b5cb6289bcb7ccb9883a8193d15f76a3591a108c2bc1f9557c06604271abffd2"
    }
   ],
   "header": [
    "伝票番号",
    "金額"
   ],
   "kind": "csv",
   "name": "sales.csv",
   "newline": "\r\n",
   "options": {
    "encoding": "auto",
    "mask": []
   },
   "origin": "s3://ops/data/source/sales.csv",
   "source_bytes": 40,
   "source_etag": "\"efc1daf9442f307c402545168513ef7a\"",
   "source_sha256": "13136ab19495dabcf35aad1eb93cd526af1856ef0d089528bb5e1f53082e5071",
   "status": "ok"
  }
 ],
 "totals": {
  "bytes": 2334,
  "failed": 1,
  "files": 3,
  "rows": 4,
  "sources": 4
 },
 "version": 1,
 "written_by": {
  "ochinai": "0.2.0",
  "pyarrow": "26.0.1",
  "python": "3.11.7",
  "sqlite": "3.40.1"
 }
}
"""  # noqa: E501 (as the job wrote it)

SQLITE_SOURCES = r"""{
 "date": "2026-12-01",
 "generation": "20261201",
 "shards": 1,
 "sources": [
  {
   "error": "s3://dbs/data/source/broken.db: not a readable SQLite database (file is not a database)",
   "kind": "sqlite",
   "name": "broken.db",
   "origin": "s3://dbs/data/source/broken.db",
   "status": "failed"
  },
  {
   "database": {
    "application_id": 0,
    "auto_vacuum": 0,
    "encoding": "UTF-8",
    "page_size": 4096,
    "schema": [
     {
      "name": "users",
      "sql": "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, note)",
      "table": "users",
      "type": "table"
     },
     {
      "name": "items",
      "sql": "CREATE TABLE items (sku TEXT PRIMARY KEY, qty INTEGER) WITHOUT ROWID",
      "table": "items",
      "type": "table"
     },
     {
      "name": "users_email",
      "sql": "CREATE INDEX users_email ON users(email)",
      "table": "users",
      "type": "index"
     },
     {
      "name": "notes",
      "sql": "CREATE VIEW notes AS SELECT note FROM users",
      "table": "notes",
      "type": "view"
     }
    ],
    "user_version": 42
   },
   "files": [
    {
     "bytes": 1813,
     "columns": [
      {
       "classes": [
        "integer"
       ],
       "declared": "INTEGER",
       "name": "id"
      },
      {
       "classes": [
        "text"
       ],
       "declared": "TEXT",
       "name": "email"
      },
      {
       "classes": [
        "real",
        "text"
       ],
       "declared": "",
       "name": "note"
      }
     ],
     "fingerprint": "f610a1565c3a9d79e2fa532aa57ad33c7b4557076075ede0e2d6ae8b14fa9c02",
     "key": "backup/20261201/shop.sqlite/users~0347f9a79aeb.parquet",
     "masked": [
      "email"
     ],
     "rowid": "rowid",
     "rows": 2,
     "sha256": "9851b923d59f66d45863ecc58df3797f964ddc558764702227106d4276133b09",
     "table": "users"
    },
    {
     "bytes": 757,
     "columns": [
      {
       "classes": [
        "text"
       ],
       "declared": "TEXT",
       "name": "sku"
      },
      {
       "classes": [
        "integer"
       ],
       "declared": "INTEGER",
       "name": "qty"
      }
     ],
     "fingerprint": "8e6fc4163bcb705970bbe921992176e5848e725e3c564ca5ad0c89bc7568140e",
     "key": "backup/20261201/shop.sqlite/items~0347f9a79aeb.parquet",
     "masked": [],
     "rowid": null,
     "rows": 1,
     "sha256": "342766db0a3f9a3c9b65200272d370e703dd12a903c566401168786433b197c5",
     "table": "items"
    }
   ],
   "kind": "sqlite",
   "name": "shop.sqlite",
   "options": {
    "mask": [
     "users.email"
    ]
   },
   "origin": "s3://dbs/data/source/shop.sqlite",
   "source_bytes": 16384,
   "source_etag": "\"413f7759c3ebfd9472f7428df56f6e8c\"",
   "source_sha256": "0347f9a79aebf3b59900cc47f4b3ca81c62acb48af4b6c66545b7537b66b8009",
   "status": "ok"
  }
 ],
 "totals": {
  "bytes": 2570,
  "failed": 1,
  "files": 2,
  "rows": 3,
  "sources": 2
 },
 "version": 1,
 "written_by": {
  "ochinai": "0.2.0",
  "pyarrow": "26.0.1",
  "python": "3.11.7",
  "sqlite": "3.40.1"
 }
}
"""  # noqa: E501 (as the job wrote it)

ENCRYPTED = r"""{
 "date": "2026-12-01",
 "generation": "20261201",
 "shards": 1,
 "sources": [
  {
   "encoding": "cp932",
   "files": [
    {
     "bytes": 1815,
     "columns": [
      {
       "name": "伝票番号",
       "type": "string"
      },
      {
       "name": "金額",
       "type": "string"
      }
     ],
     "encryption": {
      "algorithm": "AES_GCM_V1",
      "key_id": "ae9d5a5b5cb0f7e5",
      "key_wrap": "parquet-aes-gcm-v1"
     },
     "fingerprint": "8d81ae180a88b4cf8e8284913108a3e30d1e4cd96e7db810bd16fd8fbfff66b4",
     "key": "backup/20261201/sales.csv~13136ab19495.parquet",
     "masked": [],
     "rows": 2,
     "sha256": "83aea9edf460e9f60d5daf23390f1b5b202509c85725a811ff22f7b59a942a1c"
    }
   ],
   "header": [
    "伝票番号",
    "金額"
   ],
   "kind": "csv",
   "name": "sales.csv",
   "newline": "\r\n",
   "options": {
    "encoding": "auto",
    "key_id": "ae9d5a5b5cb0f7e5",
    "mask": []
   },
   "origin": "s3://enc/data/source/sales.csv",
   "source_bytes": 40,
   "source_etag": "\"efc1daf9442f307c402545168513ef7a\"",
   "source_sha256": "13136ab19495dabcf35aad1eb93cd526af1856ef0d089528bb5e1f53082e5071",
   "status": "ok"
  },
  {
   "database": {
    "application_id": 0,
    "auto_vacuum": 0,
    "encoding": "UTF-8",
    "page_size": 4096,
    "schema": [
     {
      "name": "users",
      "sql": "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, note)",
      "table": "users",
      "type": "table"
     },
     {
      "name": "items",
      "sql": "CREATE TABLE items (sku TEXT PRIMARY KEY, qty INTEGER) WITHOUT ROWID",
      "table": "items",
      "type": "table"
     },
     {
      "name": "users_email",
      "sql": "CREATE INDEX users_email ON users(email)",
      "table": "users",
      "type": "index"
     },
     {
      "name": "notes",
      "sql": "CREATE VIEW notes AS SELECT note FROM users",
      "table": "notes",
      "type": "view"
     }
    ],
    "user_version": 42
   },
   "files": [
    {
     "bytes": 3218,
     "columns": [
      {
       "classes": [
        "integer"
       ],
       "declared": "INTEGER",
       "name": "id"
      },
      {
       "classes": [
        "text"
       ],
       "declared": "TEXT",
       "name": "email"
      },
      {
       "classes": [
        "real",
        "text"
       ],
       "declared": "",
       "name": "note"
      }
     ],
     "encryption": {
      "algorithm": "AES_GCM_V1",
      "key_id": "ae9d5a5b5cb0f7e5",
      "key_wrap": "parquet-aes-gcm-v1"
     },
     "fingerprint": "c4dfc6b048e099a842c9636ec5c16c240b13fa7cb5d8bbd3e1a125d534dcd102",
     "key": "backup/20261201/shop.sqlite/users~0347f9a79aeb.parquet",
     "masked": [],
     "rowid": "rowid",
     "rows": 2,
     "sha256": "34c7915f4e333f1216c8b326b89fc5f4673f3e61da536843aa92067774623c55",
     "table": "users"
    },
    {
     "bytes": 1824,
     "columns": [
      {
       "classes": [
        "text"
       ],
       "declared": "TEXT",
       "name": "sku"
      },
      {
       "classes": [
        "integer"
       ],
       "declared": "INTEGER",
       "name": "qty"
      }
     ],
     "encryption": {
      "algorithm": "AES_GCM_V1",
      "key_id": "ae9d5a5b5cb0f7e5",
      "key_wrap": "parquet-aes-gcm-v1"
     },
     "fingerprint": "8e6fc4163bcb705970bbe921992176e5848e725e3c564ca5ad0c89bc7568140e",
     "key": "backup/20261201/shop.sqlite/items~0347f9a79aeb.parquet",
     "masked": [],
     "rowid": null,
     "rows": 1,
     "sha256": "1955fddfe0b5eaa6c01df5fb75fef32f648a5b4fe2067ec51179ab0ec3751448",
     "table": "items"
    }
   ],
   "kind": "sqlite",
   "name": "shop.sqlite",
   "options": {
    "key_id": "ae9d5a5b5cb0f7e5",
    "mask": []
   },
   "origin": "s3://enc/data/source/shop.sqlite",
   "source_bytes": 16384,
   "source_etag": "\"413f7759c3ebfd9472f7428df56f6e8c\"",
   "source_sha256": "0347f9a79aebf3b59900cc47f4b3ca81c62acb48af4b6c66545b7537b66b8009",
   "status": "ok"
  }
 ],
 "totals": {
  "bytes": 6857,
  "failed": 0,
  "files": 3,
  "rows": 5,
  "sources": 2
 },
 "version": 1,
 "written_by": {
  "ochinai": "0.2.0",
  "pyarrow": "26.0.1",
  "python": "3.11.7",
  "sqlite": "3.40.1"
 }
}
"""

LOCKED = r"""{
 "date": "2026-12-01",
 "generation": "20261201",
 "lock": {
  "mode": "compliance",
  "until": "2028-01-05T00:00:00+09:00"
 },
 "shards": 1,
 "sources": [
  {
   "encoding": "cp932",
   "files": [
    {
     "bytes": 748,
     "columns": [
      {
       "name": "伝票番号",
       "type": "string"
      },
      {
       "name": "金額",
       "type": "string"
      }
     ],
     "fingerprint": "8d81ae180a88b4cf8e8284913108a3e30d1e4cd96e7db810bd16fd8fbfff66b4",
     "key": "backup/20261201/sales.csv~13136ab19495.parquet",
     "masked": [],
     "rows": 2,
     "sha256": "b5cb6289bcb7ccb9883a8193d15f76a3591a108c2bc1f9557c06604271abffd2"
    }
   ],
   "header": [
    "伝票番号",
    "金額"
   ],
   "kind": "csv",
   "name": "sales.csv",
   "newline": "\r\n",
   "options": {
    "encoding": "auto",
    "mask": []
   },
   "origin": "s3://src/data/source/sales.csv",
   "source_bytes": 40,
   "source_etag": "\"efc1daf9442f307c402545168513ef7a\"",
   "source_sha256": "13136ab19495dabcf35aad1eb93cd526af1856ef0d089528bb5e1f53082e5071",
   "status": "ok"
  }
 ],
 "totals": {
  "bytes": 748,
  "failed": 0,
  "files": 1,
  "rows": 2,
  "sources": 1
 },
 "version": 1,
 "written_by": {
  "ochinai": "0.2.0",
  "pyarrow": "26.0.1",
  "python": "3.11.7",
  "sqlite": "3.40.1"
 }
}
"""

SAMPLES = {
    "csv": CSV_SOURCES,
    "sqlite": SQLITE_SOURCES,
    "encrypted": ENCRYPTED,
    "locked": LOCKED,
}


def parsed(sample: str) -> Manifest:
    return parse_manifest(sample.encode(), WHERE)


def canonical(doc: dict[str, Any]) -> bytes:
    """A document in the manifest's form: keys sorted, one-space indent, a final newline."""
    return (json.dumps(doc, ensure_ascii=False, sort_keys=True, indent=1) + "\n").encode()


# --- today's manifests ------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(SAMPLES))
def test_a_manifest_is_written_back_byte_for_byte(variant: str) -> None:
    """The bytes decide whether a run changes the manifest (compare-and-swap, or
    "unchanged"): a manifest read and written again is the same bytes."""
    sample = SAMPLES[variant]
    assert canonical(json.loads(sample)) == sample.encode()  # the samples are as written
    manifest = parsed(sample)
    assert manifest.version == VERSION == 1
    assert encode_manifest(manifest) == sample.encode()


@pytest.mark.parametrize("variant", sorted(SAMPLES))
def test_the_totals_are_the_entries_sums(variant: str) -> None:
    manifest = parsed(SAMPLES[variant])
    assert Totals.of(manifest.sources) == manifest.totals
    assert list(manifest.files()) == list(files_of(manifest.sources))


def test_csv_sources_read_with_their_encoding_line_ends_and_masks() -> None:
    manifest = parsed(CSV_SOURCES)
    assert (manifest.generation, manifest.date, manifest.shards) == (
        "20261201",
        date(2026, 12, 1),
        1,
    )
    assert manifest.lock is None
    assert manifest.written_by == WrittenBy(
        ochinai="0.2.0", pyarrow="26.0.1", sqlite="3.40.1", python="3.11.7"
    )
    by_name = {e.name: e for e in manifest.sources}
    sales = by_name["sales.csv"]
    assert isinstance(sales, CsvEntry) and sales.kind == "csv"
    assert (sales.encoding, sales.newline, sales.header) == ("cp932", "\r\n", ["伝票番号", "金額"])
    assert sales.options == Options(mask=[], encoding="auto")
    [file] = sales.files
    assert file.key == "backup/20261201/sales.csv~13136ab19495.parquet"
    assert (file.rows, file.bytes, file.encryption) == (2, 748, None)
    assert [c["type"] for c in file.columns] == ["string", "string"]
    customers = by_name["customers.csv"]
    assert isinstance(customers, CsvEntry)
    assert customers.files[0].masked == ["電話"] and customers.options == Options(["電話"], "auto")
    local = by_name["local/here.csv"]
    assert isinstance(local, CsvEntry) and local.state.etag is None  # a local file
    assert local.origin == "/srv/exports/local/here.csv"
    # Failed once read: its state and options are kept, no file.
    failed = by_name["open.csv"]
    assert isinstance(failed, FailedEntry) and failed.kind == "csv"
    assert failed.error.startswith("s3://ops/data/source/open.csv line 2: a quoted value")
    assert failed.state == SourceState(
        '"0baaa9d3a960a739d90e293b734b8455"',
        "5156cd098248eae2fc86cd0a2c00a83e2153b5da10cf8266eccde3562d0211d0",
        20,
    )
    assert failed.options == Options([], "auto")
    assert [f.key for f in files_of(manifest.sources)] == [
        f.key for e in (customers, local, sales) for f in e.files
    ]


def test_sqlite_sources_read_with_their_schema_and_tables() -> None:
    manifest = parsed(SQLITE_SOURCES)
    broken, shop = manifest.sources
    # Failed before it was read: no state, no options.
    assert isinstance(broken, FailedEntry) and broken.kind == "sqlite"
    assert (broken.state, broken.options) == (None, None)
    assert isinstance(shop, SqliteEntry) and shop.kind == "sqlite"
    assert shop.options == Options(["users.email"])
    database = shop.database
    assert [(s["type"], s["name"]) for s in database.schema] == [
        ("table", "users"),
        ("table", "items"),
        ("index", "users_email"),
        ("view", "notes"),
    ]
    assert database.pragmas() == {
        "user_version": 42,
        "application_id": 0,
        "page_size": 4096,
        "encoding": "UTF-8",
        "auto_vacuum": 0,
    }
    users, items = shop.files
    assert isinstance(users, TableFile)
    assert (users.table, users.rowid, users.masked) == ("users", "rowid", ["email"])
    assert users.columns[2] == {"name": "note", "declared": "", "classes": ["real", "text"]}
    assert (items.table, items.rowid) == ("items", None)  # WITHOUT ROWID


def test_an_encrypted_generation_names_its_key_by_id_in_each_file() -> None:
    manifest = parsed(ENCRYPTED)
    files = list(manifest.files())
    assert len(files) == 3
    for file in files:
        assert file.encryption is not None
        assert (file.encryption.algorithm, file.encryption.key_wrap) == (
            "AES_GCM_V1",
            "parquet-aes-gcm-v1",
        )
        assert file.encryption.key_id == key_id(KEY)
    for entry in manifest.sources:
        assert entry.options is not None and entry.options.key_id == key_id(KEY)


def test_a_generation_under_object_lock_says_until_when() -> None:
    manifest = parsed(LOCKED)
    tokyo = timezone(timedelta(hours=9))
    assert manifest.lock == ObjectLock("compliance", datetime(2028, 1, 5, tzinfo=tokyo))


def old(sample: str) -> dict[str, Any]:
    """``sample`` as a writer from before line ends, options and a database's page size,
    encoding and auto_vacuum were kept wrote it."""
    doc: dict[str, Any] = json.loads(sample)
    for entry in doc["sources"]:
        entry.pop("newline", None)
        entry.pop("options", None)
        for name in ("page_size", "encoding", "auto_vacuum"):
            entry.get("database", {}).pop(name, None)
    return doc


@pytest.mark.parametrize("variant", ["csv", "sqlite"])
def test_a_manifest_from_before_the_later_fields_reads_and_writes_back(variant: str) -> None:
    body = canonical(old(SAMPLES[variant]))
    manifest = parse_manifest(body, WHERE)
    for entry in manifest.sources:
        assert entry.options is None
        if isinstance(entry, CsvEntry):
            assert entry.newline is None
        if isinstance(entry, SqliteEntry):
            assert entry.database.pragmas() == {"user_version": 42, "application_id": 0}
            assert entry.database == DatabaseSchema(
                schema=entry.database.schema, user_version=42, application_id=0
            )
    assert encode_manifest(manifest) == body


# --- what is not a manifest ----------------------------------------------------------------


def refused(body: bytes) -> str:
    with pytest.raises(DataError) as error:
        parse_manifest(body, WHERE)
    return str(error.value)


def test_another_version_is_refused_naming_it() -> None:
    doc = json.loads(CSV_SOURCES)
    doc["version"] = 2
    assert refused(canonical(doc)) == f"{WHERE}: not a backup manifest (version 2, expected 1)"
    assert refused(b"{}") == f"{WHERE}: not a backup manifest (version None, expected 1)"


def test_what_is_not_json_or_not_an_object_is_refused() -> None:
    assert refused(b"{").startswith(f"{WHERE}: not a backup manifest (Expecting ")
    assert refused(b"[]") == f"{WHERE}: not a backup manifest (a JSON list, not an object)"


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda d: d["sources"][3]["files"][0].pop("rows"), "sources[3].files[0].rows is missing"),
        (lambda d: d["sources"][0].update(status="maybe"), "sources[0].status is 'maybe'"),
        (lambda d: d["sources"][0].update(kind="parquet"), "sources[0].kind is 'parquet'"),
        (lambda d: d["totals"].update(rows="4"), "totals.rows is not an integer"),
        (lambda d: d["sources"][1].update(header=[1]), "sources[1].header is not a list of"),
        (lambda d: d.update(sources={}), "sources is not a list"),
        (lambda d: d["sources"][2].pop("error"), "sources[2].error is missing"),
    ],
)
def test_a_field_missing_or_of_another_type_is_named(change: Any, said: str) -> None:
    doc = json.loads(CSV_SOURCES)
    change(doc)
    assert said in refused(canonical(doc))


# --- writing -----------------------------------------------------------------------------


def test_a_manifest_built_in_code_writes_as_the_job_always_wrote() -> None:
    """The optional fields are left out when unset, as the job wrote them: no ``lock``
    without Object Lock, no ``encryption`` for a file not encrypted, no ``key_id``."""
    read = parsed(CSV_SOURCES)
    built = Manifest(
        generation="20261201",
        date=date(2026, 12, 1),
        shards=1,
        sources=read.sources,
        totals=Totals.of(read.sources),
        written_by=WrittenBy(ochinai="0.2.0", pyarrow="26.0.1", sqlite="3.40.1", python="3.11.7"),
    )
    assert built == read
    assert encode_manifest(built) == CSV_SOURCES.encode()
