// One DNS message in, one response (or nothing) out, whatever the transport.
// Sockets live in server.ts; forwarding is passed in, so this runs in tests
// with no network at all.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../../proto/model/log';
import { errorMessage } from '../../proto/model/errors';
import { RCODE, buildResponse, inspectQuery, udpResponseLimit, type ParsedQuery } from './message';
import { classifyName, decideLocal, type LocalDecision, type MeshLookup } from './names';

/** The DNS proxy's counters, copied out by `stats()`. */
export interface DnsStats {
  /** Messages received (UDP datagrams and TCP frames). */
  queries: number;
  /** Answered from the mesh: VIPs, NODATA and NXDOMAIN for `svc` names. */
  answeredLocally: number;
  /** Relayed from an upstream resolver. */
  forwarded: number;
  /** formErr + notImp + servFail + dropped. */
  errors: number;
  formErr: number;
  notImp: number;
  servFail: number;
  /** Not answered: no readable header, a response sent to us, or overload. */
  dropped: number;
  /** Local NXDOMAIN answers (included in answeredLocally). */
  nxDomain: number;
  /** Lookups that had to wait for the federation ('unknown-yet'). */
  waited: number;
  /** Queries no upstream answered (each also counted in servFail). */
  upstreamFailures: number;
}

/** Everything a handler needs; the server fills it from DnsServerOptions. */
export interface QueryHandlerOptions {
  domain: string;
  ownNamespace: string;
  lookup: (key: string) => MeshLookup;
  onLookup?: (key: string) => void;
  resolveWait?: (key: string, signal: AbortSignal) => Promise<MeshLookup>;
  unknownWaitMs: number;
  /**
   * After a wait ends still 'unknown-yet', further queries for that key do
   * not wait again for this long, so a name the federation never answers
   * for (example.com has the mesh's two-label shape) costs one wait, not one
   * per query.
   */
  rewaitAfterMs: number;
  pollIntervalMs: number;
  ttlSeconds: number;
  /** Relays the raw query; throws when no upstream answers. */
  forward: (query: Buffer, transport: 'udp' | 'tcp') => Promise<Buffer>;
  logger: Logger;
  /** The clock for rewaitAfterMs (default Date.now); waits themselves use real timers. */
  now?: () => number;
  /** Aborted when the server closes: ends waits early. */
  signal?: AbortSignal;
}

/** Turns messages into responses and keeps the counters. */
export interface QueryHandler {
  /** Never rejects; undefined means send nothing. */
  handle(msg: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | undefined>;
  /** Counts a message dropped before it reached `handle` (overload). */
  countDropped(): void;
  stats(): DnsStats;
}

const TCP_MAX = 65_535;
// Bounds the memory of keys that stayed 'unknown-yet' (oldest forgotten first).
const MAX_GAVE_UP = 10_000;

/** Builds the handler the UDP and TCP listeners share, with fresh counters. */
export function createQueryHandler(o: QueryHandlerOptions): QueryHandler {
  const s: DnsStats = {
    queries: 0,
    answeredLocally: 0,
    forwarded: 0,
    errors: 0,
    formErr: 0,
    notImp: 0,
    servFail: 0,
    dropped: 0,
    nxDomain: 0,
    waited: 0,
    upstreamFailures: 0,
  };
  const log = o.logger;
  const gaveUp = new Map<string, number>(); // key → until when not to wait again
  const now = o.now ?? Date.now;

  function shouldWait(key: string): boolean {
    const until = gaveUp.get(key);
    if (until === undefined) return true;
    if (now() < until) return false;
    gaveUp.delete(key);
    return true;
  }

  function rememberGaveUp(key: string): void {
    gaveUp.delete(key);
    gaveUp.set(key, now() + o.rewaitAfterMs);
    if (gaveUp.size > MAX_GAVE_UP) gaveUp.delete(gaveUp.keys().next().value as string);
  }

  async function waitForService(key: string): Promise<MeshLookup> {
    s.waited++;
    const wait = new AbortController();
    const stop = (): void => wait.abort();
    o.signal?.addEventListener('abort', stop, { once: true });
    try {
      if (o.resolveWait) {
        const timeout = sleep(o.unknownWaitMs, 'unknown-yet' as const, { signal: wait.signal });
        const found = await Promise.race([o.resolveWait(key, wait.signal), timeout]).catch(() => 'unknown-yet' as const);
        // A resolveWait that gave up may have missed a push: ask once more.
        return found === 'unknown-yet' ? o.lookup(key) : found;
      }
      const deadline = Date.now() + o.unknownWaitMs;
      for (;;) {
        const found = o.lookup(key);
        if (found !== 'unknown-yet' || Date.now() >= deadline) return found;
        await sleep(Math.min(o.pollIntervalMs, Math.max(0, deadline - Date.now())), undefined, { signal: wait.signal });
      }
    } catch {
      return 'unknown-yet'; // aborted: the server is closing
    } finally {
      wait.abort();
      o.signal?.removeEventListener('abort', stop);
    }
  }

  async function decide(q: ParsedQuery): Promise<LocalDecision> {
    if (q.question.class !== 'IN') return { kind: 'forward' };
    const name = classifyName(q.question.name, o.domain, o.ownNamespace);
    if (name.kind === 'other') return { kind: 'forward' };
    try {
      o.onLookup?.(name.key);
    } catch (err) {
      log.warn({ err, key: name.key }, 'DNS: subscribing to a looked-up service failed; answering from what the agent has');
    }
    let found = o.lookup(name.key);
    if (found === 'unknown-yet' && shouldWait(name.key)) {
      found = await waitForService(name.key);
      if (found === 'unknown-yet' && !o.signal?.aborted) rememberGaveUp(name.key);
    }
    return decideLocal(name, q.question.type, found);
  }

  function servfail(q: ParsedQuery, limit: number): Buffer {
    s.servFail++;
    s.errors++;
    return buildResponse(q, { rcode: RCODE.SERVFAIL }, limit);
  }

  async function handle(msg: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    s.queries++;
    const v = inspectQuery(msg, transport);
    if (v.kind === 'drop') {
      s.dropped++;
      s.errors++;
      log.debug({ transport, reason: v.reason }, 'DNS: dropped a message');
      return undefined;
    }
    if (v.kind === 'reject') {
      if (v.rcode === RCODE.NOTIMP) s.notImp++;
      else s.formErr++;
      s.errors++;
      log.debug({ transport, rcode: v.rcode, reason: v.reason }, 'DNS: rejected a query');
      return v.response;
    }
    const q = v.query;
    const limit = transport === 'udp' ? udpResponseLimit(q) : TCP_MAX;
    let d: LocalDecision;
    try {
      d = await decide(q);
    } catch (err) {
      log.error({ err, name: q.question.name }, 'DNS: looking a name up in the mesh failed; answering SERVFAIL');
      return servfail(q, limit);
    }
    switch (d.kind) {
      case 'answer':
        s.answeredLocally++;
        return buildResponse(q, { rcode: RCODE.NOERROR, a: d.a, aaaa: d.aaaa, ttlSeconds: o.ttlSeconds, authoritative: true }, limit);
      case 'nodata':
        s.answeredLocally++;
        return buildResponse(q, { rcode: RCODE.NOERROR, authoritative: true }, limit);
      case 'nxdomain':
        s.answeredLocally++;
        s.nxDomain++;
        return buildResponse(q, { rcode: RCODE.NXDOMAIN, authoritative: true }, limit);
      case 'forward':
        try {
          const response = await o.forward(msg, transport);
          s.forwarded++;
          return response;
        } catch (err) {
          s.upstreamFailures++;
          log.warn({ name: q.question.name, type: q.question.type, transport, err: errorMessage(err) }, 'DNS: forwarding failed; answering SERVFAIL');
          return servfail(q, limit);
        }
    }
  }

  return {
    async handle(msg, transport) {
      try {
        return await handle(msg, transport);
      } catch (err) {
        // Nothing above should throw; if it does, one query fails, not the proxy.
        s.dropped++;
        s.errors++;
        log.error({ err }, 'DNS: unexpected error handling a query; dropped it');
        return undefined;
      }
    },
    countDropped() {
      s.queries++;
      s.dropped++;
      s.errors++;
    },
    stats: () => ({ ...s }),
  };
}
