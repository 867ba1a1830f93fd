#!/usr/bin/env python3
"""mysql-connector-python (pure-Python protocol, server-side prepared statements via
cursor(prepared=True)) through cutover. See common.py for the environment."""

import datetime
import decimal
import json
import os
import sys
import warnings

import mysql.connector

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Checker, check_placement, Env, all_bytes, expect_error, error_code  # noqa: E402

warnings.simplefilter("ignore", DeprecationWarning)
E = Env()
ck = Checker("connector", E.pattern)
T = f"compat_connector_{E.pattern}"

DDL = f"""CREATE TABLE {T} (
  id INT PRIMARY KEY,
  name VARCHAR(100) CHARACTER SET utf8mb4,
  data BLOB,
  amount DECIMAL(10,3),
  ts DATETIME(6),
  doc JSON,
  note VARCHAR(20) NULL
) ENGINE=InnoDB"""

ROW1 = (
    1,
    "caf\u00e9 \U0001F642",
    all_bytes(),
    decimal.Decimal("1234567.891"),
    datetime.datetime(1999, 12, 31, 23, 59, 59, 999999),
    {"k": [True, False, None, 1.5], "s": "\u00fcn\u00efcode"},
    None,
)
INSERT = f"INSERT INTO {T} (id, name, data, amount, ts, doc, note) VALUES (?, ?, ?, ?, ?, ?, ?)"


def connect(port, password=None, user=None, autocommit=True):
    return mysql.connector.connect(
        host=E.host,
        port=port,
        user=user or E.user,
        password=E.password if password is None else password,
        database=E.db,
        use_pure=True,
        autocommit=autocommit,
        connection_timeout=10,
    )


def q(conn, sql, args=None, prepared=True):
    """Run one statement; with prepared=True via COM_STMT_PREPARE/EXECUTE."""
    cur = conn.cursor(prepared=prepared)
    try:
        cur.execute(sql, args)
        return cur.fetchall() if cur.with_rows else cur.rowcount
    finally:
        cur.close()


def side_rows(side, where="1=1"):
    conn = connect(E.port_of(side))
    try:
        return q(conn, f"SELECT * FROM {T} WHERE {where} ORDER BY id", prepared=False)
    except mysql.connector.Error as e:
        if error_code(e) == 1146:
            return []
        raise
    finally:
        conn.close()


def clean_backends():
    for side in ("source", "destination"):
        conn = connect(E.port_of(side))
        q(conn, f"DROP TABLE IF EXISTS {T}", prepared=False)
        conn.close()


ck.check("setup: drop old tables directly on both backends", clean_backends)

P = ck.check("connect through the proxy", lambda: connect(E.proxy_port))
if P is None:
    ck.finish()


def create():
    q(P, DDL, prepared=False)
    names = [r[0] for r in q(P, f"SHOW TABLES LIKE '{T}'", prepared=False)]
    assert names == [T], f"SHOW TABLES through proxy: {names}"


ck.check("CREATE TABLE (text protocol)", create)


def insert_row1():
    r = list(ROW1)
    r[5] = json.dumps(r[5])
    n = q(P, INSERT, r)
    assert n == 1, f"affected rows {n}"


ck.check("prepared INSERT blob/decimal/datetime(6)/json/null", insert_row1)


def check_row1(rows):
    assert len(rows) == 1, f"rows: {rows!r}"
    r = rows[0]
    assert r[0] == 1, f"id {r[0]!r}"
    assert r[1] == ROW1[1], f"name {r[1]!r}"
    assert type(r[2]) is bytes, f"blob type {type(r[2]).__name__}"
    assert r[2] == ROW1[2], f"blob bytes differ: {r[2]!r}"
    assert r[3] == ROW1[3] and isinstance(r[3], decimal.Decimal), f"decimal {r[3]!r}"
    assert r[4] == ROW1[4], f"datetime {r[4]!r}"
    assert json.loads(r[5]) == ROW1[5], f"json {r[5]!r}"
    assert r[6] is None, f"null {r[6]!r}"


SEL1 = f"SELECT id, name, data, amount, ts, doc, note FROM {T} WHERE id = ?"
ck.check("prepared SELECT values back exactly (binary rows)", lambda: check_row1(q(P, SEL1, (1,))))
ck.check("text SELECT values back exactly", lambda: check_row1(q(P, SEL1.replace("?", "1"), prepared=False)))


def reuse_statement():
    cur = P.cursor(prepared=True)
    for i in (2, 3):
        cur.execute(f"INSERT INTO {T} (id, name, amount) VALUES (?, ?, ?)", (i, f"n{i}", decimal.Decimal(i) / 1000))
    cur.close()
    rows = q(P, f"SELECT id, name, amount FROM {T} WHERE id BETWEEN ? AND ? ORDER BY id", (2, 3))
    assert rows == [(2, "n2", decimal.Decimal("0.002")), (3, "n3", decimal.Decimal("0.003"))], rows


ck.check("one prepared INSERT executed twice, multi-row SELECT", reuse_statement)


def null_and_long_params():
    rows = q(P, "SELECT ?, ?, ?, LENGTH(?)", (None, -(2**63), "x" * 70000, b"\0" * 70000))
    assert rows == [(None, -(2**63), "x" * 70000, 70000)], f"{str(rows)[:200]}"


ck.check("NULL, BIGINT min, 70 KB string/bytes parameters", null_and_long_params)

ck.check("error 1062 duplicate key (execute)", expect_error, 1062, q, P, f"INSERT INTO {T} (id) VALUES (?)", (1,))
ck.check("error 1146 no such table (prepare)", expect_error, 1146, q, P, "SELECT * FROM compat_no_such_table WHERE id = ?", (1,))
ck.check("error 1064 syntax (prepare)", expect_error, 1064, q, P, "SELEKT ?", (1,))


def still_usable():
    rows = q(P, "SELECT ? + 1", (1,))
    assert rows == [(2,)], f"SELECT ? + 1 gave {rows}"


ck.check("connection usable after errors", still_usable)


def tx_commit():
    P.start_transaction()
    q(P, f"INSERT INTO {T} (id, name) VALUES (?, ?)", (10, "tx"))
    q(P, f"INSERT INTO {T} (id, name) VALUES (?, ?)", (11, "tx"))
    P.commit()
    assert len(q(P, f"SELECT id FROM {T} WHERE id IN (?, ?)", (10, 11))) == 2, "committed rows missing"


ck.check("transaction committed", tx_commit)


def tx_rollback():
    P.start_transaction()
    q(P, f"INSERT INTO {T} (id, name) VALUES (?, ?)", (20, "rolled back"))
    q(P, f"DELETE FROM {T} WHERE id = ?", (2,))
    P.rollback()
    assert q(P, f"SELECT id FROM {T} WHERE id IN (?, ?) ORDER BY id", (2, 20)) == [(2,)], "rollback not applied"


ck.check("transaction rolled back", tx_rollback)

EXPECTED_IDS = [1, 2, 3, 10, 11]


check_placement(ck, E, side_rows, EXPECTED_IDS)


def read_routing():
    for side, rid in ((E.authoritative, 9002), (E.other, 9001)):
        conn = connect(E.port_of(side))
        q(conn, DDL.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"), prepared=False)
        q(conn, f"INSERT INTO {T} (id, name) VALUES ({rid}, '{side} only')", prepared=False)
        conn.close()
    ids = [r[0] for r in q(P, f"SELECT id FROM {T} WHERE id >= ? ORDER BY id", (9000,))]
    assert ids == [9002], f"reads through the proxy saw {ids}, expected only the {E.authoritative} row [9002]"


ck.check(f"prepared reads come from the {E.authoritative}", read_routing)

ck.check("wrong password -> 1045", expect_error, 1045, connect, E.proxy_port, "wrong-password")

try:
    P.close()
except Exception:  # noqa: BLE001
    pass
ck.finish()
