// The embedded store never loses an acknowledged write without saying so:
// each way its files can be damaged or lost is made on a copy of a real
// store directory, and the next open either recovers exactly what was
// acknowledged or refuses with KEDGE_STORE_CORRUPT naming the file, leaving
// every file as it found it.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openEmbeddedStore } from '../../federation/store/embedded';
import { COMMIT_FILE, encodeRecord, SNAPSHOT_FILE, WAL_FILE } from '../../federation/store/persist';
import { hasCode } from '../../proto/model/errors';
import { silentLogger } from '../../proto/model/log';
import { logCapture } from '../support/logs';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await fs.mkdtemp(join(tmpdir(), 'kedge-integrity-'));
  dirs.push(d);
  return d;
}
after(async () => {
  await Promise.all(dirs.map((d) => fs.rm(d, { recursive: true, force: true })));
});

const open = (dir: string, logger = silentLogger()) => openEmbeddedStore(dir, { logger, kedgeVersion: '0.1.0' });

/** Every file of the store directory, by name, to prove a refused open changed nothing. */
async function storeFiles(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const f of (await fs.readdir(join(dir, 'store'))).sort()) {
    if (f === 'LOCK') continue; // holds whoever opened last; not store data
    out[f] = (await fs.readFile(join(dir, 'store', f))).toString('base64');
  }
  return out;
}

async function copyDir(from: string): Promise<string> {
  const to = await tempDir();
  await fs.cp(from, to, { recursive: true });
  return to;
}

/**
 * A store whose snapshot holds 100 keys and whose log holds 60 more changes
 * made after it, closed cleanly: the shape a federation leaves behind.
 */
let golden: string;
const expected = new Map<string, string>();
before(async () => {
  golden = await tempDir();
  const s1 = await open(golden);
  await Promise.all(Array.from({ length: 100 }, (_, i) => s1.put(`/kedge/tokens/t${i}`, `unused-${i}`)));
  await s1.close();
  const s2 = await open(golden); // the open moved those into the snapshot
  for (let i = 0; i < 60; i++) await s2.put(`/kedge/tokens/t${i}`, `used-${i}`);
  await s2.close();
  for (let i = 0; i < 100; i++) expected.set(`/kedge/tokens/t${i}`, i < 60 ? `used-${i}` : `unused-${i}`);
});

async function assertRecovers(dir: string): Promise<void> {
  const s = await open(dir);
  const got = new Map((await s.list('/kedge/tokens/')).kvs.map((kv) => [kv.key, kv.value]));
  assert.deepEqual(got, expected);
  await s.close();
}

/** Opens a damaged copy and expects a refusal naming `file` and `detail`, with nothing written and the lock free. */
async function assertRefused(dir: string, file: string, detail: RegExp, code = 'KEDGE_STORE_CORRUPT'): Promise<Error> {
  const beforeFiles = await storeFiles(dir);
  let caught: unknown;
  await assert.rejects(open(dir), (err) => ((caught = err), true));
  const err = caught as Error;
  assert.ok(hasCode(err, code), `expected ${code}, got ${String(err)}`);
  assert.ok(err.message.includes(join(dir, 'store', file)), `message names ${file}: ${err.message}`);
  assert.match(err.message, detail);
  assert.deepEqual(await storeFiles(dir), beforeFiles, 'a refused open changes no file');
  // The lock was given back: a second try fails the same way, not with KEDGE_STORE_LOCKED.
  await assert.rejects(open(dir), (e) => hasCode(e, code));
  return err;
}

describe('embedded store integrity', () => {
  it('a clean copy recovers every acknowledged change', async () => {
    await assertRecovers(await copyDir(golden));
  });

  it('an emptied log is refused', async () => {
    const dir = await copyDir(golden);
    await fs.writeFile(join(dir, 'store', WAL_FILE), '');
    const err = await assertRefused(dir, WAL_FILE, /it is empty, but \d+ bytes of it were acknowledged/);
    assert.match(err.message, /restore/i, 'says what to do');
  });

  it('a deleted log is refused', async () => {
    const dir = await copyDir(golden);
    await fs.rm(join(dir, 'store', WAL_FILE));
    await assertRefused(dir, WAL_FILE, /it is gone/);
  });

  it('a log shortened by whole records is refused', async () => {
    const dir = await copyDir(golden);
    const file = join(dir, 'store', WAL_FILE);
    const lines = (await fs.readFile(file, 'utf8')).split('\n');
    await fs.writeFile(file, `${lines.slice(0, -4).join('\n')}\n`); // three whole records fewer
    await assertRefused(dir, WAL_FILE, /acknowledged changes were lost/);
  });

  it('a log cut in the middle of a record is refused', async () => {
    const dir = await copyDir(golden);
    const file = join(dir, 'store', WAL_FILE);
    const bytes = await fs.readFile(file);
    await fs.writeFile(file, bytes.subarray(0, Math.floor(bytes.length / 2)));
    await assertRefused(dir, WAL_FILE, /acknowledged/);
  });

  it('a flipped byte in an acknowledged log record is refused', async () => {
    const dir = await copyDir(golden);
    const file = join(dir, 'store', WAL_FILE);
    const bytes = await fs.readFile(file);
    const at = bytes.indexOf('used-7');
    bytes[at] = 'U'.charCodeAt(0);
    await fs.writeFile(file, bytes);
    await assertRefused(dir, WAL_FILE, /line \d+ fails its checksum/);
  });

  it('a deleted snapshot is refused', async () => {
    const dir = await copyDir(golden);
    await fs.rm(join(dir, 'store', SNAPSHOT_FILE));
    await assertRefused(dir, SNAPSHOT_FILE, /it is gone, but COMMIT records a snapshot at revision \d+/);
  });

  it('a flipped bit in the snapshot is refused', async () => {
    const dir = await copyDir(golden);
    const file = join(dir, 'store', SNAPSHOT_FILE);
    const bytes = await fs.readFile(file);
    const at = bytes.indexOf('unused-77');
    bytes[at + 7] = bytes[at + 7]! ^ 0x01; // '7' -> '6': still valid JSON, a different value
    await fs.writeFile(file, bytes);
    await assertRefused(dir, SNAPSHOT_FILE, /fails its checksum/);
  });

  it('an older snapshot put back is refused', async () => {
    const dir = await tempDir();
    const s1 = await open(dir);
    await s1.put('/k/a', '1');
    await s1.close();
    const old = await fs.readFile(join(dir, 'store', SNAPSHOT_FILE));
    const s2 = await open(dir);
    await s2.put('/k/a', '2');
    await s2.close();
    await (await open(dir)).close(); // a newer snapshot now holds '2'
    await fs.writeFile(join(dir, 'store', SNAPSHOT_FILE), old);
    await assertRefused(dir, SNAPSHOT_FILE, /older than the snapshot/);
  });

  it('a snapshot from another store is refused', async () => {
    const dir = await copyDir(golden);
    const other = await tempDir();
    const s = await open(other);
    await s.put('/kedge/tokens/t1', 'other');
    await s.close();
    await fs.copyFile(join(other, 'store', SNAPSHOT_FILE), join(dir, 'store', SNAPSHOT_FILE));
    await assertRefused(dir, SNAPSHOT_FILE, /belongs to store [0-9a-f]+, not to this store/);
  });

  it('a deleted COMMIT is refused', async () => {
    const dir = await copyDir(golden);
    await fs.rm(join(dir, 'store', COMMIT_FILE));
    await assertRefused(dir, COMMIT_FILE, /how much of the log was acknowledged is unknown/);
  });

  it('a COMMIT with both records damaged is refused', async () => {
    const dir = await copyDir(golden);
    await fs.writeFile(join(dir, 'store', COMMIT_FILE), Buffer.alloc(512, 'x'));
    await assertRefused(dir, COMMIT_FILE, /neither of its two records/);
  });

  it('a store of a newer format is refused with the format and version named', async () => {
    const dir = await copyDir(golden);
    const file = join(dir, 'store', COMMIT_FILE);
    const buf = Buffer.alloc(512, ' ');
    const line = encodeRecord({ format: 'kedge-store/v9', kedge: '9.0.0', store: 'abc', seq: 99, snapshot: 0, wal: 0 });
    buf.write(line, 0);
    buf.write(line, 256);
    await fs.writeFile(file, buf);
    const err = await assertRefused(dir, COMMIT_FILE, /kedge-store\/v9 \(written by Kedge 9\.0\.0\), newer than this Kedge reads/, 'KEDGE_STORE_VERSION');
    assert.match(err.message, /run the newer Kedge/);
  });

  it('drops a torn last write, reports it as unacknowledged, and keeps every acknowledged change', async () => {
    const dir = await copyDir(golden);
    await fs.appendFile(join(dir, 'store', WAL_FILE), '0badc0de {"op":"put","rev":9999,"ke'); // a crash mid-append
    const { logger, lines } = logCapture();
    const s = await open(dir, logger);
    await s.close();
    const warn = lines.find((l) => /never acknowledged/.test(l.msg));
    assert.ok(warn, 'the dropped tail is reported');
    assert.equal(warn.bytes, 35);
    assert.equal(warn.records, 0);
    await assertRecovers(dir);
  });

  it('drops a whole record written after the last acknowledgement (a crash before COMMIT)', async () => {
    const dir = await copyDir(golden);
    // A complete, valid record the writer appended but never acknowledged.
    await fs.appendFile(join(dir, 'store', WAL_FILE), encodeRecord({ op: 'put', rev: 100_000, key: '/kedge/tokens/t99', value: 'never-acked', create: 1 }));
    const { logger, lines } = logCapture();
    await (await open(dir, logger)).close();
    assert.equal(lines.find((l) => /never acknowledged/.test(l.msg))?.records, 1);
    await assertRecovers(dir);
  });

  it('falls back to the previous COMMIT record when the last one is torn, dropping only the unacknowledged batch', async () => {
    const dir = await copyDir(golden);
    const s = await open(dir);
    await s.put('/kedge/tokens/t99', 'last');
    await s.close();
    // Tear the newest slot: the other one says the log ended before '/kedge/tokens/t99' = 'last'.
    // (The close did not write a COMMIT record: the newest slot is the put's.)
    const file = join(dir, 'store', COMMIT_FILE);
    const buf = await fs.readFile(file);
    const seqs = [0, 1].map((i) => Number(/"seq":(\d+)/.exec(buf.subarray(i * 256, i * 256 + 256).toString())![1]));
    const newest = seqs[0]! > seqs[1]! ? 0 : 1;
    buf.fill('#', newest * 256 + 20, newest * 256 + 40);
    await fs.writeFile(file, buf);
    const { logger, lines } = logCapture();
    await (await open(dir, logger)).close();
    assert.equal(lines.find((l) => /never acknowledged/.test(l.msg))?.records, 1);
    await assertRecovers(dir);
  });

  it('reads a store of the earlier format (kedge-store/v1) and rewrites it', async () => {
    const dir = await tempDir();
    await fs.mkdir(join(dir, 'store'));
    const kvs = [{ key: '/kedge/admin/token', value: 'kedge-admin.x', createRevision: 1, modRevision: 1 }];
    await fs.writeFile(join(dir, 'store', SNAPSHOT_FILE), `${JSON.stringify({ format: 'kedge-store/v1', revision: 1, reserved: 1, kvs })}\n`);
    await fs.writeFile(join(dir, 'store', WAL_FILE), encodeRecord({ op: 'put', rev: 2, key: '/kedge/tokens/a', value: 'v', create: 2 }) + '0badc0de {"op":"pu');
    const s = await open(dir);
    assert.deepEqual((await s.list('/kedge/')).kvs.map((kv) => [kv.key, kv.value]), [['/kedge/admin/token', 'kedge-admin.x'], ['/kedge/tokens/a', 'v']]);
    await s.close();
    assert.match(await fs.readFile(join(dir, 'store', SNAPSHOT_FILE), 'utf8'), /^[0-9a-f]{8} \{"format":"kedge-store\/v2"/);
    await fs.stat(join(dir, 'store', COMMIT_FILE));
    const s2 = await open(dir);
    assert.equal((await s2.get('/kedge/tokens/a'))?.value, 'v');
    await s2.close();
  });
});
