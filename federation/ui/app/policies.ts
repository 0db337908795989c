// The policies view: routes, traffic, authorization, peer authentication
// and rate-limit policies with their warnings.
import { html } from 'htm/preact';
import { useMemo, useState } from 'preact/hooks';
import type { DashboardState } from '../model/state';
import { policyView } from '../model/policies';
import { Badge, Filter } from './common';

function Workloads({ list }: { list: readonly string[] }) {
  return list.length ? html`<details><summary>${list.length}</summary><ul>${list.map((w) => html`<li>${w}</li>`)}</ul></details>` : '—';
}

export function PoliciesView({ state }: { state: DashboardState }) {
  const [query, setQuery] = useState('');
  const view = useMemo(() => policyView(state, query), [state.routes, state.policies, state.authorization, state.peerAuthentication, state.rateLimits, query]);
  return html`<section aria-labelledby="pol-title">
    <h2 id="pol-title">Policies</h2>
    <${Filter} label="Filter" value=${query} placeholder="name, namespace, service" onInput=${setQuery} />
    <h3>Routes (${view.routes.length})</h3>
    ${view.routes.length === 0 ? html`<p>No HTTPRoute, GRPCRoute or FaultInjection applied.</p>` : html`<div class="scroll"><table>
      <thead><tr><th scope="col">Route</th><th scope="col">Source</th><th scope="col">Attached to</th><th scope="col">Backends</th><th scope="col">Status</th></tr></thead>
      <tbody>${view.routes.map((r) => html`<tr data-route=${r.id}><th scope="row">${r.id}</th><td>${r.row.source}</td><td>${r.row.parents.join(', ')}</td><td>${r.row.backends.join(', ')}</td>
        <td><${Badge} badge=${r.badge} />${r.notes.map((n) => html`<div class="muted">${n}</div>`)}</td></tr>`)}</tbody></table></div>`}
    <h3>Traffic policies (${view.policies.length})</h3>
    ${view.policies.length === 0 ? html`<p>No TrafficPolicy applied.</p>` : html`<div class="scroll"><table>
      <thead><tr><th scope="col">Policy</th><th scope="col">Service</th><th scope="col">Status</th><th scope="col">Document</th></tr></thead>
      <tbody>${view.policies.map((p) => html`<tr data-policy=${p.id}><th scope="row">${p.row.name}</th><td>${p.row.service}</td><td><${Badge} badge=${p.badge} /></td>
        <td><details><summary>show</summary><pre>${JSON.stringify(p.row.document, null, 2)}</pre></details></td></tr>`)}</tbody></table></div>`}
    <h3>Authorization policies (${view.authorization.length})</h3>
    ${view.authorization.length === 0 ? html`<p>No AuthorizationPolicy applied: every mesh identity may call every workload.</p>` : html`<div class="scroll"><table>
      <thead><tr><th scope="col">Policy</th><th scope="col">Action</th><th scope="col">Selector</th><th scope="col">Rules</th><th scope="col">Status</th><th scope="col">Workloads</th></tr></thead>
      <tbody>${view.authorization.map((a) => html`<tr data-authz=${a.id}><th scope="row">${a.id}</th><td>${a.row.action}</td><td>${a.row.selector}</td><td>${a.row.rules}</td><td><${Badge} badge=${a.badge} /></td>
        <td><${Workloads} list=${a.row.workloads} /></td></tr>`)}</tbody></table></div>`}
    <h3>Peer authentication (${view.peerAuthentication.length})</h3>
    ${view.peerAuthentication.length === 0 ? html`<p>No PeerAuthentication applied: each agent's own inbound mode decides.</p>` : html`<div class="scroll"><table>
      <thead><tr><th scope="col">Policy</th><th scope="col">Mode</th><th scope="col">Selector</th><th scope="col">Ports</th><th scope="col">Status</th><th scope="col">Workloads</th></tr></thead>
      <tbody>${view.peerAuthentication.map((p) => html`<tr data-peerauth=${p.id}><th scope="row">${p.id}</th><td>${p.row.mode}</td><td>${p.row.selector}</td><td>${p.row.ports.join(', ') || '—'}</td><td><${Badge} badge=${p.badge} /></td>
        <td><${Workloads} list=${p.row.workloads} /></td></tr>`)}</tbody></table></div>`}
    <h3>Rate limits and quotas (${view.rateLimits.length})</h3>
    ${view.rateLimits.length === 0 ? html`<p>No HTTPLocalRateLimitPolicy or MeshQuota applied.</p>` : html`<div class="scroll"><table>
      <thead><tr><th scope="col">Policy</th><th scope="col">Service</th><th scope="col">Limit</th><th scope="col">Status</th><th scope="col">Enforced on</th></tr></thead>
      <tbody>${view.rateLimits.map((r) => html`<tr data-ratelimit=${r.id}><th scope="row">${r.id}</th><td>${r.row.service}</td><td>${r.row.limit}</td><td><${Badge} badge=${r.badge} /></td>
        <td><${Workloads} list=${r.row.workloads} /></td></tr>`)}</tbody></table></div>`}
  </section>`;
}
