// The data path with telemetry on and off: a federation, a server agent in
// front of an HTTP app (http port: one record per request) and a client
// agent whose upstream a keep-alive load generator drives, for each of
// three agent configurations, in interleaved rounds: metrics and access log
// off; istio_* metrics on; metrics and access log on. Prints requests per
// second per round. Run: npm run build && node dist/test/bench/telemetry-onoff.js [--seconds=5] [--rounds=2]
import * as http from 'node:http';
import { killAll } from '../support/procs';
import { startAgentProc, startFederationProc, startHttpApp, type AgentHandle } from '../support/mesh';

const arg = (name: string, def: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? def);
const SECONDS = arg('seconds', 5);
const ROUNDS = arg('rounds', 2);
const CONCURRENCY = 16;

const CASES = {
  off: { metrics: false, accessLog: { level: 'off' } },
  metrics: { metrics: true, accessLog: { level: 'off' } },
  'metrics+log': { metrics: true, accessLog: { level: 'info' } },
} as const;

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
  const results: Record<string, number[]> = { off: [], metrics: [], 'metrics+log': [] };
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, telemetry] of Object.entries(CASES)) {
        const agents: AgentHandle[] = [];
        try {
          agents.push(await startAgentProc(fed, { name: `srv-${round}-${name.replace('+', '-')}`, namespace: 'bench', serviceAccount: 'srv', address: '127.0.16.1', services: [{ name: `svc-${round}-${name.replace('+', '-')}`, ports: [{ name: 'http', port: 8080, targetPort: app.port, protocol: 'http' }] }], extra: { telemetry } }));
          const key = `svc-${round}-${name.replace('+', '-')}.bench`;
          const client = await startAgentProc(fed, { name: `cli-${round}-${name.replace('+', '-')}`, namespace: 'bench', serviceAccount: 'cli', address: '127.0.16.2', upstreams: [{ service: key, port: 8080 }], extra: { telemetry } });
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
    killAll();
  }
  console.log(`| case | ${Array.from({ length: ROUNDS }, (_, i) => `round ${i} rps`).join(' | ')} |`);
  console.log(`|---|${'---|'.repeat(ROUNDS)}`);
  for (const [name, r] of Object.entries(results)) console.log(`| ${name} | ${r.map((x) => x.toFixed(0)).join(' | ')} |`);
  console.log(JSON.stringify({ bench: 'telemetry-onoff', seconds: SECONDS, concurrency: CONCURRENCY, results }));
}

void main();
