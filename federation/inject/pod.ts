// Sidecar injection of one pod spec: the pure core shared by
// `kedge kube-inject` (manifests) and the federation's mutating admission
// webhook (pods). It adds
//
//   - kedge-init, an init container that installs the pod's capture rules
//     (`kedge capture install`, NET_ADMIN and NET_RAW, as root, then exits);
//   - kedge-agent, the sidecar (`kedge agent --pod`), unprivileged with no
//     capabilities, which builds its config from the downward API (a native
//     sidecar in pods that run to completion);
//   - kedge-token, the service-account token projected for the audience
//     `kedge` (the federation checks it with the cluster's TokenReview);
//   - kedge-podinfo (labels and annotations, downward API) and kedge-data
//     (the agent's certificate and key, in memory);
//   - the annotations Kedge reads (ANNOTATIONS).
//
// Injection first removes whatever an earlier injection added, so injecting
// twice changes nothing and injecting again with other options replaces it.
import { KedgeError } from '../../proto/model/errors';

/** The annotations Kedge reads and writes on a pod (template). */
export const ANNOTATIONS = Object.freeze({
  /** "false" on a pod (template) or its workload: leave it alone. */
  inject: 'kedge.io/inject',
  /** Written by injection: what was injected (JSON), so a reader can tell. */
  status: 'kedge.io/status',
  /** What the agent registers: NAME:PORT[:TARGET[:PROTO]],...; derived from the app label and container ports when absent. */
  services: 'kedge.io/services',
  /** "false": no capture (no init container); the pod uses explicit upstreams only. */
  capture: 'kedge.io/capture',
});

/** The namespace label the webhook selects on (as istio-injection). */
export const NAMESPACE_LABEL = 'kedge-injection';

/** Names of everything injection adds, so it can be found and replaced. */
export const INJECTED = Object.freeze({
  sidecar: 'kedge-agent',
  init: 'kedge-init',
  volumes: ['kedge-token', 'kedge-podinfo', 'kedge-data'] as readonly string[],
});

/** Where the sidecar finds its inputs; `kedge agent --pod` reads the same paths. */
export const POD_PATHS = Object.freeze({
  tokenDir: '/var/run/secrets/kedge',
  tokenFile: '/var/run/secrets/kedge/token',
  podinfoDir: '/etc/kedge/podinfo',
  dataDir: '/var/lib/kedge/agent',
});

/** The audience of the projected token; the federation asks TokenReview for it. */
export const TOKEN_AUDIENCE = 'kedge';

/** How to inject: the image and how pods reach and trust the federation. */
export interface InjectOptions {
  /** The agent image, e.g. ghcr.io/example/kedge:0.1.0. */
  image: string;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  /** gRPC addresses of the federation, host:port, comma-separated. */
  federationGrpc: string;
  /** The federation's HTTPS API, host:port (the agent fetches the root here and checks it against rootSha256). */
  federationHttp: string;
  /** SHA-256 (hex) of the federation's root-cert.pem. */
  rootSha256: string;
  /** The cluster's name in the federation's config (whose TokenReview checks the pod). */
  cluster: string;
  /** The uid (and gid) the sidecar runs as; its traffic is never captured. */
  proxyUid?: number;
}

/** The defaults of InjectOptions, in one place. */
export const INJECT_DEFAULTS = Object.freeze({
  imagePullPolicy: 'IfNotPresent' as const,
  proxyUid: 1337,
  federationGrpc: 'kedge-federation.kedge-system.svc:15012',
  federationHttp: 'kedge-federation.kedge-system.svc:15014',
  cluster: 'kubernetes',
});

type Obj = Record<string, unknown>;

/** A pod template (or a Pod's metadata and spec), as plain data. */
export interface PodTemplate {
  metadata?: Obj;
  spec: Obj;
}

/** The outcome for one pod template. */
export type PodInjection =
  | { injected: true; template: PodTemplate; replaced: boolean }
  | { injected: false; reason: string };

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const list = (v: unknown): Obj[] => (Array.isArray(v) ? v.filter(isObj) : []);

/** Checks options once; a mistake names the option. */
export function checkInjectOptions(o: InjectOptions): void {
  if (!o.image || /\s/.test(o.image)) throw new KedgeError('KEDGE_USAGE', `--image ${JSON.stringify(o.image)}: give an image reference such as registry.example/kedge:0.1.0`);
  if (!/^[0-9a-f]{64}$/.test(o.rootSha256)) throw new KedgeError('KEDGE_USAGE', `the root fingerprint ${JSON.stringify(o.rootSha256)} is not 64 hex digits: pass --root-sha256 (sha256sum root-cert.pem) or --root-cert FILE`);
  for (const [flag, v] of [['--federation-grpc', o.federationGrpc], ['--federation-http', o.federationHttp]] as const) {
    if (!v.split(',').every((a) => /^[^\s:,]+:\d{1,5}$/.test(a.trim()))) throw new KedgeError('KEDGE_USAGE', `${flag} ${JSON.stringify(v)}: give HOST:PORT${flag === '--federation-grpc' ? '[,HOST:PORT...]' : ''}`);
  }
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(o.cluster)) throw new KedgeError('KEDGE_USAGE', `--cluster ${JSON.stringify(o.cluster)}: give the cluster's name as the federation's config names it`);
}

/**
 * The services annotation derived from a pod template: the `app` (or
 * `app.kubernetes.io/name`) label as the service, every TCP container port
 * as a port. Undefined when there is no such label or no port.
 */
export function derivedServices(template: PodTemplate): string | undefined {
  const labels = isObj(template.metadata?.labels) ? (template.metadata!.labels as Obj) : {};
  const app = labels.app ?? labels['app.kubernetes.io/name'];
  if (typeof app !== 'string' || !/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/.test(app)) return undefined;
  const ports = new Set<number>();
  for (const c of list(template.spec.containers)) {
    for (const p of list(c.ports)) {
      if (typeof p.containerPort === 'number' && (p.protocol === undefined || p.protocol === 'TCP')) ports.add(p.containerPort);
    }
  }
  if (ports.size === 0) return undefined;
  return [...ports].sort((a, b) => a - b).map((p) => `${app}:${p}`).join(',');
}

/** Removes what an earlier injection added; returns whether there was any. */
function strip(spec: Obj, annotations: Obj): boolean {
  let found = false;
  const keep = (arr: unknown, names: readonly string[]) => {
    if (!Array.isArray(arr)) return arr;
    const out = arr.filter((c) => !(isObj(c) && names.includes(String(c.name))));
    if (out.length !== arr.length) found = true;
    return out;
  };
  spec.containers = keep(spec.containers, [INJECTED.sidecar]);
  if (spec.initContainers !== undefined) {
    spec.initContainers = keep(spec.initContainers, [INJECTED.init, INJECTED.sidecar]);
    if (Array.isArray(spec.initContainers) && spec.initContainers.length === 0) delete spec.initContainers;
  }
  if (spec.volumes !== undefined) {
    spec.volumes = keep(spec.volumes, INJECTED.volumes);
    if (Array.isArray(spec.volumes) && spec.volumes.length === 0) delete spec.volumes;
  }
  if (annotations[ANNOTATIONS.status] !== undefined) found = true;
  delete annotations[ANNOTATIONS.status];
  return found;
}

const fieldEnv = (name: string, fieldPath: string) => ({ name, valueFrom: { fieldRef: { fieldPath } } });

/**
 * Injects one pod template; `parentAnnotations` are the workload's own
 * (kedge.io/inject there counts too). Never mutates its input.
 */
export function injectPodTemplate(input: PodTemplate, opts: InjectOptions, parentAnnotations: Obj = {}): PodInjection {
  if (!isObj(input.spec)) return { injected: false, reason: 'it has no pod spec' };
  const template = structuredClone(input);
  const metadata: Obj = isObj(template.metadata) ? template.metadata : {};
  const annotations: Obj = isObj(metadata.annotations) ? metadata.annotations : {};
  const spec = template.spec;
  if (annotations[ANNOTATIONS.inject] === 'false' || parentAnnotations[ANNOTATIONS.inject] === 'false') return { injected: false, reason: `${ANNOTATIONS.inject} is "false"` };
  if (spec.hostNetwork === true) return { injected: false, reason: "it uses the host's network (hostNetwork: true): capture would redirect the node's traffic" };
  if (list(spec.containers).length === 0) return { injected: false, reason: 'it has no containers' };
  const replaced = strip(spec, annotations);
  // Derived from the app's own containers, before the sidecar joins them.
  const derived = annotations[ANNOTATIONS.services] === undefined ? derivedServices(template) : undefined;

  const uid = opts.proxyUid ?? INJECT_DEFAULTS.proxyUid;
  const pull = opts.imagePullPolicy ?? INJECT_DEFAULTS.imagePullPolicy;
  const capture = annotations[ANNOTATIONS.capture] !== 'false';
  const appContainers = list(spec.containers).map((c) => String(c.name));

  const sidecar = {
    name: INJECTED.sidecar,
    image: opts.image,
    imagePullPolicy: pull,
    args: ['agent', '--pod'],
    env: [
      fieldEnv('KEDGE_POD_NAME', 'metadata.name'),
      fieldEnv('KEDGE_POD_NAMESPACE', 'metadata.namespace'),
      fieldEnv('KEDGE_SERVICE_ACCOUNT', 'spec.serviceAccountName'),
      fieldEnv('KEDGE_POD_IP', 'status.podIP'),
      { name: 'KEDGE_FEDERATION', value: opts.federationGrpc },
      { name: 'KEDGE_FEDERATION_HTTP', value: opts.federationHttp },
      { name: 'KEDGE_ROOT_SHA256', value: opts.rootSha256 },
      { name: 'KEDGE_CLUSTER', value: opts.cluster },
      { name: 'KEDGE_PROXY_UID', value: String(uid) },
    ],
    ports: [{ name: 'kedge-metrics', containerPort: 15020, protocol: 'TCP' }],
    resources: { requests: { cpu: '50m', memory: '96Mi' }, limits: { memory: '256Mi' } },
    securityContext: {
      runAsUser: uid,
      runAsGroup: uid,
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    },
    volumeMounts: [
      { name: 'kedge-token', mountPath: POD_PATHS.tokenDir, readOnly: true },
      { name: 'kedge-podinfo', mountPath: POD_PATHS.podinfoDir, readOnly: true },
      { name: 'kedge-data', mountPath: POD_PATHS.dataDir },
    ],
  };
  const init = {
    name: INJECTED.init,
    image: opts.image,
    imagePullPolicy: pull,
    args: ['capture', 'install', '--proxy-user', String(uid), '--proxy-group', String(uid), '--inbound-ports', '*'],
    resources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } },
    // iptables needs NET_ADMIN and NET_RAW as root in the pod's network
    // namespace; nothing else, and only until it exits.
    securityContext: {
      runAsUser: 0,
      runAsNonRoot: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
    },
  };
  // A pod that runs to completion (Jobs, CronJobs, restartPolicy Never or
  // OnFailure) gets the agent as a native sidecar (an init container with
  // restartPolicy: Always, Kubernetes 1.29+): the pod completes when the
  // app does. Others get a classic sidecar container.
  const native = spec.restartPolicy === 'Never' || spec.restartPolicy === 'OnFailure';
  const inits = [...(capture ? [init] : []), ...(native ? [{ ...sidecar, restartPolicy: 'Always' }] : [])];
  if (!native) spec.containers = [...list(spec.containers), sidecar];
  if (inits.length) spec.initContainers = [...list(spec.initContainers), ...inits];
  spec.volumes = [
    ...list(spec.volumes),
    { name: 'kedge-token', projected: { sources: [{ serviceAccountToken: { audience: TOKEN_AUDIENCE, expirationSeconds: 3600, path: 'token' } }] } },
    { name: 'kedge-podinfo', downwardAPI: { items: [{ path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } }, { path: 'annotations', fieldRef: { fieldPath: 'metadata.annotations' } }] } },
    { name: 'kedge-data', emptyDir: { medium: 'Memory', sizeLimit: '1Mi' } },
  ];

  if (derived) annotations[ANNOTATIONS.services] = derived;
  if (annotations['kubectl.kubernetes.io/default-container'] === undefined && appContainers[0]) annotations['kubectl.kubernetes.io/default-container'] = appContainers[0];
  // Only where the app has no scrape annotations of its own (bookinfo's productpage has).
  if (annotations['prometheus.io/scrape'] === undefined && annotations['prometheus.io/port'] === undefined) {
    annotations['prometheus.io/scrape'] = 'true';
    annotations['prometheus.io/port'] = '15020';
    annotations['prometheus.io/path'] = '/stats/prometheus';
  }
  annotations[ANNOTATIONS.status] = JSON.stringify({ containers: native ? [] : [INJECTED.sidecar], initContainers: inits.map((c) => c.name), volumes: INJECTED.volumes, image: opts.image });
  metadata.annotations = annotations;
  template.metadata = metadata;
  return { injected: true, template, replaced };
}
