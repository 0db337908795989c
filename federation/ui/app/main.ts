// The dashboard page: login, the live feed, and the views behind a
// hash router (#/map, #/graph, #/services[/KEY], #/workloads, #/policies). The hash
// holds only the view; the token lives in session storage.
import { html, render } from 'htm/preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { emptyState, type DashboardState, type Role } from '../model/state';
import { ApiError, Feed, type FeedStatus, forgetToken, saveToken, savedToken, whoami } from './api';
import { MeshMapView } from './map';
import { ServiceDetailView, ServicesView } from './services';
import { WorkloadsView } from './workloads';
import { PoliciesView } from './policies';
import { ServiceGraphView } from './graph';

const VIEWS = [
  ['map', 'Mesh map'],
  ['graph', 'Service graph'],
  ['services', 'Services'],
  ['workloads', 'Workloads'],
  ['policies', 'Policies'],
] as const;

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return hash;
}

function Login({ onLogin, notice }: { onLogin: (token: string, role: Role) => void; notice: string }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState(notice);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const t = token.trim();
    if (!t) return setError('Paste the admin token (DATA_DIR/admin-token on the federation host) or a viewer token from `kedge token create --viewer`.');
    setBusy(true);
    try {
      const who = await whoami(t);
      onLogin(t, who.role);
    } catch (err) {
      setError(err instanceof ApiError ? `Login refused: ${err.message}` : String(err));
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="login" id="main">
    <h1>Kedge dashboard</h1>
    <form onSubmit=${submit}>
      <label for="token">Admin or viewer token</label>
      <input id="token" name="token" type="password" autocomplete="off" value=${token} onInput=${(e: Event) => setToken((e.target as HTMLInputElement).value)} aria-describedby="login-help" />
      <p id="login-help" class="muted">Kept in this tab's session storage only; closing the tab logs out.</p>
      <button type="submit" disabled=${busy}>${busy ? 'Checking…' : 'Log in'}</button>
      ${error ? html`<p role="alert" class="badge bad" id="login-error">✗ ${error}</p>` : null}
    </form>
  </main>`;
}

function StatusBar({ status }: { status: FeedStatus }) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(t);
  }, []);
  let text: string;
  let level: string;
  if (status.kind === 'live') {
    text = 'Live: changes appear as they happen';
    level = 'ok';
  } else if (status.kind === 'connecting') {
    text = status.attempt === 0 ? 'Connecting to the federation…' : `Reconnecting to ${location.host} (attempt ${status.attempt + 1})…`;
    level = 'warn';
  } else if (status.kind === 'lost') {
    text = `Connection lost: ${status.reason}. Retrying in ${Math.max(0, Math.ceil((status.retryAt - now) / 1000))} s; what is shown may be out of date.`;
    level = 'bad';
  } else {
    text = `Refused: ${status.message}`;
    level = 'bad';
  }
  return html`<div class=${`status ${level}`} role="status" aria-live="polite" data-feed=${status.kind}>${text}</div>`;
}

function Shell({ token, role, onLogout }: { token: string; role: Role; onLogout: (notice: string) => void }) {
  const [state, setState] = useState<DashboardState>(emptyState());
  const [status, setStatus] = useState<FeedStatus>({ kind: 'connecting', attempt: 0 });
  const hash = useHash();
  const main = useRef<HTMLElement>(null);
  useEffect(() => {
    const feed = new Feed(token, setState, (s) => {
      setStatus(s);
      if (s.kind === 'refused') onLogout(`The federation refused the token: ${s.message}`);
    });
    feed.start();
    return () => feed.stop();
  }, [token]);
  // Digits switch views (outside text fields), so the views are a key away.
  useEffect(() => {
    const on = (e: KeyboardEvent) => {
      const t = e.target as HTMLElement;
      if (e.ctrlKey || e.metaKey || e.altKey || t.closest('input, select, textarea')) return;
      const v = VIEWS[Number(e.key) - 1];
      if (v) location.hash = `#/${v[0]}`;
    };
    window.addEventListener('keydown', on);
    return () => window.removeEventListener('keydown', on);
  }, []);
  const [, view = 'map', arg] = /^#\/([a-z]+)(?:\/(.+))?$/.exec(hash) ?? [];
  useEffect(() => main.current?.focus(), [view, arg]);
  const nowMs = state.meta.now ? Date.parse(state.meta.now) : Date.now();
  let body;
  if (view === 'services' && arg) body = html`<${ServiceDetailView} state=${state} serviceKey=${decodeURIComponent(arg)} token=${token} />`;
  else if (view === 'services') body = html`<${ServicesView} state=${state} />`;
  else if (view === 'workloads') body = html`<${WorkloadsView} state=${state} nowMs=${nowMs} />`;
  else if (view === 'policies') body = html`<${PoliciesView} state=${state} />`;
  else if (view === 'graph') body = html`<${ServiceGraphView} state=${state} />`;
  else body = html`<${MeshMapView} state=${state} />`;
  return html`<a class="skip" href="#main" onClick=${(e: Event) => { e.preventDefault(); main.current?.focus(); }}>Skip to content</a>
    <header>
      <h1>Kedge</h1>
      <nav aria-label="Views"><ul>${VIEWS.map(([id, label], i) => html`<li><a href=${`#/${id}`} aria-current=${view === id ? 'page' : undefined} title=${`key ${i + 1}`}>${label}</a></li>`)}</ul></nav>
      <div class="who">
        <span class=${`badge ${role === 'admin' ? 'ok' : 'warn'}`}>${role === 'admin' ? 'admin' : 'viewer (read-only)'}</span>
        ${state.meta.replica ? html`<span class="muted"> replica ${state.meta.replica} · ${state.meta.trustDomain}</span>` : null}
        <button type="button" onClick=${() => onLogout('')}>Log out</button>
      </div>
    </header>
    <${StatusBar} status=${status} />
    <p class="summary" aria-live="polite">${state.services.length} services · ${state.endpoints.length} endpoints · ${state.workloads.length} workloads (${state.workloads.filter((w) => !w.connected).length} disconnected)</p>
    <main id="main" tabindex="-1" ref=${main}>${body}</main>`;
}

function App() {
  const [session, setSession] = useState<{ token: string; role: Role } | undefined>(undefined);
  const [checking, setChecking] = useState(savedToken() !== '');
  const [notice, setNotice] = useState('');
  useEffect(() => {
    const t = savedToken();
    if (!t) return;
    whoami(t)
      .then((who) => setSession({ token: t, role: who.role }))
      .catch((err: Error) => {
        forgetToken();
        setNotice(`Your saved session ended: ${err.message}`);
      })
      .finally(() => setChecking(false));
  }, []);
  if (checking) return html`<p>Checking your session…</p>`;
  if (!session) return html`<${Login} notice=${notice} onLogin=${(token: string, role: Role) => { saveToken(token); setSession({ token, role }); }} />`;
  return html`<${Shell} token=${session.token} role=${session.role} onLogout=${(n: string) => { forgetToken(); setNotice(n); setSession(undefined); }} />`;
}

const root = document.getElementById('app')!;
root.textContent = ''; // the "Loading…" placeholder
render(html`<${App} />`, root);
