// A small test PKI built with the real openssl CLI, independent of Kedge's
// own CA, so proxy tests check TLS against certificates the product did not
// make. Results are cached per process: each openssl run costs ~10 ms.
import { execFileSync } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TlsIdentity } from '../../agent/proxy/types';

/** A self-signed test root. */
export interface TestCa {
  name: string;
  certPem: string;
  keyPem: string;
}

/** A leaf certificate with one SPIFFE URI SAN, signed by `ca`. */
export interface TestLeaf {
  ca: TestCa;
  spiffeId: string;
  certPem: string;
  keyPem: string;
  /** Uppercase hex, as X509Certificate#serialNumber and PeerCertificate#serialNumber report it. */
  serial: string;
  notAfter: Date;
}

const cas = new Map<string, TestCa>();
const leaves = new Map<string, TestLeaf>();

function inTempDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'kedge-pki-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

// A minimal config, so the host's openssl.cnf adds no extensions of its own.
const CA_CONFIG = `[req]
distinguished_name = dn
x509_extensions = ca
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
`;

/** A P-256 root CA named `name` (cached: the same name returns the same CA). */
export function makeCa(name: string): TestCa {
  let ca = cas.get(name);
  if (ca === undefined) {
    ca = inTempDir((dir) => {
      writeFileSync(join(dir, 'ca.cnf'), CA_CONFIG);
      openssl(dir, ['req', '-x509', '-new', '-config', 'ca.cnf', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', `/O=kedge-test/CN=${name}`]);
      return { name, certPem: readFileSync(join(dir, 'ca.crt'), 'utf8'), keyPem: readFileSync(join(dir, 'ca.key'), 'utf8') };
    });
    cas.set(name, ca);
  }
  return ca;
}

/**
 * A P-256 leaf for `spiffeId`, usable as TLS client and server, signed by
 * `ca`. Cached by CA, ID and `tag`; pass a new tag to get a second
 * certificate (new key and serial) for the same ID, as a rotation would.
 */
export function makeLeaf(ca: TestCa, spiffeId: string, tag = ''): TestLeaf {
  return makeLeafWithSan(ca, `URI:${spiffeId}`, tag, spiffeId);
}

/**
 * A P-256 leaf with the given subjectAltName (openssl syntax, e.g.
 * `IP:127.0.0.1,DNS:localhost` for a server such as etcd), usable as TLS
 * client and server, signed by `ca`; cached like makeLeaf.
 */
export function makeLeafWithSan(ca: TestCa, san: string, tag = '', spiffeId = ''): TestLeaf {
  const key = `${ca.name}\n${san}\n${tag}`;
  let leaf = leaves.get(key);
  if (leaf === undefined) {
    leaf = inTempDir((dir) => {
      writeFileSync(join(dir, 'ca.crt'), ca.certPem);
      writeFileSync(join(dir, 'ca.key'), ca.keyPem, { mode: 0o600 });
      writeFileSync(
        join(dir, 'leaf.ext'),
        `basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\nextendedKeyUsage = serverAuth,clientAuth\nsubjectAltName = ${san}\n`,
      );
      openssl(dir, ['req', '-new', '-config', '/dev/null', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/O=kedge-test']);
      // Random serials: two leaves for one ID must be told apart by serial.
      openssl(dir, ['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', '1', '-extfile', 'leaf.ext', '-out', 'leaf.crt']);
      const certPem = readFileSync(join(dir, 'leaf.crt'), 'utf8');
      const x = new X509Certificate(certPem);
      return { ca, spiffeId, certPem, keyPem: readFileSync(join(dir, 'leaf.key'), 'utf8'), serial: x.serialNumber.toUpperCase(), notAfter: new Date(x.validTo) };
    });
    leaves.set(key, leaf);
  }
  return leaf;
}

/** The proxy identity for a leaf, trusting `trusted` (by default only the leaf's own CA). */
export function toTlsIdentity(leaf: TestLeaf, trusted: readonly TestCa[] = [leaf.ca]): TlsIdentity {
  return {
    spiffeId: leaf.spiffeId,
    certChainPem: leaf.certPem,
    keyPem: leaf.keyPem,
    trustBundlePem: trusted.map((c) => c.certPem).join(''),
    serial: leaf.serial,
    notAfter: leaf.notAfter,
  };
}
