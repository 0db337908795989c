// A real Prometheus (Debian's package) for tests: started on a free
// loopback port with a config written by the test, stopped at the end;
// queries go through its HTTP API.
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import YAML from 'yaml';
import { eventually, tempDir } from './procs';

/** A running Prometheus. */
export interface PrometheusHandle {
  url: string;
  /** An instant query: the result vector. */
  query(expr: string): Promise<{ metric: Record<string, string>; value: number }[]>;
  /** An instant query evaluated at `time` (Unix seconds). */
  queryAt(expr: string, time: string): Promise<{ metric: Record<string, string>; value: number }[]>;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

function getJson(url: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    http.get(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
        try {
          resolve(JSON.parse(body));
        } catch (err) {
          reject(new Error(`${url}: HTTP ${res.statusCode}: ${body.slice(0, 200)}`, { cause: err }));
        }
      });
    }).on('error', reject);
  });
}

/** Starts `prometheus` with `config` (an object written as YAML). */
export async function startPrometheus(config: unknown): Promise<PrometheusHandle> {
  const dir = tempDir('prometheus');
  const file = path.join(dir, 'prometheus.yml');
  fs.writeFileSync(file, YAML.stringify(config));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const log: string[] = [];
  const child: ChildProcess = spawn('prometheus', [`--config.file=${file}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.setEncoding('utf8').on('data', (c: string) => log.push(c));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await eventually(async () => {
    if (child.exitCode !== null) throw new Error(`prometheus exited ${child.exitCode}: ${log.join('').slice(-2000)}`);
    return getJson(`${url}/api/v1/status/buildinfo`).then(() => true, () => false);
  }, 30_000, 'prometheus answering');
  const queryAt = async (expr: string, time: string) => {
    const r = (await getJson(`${url}/api/v1/query?query=${encodeURIComponent(expr)}${time ? `&time=${time}` : ''}`)) as { status: string; error?: string; data?: { result: { metric: Record<string, string>; value: [number, string] }[] } };
    if (r.status !== 'success') throw new Error(`query ${expr}: ${r.error}`);
    return r.data!.result.map((x) => ({ metric: x.metric, value: Number(x.value[1]) }));
  };
  return {
    url,
    query: (expr) => queryAt(expr, ''),
    queryAt,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
