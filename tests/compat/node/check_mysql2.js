#!/usr/bin/env node
// mysql2 through cutover: server-side prepared statements via execute().
// Environment as for the Python checks (tests/compat/python/common.py):
// COMPAT_PATTERN, COMPAT_PROXY_PORT, COMPAT_SOURCE_PORT, COMPAT_DEST_PORT,
// COMPAT_HOST, COMPAT_USER, COMPAT_PASSWORD, COMPAT_DB.
'use strict';

const mysql = require('mysql2/promise');

const env = process.env;
const PATTERN = env.COMPAT_PATTERN || 'src_only';
const PATTERNS = ['src_only', 'src_first', 'dst_first', 'dst_only'];
if (!PATTERNS.includes(PATTERN)) {
  console.error(`COMPAT_PATTERN=${PATTERN} is not one of ${PATTERNS}`);
  process.exit(2);
}
const HOST = env.COMPAT_HOST || '127.0.0.1';
const PORTS = {
  proxy: Number(env.COMPAT_PROXY_PORT),
  source: Number(env.COMPAT_SOURCE_PORT),
  destination: Number(env.COMPAT_DEST_PORT),
};
if (!PORTS.proxy || !PORTS.source || !PORTS.destination) {
  console.error('set COMPAT_PROXY_PORT, COMPAT_SOURCE_PORT and COMPAT_DEST_PORT');
  process.exit(2);
}
const USER = env.COMPAT_USER || 'app';
const PASSWORD = env.COMPAT_PASSWORD || 'app';
const DB = env.COMPAT_DB || 'shop';
const AUTH = PATTERN.startsWith('src') ? 'source' : 'destination';
const OTHER = AUTH === 'source' ? 'destination' : 'source';
const MIRRORED = PATTERN === 'src_first' || PATTERN === 'dst_first';
const EXPECTED_SIDES = MIRRORED ? ['destination', 'source'] : [AUTH];
const T = `compat_mysql2_${PATTERN}`;
const PREFIX = `mysql2/${PATTERN}`;

const DDL = `CREATE TABLE ${T} (
  id INT PRIMARY KEY,
  name VARCHAR(100) CHARACTER SET utf8mb4,
  data BLOB,
  amount DECIMAL(10,3),
  ts DATETIME(6),
  doc JSON,
  note VARCHAR(20) NULL
) ENGINE=InnoDB`;

const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
const ROW1 = [1, 'caf\u00e9 \u{1F642}', ALL_BYTES, '-0.125', '2038-01-19 03:14:07.654321',
  { n: [1, 2, 3], s: '\u00fcn\u00efcode' }, null];

let passed = 0;
let failed = 0;

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function check(name, fn) {
  try {
    const v = await fn();
    passed++;
    console.log(`PASS ${PREFIX}: ${name}`);
    return v;
  } catch (e) {
    failed++;
    let why = `${e.code ? e.code + ' ' : ''}${e.errno ? '(' + e.errno + ') ' : ''}${e.message}`;
    why = why.replace(/\s+/g, ' ');
    if (why.length > 600) why = why.slice(0, 600) + '...';
    console.log(`FAIL ${PREFIX}: ${name}: ${why}`);
    return undefined;
  }
}

async function expectError(errno, fn) {
  try {
    await fn();
  } catch (e) {
    assert(e.errno === errno, `expected error ${errno}, got ${e.errno}: ${e.message}`);
    return;
  }
  throw new Error(`expected error ${errno}, but it succeeded`);
}

function connect(port, opts = {}) {
  return mysql.createConnection({
    host: HOST, port, user: USER, password: PASSWORD, database: DB,
    charset: 'utf8mb4_general_ci', dateStrings: true, supportBigNumbers: true,
    bigNumberStrings: true, connectTimeout: 10000, ...opts,
  });
}

async function sideRows(side) {
  const c = await connect(PORTS[side]);
  try {
    const [rows] = await c.query(`SELECT * FROM ${T} ORDER BY id`);
    return rows;
  } catch (e) {
    if (e.errno === 1146) return [];
    throw e;
  } finally {
    await c.end();
  }
}

function rowKey(r) {
  return JSON.stringify(Object.values(r).map((v) => (Buffer.isBuffer(v) ? v.toString('hex') : v)));
}

async function main() {
  await check('setup: drop old tables directly on both backends', async () => {
    for (const side of ['source', 'destination']) {
      const c = await connect(PORTS[side]);
      await c.query(`DROP TABLE IF EXISTS ${T}`);
      await c.end();
    }
  });

  const P = await check('connect through the proxy', () => connect(PORTS.proxy));
  if (!P) return;
  P.on('error', () => {});

  await check('CREATE TABLE (text protocol)', async () => {
    await P.query(DDL);
    const [rows] = await P.execute(`SHOW TABLES LIKE '${T}'`);
    assert(rows.length === 1, `SHOW TABLES through proxy: ${JSON.stringify(rows)}`);
  });

  await check('execute() INSERT blob/decimal/datetime(6)/json/null', async () => {
    const p = [...ROW1];
    p[5] = JSON.stringify(p[5]);
    const [res] = await P.execute(`INSERT INTO ${T} VALUES (?, ?, ?, ?, ?, ?, ?)`, p);
    assert(res.affectedRows === 1, `affectedRows ${res.affectedRows}`);
  });

  const checkRow1 = (rows) => {
    assert(rows.length === 1, `rows: ${JSON.stringify(rows)}`);
    const r = rows[0];
    assert(r.id === 1, `id ${r.id}`);
    assert(r.name === ROW1[1], `name ${r.name}`);
    assert(Buffer.isBuffer(r.data), `blob is ${typeof r.data}`);
    assert(r.data.equals(ALL_BYTES), `blob bytes differ: ${r.data.toString('hex')}`);
    assert(r.amount === '-0.125', `decimal ${r.amount}`);
    assert(r.ts === ROW1[4], `datetime ${r.ts}`);
    const doc = typeof r.doc === 'string' ? JSON.parse(r.doc) : r.doc;
    assert(JSON.stringify(doc) === JSON.stringify(ROW1[5]), `json ${JSON.stringify(r.doc)}`);
    assert(r.note === null, `null ${r.note}`);
  };

  await check('execute() SELECT values back exactly (binary rows)', async () => {
    const [rows] = await P.execute(`SELECT * FROM ${T} WHERE id = ?`, [1]);
    checkRow1(rows);
  });

  await check('query() SELECT values back exactly (text rows)', async () => {
    const [rows] = await P.query(`SELECT * FROM ${T} WHERE id = 1`);
    checkRow1(rows);
  });

  await check('one prepared INSERT executed twice, multi-row SELECT', async () => {
    for (const i of [2, 3]) {
      await P.execute(`INSERT INTO ${T} (id, name, amount) VALUES (?, ?, ?)`, [i, `n${i}`, i / 4]);
    }
    const [rows] = await P.execute(`SELECT id, name, amount FROM ${T} WHERE id BETWEEN ? AND ? ORDER BY id`, [2, 3]);
    const got = JSON.stringify(rows);
    assert(got === JSON.stringify([{ id: 2, name: 'n2', amount: '0.500' }, { id: 3, name: 'n3', amount: '0.750' }]), got);
  });

  await check('NULL, BIGINT, 70 KB parameters', async () => {
    const big = 'y'.repeat(70000);
    const [rows] = await P.execute('SELECT ? AS a, ? AS b, ? AS c, LENGTH(?) AS d', [null, '9223372036854775807', big, Buffer.alloc(70000)]);
    const r = rows[0];
    assert(r.a === null && String(r.b) === '9223372036854775807' && r.c === big && Number(r.d) === 70000,
      `got ${JSON.stringify(r).slice(0, 200)}`);
  });

  await check('error 1062 duplicate key (execute)',
    () => expectError(1062, () => P.execute(`INSERT INTO ${T} (id) VALUES (?)`, [1])));
  await check('error 1146 no such table (prepare)',
    () => expectError(1146, () => P.execute('SELECT * FROM compat_no_such_table WHERE id = ?', [1])));
  await check('error 1064 syntax (prepare)', () => expectError(1064, () => P.execute('SELEKT ?', [1])));
  await check('connection usable after errors', async () => {
    const [rows] = await P.execute('SELECT ? + 1 AS x', [1]);
    assert(Number(rows[0].x) === 2, JSON.stringify(rows));
  });

  await check('transaction committed', async () => {
    await P.beginTransaction();
    await P.execute(`INSERT INTO ${T} (id, name) VALUES (?, ?)`, [10, 'tx']);
    await P.execute(`INSERT INTO ${T} (id, name) VALUES (?, ?)`, [11, 'tx']);
    await P.commit();
    const [rows] = await P.execute(`SELECT id FROM ${T} WHERE id IN (?, ?)`, [10, 11]);
    assert(rows.length === 2, `committed rows: ${JSON.stringify(rows)}`);
  });

  await check('transaction rolled back', async () => {
    await P.beginTransaction();
    await P.execute(`INSERT INTO ${T} (id, name) VALUES (?, ?)`, [20, 'rolled back']);
    await P.execute(`UPDATE ${T} SET amount = ? WHERE id = ?`, ['1.000', 1]);
    await P.rollback();
    const [rows] = await P.execute(`SELECT id, amount FROM ${T} WHERE id IN (?, ?) ORDER BY id`, [1, 20]);
    assert(JSON.stringify(rows) === JSON.stringify([{ id: 1, amount: '-0.125' }]), `after rollback: ${JSON.stringify(rows)}`);
  });

  await check('unprepare and prepare again', async () => {
    const sql = `SELECT COUNT(*) AS n FROM ${T} WHERE id < ?`;
    await P.execute(sql, [100]);
    P.unprepare(sql);
    const [rows] = await P.execute(sql, [100]);
    assert(Number(rows[0].n) === 5, JSON.stringify(rows));
  });

  const EXPECTED_IDS = [1, 2, 3, 10, 11];
  await check(`prepared writes landed on ${EXPECTED_SIDES.join('+')} only`, async () => {
    const problems = [];
    for (const side of ['source', 'destination']) {
      const ids = (await sideRows(side)).map((r) => r.id);
      const want = EXPECTED_SIDES.includes(side) ? EXPECTED_IDS : [];
      if (JSON.stringify(ids) !== JSON.stringify(want)) problems.push(`${side} has ids [${ids}], expected [${want}]`);
    }
    assert(problems.length === 0, problems.join('; '));
  });

  if (MIRRORED) {
    await check('mirrored rows identical on both backends', async () => {
      const a = (await sideRows('source')).map(rowKey);
      const b = (await sideRows('destination')).map(rowKey);
      const diff = a.filter((x, i) => x !== b[i]).concat(b.slice(a.length));
      assert(a.length === b.length && diff.length === 0,
        `source ${a.length} rows, destination ${b.length} rows; differing: ${diff.slice(0, 3).join(' | ').slice(0, 400)}`);
    });
  }

  await check(`prepared reads come from the ${AUTH}`, async () => {
    for (const [side, id] of [[AUTH, 9002], [OTHER, 9001]]) {
      const c = await connect(PORTS[side]);
      await c.query(DDL.replace('CREATE TABLE', 'CREATE TABLE IF NOT EXISTS'));
      await c.query(`INSERT INTO ${T} (id, name) VALUES (${id}, '${side} only')`);
      await c.end();
    }
    const [rows] = await P.execute(`SELECT id FROM ${T} WHERE id >= ? ORDER BY id`, [9000]);
    const ids = rows.map((r) => r.id);
    assert(JSON.stringify(ids) === '[9002]', `reads through the proxy saw [${ids}], expected only the ${AUTH} row [9002]`);
  });

  await check('wrong password -> 1045', () => expectError(1045, async () => {
    const c = await connect(PORTS.proxy, { password: 'wrong-password' });
    await c.end();
  }));

  await P.end().catch(() => {});
}

main()
  .catch((e) => {
    failed++;
    console.log(`FAIL ${PREFIX}: unexpected: ${e.stack || e}`.replace(/\n/g, ' '));
  })
  .finally(() => {
    console.log(`# ${PREFIX}: ${passed} passed, ${failed} failed`);
    process.exit(failed ? 1 : 0);
  });
