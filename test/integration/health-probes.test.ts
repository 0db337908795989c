// Each health probe against a real server on 127.0.0.1:0 (node:http, node:net,
// a grpc-js server implementing grpc.health.v1) or a real command: what is
// healthy, what is not, what the detail says, and that timeouts and aborts
// leave nothing running.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { healthClientConstructor, type HealthCheckRequest, type HealthCheckResponse, type ServingStatus } from '../../agent/health/grpc-health';
import { EXEC_OUTPUT_LIMIT, execProbe, grpcProbe, httpProbe, runProbe, tcpProbe } from '../../agent/health/probes';

const T = { timeout: 15_000 };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
  });
}

function close(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** A port nothing listens on: bound, then released. */
async function freePort(): Promise<number> {
  const s = net.createServer();
  const port = await listen(s);
  await close(s);
  return port;
}

/** True once `pid` has gone (or is a zombie no one reaped: dead all the same). */
function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    return /^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

/** The pid a test command wrote to `file`, once it is there in full. */
async function readPid(file: string): Promise<number> {
  const end = Date.now() + 3000;
  for (;;) {
    const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    if (/^\d+\n$/.test(text)) return Number(text);
    if (Date.now() > end) throw new Error(`no pid in ${file}`);
    await sleep(10);
  }
}

async function waitGone(pid: number, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (isGone(pid)) return true;
    await sleep(20);
  }
  return isGone(pid);
}

/** A grpc-js server with grpc.health.v1.Health backed by `statuses`; unknown services get NOT_FOUND, as the spec says. */
async function startGrpcHealthServer(statuses: Map<string, ServingStatus>, opts: { implement?: boolean; hang?: boolean } = {}): Promise<{ port: number; server: grpc.Server }> {
  const server = new grpc.Server();
  if (opts.implement !== false) {
    server.addService(healthClientConstructor().service, {
      Check: (call: grpc.ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, cb: grpc.sendUnaryData<HealthCheckResponse>) => {
        if (opts.hang) return;
        const status = statuses.get(call.request.service);
        if (status === undefined) return cb({ code: grpc.status.NOT_FOUND, details: `unknown service ${call.request.service}` });
        cb(null, { status });
      },
      Watch: (call: grpc.ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => call.end(),
    });
  }
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return { port, server };
}

describe('http probe', () => {
  let server: http.Server;
  let port: number;
  const sockets = new Set<net.Socket>();
  before(async () => {
    server = http.createServer((req, res) => {
      if (req.url === '/hang') return; // never answers
      const status = Number(req.url!.slice(1).split('?')[0]);
      res.writeHead(status, status >= 300 && status < 400 ? { location: '/elsewhere' } : {});
      res.end(`status ${status}`);
    });
    server.on('connection', (s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    port = await listen(server);
  });
  after(() => {
    server.closeAllConnections();
    return close(server);
  });

  const statuses: Array<[number, boolean]> = [
    [200, true],
    [204, true],
    [302, true],
    [399, true],
    [404, false],
    [500, false],
    [503, false],
  ];
  for (const [status, ok] of statuses) {
    it(`HTTP ${status} is ${ok ? 'healthy' : 'unhealthy'}`, T, async () => {
      const r = await httpProbe({ kind: 'http', host: '127.0.0.1', port, path: `/${status}` }, 2000);
      assert.deepEqual(r, { ok, detail: `GET http://127.0.0.1:${port}/${status}: HTTP ${status}` });
    });
  }

  it('a closed port is unhealthy, and the detail says to check the listener', T, async () => {
    const free = await freePort();
    const r = await httpProbe({ kind: 'http', host: '127.0.0.1', port: free, path: '/healthz' }, 2000);
    assert.equal(r.ok, false);
    assert.match(r.detail, new RegExp(`connection refused by http://127.0.0.1:${free}/healthz: is the app listening on that port\\?`));
  });

  it('a server that never answers times out, and the probe closes its connection', T, async () => {
    const start = Date.now();
    const r = await httpProbe({ kind: 'http', host: '127.0.0.1', port, path: '/hang' }, 200);
    assert.deepEqual(r, { ok: false, detail: `GET http://127.0.0.1:${port}/hang timed out after 200ms` });
    assert.ok(Date.now() - start < 1500, 'bounded by the timeout');
    const end = Date.now() + 2000;
    while (sockets.size > 0 && Date.now() < end) await sleep(10);
    assert.equal(sockets.size, 0, 'no connection is left open');
  });

  it('an aborted probe settles at once as cancelled', T, async () => {
    const ac = new AbortController();
    const p = httpProbe({ kind: 'http', host: '127.0.0.1', port, path: '/hang' }, 10_000, ac.signal);
    setTimeout(() => ac.abort(), 50);
    assert.deepEqual(await p, { ok: false, detail: 'probe cancelled' });
  });
});

describe('tcp probe', () => {
  it('a listener is healthy; once closed it is refused', T, async () => {
    const server = net.createServer((s) => s.end());
    const port = await listen(server);
    assert.deepEqual(await tcpProbe({ kind: 'tcp', host: '127.0.0.1', port }, 1000), { ok: true, detail: `TCP connect to 127.0.0.1:${port} succeeded` });
    await close(server);
    const r = await tcpProbe({ kind: 'tcp', host: '127.0.0.1', port }, 1000);
    assert.equal(r.ok, false);
    assert.match(r.detail, /connection refused by 127\.0\.0\.1:\d+: is the app listening/);
  });
});

describe('grpc probe (grpc.health.v1)', () => {
  const statuses = new Map<string, ServingStatus>([
    ['', 'SERVING'],
    ['shop.Payments', 'NOT_SERVING'],
  ]);
  let port: number;
  let server: grpc.Server;
  before(async () => ({ port, server } = await startGrpcHealthServer(statuses)));
  after(() => server.forceShutdown());

  it('SERVING for the whole server is healthy', T, async () => {
    assert.deepEqual(await grpcProbe({ kind: 'grpc', host: '127.0.0.1', port, service: '' }, 2000), { ok: true, detail: `gRPC health of the server at 127.0.0.1:${port}: SERVING` });
  });

  it('NOT_SERVING for a named service is unhealthy; flipping it to SERVING heals it', T, async () => {
    const p = { kind: 'grpc' as const, host: '127.0.0.1', port, service: 'shop.Payments' };
    assert.deepEqual(await grpcProbe(p, 2000), { ok: false, detail: `gRPC health of service "shop.Payments" at 127.0.0.1:${port}: NOT_SERVING` });
    statuses.set('shop.Payments', 'SERVING');
    assert.equal((await grpcProbe(p, 2000)).ok, true);
    statuses.set('shop.Payments', 'NOT_SERVING');
  });

  it('a service the server does not know is unhealthy (NOT_FOUND)', T, async () => {
    const r = await grpcProbe({ kind: 'grpc', host: '127.0.0.1', port, service: 'nope' }, 2000);
    assert.deepEqual(r, { ok: false, detail: `gRPC health of service "nope" at 127.0.0.1:${port}: the server does not know the service (NOT_FOUND)` });
  });

  it('a server without the health service says so (UNIMPLEMENTED)', T, async () => {
    const bare = await startGrpcHealthServer(statuses, { implement: false });
    try {
      const r = await grpcProbe({ kind: 'grpc', host: '127.0.0.1', port: bare.port, service: '' }, 2000);
      assert.equal(r.ok, false);
      assert.match(r.detail, /does not implement grpc\.health\.v1\.Health/);
    } finally {
      bare.server.forceShutdown();
    }
  });

  it('a server that never answers runs into the deadline', T, async () => {
    const hung = await startGrpcHealthServer(statuses, { hang: true });
    try {
      const start = Date.now();
      const r = await grpcProbe({ kind: 'grpc', host: '127.0.0.1', port: hung.port, service: '' }, 300);
      assert.deepEqual(r, { ok: false, detail: `gRPC health of the server at 127.0.0.1:${hung.port} timed out after 300ms` });
      assert.ok(Date.now() - start < 1500);
    } finally {
      hung.server.forceShutdown();
    }
  });

  it('no server is unhealthy: connection refused', T, async () => {
    const free = await freePort();
    const r = await grpcProbe({ kind: 'grpc', host: '127.0.0.1', port: free, service: '' }, 1000);
    assert.deepEqual(r, { ok: false, detail: `gRPC health of the server at 127.0.0.1:${free}: connection refused: is the app listening on that port?` });
  });

  it('an HTTP/1 server on the port is unhealthy, and the detail says to check the port', T, async () => {
    const h1 = net.createServer((s) => s.resume().end('HTTP/1.1 400 Bad Request\r\n\r\n'));
    const hport = await listen(h1);
    try {
      const r = await grpcProbe({ kind: 'grpc', host: '127.0.0.1', port: hport, service: '' }, 1000);
      assert.equal(r.ok, false);
      assert.match(r.detail, /not an HTTP\/2 \(gRPC\) server: check the port/);
    } finally {
      await close(h1);
    }
  });

  it('an HTTP/2 server that is not gRPC is unhealthy', T, async () => {
    const h2 = http2.createServer((_req, res) => res.writeHead(404).end('no such path'));
    const hport = await listen(h2);
    try {
      const r = await grpcProbe({ kind: 'grpc', host: '127.0.0.1', port: hport, service: '' }, 1000);
      assert.deepEqual(r, { ok: false, detail: `gRPC health of the server at 127.0.0.1:${hport}: not a gRPC answer (HTTP 404): check the port` });
    } finally {
      await close(h2);
    }
  });

  it('leaves no connection behind, whatever the answer', T, async () => {
    // A TCP relay in front of the gRPC server counts the probe's connections.
    let open = 0;
    const relay = net.createServer((c) => {
      open++;
      const u = net.connect(port, '127.0.0.1');
      c.pipe(u).pipe(c);
      const gone = (): void => {
        c.destroy();
        u.destroy();
      };
      c.on('close', () => {
        open--;
        gone();
      });
      c.on('error', gone);
      u.on('error', gone);
      u.on('close', gone);
    });
    const rport = await listen(relay);
    try {
      for (const service of ['', 'shop.Payments', 'nope']) await grpcProbe({ kind: 'grpc', host: '127.0.0.1', port: rport, service }, 1000);
      const end = Date.now() + 2000;
      while (open > 0 && Date.now() < end) await sleep(10);
      assert.equal(open, 0);
    } finally {
      await close(relay);
    }
  });

  it('recovers at the first probe after the server comes back (no shared channel backoff)', T, async () => {
    const free = await freePort();
    assert.equal((await grpcProbe({ kind: 'grpc', host: '127.0.0.1', port: free, service: '' }, 500)).ok, false);
    const back = new grpc.Server();
    back.addService(healthClientConstructor().service, {
      Check: (_c: unknown, cb: grpc.sendUnaryData<HealthCheckResponse>) => cb(null, { status: 'SERVING' }),
      Watch: (c: grpc.ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => c.end(),
    });
    await new Promise<void>((resolve, reject) => back.bindAsync(`127.0.0.1:${free}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
    try {
      assert.equal((await grpcProbe({ kind: 'grpc', host: '127.0.0.1', port: free, service: '' }, 1000)).ok, true);
    } finally {
      back.forceShutdown();
    }
  });
});

describe('exec probe', () => {
  let dir: string;
  before(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-health-'))));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("sh -c 'exit 0' is healthy", T, async () => {
    assert.deepEqual(await execProbe({ kind: 'exec', command: ['sh', '-c', 'exit 0'] }, 2000), { ok: true, detail: 'sh -c exit 0: exit 0' });
  });

  it("sh -c 'exit 1' is unhealthy, with the command's output in the detail", T, async () => {
    const r = await execProbe({ kind: 'exec', command: ['sh', '-c', 'echo checking; echo "db down" >&2; exit 1'] }, 2000);
    assert.equal(r.ok, false);
    assert.match(r.detail, /: exit 1: checking\ndb down$/);
  });

  it("sh -c 'sleep 5' times out, and the kill reaches the whole process group", T, async () => {
    const pidFile = path.join(dir, 'sleeper.pid');
    const start = Date.now();
    const r = await execProbe({ kind: 'exec', command: ['sh', '-c', `sleep 5 & echo $! > ${pidFile}; echo started; wait`] }, 300);
    assert.ok(Date.now() - start < 2000, 'bounded by the timeout');
    assert.equal(r.ok, false);
    assert.match(r.detail, /timed out after 300ms: started$/);
    const pid = await readPid(pidFile);
    assert.ok(await waitGone(pid), `the background sleep ${pid} was killed with its group`);
  });

  it('a command that exits 0 leaving a child holding its output is still healthy, and the child is killed', T, async () => {
    const pidFile = path.join(dir, 'leftover.pid');
    const start = Date.now();
    const r = await execProbe({ kind: 'exec', command: ['sh', '-c', `sleep 5 & echo $! > ${pidFile}; exit 0`] }, 3000);
    assert.equal(r.ok, true, r.detail);
    assert.ok(Date.now() - start < 1500, 'does not wait for the leftover child');
    assert.ok(await waitGone(await readPid(pidFile)));
  });

  it('keeps only the tail of a large output', T, async () => {
    const r = await execProbe({ kind: 'exec', command: ['sh', '-c', 'i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done; exit 3'] }, 5000);
    assert.equal(r.ok, false);
    assert.ok(r.detail.length < EXEC_OUTPUT_LIMIT + 100, `detail is ${r.detail.length} characters`);
    assert.match(r.detail, /exit 3: .*line 1999$/s);
  });

  it('a program that does not exist is unhealthy with ENOENT', T, async () => {
    assert.deepEqual(await execProbe({ kind: 'exec', command: ['/nonexistent/kedge-check'] }, 2000), { ok: false, detail: 'cannot run /nonexistent/kedge-check: ENOENT' });
  });

  it('a command killed by a signal says which', T, async () => {
    const r = await execProbe({ kind: 'exec', command: ['sh', '-c', 'kill -TERM $$'] }, 2000);
    assert.deepEqual(r, { ok: false, detail: 'sh -c kill -TERM $$: killed by SIGTERM' });
  });

  it('an aborted probe kills the command at once', T, async () => {
    const pidFile = path.join(dir, 'aborted.pid');
    const ac = new AbortController();
    const p = runProbe({ kind: 'exec', command: ['sh', '-c', `echo $$ > ${pidFile}; sleep 5`] }, 10_000, ac.signal);
    const pid = await readPid(pidFile);
    ac.abort();
    assert.deepEqual(await p, { ok: false, detail: 'probe cancelled' });
    assert.ok(await waitGone(pid));
  });
});
