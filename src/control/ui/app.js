'use strict';
// cutover status page: polls GET /status, draws the state machine, offers the
// allowed next moves (with a confirmation naming the consequences). No
// framework, no CDN; every value from the API is inserted as text, never HTML.

const POLL_MS = 2000;
const STATES = ['initial', 'src_only', 'src_first', 'dst_first', 'dst_only', 'completed'];
// The state machine's legal moves (LEGAL_MOVES in src/control/state_machine.rs; a unit test keeps them equal).
const LEGAL = [['initial', 'src_only'], ['src_only', 'src_first'], ['src_first', 'src_only'], ['src_first', 'dst_first'], ['dst_first', 'src_first'], ['dst_first', 'dst_only'], ['dst_only', 'dst_first'], ['dst_only', 'completed']];
const PATTERN_TEXT = {
  src_only: 'reads and writes go to the source only',
  src_first: 'results from the source; writes mirrored to the destination',
  dst_first: 'results from the destination; writes mirrored to the source',
  dst_only: 'reads and writes go to the destination only',
};
const TOKEN_KEY = 'cutover.admin_token';

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY) || '';
let pending = null; // the move waiting for confirmation
let busy = false;
let timer = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function routeOf(state) {
  return state === 'completed' ? '/complete' : '/' + state;
}

function duration(secs) {
  if (secs === null || secs === undefined || !isFinite(secs)) return '–';
  secs = Math.round(secs);
  const h = Math.floor(secs / 3600), m = Math.floor((secs % 3600) / 60), s = secs % 60;
  return (h ? h + 'h ' : '') + (h || m ? m + 'm ' : '') + s + 's';
}

function num(n) {
  return (n === null || n === undefined) ? '–' : Number(n).toLocaleString('en-US');
}

// What a move does, in the operator's terms (README "What the proxy guarantees").
function consequences(from, to, forced) {
  const lines = [];
  let text;
  switch (to) {
    case 'src_only':
      text = from === 'initial'
        ? 'Nothing changes for the application: reads and writes keep going to the source only. The migration clock starts.'
        : 'Writes stop being mirrored to the destination. From now on the destination falls behind the source; it needs a validation with fixing before it can be trusted again.';
      break;
    case 'src_first':
      text = from === 'dst_first'
        ? 'The source becomes authoritative again: reads and results come from it, and writes are mirrored to the destination.'
        : 'Every write is also applied to the destination (mirror), after the source accepted it. Reads and results still come from the source; destination failures are counted, never returned to the application.';
      if (from === 'dst_only') lines.push('The source missed every write made in dst_only: validate with fixing before trusting it.');
      break;
    case 'dst_first':
      text = from === 'dst_only'
        ? 'Writes are mirrored to the source again. The source missed every write made in dst_only: validate with fixing before relying on it.'
        : 'The destination becomes authoritative: reads and results come from it. Writes go to the destination first and are mirrored to the source.';
      break;
    case 'dst_only':
      text = 'Writes stop being mirrored to the source: the source stops receiving changes, and going back to it later needs a backfill.';
      break;
    case 'completed':
      text = 'The migration is finished: the destination stays the only database and no further move is allowed (except forced).';
      break;
    default:
      text = 'Move to ' + to + '.';
  }
  const authoritative = (s) => (s === 'dst_first' || s === 'dst_only' || s === 'completed') ? 'destination' : 'source';
  if (authoritative(from) !== authoritative(to)) {
    lines.push('The authoritative side changes: in-flight transactions finish first (at most switch_drain_timeout_ms), new statements wait at the gate; if they do not finish in time the move is refused and nothing changes.');
  } else {
    lines.push('Sessions pick up the new pattern at their next transaction or autocommit statement.');
  }
  if (to === 'dst_first' && from === 'src_first') {
    lines.push('Run a validation with fixing until a pass is clean before this move.');
  }
  if (forced) lines.push('This move is not in the state machine; it is recorded as forced.');
  return { text, lines };
}

async function api(method, path) {
  const headers = { 'Accept': 'application/json' };
  if (token) headers['Authorization'] = 'Bearer ' + token;
  const r = await fetch(path, { method, headers, cache: 'no-store', credentials: 'omit' });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  return { status: r.status, body };
}

function setConn(cls, text) {
  const c = $('conn');
  c.className = 'pill ' + cls;
  c.textContent = text;
}

function showError(msg) {
  const e = $('error');
  e.hidden = !msg;
  e.textContent = msg || '';
}

async function poll() {
  clearTimeout(timer);
  try {
    const r = await api('GET', '/status');
    if (r.status === 401) {
      $('auth-needed').hidden = false;
      $('moves-box').hidden = true;
      setConn('bad', token ? 'token rejected' : 'token needed');
      showError(r.body && r.body.error ? r.body.error : 'unauthorized');
    } else if (r.status === 200 && r.body) {
      $('auth-needed').hidden = true;
      $('moves-box').hidden = false;
      setConn('ok', 'live');
      showError('');
      render(r.body);
    } else {
      setConn('bad', 'error ' + r.status);
      showError((r.body && r.body.error) || ('GET /status answered ' + r.status));
    }
  } catch (e) {
    setConn('bad', 'unreachable');
    showError('cutover admin API unreachable: ' + e.message);
  }
  timer = setTimeout(poll, POLL_MS);
}

function render(s) {
  $('current-state').textContent = s.current_state;
  $('current-pattern').textContent = s.current_pattern;
  $('pattern-explained').textContent = PATTERN_TEXT[s.current_pattern] ? '(' + PATTERN_TEXT[s.current_pattern] + ')' : '';
  document.body.dataset.state = s.current_state;
  const moves = Array.isArray(s.next_moves) ? s.next_moves : [];
  drawDiagram(s.current_state, moves);
  renderMoves(s.current_state, moves);
  renderBackends(s);
  renderMirror(s.pool_metrics || {});
  renderValidation(s.validation_detail, s.validation);
  renderHistory(s);
  $('updated').textContent = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  $('uptime').textContent = duration(s.uptime_seconds);
}

function drawDiagram(current, moves) {
  const d = $('diagram');
  d.replaceChildren();
  const defs = svg('defs');
  const marker = svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse' });
  marker.append(svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#9aa3b5' }));
  defs.append(marker);
  d.append(defs);
  const W = 130, H = 44, GAP = 32, Y = 38;
  const x = (i) => 8 + i * (W + GAP);
  const next = new Set(moves.filter((m) => m.allowed).map((m) => m.to));
  for (const [from, to] of LEGAL) {
    const i = STATES.indexOf(from), j = STATES.indexOf(to);
    const forward = j > i;
    const y = forward ? Y + 13 : Y + H - 13;
    const x1 = forward ? x(i) + W : x(i);
    const x2 = forward ? x(j) : x(j) + W;
    const cls = 'edge' + (from === current && next.has(to) ? ' next' : '');
    d.append(svg('line', { class: cls, x1: x1, y1: y, x2: x2, y2: y, 'data-from': from, 'data-to': to }));
  }
  STATES.forEach((name, i) => {
    const cls = 'state' + (name === current ? ' current' : '') + (next.has(name) ? ' next' : '');
    const g = svg('g', { class: cls, 'data-state': name, id: 'state-' + name });
    g.append(svg('rect', { x: x(i), y: Y, width: W, height: H, rx: 8 }));
    g.append(svg('text', { x: x(i) + W / 2, y: Y + H / 2 }, name));
    d.append(g);
  });
}

function renderMoves(current, moves) {
  const box = $('moves');
  box.replaceChildren();
  // Every legal move gets a button; one that is not allowed now is disabled
  // and lists what blocks it. `forced_only`: only the guard blocks it, so
  // `?force=true` would make it; the page never forces, it names the command.
  for (const m of moves) {
    const b = el('button', { type: 'button', class: 'move', id: 'move-' + m.to, dataset: { to: m.to } }, current + ' → ' + m.to);
    b.disabled = busy || !m.allowed;
    b.addEventListener('click', () => askMove(current, m.to, false));
    const wrap = el('div', { class: 'move-wrap' }, b);
    if (!m.allowed && Array.isArray(m.blockers) && m.blockers.length) {
      const ul = el('ul', { class: 'blockers' });
      for (const reason of m.blockers) ul.append(el('li', {}, reason));
      wrap.append(ul);
    }
    box.append(wrap);
  }
  $('moves-none').hidden = moves.length > 0;
  const forced = moves.filter((m) => m.forced_only && !m.allowed);
  const f = $('moves-forced');
  f.hidden = forced.length === 0;
  f.textContent = forced.length
    ? 'Possible only with force (not offered here; e.g. cutover ctl switch ' + forced[0].to + ' --force): ' + forced.map((m) => m.to).join(', ')
    : '';
}

function askMove(from, to, forced) {
  pending = { from, to, forced };
  const c = consequences(from, to, forced);
  $('confirm-title').textContent = 'Move from ' + from + ' to ' + to + '?';
  $('confirm-text').textContent = c.text;
  const ul = $('confirm-details');
  ul.replaceChildren();
  for (const line of c.lines) ul.append(el('li', {}, line));
  $('confirm').showModal();
}

async function doMove(move) {
  busy = true;
  const result = $('move-result');
  result.className = '';
  result.textContent = 'Moving to ' + move.to + '…';
  for (const b of document.querySelectorAll('button.move')) b.disabled = true;
  try {
    const r = await api('POST', routeOf(move.to));
    if (r.status === 200) {
      result.className = 'ok';
      result.textContent = 'Moved from ' + move.from + ' to ' + move.to + '.';
      if (r.body) render(r.body);
    } else {
      result.className = 'bad';
      result.textContent = 'Refused (' + r.status + '): ' + ((r.body && r.body.error) || 'no reason given');
    }
  } catch (e) {
    result.className = 'bad';
    result.textContent = 'Request failed: ' + e.message;
  } finally {
    busy = false;
    poll();
  }
}

function renderBackends(s) {
  const tb = $('backends').tBodies[0];
  tb.replaceChildren();
  const pattern = s.current_pattern;
  const role = (side) => {
    const primary = (pattern === 'src_only' || pattern === 'src_first') ? 'source' : 'destination';
    if (side === primary) return 'authoritative';
    if (pattern === 'src_first' || pattern === 'dst_first') return 'mirror';
    return 'unused';
  };
  for (const side of ['source', 'destination']) {
    const h = (s.pool_health || {})[side] || {};
    const health = h.ok ? el('span', { class: 'ok' }, 'up') : el('span', { class: 'bad' }, 'down' + (h.error ? ': ' + h.error : ''));
    tb.append(el('tr', { id: 'backend-' + side },
      el('td', {}, side), el('td', {}, role(side)), el('td', {}, health),
      el('td', { class: 'num' }, h.latency_ms === null || h.latency_ms === undefined ? '–' : h.latency_ms.toFixed(1) + ' ms')));
  }
}

function renderMirror(m) {
  const rows = [
    ['double_write_success', 'mirrored writes ok', false],
    ['double_write_failure', 'writes lost on the mirror (divergence)', true],
    ['mirror_mismatches', 'mirror result mismatches', true],
    ['unsafe_statements', 'unsafe (non-deterministic) statements', true],
    ['double_write_rolled_back', 'rolled back with their transaction (consistent)', false],
    ['mirror_retries_succeeded', 'mirror deadlocks / lock waits fixed by a retry', false],
    ['mirror_retries_failed', 'mirror retries exhausted', true],
    ['source_secondary_errors', 'errors on source as mirror (diagnostic)', false],
    ['destination_secondary_errors', 'errors on destination as mirror (diagnostic)', false],
    ['client_connections', 'client connections open', false],
    ['connections_refused', 'connections refused (max_connections)', true],
    ['statements', 'statements relayed', false],
  ];
  const tb = $('mirror').tBodies[0];
  tb.replaceChildren();
  for (const [key, label, badIfAny] of rows) {
    const bad = badIfAny && m[key] > 0;
    tb.append(el('tr', {}, el('td', {}, label), el('td', { id: 'mirror-' + key, class: 'num' + (bad ? ' bad' : '') }, num(m[key]))));
  }
}

function renderValidation(detail, summary) {
  const box = $('validation');
  box.replaceChildren();
  if (!detail) {
    $('open-inconsistencies').textContent = '–';
    box.append(el('p', { class: 'muted' }, summary && !summary.available ? 'No validator in this process.' : 'No validation data.'));
    return;
  }
  const open = $('open-inconsistencies');
  open.textContent = num(detail.open_inconsistencies);
  open.className = detail.open_inconsistencies > 0 ? 'bad' : 'ok';
  const runs = [['Full validation (running)', detail.full], ['Full validation (last)', detail.last_full],
    ['Incremental (running)', detail.incremental], ['Incremental (last)', detail.last_incremental]];
  let any = false;
  for (const [title, run] of runs) {
    if (!run) continue;
    any = true;
    box.append(renderRun(title, run));
  }
  if (!any) box.append(el('p', { class: 'muted' }, 'No validation has run in this process.'));
}

function renderRun(title, run) {
  const wrap = el('div', { class: 'run' });
  const t = run.totals || {};
  wrap.append(el('h3', {}, title + ': ' + run.outcome + ' · direction ' + run.direction + (run.fix ? ' · fixing' : '') +
    ' · started ' + run.started_at + (run.finished_at ? ' · finished ' + run.finished_at : '')));
  if (run.error) wrap.append(el('p', { class: 'bad' }, run.error));
  const table = el('table', { class: 'tables' });
  table.append(el('thead', {}, el('tr', {}, ...['table', 'progress', 'rows checked', 'estimated', 'ETA', 'differences', 'repaired'].map((h) => el('th', {}, h)))));
  const tb = el('tbody');
  for (const tp of run.tables || []) {
    const diffs = (tp.target_missing || 0) + (tp.base_missing || 0) + (tp.neq || 0);
    const bar = el('progress', { max: '100', value: String(tp.percent || 0) });
    tb.append(el('tr', { dataset: { table: tp.table } },
      el('td', {}, tp.table),
      el('td', {}, bar, ' ' + (tp.percent || 0).toFixed(1) + '%'),
      el('td', { class: 'num' }, num(tp.rows_checked)),
      el('td', { class: 'num' }, num(tp.estimated_total)),
      el('td', { class: 'num' }, tp.done ? 'done' : duration(tp.eta_seconds)),
      el('td', { class: 'num' + (diffs > 0 ? ' bad' : '') }, num(diffs)),
      el('td', { class: 'num' }, num(tp.repaired))));
  }
  table.append(tb);
  wrap.append(table);
  const found = (t.target_missing || 0) + (t.base_missing || 0) + (t.neq || 0);
  wrap.append(el('p', { class: 'muted' }, 'Totals: ' + num(t.rows_checked) + ' rows checked, ' + num(found) +
    ' differences, ' + num(t.repaired) + ' repaired, ' + num(run.events_recorded) + ' events recorded.'));
  if (run.skipped && run.skipped.length) {
    wrap.append(el('p', { class: 'muted' }, 'Skipped: ' + run.skipped.map((s) => s.table + ' (' + s.reason + ')').join('; ')));
  }
  return wrap;
}

async function showInconsistencies(ev) {
  ev.preventDefault();
  const box = $('incons-list');
  if (!box.hidden) { box.hidden = true; return; }
  box.hidden = false;
  box.replaceChildren(el('p', { class: 'muted' }, 'Loading…'));
  try {
    const r = await api('GET', $('incons-link').getAttribute('href'));
    if (r.status !== 200 || !Array.isArray(r.body)) {
      box.replaceChildren(el('p', { class: 'bad' }, 'GET /inconsistencies: ' + r.status + ' ' + ((r.body && r.body.error) || '')));
      return;
    }
    if (!r.body.length) { box.replaceChildren(el('p', { class: 'muted' }, 'No open inconsistencies.')); return; }
    const table = el('table', {});
    table.append(el('thead', {}, el('tr', {}, ...['id', 'table', 'primary key', 'kind', 'base', 'detected (UTC)'].map((h) => el('th', {}, h)))));
    const tb = el('tbody');
    for (const e of r.body) {
      tb.append(el('tr', {}, el('td', { class: 'num' }, e.id), el('td', {}, e.table), el('td', {}, JSON.stringify(e.pk)),
        el('td', {}, e.kind), el('td', {}, e.direction), el('td', {}, e.detected_at)));
    }
    table.append(tb);
    box.replaceChildren(table, el('p', { class: 'muted' }, 'Repair with POST /fix (from the authoritative side).'));
  } catch (e) {
    box.replaceChildren(el('p', { class: 'bad' }, 'Request failed: ' + e.message));
  }
}

function renderHistory(s) {
  const tb = $('history').tBodies[0];
  tb.replaceChildren();
  const h = (s.history || []).slice(-15).reverse();
  for (const t of h) {
    tb.append(el('tr', {}, el('td', {}, t.time), el('td', {}, t.from), el('td', {}, t.to), el('td', {}, t.trigger), el('td', {}, t.forced ? 'yes' : '')));
  }
  if (!h.length) tb.append(el('tr', {}, el('td', { colspan: '5', class: 'muted' }, 'No moves yet.')));
  const parts = [];
  const ap = s.auto_promotion;
  if (ap) parts.push('Auto-promotion ' + (ap.enabled ? 'on' + (ap.waiting_for ? ' (waiting for ' + ap.waiting_for + ')' : '') : 'off') + '.');
  const am = s.auto_migrate;
  if (am) parts.push('Auto-migrate ' + am.outcome + (am.current_step ? ' at ' + am.current_step : '') + (am.reason ? ': ' + am.reason : '') + '.');
  if (s.migration_stats && s.migration_stats.last_error) parts.push('Last error: ' + s.migration_stats.last_error);
  $('automation').textContent = parts.join(' ');
}

$('token').value = token;
$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  token = $('token').value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  poll();
});
$('token-clear').addEventListener('click', () => {
  token = '';
  $('token').value = '';
  sessionStorage.removeItem(TOKEN_KEY);
  poll();
});
$('confirm').addEventListener('close', () => {
  const move = pending;
  pending = null;
  if (move && $('confirm').returnValue === 'ok') doMove(move);
});
$('incons-link').addEventListener('click', showInconsistencies);
poll();
