// `kedge kube-inject -f FILE`: prints FILE with the Kedge sidecar injected
// into every workload's pod template (federation/inject). Notes about each
// workload go to stderr; stdout is only the manifest, so it pipes into
// `kubectl apply -f -`.
import * as fs from 'node:fs';
import { KedgeError } from '../proto/model/errors';
import { rootFingerprint } from '../proto/model/join';
import { injectManifest } from '../federation/inject/manifest';
import { checkInjectOptions, INJECT_DEFAULTS, type InjectOptions } from '../federation/inject/pod';
import { defaultTokenFiles, resolveRootCert } from './admin-client';
import { parseFlags } from './args';

const USAGE = `kedge kube-inject -f FILE|- [-o FILE] [--image IMAGE] [--image-pull-policy P] [--root-sha256 HEX | --root-cert FILE]
                  [--federation-grpc HOST:PORT[,HOST:PORT]] [--federation-http HOST:PORT] [--cluster NAME] [--proxy-uid N]

  -f FILE               the manifest (multi-document YAML or JSON; - for stdin)
  -o FILE               write the result to FILE instead of stdout (written only when every document is good)
  --image IMAGE         the agent image (default kedge:VERSION, as deploy/kubernetes/Dockerfile tags it)
  --image-pull-policy P Always, IfNotPresent or Never (default IfNotPresent)
  --root-sha256 HEX     SHA-256 of the federation's root-cert.pem: the pod checks the root it fetches against it
  --root-cert FILE      the root itself, to take the fingerprint from (default: root-cert.pem beside the admin
                        token file, then $KEDGE_ROOT_CERT)
  --federation-grpc A   where pods reach the federation's gRPC port (default ${INJECT_DEFAULTS.federationGrpc})
  --federation-http A   where pods reach its HTTPS port (default ${INJECT_DEFAULTS.federationHttp})
  --cluster NAME        this cluster's name in the federation's config (default ${INJECT_DEFAULTS.cluster})
  --proxy-uid N         uid the sidecar runs as; its traffic is never captured (default ${INJECT_DEFAULTS.proxyUid})`;

/** Runs `kedge kube-inject`; returns the injected manifest (stdout) and writes notes to `notes`. */
export async function runKubeInject(argv: string[], version: string, notes: { write(s: string): unknown } = process.stderr, stdin: () => string = () => fs.readFileSync(0, 'utf8')): Promise<string> {
  const { values, positionals } = parseFlags(argv, {
    filename: { type: 'string', short: 'f' },
    output: { type: 'string', short: 'o' },
    image: { type: 'string' },
    'image-pull-policy': { type: 'string' },
    'root-sha256': { type: 'string' },
    'root-cert': { type: 'string' },
    'admin-token-file': { type: 'string' },
    'federation-grpc': { type: 'string' },
    'federation-http': { type: 'string' },
    cluster: { type: 'string' },
    'proxy-uid': { type: 'string' },
  }, USAGE);
  if (positionals.length || !values.filename) throw new KedgeError('KEDGE_USAGE', `give the manifest with -f FILE (or -f - for stdin)\n\nusage: ${USAGE}`);
  const pull = values['image-pull-policy'] ?? INJECT_DEFAULTS.imagePullPolicy;
  if (pull !== 'Always' && pull !== 'IfNotPresent' && pull !== 'Never') throw new KedgeError('KEDGE_USAGE', `--image-pull-policy ${pull}: use Always, IfNotPresent or Never`);
  const uid = values['proxy-uid'] === undefined ? INJECT_DEFAULTS.proxyUid : Number(values['proxy-uid']);
  if (!Number.isInteger(uid) || uid <= 0 || uid > 65534) throw new KedgeError('KEDGE_USAGE', `--proxy-uid ${values['proxy-uid']}: give a uid from 1 to 65534`);
  let rootSha256 = values['root-sha256'];
  if (rootSha256 === undefined) {
    const tokenFile = values['admin-token-file'] ?? defaultTokenFiles().find((f) => fs.existsSync(f));
    const pem = resolveRootCert(values, tokenFile);
    if (!pem) throw new KedgeError('KEDGE_USAGE', 'no root to pin: pass --root-sha256 HEX (sha256sum DATA_DIR/root-cert.pem on the federation) or --root-cert FILE');
    rootSha256 = rootFingerprint(pem);
  }
  const opts: InjectOptions = {
    image: values.image ?? `kedge:${version}`,
    imagePullPolicy: pull,
    federationGrpc: values['federation-grpc'] ?? INJECT_DEFAULTS.federationGrpc,
    federationHttp: values['federation-http'] ?? INJECT_DEFAULTS.federationHttp,
    rootSha256,
    cluster: values.cluster ?? INJECT_DEFAULTS.cluster,
    proxyUid: uid,
  };
  checkInjectOptions(opts);
  const file = values.filename;
  let text: string;
  try {
    text = file === '-' ? stdin() : fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new KedgeError('KEDGE_USAGE', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`, { cause: err });
  }
  const { text: out, reports } = injectManifest(text, opts, file === '-' ? 'stdin' : file);
  for (const r of reports) {
    const what = `${r.kind.toLowerCase()}/${r.name}`;
    if (r.outcome === 'skipped') notes.write(`kedge kube-inject: ${what} left as it was: ${r.reason}\n`);
    else if (r.outcome === 'unchanged') notes.write(`kedge kube-inject: ${what} is already injected with these options: unchanged\n`);
    else if (r.outcome === 'reinjected') notes.write(`kedge kube-inject: ${what} was injected before: its Kedge containers were replaced with these options\n`);
  }
  if (!reports.some((r) => r.outcome !== 'passed')) notes.write(`kedge kube-inject: ${file} holds no workload with a pod template (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, Pod): nothing injected\n`);
  if (values.output) {
    const tmp = `${values.output}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, out);
    fs.renameSync(tmp, values.output);
    return '';
  }
  return out;
}
