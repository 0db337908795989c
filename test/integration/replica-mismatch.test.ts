// Bad input from the issue: a replica started with a different trust domain
// or CA than the others on the same etcd refuses to start and says which;
// a data dir or store last used by a newer Kedge is refused with the
// version named. Real etcd, real federation processes, CAs made by openssl.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startEtcd, type EtcdServer } from '../support/etcd';
import { startFederationProc, type FederationHandle } from '../support/mesh';
import { runKedge, tempDir } from '../support/procs';
import { openEmbeddedStore } from '../../federation/store/embedded';
import { MESH_RECORD_KEY, VERSION_FILE, checkMeshRecord, compareVersions } from '../../federation/store/mesh-record';
import { createRootCa } from '../../federation/ca/material';
import { silentLogger } from '../../proto/model/log';
import { hasCode } from '../../proto/model/errors';

/** A root and an intermediate under it, made with openssl as an operator would; returns the chain and key files. */
function pluginCa(dir: string, name: string): { cert: string; key: string } {
  const o = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const ext = path.join(dir, 'ca.ext');
  fs.writeFileSync(ext, 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n');
  o(['req', '-x509', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}-root.key`, '-out', `${name}-root.crt`, '-subj', `/CN=${name} root`, '-days', '3650', '-config', '/dev/null', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-addext', 'subjectKeyIdentifier=hash']);
  o(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name} intermediate`, '-config', '/dev/null']);
  o(['x509', '-req', '-in', `${name}.csr`, '-CA', `${name}-root.crt`, '-CAkey', `${name}-root.key`, '-set_serial', '0x1234', '-days', '1825', '-extfile', ext, '-out', `${name}.crt`]);
  const chain = path.join(dir, `${name}-chain.pem`);
  fs.writeFileSync(chain, fs.readFileSync(path.join(dir, `${name}.crt`), 'utf8') + fs.readFileSync(path.join(dir, `${name}-root.crt`), 'utf8'));
  return { cert: chain, key: path.join(dir, `${name}.key`) };
}

/** Starts a federation that must refuse: exit code 1 and its stderr. */
async function refusedStart(args: string[]): Promise<string> {
  const r = await runKedge(['federation', '--data-dir', tempDir('fed-mm'), '--listen-grpc', '127.0.0.1:0', '--listen-http', '127.0.0.1:0', ...args], { timeoutMs: 30_000 });
  assert.equal(r.code, 1, `expected a refused start, got ${r.code}:\n${r.stderr.slice(-2000)}`);
  return r.stderr;
}

describe('replicas that do not match the mesh on their etcd', () => {
  let etcd: EtcdServer;
  let first: FederationHandle;
  before(async () => {
    etcd = await startEtcd();
    first = await startFederationProc({ args: ['--store', `etcd://${etcd.endpoint}`, '--trust-domain', 'mesh.example', '--replica', 'fed-a', '--insecure-http'] });
  });
  after(async () => {
    await first?.proc.stop('SIGKILL');
    await etcd?.destroy();
  });

  it('a replica with another trust domain refuses to start, naming both', { timeout: 60_000 }, async () => {
    const err = await refusedStart(['--store', `etcd://${etcd.endpoint}`, '--trust-domain', 'other.example', '--replica', 'fed-b']);
    assert.match(err, /replica fed-b \(trust domain "other\.example"\) does not match the mesh in etcd 127\.0\.0\.1:\d+: the mesh in this store \(set up by replica fed-a\) uses trust domain "mesh\.example"\. start it with --trust-domain mesh\.example, or give it a store of its own\. Nothing was changed\. \[KEDGE_REPLICA_MISMATCH\]/);
  });

  it('a replica given a plug-in CA on a built-in mesh refuses to start, naming the file', { timeout: 60_000 }, async () => {
    const ca = pluginCa(tempDir('plug'), 'corp');
    const err = await refusedStart(['--store', `etcd://${etcd.endpoint}`, '--trust-domain', 'mesh.example', '--replica', 'fed-c', '--ca-cert', ca.cert, '--ca-key', ca.key]);
    assert.match(err, /signs with its built-in root CA \(set up by replica fed-a\) and this replica was given a plug-in CA \(--ca-cert .*corp-chain\.pem\)\. start it without --ca-cert\/--ca-key.*\[KEDGE_REPLICA_MISMATCH\]/);
  });

  it('the first replica kept running and a matching one joins', { timeout: 60_000 }, async () => {
    const second = await startFederationProc({ args: ['--store', `etcd://${etcd.endpoint}`, '--trust-domain', 'mesh.example', '--replica', 'fed-d'] });
    assert.equal((await fetch(`http://${first.httpAddress}/healthz`)).status, 200);
    await second.proc.stop('SIGKILL');
  });
});

describe('replicas with different plug-in CAs on one etcd', () => {
  let etcd: EtcdServer;
  let first: FederationHandle;
  let dir: string;
  before(async () => {
    dir = tempDir('plug2');
    etcd = await startEtcd();
    const ca = pluginCa(dir, 'one');
    first = await startFederationProc({ args: ['--store', `etcd://${etcd.endpoint}`, '--replica', 'fed-1', '--ca-cert', ca.cert, '--ca-key', ca.key] });
  });
  after(async () => {
    await first?.proc.stop('SIGKILL');
    await etcd?.destroy();
  });

  it('a replica whose intermediate chains to another root refuses to start, naming both roots', { timeout: 60_000 }, async () => {
    const other = pluginCa(dir, 'two');
    const err = await refusedStart(['--store', `etcd://${etcd.endpoint}`, '--replica', 'fed-2', '--ca-cert', other.cert, '--ca-key', other.key]);
    assert.match(err, /its plug-in CA \(--ca-cert .*two-chain\.pem\) chains to root [0-9A-F:]{95}, the other replicas' to root [0-9A-F:]{95}\. give it the intermediate the other replicas use.*\[KEDGE_REPLICA_MISMATCH\]/);
  });

  it('a replica with no plug-in CA on a plug-in mesh refuses to start', { timeout: 60_000 }, async () => {
    const err = await refusedStart(['--store', `etcd://${etcd.endpoint}`, '--replica', 'fed-3']);
    assert.match(err, /the mesh in this store signs with a plug-in CA \(set up by replica fed-1\) and this replica has none\. start it with the same --ca-cert and --ca-key as the other replicas.*\[KEDGE_REPLICA_MISMATCH\]/);
  });
});

describe('data from a newer Kedge', () => {
  it('a data dir last used by a newer Kedge is refused with the version named, and left as it was', { timeout: 60_000 }, async () => {
    const fed = await startFederationProc();
    await fed.proc.stop();
    assert.equal(fs.readFileSync(path.join(fed.dataDir, VERSION_FILE), 'utf8').trim(), '0.1.0');
    fs.writeFileSync(path.join(fed.dataDir, VERSION_FILE), '9.3.0\n');
    const before = fs.readdirSync(fed.dataDir).sort();
    const r = await runKedge(fed.args, { timeoutMs: 30_000 });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /data dir .* was last used by Kedge 9\.3\.0, newer than this Kedge 0\.1\.0: .*Run Kedge 9\.3\.0 or newer, or restore a backup taken with this version\. Nothing was changed\. \[KEDGE_DATA_DIR_NEWER\]/);
    assert.deepEqual(fs.readdirSync(fed.dataDir).sort(), before);
    assert.equal(fs.readFileSync(path.join(fed.dataDir, VERSION_FILE), 'utf8'), '9.3.0\n');
  });

  it('a store last used by a newer Kedge is refused; an older one is moved up; a legacy store is checked by its root', async () => {
    const dir = tempDir('mesh-record');
    const store = await openEmbeddedStore(dir, { logger: silentLogger() });
    try {
      const me = { trustDomain: 'td.example', ca: { kind: 'built-in' as const }, replica: 'r1', version: '0.1.0', where: 'the test store' };
      // Legacy: no record, but a built-in root for another trust domain.
      const root = createRootCa({ trustDomain: 'old.example' });
      await store.put('/kedge/ca/root', JSON.stringify({ version: 2, sequence: 1, generation: 1, roots: [{ certPem: root.certPem, key: { pem: root.keyPem } }], signing: 'x' }));
      await assert.rejects(checkMeshRecord(store, me), (e: unknown) => hasCode(e, 'KEDGE_REPLICA_MISMATCH') && /built-in root CA in the store is for trust domain "old\.example"\. start it with --trust-domain old\.example/.test((e as Error).message));
      assert.equal(await store.get(MESH_RECORD_KEY), undefined, 'nothing written on a refusal');
      await store.delete('/kedge/ca/root');
      await checkMeshRecord(store, me);
      await checkMeshRecord(store, { ...me, version: '0.2.1' });
      assert.equal(JSON.parse((await store.get(MESH_RECORD_KEY))!.value).kedge, '0.2.1');
      await assert.rejects(checkMeshRecord(store, me), (e: unknown) => hasCode(e, 'KEDGE_DATA_DIR_NEWER') && /last used by Kedge 0\.2\.1, newer than this replica's Kedge 0\.1\.0/.test((e as Error).message));
      await checkMeshRecord(store, { ...me, version: '0.2.0' }); // a patch release reads its minor's data
      assert.ok(compareVersions('1.0.0', '0.9.9') > 0 && compareVersions('0.1.9', '0.1.0') === 0);
    } finally {
      await store.close();
    }
  });
});
