#!/usr/bin/env python3
"""Open N authenticated MySQL connections, run one trivial query on each, then
hold them idle until killed.

usage: idle_clients.py HOST PORT N READY_FILE
Writes "<opened> <failed> <seconds to open them all>" to READY_FILE once every
connection was attempted (connections are opened one after another).
Needs PyMySQL (the project's .venv has it).
"""
import os
import signal
import sys
import time

import pymysql


def main():
    host, port, n, ready = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    conns, failed = [], 0
    t0 = time.monotonic()
    for _ in range(n):
        try:
            c = pymysql.connect(host=host, port=port, user="app", password="app",
                                database="shop", connect_timeout=10)
            with c.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchall()
            conns.append(c)
        except Exception as e:  # noqa: BLE001 - report and keep going
            failed += 1
            if failed <= 3:
                print(f"idle_clients: connect failed: {e}", file=sys.stderr)
    with open(ready + ".tmp", "w") as f:
        f.write(f"{len(conns)} {failed} {time.monotonic() - t0:.3f}\n")
    os.replace(ready + ".tmp", ready)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
