#!/usr/bin/env node
// Drives the official SAM 2 demo front end (demo/frontend @ 2b90b9f, built by
// scripts/official_frontend.sh) in a real headless Chromium through CDP (puppeteer-core),
// against a running `sam2-tui serve`, as a user would: load the default video, click an
// object and see its mask drawn on the canvas, add a second object, track both to the
// last frame, remove the second. (The demo offers "Add another object" only before the
// first tracking, hence that order.) Used by tests/serve_browser.rs.
//
//   node drive.cjs --app DIST --api URL --out DIR --driver NODE_MODULES [--chromium PATH]
//                  [--click X,Y] [--click2 X,Y]   (points as fractions of the video)
//
// Leaves in DIR: NN-<step>.png (screenshots), network.json (every backend answer the page
// got: the GraphQL operations with their variables and results, each propagate_in_video
// stream split into its parts) and steps.json (what was seen at each step). Exit 0 when
// every step's check held, 1 with one line `FAILED <step>: <why>` otherwise.
'use strict';
const fs = require('fs');
const http = require('http');
const path = require('path');
const {createRequire} = require('module');

function parseArgs(argv) {
  const a = {chromium: '/usr/bin/chromium', click: '0.30,0.40', click2: '0.75,0.70'};
  for (let i = 0; i < argv.length; i += 2) a[argv[i].replace(/^--/, '')] = argv[i + 1];
  for (const k of ['app', 'api', 'out', 'driver']) if (!a[k]) throw new Error(`--${k} is required`);
  return a;
}

const args = parseArgs(process.argv.slice(2));
const puppeteer = createRequire(path.join(path.resolve(args.driver), 'x.js'))('puppeteer-core');
fs.mkdirSync(args.out, {recursive: true});
const steps = [];
let shot = 0;
// How long one step may wait for what it expects (the model runs on a shared CPU).
const STEP_MS = 180_000;

// The built front end, served as it is (any static server does; this one is in-process
// so nothing outlives the run). A path without an extension is a route of the app and
// gets index.html; a missing file is a 404, as from the demo's nginx.
function serveStatic(root) {
  const types = {'.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.png': 'image/png',
    '.mp4': 'video/mp4', '.ttf': 'font/ttf', '.svg': 'image/svg+xml', '.json': 'application/json'};
  const server = http.createServer((req, res) => {
    const rel = path.normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname));
    let file = path.join(root, rel);
    if (path.extname(rel) === '' || rel === '/') file = path.join(root, 'index.html');
    if (!file.startsWith(root + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, {'Content-Type': types[path.extname(file)] || 'application/octet-stream'});
    fs.createReadStream(file).pipe(res);
  });
  return new Promise(resolve => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// multipart/x-savi-stream (boundary "frame"): the JSON body of every part.
function splitStream(buf) {
  const parts = [];
  let rest = buf;
  for (;;) {
    const headEnd = rest.indexOf('\r\n\r\n');
    if (headEnd < 0) break;
    const head = rest.subarray(0, headEnd).toString();
    const m = /Content-Length:\s*(\d+)/i.exec(head);
    if (!m) break;
    const start = headEnd + 4;
    const len = Number(m[1]);
    parts.push(JSON.parse(rest.subarray(start, start + len).toString()));
    rest = rest.subarray(start + len);
    while (rest.length > 0 && (rest[0] === 0x0d || rest[0] === 0x0a)) rest = rest.subarray(1);
  }
  return parts;
}

// Every answer from the backend, from the page and from its workers (the tracker runs in
// the video worker, so its fetches are the worker's): CDP Network events on each target.
class Recorder {
  constructor() {
    this.entries = [];
    this.waiters = [];
    // Loads other than the backend's that failed (the demo's CDN, say): for the log.
    this.otherFailures = [];
  }
  async attach(session) {
    const pending = new Map();
    const urls = new Map();
    session.on('Network.requestWillBeSent', e => {
      const u = e.request.url;
      urls.set(e.requestId, u);
      if (!u.startsWith(args.api) || e.request.method !== 'POST') return;
      pending.set(e.requestId, {url: u.slice(args.api.length), post: e.request.postData || null});
    });
    session.on('Network.responseReceived', e => {
      const p = pending.get(e.requestId);
      if (p) p.status = e.response.status;
    });
    session.on('Network.loadingFinished', async e => {
      const p = pending.get(e.requestId);
      if (!p) return;
      pending.delete(e.requestId);
      if (p.post == null) {
        // A worker's fetch body is not in requestWillBeSent: ask for it.
        p.post = await session.send('Network.getRequestPostData', {requestId: e.requestId}).then(r => r.postData, () => null);
      }
      let body;
      try {
        const r = await session.send('Network.getResponseBody', {requestId: e.requestId});
        body = Buffer.from(r.body, r.base64Encoded ? 'base64' : 'utf8');
      } catch (err) {
        body = Buffer.from(`(body not available: ${err.message})`);
      }
      this.add(p, body);
    });
    session.on('Network.loadingFailed', e => {
      if (!pending.has(e.requestId)) this.otherFailures.push(`${urls.get(e.requestId)}: ${e.errorText}`);
      const p = pending.get(e.requestId);
      if (!p) return;
      pending.delete(e.requestId);
      this.add({...p, failed: e.errorText}, Buffer.alloc(0));
    });
    await session.send('Network.enable', {maxTotalBufferSize: 200e6, maxResourceBufferSize: 100e6});
  }
  add(p, body) {
    const entry = {path: p.url, status: p.status ?? null};
    if (p.failed) entry.failed = p.failed;
    if (p.url === '/graphql') {
      const req = JSON.parse(p.post || '{}');
      entry.operation = /(?:mutation|query)\s+(\w+)/.exec(req.query || '')?.[1] ?? null;
      entry.variables = req.variables ?? null;
      try {
        entry.response = JSON.parse(body.toString());
      } catch {
        entry.response = body.toString();
      }
    } else if (p.url === '/propagate_in_video') {
      entry.request = JSON.parse(p.post || '{}');
      entry.parts = splitStream(body);
    } else {
      entry.response = body.toString().slice(0, 2000);
    }
    this.entries.push(entry);
    this.waiters = this.waiters.filter(w => !w(entry));
  }
  // The next answer (recorded from now on, or already) for which `pred` holds.
  next(pred, what, from = this.entries.length) {
    const seen = this.entries.slice(from).find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within ${STEP_MS / 1000} s`)), STEP_MS);
      this.waiters.push(e => {
        if (!pred(e)) return false;
        clearTimeout(timer);
        resolve(e);
        return true;
      });
    });
  }
}

const isOp = name => e => e.operation === name;

async function main() {
  const app = await serveStatic(path.resolve(args.app));
  const appUrl = `http://127.0.0.1:${app.address().port}/`;
  const profile = fs.mkdtempSync(path.join(args.out, '.chromium-profile-'));
  const browser = await puppeteer.launch({
    executablePath: args.chromium,
    headless: true,
    userDataDir: profile,
    // Root in a container: no sandbox. No GPU here: WebGL2 (the demo's effects) on
    // SwiftShader. Nothing outside loopback can be reached: no background networking.
    args: ['--no-sandbox', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--disable-quic',
      '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--window-size=1280,900'],
    defaultViewport: {width: 1280, height: 900},
  });
  const recorder = new Recorder();
  const consoleLines = [];
  let failure = null;
  try {
    const page = await browser.newPage();
    page.on('console', m => consoleLines.push(`[${m.type()}] ${m.text()}`));
    page.on('pageerror', e => consoleLines.push(`[pageerror] ${e.stack || e.message}`));
    // Workers (the video worker runs the tracker) are targets of their own.
    const cdp = await page.createCDPSession();
    await cdp.send('Target.setAutoAttach', {autoAttach: true, waitForDebuggerOnStart: true, flatten: true});
    cdp.on('Target.attachedToTarget', async e => {
      const s = cdp.connection().session(e.sessionId);
      try {
        await recorder.attach(s);
      } finally {
        await s.send('Runtime.runIfWaitingForDebugger').catch(() => {});
      }
    });
    await recorder.attach(cdp);
    // The front end keeps its endpoints in localStorage (src/settings/SettingsReducer.ts):
    // point both at the server under test before any of its code runs.
    const settings = JSON.stringify({videoAPIEndpoint: args.api, inferenceAPIEndpoint: args.api});
    await page.evaluateOnNewDocument(s => localStorage.setItem('SAM2_SETTINGS_KEY', s), settings);

    const screenshot = async (name, el) => {
      shot += 1;
      const file = path.join(args.out, `${String(shot).padStart(2, '0')}-${name}.png`);
      const buf = await (el ? el.screenshot({path: file}) : page.screenshot({path: file}));
      return {file, dataUrl: `data:image/png;base64,${Buffer.from(buf).toString('base64')}`};
    };
    // Fraction of pixels of two same-size PNGs that differ by more than a few levels,
    // computed in the page (a 2D canvas decodes them): no image library needed.
    const differing = (a, b) =>
      page.evaluate(
        async (a, b) => {
          const load = src => new Promise((res, rej) => { const i = new Image(); i.onload = () => res(i); i.onerror = rej; i.src = src; });
          const [ia, ib] = [await load(a), await load(b)];
          const px = img => { const c = document.createElement('canvas'); c.width = img.width; c.height = img.height; const x = c.getContext('2d'); x.drawImage(img, 0, 0); return x.getImageData(0, 0, c.width, c.height).data; };
          const [da, db] = [px(ia), px(ib)];
          if (da.length !== db.length) return 1;
          let n = 0;
          for (let i = 0; i < da.length; i += 4) {
            if (Math.abs(da[i] - db[i]) + Math.abs(da[i + 1] - db[i + 1]) + Math.abs(da[i + 2] - db[i + 2]) > 24) n++;
          }
          return n / (da.length / 4);
        },
        a,
        b,
      );
    // Fraction of pixels unlike the top-left one (0: a blank canvas).
    const variety = a =>
      page.evaluate(async a => {
        const i = new Image();
        await new Promise((res, rej) => { i.onload = res; i.onerror = rej; i.src = a; });
        const c = document.createElement('canvas'); c.width = i.width; c.height = i.height;
        const x = c.getContext('2d'); x.drawImage(i, 0, 0);
        const d = x.getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let k = 0; k < d.length; k += 4) if (Math.abs(d[k] - d[0]) + Math.abs(d[k + 1] - d[1]) + Math.abs(d[k + 2] - d[2]) > 24) n++;
        return n / (d.length / 4);
      }, a);
    const step = async (name, fn) => {
      const t0 = Date.now();
      try {
        const seen = await fn();
        steps.push({step: name, ok: true, seconds: (Date.now() - t0) / 1000, ...seen});
      } catch (err) {
        steps.push({step: name, ok: false, seconds: (Date.now() - t0) / 1000, error: err.message});
        await screenshot(`${name}-failed`).catch(() => {});
        throw Object.assign(err, {step: name});
      }
    };
    const clickAt = async (canvas, [fx, fy]) => {
      const box = await canvas.boundingBox();
      await page.mouse.click(box.x + fx * box.width, box.y + fy * box.height);
    };
    const pointOf = s => s.split(',').map(Number);
    // Clicks the first visible element (in document order) whose own text is exactly
    // `text` (a button's label, an object's title): not a paragraph that quotes it.
    const clickByText = async text => {
      const el = await page.waitForFunction(
        t =>
          [...document.querySelectorAll('body *')].find(e => {
            if (e.innerText?.trim() !== t) return false;
            const r = e.getBoundingClientRect();
            return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== 'hidden';
          }),
        {timeout: STEP_MS},
        text,
      );
      await el.click();
    };
    // Until the canvas differs from `before` on more than `min` of its pixels.
    const untilDrawn = async (canvas, before, min) => {
      const t0 = Date.now();
      for (;;) {
        const now = await screenshot('poll', canvas);
        const d = await differing(before.dataUrl, now.dataUrl);
        fs.unlinkSync(now.file);
        shot -= 1;
        if (d > min) return d;
        if (Date.now() - t0 > STEP_MS) throw new Error(`the canvas did not change (${(d * 100).toFixed(2)} % of pixels)`);
        await new Promise(r => setTimeout(r, 250)); // a frame or so of the page's rendering
      }
    };

    let canvas;
    let bare;
    let session;
    await step('load-default-video', async () => {
      const started = recorder.next(isOp('SAM2ModelStartSessionMutation'), 'startSession');
      await page.goto(appUrl, {waitUntil: 'load'});
      const s = await started;
      if (s.response?.errors) throw new Error(`startSession: ${JSON.stringify(s.response.errors)}`);
      session = s.response.data.startSession.sessionId;
      // The video's canvas (Video.tsx) is the page's first; the filmstrip's comes after.
      canvas = await page.waitForSelector('canvas', {timeout: STEP_MS});
      // The first frame is there when the canvas is no longer one colour.
      const t0 = Date.now();
      for (;;) {
        bare = await screenshot('frame0', canvas);
        const v = await variety(bare.dataUrl);
        if (v > 0.1) break;
        fs.unlinkSync(bare.file);
        shot -= 1;
        if (Date.now() - t0 > STEP_MS) throw new Error('the first frame was never drawn');
        await new Promise(r => setTimeout(r, 250)); // a frame or so of the page's rendering
      }
      return {session, video: s.variables?.input?.path ?? null};
    });

    await step('click-object', async () => {
      const answer = recorder.next(isOp('SAM2ModelAddNewPointsMutation'), 'addPoints');
      await clickAt(canvas, pointOf(args.click));
      const a = await answer;
      if (a.response?.errors) throw new Error(`addPoints: ${JSON.stringify(a.response.errors)}`);
      await untilDrawn(canvas, bare, 0.005);
      const masked = await screenshot('mask', canvas);
      const d = await differing(bare.dataUrl, masked.dataUrl);
      return {objects: a.response.data.addPoints.rleMaskList.map(m => m.objectId), canvas_changed: d};
    });

    await step('add-second-object', async () => {
      await clickByText('Add another object');
      const answer = recorder.next(e => e.operation === 'SAM2ModelAddNewPointsMutation' && e.variables?.input?.objectId === 1, 'addPoints for the second object');
      const before = await screenshot('second-before', canvas);
      await clickAt(canvas, pointOf(args.click2));
      const a = await answer;
      if (a.response?.errors) throw new Error(`addPoints: ${JSON.stringify(a.response.errors)}`);
      // More than the click's marker (~0.1 % of the canvas) alone would change.
      await untilDrawn(canvas, before, 0.005);
      const masked = await screenshot('second-object', canvas);
      const d = await differing(before.dataUrl, masked.dataUrl);
      return {objects: a.response.data.addPoints.rleMaskList.map(m => m.objectId), canvas_changed: d};
    });

    await step('track-to-last-frame', async () => {
      const streamed = recorder.next(e => e.path === '/propagate_in_video', 'propagate_in_video stream');
      await clickByText('Track objects');
      const s = await streamed;
      if (s.failed) throw new Error(`the stream failed: ${s.failed}`);
      // The page took the end of the stream: its button no longer offers to cancel it.
      await page.waitForFunction(() => !document.body.innerText.includes('Cancel Tracking'), {timeout: STEP_MS});
      const idx = s.parts.map(p => p.frame_index);
      await screenshot('tracked', canvas);
      // The caller knows the clip's length and checks these.
      return {parts: s.parts.length, frames: new Set(idx).size, first: idx[0], last: Math.max(...idx)};
    });

    await step('remove-second-object', async () => {
      // An object's trash button ("Clear") shows while another one is selected: select
      // the first, then clear the second.
      await clickByText('Object 1');
      const answer = recorder.next(isOp('SAM2ModelRemoveObjectMutation'), 'removeObject');
      await clickByText('Clear');
      const r = await answer;
      if (r.response?.errors) throw new Error(`removeObject: ${JSON.stringify(r.response.errors)}`);
      await page.waitForFunction(() => !document.body.innerText.includes('Object 2'), {timeout: STEP_MS});
      await screenshot('removed', canvas);
      return {removed: r.variables?.input?.objectId ?? null};
    });
    await screenshot('page');
  } catch (err) {
    failure = `FAILED ${err.step ?? 'setup'}: ${err.message}`;
  } finally {
    fs.writeFileSync(path.join(args.out, 'network.json'), JSON.stringify(recorder.entries, null, 1));
    fs.writeFileSync(path.join(args.out, 'steps.json'), JSON.stringify(steps, null, 1));
    const failed = recorder.otherFailures.map(f => `[load failed] ${f}`);
    fs.writeFileSync(path.join(args.out, 'console.log'), [...consoleLines, ...failed].join('\n') + '\n');
    await browser.close();
    app.close();
    fs.rmSync(profile, {recursive: true, force: true});
  }
  for (const s of steps) console.log(`${s.ok ? 'ok    ' : 'FAILED'} ${s.step} (${s.seconds.toFixed(1)} s)`);
  if (failure) {
    console.log(failure);
    process.exit(1);
  }
}

main().catch(err => {
  console.log(`FAILED setup: ${err.stack || err}`);
  process.exit(1);
});
