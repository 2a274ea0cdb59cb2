// The pool dashboard: a WebSocket client of /ws on the same origin.
//
// Event-driven: the server pushes {"type":"block"} on connect and on every forged block; after
// each one (and on connect) the page asks for {"type":"stats"} and the server answers this
// connection alone, with summaries of the newest blocks (no transactions, so the answer stays
// small however big blocks get) and the busiest workers. Shares come far more often than blocks,
// so the page also asks every WORKERS_EVERY_MS, for the workers' hashrates. A block's transactions are fetched when it is clicked, from
// GET /chain?from=INDEX&limit=1. Ids are attacker-controlled, so every server-provided string
// reaches the DOM through textContent, never innerHTML.
'use strict';

(() => {
  /** Blocks kept and shown, newest first. */
  const RECENT_MAX = 20;
  /** Reconnect back-off: doubles from the minimum up to the maximum, with jitter. */
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  /** How often stats are asked for between blocks (the workers table moves with shares). */
  const WORKERS_EVERY_MS = 5000;

  const $ = (id) => document.getElementById(id);

  const state = {
    socket: null,
    /** index -> block summary, the newest RECENT_MAX + 1 (one more, for the hash of the oldest shown). */
    blocks: new Map(),
    latest: null,
    difficulty: null,
    /** Local clock minus the server's, in seconds, learned from live broadcasts. */
    skew: 0,
    /** Whether the next block message is the one sent on connect (not a live broadcast). */
    greeting: true,
    statsInFlight: false,
    statsAgain: false,
    coins: new Map(),
    backoff: BACKOFF_MIN_MS,
    retryAt: 0,
    retryTimer: null,
    attempts: 0,
    /** Whether the connection was lost (as opposed to not yet made). */
    down: false,
    openIndex: null,
    /** Whether the pool pays PPLNS, as a pushed block's rewards showed: amounts are then units. */
    pplns: false,
  };

  /** Units a PPLNS block mints, shown as one coin (protocol::reward::UNITS_PER_BLOCK). */
  const UNITS_PER_COIN = 1000000n;

  // ---------- parsing ----------

  /** JSON.parse that keeps integers above 2^53 exact (as BigInt) where the browser can tell. */
  function parseJson(text) {
    return JSON.parse(text, (key, value, context) => {
      if (
        typeof value === 'number' &&
        !Number.isSafeInteger(value) &&
        context &&
        typeof context.source === 'string' &&
        /^-?\d+$/.test(context.source)
      ) {
        return BigInt(context.source);
      }
      return value;
    });
  }

  // ---------- the block hash (Python's json.dumps(block, sort_keys=True)) ----------

  /** Python's repr of a float (the block's timestamp is one). */
  function pyFloat(x) {
    if (!Number.isFinite(x)) return String(x);
    const abs = Math.abs(x);
    if (abs !== 0 && (abs >= 1e16 || abs < 1e-4)) {
      // Python writes at least two exponent digits: 1e-05, 1e+16.
      return x.toExponential().replace(/e([+-])(\d)$/, 'e$10$2');
    }
    return Number.isInteger(x) ? x.toFixed(1) : String(x);
  }

  /** Python's json string: ASCII only, \uXXXX in lower-case hex for everything else. */
  function pyString(s) {
    const named = { 0x22: '\\"', 0x5c: '\\\\', 0x0a: '\\n', 0x0d: '\\r', 0x09: '\\t', 0x08: '\\b', 0x0c: '\\f' };
    let out = '"';
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (named[c]) out += named[c];
      else if (c < 0x20 || c > 0x7e) out += '\\u' + c.toString(16).padStart(4, '0');
      else out += s[i];
    }
    return out + '"';
  }

  /**
   * The block string for our server's block shape. JSON.parse cannot tell 1.0 from 1, so the
   * one float field of a block, "timestamp", is written as a float and every other number as an
   * integer, which is what the server stores.
   */
  function pyJson(value, key) {
    if (value === null) return 'null';
    if (typeof value === 'boolean') return value ? 'true' : 'false';
    if (typeof value === 'bigint') return value.toString();
    if (typeof value === 'number') {
      return key === 'timestamp' || !Number.isInteger(value) ? pyFloat(value) : String(value);
    }
    if (typeof value === 'string') return pyString(value);
    if (Array.isArray(value)) return '[' + value.map((v) => pyJson(v, null)).join(', ') + ']';
    const keys = Object.keys(value).sort();
    return '{' + keys.map((k) => pyString(k) + ': ' + pyJson(value[k], k)).join(', ') + '}';
  }

  /**
   * A block's hash: the one its summary carries, or its successor's previous_hash when known, else
   * SHA-256 of the block string of `full` (the whole block, when fetched).
   */
  async function blockHash(summary, full) {
    if (typeof summary.hash === 'string') return summary.hash;
    const next = state.blocks.get(Number(summary.index) + 1);
    if (next && typeof next.previous_hash === 'string') return next.previous_hash;
    const block = full;
    if (!block) return null;
    // crypto.subtle exists only in secure contexts (https, localhost, 127.0.0.1).
    if (!(window.crypto && crypto.subtle)) return null;
    const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(pyJson(block, null)));
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // ---------- formatting ----------

  /** The id rewarded in a whole block: the last reward transaction (sender "0"). */
  function rewardedIn(block) {
    const txs = Array.isArray(block.transactions) ? block.transactions : [];
    for (let i = txs.length - 1; i >= 0; i--) {
      if (txs[i] && String(txs[i].sender) === '0') return String(txs[i].recipient);
    }
    return null;
  }

  /** Whether a whole block paid PPLNS: the rewards that end it add up to a million units or
   *  more (a solo pool's block mints one coin). */
  function paysPplns(block) {
    const txs = Array.isArray(block.transactions) ? block.transactions : [];
    let total = 0n;
    for (let i = txs.length - 1; i >= 0 && txs[i] && String(txs[i].sender) === '0'; i--) {
      try {
        total += BigInt(String(txs[i].amount));
      } catch {
        return false;
      }
    }
    return total >= UNITS_PER_COIN;
  }

  /** An amount or a balance as the pool counts coins: under PPLNS, units as coins with their
   *  six decimals (223554847 → 223.554847); otherwise as it is. The API keeps the integers. */
  function formatCoins(value) {
    if (!state.pplns) return String(value);
    let units;
    try {
      units = BigInt(String(value));
    } catch {
      return String(value);
    }
    const sign = units < 0n ? '-' : '';
    if (units < 0n) units = -units;
    return sign + String(units / UNITS_PER_COIN) + '.' + String(units % UNITS_PER_COIN).padStart(6, '0');
  }

  /** "found by" under PPLNS (everyone with shares is paid), else "won by". */
  function byWord() {
    return state.pplns ? 'found by ' : 'won by ';
  }

  /** A whole block (from a block message) as the server summarises blocks in stats. */
  function summarize(block) {
    return {
      index: block.index,
      timestamp: block.timestamp,
      proof: block.proof,
      previous_hash: block.previous_hash,
      hash: null,
      winner: rewardedIn(block),
      transaction_count: Array.isArray(block.transactions) ? block.transactions.length : 0,
    };
  }

  /** The id rewarded in a block summary. */
  function winnerOf(summary) {
    return typeof summary.winner === 'string' ? summary.winner : null;
  }

  function formatAge(seconds) {
    if (!Number.isFinite(seconds)) return '—';
    const s = Math.max(0, seconds);
    if (s < 10) return s.toFixed(1) + ' s';
    if (s < 60) return Math.floor(s) + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' m ' + String(Math.floor(s % 60)).padStart(2, '0') + ' s';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + String(Math.floor((s % 3600) / 60)).padStart(2, '0') + ' m';
    return Math.floor(s / 86400) + ' d';
  }

  function formatRate(hps) {
    if (!Number.isFinite(hps) || hps <= 0) return ['0', 'H/s'];
    const units = ['H/s', 'kH/s', 'MH/s', 'GH/s', 'TH/s', 'PH/s', 'EH/s'];
    let i = 0;
    let v = hps;
    while (v >= 1000 && i < units.length - 1) {
      v /= 1000;
      i++;
    }
    return [v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2), units[i]];
  }

  function formatTime(ts) {
    const d = new Date(Number(ts) * 1000);
    return Number.isNaN(d.getTime()) ? String(ts) : d.toLocaleString();
  }

  /** Sets a big number with a smaller unit after it, both as text. */
  function setBig(node, value, unit) {
    node.textContent = value;
    if (unit) {
      const u = document.createElement('span');
      u.className = 'unit';
      u.textContent = unit;
      node.append(u);
    }
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /** Restarts a CSS animation class on a node (the "new block" highlight). */
  function flash(node, cls) {
    node.classList.remove(cls);
    void node.offsetWidth; // forces a reflow so the animation runs again
    node.classList.add(cls);
  }

  function secondsSince(block) {
    return Date.now() / 1000 - (Number(block.timestamp) + state.skew);
  }

  // ---------- rendering ----------

  function renderBlocks(newIndex) {
    const list = $('blocks');
    const shown = [...state.blocks.values()]
      .sort((a, b) => Number(b.index) - Number(a.index))
      .slice(0, RECENT_MAX);
    list.replaceChildren(
      ...shown.map((block, i) => {
        const li = el('li');
        const row = el('button', 'block-row' + (i === 0 ? ' newest' : ''));
        row.type = 'button';
        row.dataset.index = String(block.index);
        const who = winnerOf(block);
        row.append(
          el('span', 'idx', '#' + block.index),
          el('span', 'who' + (who === null ? ' none' : ''), who === null ? (Number(block.index) === 1 ? 'genesis' : 'no reward') : who),
          el('span', 'proof', 'proof ' + String(block.proof)),
          el('span', 'age', formatAge(secondsSince(block))),
        );
        row.addEventListener('click', () => openDetail(Number(block.index)));
        if (Number(block.index) === newIndex) flash(row, 'new');
        li.append(row);
        return li;
      }),
    );
    $('blocks-empty').hidden = shown.length > 0;
  }

  function renderLatest(live) {
    const block = state.latest;
    if (!block) return;
    $('height').textContent = '#' + block.index;
    $('height-note').textContent = 'miners race for #' + (Number(block.index) + 1);
    const who = winnerOf(block);
    const note = $('since-note');
    note.replaceChildren();
    if (who === null) note.textContent = Number(block.index) === 1 ? 'genesis block' : 'no reward';
    else note.append(byWord(), el('b', '', who));
    if (state.difficulty !== null) {
      $('difficulty').textContent = String(state.difficulty);
      const [n, unit] = formatRate(16 ** state.difficulty);
      $('difficulty-note').textContent = 'hex zeroes · ~' + n + unit.replace('H/s', '').replace('k', 'K') + ' hashes a block';
    }
    if (live) flash($('card-height'), 'flash');
    tick();
  }

  /** Renders the workers table from a stats answer (servers older than shares send none). */
  function renderWorkers(list) {
    const workers = Array.isArray(list) ? list : [];
    const now = Date.now() / 1000;
    $('workers').replaceChildren(
      ...workers.map((w) => {
        const tr = el('tr');
        tr.dataset.id = String(w.id);
        const [rate, unit] = formatRate(Number(w.hashrate));
        const num = (text) => el('td', 'num', text);
        tr.append(
          el('td', 'id', String(w.id)),
          num(rate + ' ' + unit),
          num(String(w.shares)),
          num(String(w.stale)),
          num(String(w.invalid)),
          num(formatAge(now - Number(w.last_share)) + ' ago'),
          num(formatCoins(w.coins)),
        );
        return tr;
      }),
    );
    $('workers-empty').hidden = workers.length > 0;
  }

  function renderStats(stats) {
    renderWorkers(stats.workers);
    setBig($('bpm'), Number(stats.blocks_per_minute).toFixed(stats.blocks_per_minute >= 10 ? 0 : 1));
    $('chain-length').textContent = stats.chain_length + ' blocks in all';
    const [rate, unit] = formatRate(Number(stats.hashrate));
    setBig($('hashrate'), rate, unit);
    $('miners').textContent = String(stats.miners);
    if (stats.difficulty !== undefined) state.difficulty = Number(stats.difficulty);

    const balances = Array.isArray(stats.balances) ? stats.balances : [];
    const top = balances.reduce((m, b) => Math.max(m, Number(b.coins)), 0);
    const winner = state.latest ? winnerOf(state.latest) : null;
    const board = $('leaderboard');
    board.replaceChildren(
      ...balances.map((b, i) => {
        const id = String(b.id);
        const coins = Number(b.coins);
        const li = el('li', 'lb-row' + (id === winner ? ' winner' : ''));
        li.dataset.id = id;
        const bar = el('div', 'bar');
        const fill = el('span');
        fill.style.width = (top > 0 ? Math.max(0, (coins / top) * 100) : 0) + '%';
        bar.append(fill);
        li.append(el('span', 'rank', String(i + 1)), el('span', 'id', id), el('span', 'coins', formatCoins(b.coins)), bar);
        const before = state.coins.get(id);
        if (before !== undefined && before !== coins) flash(li, 'bump');
        return li;
      }),
    );
    state.coins = new Map(balances.map((b) => [String(b.id), Number(b.coins)]));
    $('board-empty').hidden = balances.length > 0;

    // The recent list fills gaps (blocks forged while we were away, or before we connected).
    if (Array.isArray(stats.recent)) {
      for (const block of stats.recent) addBlock(block);
      renderBlocks(null);
    }
    renderLatest(false);
  }

  /** Keeps a block summary; returns true when it is newer than every block seen so far. */
  function addBlock(block) {
    if (!block || typeof block !== 'object' || block.index === undefined) return false;
    const index = Number(block.index);
    const known = state.blocks.get(index);
    // A summary of the newest block has no hash yet; keep one learned since.
    if (known && typeof known.hash === 'string' && typeof block.hash !== 'string') block.hash = known.hash;
    state.blocks.set(index, block);
    const newest = !state.latest || index > Number(state.latest.index);
    if (newest) state.latest = block;
    // Keep one block more than we show, so the oldest shown still has its successor's hash.
    const keys = [...state.blocks.keys()].sort((a, b) => b - a);
    for (const k of keys.slice(RECENT_MAX + 1)) state.blocks.delete(k);
    return newest;
  }

  /** Updates the ticking ages once a second. */
  function tick() {
    if (state.latest) $('since').textContent = formatAge(secondsSince(state.latest));
    for (const row of document.querySelectorAll('.block-row')) {
      const block = state.blocks.get(Number(row.dataset.index));
      const age = row.querySelector('.age');
      if (block && age) age.textContent = formatAge(secondsSince(block));
    }
  }

  // ---------- block detail ----------

  async function openDetail(index) {
    const block = state.blocks.get(index);
    if (!block) return;
    state.openIndex = index;
    $('detail-title').textContent = 'Block #' + block.index;
    const who = winnerOf(block);
    $('detail-winner').textContent = who === null ? '—' : who;
    $('detail-winner-label').textContent = state.pplns ? 'Found by' : 'Won by';
    $('detail-time').textContent = formatTime(block.timestamp) + '  (' + pyFloat(Number(block.timestamp)) + ')';
    $('detail-proof').textContent = String(block.proof);
    $('detail-prev').textContent = String(block.previous_hash);
    const hashNode = $('detail-hash');
    hashNode.textContent = '…';
    hashNode.classList.remove('pending');
    const loading = el('td', 'pending', 'loading ' + block.transaction_count + ' transactions…');
    loading.colSpan = 3;
    const loadingRow = el('tr');
    loadingRow.append(loading);
    $('detail-txs').replaceChildren(loadingRow);
    const dialog = $('detail');
    if (!dialog.open) dialog.showModal();
    // The transactions are not in the summary: fetch the whole block.
    const full = await fetchBlock(index);
    if (state.openIndex !== index) return;
    if (full === null) {
      loading.textContent = 'could not load the transactions; click the block again';
    } else {
      $('detail-txs').replaceChildren(...transactionRows(full));
    }
    const hash = await blockHash(block, full).catch(() => null);
    if (state.openIndex !== index) return;
    hashNode.classList.toggle('pending', hash === null);
    hashNode.textContent = hash === null ? 'known once the next block is forged' : hash;
  }

  /** Fetches block `index` whole from GET /chain?from=INDEX&limit=1; null on failure. */
  async function fetchBlock(index) {
    try {
      const res = await fetch('/chain?from=' + index + '&limit=1', { cache: 'no-store' });
      if (!res.ok) return null;
      const body = parseJson(await res.text());
      const block = body && Array.isArray(body.chain) ? body.chain[0] : null;
      return block && typeof block === 'object' && Number(block.index) === index ? block : null;
    } catch {
      return null;
    }
  }

  function transactionRows(block) {
    const rows = (Array.isArray(block.transactions) ? block.transactions : []).map((tx) => {
      const tr = el('tr');
      const sender = el('td', '', String(tx.sender));
      if (String(tx.sender) === '0') sender.append(el('span', 'tag', 'reward'));
      tr.append(sender, el('td', '', String(tx.recipient)), el('td', 'num', formatCoins(tx.amount)));
      return tr;
    });
    if (rows.length === 0) {
      const tr = el('tr');
      const td = el('td', 'pending', 'no transactions');
      td.colSpan = 3;
      tr.append(td);
      rows.push(tr);
    }
    return rows;
  }

  function closeDetail() {
    state.openIndex = null;
    $('detail').close();
  }

  // ---------- the socket ----------

  function setStatus(kind, text) {
    const node = $('status');
    node.className = 'status ' + kind;
    $('status-text').textContent = text;
    document.body.classList.toggle('offline', kind !== 'live');
  }

  function requestStats() {
    const ws = state.socket;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    // Coalesce: with a fast chain, ask again once the answer in flight arrives, never pile up.
    if (state.statsInFlight) {
      state.statsAgain = true;
      return;
    }
    state.statsInFlight = true;
    ws.send(JSON.stringify({ type: 'stats' }));
  }

  function onMessage(event) {
    if (typeof event.data !== 'string') return;
    let msg;
    try {
      msg = parseJson(event.data);
    } catch {
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    if (msg.type === 'block' && msg.block && typeof msg.block === 'object') {
      const live = !state.greeting;
      state.greeting = false;
      if (msg.difficulty !== undefined) state.difficulty = Number(msg.difficulty);
      if (paysPplns(msg.block)) state.pplns = true;
      const newest = addBlock(summarize(msg.block));
      if (live && newest) state.skew = Date.now() / 1000 - Number(msg.block.timestamp);
      renderBlocks(live && newest ? Number(msg.block.index) : null);
      renderLatest(live && newest);
      requestStats();
    } else if (msg.type === 'stats') {
      state.statsInFlight = false;
      renderStats(msg);
      if (state.statsAgain) {
        state.statsAgain = false;
        requestStats();
      }
    }
  }

  function connect() {
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(scheme + '//' + location.host + '/ws');
    state.socket = ws;
    state.greeting = true;
    state.statsInFlight = false;
    state.statsAgain = false;
    state.attempts += 1;
    if (state.down) setStatus('reconnecting', 'reconnecting… attempt ' + state.attempts);
    ws.addEventListener('open', () => {
      state.backoff = BACKOFF_MIN_MS;
      state.attempts = 0;
      state.down = false;
      setStatus('live', 'live');
      requestStats();
    });
    ws.addEventListener('message', onMessage);
    ws.addEventListener('close', () => {
      if (state.socket !== ws) return;
      state.socket = null;
      state.down = true;
      scheduleReconnect();
    });
    // An error is always followed by close, which schedules the retry.
  }

  function scheduleReconnect() {
    const delay = Math.min(state.backoff, BACKOFF_MAX_MS) * (0.8 + Math.random() * 0.4);
    state.backoff = Math.min(state.backoff * 2, BACKOFF_MAX_MS);
    state.retryAt = Date.now() + delay;
    state.retryTimer = setTimeout(connect, delay);
    showRetry();
  }

  function showRetry() {
    if (state.retryTimer === null) return;
    const left = Math.max(0, (state.retryAt - Date.now()) / 1000);
    setStatus('reconnecting', 'reconnecting… retry in ' + Math.max(1, Math.ceil(left)) + ' s');
  }

  // ---------- start ----------

  $('foot-host').textContent = location.host;
  $('detail-close').addEventListener('click', closeDetail);
  $('detail').addEventListener('close', () => {
    state.openIndex = null;
  });
  // A click on the backdrop (outside the dialog's box) closes it too.
  $('detail').addEventListener('click', (event) => {
    if (event.target === event.currentTarget) {
      const r = event.currentTarget.getBoundingClientRect();
      const inside = event.clientX >= r.left && event.clientX <= r.right && event.clientY >= r.top && event.clientY <= r.bottom;
      if (!inside) closeDetail();
    }
  });
  setInterval(() => {
    tick();
    showRetry();
  }, 250);
  setInterval(requestStats, WORKERS_EVERY_MS);
  // A tab woken from sleep may hold a dead socket: retry at once instead of waiting out a back-off.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && state.retryTimer !== null) connect();
  });
  connect();
})();
