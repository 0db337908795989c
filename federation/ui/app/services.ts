// The services view: a paged list, and a service's endpoints by locality
// and health with the failover order a chosen client would use.
import { html } from 'htm/preact';
import { useEffect, useMemo, useState } from 'preact/hooks';
import type { DashboardState } from '../model/state';
import { failoverOrder, serviceDetail, serviceList, type FailoverAnswer } from '../model/services';
import { api } from './api';
import { Badge, Filter, Pager } from './common';

export function ServicesView({ state }: { state: DashboardState }) {
  const [query, setQuery] = useState('');
  const [page, setPage] = useState(0);
  const list = useMemo(() => serviceList(state, query, page), [state.services, query, page]);
  return html`<section aria-labelledby="services-title">
    <h2 id="services-title">Services</h2>
    <${Filter} label="Filter" value=${query} placeholder="name, namespace or VIP" onInput=${(v: string) => { setQuery(v); setPage(0); }} />
    <div class="scroll"><table>
      <thead><tr><th scope="col">Service</th><th scope="col">VIP</th><th scope="col">Ports</th><th scope="col">Endpoints</th><th scope="col">Warnings</th></tr></thead>
      <tbody>${list.items.map((s) => html`<tr data-service=${s.key}>
        <td><a href=${`#/services/${encodeURIComponent(s.key)}`}>${s.key}</a></td><td>${s.vip}</td><td>${s.ports}</td>
        <td><${Badge} badge=${s.badge} /></td><td>${s.warnings.join('; ')}</td></tr>`)}</tbody>
    </table></div>
    <${Pager} page=${list} onPage=${setPage} what="services" />
  </section>`;
}

export function ServiceDetailView({ state, serviceKey, token }: { state: DashboardState; serviceKey: string; token: string }) {
  const detail = useMemo(() => serviceDetail(state, serviceKey), [state.services, state.endpoints, state.workloads, serviceKey]);
  const [from, setFrom] = useState('');
  const [failover, setFailover] = useState<{ answer?: FailoverAnswer; error?: string }>({});
  const endpointsJson = JSON.stringify(detail?.localities);
  useEffect(() => {
    if (!from) return setFailover({});
    let live = true;
    api<FailoverAnswer>(`/api/v1/endpoints/${encodeURIComponent(serviceKey)}?from=${encodeURIComponent(from)}`, token)
      .then((answer) => live && setFailover({ answer }), (err: Error) => live && setFailover({ error: err.message }));
    return () => {
      live = false;
    };
  }, [from, serviceKey, endpointsJson]);
  if (!detail) return html`<section><h2>Service ${serviceKey}</h2><p role="alert">No service ${serviceKey} in the mesh (it may have lost its last endpoint). <a href="#/services">All services</a></p></section>`;
  return html`<section aria-labelledby="svc-title">
    <p><a href="#/services">‹ All services</a></p>
    <h2 id="svc-title">Service ${detail.service.key} <${Badge} badge=${detail.badge} /></h2>
    <p>${detail.service.hostname} · VIP ${detail.service.vip}</p>
    ${detail.service.warnings.map((w) => html`<p class="badge warn">! ${w}</p>`)}
    <h3>Endpoints by locality</h3>
    ${detail.localities.map((l) => html`<div class="locality"><h4>${l.locality} <${Badge} badge=${l.badge} /></h4>
      <div class="scroll"><table><thead><tr><th scope="col">Address</th><th scope="col">Workload</th><th scope="col">Cluster</th><th scope="col">Network</th><th scope="col">Health</th><th scope="col">mTLS</th></tr></thead>
      <tbody>${l.endpoints.map((e) => html`<tr data-endpoint=${e.address}><td>${e.address}</td><td>${e.workload}</td><td>${e.cluster}</td><td>${e.network}</td>
        <td><${Badge} badge=${{ level: e.health === 'HEALTHY' ? 'ok' : 'bad', text: e.healthText }} /></td><td>${e.meshed ? 'meshed (mTLS)' : 'plain (not meshed)'}</td></tr>`)}</tbody></table></div></div>`)}
    <h3>Failover order</h3>
    <label class="filter">As seen from client <select value=${from} onChange=${(e: Event) => setFrom((e.target as HTMLSelectElement).value)}>
      <option value="">choose a workload…</option>
      ${detail.clients.map((c) => html`<option value=${c}>${c}</option>`)}
    </select></label>
    ${failover.error ? html`<p role="alert" class="badge bad">✗ ${failover.error}</p>` : null}
    ${failover.answer ? html`<ol class="failover">${failoverOrder(failover.answer).map((step) => html`<li>${step.label}
      <ul>${step.endpoints.map((e) => html`<li>${e.address} (${e.workload}) ${e.where} — ${e.health}, ${e.share} of new connections</li>`)}</ul></li>`)}</ol>
      ${failover.answer.panic ? html`<p class="badge warn">! panic: too few healthy endpoints, traffic goes to all of them</p>` : null}` : null}
  </section>`;
}
