// `kedge kube-inject` over a manifest file: every document of a
// multi-document YAML file is kept as it was, except the pod templates of
// workloads, which get the sidecar (pod.ts). A file that is not YAML, or a
// workload without a pod template, is refused whole, naming the document.
import YAML, { isMap, type Document } from 'yaml';
import { KedgeError } from '../../proto/model/errors';
import { injectPodTemplate, type InjectOptions, type PodTemplate } from './pod';

/** Where each workload kind keeps its pod template. */
export const POD_TEMPLATE_PATHS: Readonly<Record<string, readonly string[]>> = Object.freeze({
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  ReplicationController: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
  Pod: [],
});

/** What happened to one document, for the CLI's notes. */
export interface DocumentReport {
  index: number;
  kind: string;
  name: string;
  outcome: 'injected' | 'reinjected' | 'unchanged' | 'skipped' | 'passed';
  reason?: string;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Injects every workload of a (multi-document) manifest; returns the new text and a report per document. */
export function injectManifest(text: string, opts: InjectOptions, source = 'the input'): { text: string; reports: DocumentReport[] } {
  if (text.includes('\u0000')) throw new KedgeError('KEDGE_BAD_MANIFEST', `${source} is not YAML (it holds NUL bytes); give a Kubernetes manifest (YAML or JSON)`);
  const docs = YAML.parseAllDocuments(text, { prettyErrors: true });
  if (!Array.isArray(docs)) throw new KedgeError('KEDGE_BAD_MANIFEST', `${source} is not YAML: give a Kubernetes manifest`);
  const reports: DocumentReport[] = [];
  const out: string[] = [];
  docs.forEach((doc, i) => {
    const index = i + 1;
    if (doc.errors.length > 0) {
      const e = doc.errors[0]!;
      const line = e.linePos?.[0];
      throw new KedgeError('KEDGE_BAD_MANIFEST', `${source}, document ${index}${line ? ` (line ${line.line}, column ${line.col})` : ''}, is not valid YAML: ${e.message.split('\n')[0]}; nothing was written`);
    }
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) {
      if (hasContent(doc)) out.push(render(doc));
      return;
    }
    if (!isObj(value) || typeof value.kind !== 'string') {
      throw new KedgeError('KEDGE_BAD_MANIFEST', `${source}, document ${index}, is not a Kubernetes object (no kind); give Kubernetes manifests; nothing was written`);
    }
    const kind = value.kind;
    const meta = isObj(value.metadata) ? value.metadata : {};
    const name = typeof meta.name === 'string' ? meta.name : '(no name)';
    const where = POD_TEMPLATE_PATHS[kind];
    if (kind === 'List' && Array.isArray(value.items)) {
      throw new KedgeError('KEDGE_BAD_MANIFEST', `${source}, document ${index}, is a List: give the items as separate documents (kubectl get -o yaml ... | yq '.items[]' -y), then inject; nothing was written`);
    }
    if (!where) {
      reports.push({ index, kind, name, outcome: 'passed' });
      out.push(render(doc));
      return;
    }
    const template = getPath(value, where);
    const templatePath = where.length === 0 ? 'the Pod' : where.join('.');
    if (!isObj(template) || !isObj(template.spec)) {
      throw new KedgeError('KEDGE_BAD_MANIFEST', `${source}, document ${index} (${kind} ${name}), has no pod template at ${where.length === 0 ? 'spec' : `${templatePath}.spec`}: a ${kind} needs one to be injected; fix the manifest; nothing was written`);
    }
    const result = injectPodTemplate(template as unknown as PodTemplate, opts, isObj(meta.annotations) ? meta.annotations : {});
    if (!result.injected) {
      reports.push({ index, kind, name, outcome: 'skipped', reason: result.reason });
      out.push(render(doc));
      return;
    }
    const before = JSON.stringify(template);
    const after = JSON.stringify(result.template);
    if (before === after) {
      reports.push({ index, kind, name, outcome: 'unchanged', reason: 'already injected with these options' });
      out.push(render(doc));
      return;
    }
    // Replace only the template's metadata and spec: comments and the rest of
    // the document stay. A document written in flow style (JSON-like) is
    // written out again in block style, which reads better with a sidecar in it.
    let target: Document = doc;
    if (isMap(doc.contents) && doc.contents.flow) {
      target = new YAML.Document(value);
      target.commentBefore = doc.commentBefore;
    }
    setNode(target, [...where, 'metadata'], result.template.metadata);
    setNode(target, [...where, 'spec'], result.template.spec);
    reports.push({ index, kind, name, outcome: result.replaced ? 'reinjected' : 'injected' });
    out.push(render(target));
  });
  return { text: out.map((d) => (d.endsWith('\n') ? d : `${d}\n`)).join('---\n'), reports };
}

// Sequences unindented under their key, as kubectl and most manifests write them.
const STRINGIFY = { indentSeq: false, lineWidth: 0 } as const;
function render(doc: Document): string {
  return doc.toString(STRINGIFY).replace(/^---\n/, '');
}

function getPath(v: unknown, path: readonly string[]): unknown {
  let cur = v;
  for (const k of path) cur = isObj(cur) ? cur[k] : undefined;
  return cur;
}

function setNode(doc: Document, path: readonly string[], value: unknown): void {
  doc.setIn(path, doc.createNode(value));
}

function hasContent(doc: Document): boolean {
  return doc.commentBefore != null || doc.comment != null || isMap(doc.contents);
}
