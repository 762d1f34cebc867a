// The dashboard in a real browser against a real server: Debian's chromium (headless) driven by
// playwright-core. Starts ringfence-server with --web-dir, seeds rings, a policy and two
// rollouts through the API, simulates a few agents over the agent API so the first rollout
// advances, then signs in, watches the stage counters change, aborts the second rollout through
// its button and the confirmation dialog, checks the charts, the live timeline and a strata stage's
// per-stratum coverage, and saves
// screenshots under the build dir. Prints "web: N passed, M failed"; exits non-zero on failure.
//
//   RINGFENCE_BIN_DIR=build node tests/web/dashboard.test.mjs
// Env: RINGFENCE_BIN_DIR (required), RINGFENCE_WEB_DIR (default: <repo>/web),
//      RINGFENCE_ARTIFACT_DIR (default: $RINGFENCE_BIN_DIR/test-artifacts/web),
//      CHROMIUM (default: /usr/bin/chromium).
// Exit 77 (CTest: skipped) when the browser or playwright-core is not installed
// (scripts/install-web-test-deps.sh installs both; nothing here downloads a browser).

import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');
const binDir = process.env.RINGFENCE_BIN_DIR;
const webDir = process.env.RINGFENCE_WEB_DIR || join(repo, 'web');
const artifacts = process.env.RINGFENCE_ARTIFACT_DIR || join(binDir || '.', 'test-artifacts', 'web');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const ADMIN = 'web-test-admin-token-0123456789';
const SKIP = 1; // a missing dependency is a failure, never a skip: scripts/test.sh installs them

const results = [];
let server;
let browser;
let page;
let dataDir;
let userDataDir;
let agentsTimer;

function check(name, ok, detail = '') {
  results.push({ name, ok });
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${!ok && detail ? `: ${detail}` : ''}`);
  if (!ok) throw new Error(`${name} ${detail}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, fn, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

// ---------------------------------------------------------------- the server

function startServer() {
  dataDir = mkdtempSync(join(tmpdir(), 'ringfence-web-test-'));
  const bin = join(binDir, 'server', 'ringfence-server');
  const child = spawn(bin, [
    '--data-dir', join(dataDir, 'data'), '--listen', '127.0.0.1:0', '--web-dir', webDir,
    '--no-access-log', '--healthy-after-s', '1', '--exposed-heartbeat-s', '1',
    '--evidence-min-age-s', '0',
    // Polls every second, long polls of at most 2 s: a host that heartbeats but never polls is
    // "not taking updates" after 3 x 2 + 5 = 11 s (the strata part below shows it).
    '--poll-s', '1', '--max-long-poll-s', '2',
  ], { env: { ...process.env, RINGFENCE_ADMIN_TOKEN: ADMIN }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  return new Promise((resolvePort, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`server did not start: ${stderr}`)), 30000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on 127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolvePort({ child, base: `http://127.0.0.1:${m[1]}` });
      }
    });
    child.on('exit', (code) => reject(new Error(`server exited (${code}): ${stderr}`)));
  });
}

async function call(base, method, path, body, token = ADMIN, raw = false) {
  const headers = { Authorization: `Bearer ${token}` };
  let payload;
  if (raw) {
    headers['Content-Type'] = 'application/octet-stream';
    payload = body;
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const res = await fetch(base + path, { method, headers, body: payload });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// ---------------------------------------------------------------- simulated agents

// Hosts that enroll, poll their desired state, "apply" it at once and heartbeat healthily.
async function enrollHosts(base, n, os = 'linux') {
  const { token } = await call(base, 'POST', '/v1/enrollment-tokens', { name: `web-test-${os}` });
  const hosts = [];
  for (let i = 0; i < n; i++) {
    const hostId = randomUUID();
    const res = await fetch(`${base}/v1/agent/enroll`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ enrollment_token: token, host_id: hostId, labels: { os }, agent_version: 'web-test' }),
    });
    if (!res.ok) throw new Error(`enroll: HTTP ${res.status} ${await res.text()}`);
    const { credential } = await res.json();
    hosts.push({ hostId, credential, bootId: randomUUID(), started: Date.now(), running: {} });
  }
  return hosts;
}

async function agentRound(base, hosts) {
  await Promise.all(hosts.map(async (h) => {
    const auth = { Authorization: `Bearer ${h.credential}` };
    const res = await fetch(`${base}/v1/agent/desired`, { headers: auth });
    if (res.status === 200) {
      const desired = await res.json();
      for (const c of desired.channels) h.running[c.channel] = { version: c.version, state: 'active' };
    }
    const hb = { boot_id: h.bootId, uptime_s: Math.floor((Date.now() - h.started) / 1000) + 600, channels: h.running };
    await fetch(`${base}/v1/agent/heartbeat`, {
      method: 'POST',
      headers: { ...auth, 'Content-Type': 'application/json' },
      body: JSON.stringify(hb),
    });
  }));
}

// ---------------------------------------------------------------- the test

async function seed(base, hosts) {
  await call(base, 'POST', '/v1/rings', { name: 'canary', rank: 0, selector: { hosts: hosts.slice(0, 2).map((h) => h.hostId) }, description: 'first two hosts' });
  await call(base, 'POST', '/v1/rings', { name: 'fleet', rank: 1, selector: { buckets: [0, 10000] }, description: 'everyone else' });
  await call(base, 'POST', '/v1/policies', {
    name: 'quick',
    stages: [
      { ring: 'canary', percent: 100, bake_s: 3, min_hosts: 2 },
      { ring: 'fleet', percent: 100, bake_s: 3, min_hosts: 2 },
    ],
  });
  await call(base, 'POST', '/v1/policies', {
    name: 'slow',
    stages: [{ ring: 'canary', percent: 100, bake_s: 3600, min_hosts: 2 }, { ring: 'fleet', percent: 100, bake_s: 3600, min_hosts: 2 }],
  });
  const ids = {};
  for (const [channel, policy] of [['detections', 'quick'], ['sensor-config', 'slow']]) {
    await call(base, 'POST', '/v1/channels', { name: channel });
    const blob = await call(base, 'POST', '/v1/blobs', `{"channel":"${channel}","rules":[1,2,3]}`, ADMIN, true);
    const rel = await call(base, 'POST', `/v1/channels/${channel}/releases`, { sha256: blob.sha256, notes: 'web test' });
    const ro = await call(base, 'POST', '/v1/rollouts', { channel, version: rel.version, policy });
    await call(base, 'POST', `/v1/rollouts/${ro.id}/start`, {});
    ids[channel] = ro.id;
  }
  return ids;
}

const stageCount = (page, stage, what) =>
  page.locator(`#stages [data-stage="${stage}"] .count-${what}`).textContent().then((t) => Number(t));

async function main() {
  if (!binDir) {
    console.error('RINGFENCE_BIN_DIR is not set');
    return 2;
  }
  if (!existsSync(chromiumPath)) {
    console.log(`web: FAILED: missing dependency (no ${chromiumPath}; run scripts/install-web-test-deps.sh)`);
    return SKIP;
  }
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch {
    console.log('web: FAILED: missing dependency (playwright-core is not installed; run scripts/install-web-test-deps.sh)');
    return SKIP;
  }
  if (!existsSync(join(webDir, 'vendor', 'uPlot.iife.min.js'))) {
    console.log('web: FAILED: missing dependency (web/vendor is empty; run scripts/vendor-web.sh)');
    return SKIP;
  }
  mkdirSync(artifacts, { recursive: true });

  const started = await startServer();
  server = started.child;
  const { base } = started;
  const hosts = await enrollHosts(base, 6);
  const ids = await seed(base, hosts);
  check('seeded two running rollouts through the API', ids.detections > 0 && ids['sensor-config'] > 0);

  userDataDir = mkdtempSync(join(tmpdir(), 'ringfence-chromium-'));
  browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1360, height: 1100 },
  });
  page = browser.pages()[0] ?? (await browser.newPage());
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(String(err)));
  page.on('console', (msg) => { if (msg.type() === 'error') pageErrors.push(msg.text()); });

  // Sign in: a wrong token is refused with a visible error, the right one opens the dashboard.
  await page.goto(`${base}/`);
  await page.fill('#token', 'wrong-token');
  await page.click('#signin-btn');
  await page.waitForSelector('#error:not([hidden])');
  const refused = await page.textContent('#error-text');
  check('a wrong token shows the server\'s refusal', /refused/i.test(refused), refused);
  pageErrors.length = 0; // the 401 itself is logged by the browser

  await page.fill('#token', ADMIN);
  await page.click('#signin-btn');
  await page.waitForSelector('#app:not([hidden])');
  await page.waitForSelector('#rings tbody tr[data-ring="canary"]');
  const canaryHosts = await page.textContent('#rings tr[data-ring="canary"] td.num');
  const fleetHosts = await page.textContent('#rings tr[data-ring="fleet"] td.num');
  check('rings are listed with their sizes', canaryHosts === '2' && fleetHosts === '4', `${canaryHosts}/${fleetHosts}`);
  await until('the live event stream', () => page.textContent('#live').then((t) => t.includes('live')));

  // Watch the first rollout advance while the simulated agents apply it.
  await page.click(`#rollouts tr[data-rollout="${ids.detections}"]`);
  await page.waitForSelector(`#detail-title:has-text("#${ids.detections}")`);
  await page.waitForSelector('#stages [data-stage="0"]');
  const before = await stageCount(page, 0, 'applied');
  check('stage 0 starts with nothing applied', before === 0, String(before));
  agentsTimer = setInterval(() => agentRound(base, hosts).catch(() => {}), 400);
  await until('stage 0 counters to change', async () => (await stageCount(page, 0, 'exposed')) === 2 && (await stageCount(page, 0, 'applied')) === 2);
  check('stage 0 counters change live (exposed 2, applied 2)', true);
  await until('stage 0 hosts to turn healthy', async () => (await stageCount(page, 0, 'healthy')) === 2);
  await until('the rollout to advance to stage 1', async () => (await page.getAttribute('#stages [data-stage="1"]', 'class')).includes('current'));
  await until('stage 1 hosts to apply', async () => (await stageCount(page, 1, 'applied')) > 0);
  await page.screenshot({ path: join(artifacts, 'dashboard-advancing.png'), fullPage: true });
  check('the rollout advances to stage 1 and its counters change', true);
  const charts = await page.locator('#stages .stage-chart canvas').count();
  check('each stage has a uPlot chart canvas', charts >= 2, String(charts));
  await until('stage 0 chart to show the gate passed', () => page.textContent('#stages [data-stage="0"] .verdict').then((t) => t.includes('pass')));
  await until('the timeline to show the advance', () => page.locator('#events li[data-kind="rollout_advance"]').count());

  // Abort the second rollout through its button and the confirmation dialog.
  await page.click(`#rollouts tr[data-rollout="${ids['sensor-config']}"]`);
  await page.waitForSelector(`#detail-title:has-text("#${ids['sensor-config']}")`);
  await until('the abort button to be enabled', () => page.isEnabled('#action-abort'));
  await page.click('#action-abort');
  await page.waitForSelector('#confirm[open]');
  const question = await page.textContent('#confirm-title');
  check('abort asks for confirmation', question.includes(`Abort rollout #${ids['sensor-config']}`), question);
  // Cancelling changes nothing.
  await page.click('#confirm-cancel');
  await page.waitForSelector('#confirm', { state: 'hidden' });
  const still = await call(base, 'GET', `/v1/rollouts/${ids['sensor-config']}`);
  check('cancel leaves the rollout running', still.state === 'running', still.state);
  await page.click('#action-abort');
  await page.waitForSelector('#confirm[open]');
  await page.fill('#confirm-reason', 'bad sensor config (web test)');
  await page.click('#confirm-ok');
  await until('the detail to show aborted', () => page.textContent('#detail-state').then((t) => t.includes('aborted')));
  const aborted = await call(base, 'GET', `/v1/rollouts/${ids['sensor-config']}`);
  check('abort through the dialog aborts the rollout on the server', aborted.state === 'aborted' && aborted.halt_reason === 'bad sensor config (web test)', JSON.stringify(aborted.halt_reason));
  await until('the timeline to show the abort live', () => page.locator('#events li[data-kind="rollout_abort"]').count());
  await until('the rollouts list to show the abort', () => page.textContent(`#rollouts tr[data-rollout="${ids['sensor-config']}"]`).then((t) => t.includes('aborted')));
  check('the action buttons follow the state', (await page.isDisabled('#action-pause')) && (await page.isDisabled('#action-abort')));

  // Stratified coverage: a stage with strata on "os" over the whole fleet. The six simulated
  // agents (os=linux) take the release; two os=windows hosts heartbeat but never take it, so
  // the stage shows os=linux covered and os=windows missing, with their live hosts.
  const windows = await enrollHosts(base, 2, 'windows');
  const heartbeatOnly = () => Promise.all(windows.map((h) => fetch(`${base}/v1/agent/heartbeat`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${h.credential}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ boot_id: h.bootId, uptime_s: 600, channels: {} }),
  })));
  await heartbeatOnly();
  const windowsTimer = setInterval(() => heartbeatOnly().catch(() => {}), 400);
  try {
    await call(base, 'POST', '/v1/policies', {
      name: 'by-os',
      stages: [{ ring: '*', percent: 100, bake_s: 3600, min_hosts: 1,
        strata: { keys: ['os'], min_hosts_per_stratum: 1, min_stratum_size: 1 } }],
    });
    await call(base, 'POST', '/v1/channels', { name: 'strata-test' });
    const blob = await call(base, 'POST', '/v1/blobs', '{"channel":"strata-test","rules":[4]}', ADMIN, true);
    const rel = await call(base, 'POST', '/v1/channels/strata-test/releases', { sha256: blob.sha256, notes: 'strata' });
    const ro = await call(base, 'POST', '/v1/rollouts', { channel: 'strata-test', version: rel.version, policy: 'by-os' });
    await call(base, 'POST', `/v1/rollouts/${ro.id}/start`, {});
    await until('the rollouts list to show the strata rollout', () => page.locator(`#rollouts tr[data-rollout="${ro.id}"]`).count());
    await page.click(`#rollouts tr[data-rollout="${ro.id}"]`);
    await page.waitForSelector(`#detail-title:has-text("#${ro.id}")`);
    const strata = '#stages [data-stage="0"] .strata';
    await until('the stage to show os=linux covered', () => page.locator(`${strata} tr.covered[data-stratum="os=linux"]`).count());
    const row = async (name) => ({
      live: await page.textContent(`${strata} tr[data-stratum="${name}"] td.live-hosts`),
      healthy: await page.textContent(`${strata} tr[data-stratum="${name}"] td.healthy`),
      status: await page.textContent(`${strata} tr[data-stratum="${name}"] td.status`),
    });
    const linux = await row('os=linux');
    check('a stratum covered by the stage is shown with its live hosts', linux.live === '6' && linux.status === 'covered' && linux.healthy.endsWith('of 1'), JSON.stringify(linux));
    const win = await row('os=windows');
    check('a stratum the stage does not cover yet is shown as missing', win.live === '2' && win.healthy === '0 of 1' && win.status === 'missing', JSON.stringify(win));
    const summary = await page.textContent(`${strata} .strata-summary`);
    check('the strata summary counts the covered strata', summary.includes('1 of 2 qualifying strata covered'), summary);
    check('the strata keys are named', (await page.textContent(`${strata} .strata-head`)).includes('Strata by os'));
    // The two windows hosts heartbeat and never poll: after the poll bound the rollout says so.
    await until('the rollout to report hosts not taking updates',
      () => page.textContent('#detail-reason').then((t) => t.includes('2 live hosts not taking updates')), 30000);
    check('hosts that never poll are reported as not taking updates', true);
    await page.screenshot({ path: join(artifacts, 'dashboard-strata.png'), fullPage: true });
  } finally {
    clearInterval(windowsTimer);
  }

  // Back to the first rollout for the final picture: stages, charts, the timeline.
  await page.click(`#rollouts tr[data-rollout="${ids.detections}"]`);
  await page.waitForSelector(`#detail-title:has-text("#${ids.detections}")`);
  await sleep(1500); // a few more chart samples
  await page.screenshot({ path: join(artifacts, 'dashboard.png'), fullPage: true });
  check('no script errors in the page', pageErrors.length === 0, pageErrors.join(' | '));
  console.log(`screenshots: ${join(artifacts, 'dashboard.png')}, ${join(artifacts, 'dashboard-advancing.png')}`);
  return 0;
}

async function cleanup() {
  if (agentsTimer) clearInterval(agentsTimer);
  if (browser) await browser.close().catch(() => {});
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await Promise.race([new Promise((r) => server.once('exit', r)), sleep(5000)]);
    if (server.exitCode === null) server.kill('SIGKILL');
  }
  for (const dir of [dataDir, userDataDir]) if (dir) rmSync(dir, { recursive: true, force: true });
}

let code;
try {
  code = await main();
} catch (err) {
  if (!results.some((r) => !r.ok)) results.push({ name: 'unexpected error', ok: false });
  console.error(`web: ${err.stack || err}`);
  if (page) await page.screenshot({ path: join(artifacts, 'dashboard-failure.png'), fullPage: true }).catch(() => {});
  code = 1;
}
await cleanup();
if (code !== 2) {
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  console.log(`web: ${passed} passed, ${failed} failed`);
  if (failed > 0 && code === 0) code = 1;
}
process.exit(code);
