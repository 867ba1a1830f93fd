#!/usr/bin/env bash
# The `mariadb` command-line client (classic EOF framing, multi-statements,
# multiple result sets) through cutover.
# Environment as for the other checks: COMPAT_PATTERN, COMPAT_PROXY_PORT,
# COMPAT_SOURCE_PORT, COMPAT_DEST_PORT, COMPAT_HOST, COMPAT_USER, COMPAT_PASSWORD, COMPAT_DB.
set -uo pipefail

PATTERN=${COMPAT_PATTERN:-src_only}
HOST=${COMPAT_HOST:-127.0.0.1}
PROXY=${COMPAT_PROXY_PORT:?set COMPAT_PROXY_PORT}
SRC=${COMPAT_SOURCE_PORT:?set COMPAT_SOURCE_PORT}
DST=${COMPAT_DEST_PORT:?set COMPAT_DEST_PORT}
USER_=${COMPAT_USER:-app}
PASS_=${COMPAT_PASSWORD:-app}
DB=${COMPAT_DB:-shop}
T="compat_cli_${PATTERN}"
PROC="compat_cli_${PATTERN}_two_sets"
PREFIX="cli/${PATTERN}"

case $PATTERN in
src_only) SIDES="source" AUTH=source ;;
src_first) SIDES="source destination" AUTH=source ;;
dst_first) SIDES="source destination" AUTH=destination ;;
dst_only) SIDES="destination" AUTH=destination ;;
*) echo "COMPAT_PATTERN=$PATTERN is not one of src_only src_first dst_first dst_only" >&2; exit 2 ;;
esac

passed=0 failed=0
pass() { passed=$((passed + 1)); echo "PASS $PREFIX: $1"; }
fail() {
    failed=$((failed + 1))
    local why
    why=$(printf '%s' "$2" | tr '\n\t' ' ' | cut -c1-600)
    echo "FAIL $PREFIX: $1: $why"
}

# sql PORT [mariadb args...]: batch mode, no column names, tab-separated.
sql() {
    local port=$1
    shift
    timeout 30 mariadb -h"$HOST" -P"$port" -u"$USER_" -p"$PASS_" --connect-timeout=10 -B -N "$DB" "$@" 2>&1
}
port_of() { if [[ $1 == source ]]; then echo "$SRC"; else echo "$DST"; fi; }

# expect NAME EXPECTED_OUTPUT PORT [args...]
expect() {
    local name=$1 want=$2
    shift 2
    local got rc
    got=$(sql "$@")
    rc=$?
    if [[ $rc -eq 0 && "$got" == "$want" ]]; then
        pass "$name"
    else
        fail "$name" "exit $rc, got [$got], expected [$want]"
    fi
}

# expect_error NAME CODE PORT [args...]
expect_error() {
    local name=$1 code=$2
    shift 2
    local got rc
    got=$(sql "$@")
    rc=$?
    if [[ $rc -ne 0 && "$got" == *"ERROR $code "* ]]; then
        pass "$name"
    else
        fail "$name" "exit $rc, got [$got], expected ERROR $code"
    fi
}

# ---------------------------------------------------------------- checks
if out=$( { sql "$SRC" -e "DROP TABLE IF EXISTS $T; DROP PROCEDURE IF EXISTS $PROC" &&
    sql "$DST" -e "DROP TABLE IF EXISTS $T; DROP PROCEDURE IF EXISTS $PROC"; } 2>&1); then pass "setup: drop old objects directly on both backends"; else fail "setup" "$out"; fi

expect "connect and SELECT 1" "1" "$PROXY" -e "SELECT 1"

expect "CREATE TABLE + multi-row INSERT" "" "$PROXY" -e \
    "CREATE TABLE $T (id INT PRIMARY KEY, name VARCHAR(50), price DECIMAL(8,2)); INSERT INTO $T VALUES (1,'apple',1.50),(2,'pear',NULL),(3,'caf\u00e9',3.00)"
# (the \u00e9 above is literal text: it checks backslash escaping passes through)

expect "multi-row SELECT" $'1\tapple\t1.50\n2\tpear\tNULL\n3\tcafu00e9\t3.00' \
    "$PROXY" -e "SELECT id, name, price FROM $T ORDER BY id"

expect "multi-statement -e \"select 1; select 2\"" $'1\n2' "$PROXY" -e "select 1; select 2"

expect "multi-statement mixing write and reads" $'3\n4' "$PROXY" \
    -e "SELECT COUNT(*) FROM $T; INSERT INTO $T VALUES (4,'plum',0.99); SELECT COUNT(*) FROM $T"

if out=$(printf 'DELIMITER //\nCREATE PROCEDURE %s()\nBEGIN\n  SELECT id FROM %s WHERE id <= 2 ORDER BY id;\n  SELECT COUNT(*) AS n, SUM(price) AS total FROM %s;\nEND //\nDELIMITER ;\n' \
    "$PROC" "$T" "$T" | sql "$PROXY"); then pass "CREATE PROCEDURE"; else fail "CREATE PROCEDURE" "$out"; fi

expect "CALL returning two result sets" $'1\n2\n4\t5.49' "$PROXY" -e "CALL $PROC()"
expect "CALL then SELECT on the same connection" $'1\n2\n4\t5.49\nafter' "$PROXY" -e "CALL $PROC(); SELECT 'after'"

expect_error "error 1146 no such table" 1146 "$PROXY" -e "SELECT * FROM compat_no_such_table"
expect_error "error 1064 syntax" 1064 "$PROXY" -e "SELEKT 1"
expect_error "error 1062 duplicate key" 1062 "$PROXY" -e "INSERT INTO $T VALUES (1,'dup',0)"
out=$(sql "$PROXY" -e "INSERT INTO $T VALUES (7,'kiwi',1); SELECT * FROM compat_no_such_table; INSERT INTO $T VALUES (8,'never',1)")
if [[ "$out" == *"ERROR 1146"* ]]; then pass "error in the middle of a multi-statement"; else fail "error in the middle of a multi-statement" "$out"; fi
expect "statements before the error ran, after it did not" "7" "$PROXY" -e "SELECT id FROM $T WHERE id IN (7, 8)"

out=$(sql "$PROXY" --force -e "SELECT 'a'; SELECT * FROM compat_no_such_table; SELECT 'b'")
if [[ "$out" == *a*"ERROR 1146"*b* ]]; then pass "--force continues after an error"; else fail "--force continues after an error" "$out"; fi

expect "transaction committed and one rolled back" $'1\tapple\n2\tpear\n3\tcafu00e9\n4\tplum\n5\tfig\n7\tkiwi' "$PROXY" -e \
    "BEGIN; INSERT INTO $T VALUES (5,'fig',2.00); COMMIT; START TRANSACTION; INSERT INTO $T VALUES (6,'gone',1); DELETE FROM $T WHERE id=1; ROLLBACK; SELECT id, name FROM $T ORDER BY id"

# Where did the rows (and the procedure) land?
for side in source destination; do
    port=$(port_of "$side")
    got=$(sql "$port" -e "SELECT GROUP_CONCAT(id ORDER BY id) FROM $T" 2>&1)
    if [[ " $SIDES " == *" $side "* ]]; then want="1,2,3,4,5,7"; else want="ERROR 1146"; fi
    if [[ "$got" == "$want" || ($want == ERROR* && "$got" == *"$want"*) ]]; then
        pass "rows on $side: ${want}"
    else
        fail "rows on $side" "got [$got], expected [$want]"
    fi
    got=$(sql "$port" -e "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA='$DB' AND ROUTINE_NAME='$PROC'")
    if [[ " $SIDES " == *" $side "* ]]; then want=1; else want=0; fi
    if [[ "$got" == "$want" ]]; then pass "procedure on $side: $want"; else fail "procedure on $side" "got [$got], expected [$want]"; fi
done

# Reads come from the authoritative side: give each side a row only it has.
for side in source destination; do
    port=$(port_of "$side")
    sql "$port" -e "CREATE TABLE IF NOT EXISTS $T (id INT PRIMARY KEY, name VARCHAR(50), price DECIMAL(8,2)); INSERT INTO $T VALUES (900, '$side', 0)" >/dev/null
done
expect "reads come from the $AUTH" "$AUTH" "$PROXY" -e "SELECT name FROM $T WHERE id = 900"

out=$(timeout 30 mariadb -h"$HOST" -P"$PROXY" -u"$USER_" -pwrong-password --connect-timeout=10 "$DB" -e "SELECT 1" 2>&1)
if [[ "$out" == *"ERROR 1045 "* ]]; then pass "wrong password -> 1045"; else fail "wrong password -> 1045" "$out"; fi

echo "# $PREFIX: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
