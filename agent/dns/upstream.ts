// Forwarding to the host's resolvers: the client's query bytes go out
// unchanged (same id, same EDNS), over the transport the client used, to
// each upstream in order until one answers; the answer comes back as-is.
// A UDP answer with TC set is relayed too: the client then retries over TCP,
// and that retry is forwarded over TCP.
import * as dgram from 'node:dgram';
import { isIP } from 'node:net';
import * as net from 'node:net';
import { formatHostPort, type HostPort } from '../../proto/model/address';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import { isResponseTo } from './message';

/** The answer relayed, and which upstream gave it. */
export interface ForwardResult {
  response: Buffer;
  upstream: HostPort;
}

/** One query, one UDP upstream: a fresh socket per query (random source port, no id clashes). */
export function exchangeUdp(query: Buffer, upstream: HostPort, timeoutMs: number, signal?: AbortSignal): Promise<Buffer> {
  const id = query.readUInt16BE(0);
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(isIP(upstream.host.replace(/%.*$/, '')) === 6 ? 'udp6' : 'udp4');
    let done = false;
    const finish = (err: unknown, msg?: Buffer): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      try {
        sock.close();
      } catch {
        // already closed after an error
      }
      if (msg) resolve(msg);
      else reject(err);
    };
    const onAbort = (): void => finish(new KedgeError('KEDGE_DNS_CLOSED', 'the DNS proxy is shutting down'));
    const timer = setTimeout(() => finish(new KedgeError('KEDGE_DNS_UPSTREAM_TIMEOUT', `no answer within ${timeoutMs} ms`)), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    // connect(): only the upstream's datagrams arrive, and a closed port
    // fails fast with ECONNREFUSED instead of waiting out the timeout.
    sock.on('error', (err) => finish(err));
    sock.on('message', (msg) => {
      if (isResponseTo(msg, id)) finish(undefined, msg);
    });
    sock.connect(upstream.port, upstream.host, () => {
      sock.send(query, (err) => {
        if (err) finish(err);
      });
    });
  });
}

/** One query, one TCP upstream: a connection per query, 2-byte length framing. */
export function exchangeTcp(query: Buffer, upstream: HostPort, timeoutMs: number, signal?: AbortSignal): Promise<Buffer> {
  const id = query.readUInt16BE(0);
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: upstream.host, port: upstream.port });
    let buf: Buffer = Buffer.alloc(0);
    let done = false;
    const finish = (err: unknown, msg?: Buffer): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      sock.destroy();
      if (msg) resolve(msg);
      else reject(err);
    };
    const onAbort = (): void => finish(new KedgeError('KEDGE_DNS_CLOSED', 'the DNS proxy is shutting down'));
    const timer = setTimeout(() => finish(new KedgeError('KEDGE_DNS_UPSTREAM_TIMEOUT', `no answer within ${timeoutMs} ms`)), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    sock.setNoDelay(true);
    sock.on('connect', () => {
      const frame = Buffer.alloc(2 + query.length);
      frame.writeUInt16BE(query.length, 0);
      query.copy(frame, 2);
      sock.write(frame);
    });
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + msg.length);
        if (isResponseTo(msg, id)) return finish(undefined, Buffer.from(msg));
      }
    });
    sock.on('error', (err) => finish(err));
    sock.on('close', () => finish(new KedgeError('KEDGE_DNS_UPSTREAM_CLOSED', 'closed the connection without answering')));
  });
}

/**
 * Tries each upstream in order, `timeoutMs` each, and returns the first
 * answer. Throws KEDGE_DNS_UPSTREAM naming every upstream and why it failed
 * when none answers (the caller then sends SERVFAIL).
 */
export async function forwardQuery(
  query: Buffer,
  transport: 'udp' | 'tcp',
  upstreams: readonly HostPort[],
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<ForwardResult> {
  if (upstreams.length === 0) {
    throw new KedgeError('KEDGE_DNS_UPSTREAM', 'no upstream resolvers are configured: check the nameserver lines in /etc/resolv.conf');
  }
  const failures: string[] = [];
  for (const upstream of upstreams) {
    if (signal?.aborted) break;
    try {
      const exchange = transport === 'udp' ? exchangeUdp : exchangeTcp;
      return { response: await exchange(query, upstream, timeoutMs, signal), upstream };
    } catch (err) {
      failures.push(`${formatHostPort(upstream)} over ${transport}: ${errorMessage(err)}`);
    }
  }
  throw new KedgeError(
    'KEDGE_DNS_UPSTREAM',
    `no upstream resolver answered: ${failures.join('; ') || 'shutting down'}; check the nameservers in /etc/resolv.conf are reachable from the agent's user (DNS capture must exempt it)`,
  );
}
