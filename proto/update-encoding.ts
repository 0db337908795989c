// The Connect stream's FederationMessage serializer, with each Service
// encoded once instead of once per subscriber. The federation sends the same
// Service object (same version) to every agent subscribed to it (20 each at
// the scale of issue 4, and all of them again in every agent's initial state),
// and the generated serializer turns each message into a protobufjs object
// tree before encoding it: most of what a push allocated. Here a ServiceUpdate
// is assembled from cached Service bytes; the result is byte for byte what the
// generated serializer produces (test/unit/update-encoding.test.ts), so agents
// see no difference.
//
// Wire format (kedge/v1/federation.proto), written in field-number order as
// protobufjs writes it: FederationMessage.update = 2 (length-delimited), and in
// ServiceUpdate nonce = 1, services = 2 (repeated), removed = 3 (repeated).
import type { FederationMessage } from './generated/kedge/v1/FederationMessage';
import type { Service } from './generated/kedge/v1/Service';

const TAG_MESSAGE_UPDATE = (2 << 3) | 2;
const TAG_UPDATE_NONCE = (1 << 3) | 2;
const TAG_UPDATE_SERVICES = (2 << 3) | 2;
const TAG_UPDATE_REMOVED = (3 << 3) | 2;
const SURROGATE = /[\uD800-\uDFFF]/;

/** Serializes a FederationMessage; the generated one is the fallback and the reference. */
export type FederationMessageSerializer = (msg: FederationMessage) => Buffer;

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size += 1;
  }
  return size;
}

function writeVarint(buf: Buffer, at: number, n: number): number {
  while (n >= 0x80) {
    buf[at++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[at++] = n;
  return at;
}

function readVarint(buf: Buffer, at: number): { value: number; next: number } | undefined {
  let value = 0;
  let scale = 1;
  for (let i = at; i < buf.length && i < at + 5; i++) {
    value += (buf[i]! & 0x7f) * scale;
    if (buf[i]! < 0x80) return { value, next: i + 1 };
    scale *= 128;
  }
  return undefined;
}

// The payload of the single length-delimited field `tag` that makes up all
// of `buf`, or undefined if buf is anything else.
function onlyField(buf: Buffer, tag: number): Buffer | undefined {
  if (buf.length < 2 || buf[0] !== tag) return undefined;
  const len = readVarint(buf, 1);
  if (!len || len.next + len.value !== buf.length) return undefined;
  return buf.subarray(len.next);
}

/**
 * A FederationMessage serializer that encodes each Service once per object
 * and version. A service object must not change without its version changing
 * (MeshService objects never do; a service whose version is empty is encoded
 * every time). Messages other than a plain update go to `generated`.
 */
export function cachingUpdateSerializer(generated: FederationMessageSerializer): FederationMessageSerializer {
  const encoded = new WeakMap<object, { version: string; bytes: Buffer }>();

  // The Service's own bytes, cut out of the generated encoding of an update
  // holding only it, so they are exactly what the generated serializer writes.
  const serviceBytes = (svc: Service): Buffer | undefined => {
    const version = typeof svc.version === 'string' ? svc.version : '';
    const hit = version ? encoded.get(svc) : undefined;
    if (hit && hit.version === version) return hit.bytes;
    const whole = generated({ update: { services: [svc] } });
    const update = onlyField(whole, TAG_MESSAGE_UPDATE);
    const inner = update && onlyField(update, TAG_UPDATE_SERVICES);
    if (!inner) return undefined;
    // Its own exact-size memory, not a slice of a pooled or larger buffer.
    const bytes = Buffer.allocUnsafeSlow(inner.length);
    inner.copy(bytes);
    if (version) encoded.set(svc, { version, bytes });
    return bytes;
  };

  return function serializeFederationMessage(msg) {
    const u = msg.update;
    if (!u || msg.registered != null || (u.services != null && !Array.isArray(u.services)) || (u.removed != null && !Array.isArray(u.removed))) return generated(msg);
    const services: Buffer[] = [];
    for (const svc of u.services ?? []) {
      const bytes = svc !== null && typeof svc === 'object' ? serviceBytes(svc) : undefined;
      if (!bytes) return generated(msg);
      services.push(bytes);
    }
    // protobufjs and Buffer write UTF-8 alike except for lone surrogates;
    // anything with a surrogate (none of Kedge's keys or nonces) is left to it.
    const strings = [...(u.nonce != null ? [String(u.nonce)] : []), ...(u.removed ?? []).map(String)];
    if (strings.some((s) => SURROGATE.test(s))) return generated(msg);
    const nonce = u.nonce != null ? Buffer.from(strings[0]!) : undefined;
    const removed = strings.slice(nonce ? 1 : 0).map((s) => Buffer.from(s));
    let inner = 0;
    if (nonce) inner += 1 + varintSize(nonce.length) + nonce.length;
    for (const b of services) inner += 1 + varintSize(b.length) + b.length;
    for (const b of removed) inner += 1 + varintSize(b.length) + b.length;
    const out = Buffer.allocUnsafe(1 + varintSize(inner) + inner);
    out[0] = TAG_MESSAGE_UPDATE;
    let at = writeVarint(out, 1, inner);
    const put = (tag: number, b: Buffer) => {
      out[at++] = tag;
      at = writeVarint(out, at, b.length);
      at += b.copy(out, at);
    };
    if (nonce) put(TAG_UPDATE_NONCE, nonce);
    for (const b of services) put(TAG_UPDATE_SERVICES, b);
    for (const b of removed) put(TAG_UPDATE_REMOVED, b);
    return out;
  };
}
