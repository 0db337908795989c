// The mesh map: Cytoscape.js lays out networks, localities, groups and
// gateways; the same map is listed as text below for keyboard and screen
// reader users (and for anyone who wants numbers rather than boxes).
import { html } from 'htm/preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import cytoscape from 'cytoscape';
import type { DashboardState } from '../model/state';
import { meshElements, meshMap } from '../model/mesh-map';
import { Badge } from './common';
import { plural } from '../model/lists';

const COLOURS = { ok: '#1a7f37', warn: '#9a6700', bad: '#cf222e' } as const;

export function MeshMapView({ state }: { state: DashboardState }) {
  const [namespace, setNamespace] = useState('');
  const map = useMemo(() => meshMap(state, namespace), [state.endpoints, state.workloads, state.sources, namespace]);
  const box = useRef<HTMLDivElement>(null);
  const cy = useRef<cytoscape.Core | undefined>(undefined);
  const shape = JSON.stringify(map.networks.map((n) => [n.id, n.localities.map((l) => [l.id, l.groups.map((g) => g.id)]), n.gateways.map((g) => g.id)]));

  useEffect(() => {
    if (!box.current) return;
    cy.current = cytoscape({
      container: box.current,
      elements: [],
      userZoomingEnabled: true,
      boxSelectionEnabled: false,
      style: [
        { selector: 'node', style: { label: 'data(label)', 'text-wrap': 'wrap', 'font-size': 11, 'text-valign': 'center', 'text-halign': 'center', 'background-color': '#fff', 'border-width': 2, width: 150, height: 60, shape: 'round-rectangle' } },
        { selector: 'node[level = "ok"]', style: { 'border-color': COLOURS.ok } },
        { selector: 'node[level = "warn"]', style: { 'border-color': COLOURS.warn, 'border-style': 'dashed' } },
        { selector: 'node[level = "bad"]', style: { 'border-color': COLOURS.bad, 'border-style': 'double', 'border-width': 4 } },
        { selector: 'node[kind = "network"]', style: { 'text-valign': 'top', 'font-size': 13, 'font-weight': 'bold', 'background-color': '#f6f8fa' } },
        { selector: 'node[kind = "locality"]', style: { 'text-valign': 'top', 'background-color': '#eef2f6', 'border-color': '#8c959f', 'border-width': 1 } },
        { selector: 'node[kind = "gateway"]', style: { shape: 'hexagon', 'background-color': '#ddf4ff', width: 170, height: 70 } },
        { selector: 'edge', style: { width: 2, 'line-color': '#57606a', 'target-arrow-shape': 'triangle', 'target-arrow-color': '#57606a', 'curve-style': 'bezier', label: 'data(label)', 'font-size': 10 } },
      ],
    });
    return () => cy.current?.destroy();
  }, []);

  useEffect(() => {
    const c = cy.current;
    if (!c) return;
    const els = meshElements(map);
    c.batch(() => {
      const want = new Set(els.map((e) => e.data.id));
      c.elements().filter((e) => !want.has(e.id())).remove();
      for (const el of els) {
        const cur = c.getElementById(el.data.id);
        if (cur.nonempty()) cur.data(el.data);
        else c.add(el);
      }
    });
    // Lay out again only when the boxes changed, not when a count did.
    // cose keeps compound boxes apart only when it starts from random positions.
    c.layout({ name: 'cose', animate: false, randomize: true, nodeDimensionsIncludeLabels: true, padding: 20, nodeRepulsion: () => 800_000, idealEdgeLength: () => 160, nodeOverlap: 40, componentSpacing: 120, gravity: 0.25 } as cytoscape.LayoutOptions).run();
    c.fit(undefined, 20);
  }, [shape]);

  useEffect(() => {
    const c = cy.current;
    if (!c) return;
    for (const el of meshElements(map)) c.getElementById(el.data.id).data(el.data);
  }, [map]);

  return html`<section aria-labelledby="map-title">
    <h2 id="map-title">Mesh map</h2>
    <label class="filter">Namespace <select value=${namespace} onChange=${(e: Event) => setNamespace((e.target as HTMLSelectElement).value)}>
      <option value="">all namespaces</option>
      ${map.namespaces.map((n) => html`<option value=${n}>${n}</option>`)}
    </select></label>
    <div class="graph" ref=${box} role="img" aria-label="Graph of the networks, localities, groups and gateways listed below"></div>
    <h3>Networks</h3>
    ${map.networks.length === 0 ? html`<p>No endpoints or workloads in the mesh yet.</p>` : null}
    <ul class="map-list">
      ${map.networks.map((n) => html`<li class="network" data-network=${n.name}>
        <strong>network ${n.name}</strong> <${Badge} badge=${n.badge} />
        ${n.gateways.length ? html`<ul>${n.gateways.map((g) => html`<li class="gateway">gateway ${g.workload} at ${g.address} <${Badge} badge=${g.badge} /></li>`)}</ul>` : html`<p class="muted">no gateway: other networks cannot reach its endpoints</p>`}
        <ul>${n.localities.map((l) => html`<li>locality ${l.name}
          <ul>${l.groups.map((g) => html`<li class="group">${g.kind} <strong>${g.name}</strong>: ${plural(g.endpoints, 'endpoint')} (${g.healthy} healthy)${g.workloads ? `, ${plural(g.workloads, 'workload')} (${g.connected} connected)` : ''} <${Badge} badge=${g.badge} /></li>`)}</ul>
        </li>`)}</ul>
      </li>`)}
    </ul>
    ${map.links.length ? html`<h3>Between networks</h3><ul>${map.links.map((l) => html`<li>${l.from.replace('network:', 'network ')} → ${l.gateway.replace('gateway:', 'gateway ')} (${l.to.replace('network:', 'network ')})</li>`)}</ul>` : null}
    <h3>Sources</h3>
    <ul>${state.sources.map((s) => html`<li>${s.kind} ${s.name}: ${s.services} services, ${s.endpoints} endpoints <${Badge} badge=${s.connected ? { level: s.stale ? 'warn' : 'ok', text: s.stale ? 'stale' : 'synced' } : { level: 'bad', text: `disconnected${s.error ? `: ${s.error}` : ''}` }} /></li>`)}
    ${state.sources.length === 0 ? html`<li>agents only (no Kubernetes, Consul or static sources configured)</li>` : null}</ul>
  </section>`;
}
