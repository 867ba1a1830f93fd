"""Shared bits of the Python compatibility checks.

Environment (set by tests/compat/run.sh):
  COMPAT_PATTERN      src_only | src_first | dst_first | dst_only
  COMPAT_PROXY_PORT   the cutover listener
  COMPAT_SOURCE_PORT  the SOURCE MariaDB, for direct verification
  COMPAT_DEST_PORT    the DESTINATION MariaDB, for direct verification
  COMPAT_HOST         default 127.0.0.1
  COMPAT_USER / COMPAT_PASSWORD / COMPAT_DB   default app / app / shop

Every check prints one line, `PASS <client>/<pattern>: <name>` or
`FAIL <client>/<pattern>: <name>: <why>`; the script exits 1 if any failed.
"""

import os
import sys
import traceback

PATTERNS = ("src_only", "src_first", "dst_first", "dst_only")


class Env:
    def __init__(self):
        g = os.environ.get
        self.pattern = g("COMPAT_PATTERN", "src_only")
        if self.pattern not in PATTERNS:
            sys.exit(f"COMPAT_PATTERN={self.pattern!r} is not one of {PATTERNS}")
        self.host = g("COMPAT_HOST", "127.0.0.1")
        try:
            self.proxy_port = int(g("COMPAT_PROXY_PORT", ""))
            self.source_port = int(g("COMPAT_SOURCE_PORT", ""))
            self.dest_port = int(g("COMPAT_DEST_PORT", ""))
        except ValueError:
            sys.exit("set COMPAT_PROXY_PORT, COMPAT_SOURCE_PORT and COMPAT_DEST_PORT")
        self.user = g("COMPAT_USER", "app")
        self.password = g("COMPAT_PASSWORD", "app")
        self.db = g("COMPAT_DB", "shop")

    @property
    def authoritative(self):
        """The side reads come from."""
        return "source" if self.pattern in ("src_only", "src_first") else "destination"

    @property
    def other(self):
        return "destination" if self.authoritative == "source" else "source"

    @property
    def mirrored(self):
        """Whether writes also reach the non-authoritative side."""
        return self.pattern in ("src_first", "dst_first")

    def expected_sides(self):
        return {"source", "destination"} if self.mirrored else {self.authoritative}

    def port_of(self, side):
        return self.source_port if side == "source" else self.dest_port


class Checker:
    def __init__(self, client, pattern):
        self.prefix = f"{client}/{pattern}"
        self.passed = 0
        self.failed = 0

    def check(self, name, fn, *args):
        """Run fn(*args); AssertionError or any exception is a FAIL. Returns fn's value or None."""
        try:
            value = fn(*args)
        except AssertionError as e:
            self._fail(name, str(e) or "assertion failed")
            return None
        except Exception as e:  # noqa: BLE001 - any client error is a failed check
            where = traceback.extract_tb(e.__traceback__)[-1]
            self._fail(name, f"{type(e).__name__}: {e} (at line {where.lineno})")
            return None
        self.passed += 1
        print(f"PASS {self.prefix}: {name}", flush=True)
        return value

    def _fail(self, name, why):
        self.failed += 1
        why = " ".join(str(why).split())
        if len(why) > 600:
            why = why[:600] + "..."
        print(f"FAIL {self.prefix}: {name}: {why}", flush=True)

    def finish(self):
        print(f"# {self.prefix}: {self.passed} passed, {self.failed} failed", flush=True)
        sys.exit(1 if self.failed else 0)


def expect_error(code, fn, *args):
    """fn(*args) must raise a client error whose MySQL error number is `code`."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        got = error_code(e)
        assert got == code, f"expected error {code}, got {got}: {type(e).__name__}: {e}"
        return
    raise AssertionError(f"expected error {code}, but it succeeded")


def error_code(e):
    errno = getattr(e, "errno", None)  # mysql-connector
    if isinstance(errno, int) and errno > 0:
        return errno
    args = getattr(e, "args", ())  # PyMySQL: (code, message)
    if args and isinstance(args[0], int):
        return args[0]
    return None


def all_bytes():
    return bytes(range(256))


def check_placement(ck, env, side_rows, expected_ids):
    """Rows written through the proxy are on exactly the sides the pattern writes to."""
    def placement():
        problems = []
        for side in ("source", "destination"):
            ids = [r[0] for r in side_rows(side)]
            want = expected_ids if side in env.expected_sides() else []
            if ids != want:
                problems.append(f"{side} has ids {ids}, expected {want}")
        assert not problems, "; ".join(problems)

    ck.check(f"rows landed on {'+'.join(sorted(env.expected_sides()))} only", placement)

    if env.mirrored:
        def mirror_identical():
            a = {r[0]: r for r in side_rows("source")}
            b = {r[0]: r for r in side_rows("destination")}
            assert a.keys() == b.keys(), f"ids differ: source {sorted(a)}, destination {sorted(b)}"
            diff = [f"id {i} column {c}: {a[i][c]!r:.60} vs {b[i][c]!r:.60}"
                    for i in a for c in range(len(a[i])) if a[i][c] != b[i][c]]
            assert not diff, "; ".join(diff[:5])

        ck.check("mirrored rows identical on both backends", mirror_identical)
