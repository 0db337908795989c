import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { openEmbeddedStore, type EmbeddedStoreOptions, type StoreTimers } from '../../federation/store/embedded';
import type { WatchEvent } from '../../federation/store/types';
import { hasCode } from '../../proto/model/errors';
import { silentLogger } from '../../proto/model/log';
import { storeConformance, waitFor } from '../support/store-conformance';
import { eventually } from '../support/procs';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await fs.mkdtemp(join(tmpdir(), 'kedge-store-'));
  dirs.push(d);
  return d;
}
after(async () => {
  await Promise.all(dirs.map((d) => fs.rm(d, { recursive: true, force: true })));
});

const open = (dir: string, extra: Partial<EmbeddedStoreOptions> = {}) => openEmbeddedStore(dir, { logger: silentLogger(), ...extra });

function expectCode(code: string, ...mentions: string[]) {
  return (err: unknown) => {
    assert.ok(hasCode(err, code), `expected ${code}, got ${String(err)}`);
    for (const m of mentions) assert.ok((err as Error).message.includes(m), `message "${(err as Error).message}" should mention ${m}`);
    return true;
  };
}

/** A child script that opens the store in `dir`, prints the lock kind, and holds it (or closes it at once). */
function holdStoreScript(dir: string, closeAtOnce = false): string {
  const storeJs = join(__dirname, '../../federation/store/embedded.js');
  const logJs = join(__dirname, '../../proto/model/log.js');
  return `
    const { openEmbeddedStore } = require(${JSON.stringify(storeJs)});
    const { silentLogger } = require(${JSON.stringify(logJs)});
    openEmbeddedStore(${JSON.stringify(dir)}, { logger: silentLogger() }).then(async (s) => {
      process.stdout.write((require(${JSON.stringify(join(__dirname, '../../federation/store/lock.js'))}).flockAddon() ? 'flock' : 'pidfile') + '\\n');
      if (${closeAtOnce}) { await s.close(); process.exit(0); }
      setInterval(() => {}, 1000);
    }, (err) => { console.error(err.message); process.exit(3); });`;
}

/** A zombie process (exited, not reaped by its parent), with its /proc start time; `reap` ends its parent. */
async function makeZombie(): Promise<{ pid: number; start: string; reap: () => void }> {
  // The shell starts a child, then becomes a sleep that never waits for it;
  // the child exits only once its parent is that sleep, so the shell cannot reap it first.
  const child = 'sh -c \'while [ "$(cat /proc/$PPID/comm)" != sleep ]; do sleep 0.01; done\'';
  const parent = spawn('sh', ['-c', `${child} & echo $!; exec sleep 60`], { stdio: ['ignore', 'pipe', 'ignore'] });
  const pid = Number(await new Promise<string>((resolve) => parent.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()))));
  const stat = await eventually(async () => {
    const text = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).startsWith('Z') && text;
  }, 10_000, `process ${pid} to become a zombie`);
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  assert.equal(fields[0], 'Z', `process ${pid} became a zombie`);
  return { pid, start: fields[19]!, reap: () => parent.kill('SIGKILL') };
}

storeConformance('embedded', async () => {
  const dir = await tempDir();
  const store = await open(dir);
  return { store, cleanup: () => store.close() };
});

describe('embedded store durability', () => {
  it('keeps durable keys across close and reopen, and the revision keeps rising', async () => {
    const dir = await tempDir();
    const s1 = await open(dir);
    await s1.put('/d/a', '1');
    const { revision: last } = await s1.put('/d/b', '2');
    await s1.delete('/d/a');
    await s1.close();

    const s2 = await open(dir);
    assert.equal(await s2.get('/d/a'), undefined);
    assert.deepEqual(await s2.get('/d/b'), { key: '/d/b', value: '2', createRevision: last, modRevision: last });
    assert.ok((await s2.list('/')).revision > last);
    const { revision } = await s2.put('/d/c', '3');
    assert.ok(revision > last + 1, 'the delete took a revision too');
    await s2.close();
  });

  it('keeps leased keys across reopen for one more TTL of their lease, then expires them', async () => {
    const dir = await tempDir();
    let now = 1_000_000;
    let tick: (() => void) | undefined;
    const timers: StoreTimers = { setInterval: (fn) => (tick = fn), clearInterval: () => (tick = undefined) };
    const s1 = await open(dir, { clock: () => now, timers });
    await s1.put('/d/durable', 'x');
    const lease = await s1.grantLease(10_000);
    await s1.put('/agents/a', 'here', { lease });
    await s1.put('/d/durable', 'leased now', { lease });
    const { revision: leasedRev } = await s1.put('/agents/b', 'here', { lease });
    await s1.close();

    now += 60_000; // the restart took longer than the lease's TTL: it counts again from the open
    const s2 = await open(dir, { clock: () => now, timers });
    assert.deepEqual((await s2.list('/')).kvs.map((kv) => [kv.key, kv.value, kv.lease]), [['/agents/a', 'here', lease], ['/agents/b', 'here', lease], ['/d/durable', 'leased now', lease]]);
    const { revision } = await s2.put('/d/next', 'y');
    assert.ok(revision > leasedRev, `revision ${revision} must be above the leased write's ${leasedRev}`);
    assert.equal(await s2.keepAlive(lease), true, 'the restored lease can be kept alive');
    now += 10_001;
    tick!();
    await waitFor(async () => (await s2.list('/agents/')).kvs.length === 0, 2000, 'the restored lease to expire');
    assert.equal(await s2.get('/d/durable'), undefined, 'the durable copy does not come back');
    await s2.close();
    const s3 = await open(dir, { clock: () => now, timers });
    assert.deepEqual((await s3.list('/')).kvs.map((kv) => kv.key), ['/d/next'], 'the expiry was logged');
    await s3.close();
  });

  it('refuses a second open of a locked data dir, naming the dir and the pid', async () => {
    const dir = await tempDir();
    const s1 = await open(dir);
    await assert.rejects(open(dir), expectCode('KEDGE_STORE_LOCKED', dir, String(process.pid)));
    await s1.close();
    const s2 = await open(dir); // released on close
    await s2.close();
  });

  it('takes the lock of a holder killed with SIGKILL (the kernel released it)', async () => {
    const dir = await tempDir();
    const child = spawn(process.execPath, ['-e', holdStoreScript(dir)], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve())); // it holds the lock now
    await assert.rejects(open(dir), expectCode('KEDGE_STORE_LOCKED', String(child.pid)));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('close', resolve));
    const s = await open(dir);
    assert.equal(JSON.parse(await fs.readFile(join(dir, 'store', 'LOCK'), 'utf8')).pid, process.pid);
    await s.close();
  });

  it('is not fooled by a lock file naming a live pid that is another process now (pid reuse) or a zombie', async () => {
    const dir = await tempDir();
    await fs.mkdir(join(dir, 'store'), { recursive: true });
    // Pid 1 is alive, but not the process that started at tick 1 of some other boot's clock.
    await fs.writeFile(join(dir, 'store', 'LOCK'), `${JSON.stringify({ pid: 1, start: '1' })}\n`);
    await (await open(dir)).close();
    const zombie = await makeZombie();
    try {
      await fs.writeFile(join(dir, 'store', 'LOCK'), `${JSON.stringify({ pid: zombie.pid, start: zombie.start })}\n`);
      await (await open(dir)).close();
    } finally {
      zombie.reap();
    }
  });

  it('without the native addon, locks with a pid file that survives pid reuse and SIGKILL', async () => {
    const dir = await tempDir();
    const env = { ...process.env, KEDGE_NATIVE_ADDON: '/nonexistent/kedge_native.node' };
    const child = spawn(process.execPath, ['-e', holdStoreScript(dir)], { stdio: ['ignore', 'pipe', 'inherit'], env });
    const kind = await new Promise<string>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim())));
    assert.equal(kind, 'pidfile');
    // A live holder without flock is respected by a process that has flock.
    await assert.rejects(open(dir), expectCode('KEDGE_STORE_LOCKED', String(child.pid)));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('close', resolve));
    // The dead holder's file is still there; its pid and start time no longer match a process.
    const held = JSON.parse(await fs.readFile(join(dir, 'store', 'LOCK'), 'utf8')) as { pid: number };
    assert.equal(held.pid, child.pid);
    const again = spawn(process.execPath, ['-e', holdStoreScript(dir, true)], { stdio: ['ignore', 'pipe', 'inherit'], env });
    const [code] = await new Promise<[number | null]>((resolve) => again.once('close', (c) => resolve([c])));
    assert.equal(code, 0, 'the pid-file lock of a SIGKILLed holder is taken over');
  });

  it('reports a corrupt snapshot without touching it, and gives the lock back', async () => {
    const dir = await tempDir();
    const s1 = await open(dir);
    await s1.put('/d/a', '1');
    await s1.close();
    await (await open(dir)).close(); // reopening compacts the log into snapshot.json
    const file = join(dir, 'store', 'snapshot.json');
    const good = await fs.readFile(file);
    const bad = Buffer.from(good.subarray(0, good.length - 7)); // truncated mid-document
    await fs.writeFile(file, bad);
    await assert.rejects(open(dir), expectCode('KEDGE_STORE_CORRUPT', file));
    assert.deepEqual(await fs.readFile(file), bad);
    await assert.rejects(open(dir), expectCode('KEDGE_STORE_CORRUPT', file)); // not KEDGE_STORE_LOCKED
  });

  it('reports a damaged log record without touching the log', async () => {
    const dir = await tempDir();
    const s1 = await open(dir);
    await s1.put('/d/a', 'first');
    await s1.put('/d/b', 'second');
    await s1.close();
    const file = join(dir, 'store', 'wal.log');
    const bytes = await fs.readFile(file);
    const at = bytes.indexOf('first');
    assert.ok(at > 0);
    bytes[at] = 'F'.charCodeAt(0); // a flipped byte inside a complete line
    await fs.writeFile(file, bytes);
    await assert.rejects(open(dir), expectCode('KEDGE_STORE_CORRUPT', file, 'line'));
    assert.deepEqual(await fs.readFile(file), bytes);
  });

  it('drops a torn last log record and keeps working', async () => {
    const dir = await tempDir();
    const s1 = await open(dir);
    await s1.put('/d/a', '1');
    await s1.close();
    await fs.appendFile(join(dir, 'store', 'wal.log'), '0badc0de {"op":"put","rev":99,"ke');
    const s2 = await open(dir);
    assert.equal((await s2.get('/d/a'))?.value, '1');
    await s2.put('/d/b', '2');
    await s2.close();
    const s3 = await open(dir);
    assert.deepEqual((await s3.list('/d/')).kvs.map((kv) => kv.value), ['1', '2']);
    await s3.close();
  });

  it('snapshots when the log passes its size limit, losing nothing', async () => {
    const dir = await tempDir();
    const s1 = await open(dir, { compactBytes: 1024 });
    for (let i = 0; i < 100; i++) await s1.put(`/d/${String(i).padStart(3, '0')}`, `value ${i}`);
    const wal = await fs.stat(join(dir, 'store', 'wal.log'));
    assert.ok(wal.size < 1200, `log was compacted (size ${wal.size})`);
    await s1.close();
    const s2 = await open(dir);
    const { kvs } = await s2.list('/d/');
    assert.equal(kvs.length, 100);
    assert.equal(kvs[99]?.value, 'value 99');
    await s2.close();
  });

  it('fails a watch from before the remembered history with KEDGE_STORE_COMPACTED', async () => {
    const dir = await tempDir();
    const s1 = await open(dir);
    const { revision: old } = await s1.put('/d/a', '1');
    await s1.close();
    const s2 = await open(dir, { historyLimit: 4 });
    const errors: Error[] = [];
    s2.watch('/d/', { fromRevision: old - 1 }, () => assert.fail('no events expected'), (err) => errors.push(err));
    await waitFor(() => errors.length === 1, 2000, 'the compacted error');
    assert.ok(hasCode(errors[0], 'KEDGE_STORE_COMPACTED'));

    const revs: number[] = [];
    for (let i = 0; i < 10; i++) revs.push((await s2.put('/d/k', String(i))).revision);
    const late: WatchEvent[] = [];
    s2.watch('/d/', { fromRevision: revs[1]! }, () => assert.fail('no events expected'), (err) => errors.push(err));
    s2.watch('/d/', { fromRevision: revs[7]! }, (ev) => late.push(...ev));
    await waitFor(() => errors.length === 2 && late.length === 2, 2000, 'one compacted error and two replayed events');
    assert.ok(hasCode(errors[1], 'KEDGE_STORE_COMPACTED'));
    await s2.close();
  });

  it('expires leases by the injected clock and timers', async () => {
    let now = 1_000_000;
    let tick: (() => void) | undefined;
    const timers: StoreTimers = { setInterval: (fn) => (tick = fn), clearInterval: () => (tick = undefined) };
    const s = await open(await tempDir(), { clock: () => now, timers });
    const lease = await s.grantLease(10_000);
    await s.put('/agents/a', 'x', { lease });
    now += 9_999;
    tick!();
    assert.equal(await s.keepAlive(lease), true); // renewed until now + 10 s
    now += 10_000;
    tick!();
    await waitFor(async () => (await s.get('/agents/a')) === undefined, 2000, 'the expired key to go');
    assert.equal(await s.keepAlive(lease), false);
    await s.close();
    assert.equal(tick, undefined, 'close stops the timer');
  });

  it('keeps every write a SIGKILLed writer reported as done, over repeated crashes', { timeout: 60_000 }, async () => {
    const dir = await tempDir();
    const acked = new Map<string, string>();
    // Each round starts a writer on the same dir (taking over the dead one's
    // lock and log) and kills it mid-stream; a kill only sometimes lands in
    // the window between an append and its acknowledgement, so do it thrice.
    for (let round = 0; round < 3; round++) {
      for (const [key, value] of await crashWriter(dir, round)) acked.set(key, value);
      const s = await open(dir);
      const stored = new Map((await s.list('/crash/')).kvs.map((kv) => [kv.key, kv.value]));
      for (const [key, value] of acked) assert.equal(stored.get(key), value, `acknowledged write ${key} survived`);
      for (const kv of (await s.list('/agents/')).kvs) assert.ok(kv.lease, `${kv.key} came back with its lease`);
      await s.close();
    }
  });
});

/**
 * Runs a child process that writes keys with four concurrent writers,
 * printing each key after its put resolved, and SIGKILLs it after 300 such
 * acknowledgements. Returns what it acknowledged.
 */
async function crashWriter(dir: string, round: number): Promise<Map<string, string>> {
  const storeJs = join(__dirname, '../../federation/store/embedded.js');
  const logJs = join(__dirname, '../../proto/model/log.js');
  const script = `
    const { openEmbeddedStore } = require(${JSON.stringify(storeJs)});
    const { silentLogger } = require(${JSON.stringify(logJs)});
    (async () => {
      const store = await openEmbeddedStore(${JSON.stringify(dir)}, { logger: silentLogger() });
      const lease = await store.grantLease(60000);
      let next = 0;
      const writer = async () => {
        for (;;) {
          const n = next++;
          const key = '/crash/${round}/' + n;
          await store.put(key, 'value-' + n);
          process.stdout.write(key + ' value-' + n + '\\n');
          if (n % 10 === 0) await store.put('/agents/' + n, 'x', { lease });
        }
      };
      await Promise.all([writer(), writer(), writer(), writer()]);
    })();`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const acked = new Map<string, string>();
  let buf = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    buf += chunk;
    const lines = buf.split('\n');
    buf = lines.pop()!;
    for (const line of lines) {
      const [key, value] = line.split(' ') as [string, string];
      acked.set(key, value);
    }
    if (acked.size >= 300 && !child.killed) child.kill('SIGKILL');
  });
  const [code, signal] = await new Promise<[number | null, string | null]>((res) => child.on('close', (c, s) => res([c, s])));
  assert.equal(signal, 'SIGKILL', `writer exited on its own (code ${code})`);
  assert.ok(acked.size >= 300);
  return acked;
}
