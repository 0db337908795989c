// The data path with telemetry on and off: a federation, a server agent in
// front of an HTTP app (http port: one record per request) and a client
// agent whose upstream a keep-alive load generator drives, for each of
// four agent configurations, in interleaved rounds: metrics and access log
// off; istio_* metrics on; metrics and access log on; and all of them with
// tracing (every request sampled, each hop's span exported over OTLP/HTTP
// to a receiver in this process that accepts and drops). Prints requests
// per second per round. Run: npm run build && node dist/test/bench/telemetry-onoff.js [--seconds=5] [--rounds=2]
import * as http from 'node:http';
import { killAll } from '../support/procs';
import { startAgentProc, startFederationProc, startHttpApp, type AgentHandle } from '../support/mesh';

const arg = (name: string, def: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? def);
const SECONDS = arg('seconds', 5);
const ROUNDS = arg('rounds', 2);
const CONCURRENCY = 16;

/** An OTLP/HTTP receiver that takes every export and keeps nothing. */
async function otlpSink(): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    req.resume().on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as import('node:net').AddressInfo).port}/v1/traces`, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

function cases(otlpUrl: string): Record<string, unknown> {
  return {
    off: { metrics: false, accessLog: { level: 'off' } },
    metrics: { metrics: true, accessLog: { level: 'off' } },
    'metrics+log': { metrics: true, accessLog: { level: 'info' } },
    'metrics+log+tracing': { metrics: true, accessLog: { level: 'info' }, tracing: { otlpEndpoint: otlpUrl, sample: 1 } },
  };
}

async function load(hostPort: string): Promise<number> {
  const i = hostPort.lastIndexOf(':');
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  let n = 0;
  const until = performance.now() + SECONDS * 1000;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (performance.now() < until) {
      await new Promise<void>((resolve, reject) => {
        http.get({ host: hostPort.slice(0, i), port: Number(hostPort.slice(i + 1)), path: '/', agent }, (res) => res.resume().on('end', () => {
          n++;
          resolve();
        })).on('error', reject);
      });
    }
  }));
  agent.destroy();
  return n / SECONDS;
}

async function main(): Promise<void> {
  const fed = await startFederationProc();
  const app = await startHttpApp('bench');
  const otlp = await otlpSink();
  const CASES = cases(otlp.url);
  const results: Record<string, number[]> = Object.fromEntries(Object.keys(CASES).map((k) => [k, []]));
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, telemetry] of Object.entries(CASES)) {
        const agents: AgentHandle[] = [];
        try {
          agents.push(await startAgentProc(fed, { name: `srv-${round}-${name.replaceAll('+', '-')}`, namespace: 'bench', serviceAccount: 'srv', address: '127.0.16.1', services: [{ name: `svc-${round}-${name.replaceAll('+', '-')}`, ports: [{ name: 'http', port: 8080, targetPort: app.port, protocol: 'http' }] }], extra: { telemetry } }));
          const key = `svc-${round}-${name.replaceAll('+', '-')}.bench`;
          const client = await startAgentProc(fed, { name: `cli-${round}-${name.replaceAll('+', '-')}`, namespace: 'bench', serviceAccount: 'cli', address: '127.0.16.2', upstreams: [{ service: key, port: 8080 }], extra: { telemetry } });
          agents.push(client);
          // Warm up (the first requests also wait for the endpoint to arrive).
          for (let i = 0; i < 200; i++) {
            await new Promise<void>((resolve) => {
              const i2 = client.upstreams[0]!.lastIndexOf(':');
              http.get({ host: client.upstreams[0]!.slice(0, i2), port: Number(client.upstreams[0]!.slice(i2 + 1)), path: '/' }, (res) => res.resume().on('end', () => resolve())).on('error', () => setTimeout(resolve, 50));
            });
          }
          results[name]!.push(await load(client.upstreams[0]!));
        } finally {
          await Promise.all(agents.map((a) => a.proc.stop('SIGTERM')));
        }
      }
    }
  } finally {
    await fed.proc.stop('SIGKILL');
    await app.close();
    await otlp.close();
    killAll();
  }
  console.log(`| case | ${Array.from({ length: ROUNDS }, (_, i) => `round ${i} rps`).join(' | ')} |`);
  console.log(`|---|${'---|'.repeat(ROUNDS)}`);
  for (const [name, r] of Object.entries(results)) console.log(`| ${name} | ${r.map((x) => x.toFixed(0)).join(' | ')} |`);
  console.log(JSON.stringify({ bench: 'telemetry-onoff', seconds: SECONDS, concurrency: CONCURRENCY, results }));
}

void main();
