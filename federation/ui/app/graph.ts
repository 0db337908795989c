// The service graph: Cytoscape.js draws services and the traffic between
// them (breadthfirst layout, callers above callees); the same edges are a
// table below, where each row's button opens the edge's detail (routes,
// policies, recent errors), as a click on the drawn edge does.
import { html } from 'htm/preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import cytoscape from 'cytoscape';
import type { DashboardState } from '../model/state';
import { edgeDetail, graphElements, graphView } from '../model/graph';
import { Badge } from './common';

const COLOURS = { ok: '#1a7f37', warn: '#9a6700', bad: '#cf222e' } as const;

export function ServiceGraphView({ state }: { state: DashboardState }) {
  const [namespace, setNamespace] = useState('');
  const [selected, setSelected] = useState('');
  const graph = useMemo(() => graphView(state, namespace), [state.traffic, namespace]);
  const detail = useMemo(() => (selected ? edgeDetail(state, selected) : undefined), [state.traffic, state.routes, state.policies, state.authorization, state.endpoints, selected]);
  const box = useRef<HTMLDivElement>(null);
  const cy = useRef<cytoscape.Core | undefined>(undefined);
  const shape = JSON.stringify([graph.nodes.map((n) => n.id), graph.edges.map((e) => e.row.id)]);

  useEffect(() => {
    if (!box.current) return;
    const c = cytoscape({
      container: box.current,
      elements: [],
      boxSelectionEnabled: false,
      style: [
        { selector: 'node', style: { label: 'data(label)', 'font-size': 11, 'text-valign': 'center', 'text-halign': 'center', 'background-color': '#fff', 'border-width': 2, 'border-color': '#57606a', width: 160, height: 44, shape: 'round-rectangle' } },
        { selector: 'node[kind = "workload"]', style: { shape: 'ellipse' } },
        { selector: 'node[kind = "unknown"]', style: { shape: 'diamond', 'border-style': 'dashed' } },
        { selector: 'edge', style: { width: 2, 'line-color': COLOURS.ok, 'target-arrow-shape': 'triangle', 'target-arrow-color': COLOURS.ok, 'curve-style': 'bezier', label: 'data(label)', 'font-size': 10, 'text-background-color': '#fff', 'text-background-opacity': 1, 'text-wrap': 'wrap', 'text-max-width': '180px' } },
        { selector: 'edge[level = "warn"]', style: { 'line-color': COLOURS.warn, 'target-arrow-color': COLOURS.warn, 'line-style': 'dashed' } },
        { selector: 'edge[level = "bad"]', style: { 'line-color': COLOURS.bad, 'target-arrow-color': COLOURS.bad, width: 4 } },
        { selector: 'edge[mtls != "mutual_tls"]', style: { 'source-arrow-shape': 'circle', 'source-arrow-color': COLOURS.warn } },
        { selector: 'edge:selected', style: { width: 5, 'line-color': '#0969da', 'target-arrow-color': '#0969da' } },
      ],
    });
    c.on('tap', 'edge', (ev) => setSelected(ev.target.id() as string));
    cy.current = c;
    return () => c.destroy();
  }, []);

  useEffect(() => {
    const c = cy.current;
    if (!c) return;
    const els = graphElements(graph);
    c.batch(() => {
      const want = new Set(els.map((e) => e.data.id));
      c.elements().filter((e) => !want.has(e.id())).remove();
      for (const el of els) {
        const cur = c.getElementById(el.data.id!);
        if (cur.nonempty()) cur.data(el.data);
        else c.add(el);
      }
    });
    c.layout({ name: 'breadthfirst', directed: true, spacingFactor: 1.4, padding: 20, animate: false } as cytoscape.LayoutOptions).run();
    c.fit(undefined, 20);
  }, [shape]);

  useEffect(() => {
    const c = cy.current;
    if (!c) return;
    for (const el of graphElements(graph)) c.getElementById(el.data.id!).data(el.data);
  }, [graph]);

  return html`<section aria-labelledby="graph-title">
    <h2 id="graph-title">Service graph</h2>
    <p class="muted">Traffic of the last ${state.traffic.windowSeconds} s, from the reports of ${state.traffic.reportingAgents} agent${state.traffic.reportingAgents === 1 ? '' : 's'} connected to this replica. Click an edge, or use its row below, for its routes, policies and recent errors.</p>
    <label class="filter">Namespace <select value=${namespace} onChange=${(e: Event) => setNamespace((e.target as HTMLSelectElement).value)}>
      <option value="">all namespaces</option>
      ${graph.namespaces.map((n) => html`<option value=${n}>${n}</option>`)}
    </select></label>
    <div class="graph" ref=${box} role="img" aria-label="Graph of the service-to-service traffic listed below"></div>
    <h3>Edges (${graph.edges.length})</h3>
    ${graph.edges.length === 0 ? html`<p>No traffic reported in the window.</p>` : html`<div class="scroll"><table>
      <thead><tr><th scope="col">From</th><th scope="col">To</th><th scope="col">Traffic</th><th scope="col">Success</th><th scope="col">Security</th><th scope="col"><span class="sr-only">Details</span></th></tr></thead>
      <tbody>${graph.edges.map((e) => html`<tr data-edge=${e.row.id} aria-selected=${e.row.id === selected ? 'true' : undefined}>
        <td>${e.fromLabel}</td><td>${e.toLabel}</td><td>${e.label}</td><td><${Badge} badge=${e.badge} /></td><td><${Badge} badge=${e.mtlsBadge} /></td>
        <td><button type="button" onClick=${() => setSelected(e.row.id)}>Details</button></td></tr>`)}</tbody></table></div>`}
    ${selected ? html`<${EdgeDetailPanel} id=${selected} detail=${detail} onClose=${() => setSelected('')} />` : null}
  </section>`;
}

function EdgeDetailPanel({ id, detail, onClose }: { id: string; detail: ReturnType<typeof edgeDetail>; onClose: () => void }) {
  if (!detail) {
    return html`<aside class="detail" aria-label="Edge detail"><p>The edge ${id} has no traffic in the window any more.</p><button type="button" onClick=${onClose}>Close</button></aside>`;
  }
  const { edge } = detail;
  return html`<aside class="detail" aria-labelledby="edge-title" data-detail=${edge.row.id}>
    <h3 id="edge-title">${edge.fromLabel} → ${edge.toLabel}</h3>
    <p>${edge.label} · <${Badge} badge=${edge.badge} /> · <${Badge} badge=${edge.mtlsBadge} /> <span class="muted">${edge.row.mtlsNote}; counted by the ${edge.row.reporter === 'source' ? 'client' : 'server'} proxy</span></p>
    <h4>Routes</h4>
    ${detail.routes.length === 0 ? html`<p class="muted">No route attaches to ${edge.toLabel}: requests go to its own endpoints.</p>` : html`<ul>${detail.routes.map((r) => html`<li data-edge-route=${`${r.kind}/${r.namespace}/${r.name}`}>${r.kind} ${r.namespace}/${r.name} → ${r.backends.join(', ')}${r.error ? ` (invalid: ${r.error})` : ''}</li>`)}</ul>`}
    <h4>Policies</h4>
    <ul>
      ${detail.trafficPolicy ? html`<li>TrafficPolicy ${detail.trafficPolicy.name}</li>` : html`<li class="muted">no TrafficPolicy</li>`}
      ${detail.authorization.map((a) => html`<li data-edge-authz=${`${a.namespace}/${a.name}`}>AuthorizationPolicy ${a.namespace}/${a.name}: ${a.action}, ${a.rules} rule${a.rules === 1 ? '' : 's'}, selector ${a.selector}</li>`)}
      ${detail.authorization.length === 0 ? html`<li class="muted">no AuthorizationPolicy selects its workloads</li>` : null}
      ${detail.peerAuthentication.map((p) => html`<li data-edge-peerauth=${`${p.namespace}/${p.name}`}>PeerAuthentication ${p.namespace}/${p.name}: ${p.mode}${p.ports.length ? ` (ports ${p.ports.join(', ')})` : ''}</li>`)}
      ${detail.rateLimits.map((r) => html`<li data-edge-ratelimit=${`${r.kind}/${r.namespace}/${r.name}`}>${r.kind} ${r.namespace}/${r.name}: ${r.limit}</li>`)}
    </ul>
    <h4>Recent errors</h4>
    ${detail.errors.length === 0 ? html`<p class="muted">None in the window.</p>` : html`<div class="scroll"><table>
      <thead><tr><th scope="col">Time</th><th scope="col">Outcome</th><th scope="col">Request</th><th scope="col">Endpoint</th><th scope="col">Code</th></tr></thead>
      <tbody>${detail.errors.map((e) => html`<tr class="edge-error"><td>${e.at.slice(11, 23)}</td><td>${e.outcome}</td><td>${e.request}</td><td>${e.upstream}</td><td>${e.errorCode}</td></tr>`)}</tbody></table></div>`}
    <button type="button" onClick=${onClose}>Close</button>
  </aside>`;
}
