// The thin edge to @kubernetes/client-node: loading a kubeconfig into a
// KubeConfig with clear errors, per-request timeouts for the generated API
// clients, and watches whose wait for response headers is bounded and which
// can be aborted at any point.
import { readFileSync } from 'node:fs';
import type { Agent } from 'node:http';
import * as k8s from '@kubernetes/client-node';
import { KedgeError, errorMessage } from '../../../proto/model/errors';
import { K8S_ERRORS } from './errors';

/** Reads and checks a kubeconfig file: current context, its cluster's server and its user must exist. */
export function loadKubeconfig(file: string): k8s.KubeConfig {
  try {
    readFileSync(file);
  } catch (err) {
    throw new KedgeError(K8S_ERRORS.KUBECONFIG, `cannot read kubeconfig ${file}: ${errorMessage(err)}; check clusters[].kubeconfig in the federation config`, { cause: err });
  }
  const kc = new k8s.KubeConfig();
  try {
    kc.loadFromFile(file);
  } catch (err) {
    throw new KedgeError(K8S_ERRORS.KUBECONFIG, `kubeconfig ${file} is not valid: ${errorMessage(err)}`, { cause: err });
  }
  checkKubeconfig(kc, file);
  return kc;
}

/** Throws a KUBECONFIG error unless `kc` names a usable current context. */
export function checkKubeconfig(kc: k8s.KubeConfig, description: string): void {
  const context = kc.getCurrentContext();
  if (!context || !kc.getContextObject(context)) {
    throw new KedgeError(K8S_ERRORS.KUBECONFIG, `kubeconfig ${description} has no usable current-context: set current-context to one of its contexts`);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster?.server) throw new KedgeError(K8S_ERRORS.KUBECONFIG, `kubeconfig ${description}: the current context's cluster has no server address`);
  if (!kc.getCurrentUser()) throw new KedgeError(K8S_ERRORS.KUBECONFIG, `kubeconfig ${description}: the current context names no user (credentials)`);
}

/** The API server URL of the current context. */
export function serverOf(kc: k8s.KubeConfig): string {
  return kc.getCurrentCluster()?.server ?? '(no server)';
}

/** Per-call options for a generated API method: abort the request (headers and body) on `signal`. */
export function withSignal(signal: AbortSignal): k8s.ConfigurationOptions<k8s.ObservableMiddleware> {
  return {
    middleware: [
      {
        pre: (ctx) => {
          ctx.setSignal(signal);
          return new k8s.Observable(Promise.resolve(ctx));
        },
        post: (ctx) => new k8s.Observable(Promise.resolve(ctx)),
      },
    ],
    middlewareMergeStrategy: 'append',
  };
}

/** An open (or opening) watch. */
export interface WatchHandle {
  /** Ends the watch; `onDone` follows (with an error). Safe to call at any time, more than once. */
  abort(): void;
}

/** Callbacks of a watch. */
export interface WatchCallbacks {
  onEvent(type: string, object: unknown): void;
  /** The server answered 200: events follow. */
  onEstablished(): void;
  /** Called exactly once: null when the server ended the stream, else the error. */
  onDone(err: Error | null): void;
}

/**
 * Opens a watch with the real client's Watch. Two gaps of Watch in
 * client-node 1.4 are closed here: it replaces its own 30 s timeout signal
 * with a plain one, so a server that accepts and never answers would hold it
 * forever (node-fetch's `timeout`, which bounds the wait for response headers
 * and not the stream, is added); and it returns its AbortController only once
 * headers arrived, so an opening watch is aborted by destroying its agent.
 */
export function openWatch(kc: k8s.KubeConfig, path: string, params: Record<string, string | number | boolean>, headerTimeoutMs: number, cb: WatchCallbacks): WatchHandle {
  let agent: Agent | undefined;
  let aborted = false;
  let done = false;
  const finish = (err: Error | null) => {
    if (done) return;
    done = true;
    cb.onDone(err);
  };
  const config = {
    getCurrentCluster: () => kc.getCurrentCluster(),
    applyToFetchOptions: async (opts: object) => {
      const init = (await kc.applyToFetchOptions(opts)) as { agent?: unknown };
      agent = init.agent as Agent | undefined;
      if (aborted) agent?.destroy();
      return { ...init, timeout: headerTimeoutMs };
    },
  };
  const watch = new k8s.Watch(config as unknown as k8s.KubeConfig);
  let controller: AbortController | undefined;
  watch
    .watch(path, params, (type: string, obj: unknown) => {
      if (!done && !aborted) cb.onEvent(type, obj);
    }, (err: unknown) => finish(err === null || err === undefined ? null : err instanceof Error ? err : new Error(String(err))))
    .then(
      (c) => {
        controller = c;
        if (aborted) c.abort();
        else if (!done) cb.onEstablished();
      },
      (err: unknown) => finish(err instanceof Error ? err : new Error(String(err))),
    );
  return {
    abort: () => {
      if (aborted) return;
      aborted = true;
      controller?.abort();
      agent?.destroy();
      // A watch aborted before it had a socket would otherwise never report.
      setImmediate(() => finish(Object.assign(new Error('watch aborted'), { name: 'AbortError' })));
    },
  };
}
