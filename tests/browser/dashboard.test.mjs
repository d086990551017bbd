// Dashboard (ui/) end-to-end test in headless Debian Chromium via playwright-core.
// Started by tests/browser/run.sh, which provides a running agent + sandbox:
//   AGENT_URL, ADMIN_TOKEN, WRITE_KEY, SANDBOX_URL, SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET,
//   UI_DIR, ARTIFACTS, CHROMIUM.
// A simple sequential runner: every step runs (a failed step does not stop the next), each
// ends with a screenshot in ARTIFACTS, and a summary (also artifacts/summary.json) tells which
// steps passed and which failed, naming the admin routes the agent does not serve (404).
//
// When the agent does not serve the UI yet (GET / → 404), the test serves UI_DIR itself from a
// small loopback server with the agent's CSP that forwards /api/* and /v1/* to the agent
// (UI_PROXY=0 disables the fallback, UI_PROXY=1 forces it). The summary says which was used.

import { chromium } from 'playwright-core';
import http from 'node:http';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) {
    console.error(`dashboard.test.mjs: ${k} is not set (run tests/browser/run.sh)`);
    process.exit(2);
  }
  return v;
};
const AGENT = env('AGENT_URL').replace(/\/$/, '');
const TOKEN = env('ADMIN_TOKEN');
let WRITE_KEY = env('WRITE_KEY');
const SB_CLIENT_ID = env('SANDBOX_CLIENT_ID', '');
const SB_CLIENT_SECRET = env('SANDBOX_CLIENT_SECRET', '');
const UI_DIR = env('UI_DIR', path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../ui'));
const ART = env('ARTIFACTS', path.resolve(path.dirname(new URL(import.meta.url).pathname), 'artifacts'));
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
const UI_PROXY = env('UI_PROXY', 'auto');
const T = 30000; // default wait per expectation

const CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

// ------------------------------------------------------------------ runner

const results = [];
let stepNo = 0;
let page = null;

async function step(name, fn) {
  stepNo += 1;
  const id = String(stepNo).padStart(2, '0');
  const t0 = Date.now();
  let status = 'pass';
  let detail = '';
  try {
    const note = await fn();
    if (note) detail = note;
  } catch (e) {
    status = e && e.skip ? 'skip' : 'fail';
    detail = (e && e.message ? e.message : String(e)).split('\n').slice(0, 6).join(' | ');
  }
  let shot = '';
  if (page && !page.isClosed()) {
    shot = path.join(ART, `${id}-${name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}.png`);
    try {
      await page.evaluate(() => window.scrollTo(0, 0)).catch(() => {});
      await page.screenshot({ path: shot, fullPage: true });
    } catch {
      shot = '';
    }
  }
  const ms = Date.now() - t0;
  results.push({ step: id, name, status, ms, detail, screenshot: shot && path.relative(process.cwd(), shot) });
  console.log(`${status === 'pass' ? 'ok  ' : status === 'skip' ? 'SKIP' : 'FAIL'} ${id} ${name} (${ms} ms)${detail ? `\n       ${detail}` : ''}`);
}

function skip(msg) {
  const e = new Error(msg);
  e.skip = true;
  throw e;
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function waitFor(what, fn, timeout = T) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}${last !== undefined && last !== false ? ` (last: ${JSON.stringify(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// ------------------------------------------------------------------ agent helpers (outside the browser)

async function agentApi(method, p, body) {
  const res = await fetch(AGENT + p, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, json, text };
}

async function segment(batch, key = WRITE_KEY) {
  const res = await fetch(`${AGENT}/v1/batch`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Basic ${Buffer.from(`${key}:`).toString('base64')}` },
    body: JSON.stringify({ batch }),
  });
  return res.status;
}

let seq = 0;
function entered(audience, userId, email, extra = {}) {
  seq += 1;
  return {
    type: 'track',
    userId,
    event: 'Audience Entered',
    messageId: `browser-test-${process.pid}-${seq}`,
    timestamp: new Date().toISOString(),
    properties: { audience_key: audience, [audience]: true, ...(email ? { email } : {}), ...extra },
    context: { personas: { computation_key: audience, audience_settings: { advertiserId: '1234567890', countryCode: 'US' } } },
  };
}

// Which contract routes does this agent serve? GET on a POST-only route answers 405 when the
// route exists and 404 when it does not, so probing changes nothing.
const ROUTES = [
  ['GET', '/'], ['GET', '/app.js'], ['GET', '/healthz'], ['GET', '/api/status'], ['POST', '/api/flush'],
  ['POST', '/api/pause'], ['POST', '/api/resume'], ['GET', '/api/audiences'], ['GET', '/api/dead-letters'],
  ['POST', '/api/dead-letters/retry'], ['GET', '/api/connection'], ['POST', '/api/login/start'],
  ['GET', '/api/login/status'], ['GET', '/api/login/callback'], ['POST', '/api/logout'], ['GET', '/api/region'],
  ['GET', '/api/settings'], ['POST', '/api/settings/write-key/rotate'],
];
const routeStatus = {};
async function probeRoutes() {
  for (const [m, p] of ROUTES) {
    const res = await fetch(AGENT + p, { method: 'GET', headers: { Authorization: `Bearer ${TOKEN}` } });
    const body = await res.text();
    // A served route may answer 404 itself (GET /api/login/status without a known state); the
    // agent's "no such route" answer says so, or carries no JSON error at all.
    let routeMissing = res.status === 404;
    if (routeMissing) {
      try {
        const j = JSON.parse(body);
        routeMissing = !j || !j.code || /no such (admin route|page)/.test(j.message || '');
      } catch {
        routeMissing = true;
      }
    }
    routeStatus[`${m} ${p}`] = routeMissing ? 'missing' : res.status === 405 && m === 'GET' ? 'wrong method?' : 'present';
    if (m !== 'GET' && res.status === 405) routeStatus[`${m} ${p}`] = 'present';
  }
}
function need(...routes) {
  const missing = routes.filter((r) => routeStatus[r] === 'missing');
  if (missing.length) throw new Error(`route missing in the agent (404): ${missing.join(', ')}`);
}

// ------------------------------------------------------------------ UI fallback server

function startUiProxy() {
  const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml' };
  const upstream = new URL(AGENT);
  const server = http.createServer((req, res) => {
    if (req.url.startsWith('/api/') || req.url.startsWith('/v1/') || req.url === '/healthz') {
      const headers = { ...req.headers, host: upstream.host };
      if (headers.origin) headers.origin = AGENT;
      const preq = http.request({ hostname: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers }, (pres) => {
        res.writeHead(pres.statusCode, pres.headers);
        pres.pipe(res);
      });
      preq.on('error', () => {
        res.writeHead(502);
        res.end();
      });
      req.pipe(preq);
      return;
    }
    const rel = req.url.split('?')[0] === '/' ? 'index.html' : decodeURIComponent(req.url.split('?')[0]).replace(/^\/+/, '');
    const file = path.join(UI_DIR, rel);
    if (!file.startsWith(UI_DIR) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, { 'Content-Type': 'application/json' });
      res.end('{"code":"not_found","message":"no such file"}');
      return;
    }
    res.writeHead(200, {
      'Content-Type': types[path.extname(file)] || 'application/octet-stream',
      'Content-Security-Policy': CSP,
      'X-Content-Type-Options': 'nosniff',
      'Cache-Control': 'no-store',
    });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// ------------------------------------------------------------------ page helpers

const tid = (id) => `[data-testid="${id}"]`;

async function text(sel) {
  return (await page.locator(sel).first().textContent())?.trim();
}

async function pendingTotal() {
  const v = await page.locator(tid('pending-total')).getAttribute('data-value');
  return v === null || v === '' ? NaN : Number(v);
}

async function audienceCell(key, col) {
  const cell = page.locator(`${tid('audience-row')}[data-key="${key}"] td[data-col="${col}"]`);
  if ((await cell.count()) === 0) return NaN;
  return Number((await cell.textContent()).replace(/[^0-9]/g, ''));
}

const VIEW_API = { audiences: '/api/audiences', 'dead-letters': '/api/dead-letters', connection: '/api/connection', settings: '/api/settings' };

// Opens a view and waits until the view's data has been fetched again (and rendered).
async function nav(view) {
  const api = VIEW_API[view];
  const loaded = api ? page.waitForResponse((r) => new URL(r.url()).pathname === api, { timeout: 10000 }).catch(() => null) : null;
  await page.locator(tid(`nav-${view}`)).click();
  await page.waitForFunction((v) => location.hash === `#/${v}`, view);
  if (loaded) {
    await loaded;
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0))));
  }
}

async function confirmDialog() {
  const ok = page.locator('#confirm-dialog[open] #confirm-ok');
  await ok.waitFor({ state: 'visible', timeout: 5000 });
  await ok.click();
}

// ------------------------------------------------------------------ main

const consoleProblems = [];

async function main() {
  await fsp.mkdir(ART, { recursive: true });
  for (const f of await fsp.readdir(ART)) {
    if (f.endsWith('.png') || f === 'summary.json') await fsp.rm(path.join(ART, f));
  }
  await probeRoutes();
  let base = AGENT;
  let proxy = null;
  const uiServed = routeStatus['GET /'] === 'present' && (await (await fetch(`${AGENT}/`)).text()).includes('data-testid="nav-status"');
  if (UI_PROXY === '1' || (UI_PROXY === 'auto' && !uiServed)) {
    proxy = await startUiProxy();
    base = `http://127.0.0.1:${proxy.address().port}`;
  }
  const servedBy = proxy ? `the test's server ${base} from ${UI_DIR} (${uiServed ? 'UI_PROXY=1' : 'the agent does not serve ui/'}), API forwarded to the agent` : 'the agent';
  console.log(`agent ${AGENT}; dashboard served by ${servedBy}`);
  console.log('routes:', Object.entries(routeStatus).map(([r, s]) => `${r}=${s}`).join(', '));

  // A fresh, empty profile: run.sh passes one inside its temp dir (removed even when the test is killed).
  const userDataDir = process.env.CHROMIUM_PROFILE || (await fsp.mkdtemp(path.join(os.tmpdir(), 'amc-sync-chromium-')));
  await fsp.mkdir(userDataDir, { recursive: true });
  assert((await fsp.readdir(userDataDir)).length === 0, `the Chromium profile dir ${userDataDir} is not empty`);
  // Playwright takes the fresh profile dir as launchPersistentContext's userDataDir (it refuses
  // --user-data-dir in args) and passes it to Chromium as --user-data-dir.
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const watch = (p) => {
    p.on('console', (m) => {
      if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) consoleProblems.push(m.text());
    });
    p.on('pageerror', (e) => consoleProblems.push(`pageerror: ${e.message}`));
  };
  context.on('page', watch);
  for (const p of context.pages()) watch(p);

  try {
    // 1. No token → the "open it from AMC Sync" panel.
    await step('no token shows the open-from-AMC-Sync panel', async () => {
      page = context.pages()[0] || (await context.newPage());
      await page.goto(`${base}/`);
      const panel = page.locator(tid('token-missing'));
      await panel.waitFor({ state: 'visible', timeout: 10000 });
      const t = await panel.textContent();
      assert(t.includes('amc-sync dashboard'), `panel text lacks "amc-sync dashboard": ${t}`);
      assert(!(await page.locator(tid('nav-status')).isVisible()), 'navigation visible without a token');
    });

    await step('wrong token (401) shows the panel, token removed from the URL', async () => {
      need('GET /api/status');
      await page.close();
      page = await context.newPage();
      await page.goto(`${base}/#token=${'0'.repeat(64)}`);
      await page.waitForFunction(() => !location.href.includes('token='), null, { timeout: 10000 });
      await page.locator(tid('token-missing')).waitFor({ state: 'visible', timeout: 10000 });
      const why = await text('#token-missing-why');
      assert(/refused/.test(why), `panel does not say the token was refused: ${why}`);
      const stored = await page.evaluate(() => sessionStorage.getItem('amcSyncAdminToken'));
      assert(stored === null, 'refused token kept in sessionStorage');
      await page.close();
    });

    // 2. With the token.
    page = await context.newPage();
    await step('open with #token: token stripped, auth state, region, paused', async () => {
      need('GET /api/status');
      await page.goto(`${base}/#token=${TOKEN}`);
      await page.locator(tid('auth-state')).waitFor({ state: 'visible', timeout: 10000 });
      assert(!page.url().includes(TOKEN), `token still in the URL: ${page.url()}`);
      const stored = await page.evaluate(() => sessionStorage.getItem('amcSyncAdminToken'));
      assert(stored === TOKEN, 'token not kept in sessionStorage');
      const state = await waitFor('auth state', async () => page.locator(tid('auth-state')).getAttribute('data-state'));
      const region = await waitFor('region', async () => ((await text(tid('region'))) !== '…' ? text(tid('region')) : false));
      const paused = await page.locator(tid('paused')).getAttribute('data-paused');
      assert(['ok', 'needs_login', 'no_credentials', 'refreshing'].includes(state), `unexpected auth state ${state}`);
      assert(state === 'ok', `auth state is ${state}, expected ok (run.sh stores the sandbox credentials)`);
      assert(region === 'NA', `region ${region}`);
      assert(paused === 'false', `paused=${paused}`);
      return `auth=${state} region=${region} paused=${paused}`;
    });

    await step('Pause then Resume', async () => {
      need('POST /api/pause', 'POST /api/resume');
      await page.locator(tid('pause')).click();
      await waitFor('paused badge true', async () => (await page.locator(tid('paused')).getAttribute('data-paused')) === 'true');
      assert(await page.locator(tid('pause')).isDisabled(), 'Pause still enabled while paused');
      assert(await page.locator(tid('upload-now')).isDisabled(), 'Upload now enabled while paused');
      const hint = await text(tid('upload-hint'));
      assert(/Uploads are paused — press Resume uploads first/.test(hint), `paused hint: ${hint}`);
      const note = await text(tid('auth-paused-note'));
      assert(/new events are still queued/.test(note) && (await page.locator(tid('auth-paused-note')).isVisible()), `Amazon Ads card while paused: ${note}`);
      await page.locator(tid('resume')).click();
      await waitFor('paused badge false', async () => (await page.locator(tid('paused')).getAttribute('data-paused')) === 'false');
    });

    await step('Segment /v1/batch traffic raises pending', async () => {
      need('GET /api/status');
      await waitFor('a first status', async () => !Number.isNaN(await pendingTotal()));
      const before = await pendingTotal();
      const batch = [];
      for (let i = 1; i <= 5; i++) batch.push(entered('vip_browser', `user_${i}`, `Person.${i}@Example.com`));
      // Amazon's sandbox refuses ids starting with invalid_ in the upload job: an upload-side dead letter.
      batch.push(entered('vip_browser', 'invalid_browser_1', 'refused.person@example.com'));
      // An email that is not one: no identifier is left, so it is dead-lettered at once (no_identifiers).
      batch.push(entered('vip_browser', 'user_bad_email', 'not-an-email'));
      const st = await segment(batch);
      assert(st === 200, `/v1/batch answered ${st}`);
      const after = await waitFor('pending-total to rise by 6', async () => ((await pendingTotal()) >= before + 6 ? pendingTotal() : false));
      const rowPending = await waitFor('audience row vip_browser', async () => audienceCell('vip_browser', 'pending') || false);
      assert(rowPending === 6, `vip_browser pending ${rowPending}, expected 6`);
      return `pending ${before} → ${after}`;
    });

    await step('Upload now: pending drops, uploaded rises, last upload set', async () => {
      need('POST /api/flush');
      const before = await pendingTotal();
      assert(before >= 6, `pending before the upload is ${before}, expected ≥ 6 (did something upload already?)`);
      await page.locator(tid('upload-now')).click();
      await waitFor('pending-total to reach 0', async () => (await pendingTotal()) === 0, 60000);
      const up = await waitFor('vip_browser uploaded ≥ 5', async () => ((await audienceCell('vip_browser', 'uploaded')) >= 5 ? audienceCell('vip_browser', 'uploaded') : false), 60000);
      const last = await waitFor('last-upload', async () => page.locator(tid('last-upload')).getAttribute('data-value'));
      assert(last && Number(last) > 0, 'last upload not shown');
      const aid = (await page.locator(`${tid('audience-row')}[data-key="vip_browser"] td.mono`).textContent()).trim();
      assert(/^\d+$/.test(aid), `no Amazon audienceId in the row: ${aid}`);
      // The result replaces "Upload started": invalid_browser_1 is refused by the sandbox's job.
      const result = await waitFor('upload result with a rejection', async () => {
        const t = await text('#status-action-msg');
        if (/\[.*HTTP/.test(t)) throw new Error(t);
        return /^Upload finished: \d+ sent, [1-9]\d* rejected by Amazon — see Dead letters$/.test(t) ? t : false;
      }, 60000);
      const rej = await waitFor('rejection shown in the vip_browser row', async () => {
        const t = await page.locator(`${tid('audience-row')}[data-key="vip_browser"] ${tid('audience-rejected')}`).textContent().catch(() => '');
        return /record(s)? rejected by Amazon — see Dead letters/.test(t) ? t : false;
      }, 10000);
      const href = await page.locator(`${tid('audience-row')}[data-key="vip_browser"] ${tid('audience-rejected')} a`).getAttribute('href');
      assert(href === '#/dead-letters?audience=vip_browser', `rejection link: ${href}`);
      return `pending ${before} → 0, uploaded ${up}, audienceId ${aid}, last upload "${await text(tid('last-upload'))}"; "${result}"; row: "${rej.trim()}"`;
    });

    await step('sparkline drawn from uploadsByHour', async () => {
      const s = await agentApi('GET', '/api/status');
      if (!Array.isArray(s.json && s.json.uploadsByHour)) throw new Error('GET /api/status has no uploadsByHour (contract field missing)');
      const bars = await page.locator('[data-testid="upload-sparkline"] rect').count();
      assert(bars === s.json.uploadsByHour.length, `${bars} bars for ${s.json.uploadsByHour.length} hours`);
    });

    // 3. Audiences.
    await step('Audiences: client-side validation errors', async () => {
      await nav('audiences');
      await page.fill('#f-key', 'bad key!');
      await page.fill('#f-country', 'U1');
      await page.fill('#f-ttl', '99999999');
      await page.locator('#aud-create').click();
      const keyErr = await text('#f-key-err');
      const ctyErr = await text('#f-country-err');
      const tgtErr = await text('#f-adv-err');
      const ttlErr = await text('#f-ttl-err');
      assert(keyErr && ctyErr && tgtErr && ttlErr, `missing field errors: key="${keyErr}" country="${ctyErr}" target="${tgtErr}" ttl="${ttlErr}"`);
      // Flagged while typing: an advertiser id with letters; the country shown upper-cased.
      await page.locator('#f-adv').pressSequentially('123abc');
      const advErr = await text('#f-adv-err');
      assert(/Digits only/.test(advErr), `no as-you-type error for 123abc: ${advErr}`);
      await page.fill('#f-adv', '');
      await page.locator('#f-country').fill('');
      await page.locator('#f-country').pressSequentially('de');
      const cty = await page.inputValue('#f-country');
      assert(cty === 'DE', `country shown as ${cty}`);
      assert((await page.locator('#f-key').getAttribute('aria-invalid')) === 'true', 'key not aria-invalid');
      return `key: ${keyErr}; country: ${ctyErr}; target: ${tgtErr}; ttl: ${ttlErr}`;
    });

    await step('Audiences: API validation error shown next to the field', async () => {
      need('GET /api/audiences');
      await page.fill('#f-key', 'crm_browser');
      await page.fill('#f-country', 'ZZ'); // two letters, but not an ISO 3166-1 country: only the API knows
      await page.fill('#f-adv', '1234567890');
      await page.fill('#f-ttl', '');
      await page.locator('#aud-create').click();
      const err = await waitFor('countryCode error from the API', async () => text('#f-country-err'), 10000);
      return `countryCode: ${err}`;
    });

    await step('Audiences: create through the form; list shows it', async () => {
      need('GET /api/audiences');
      await page.fill('#f-key', 'crm_browser');
      await page.fill('#f-country', 'de');
      await page.fill('#f-adv', '1234567890');
      await page.fill('#f-ttl', '2592000');
      await page.fill('#f-desc', 'Created by the browser test');
      await page.locator('#aud-create').click();
      await waitFor('created message', async () => /created/.test(await text('#aud-form-msg')), 10000);
      const row = page.locator('[data-testid="audience-list-row"][data-key="crm_browser"]');
      await row.waitFor({ timeout: 10000 });
      const t = await row.textContent();
      assert(t.includes('DE') && t.includes('1234567890') && /30(\.0)? days/.test(t), `row: ${t}`);
      const vip = await page.locator('[data-testid="audience-list-row"][data-key="vip_browser"]').textContent();
      assert(/\d{5,}/.test(vip), `vip_browser row lacks its Amazon id: ${vip}`);
      // Same key again → 409 conflict, shown at the key.
      await page.fill('#f-key', 'crm_browser');
      await page.fill('#f-country', 'DE');
      await page.fill('#f-adv', '1234567890');
      await page.locator('#aud-create').click();
      const conflict = await waitFor('conflict at the key field', async () => text('#f-key-err'), 10000);
      assert(conflict === "An audience named 'crm_browser' already exists — pick another key.", `conflict: ${conflict}`);
      // DE does not fit the active region NA: the row warns.
      const warn = await page.locator(`[data-testid="audience-list-row"][data-key="crm_browser"] ${tid('region-warning')}`).textContent();
      assert(warn === 'crm_browser targets DE but uploads go to NA — DE audiences belong in EU.', `region warning: ${warn}`);
      return `conflict: ${conflict}; ${warn}`;
    });

    // 4. Dead letters.
    await step('Dead letters: rows with reason codes and explanations', async () => {
      need('GET /api/dead-letters');
      await nav('dead-letters');
      const rows = page.locator(tid('dead-letter-row'));
      await waitFor('dead letters no_identifiers and amazon_* listed', async () => {
        const reasons = await rows.evaluateAll((rs) => rs.map((r) => r.dataset.reason));
        return reasons.includes('no_identifiers') && reasons.some((r) => r.startsWith('amazon_')) ? reasons : false;
      }, 30000);
      const reasons = await rows.evaluateAll((rs) => rs.map((r) => r.dataset.reason));
      const expl = await page.locator(`${tid('dead-letter-row')}[data-reason="no_identifiers"] [data-testid="reason-explanation"]`).first().textContent();
      assert(/No usable personal identifier/.test(expl), `explanation: ${expl}`);
      return `reasons: ${[...new Set(reasons)].join(', ')}`;
    });

    await step('Dead letters: filter by reason shows the explanation', async () => {
      need('GET /api/dead-letters');
      await page.selectOption('#dl-reason', 'no_identifiers');
      await waitFor('only no_identifiers rows', async () => {
        const r = await page.locator(tid('dead-letter-row')).evaluateAll((rs) => rs.map((x) => x.dataset.reason));
        return r.length > 0 && r.every((x) => x === 'no_identifiers');
      }, 10000);
      const ex = await text('#dl-explain');
      assert(/no_identifiers/.test(ex) && /Retry cannot fix it/.test(ex), `explain: ${ex}`);
    });

    await step('Dead letters: Retry selected re-queues an Amazon-refused record', async () => {
      need('POST /api/dead-letters/retry', 'GET /api/dead-letters');
      await page.selectOption('#dl-reason', '');
      const row = page.locator(`${tid('dead-letter-row')}[data-reason^="amazon_"]`).first();
      await row.waitFor({ timeout: 10000 });
      const rowReason = await row.getAttribute('data-reason');
      const rowId = await row.getAttribute('data-id');
      await row.locator('input.dl-pick').check();
      await page.locator('#dl-retry-selected').click();
      // Retrying what Amazon refused sends the identical record: the dashboard asks first.
      if (rowReason === 'amazon_invalid_record') {
        const warnText = await page.locator('#confirm-text').textContent({ timeout: 5000 });
        assert(/will fail again/.test(warnText), `confirmation text: ${warnText}`);
        await confirmDialog();
      }
      const msg = await waitFor('retry message', async () => {
        const t = await text('#dl-msg');
        return /re-queued|Retrying/.test(t) && !/Retrying/.test(t) ? t : (/\[/.test(t) ? Promise.reject(new Error(t)) : false);
      }, 10000);
      assert(/1 re-queued/.test(msg), `retry said: ${msg}`);
      // Retried rows are hidden unless "Show retried" is ticked.
      await waitFor('retried row hidden', async () => (await page.locator(`${tid('dead-letter-row')}[data-id="${rowId}"]`).count()) === 0, 10000);
      await page.locator(tid('dl-show-retried')).check();
      await waitFor('retried row shown again', async () => (await page.locator(`${tid('dead-letter-row')}[data-id="${rowId}"]`).count()) === 1, 10000);
      await page.locator(tid('dl-show-retried')).uncheck();
      return msg;
    });

    await step('Dead letters: Retry all by reason (with confirmation)', async () => {
      need('POST /api/dead-letters/retry', 'GET /api/dead-letters');
      await page.selectOption('#dl-reason', 'no_identifiers');
      await waitFor('retry-all enabled', async () => !(await page.locator('#dl-retry-reason').isDisabled()), 5000);
      await page.locator('#dl-retry-reason').click();
      await confirmDialog();
      const msg = await waitFor('retry-all message', async () => {
        const t = await text('#dl-msg');
        if (/\[.*HTTP/.test(t)) throw new Error(t);
        return /re-queued/.test(t) ? t : false;
      }, 10000);
      // Input errors keep no payload (raw PII is never stored): nothing can be re-queued.
      assert(/^0 re-queued, 1 cannot be retried/.test(msg), `retry all said: ${msg}`);
      await page.selectOption('#dl-reason', '');
      return msg;
    });

    // 5. Connection: region, logout, login.
    await step('Connection: region switch EU and back', async () => {
      need('GET /api/connection', 'GET /api/region');
      await nav('connection');
      await waitFor('connection state', async () => (await page.locator('#conn-state').getAttribute('data-state')) || false, 10000);
      const problems = [];
      let m = '';
      let connEu = '';
      try {
        await page.selectOption(tid('region-select'), 'EU');
        await page.locator('#region-apply').click();
        const confirmText = await page.locator('#confirm-text').textContent({ timeout: 5000 });
        if (!/Switch to EU\? Your audiences will be created again in EU on their next upload\. People already uploaded in NA are not copied over\. You need to log in once for EU; your NA login is kept\./.test(confirmText)) problems.push(`confirmation: ${confirmText}`);
        await confirmDialog();
        m = await waitFor('region switched', async () => {
          const t = await text('#region-msg');
          if (/\[.*HTTP/.test(t)) throw new Error(t);
          return /Region is now EU/.test(t) ? t : false;
        }, 10000);
        if (!/You haven't logged in for EU yet\. Log in with Amazon for EU below \(your NA login is kept\)\./.test(m)) problems.push(`after switching: ${m}`);
        // No refresh token for EU yet: the connection says so.
        connEu = await waitFor('connection state for EU', async () => {
          const st = await page.locator('#conn-state').getAttribute('data-state');
          return st && st !== 'ok' ? st : false;
        }, 10000).catch((e) => { problems.push(`connection view: ${e.message}`); return ''; });
        await nav('status');
        await waitFor('status region EU', async () => (await text(tid('region'))) === 'EU', 10000)
          .catch(async () => problems.push(`Status view still shows region ${await text(tid('region'))} after PUT /api/region EU (GET /api/status → region ${(await agentApi('GET', '/api/status')).json?.region}; GET /api/region → ${(await agentApi('GET', '/api/region')).text})`));
      } finally {
        // Always go back to NA so the following steps run against the logged-in region.
        await nav('connection');
        await page.selectOption(tid('region-select'), 'NA');
        await page.locator('#region-apply').click();
        if (await page.locator('#confirm-dialog[open]').count()) await confirmDialog();
        await waitFor('region back to NA', async () => /Region is now NA|Already on NA/.test(await text('#region-msg')), 10000);
      }
      if (problems.length) throw new Error(problems.join(' | '));
      return `${m} (connection state in EU: ${connEu})`;
    });

    await step('Connection: profiles listed', async () => {
      need('GET /api/connection');
      await nav('connection');
      const n = await waitFor('profile rows', async () => (await page.locator(tid('profile-row')).count()) || false, 10000);
      return `${n} profile(s)`;
    });

    await step('Connection: Log out', async () => {
      need('POST /api/logout', 'GET /api/connection');
      await nav('connection');
      await page.locator(tid('logout-button')).click();
      await confirmDialog();
      await waitFor('logged out message', async () => {
        const t = await text('#login-msg');
        if (/\[.*HTTP/.test(t)) throw new Error(t);
        return /Logged out/.test(t);
      }, 10000);
      const st = await waitFor('state not ok', async () => {
        const s = await page.locator('#conn-state').getAttribute('data-state');
        return s && s !== 'ok' ? s : false;
      }, 10000);
      await nav('status');
      const auth = await waitFor('status auth not ok', async () => {
        const s = await page.locator(tid('auth-state')).getAttribute('data-state');
        return s && s !== 'ok' ? s : false;
      }, 10000);
      const help = await text('#auth-help');
      assert(/log in/i.test(help), `no what-to-do text for ${auth}: ${help}`);
      const badge = await waitFor('Waiting for login badge', async () => ((await text(tid('paused'))) === 'Waiting for login' ? 'Waiting for login' : false), 10000);
      assert(await page.locator(tid('upload-now')).isDisabled(), 'Upload now enabled without a login');
      const hint = await text(tid('upload-hint'));
      assert(/Log in with Amazon first/.test(hint), `upload hint without a login: ${hint}`);
      assert(/after you log in/.test(await text('#next-upload')), 'next upload does not wait for the login');
      return `connection ${st}, status ${auth}: "${help}"`;
    });

    await step('Connection: Log in with Amazon through the sandbox', async () => {
      need('POST /api/login/start', 'GET /api/login/status', 'GET /api/login/callback', 'GET /api/connection');
      await nav('connection');
      await waitFor('connection loaded', async () => (await page.locator('#conn-state').getAttribute('data-state')) || false, 10000);
      if (await page.locator('#client-fields').isVisible()) {
        await page.fill('#client-id-input', SB_CLIENT_ID);
        await page.fill('#client-secret-input', SB_CLIENT_SECRET);
      }
      const popupP = context.waitForEvent('page', { timeout: 15000 }).catch(() => null);
      await page.locator(tid('login-button')).click();
      const popup = await popupP;
      let callback = '';
      if (popup) {
        await popup.waitForURL(/\/api\/login\/callback/, { timeout: 15000 }).catch(() => {});
        await popup.waitForLoadState('load').catch(() => {});
        callback = `${popup.url().replace(/code=[^&]+/, 'code=…').replace(/state=[^&]+/, 'state=…')}: ${((await popup.textContent('body').catch(() => '')) || '').trim().slice(0, 120)}`;
        await popup.screenshot({ path: path.join(ART, 'login-callback.png') }).catch(() => {});
      }
      const msg = await waitFor('login result', async () => {
        const t = await text('#login-msg');
        if (/failed|\[.*\]/i.test(t) && !/Waiting|Starting/.test(t)) throw new Error(`${t} (callback page: ${callback})`);
        return /Logged in/.test(t) ? t : false;
      }, 30000);
      if (popup) await popup.close().catch(() => {});
      await waitFor('connection state ok', async () => (await page.locator('#conn-state').getAttribute('data-state')) === 'ok', 10000);
      await nav('status');
      await waitFor('status auth ok', async () => (await page.locator(tid('auth-state')).getAttribute('data-state')) === 'ok', 10000);
      await nav('connection');
      await waitFor('profiles after login', async () => (await page.locator(tid('profile-row')).count()) > 0, 10000);
      return `${msg}; popup: ${popup ? callback : 'none opened'}`;
    });

    await step('Connection: first login asks for client id + secret (GET /api/connection patched to clientId null)', async () => {
      need('POST /api/login/start', 'POST /api/logout', 'GET /api/connection');
      // A fresh install has no client id stored; simulate that view of the connection and check the
      // form asks for both values and sends them with /api/login/start (the real agent then logs in).
      await page.route('**/api/connection', async (route) => {
        // A request still in flight when the route is removed is already handled: ignore it.
        try {
          const res = await route.fetch();
          const json = await res.json();
          await route.fulfill({ response: res, json: { ...json, clientId: null } });
        } catch {
          /* unrouted meanwhile */
        }
      });
      let startBody = null;
      const onReq = (r) => {
        if (r.url().endsWith('/api/login/start')) startBody = r.postDataJSON();
      };
      page.on('request', onReq);
      try {
        await nav('status');
        await nav('connection');
        await page.locator('#client-fields').waitFor({ state: 'visible', timeout: 10000 });
        assert(await page.locator('label[for="client-id-input"]').isVisible(), 'client id label not visible');
        // Without the secret the form refuses to start.
        await page.fill('#client-id-input', SB_CLIENT_ID);
        await page.fill('#client-secret-input', '');
        await page.locator(tid('login-button')).click();
        const refusal = await text('#login-msg');
        assert(/client secret/.test(refusal) && startBody === null, `no refusal without a secret: ${refusal}`);
        await page.fill('#client-secret-input', SB_CLIENT_SECRET);
        const popupP = context.waitForEvent('page', { timeout: 15000 }).catch(() => null);
        await page.locator(tid('login-button')).click();
        const popup = await popupP;
        await waitFor('login result', async () => {
          const t = await text('#login-msg');
          if (/failed|\[.*\]/i.test(t)) throw new Error(t);
          return /Logged in/.test(t);
        }, 30000);
        if (popup) await popup.close().catch(() => {});
        assert(startBody && startBody.clientId === SB_CLIENT_ID && startBody.clientSecret === SB_CLIENT_SECRET,
          `login/start body lacks the client id/secret: ${JSON.stringify(startBody && { ...startBody, clientSecret: startBody.clientSecret ? '…' : undefined })}`);
        assert((await page.inputValue('#client-secret-input')) === '', 'the secret stays in the form after login/start');
      } finally {
        page.off('request', onReq);
        await page.unroute('**/api/connection');
      }
      await nav('status');
      await waitFor('status auth ok', async () => (await page.locator(tid('auth-state')).getAttribute('data-state')) === 'ok', 10000);
    });

    // 6. Settings.
    await step('Settings: load, validate, save interval', async () => {
      need('GET /api/settings');
      await nav('settings');
      await waitFor('settings loaded', async () => (await page.inputValue('#s-interval')) !== '', 10000);
      await page.fill('#s-interval', '5');
      await page.locator('#settings-save').click();
      const err = await text('#s-interval-err');
      assert(err, 'no error for interval 5');
      await page.fill('#s-interval', '120');
      await page.locator('#settings-save').click();
      await waitFor('saved', async () => {
        const t = await text('#settings-msg');
        if (/\[.*HTTP/.test(t)) throw new Error(t);
        return /Saved/.test(t);
      }, 10000);
      const s = await agentApi('GET', '/api/settings');
      assert(s.json && s.json.scheduleIntervalSecs === 120, `settings after save: ${s.text}`);
    });

    await step('Settings: rotate the write key (old key refused, new accepted)', async () => {
      need('POST /api/settings/write-key/rotate');
      await nav('settings');
      await page.locator('#wk-rotate').click();
      await confirmDialog();
      const newKey = await waitFor('new write key shown', async () => {
        const m = await text('#wk-msg');
        if (/\[.*HTTP/.test(m)) throw new Error(m);
        const k = await text('#wk-new-value');
        return /^[0-9a-f]{32}$/.test(k || '') ? k : false;
      }, 10000);
      const oldSt = await segment([entered('vip_browser', 'user_after_rotate', 'a@example.com')], WRITE_KEY);
      const newSt = await segment([entered('vip_browser', 'user_after_rotate', 'a@example.com')], newKey);
      WRITE_KEY = newKey;
      assert(oldSt === 401 && newSt === 200, `old key → ${oldSt}, new key → ${newSt}`);
    });

    // 7. Look and accessibility basics.
    await step('keyboard navigation and dark mode', async () => {
      await page.goto(`${base}/#/status`);
      await page.locator(tid('nav-status')).focus();
      await page.keyboard.press('Tab');
      await page.keyboard.press('Enter');
      await page.waitForFunction(() => location.hash === '#/audiences');
      await page.emulateMedia({ colorScheme: 'dark' });
      await page.locator(tid('nav-status')).click();
      const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      assert(bg !== 'rgb(246, 247, 249)', `dark mode background unchanged: ${bg}`);
      await page.screenshot({ path: path.join(ART, 'status-dark.png'), fullPage: true });
      await page.emulateMedia({ colorScheme: 'light' });
    });

    await step('narrow tray window (420 px): no page-wide horizontal scrolling', async () => {
      await page.setViewportSize({ width: 420, height: 800 });
      const wide = [];
      try {
        for (const v of ['status', 'audiences', 'dead-letters', 'connection', 'settings']) {
          await nav(v);
          const over = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
          if (over > 1) wide.push(`${v} +${over}px`);
          await page.screenshot({ path: path.join(ART, `narrow-${v}.png`), fullPage: true });
          if (v === 'dead-letters' || v === 'status') {
            const sel = v === 'status' ? tid('audience-row') : tid('dead-letter-row');
            const disp = await page.locator(sel).first().evaluate((r) => getComputedStyle(r).display).catch(() => 'none');
            if (disp !== 'block') wide.push(`${v} rows are not stacked cards (display ${disp})`);
          }
        }
      } finally {
        await page.setViewportSize({ width: 1280, height: 900 });
      }
      assert(wide.length === 0, `views wider than the window: ${wide.join(', ')}`);
    });

    await step('polling: about one /api/status request per 2 s, no other requests while idle', async () => {
      await nav('status');
      await new Promise((r) => setTimeout(r, 1000));
      const seen = [];
      const onReq = (r) => {
        const u = new URL(r.url());
        if (u.pathname.startsWith('/api/')) seen.push(u.pathname);
      };
      page.on('request', onReq);
      await new Promise((r) => setTimeout(r, 10000));
      page.off('request', onReq);
      const status = seen.filter((p) => p === '/api/status').length;
      const other = seen.filter((p) => p !== '/api/status');
      assert(status >= 3 && status <= 6, `${status} /api/status requests in 10 s`);
      assert(other.length === 0, `unexpected requests while idle: ${other.join(', ')}`);
      return `${status} status requests in 10 s`;
    });

    await step('no console errors or CSP violations', async () => {
      const bad = consoleProblems.filter((m) => !/status of 404/.test(m));
      assert(bad.length === 0, bad.slice(0, 5).join(' | '));
      return consoleProblems.length ? `${consoleProblems.length} console error(s) from missing routes (404), ignored` : '';
    });
  } finally {
    await context.close().catch(() => {});
    if (proxy) proxy.close();
    await fsp.rm(userDataDir, { recursive: true, force: true }).catch(() => {});
  }

  const summary = {
    at: new Date().toISOString(),
    servedBy,
    routes: routeStatus,
    results,
  };
  await fsp.writeFile(path.join(ART, 'summary.json'), JSON.stringify(summary, null, 2));
  const failed = results.filter((r) => r.status === 'fail');
  const passed = results.filter((r) => r.status === 'pass');
  console.log(`\n${passed.length} passed, ${failed.length} failed, ${results.length - passed.length - failed.length} skipped; screenshots and summary.json in ${ART}`);
  process.exitCode = failed.length ? 1 : 0;
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
