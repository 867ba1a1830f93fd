#!/usr/bin/env python3
"""PyMySQL (text protocol) through cutover. See common.py for the environment."""

import datetime
import decimal
import json
import os
import sys

import pymysql

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Checker, check_placement, Env, all_bytes, expect_error  # noqa: E402

E = Env()
ck = Checker("pymysql", E.pattern)
T = f"compat_pymysql_{E.pattern}"

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
    decimal.Decimal("-1234567.891"),
    datetime.datetime(2024, 2, 29, 23, 59, 58, 123456),
    {"a": [1, 2, {"b": None}], "s": "\u00fcn\u00efcode"},
    None,
)
INSERT = f"INSERT INTO {T} (id, name, data, amount, ts, doc, note) VALUES (%s, %s, %s, %s, %s, %s, %s)"


def connect(port, password=None, user=None, autocommit=True):
    return pymysql.connect(
        host=E.host,
        port=port,
        user=user or E.user,
        password=E.password if password is None else password,
        database=E.db,
        charset="utf8mb4",
        autocommit=autocommit,
        connect_timeout=10,
        read_timeout=30,
        write_timeout=30,
    )


def direct(side):
    return connect(E.port_of(side))


def q(conn, sql, args=None):
    with conn.cursor() as c:
        c.execute(sql, args)
        return c.fetchall()


def params(row):
    r = list(row)
    r[5] = json.dumps(r[5])
    return r


def side_rows(side, where="1=1"):
    """Rows of T on one backend, directly; [] if the table does not exist there."""
    conn = direct(side)
    try:
        return list(q(conn, f"SELECT * FROM {T} WHERE {where} ORDER BY id"))
    except pymysql.err.ProgrammingError as e:
        if e.args[0] == 1146:
            return []
        raise
    finally:
        conn.close()


# ---------------------------------------------------------------- checks

def clean_backends():
    for side in ("source", "destination"):
        conn = direct(side)
        q(conn, f"DROP TABLE IF EXISTS {T}")
        conn.close()


ck.check("setup: drop old tables directly on both backends", clean_backends)

P = ck.check("connect through the proxy", lambda: connect(E.proxy_port))
if P is None:
    ck.finish()


def create():
    q(P, DDL)
    names = [r[0] for r in q(P, f"SHOW TABLES LIKE '{T}'")]
    assert names == [T], f"SHOW TABLES through proxy: {names}"


ck.check("CREATE TABLE", create)


def insert_row1():
    with P.cursor() as c:
        n = c.execute(INSERT, params(ROW1))
        assert n == 1, f"affected rows {n}"


ck.check("INSERT blob/decimal/datetime(6)/json/null", insert_row1)


def select_row1():
    rows = q(P, f"SELECT id, name, data, amount, ts, doc, note FROM {T} WHERE id = 1")
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


ck.check("SELECT values back exactly (256-byte BLOB is bytes)", select_row1)


def multi_row():
    with P.cursor() as c:
        n = c.executemany(
            f"INSERT INTO {T} (id, name, amount) VALUES (%s, %s, %s)",
            [(2, "two", decimal.Decimal("0.001")), (3, "three", decimal.Decimal("9999999.999"))],
        )
        assert n == 2, f"affected rows {n}"
    rows = q(P, f"SELECT id, name, amount FROM {T} WHERE id IN (2, 3) ORDER BY id")
    assert rows == ((2, "two", decimal.Decimal("0.001")), (3, "three", decimal.Decimal("9999999.999"))), rows


ck.check("multi-row INSERT and SELECT", multi_row)


def big_blob():
    blob = (all_bytes() * 4096)  # 1 MiB
    with P.cursor() as c:
        c.execute(f"INSERT INTO {T} (id, name) VALUES (4, 'big')")
        c.execute(f"UPDATE {T} SET data = %s WHERE id = 4", (blob[:65535],))
        c.execute(f"SELECT data, LENGTH(REPEAT(data, 16)), REPEAT(data, 16) = REPEAT(%s, 16) FROM {T} WHERE id = 4", (blob[:65535],))
        r = c.fetchone()
    assert r[0] == blob[:65535], "64 KiB blob differs"
    assert r[1] == 65535 * 16 and r[2] == 1, f"{r[1:]}"
    r = q(P, "SELECT REPEAT(%s, 16)", (all_bytes() * 256,))[0][0]
    assert r == blob, f"1 MiB result differs (len {len(r)})"


ck.check("64 KiB BLOB and 1 MiB result", big_blob)

ck.check("error 1062 duplicate key", expect_error, 1062, q, P, f"INSERT INTO {T} (id) VALUES (1)")
ck.check("error 1146 no such table", expect_error, 1146, q, P, "SELECT * FROM compat_no_such_table")
ck.check("error 1064 syntax", expect_error, 1064, q, P, "SELEKT 1")


def still_usable():
    assert q(P, "SELECT 1 + 1") == ((2,),)


ck.check("connection usable after errors", still_usable)


def tx_commit():
    P.begin()
    q(P, f"INSERT INTO {T} (id, name) VALUES (10, 'tx'), (11, 'tx')")
    assert len(q(P, f"SELECT id FROM {T} WHERE id IN (10, 11)")) == 2, "own writes invisible in tx"
    P.commit()
    assert len(q(P, f"SELECT id FROM {T} WHERE id IN (10, 11)")) == 2, "committed rows missing"


ck.check("transaction committed", tx_commit)


def tx_rollback():
    P.begin()
    q(P, f"INSERT INTO {T} (id, name) VALUES (20, 'rolled back')")
    q(P, f"UPDATE {T} SET name = 'changed' WHERE id = 1")
    P.rollback()
    assert q(P, f"SELECT id FROM {T} WHERE id = 20") == (), "rolled-back row visible"
    assert q(P, f"SELECT name FROM {T} WHERE id = 1") == ((ROW1[1],),), "rolled-back update visible"


ck.check("transaction rolled back", tx_rollback)


def implicit_tx():
    c2 = connect(E.proxy_port, autocommit=False)  # PyMySQL's default: SET autocommit=0
    try:
        q(c2, f"INSERT INTO {T} (id, name) VALUES (30, 'implicit')")
        c2.commit()
        q(c2, f"INSERT INTO {T} (id, name) VALUES (31, 'implicit rolled back')")
        c2.rollback()
    finally:
        c2.close()
    assert q(P, f"SELECT id FROM {T} WHERE id IN (30, 31)") == ((30,),)


ck.check("autocommit=0 session: commit and rollback", implicit_tx)

EXPECTED_IDS = [1, 2, 3, 4, 10, 11, 30]


check_placement(ck, E, side_rows, EXPECTED_IDS)


def read_routing():
    # A row only the authoritative side has, and one only the other side has.
    for side, rid in ((E.authoritative, 9002), (E.other, 9001)):
        conn = direct(side)
        q(conn, DDL.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
        q(conn, f"INSERT INTO {T} (id, name) VALUES ({rid}, '{side} only')")
        conn.close()
    ids = [r[0] for r in q(P, f"SELECT id FROM {T} WHERE id >= 9000 ORDER BY id")]
    assert ids == [9002], f"reads through the proxy saw {ids}, expected only the {E.authoritative} row [9002]"


ck.check(f"reads come from the {E.authoritative}", read_routing)

ck.check("wrong password -> 1045", expect_error, 1045, connect, E.proxy_port, "wrong-password")
ck.check("unknown user -> 1045", expect_error, 1045, connect, E.proxy_port, "x", "compat_nobody")

try:
    P.close()
except Exception:  # noqa: BLE001
    pass
ck.finish()
