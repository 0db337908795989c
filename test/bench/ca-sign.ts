// CA signing throughput on one core: CertificateAuthority.signCsr (forge
// layout, native signature) against node-forge's pure-JS cert.sign for the
// same certificate profile, measured in the same run.
//
// Usage: node dist/test/bench/ca-sign.js [--count=3000] [--baseline=60]
// Bounded: fixed counts, and each measured loop also stops after 30 s.
import * as crypto from 'node:crypto';
import * as os from 'node:os';
import * as forge from 'node-forge';
import { generateKeyAndCsr } from '../../agent/identity/csr';
import { CertificateAuthority, createRootCa } from '../../federation/ca';

const TARGET_PER_SEC = 500;
const DISTINCT_CSRS = 200;
const WARMUP = 300;
const TIME_CAP_MS = 30_000;
const DAY = 86_400_000;

function arg(name: string, fallback: number): number {
  const raw = process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
  const n = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${raw}`);
  return n;
}

/** Runs `op` `count` times (or until the time cap); returns ops/s and latency percentiles. */
function measure(count: number, op: (i: number) => void): { ops: number; seconds: number; perSec: number; meanMs: number; p50Ms: number; p99Ms: number } {
  const lat = new Float64Array(count);
  const start = performance.now();
  let n = 0;
  for (; n < count; n++) {
    const t = performance.now();
    op(n);
    lat[n] = performance.now() - t;
    if (performance.now() - start > TIME_CAP_MS) {
      n++;
      break;
    }
  }
  const seconds = (performance.now() - start) / 1000;
  const sorted = Array.from(lat.subarray(0, n)).sort((a, b) => a - b);
  const pct = (p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number;
  return { ops: n, seconds: round(seconds, 3), perSec: round(n / seconds, 1), meanMs: round((seconds * 1000) / n, 3), p50Ms: round(pct(0.5), 3), p99Ms: round(pct(0.99), 3) };
}

function round(x: number, digits: number): number {
  return Number(x.toFixed(digits));
}

async function main(): Promise<void> {
  const count = arg('count', 3000);
  const baselineCount = arg('baseline', 60);
  const identity = (i: number): string => `spiffe://bench.example/ns/ns-${i % DISTINCT_CSRS}/sa/sa-${i % DISTINCT_CSRS}`;

  const loadBefore = os.loadavg()[0] ?? 0;
  const setupStart = performance.now();
  const material = createRootCa({ trustDomain: 'bench.example' });
  const ca = new CertificateAuthority(material, { workloadTtlMs: DAY });
  const csrs: string[] = [];
  // Batches keep the libuv pool busy without queueing hundreds of key generations at once.
  for (let i = 0; i < DISTINCT_CSRS; i += 8) {
    const batch = await Promise.all(Array.from({ length: Math.min(8, DISTINCT_CSRS - i) }, (_, j) => generateKeyAndCsr({ spiffeId: identity(i + j) })));
    csrs.push(...batch.map((b) => b.csrPem));
  }
  const setupSeconds = (performance.now() - setupStart) / 1000;

  // Sanity: the measured operation produces a certificate the root verifies.
  const check = new crypto.X509Certificate(ca.signCsr(csrs[0]!, identity(0)).chainPem[0]!);
  if (!check.verify(new crypto.X509Certificate(material.certPem).publicKey)) throw new Error('signCsr produced a certificate the root does not verify');

  const signOne = (i: number): void => {
    ca.signCsr(csrs[i % DISTINCT_CSRS]!, identity(i));
  };
  measure(WARMUP, signOne);
  const native = measure(count, signOne);

  // Baseline: the same profile built and signed entirely by node-forge
  // (parse the CSR, copy its key, sign with forge's JS RSA).
  const forgeKey = forge.pki.privateKeyFromPem(material.keyPem);
  const forgeCa = forge.pki.certificateFromPem(material.certPem);
  const forgeSignOne = (i: number): void => {
    const csr = forge.pki.certificationRequestFromPem(csrs[i % DISTINCT_CSRS]!);
    if (!csr.verify()) throw new Error('forge rejected a CSR');
    const cert = forge.pki.createCertificate();
    cert.serialNumber = `01${forge.util.bytesToHex(forge.random.getBytesSync(15))}`;
    const now = Date.now();
    cert.validity.notBefore = new Date(now - 60_000);
    cert.validity.notAfter = new Date(now + DAY);
    cert.setSubject([]);
    cert.setIssuer(forgeCa.subject.attributes);
    cert.publicKey = csr.publicKey as forge.pki.rsa.PublicKey;
    cert.setExtensions([
      { name: 'basicConstraints', critical: true, cA: false },
      { name: 'keyUsage', critical: true, digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
      { name: 'subjectKeyIdentifier' },
      { name: 'subjectAltName', critical: true, altNames: [{ type: 6, value: identity(i) }] },
      { name: 'authorityKeyIdentifier', keyIdentifier: forgeCa.generateSubjectKeyIdentifier().getBytes() },
    ]);
    cert.sign(forgeKey, forge.md.sha256.create());
    forge.pki.certificateToPem(cert);
  };
  measure(5, forgeSignOne);
  const forgeJs = measure(baselineCount, forgeSignOne);

  // Context: the RSA-2048 private-key operation alone, the floor of signCsr's cost.
  const caKey = crypto.createPrivateKey(material.keyPem);
  const tbsSized = crypto.randomBytes(700);
  const rawSign = measure(Math.min(count, 2000), () => {
    crypto.sign('sha256', tbsSized, caKey);
  });

  const result = {
    bench: 'ca-sign',
    node: process.version,
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    // Other processes on the machine depress and scatter the numbers; the
    // 1-minute load average before and after says how much there were.
    loadAvg1m: { before: round(loadBefore, 2), after: round(os.loadavg()[0] ?? 0, 2) },
    distinctCsrs: DISTINCT_CSRS,
    setupSeconds: round(setupSeconds, 1),
    signCsr: native,
    forgeBaseline: forgeJs,
    nativeRsaSignOnly: rawSign,
    speedup: round(native.perSec / forgeJs.perSec, 1),
    targetPerSec: TARGET_PER_SEC,
    meetsTarget: native.perSec >= TARGET_PER_SEC,
  };
  const row = (name: string, m: typeof native): string => `| ${name} | ${m.ops} | ${m.perSec} | ${m.meanMs} | ${m.p50Ms} | ${m.p99Ms} |`;
  process.stdout.write(
    [
      `## ca-sign (${result.node}, ${result.cpu}, ${result.cores} cores, single-threaded)`,
      '',
      '| operation | ops | certs/s | mean ms | p50 ms | p99 ms |',
      '|---|---:|---:|---:|---:|---:|',
      row('signCsr (forge layout, native RSA sign)', native),
      row('node-forge cert.sign (baseline)', forgeJs),
      row('crypto.sign RSA-2048 only (floor)', rawSign),
      '',
      `speedup over forge: ${result.speedup}x; target >= ${TARGET_PER_SEC} certs/s: ${result.meetsTarget ? 'met' : 'NOT met'}; ` +
        `load average (1 min) ${result.loadAvg1m.before} before, ${result.loadAvg1m.after} after`,
      '',
      JSON.stringify(result),
      '',
    ].join('\n'),
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`ca-sign bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
