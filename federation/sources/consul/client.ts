// The thin edge over the `consul` package: the two reads the source needs,
// as blocking queries that return the body with its X-Consul-Index.
import type { EventEmitter } from 'node:events';
import Consul from 'consul';
import { KedgeError } from '../../../proto/model/errors';
import type { BlockingAnswer } from './blocking-query';

/** Per-request parameters of a (possibly blocking) read. */
export interface ConsulReadOptions {
  /** Block until the index moves past this; undefined for an immediate answer. */
  index: bigint | undefined;
  waitMs: number;
  /** Budget on top of the wait (and of Consul's wait/16 jitter) before the request is abandoned. */
  timeoutMs: number;
  token: string | undefined;
  /** Emits 'cancel' to abort the request. */
  ctx: EventEmitter;
}

/** Parses `http://host:port` (or https); the port defaults to the scheme's. */
export function parseConsulAddress(address: string): { host: string; port: number; secure: boolean } {
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw new KedgeError('KEDGE_BAD_ADDRESS', `invalid Consul address ${JSON.stringify(address)}: write it as a URL such as http://127.0.0.1:8500`);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || (url.pathname !== '/' && url.pathname !== '') || url.search || url.username) {
    throw new KedgeError('KEDGE_BAD_ADDRESS', `invalid Consul address ${JSON.stringify(address)}: write it as http(s)://host:port with no path, such as http://127.0.0.1:8500`);
  }
  const secure = url.protocol === 'https:';
  return { host: url.hostname, port: url.port ? Number(url.port) : secure ? 443 : 80, secure };
}

/** Catalog and health reads for one datacenter. */
export class ConsulClient {
  private readonly consul: Consul;

  constructor(address: string, private readonly datacenter: string) {
    this.consul = new Consul(parseConsulAddress(address));
  }

  /** `GET /v1/catalog/services`. */
  catalogServices(o: ConsulReadOptions): Promise<BlockingAnswer<unknown>> {
    return this.read((opts) => this.consul.catalog.service.list(opts as never), o, {});
  }

  /** `GET /v1/health/service/<name>?passing=true`: instances whose every check passes. */
  healthService(service: string, o: ConsulReadOptions): Promise<BlockingAnswer<unknown>> {
    return this.read((opts) => this.consul.health.service(opts as never), o, { service, passing: true });
  }

  /** Closes the keep-alive sockets. */
  destroy(): void {
    this.consul.destroy();
  }

  private async read(call: (opts: Record<string, unknown>) => Promise<unknown>, o: ConsulReadOptions, extra: Record<string, unknown>): Promise<BlockingAnswer<unknown>> {
    const opts: Record<string, unknown> = { ...extra, dc: this.datacenter, ctx: o.ctx };
    if (o.token) opts.token = o.token;
    if (o.index === undefined) {
      opts.timeout = o.timeoutMs;
    } else {
      opts.index = o.index.toString();
      opts.wait = `${o.waitMs}ms`;
      opts.timeout = o.waitMs + Math.ceil(o.waitMs / 16) + o.timeoutMs;
    }
    // With ctx.includeResponse the client resolves [response, body].
    const [res, body] = (await call(opts)) as [{ headers: Record<string, string | string[] | undefined> }, unknown];
    const raw = res.headers['x-consul-index'];
    if (typeof raw !== 'string' || !/^\d+$/.test(raw)) {
      throw new KedgeError('KEDGE_CONSUL_BAD_RESPONSE', 'the answer has no X-Consul-Index header: check that the address points at a Consul HTTP API');
    }
    return { index: BigInt(raw), body, filteredByAcl: res.headers['x-consul-results-filtered-by-acls'] === 'true' };
  }
}
