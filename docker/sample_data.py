"""Sample inputs for every job, generated: the same business date gives the same bytes.

- ``in/sales.csv``: a week of sales for the report (``date,store,sku,sales,qty``; SKUs
  with leading zeros);
- ``data/source/customers.csv``: a customer list in CP932, as Japanese business systems
  export it (member numbers and postal codes with leading zeros, an empty cell beside a
  quoted empty string);
- ``data/source/orders.csv``: orders in UTF-8 with a BOM, amounts written ``"1,280"``;
- ``data/source/shop.sqlite``: a small shop database (products with BLOB thumbnails, an
  AUTOINCREMENT table, a WITHOUT ROWID table, a column holding integers and text, an
  index, a view and a trigger).

Standard library and boto3 only, so that it runs in the job image as it is:
``python docker/sample_data.py --bucket ochinai-local`` with the AWS_* variables set
(``AWS_ENDPOINT_URL`` for MinIO or SeaweedFS).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

SALES = "in/sales.csv"
SOURCES = "data/source/"
STORES = {"001": 1.0, "002": 0.8, "014": 1.3, "027": 0.6, "105": 1.1}
SKUS = [f"{n:06d}" for n in (12, 345, 678, 1024, 2048, 4096, 5000)]
SURNAMES = ["佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤"]
GIVEN = ["花子", "太郎", "美咲", "健一", "陽菜", "翔太", "さくら", "大輔", "結衣", "蓮"]
CITIES = [
    ("060-0001", "北海道札幌市中央区北一条西"),
    ("100-0005", "東京都千代田区丸の内"),
    ("530-0001", "大阪府大阪市北区梅田"),
    ("810-0001", "福岡県福岡市中央区天神"),
    ("980-0021", "宮城県仙台市青葉区中央"),
]


def sample_sales(business_date: date, days: int = 7, seed: int = 20261128) -> bytes:
    """A week of sales ending on ``business_date``: the same date, the same bytes."""
    rng = random.Random(f"{seed}-{business_date}")
    lines = ["date,store,sku,sales,qty"]
    for back in range(days - 1, -1, -1):
        day = business_date - timedelta(days=back)
        for store, size in STORES.items():
            for _ in range(int(40 * size)):
                qty = rng.randint(1, 6)
                price = rng.choice((180, 398, 1280, 2980, 12800))
                lines.append(f"{day.isoformat()},{store},{rng.choice(SKUS)},{qty * price},{qty}")
    return ("\n".join(lines) + "\n").encode()


def customers(rows: int = 200, seed: int = 7) -> bytes:
    """The customer list, CP932 with CRLF line ends."""
    rng = random.Random(seed)
    lines = ["会員番号,氏名,郵便番号,住所,電話番号,メモ"]
    for n in range(1, rows + 1):
        postal, town = rng.choice(CITIES)
        name = f"{rng.choice(SURNAMES)} {rng.choice(GIVEN)}"
        mobile = rng.choice(("090", "080", "070"))
        phone = f"{mobile}-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}"
        memo = ['""', "", "ＤＭ不要", '"配送は午前中, 置き配可"'][n % 4]  # "" and nothing differ
        lines.append(f"{n:06d},{name},{postal},{town}{n % 9 + 1}丁目,{phone},{memo}")
    return ("\r\n".join(lines) + "\r\n").encode("cp932")


def orders(business_date: date, rows: int = 500, seed: int = 11) -> bytes:
    """Orders of the last 30 days, UTF-8 with a BOM, amounts with thousands separators."""
    rng = random.Random(f"{seed}-{business_date}")
    lines = ["注文番号,注文日,会員番号,商品コード,数量,金額"]
    for n in range(1, rows + 1):
        day = business_date - timedelta(days=rng.randint(0, 29))
        qty = rng.randint(1, 4)
        amount = qty * rng.choice((398, 1280, 2980, 12800))
        sku = rng.choice(SKUS)
        lines.append(f'A{n:07d},{day:%Y/%m/%d},{rng.randint(1, 200):06d},{sku},{qty},"{amount:,}"')
    return b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode()


SHOP_SCHEMA = """
CREATE TABLE products (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sku TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    price INTEGER NOT NULL,
    weight_kg REAL,
    thumbnail BLOB,
    note                                    -- no type: integers and text side by side
);
CREATE TABLE stock (
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    updated_at TEXT,
    PRIMARY KEY (sku, warehouse)
) WITHOUT ROWID;
CREATE TABLE "order items" (
    order_no TEXT NOT NULL,
    line INTEGER NOT NULL,
    sku TEXT NOT NULL REFERENCES products (sku),
    qty INTEGER NOT NULL
);
CREATE INDEX order_items_by_sku ON "order items" (sku);
CREATE VIEW low_stock AS SELECT sku, warehouse, quantity FROM stock WHERE quantity < 10;
CREATE TRIGGER stock_touched AFTER UPDATE OF quantity ON stock
BEGIN
    UPDATE stock SET updated_at = '2026-01-01T00:00:00' WHERE sku = NEW.sku
        AND warehouse = NEW.warehouse;
END;
"""


def shop_database(path: Path, seed: int = 13) -> None:
    """The shop database at ``path`` (a new file)."""
    rng = random.Random(seed)
    with sqlite3.connect(path) as db:
        db.executescript(SHOP_SCHEMA)
        for n, sku in enumerate(SKUS):
            thumbnail = bytes(rng.randrange(256) for _ in range(64))
            note: Any = [None, 12, "季節限定", "", 2**62][n % 5]
            weight = [0.5, 1.25, -0.0, 2.0, None, 0.1, 1e-3][n]
            db.execute(
                "INSERT INTO products (sku, name, price, weight_kg, thumbnail, note) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (sku, f"商品 {sku}", rng.choice((398, 1280, 2980)), weight, thumbnail, note),
            )
            for warehouse in ("札幌", "東京", "福岡"):
                db.execute(
                    "INSERT INTO stock VALUES (?, ?, ?, NULL)",
                    (sku, warehouse, rng.randint(0, 80)),
                )
        for n in range(1, 301):
            for line in range(1, rng.randint(1, 3) + 1):
                db.execute(
                    'INSERT INTO "order items" VALUES (?, ?, ?, ?)',
                    (f"A{n:07d}", line, rng.choice(SKUS), rng.randint(1, 4)),
                )
        db.execute("UPDATE stock SET quantity = quantity + 1 WHERE warehouse = '札幌'")
    db.close()


def objects(business_date: date) -> dict[str, bytes]:
    """Every sample object by key."""
    with tempfile.TemporaryDirectory() as scratch:
        shop = Path(scratch) / "shop.sqlite"
        shop_database(shop)
        database = shop.read_bytes()
    return {
        SALES: sample_sales(business_date),
        SOURCES + "customers.csv": customers(),
        SOURCES + "orders.csv": orders(business_date),
        SOURCES + "shop.sqlite": database,
    }


def upload(s3: Any, bucket: str, business_date: date) -> list[str]:
    """Put every sample object into ``bucket``; their keys."""
    keys = []
    for key, body in objects(business_date).items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        keys.append(key)
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--date", type=date.fromisoformat, help="business date (default: today)")
    args = parser.parse_args(argv)
    import boto3

    day = args.date or datetime.now(ZoneInfo("Asia/Tokyo")).date()
    for key in upload(boto3.client("s3"), args.bucket, day):
        print(f"put s3://{args.bucket}/{key}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
