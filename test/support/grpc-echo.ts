// A gRPC echo service (grpc-js, unmodified) and an h2c app for the
// HTTP/2 and gRPC proxy tests: what each server saw is counted, so tests
// can tell which endpoint got a call, whether it was cancelled, and what a
// mirror received. The grpc.health.v1 service is grpc-node's own
// grpc-health-check package.
import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import type * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { HealthImplementation } from 'grpc-health-check';

/** Messages up to this size pass in the tests (several MiB, as the issue asks). */
export const BIG = 8 * 1024 * 1024;

const PROTO = `
syntax = "proto3";
package kedge.test;
message Msg { string text = 1; bytes data = 2; int32 code = 3; int32 count = 4; int32 delay_ms = 5; }
service Echo {
  rpc Unary(Msg) returns (Msg);
  rpc Stream(Msg) returns (stream Msg);
  rpc Bidi(stream Msg) returns (stream Msg);
}
`;

/** The echo message. */
export interface Msg {
  text?: string;
  data?: Buffer;
  code?: number;
  count?: number;
  delayMs?: number;
}

/** A grpc-js client of the echo service. */
export type EchoClient = grpc.Client & {
  Unary(m: Msg, md: grpc.Metadata, o: grpc.CallOptions, cb: (err: grpc.ServiceError | null, r?: Msg) => void): grpc.ClientUnaryCall;
  Stream(m: Msg, md?: grpc.Metadata): grpc.ClientReadableStream<Msg>;
  Bidi(): grpc.ClientDuplexStream<Msg, Msg>;
};

/** The echo package loaded from PROTO. */
export function loadEcho(): grpc.GrpcObject {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-grpc-')), 'echo.proto');
  fs.writeFileSync(file, PROTO);
  return grpc.loadPackageDefinition(protoLoader.loadSync(file, { keepCase: false, longs: Number, defaults: true }));
}

/** The client constructor of the echo service. */
export function echoClient(pkg: grpc.GrpcObject): new (addr: string, creds: grpc.ChannelCredentials, opts?: grpc.ChannelOptions) => EchoClient {
  return ((pkg.kedge as grpc.GrpcObject).test as grpc.GrpcObject).Echo as unknown as new (addr: string, creds: grpc.ChannelCredentials, opts?: grpc.ChannelOptions) => EchoClient;
}

/** One echo server and what it saw. */
export interface EchoServer {
  server: grpc.Server;
  port: number;
  /** Calls started. */
  calls: number;
  /** Unary calls answered. */
  answered: number;
  /** Unary calls being handled now, and the most at once. */
  inFlight: number;
  maxInFlight: number;
  cancelled: number;
  /** Texts of unary requests, in order. */
  texts: string[];
  /** Messages received on bidi streams. */
  bidiMessages: number;
  /** Every unary answer waits this long first (0: none). */
  mode: { delayMs: number };
  /** grpc.health.v1 of this server. */
  health: HealthImplementation;
}

/** An echo server named `name` on 127.0.0.1 (h2c), with grpc.health.v1. */
export async function echoServer(name: string, pkg: grpc.GrpcObject): Promise<EchoServer> {
  const health = new HealthImplementation({ '': 'SERVING', 'kedge.test.Echo': 'SERVING' });
  const e: EchoServer = { server: new grpc.Server({ 'grpc.max_receive_message_length': BIG, 'grpc.max_send_message_length': BIG }), port: 0, calls: 0, answered: 0, inFlight: 0, maxInFlight: 0, cancelled: 0, texts: [], bidiMessages: 0, mode: { delayMs: 0 }, health };
  const svc = ((pkg.kedge as grpc.GrpcObject).test as grpc.GrpcObject).Echo as grpc.ServiceClientConstructor;
  e.server.addService(svc.service, {
    Unary: (call: grpc.ServerUnaryCall<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) => {
      e.calls++;
      let open = true;
      const over = (): void => {
        if (open) e.inFlight--;
        open = false;
      };
      call.on('cancelled', () => {
        e.cancelled++;
        over();
      });
      const m = call.request;
      e.texts.push(m.text ?? '');
      e.inFlight++;
      e.maxInFlight = Math.max(e.maxInFlight, e.inFlight);
      const reply = (): void => {
        over();
        e.answered++;
        const trailer = new grpc.Metadata();
        trailer.set('x-trailer', `t-${name}`);
        trailer.set('x-bin-bin', Buffer.from([0, 1, 2, 255]));
        if (m.code) return cb({ code: m.code, details: `failing with ${m.code}`, metadata: trailer } as grpc.ServiceError);
        const md = new grpc.Metadata();
        md.set('x-server', name);
        const seen = call.metadata.get('x-bin-bin')[0];
        if (seen !== undefined) md.set('x-echo-bin', seen as Buffer);
        call.sendMetadata(md);
        cb(null, { text: `${name}:${m.text}`, data: m.data }, trailer);
      };
      const delay = m.delayMs || e.mode.delayMs;
      if (delay) setTimeout(reply, delay);
      else reply();
    },
    Stream: (call: grpc.ServerWritableStream<Msg, Msg>) => {
      e.calls++;
      for (let i = 0; i < (call.request.count ?? 0); i++) call.write({ text: `${name}:${i}` });
      call.end();
    },
    Bidi: (call: grpc.ServerDuplexStream<Msg, Msg>) => {
      e.calls++;
      call.on('data', (m: Msg) => {
        e.bidiMessages++;
        call.write({ text: m.text });
      });
      call.on('end', () => call.end());
      call.on('cancelled', () => e.cancelled++);
    },
  });
  health.addToServer(e.server);
  e.port = await new Promise<number>((resolve, reject) => e.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return e;
}

/** An h2c app for an `http2` port: answers every request with its name and the bytes of the body it got. */
export async function h2App(name: string): Promise<{ server: http2.Http2Server; port: number; seen: { path: string; bytes: number }[] }> {
  const seen: { path: string; bytes: number }[] = [];
  const server = http2.createServer((req, res) => {
    let bytes = 0;
    req.on('data', (d: Buffer) => (bytes += d.length));
    req.on('end', () => {
      seen.push({ path: req.url, bytes });
      res.end(`${name} ${req.url}\n`);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, port: (server.address() as net.AddressInfo).port, seen };
}
