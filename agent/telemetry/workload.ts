// Who this agent's workload is, in the vocabulary of Istio's peer metadata:
// the values a reporter writes for its own side of a request. Derived once
// from the agent's configuration, with Istio's label conventions.
import type { PeerWorkload } from '../proxy/record';

/** The cluster name VM agents carry (the federation writes the same into their endpoints). */
export const VM_CLUSTER = 'vms';

/** Istio's canonical service and revision labels (set by its injector from app/version). */
export const CANONICAL_NAME_LABEL = 'service.istio.io/canonical-name';
export const CANONICAL_REVISION_LABEL = 'service.istio.io/canonical-revision';

/** What identifies a workload, as the agent config and the federation's endpoints carry it. */
export interface WorkloadFacts {
  name: string;
  namespace: string;
  labels: Readonly<Record<string, string>>;
  /** Kubernetes cluster name, '' or undefined for a VM. */
  cluster?: string | undefined;
  /** SPIFFE ID, '' when unknown. */
  principal?: string;
}

/**
 * A workload's telemetry metadata from its name and labels, as Istio's
 * injector and stats filter derive it: app from `app` (else
 * `app.kubernetes.io/name`), version from `version` (else
 * `app.kubernetes.io/version`), the canonical service from its label, else
 * the app, else the workload name; the canonical revision from its label,
 * else the version, else `latest`. A VM's cluster is `vms`.
 */
export function workloadMetadata(w: WorkloadFacts): PeerWorkload {
  const l = w.labels;
  const app = l.app ?? l['app.kubernetes.io/name'] ?? '';
  const version = l.version ?? l['app.kubernetes.io/version'] ?? '';
  return Object.freeze({
    principal: w.principal ?? '',
    workload: w.name,
    namespace: w.namespace,
    app,
    version,
    canonicalService: l[CANONICAL_NAME_LABEL] ?? (app || w.name),
    canonicalRevision: l[CANONICAL_REVISION_LABEL] ?? (version || 'latest'),
    cluster: w.cluster || VM_CLUSTER,
  });
}
