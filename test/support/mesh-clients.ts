// Small real clients tests drive proxies with: a line over TCP, and a
// grpc-js unary service without a .proto (raw bytes in and out).
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';

/** Sends a line over TCP; resolves with what came back before the connection closed (or the echo). */
export function tcpExchange(hostPort: string): Promise<string> {
  const i = hostPort.lastIndexOf(':');
  return new Promise((resolve) => {
    const s = net.connect({ host: hostPort.slice(0, i), port: Number(hostPort.slice(i + 1)) });
    let got = '';
    const t = setTimeout(() => s.destroy(), 5_000);
    s.setEncoding('utf8');
    s.on('connect', () => s.write('ping\n'));
    s.on('data', (d: string) => {
      got += d;
      if (got.includes('\n')) s.end();
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(t);
      resolve(got);
    });
  });
}

const RAW = (b: Buffer): Buffer => b;
/** /kedge.test.Echo/Check: a unary method whose server answers the request bytes. */
export const ECHO_DEF = { Check: { path: '/kedge.test.Echo/Check', requestStream: false, responseStream: false, requestSerialize: RAW, requestDeserialize: RAW, responseSerialize: RAW, responseDeserialize: RAW } } as const;
/** A client for ECHO_DEF. */
export const EchoClient = grpc.makeGenericClientConstructor(ECHO_DEF as unknown as grpc.ServiceDefinition, 'Echo');

/** A grpc-js server for ECHO_DEF on 127.0.0.1:0 (h2c); resolves with it and its port. */
export async function startEchoGrpc(): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  server.addService(ECHO_DEF as unknown as grpc.ServiceDefinition, { Check: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request) });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return { server, port };
}

/** `n` unary Echo calls on one channel to `hostPort`; the status codes, in order. */
export async function echoCalls(hostPort: string, n: number): Promise<number[]> {
  const c = new EchoClient(hostPort, grpc.credentials.createInsecure()) as unknown as grpc.Client & { Check(b: Buffer, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void): void };
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    out.push(await new Promise<number>((resolve) => c.Check(Buffer.from('ping'), new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err) => resolve(err?.code ?? 0))));
  }
  c.close();
  return out;
}
