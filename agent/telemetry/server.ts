// The agent's Prometheus endpoint (admin.metricsListen, 15020 by default):
// GET /metrics, and /stats/prometheus, the path Istio's sidecars are scraped
// at, so existing scrape configs work unchanged. It runs beside the data
// path; a scrape only reads.
import * as http from 'node:http';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import { type HostPort, formatHostPort } from '../../proto/model/address';
import { EXPOSITION_CONTENT_TYPE } from './exposition';
import type { Logger } from '../../proto/model/log';
import type { ListenerLimits } from '../../proto/model/limits';
import { guardListener } from '../../proto/model/listener-guard';

/** A running metrics listener. */
export interface MetricsServer {
  address: HostPort;
  close(): Promise<void>;
}

/** The paths the endpoint answers. */
export const METRICS_PATHS: readonly string[] = ['/metrics', '/stats/prometheus'];

const HINTS: Record<string, string> = {
  EADDRINUSE: 'another process (maybe another Kedge agent or an Istio sidecar) already listens there; set admin.metricsListen to a free address',
  EACCES: 'ports below 1024 need CAP_NET_BIND_SERVICE; set admin.metricsListen to a higher port',
  EADDRNOTAVAIL: 'the address is not assigned to any interface of this host; fix admin.metricsListen',
};

/** Starts the listener; rejects with KEDGE_LISTEN_FAILED naming the address and what to do. */
export async function startMetricsServer(listen: HostPort, render: () => Promise<string> | string | AsyncIterable<string>, what = 'admin.metricsListen', guard?: { limits: ListenerLimits; logger: Logger }): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'text/plain', allow: 'GET' }).end('metrics are read-only; use GET\n');
      return;
    }
    if (!METRICS_PATHS.includes(path ?? '')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`try ${METRICS_PATHS.join(' or ')}\n`);
      return;
    }
    let page: ReturnType<typeof render>;
    try {
      page = render();
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`cannot render metrics: ${errorMessage(err)}\n`);
      return;
    }
    if (typeof page === 'object' && Symbol.asyncIterator in page) {
      void streamPage(res, page, req.method === 'HEAD');
      return;
    }
    Promise.resolve(page)
      .then((body) => {
        res.writeHead(200, { 'content-type': EXPOSITION_CONTENT_TYPE });
        res.end(req.method === 'HEAD' ? undefined : body);
      })
      .catch((err: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`cannot render metrics: ${errorMessage(err)}\n`);
      });
  });
  server.keepAliveTimeout = 65_000;
  // Connection limits and idle timeout (limits.metrics); the idle timeout sits above the keep-alive.
  if (guard) guardListener(server, { name: 'agent metrics', setting: 'limits.metrics', limits: guard.limits, logger: guard.logger });
  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? 'error';
      reject(new KedgeError('KEDGE_LISTEN_FAILED', `metrics cannot listen on ${formatHostPort(listen)} (${code}): ${HINTS[code] ?? `check ${what}`}`, { cause: err }));
    });
    server.listen(listen.port, listen.host, () => resolve((server.address() as { port: number }).port));
  });
  return {
    address: { host: listen.host, port },
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Writes a page piece by piece, waiting for the client to drain; a failure mid-page cuts the response (the scrape fails, visibly). */
async function streamPage(res: http.ServerResponse, page: AsyncIterable<string>, head: boolean): Promise<void> {
  try {
    res.writeHead(200, { 'content-type': EXPOSITION_CONTENT_TYPE });
    if (head) return void res.end();
    for await (const piece of page) {
      if (res.destroyed) return;
      if (!res.write(piece)) await new Promise<void>((resolve) => { res.once('drain', resolve); res.once('close', resolve); });
    }
    res.end();
  } catch {
    res.destroy();
  }
}
