// The cost of one route lookup (PortRouteTable.match) per request, over a
// route table the size of a busy service: 16 rules of 4 matches each (64
// candidates, the API's per-route maximum of 16 rules), with paths, methods
// and headers. Three requests: one the first candidate takes, one near the
// end (a header match on the catch-all), and one no rule matches (a full
// scan). Also the cost of compiling the table, which happens once per push.
// Run: npm run bench -- routes-match
import { compileServiceRoutes } from '../../policy/routes/compile';
import { validateRouteDocument } from '../../policy/routes/documents';
import type { RouteObject, RouteRequest } from '../../policy/routes';

const N = 2_000_000;
const SERVICE = { key: 'shop.default', namespace: 'default', ports: [{ name: 'http', port: 80 }] };

function doc(): unknown {
  const rules = Array.from({ length: 16 }, (_, i) => ({
    matches: [
      { path: { type: 'Exact', value: `/api/v${i}/items` }, method: 'GET' },
      { path: { type: 'PathPrefix', value: `/api/v${i}/orders` }, headers: [{ name: 'x-tenant', value: `t${i}` }] },
      { path: { type: 'RegularExpression', value: `/api/v${i}/users/[0-9]+` } },
      { path: { type: 'PathPrefix', value: `/static/${i}` }, queryParams: [{ name: 'lang', value: 'en' }] },
    ],
    backendRefs: [{ name: `shop-v${i % 3}`, port: 80, weight: 90 }, { name: 'shop-canary', port: 80, weight: 10 }],
  }));
  rules[15]!.matches.push({ path: { type: 'PathPrefix', value: '/' }, headers: [{ name: 'x-canary', value: '1' }] } as never);
  return { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'shop', creationTimestamp: '2026-01-01T00:00:00Z' }, spec: { parentRefs: [{ group: '', kind: 'Service', name: 'shop', port: 80 }], rules } };
}

const route = validateRouteDocument(doc());
if (!route.ok) throw new Error(route.errors.join('\n'));
const c0 = performance.now();
const routes = compileServiceRoutes(SERVICE, [route.value as RouteObject], new Map(), 'default')!;
const compileMs = performance.now() - c0;
const table = routes.forPort(80)!;

const headers = new Map([['host', 'shop'], ['user-agent', 'bench'], ['x-canary', '1']]);
const requests: Record<string, RouteRequest> = {
  first: { method: 'GET', path: '/api/v0/items', query: '', headers },
  'late (catch-all header match)': { method: 'POST', path: '/checkout', query: 'a=1', headers },
  'no match (full scan)': { method: 'POST', path: '/checkout', query: '', headers: new Map([['host', 'shop']]) },
};

const rows: { request: string; nsPerRequest: number; matched: boolean }[] = [];
for (const [name, req] of Object.entries(requests)) {
  let hits = 0;
  for (let i = 0; i < 10_000; i++) if (table.match(req)) hits++;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) if (table.match(req)) hits++;
  rows.push({ request: name, nsPerRequest: Math.round(Number(process.hrtime.bigint() - t0) / N), matched: hits > 0 });
}
console.log(`| request | ns per match() | matched |\n|---|---|---|\n${rows.map((r) => `| ${r.request} | ${r.nsPerRequest} | ${r.matched ? 'yes' : 'no (404)'} |`).join('\n')}`);
console.log(`compile (once per push): ${compileMs.toFixed(2)} ms for ${routes.targets.length} rules, 65 matches`);
console.log(JSON.stringify({ bench: 'routes-match', compileMs: Number(compileMs.toFixed(2)), rows }));
