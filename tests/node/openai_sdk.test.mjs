// imagegate driven by the official `openai` npm SDK exactly as a customer would use it: only
// baseURL and apiKey point at imagegate. Starts its own server (env IMAGEGATE_BIN, default
// ../../build/debug/imagegate) on a free port with a temporary data dir.
//
//   cd tests/node && npm ci && IMAGEGATE_BIN=/abs/path/imagegate node --test

import { after, before, describe, it } from 'node:test';
import { File as BufferFile } from 'node:buffer';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import OpenAI, { toFile } from 'openai';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.resolve(HERE, process.env.IMAGEGATE_BIN || '../../build/debug/imagegate');
const START_TIMEOUT_MS = 30_000;
const CALL_TIMEOUT_MS = 120_000;
const TEST_TIMEOUT_MS = 180_000;
const SANITIZER = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:'];

// ---- a minimal PNG encoder / header reader ---------------------------------------------------

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(tag, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(tag, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}
/** An RGB (or RGBA with a transparent left half) PNG of the given size. */
function makePng(width, height, { rgba = false, seed = 0 } = {}) {
  const channels = rgba ? 4 : 3;
  const row = Buffer.alloc(1 + width * channels);
  for (let x = 0; x < width; x++) {
    const o = 1 + x * channels;
    row[o] = (seed * 67 + 40) & 255;
    row[o + 1] = (seed * 131 + 80) & 255;
    row[o + 2] = (seed * 29 + 160) & 255;
    if (rgba) row[o + 3] = x < width / 2 ? 0 : 255;
  }
  const raw = Buffer.concat(Array.from({ length: height }, () => row));
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = rgba ? 6 : 2;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}
function pngSize(buf) {
  assert.equal(buf.subarray(0, 8).toString('latin1'), '\x89PNG\r\n\x1a\n', 'not a PNG');
  assert.equal(buf.subarray(12, 16).toString('latin1'), 'IHDR');
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
}
function b64Size(b64) {
  assert.ok(typeof b64 === 'string' && b64.length > 0, 'empty b64_json');
  return pngSize(Buffer.from(b64, 'base64'));
}

// ---- the server --------------------------------------------------------------------------------

function hermeticEnv(dataDir) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('IMAGEGATE_')) env[k] = v;
  env.IMAGEGATE_DATA_DIR = dataDir;
  env.IMAGEGATE_LISTEN = '127.0.0.1:0';
  return env;
}

function startServer(dataDir) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['serve'], { env: hermeticEnv(dataDir), stdio: ['ignore', 'pipe', 'pipe'] });
    const state = { child, stdout: '', stderr: '', url: null, key: null };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server did not start within ${START_TIMEOUT_MS} ms\n${state.stdout}\n${state.stderr}`));
    }, START_TIMEOUT_MS);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('exit', (code) => {
      if (!state.url) {
        clearTimeout(timer);
        reject(new Error(`server exited with ${code}\n${state.stdout}\n${state.stderr}`));
      }
    });
    child.stderr.on('data', (d) => { state.stderr += d.toString(); });
    child.stdout.on('data', (d) => {
      state.stdout += d.toString();
      if (state.url) return;
      const k = state.stdout.match(/^ {4}API key: {2}(sk-\S+) {2}\(/m);
      const m = state.stdout.match(/^imagegate listening on (http:\/\/127\.0\.0\.1:\d+) /m);
      if (k) state.key = k[1];
      if (m) {
        clearTimeout(timer);
        state.url = m[1];
        if (!state.key) reject(new Error(`no bootstrap key in the banner:\n${state.stdout}`));
        else resolve(state);
      }
    });
  });
}

function stopServer(state) {
  return new Promise((resolve) => {
    if (!state || state.child.exitCode !== null || state.child.signalCode !== null) return resolve();
    const timer = setTimeout(() => state.child.kill('SIGKILL'), 15_000);
    state.child.on('exit', () => { clearTimeout(timer); resolve(); });
    state.child.kill('SIGTERM');
  });
}

function cli(dataDir, ...args) {
  return new Promise((resolve, reject) => {
    execFile(BIN, args, { env: hermeticEnv(dataDir), timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`imagegate ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout.trim());
    });
  });
}

// ---- the tests ---------------------------------------------------------------------------------

describe('openai SDK against imagegate', { timeout: 15 * 60_000 }, () => {
  let dataDir;
  let server;
  let client;

  before(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), 'imagegate-node-'));
    server = await startServer(dataDir);
    process.on('exit', () => { try { server.child.kill('SIGKILL'); } catch { /* gone */ } });
    client = new OpenAI({ baseURL: server.url + '/v1', apiKey: server.key, timeout: CALL_TIMEOUT_MS, maxRetries: 0 });
  });

  after(async () => {
    await stopServer(server);
    const reports = (server?.stderr || '').split('\n').filter((l) => SANITIZER.some((m) => l.includes(m)));
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    assert.deepEqual(reports, [], 'sanitizer reported errors in the server');
  });

  it('images.generate with defaults', { timeout: TEST_TIMEOUT_MS }, async () => {
    const res = await client.images.generate({ model: 'gpt-image-2', prompt: 'a cat in a space helmet' });
    assert.equal(typeof res.created, 'number');
    assert.equal(res.data.length, 1);
    assert.deepEqual(b64Size(res.data[0].b64_json), { width: 1024, height: 1024 });
    assert.ok(res.data[0].url.startsWith(server.url + '/api/jobs/'), res.data[0].url);
    const img = Buffer.from(await (await fetch(res.data[0].url)).arrayBuffer());
    assert.deepEqual(img, Buffer.from(res.data[0].b64_json, 'base64'));
  });

  it('images.generate size 1536x1024, quality high, n 2', { timeout: TEST_TIMEOUT_MS }, async () => {
    const { data: res, response } = await client.images
      .generate({ model: 'gpt-image-2', prompt: 'two boats', size: '1536x1024', quality: 'high', n: 2 })
      .withResponse();
    assert.equal(res.data.length, 2);
    for (const d of res.data) assert.deepEqual(b64Size(d.b64_json), { width: 1536, height: 1024 });
    assert.equal(res.size, '1536x1024');
    assert.equal(response.headers.get('x-credits-charged'), '2');
  });

  it('images.generate streaming with 2 partial images', { timeout: TEST_TIMEOUT_MS }, async () => {
    const stream = await client.images.generate({
      model: 'gpt-image-2', prompt: 'a comet', stream: true, partial_images: 2, size: '1024x1024',
    });
    const types = [];
    let completed;
    for await (const ev of stream) {
      types.push(ev.type);
      if (ev.type === 'image_generation.partial_image') {
        assert.equal(ev.partial_image_index, types.length - 1);
        assert.ok(ev.b64_json.length > 0);
      }
      if (ev.type === 'image_generation.completed') completed = ev;
    }
    assert.deepEqual(types, ['image_generation.partial_image', 'image_generation.partial_image',
      'image_generation.completed']);
    assert.deepEqual(b64Size(completed.b64_json), { width: 1024, height: 1024 });
    assert.ok(completed.usage, 'completed event without usage');
  });

  it('images.edit with one file', { timeout: TEST_TIMEOUT_MS }, async () => {
    const image = await toFile(makePng(128, 128), 'cat.png', { type: 'image/png' });
    const res = await client.images.edit({ model: 'gpt-image-2', image, prompt: 'add a hat', size: '1024x1024' });
    assert.equal(res.data.length, 1);
    assert.deepEqual(b64Size(res.data[0].b64_json), { width: 1024, height: 1024 });
  });

  it('images.edit with three files', { timeout: TEST_TIMEOUT_MS }, async () => {
    const image = await Promise.all([0, 1, 2].map((i) =>
      toFile(makePng(96, 96, { seed: i }), `item${i}.png`, { type: 'image/png' })));
    const res = await client.images.edit({
      model: 'gpt-image-2', image, prompt: 'a gift basket with all the items', size: '1536x1024',
    });
    assert.equal(res.data.length, 1);
    assert.deepEqual(b64Size(res.data[0].b64_json), { width: 1536, height: 1024 });
  });

  it('images.edit with a mask', { timeout: TEST_TIMEOUT_MS }, async () => {
    const image = await toFile(makePng(256, 256), 'room.png', { type: 'image/png' });
    const mask = await toFile(makePng(256, 256, { rgba: true }), 'mask.png', { type: 'image/png' });
    const res = await client.images.edit({
      model: 'gpt-image-2', image, mask, prompt: 'a window in the wall', size: '1024x1024',
      response_format: 'b64_json',
    });
    assert.equal(res.data.length, 1);
    assert.equal(res.data[0].url, undefined);
    assert.deepEqual(b64Size(res.data[0].b64_json), { width: 1024, height: 1024 });
  });

  it('images.edit streaming uses image_edit events', { timeout: TEST_TIMEOUT_MS }, async () => {
    const image = await toFile(makePng(128, 128), 'cat.png', { type: 'image/png' });
    const stream = await client.images.edit({
      model: 'gpt-image-2', image, prompt: 'make it blue', stream: true, partial_images: 2, size: '1024x1024',
    });
    const types = [];
    for await (const ev of stream) types.push(ev.type);
    assert.deepEqual(types, ['image_edit.partial_image', 'image_edit.partial_image', 'image_edit.completed']);
  });

  it('a bad key is an AuthenticationError with code invalid_api_key', { timeout: TEST_TIMEOUT_MS }, async () => {
    const bad = new OpenAI({ baseURL: server.url + '/v1', apiKey: 'sk-' + 'x'.repeat(43), maxRetries: 0 });
    await assert.rejects(bad.images.generate({ model: 'gpt-image-2', prompt: 'x' }), (err) => {
      assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 401);
      assert.equal(err.code, 'invalid_api_key');
      return true;
    });
  });

  it('no credits is a 402', { timeout: TEST_TIMEOUT_MS }, async () => {
    await cli(dataDir, 'users', 'add', 'broke@example.com', '--password', 'correct-horse-battery');
    const key = await cli(dataDir, 'keys', 'create', 'broke@example.com');
    assert.match(key, /^sk-[0-9A-Za-z]{43}$/);
    const broke = new OpenAI({ baseURL: server.url + '/v1', apiKey: key, maxRetries: 0 });
    await assert.rejects(broke.images.generate({ model: 'gpt-image-2', prompt: 'x' }), (err) => {
      assert.ok(err instanceof OpenAI.APIError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 402);
      assert.equal(err.code, 'insufficient_credits');
      return true;
    });
  });

  it('an unknown model is a NotFoundError', { timeout: TEST_TIMEOUT_MS }, async () => {
    await assert.rejects(client.images.generate({ model: 'no-such-model', prompt: 'x' }), (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.code, 'model_not_found');
      assert.equal(err.param, 'model');
      return true;
    });
  });

  it('an upload over the body limit is a 413, read by the SDK and not retried', { timeout: TEST_TIMEOUT_MS }, async () => {
    // The SDK sends the whole body without waiting for 100-continue: the 413 must still reach it
    // (no "Connection error." and no second and third upload by its retries).
    const retrying = new OpenAI({ baseURL: server.url + '/v1', apiKey: server.key, maxRetries: 2 });
    const before = (server.stderr.match(/early_error=payload_too_large/g) || []).length;
    const big = await toFile(Buffer.alloc(60 * 1024 * 1024, 1), 'big.png', { type: 'image/png' });
    await assert.rejects(retrying.images.edit({ model: 'gpt-image-2', image: big, prompt: 'x' }), (err) => {
      assert.ok(err instanceof OpenAI.APIError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 413);
      assert.equal(err.code, 'payload_too_large');
      return true;
    });
    await new Promise((r) => setTimeout(r, 300));  // the access log is batched
    const after = (server.stderr.match(/early_error=payload_too_large/g) || []).length;
    assert.equal(after - before, 1, 'the SDK uploaded the body more than once');
  });

  it('models.retrieve and images.edit with a nameless file', { timeout: TEST_TIMEOUT_MS }, async () => {
    const model = await client.models.retrieve('gpt-image-2');
    assert.equal(model.id, 'gpt-image-2');
    assert.equal(model.object, 'model');
    // A File with an empty name is sent with a Content-Type and no filename.
    const FileClass = globalThis.File ?? BufferFile;  // a global only from Node 20
    const image = new FileClass([makePng(64, 64)], '', { type: 'image/png' });
    const res = await client.images.edit({ model: 'gpt-image-2', image, prompt: 'x', size: '1024x1024' });
    assert.deepEqual(b64Size(res.data[0].b64_json), { width: 1024, height: 1024 });
  });

  it('a bad size is a BadRequestError naming the param', { timeout: TEST_TIMEOUT_MS }, async () => {
    await assert.rejects(client.images.generate({ model: 'gpt-image-2', prompt: 'x', size: '1000x1000' }),
      (err) => {
        assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
        assert.equal(err.param, 'size');
        return true;
      });
  });
});
