// The dashboard in a real headless Chromium against a live pool-server.
//
//   POOL_URL=http://127.0.0.1:PORT [DASHBOARD_SCREENSHOT=out.png] [CHROMIUM=/usr/bin/chromium] \
//     node --test dashboard.test.mjs
//
// The server must be fresh (genesis only) and at a low difficulty (2-4): the test mines through the
// course's HTTP API (GET /last_block, POST /mine) with node's crypto. pool-server's integration test
// `browser` starts such a server and runs this file. With DASHBOARD_SCREENSHOT=out.png it also saves
// out-1280x720.png, out-1920x1080.png and out-1024x768.png, the sizes whose layout it checks.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.POOL_URL;
/** A second fresh server, paying PPLNS (`--payout pplns`), for the coins' display. */
const PPLNS_BASE = process.env.POOL_PPLNS_URL;
const SCREENSHOT = process.env.DASHBOARD_SCREENSHOT;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
/** Generous: the CI machine is shared; nothing here should take more than a fraction of this. */
const WAIT_MS = 20000;

// Ids are attacker-controlled: one that would run script if the page used innerHTML.
const EVIL_ID = 'Alice <img src=x onerror="window.__xss=1">';
const UNICODE_ID = 'José 🚀';

/** Python's json.dumps(value, sort_keys=True) for the block shape: "timestamp" is the one float. */
function pyJson(value, key = null) {
  if (value === null) return 'null';
  if (typeof value === 'boolean') return String(value);
  if (typeof value === 'number') {
    if (key === 'timestamp' || !Number.isInteger(value)) {
      return Number.isInteger(value) ? value.toFixed(1) : String(value);
    }
    return String(value);
  }
  if (typeof value === 'string') {
    let out = '"';
    for (const unit of value.split('')) {
      const c = unit.charCodeAt(0);
      if (unit === '"' || unit === '\\') out += '\\' + unit;
      else if (c === 0x0a) out += '\\n';
      else if (c < 0x20 || c > 0x7e) out += '\\u' + c.toString(16).padStart(4, '0');
      else out += unit;
    }
    return out + '"';
  }
  if (Array.isArray(value)) return '[' + value.map((v) => pyJson(v)).join(', ') + ']';
  return '{' + Object.keys(value).sort().map((k) => pyJson(k) + ': ' + pyJson(value[k], k)).join(', ') + '}';
}

async function getJson(path, init, base = BASE) {
  const res = await fetch(base + path, init);
  const body = await res.json();
  return { status: res.status, body };
}

/** Mines the current block through the HTTP API as `id`; returns the new block. */
async function mineBlock(id, base = BASE) {
  const { body } = await getJson('/last_block', undefined, base);
  const blockString = pyJson(body.last_block);
  const zeros = '0'.repeat(body.difficulty);
  let proof = 0;
  while (!createHash('sha256').update(blockString + proof).digest('hex').startsWith(zeros)) proof++;
  const res = await getJson(
    '/mine',
    { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ proof, id }) },
    base,
  );
  assert.equal(res.body.message, 'New Block Forged', `POST /mine answered ${JSON.stringify(res.body)}`);
  return res.body.block;
}

async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'dashboard-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1440, height: 900 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

test('the dashboard shows the chain live, escapes ids, and reconnects', { timeout: 120000 }, async (t) => {
  assert.ok(BASE, 'set POOL_URL to the server, e.g. http://127.0.0.1:5000');

  // A block before the page loads, so the leaderboard has a row to render.
  const first = await mineBlock(EVIL_ID);

  const browser = await launch();
  t.after(browser.close);
  const page = browser.context.pages()[0] ?? (await browser.context.newPage());
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));

  // Every WebSocket goes through a route we can cut, as a server restart would.
  const routes = [];
  // Stats requests the page sent, over all its connections.
  let statsAsked = 0;
  await page.routeWebSocket(/\/ws$/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((message) => {
      if (String(message).includes('"stats"')) statsAsked += 1;
      server.send(message);
    });
    routes.push(ws);
  });

  const page_ = await page.goto(BASE + '/');
  assert.equal(page_.status(), 200);
  assert.match(page_.headers()['content-type'], /^text\/html/);

  // The current block and the leaderboard render from the push + the stats answer.
  await page.locator('#status.live').waitFor({ timeout: WAIT_MS });

  // The workers table: the harness sent two shares as "sharer" before the page loaded.
  const sharer = page.locator('#workers tr', { hasText: 'sharer' });
  await sharer.waitFor({ timeout: WAIT_MS });
  assert.equal(await sharer.locator('td').nth(2).textContent(), '2', 'two shares');
  assert.match(await sharer.locator('td').nth(1).textContent(), /H\/s$/, 'a hashrate');
  assert.ok(await page.locator('#workers-empty').isHidden());
  // Shares come between blocks: the page asks for stats again without waiting for a block.
  const asked = statsAsked;
  const deadline = Date.now() + WAIT_MS;
  while (statsAsked === asked && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.ok(statsAsked > asked, 'stats asked again between blocks, for the workers table');
  await page.locator('#height', { hasText: `#${first.index}` }).waitFor({ timeout: WAIT_MS });
  const evilRow = page.locator('#leaderboard li').first();
  await evilRow.locator('.coins', { hasText: '1' }).waitFor({ timeout: WAIT_MS });
  assert.equal(await evilRow.locator('.id').textContent(), EVIL_ID, 'the id is shown as text');
  assert.equal(await page.locator('#difficulty').textContent(), String((await getJson('/last_block')).body.difficulty));
  assert.equal(await page.locator('.block-row .who').first().textContent(), EVIL_ID);
  assert.equal(await page.locator('main img').count(), 0, 'no element was made from an id');

  // The detail of the newest block: its proof, its transactions (fetched on click: the stats
  // answer carries block summaries only), and its hash computed in the page.
  const blockFetched = page.waitForResponse(
    (res) => new URL(res.url()).pathname === '/chain' && new URL(res.url()).search === `?from=${first.index}&limit=1`,
    { timeout: WAIT_MS },
  );
  await page.locator(`.block-row[data-index="${first.index}"]`).click();
  assert.equal((await blockFetched).status(), 200, 'the click fetched the block');
  await page.locator('#detail[open]').waitFor({ timeout: WAIT_MS });
  assert.equal(await page.locator('#detail-proof').textContent(), String(first.proof));
  assert.equal(await page.locator('#detail-prev').textContent(), first.previous_hash);
  await page.locator('#detail-txs td', { hasText: EVIL_ID }).waitFor({ timeout: WAIT_MS });
  assert.equal(await page.locator('#detail-txs td').nth(1).textContent(), EVIL_ID);
  assert.equal(await page.locator('#detail-txs tr').count(), first.transactions.length);
  const hashText = page.locator('#detail-hash');
  await page.waitForFunction(() => /^[0-9a-f]{64}$/.test(document.querySelector('#detail-hash').textContent), null, {
    timeout: WAIT_MS,
  });
  const shownHash = await hashText.textContent();
  await page.keyboard.press('Escape');
  await page.locator('#detail[open]').waitFor({ state: 'detached', timeout: WAIT_MS }).catch(() => {});
  assert.equal(await page.locator('#detail').evaluate((d) => d.open), false);

  // A block mined by someone else lands without a reload.
  await page.evaluate(() => {
    window.__samePage = true;
  });
  const second = await mineBlock(UNICODE_ID);
  assert.equal(second.index, first.index + 1);
  assert.equal(second.previous_hash, shownHash, 'the page computed the Python-compatible block hash');
  await page.locator('#height', { hasText: `#${second.index}` }).waitFor({ timeout: WAIT_MS });
  await page.locator('.block-row.newest .who', { hasText: UNICODE_ID }).waitFor({ timeout: WAIT_MS });
  await page.locator('#leaderboard li', { hasText: UNICODE_ID }).waitFor({ timeout: WAIT_MS });
  assert.equal(await page.locator('#leaderboard li').count(), 2);
  assert.equal(await page.locator('.block-row').count(), second.index, 'every block, genesis included');
  assert.equal(await page.evaluate(() => window.__samePage), true, 'no reload happened');
  assert.match(await page.locator('#since-note').textContent(), /José/);

  // The connection drops (as on a server restart): the page says so, then recovers on its own.
  const before = routes.length;
  await routes[routes.length - 1].close({ code: 1012, reason: 'restarting' });
  await page.locator('#status.reconnecting').waitFor({ timeout: WAIT_MS });
  assert.match(await page.locator('#status').textContent(), /reconnecting/);
  await page.locator('#status.live').waitFor({ timeout: WAIT_MS });
  assert.ok(routes.length > before, 'a new WebSocket was opened');
  const third = await mineBlock(UNICODE_ID);
  await page.locator('#height', { hasText: `#${third.index}` }).waitFor({ timeout: WAIT_MS });
  await page.locator('#leaderboard li', { hasText: UNICODE_ID }).locator('.coins', { hasText: '2' }).waitFor({
    timeout: WAIT_MS,
  });
  assert.equal(await page.locator('#leaderboard li .id').first().textContent(), UNICODE_ID, 'highest first');
  assert.equal(await page.evaluate(() => window.__samePage), true, 'still no reload');

  assert.equal(await page.evaluate(() => window.__xss), undefined, 'no id ran as markup');

  // Laid out for a projector, with a classroom's chain: the 20 latest blocks listed. At each
  // size the workers table starts above the fold, nothing sticks out sideways, and the six
  // cards fill their rows evenly (no card left alone on a row).
  while ((await getJson('/last_block')).body.last_block.index < 22) await mineBlock(UNICODE_ID);
  await page.locator('#height', { hasText: '#22' }).waitFor({ timeout: WAIT_MS });
  await page.locator('.block-row[data-index="2"]').waitFor({ state: 'detached', timeout: WAIT_MS });
  for (const [width, height] of [[1280, 720], [1920, 1080], [1024, 768]]) {
    await page.setViewportSize({ width, height });
    const layout = await page.evaluate(() => {
      const box = (el) => el.getBoundingClientRect();
      return {
        scrollWidth: document.documentElement.scrollWidth,
        workers: box(document.querySelector('#workers tr')),
        workersHead: box(document.querySelector('.panel.workers')),
        board: box(document.querySelector('.panel.board')),
        workersOverflow: (() => {
          const panel = document.querySelector('.panel.workers');
          return panel.scrollWidth - panel.clientWidth;
        })(),
        cards: [...document.querySelectorAll('.cards .card')].map((c) => ({ top: box(c).top, right: box(c).right })),
      };
    });
    const at = `at ${width}×${height}`;
    assert.ok(layout.scrollWidth <= width, `${at}: the page is ${layout.scrollWidth} px wide`);
    assert.ok(layout.workersHead.top < height, `${at}: the workers panel starts at ${layout.workersHead.top} px`);
    assert.ok(layout.workers.bottom <= height, `${at}: the first worker's row ends at ${layout.workers.bottom} px`);
    assert.ok(layout.board.top < height, `${at}: the leaderboard starts at ${layout.board.top} px`);
    assert.ok(layout.workersOverflow <= 0, `${at}: the workers table is ${layout.workersOverflow} px too wide`);
    const rows = new Map();
    for (const card of layout.cards) rows.set(Math.round(card.top), (rows.get(Math.round(card.top)) ?? 0) + 1);
    const counts = [...rows.values()];
    assert.ok(counts.every((n) => n === counts[0]), `${at}: cards per row ${JSON.stringify(counts)}`);
    assert.ok(layout.cards.every((c) => c.right <= width), `${at}: a card sticks out`);
    if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT.replace(/\.png$/, '') + `-${width}x${height}.png` });
  }

  assert.deepEqual(pageErrors, []);
  if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT });
});

test('under PPLNS coins show their fraction and blocks are found, not won', { timeout: 120000, skip: !PPLNS_BASE }, async (t) => {
  // Over HTTP the finder's proof is its only share: it gets the whole 1,000,000 units, twice.
  await mineBlock('pat', PPLNS_BASE);
  await mineBlock('pat', PPLNS_BASE);
  const { body } = await getJson('/balance/pat', undefined, PPLNS_BASE);
  assert.equal(body.coins, 2000000, 'the API keeps exact units');
  const browser = await launch();
  t.after(browser.close);
  const page = browser.context.pages()[0] ?? (await browser.context.newPage());
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  await page.goto(PPLNS_BASE + '/');
  await page.locator('#status.live').waitFor({ timeout: WAIT_MS });
  const row = page.locator('#leaderboard li', { hasText: 'pat' });
  await row.locator('.coins', { hasText: '2.000000' }).waitFor({ timeout: WAIT_MS });
  assert.equal(await page.locator('#since-note').textContent(), 'found by pat');
  await page.locator('.block-row[data-index="3"]').click();
  await page.locator('#detail-txs td', { hasText: '1.000000' }).waitFor({ timeout: WAIT_MS });
  assert.equal(await page.locator('#detail-winner-label').textContent(), 'Found by');
  assert.deepEqual(pageErrors, []);
});
