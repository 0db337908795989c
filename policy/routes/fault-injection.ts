// FaultInjection (kedge.io/v1alpha1): the one ExtensionRef filter Kedge
// knows. Its fields follow Istio's HTTPFaultInjection (fixedDelay,
// httpStatus, grpcStatus, percentage.value), so Istio users read it as
// they already do:
//
//     apiVersion: kedge.io/v1alpha1
//     kind: FaultInjection
//     metadata: { name: flaky, namespace: default }
//     spec:
//       delay: { fixedDelay: 100ms, percentage: { value: 50 } }
//       abort: { httpStatus: 503, percentage: { value: 10 } }    # or grpcStatus: UNAVAILABLE
import type { Checker } from '../checker';
import { gatewayDuration, grpcStatus } from './common';
import type { FaultObject } from './model';

export function faultSpec(c: Checker, spec: Record<string, unknown>, meta: { name: string; namespace: string; createdAt: string }): FaultObject {
  const d = c.optionalObject(spec.delay, 'spec.delay', ['fixedDelay', 'percentage']);
  const a = c.optionalObject(spec.abort, 'spec.abort', ['httpStatus', 'grpcStatus', 'percentage']);
  if (spec.delay === undefined && spec.abort === undefined) c.fail('spec', 'needs delay, abort or both');
  let delay: FaultObject['delay'];
  if (d !== undefined) {
    if (d.fixedDelay === undefined) c.fail('spec.delay.fixedDelay', 'is required: how long to hold a request, such as 100ms');
    const ms = gatewayDuration(c, d.fixedDelay, 'spec.delay.fixedDelay');
    const percent = percentage(c, d.percentage, 'spec.delay.percentage');
    if (ms !== undefined && percent !== undefined) delay = { ms, percent };
  }
  let abort: FaultObject['abort'];
  if (a !== undefined) {
    let httpStatus: number | undefined;
    if (a.httpStatus !== undefined) httpStatus = c.int(a.httpStatus, 'spec.abort.httpStatus', undefined, 200, 599);
    const grpc = a.grpcStatus === undefined ? undefined : grpcStatus(c, a.grpcStatus, 'spec.abort.grpcStatus');
    if (a.httpStatus === undefined && a.grpcStatus === undefined) c.fail('spec.abort', 'needs httpStatus (such as 503), grpcStatus (such as UNAVAILABLE) or both');
    const percent = percentage(c, a.percentage, 'spec.abort.percentage');
    if (percent !== undefined) abort = { httpStatus, grpcStatus: grpc, percent };
  }
  return { kind: 'FaultInjection', namespace: meta.namespace, name: meta.name, createdAt: meta.createdAt, delay, abort };
}

// Istio's Percent: { value: 0-100, fractions allowed }; required here, so a
// fault never silently applies to every request.
function percentage(c: Checker, v: unknown, path: string): number | undefined {
  if (v === undefined || v === null) {
    c.fail(path, 'is required: the share of requests, such as percentage: { value: 10 }');
    return undefined;
  }
  const o = c.object(v, path, ['value']);
  if (o === undefined) return undefined;
  if (typeof o.value !== 'number' || !Number.isFinite(o.value) || o.value < 0 || o.value > 100) {
    c.fail(`${path}.value`, 'must be a number from 0 to 100');
    return undefined;
  }
  return o.value;
}
