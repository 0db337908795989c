// The workloads view: host facts, identity, certificate expiry, config
// version and contact of every agent, paged.
import { html } from 'htm/preact';
import { useMemo, useState } from 'preact/hooks';
import type { DashboardState } from '../model/state';
import { workloadList, type WorkloadFilter } from '../model/workloads';
import { Badge, Filter, Pager } from './common';

export function WorkloadsView({ state, nowMs }: { state: DashboardState; nowMs: number }) {
  const [query, setQuery] = useState('');
  const [filter, setFilter] = useState<WorkloadFilter>('all');
  const [page, setPage] = useState(0);
  const list = useMemo(() => workloadList(state, nowMs, query, filter, page), [state.workloads, nowMs, query, filter, page]);
  return html`<section aria-labelledby="wl-title">
    <h2 id="wl-title">Workloads</h2>
    <div class="controls">
      <${Filter} label="Filter" value=${query} placeholder="name, address, network, service" onInput=${(v: string) => { setQuery(v); setPage(0); }} />
      <label class="filter"><input type="checkbox" checked=${filter === 'attention'} onChange=${(e: Event) => { setFilter((e.target as HTMLInputElement).checked ? 'attention' : 'all'); setPage(0); }} /> only those needing attention</label>
    </div>
    <div class="scroll"><table>
      <thead><tr><th scope="col">Workload</th><th scope="col">Contact</th><th scope="col">Certificate</th><th scope="col">Config</th><th scope="col">Host</th><th scope="col">Identity and placement</th></tr></thead>
      <tbody>${list.items.map((l) => html`<tr data-workload=${l.id}>
        <th scope="row">${l.id}<div class="muted">${l.mode} · agent ${l.row.agentVersion || '?'}</div></th>
        <td><${Badge} badge=${l.contact} /><div class="muted">replica ${l.row.replica}</div></td>
        <td><${Badge} badge=${l.cert} /></td>
        <td><${Badge} badge=${l.config} /></td>
        <td>${l.host}${l.memory ? html`<div class="muted">${l.memory} memory</div>` : null}${l.row.host?.addresses.length ? html`<div class="muted">${l.row.host.addresses.join(', ')}</div>` : null}</td>
        <td><code>${l.row.identity}</code><div class="muted">${l.row.address} · network ${l.row.network || '(default)'} · ${l.row.locality || '(no locality)'}${l.row.cluster ? ` · ${l.row.cluster}` : ''}</div><div class="muted">services: ${l.row.services.join(', ') || 'none'}</div></td>
      </tr>`)}</tbody>
    </table></div>
    <${Pager} page=${list} onPage=${setPage} what="workloads" />
  </section>`;
}
