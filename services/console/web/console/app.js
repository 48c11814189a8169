// pwsync console: plain ES module, no build step. Every datum comes from the
// admin API with the bearer token kept in sessionStorage (this tab only).
// Untrusted text is only ever set with textContent.

const TOKEN_KEY = 'pwsync.token';
let me = null;          // {name, roles}
let campaignsOn = true; // whether this pwsync serves the campaign API
let stopView = () => {}; // ends the current view's streams and timers

// h builds an element: h('td', {class: 'ok'}, 'text', child...).
function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v == null) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) {
    if (kid == null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function svg(tag, attrs = {}, ...kids) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const kid of kids.flat()) el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return el;
}

// setText changes a node's text only when it differs, so that a live region
// announces changes, not every poll.
const setText = (el, text) => { if (el.textContent !== text) el.textContent = text; };

// status shows a short message in the corner; it clears itself after a while
// (a newer message restarts the clock).
let statusTimer = 0;
const status = (msg) => {
  const el = document.getElementById('status');
  el.textContent = msg;
  clearTimeout(statusTimer);
  if (msg) statusTimer = setTimeout(() => { el.textContent = ''; }, 8000);
};
const token = () => sessionStorage.getItem(TOKEN_KEY);
const has = (role) => !!me && (role === 'viewer' ? me.roles.length > 0 : me.roles.includes(role));
const fmtTime = (t) => t ? new Date(t).toLocaleString(undefined, { hour12: false }) : '';
const clock = (t) => t ? new Date(t).toLocaleTimeString(undefined, { hour12: false }) : '';

// plural: "1 user", "2 users"; sentences joins the non-empty parts, each
// ending with a full stop (no dangling separators).
const plural = (n, one, many) => `${n} ${n === 1 ? one : (many || one + 's')}`;
const sentences = (...parts) => parts.filter(Boolean).map((x) => /[.!?]$/.test(x) ? x : x + '.').join(' ');
const stepLabels = { ad_must_change: 'AD must-change (pwdLastSet=0)', must_change: 'cloud must-change',
  verify_must_change: 'read-back of the cloud flag', revoke: 'session revoke', notify: 'notice',
  confirm_compromised: 'mark compromised in Entra ID Protection' };
// What a campaign writes per user (by_write), and the ledger's kinds of a
// sample row (k) mapped to it: 'synced' is every user selected in AD.
const writeLabels = { ad_write: 'AD write', cloud_write: 'cloud write' };
const kindWrites = { synced: 'ad_write', cloud: 'cloud_write' };
const terminal = (state) => ['done', 'cancelled', 'failed'].includes(state);

// What arrived, in words: source and type of the event envelope.
const eventLabels = { 'ad user': 'AD user changed', 'ad policy': 'AD password policy changed',
  'graph user': 'Entra user changed', 'graph notification': 'Graph change notification',
  'graph lifecycle': 'Graph subscription notice', 'timer expiry': 'Expiry date reached',
  'timer writeback': 'Writeback check due' };
const sourceLabels = { ad: 'AD', graph: 'Graph', timer: 'timer', admin: 'admin' };
const ruleLabels = { 'forced-change': 'a password reset in AD (forced-change rule)', expiry: 'password expiry (expiry rule)' };

// eventOf names the event an audit record is about, from its ID's form
// (ad.<guid>.<usn>, ad.policy.<domain>.<rev>, graph.<id>.<hash>,
// timer.expiry..., timer.writeback..., campaign.<id>).
function eventOf(id) {
  if (!id) return '';
  const [src, a, b] = id.split('.');
  if (src === 'ad' && a === 'policy') return 'AD policy change';
  if (src === 'ad') return b ? `AD change, USN ${b}` : 'AD change';
  if (src === 'graph') return 'Entra change';
  if (src === 'timer') return a === 'expiry' ? 'expiry timer' : a === 'writeback' ? 'writeback check' : 'timer';
  if (src === 'campaign') return 'campaign ' + id.slice('campaign.'.length);
  if (src === 'retry') return 'dead-letter retry';
  return id;
}

function previewText(p) {
  // A preview stored before by_write has by_kind only.
  const byWrite = p.by_write || Object.fromEntries(Object.entries(p.by_kind || {}).map(([k, n]) => [kindWrites[k] || k, n]));
  const kinds = Object.entries(byWrite).filter(([, n]) => n > 0).map(([k, n]) => `${writeLabels[k] || k} for ${plural(n, 'user')}`).join(', ');
  const steps = Object.entries(p.by_step || {}).filter(([, n]) => n > 0)
    .map(([k, n]) => `${stepLabels[k] || k} for ${plural(n, 'user')}`).join(', ');
  const excl = Object.entries(p.excluded || {}).filter(([, n]) => n > 0);
  const nExcl = excl.reduce((a, [, n]) => a + n, 0);
  return sentences(
    `${plural(p.total, 'user')} selected` + (kinds ? `: ${kinds}` : ''),
    steps ? `Steps: ${steps}` : 'No steps',
    nExcl ? `${nExcl} left out: ` + excl.map(([r, n]) => `${n} ${r}`).join('; ') : 'Nobody left out',
    p.unmatched ? `${plural(p.unmatched, 'UPN')} matched nobody` : '');
}

// orNone: a list's items, or one muted "None." item.
const orNone = (items) => items.length ? items : [h('li', { class: 'muted' }, 'None.')];

function progressText(s, total) {
  const writes = [plural(s.writes || 0, 'Graph write'), plural(s.ldap_writes || 0, 'LDAP write')];
  if (s.throttled) writes.push(`${s.throttled} throttled`);
  if (s.fallbacks) writes.push(`${plural(s.fallbacks, 'fallback')} after a flag Graph did not set`);
  return sentences(
    `${s.done || 0} done, ${s.failed || 0} failed, ${s.remaining ?? total} remaining of ${total}`,
    writes.join(', '),
    s.ad_unreachable_since ? `The DC is unreachable since ${new Date(s.ad_unreachable_since).toLocaleTimeString()}: AD writes wait for it` : '');
}

function rateText(s) {
  const rate = s.started && s.done ? s.done / ((Date.now() - Date.parse(s.started)) / 1000) : 0;
  if (!rate) return '';
  return sentences(`${rate.toFixed(1)} users/s` + (s.remaining ? `, about ${Math.round(s.remaining / rate)} s to go` : ''));
}

// reconcile makes parent's children the rows of items, in order, reusing
// the rows whose key is unchanged, so that a refresh does not take the
// keyboard focus away from a row's button.
function reconcile(parent, items, key, build, empty) {
  if (!items.length) { parent.replaceChildren(empty()); return; } // the empty row has no key: dropped below
  const want = items.map(key);
  const keep = new Set(want);
  // Drop the rows that went first, so that the ones kept never move (a
  // moved element loses focus).
  for (const el of [...parent.children]) if (!keep.has(el.dataset.key)) el.remove();
  const old = new Map([...parent.children].map((el) => [el.dataset.key, el]));
  items.forEach((it, i) => {
    let el = old.get(want[i]);
    if (!el) { el = build(it); el.dataset.key = want[i]; }
    if (parent.children[i] !== el) parent.insertBefore(el, parent.children[i] || null);
  });
}

// busyClick runs an async handler once at a time; the button stays
// focusable (aria-disabled, not disabled) so the keyboard user keeps their place.
function busyClick(fn) {
  return async (e) => {
    const b = e.currentTarget;
    if (b.getAttribute('aria-disabled') === 'true') return;
    b.setAttribute('aria-disabled', 'true');
    try { await fn(b); } finally { b.removeAttribute('aria-disabled'); }
  };
}

class APIError extends Error { constructor(status, msg) { super(msg); this.status = status; } }

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: 'Bearer ' + token() } };
  if (body !== undefined) { opts.headers['Content-Type'] = 'application/json'; opts.body = JSON.stringify(body); }
  const resp = await fetch(path, opts);
  if (resp.status === 401) { signOut('Your token was refused (missing, wrong or expired).'); throw new APIError(401, 'unauthorized'); }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!resp.ok) throw new APIError(resp.status, (data && data.error) || resp.statusText);
  return data;
}

// download fetches with the token and saves the answer as a file.
async function download(path, filename) {
  const resp = await fetch(path, { headers: { Authorization: 'Bearer ' + token() } });
  if (!resp.ok) { status('Download failed: ' + resp.status); return; }
  const url = URL.createObjectURL(await resp.blob());
  const a = h('a', { href: url, download: filename });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  status('Downloaded ' + filename);
}

// ---- sign in ----

async function signIn(tok) {
  sessionStorage.setItem(TOKEN_KEY, tok);
  try {
    me = await api('GET', '/api/v1/whoami');
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    document.getElementById('login-error').textContent = e.status === 401 ? 'Token refused.' : 'Sign-in failed: ' + e.message;
    return false;
  }
  // The campaign API is served only when campaigns are enabled: no tab
  // that leads to a page of errors. Any other failure keeps the tab (its
  // page shows the error).
  try { await api('GET', '/api/v1/campaigns'); campaignsOn = true; } catch (e) { campaignsOn = e.status !== 404; }
  if (!me) return false; // signed out meanwhile (a refused token)
  document.querySelector('nav a[href="#campaigns"]').hidden = !campaignsOn;
  document.getElementById('login').hidden = true;
  document.getElementById('nav').hidden = false;
  document.getElementById('view').hidden = false;
  const who = document.getElementById('who');
  who.replaceChildren('Signed in as ', h('strong', {}, me.name), ' (' + me.roles.join(', ') + ')',
    h('button', { class: 'secondary', type: 'button', onclick: () => signOut('Signed out.') }, 'Sign out'));
  route();
  return true;
}

function signOut(msg) {
  stopView(); stopView = () => {};
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  document.getElementById('login').hidden = false;
  document.getElementById('nav').hidden = true;
  document.getElementById('view').hidden = true;
  document.getElementById('who').replaceChildren();
  document.getElementById('login-error').textContent = msg || '';
  document.getElementById('token').value = '';
  document.getElementById('token').focus();
}

// ---- routing: #live[/<user filter>], #user/<upn>, #campaigns, #campaigns/<id>, #policy ----

function route() {
  if (!me) return;
  stopView(); stopView = () => {};
  const [page, arg] = decodeURIComponent(location.hash.slice(1) || 'live').split(/\/(.*)/s);
  for (const a of document.querySelectorAll('nav a')) {
    if (a.getAttribute('href') === '#' + page) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const view = document.getElementById('view');
  view.replaceChildren();
  document.title = 'pwsync console';
  window.scrollTo(0, 0);
  const pages = { live: liveView, user: userView, campaigns: campaignsOn ? campaignsView : noCampaigns, policy: policyView, backfill: backfillView };
  (pages[page] || liveView)(view, arg || '');
}

function noCampaigns(view) {
  view.append(h('h2', {}, 'Campaigns'), h('p', {}, 'This pwsync does not serve the campaign API (campaigns are disabled in its configuration).'));
}

// ---- live view ----

function liveView(view, arg) {
  let filter = arg || '';
  const rows = h('tbody');
  const dlBody = h('tbody');
  const chart = h('div', { class: 'chart', id: 'latency-chart' });
  const summary = h('p', { id: 'latency-summary', class: 'muted' });
  const input = h('input', { id: 'live-user', type: 'search', name: 'user', value: filter, placeholder: 'alice or alice@example.com',
    'aria-describedby': 'live-filter-state', autocomplete: 'off', spellcheck: 'false' });
  const filterState = h('p', { id: 'live-filter-state', class: 'muted', 'aria-live': 'polite' });
  view.append(h('h2', {}, 'Live'),
    h('div', { class: 'grid' },
      h('section', { 'aria-labelledby': 'feed-h' }, h('h3', { id: 'feed-h' }, 'Events, decisions, actions'),
        h('form', { class: 'row', role: 'search', id: 'live-filter', 'aria-label': 'Filter the live feed', onsubmit: (e) => {
          e.preventDefault(); apply(input.value.trim());
        } }, h('div', { class: 'grow' }, h('label', { for: 'live-user' }, 'Only users whose UPN contains'), input),
          h('button', { type: 'submit' }, 'Filter'),
          h('button', { type: 'button', class: 'secondary', id: 'live-all', onclick: () => { input.value = ''; apply(''); } }, 'Show everyone')),
        filterState,
        h('div', { class: 'scroll', tabindex: '0', 'aria-label': 'Live feed' },
          h('table', { id: 'live-table' }, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Time'), h('th', { scope: 'col' }, 'Kind'),
            h('th', { scope: 'col' }, 'User'), h('th', { scope: 'col' }, 'What'), h('th', { scope: 'col' }, 'Outcome'))), rows))),
      h('section', { 'aria-labelledby': 'lat-h' }, h('h3', { id: 'lat-h' }, 'AD change \u2192 Graph write latency, last hour'), chart, summary)),
    h('section', { 'aria-labelledby': 'dl-h' }, h('h3', { id: 'dl-h' }, 'Dead letters'),
      has('operator') ? '' : h('p', { class: 'muted', id: 'dl-viewer' }, `Retrying a dead letter needs the operator role; you are signed in as ${me.roles.join(', ')}.`),
      h('table', { id: 'dl-table' }, h('thead', {}, h('tr', {}, ...['Time', 'User', 'Subject', 'Why', 'Reason', 'Retry'].map((c) => h('th', { scope: 'col' }, c)))), dlBody)));

  let feed = new AbortController();
  let timer = 0, stopped = false;
  stopView = () => { stopped = true; feed.abort(); clearTimeout(timer); };
  const placeholder = () => h('tr', { class: 'placeholder' }, h('td', { colspan: 5, class: 'muted' },
    filter ? `Nothing yet for UPNs containing \u201c${filter}\u201d in the last 15 minutes.` : 'Nothing in the last 15 minutes yet.'));
  const follow = () => {
    feed.abort();
    feed = new AbortController();
    setText(filterState, filter ? `Showing only users whose UPN contains \u201c${filter}\u201d.` : 'Showing everyone.');
    followLive(feed.signal, filter,
      // Each (re)connect replays the last 15 minutes: start from empty so
      // that nothing shows twice.
      () => rows.replaceChildren(placeholder()),
      (kind, it) => {
        if (rows.firstElementChild && rows.firstElementChild.classList.contains('placeholder')) rows.replaceChildren();
        rows.prepend(liveRow(kind, it));
        while (rows.children.length > 300) rows.lastChild.remove();
      });
  };
  // The filter goes into the address (shareable, kept on reload) without a
  // hashchange, which would rebuild the page.
  const apply = (f) => {
    filter = f;
    history.replaceState(null, '', '#live' + (f ? '/' + encodeURIComponent(f) : ''));
    follow();
  };
  follow();
  // The next refresh is scheduled when this one is over: a slow answer
  // never stacks requests up.
  const refresh = async () => {
    await Promise.allSettled([drawLatency(chart, summary), loadDeadLetters(dlBody, () => !stopped)]);
    if (!stopped) timer = setTimeout(refresh, 10000);
  };
  refresh();
}

function liveRow(kind, it) {
  let k = 'event', what = '', outcome = '', cls = '', title = '';
  if (kind === 'event') {
    k = (sourceLabels[it.source] || it.source) + ' event';
    what = eventLabels[it.source + ' ' + it.type] || `${it.source} ${it.type}`;
    if (it.must_change) what += ': must change at next logon';
    title = it.event_id;
  } else {
    const r = it.record;
    k = r.kind;
    what = [r.rule, r.action, r.step].filter(Boolean).join(' / ') || r.detail || '';
    outcome = r.outcome + (r.http_status ? ' ' + r.http_status : '');
    cls = r.outcome === 'ok' || r.outcome === 'act' ? 'ok' : (r.outcome === 'failed' || r.outcome === 'dead_letter' ? 'bad' : '');
    title = r.detail && what !== r.detail ? r.detail : '';
  }
  const user = it.upn ? h('a', { href: '#user/' + encodeURIComponent(it.upn) }, it.upn) : '';
  return h('tr', { 'data-kind': k }, h('td', { class: 'nowrap' }, clock(it.time)), h('td', {}, h('span', { class: 'badge' }, k)), h('td', {}, user),
    h('td', { title: title || null }, what), h('td', { class: cls }, outcome));
}

// followLive reads /api/v1/live (Server-Sent Events) with fetch, so that the
// token travels in the Authorization header (EventSource cannot send one).
// onConnect runs on each (re)connection, before its replay.
async function followLive(signal, user, onConnect, onItem) {
  const path = '/api/v1/live?since=15m' + (user ? '&user=' + encodeURIComponent(user) : '');
  while (!signal.aborted) {
    try {
      const resp = await fetch(path, { headers: { Authorization: 'Bearer ' + token() }, signal });
      if (resp.status === 401) { signOut('Your token was refused.'); return; }
      if (!resp.ok) throw new Error('live: ' + resp.status);
      if (signal.aborted) return;
      onConnect();
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i); buf = buf.slice(i + 2);
          let ev = 'message', data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) ev = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (data && !signal.aborted) onItem(ev, JSON.parse(data));
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      status('Live stream interrupted; reconnecting\u2026');
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

async function drawLatency(box, summary) {
  let data;
  try { data = await api('GET', '/api/v1/latency?window=1h'); } catch { return; }
  const W = 640, H = 220, L = 48, B = 24, T = 10, R = 10;
  const now = Date.now(), from = now - 3600e3;
  const pts = data.points.map((p) => ({ x: Date.parse(p.time), y: p.latency_ms, upn: p.upn }));
  const ymax = Math.max(1000, ...pts.map((p) => p.y)) * 1.1;
  const sx = (x) => L + (x - from) / (now - from) * (W - L - R);
  const sy = (y) => H - B - y / ymax * (H - B - T);
  const sum = data.summary;
  const text = sum.count
    ? `${plural(sum.count, 'Graph write')}; median ${Math.round(sum.p50_ms)} ms, p99 ${Math.round(sum.p99_ms)} ms, max ${Math.round(sum.max_ms)} ms.`
    : 'No Graph writes in the last hour.';
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'lat-title lat-desc' },
    svg('title', { id: 'lat-title' }, 'Latency of the last hour'), svg('desc', { id: 'lat-desc' }, text));
  for (let i = 0; i <= 4; i++) {
    const y = ymax * i / 4;
    s.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: sy(y), y2: sy(y) }),
      svg('text', { x: L - 4, y: sy(y) + 4, 'text-anchor': 'end' }, y >= 1000 ? (y / 1000).toFixed(1) + ' s' : Math.round(y) + ' ms'));
  }
  for (let m = 0; m <= 60; m += 15) {
    const x = sx(from + m * 60e3);
    s.append(svg('text', { x, y: H - 6, 'text-anchor': m === 60 ? 'end' : m === 0 ? 'start' : 'middle' }, m === 60 ? 'now' : `-${60 - m} min`));
  }
  s.append(svg('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }), svg('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
  for (const p of pts) s.append(svg('circle', { cx: sx(p.x), cy: sy(p.y), r: 3 }, svg('title', {}, `${p.upn || ''} ${Math.round(p.y)} ms`)));
  box.replaceChildren(s); // nothing in the chart takes focus
  setText(summary, text);
}

async function loadDeadLetters(body, alive) {
  let data;
  try { data = await api('GET', '/api/v1/deadletters'); } catch { return; }
  if (!alive()) return;
  reconcile(body, data.dead_letters, (d) => `${d.seq}:${d.available}`, deadLetterRow,
    () => h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'None.')));
}

function deadLetterRow(d) {
  let retry;
  if (!d.available) retry = h('span', { class: 'muted' }, `Cannot retry: the original is no longer in ${d.stream}.`);
  else if (!has('operator')) retry = h('span', { class: 'muted' }, 'Needs the operator role.');
  else {
    retry = h('button', { type: 'button', 'aria-label': `Retry dead letter ${d.seq}`, onclick: busyClick(async (b) => {
      try {
        const r = await api('POST', `/api/v1/deadletters/${d.seq}/retry`);
        status(r.retried ? 'Republished to ' + r.subject : 'Already retried.');
        b.textContent = 'Retry again';
      } catch (err) { status('Retry failed: ' + err.message); }
    }) }, 'Retry');
  }
  return h('tr', {}, h('td', {}, fmtTime(d.time)), h('td', {}, d.upn || ''), h('td', {}, d.subject || d.stream),
    h('td', {}, d.why), h('td', {}, d.reason), h('td', {}, retry));
}

// ---- user page ----

function userView(view, upn) {
  const results = h('ul', { class: 'results', id: 'user-results', 'aria-label': 'Search results' });
  const detail = h('div', { id: 'user-detail' });
  const input = h('input', { id: 'user-q', type: 'search', name: 'q', placeholder: 'alice@example.com or Alice', value: upn || '' });
  const open = (u) => {
    const target = '#user/' + encodeURIComponent(u);
    if (location.hash === target) showUser(detail, u); else location.hash = target;
  };
  view.append(h('h2', {}, 'Users'),
    h('form', { class: 'row', role: 'search', onsubmit: async (e) => {
      e.preventDefault();
      const q = input.value.trim();
      if (q.length < 2) { results.replaceChildren(h('li', { class: 'error' }, 'Type at least 2 characters.')); return; }
      // A whole UPN opens the user; anything else (a part of one, a name)
      // is a search.
      try {
        const limit = 50;
        const r = await api('GET', `/api/v1/users?limit=${limit}&q=` + encodeURIComponent(q));
        const exact = r.users.find((u) => u.upn.toLowerCase() === q.toLowerCase());
        if (exact) { open(exact.upn); return; }
        if (q.includes('@') && r.users.length >= limit) {
          try { await api('GET', '/api/v1/users/' + encodeURIComponent(q) + '?history=1'); open(q); return; } catch { /* not a UPN: list */ }
        }
        results.replaceChildren(...(r.users.length ? r.users.map((u) => h('li', {},
          h('a', { href: '#user/' + encodeURIComponent(u.upn) }, u.upn), ' ', h('span', { class: 'muted' }, u.display_name || ''))) : [h('li', {}, 'No match.')]));
      } catch (err) { results.replaceChildren(h('li', { class: 'error' }, err.message)); }
    } }, h('div', { class: 'grow' }, h('label', { for: 'user-q' }, 'UPN or name'), input), h('button', { type: 'submit' }, 'Search')),
    results, detail);
  if (upn) showUser(detail, upn);
  else input.focus();
}

// pendingText says in words what pwsync waits for (the same cases as the
// API's pending list, which names action IDs).
function pendingText(v) {
  const st = v.state;
  if (st.change_required) {
    const rule = (st.required_by_action || '').split('.')[0];
    return 'Entra ID asks for a new password at next sign-in, set after ' + (ruleLabels[rule] || (rule ? `the ${rule} rule` : 'a rule')) +
      '. pwsync clears it once a new password is set in AD.';
  }
  if (st.writeback_await) return `Waiting for AD to follow the password changed in the cloud at ${fmtTime(st.writeback_await)}.`;
  if (st.policies_pending) return `passwordPolicies set to \u201c${st.policies_pending}\u201d${st.policies_pending_at ? ' at ' + fmtTime(st.policies_pending_at) : ''}; waiting to see it back from Entra ID.`;
  return v.pending.length ? v.pending.join('; ') : 'Nothing.';
}

async function showUser(box, upn) {
  box.replaceChildren(h('p', { class: 'muted' }, 'Loading\u2026'));
  let v;
  try { v = await api('GET', '/api/v1/users/' + encodeURIComponent(upn) + '?history=100'); }
  catch (e) { box.replaceChildren(h('p', { class: 'error' }, e.status === 404 ? `${upn}: no AD user with this UPN has been seen.` : e.message)); return; }
  const ad = v.state.ad || {}, c = v.state.cloud;
  const kv = (pairs) => h('dl', { class: 'kv' }, pairs.filter(Boolean).flatMap(([k, val]) => [h('dt', {}, k), h('dd', {}, val)]));
  const next = v.next_notice ? `${fmtTime(v.next_notice.due)}: ${v.next_notice.template || ''}${v.next_notice.enforce ? ' + enforce' : ''}` : (v.schedule_why || 'none');
  box.replaceChildren(
    h('h3', { id: 'user-name' }, ad.display_name ? `${ad.display_name} (${v.upn})` : v.upn),
    h('div', { class: 'grid' },
      h('section', { class: 'panel', 'aria-label': 'Active Directory' }, h('h3', {}, 'Active Directory'), kv([
        ['DN', ad.dn], ['objectGUID', ad.object_guid], ['Password set', v.password_set ? fmtTime(v.password_set) : (v.must_change ? 'must change at next logon' : '\u2014')],
        ['Expires', v.expiry ? `${fmtTime(v.expiry)} (${v.expiry_why})` : v.expiry_why], ['Next notice', next],
        ['Never expires / disabled', `${v.never_expires ? 'yes' : 'no'} / ${v.disabled ? 'yes' : 'no'}`],
        ['In scope', `${v.state.in_scope ? 'yes' : 'no'} (${v.scope_why || ''})`]])),
      h('section', { class: 'panel', 'aria-label': 'Entra ID' }, h('h3', {}, 'Entra ID'), c ? kv([
        ['UPN', c.upn], ['Object id', c.id], ['Synced', c.sync_enabled ? 'yes' : 'no'], ['passwordPolicies', c.password_policies || '\u2014'],
        ['Last password change', fmtTime(c.last_password_change) || '\u2014']]) : h('p', {}, v.joined_cloud_id ? 'Joined by the actuator: ' + v.joined_cloud_id : 'Not joined yet.'),
        h('h3', {}, 'Pending'), h('p', { id: 'user-pending', title: v.pending.join('; ') || null }, pendingText(v)),
        h('h3', {}, 'Queued actions'), (v.queued_actions || []).length ? h('ul', { id: 'user-queued' }, v.queued_actions.map((q) =>
          h('li', {}, `${q.action} (${ruleLabels[q.rule] || q.rule}), decided ${fmtTime(q.since)}; ${q.last_step ? 'last step: ' + q.last_step : 'not started'}`)))
          : h('p', { id: 'user-queued', class: 'muted' }, 'None.'),
        h('h3', {}, 'Dead letters'), (v.dead_letters || []).length ? h('ul', { id: 'user-dead' }, v.dead_letters.map((d) =>
          h('li', {}, `${d.action} at ${fmtTime(d.at)}: ${d.reason} (retry it from the live view)`)))
          : h('p', { id: 'user-dead', class: 'muted' }, 'None.'))),
    h('h3', { id: 'timeline-h' }, 'Timeline (event \u2192 rule \u2192 action \u2192 Graph answer), newest first'),
    h('div', { class: 'scroll', tabindex: '0', 'aria-labelledby': 'timeline-h' }, h('table', { id: 'timeline' },
      h('thead', {}, h('tr', {}, ...['Time', 'Event', 'Kind', 'Rule / action / step', 'Outcome', 'HTTP', 'Latency', 'Detail'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, v.timeline.length ? v.timeline.slice().reverse().map((r) => h('tr', {},
        h('td', { class: 'nowrap' }, fmtTime(r.time)), h('td', { title: r.event_id || null }, eventOf(r.event_id)), h('td', {}, r.kind),
        h('td', {}, [r.rule, r.action, r.step].filter(Boolean).join(' / ')),
        h('td', { class: r.outcome === 'ok' ? 'ok' : (r.outcome === 'failed' || r.outcome === 'dead_letter' ? 'bad' : '') }, r.outcome),
        h('td', {}, r.http_status || ''), h('td', {}, r.latency_ms ? Math.round(r.latency_ms) + ' ms' : ''), h('td', {}, r.detail || '')))
        : h('tr', {}, h('td', { colspan: 8, class: 'muted' }, 'Nothing recorded for this user yet.'))))));
}

// ---- campaigns ----

async function campaignsView(view, id) {
  if (id) return campaignDetail(view, id);
  const list = h('tbody');
  const domains = h('datalist', { id: 'c-domains' });
  view.append(h('h2', {}, 'Campaigns'));
  if (has('operator')) view.append(createForm(domains));
  else view.append(h('p', { class: 'muted' }, 'Creating a campaign needs the operator role.'));
  view.append(h('h3', {}, 'All campaigns'), h('table', { id: 'campaign-list' },
    h('thead', {}, h('tr', {}, ...['Name', 'State', 'Targets', 'Domain', 'Created by', 'Created'].map((x) => h('th', { scope: 'col' }, x)))), list));
  try {
    const r = await api('GET', '/api/v1/campaigns');
    const cs = r.campaigns || [];
    list.replaceChildren(...cs.slice().reverse().map((c) => h('tr', {},
      h('td', {}, h('a', { href: '#campaigns/' + c.id }, c.spec.name)), h('td', {}, c.state), h('td', {}, c.targets),
      h('td', {}, c.spec.domain || ''), h('td', {}, c.created_by), h('td', {}, fmtTime(c.created_at)))));
    if (!list.children.length) list.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'None yet.')));
    // The domains earlier campaigns ran in (the server fills in the default).
    domains.replaceChildren(...[...new Set(cs.map((c) => c.spec.domain).filter(Boolean))].map((d) => h('option', { value: d })));
  } catch (e) { list.replaceChildren(h('tr', {}, h('td', { colspan: 6, class: 'error' }, e.message))); }
}

// Lists in the form: DNs hold commas, so DN fields split on new lines only;
// UPNs and object IDs (no commas, no spaces) also on commas, semicolons and spaces.
const byLine = (s) => s.split(/\r?\n/).map((x) => x.trim()).filter(Boolean);
const byWord = (s) => s.split(/[\s,;]+/).map((x) => x.trim()).filter(Boolean);

function selectorOf(form, prefix, all) {
  const v = (n) => form.elements[prefix + n].value;
  const sel = { upns: byWord(v('upns')), ous: byLine(v('ous')), ad_groups: byLine(v('ad_groups')),
    entra_groups: byWord(v('entra_groups')), ldap_filter: v('ldap_filter').trim() || undefined };
  if (all && form.elements[prefix + 'all_in_scope'].checked) sel.all_in_scope = true;
  for (const k of ['upns', 'ous', 'ad_groups', 'entra_groups']) if (!sel[k].length) delete sel[k];
  return sel;
}

function selectorFields(prefix, legend, all) {
  const f = (n, label, el, hint) => h('div', {}, h('label', { for: 'c-' + prefix + n }, label), el,
    hint ? h('p', { class: 'hint', id: `c-${prefix}${n}-hint` }, hint) : '');
  const ta = (n, hint) => h('textarea', { id: 'c-' + prefix + n, name: prefix + n, rows: 3, spellcheck: 'false', 'aria-describedby': hint ? `c-${prefix}${n}-hint` : null });
  return h('fieldset', {}, h('legend', {}, legend),
    f('upns', 'UPNs', ta('upns', true), 'One per line, or separated by commas.'),
    f('ous', 'OUs', ta('ous', true), 'Distinguished names, one per line (e.g. OU=Finance,DC=example,DC=com).'),
    f('ad_groups', 'AD groups', ta('ad_groups', true), 'Group DNs, one per line; nested members count.'),
    f('entra_groups', 'Entra groups', ta('entra_groups', true), 'Object IDs, one per line; transitive members count.'),
    f('ldap_filter', 'LDAP filter', h('input', { id: 'c-' + prefix + 'ldap_filter', name: prefix + 'ldap_filter', type: 'text', spellcheck: 'false', placeholder: '(department=Finance)' })),
    all ? h('label', { class: 'inline' }, h('input', { type: 'checkbox', id: 'c-' + prefix + 'all_in_scope', name: prefix + 'all_in_scope' }), 'All users in scope') : '');
}

function createForm(domains) {
  const err = h('p', { class: 'error', role: 'alert', id: 'c-error' });
  let busy = false; // one campaign per click, however often Enter is pressed
  const form = h('form', { id: 'campaign-form', class: 'panel', onsubmit: async (e) => {
    e.preventDefault();
    if (busy) return;
    const v = (n) => form.elements[n].value.trim();
    err.textContent = '';
    const spec = { name: v('name'), reason: v('reason') || undefined, domain: v('domain') || undefined,
      include: selectorOf(form, '', true), exclude: selectorOf(form, 'x_', false),
      actions: { require_change: form.elements.require_change.checked, revoke_sessions: form.elements.revoke_sessions.checked, notify: form.elements.notify.checked } };
    if (!Object.keys(spec.exclude).filter((k) => spec.exclude[k] !== undefined).length) delete spec.exclude;
    const submit = form.elements.namedItem('c-create');
    busy = true;
    submit.setAttribute('aria-disabled', 'true');
    try {
      const c = await api('POST', '/api/v1/campaigns', spec);
      // A refused preview (e.g. above the hard cap) leaves a draft: show it
      // with the reason rather than a form that looks as if nothing happened.
      try { await api('POST', `/api/v1/campaigns/${c.id}/preview`); } catch (ex) { status('Preview refused: ' + ex.message); }
      location.hash = '#campaigns/' + c.id;
    } catch (ex) { err.textContent = ex.message; } finally { busy = false; submit.removeAttribute('aria-disabled'); }
  } },
  h('h3', {}, 'New campaign'),
  h('div', { class: 'cols' },
    h('div', {}, h('label', { for: 'c-name' }, 'Name'), h('input', { id: 'c-name', name: 'name', type: 'text', required: true })),
    h('div', {}, h('label', { for: 'c-reason' }, 'Reason (incident)'), h('input', { id: 'c-reason', name: 'reason', type: 'text' })),
    h('div', {}, h('label', { for: 'c-domain' }, 'AD domain'),
      h('input', { id: 'c-domain', name: 'domain', type: 'text', list: 'c-domains', spellcheck: 'false', 'aria-describedby': 'c-domain-hint' }), domains,
      h('p', { class: 'hint', id: 'c-domain-hint' }, 'A configured domain; empty = the first one.'))),
  h('div', { class: 'cols' }, selectorFields('', 'Include (anyone matching a field)', true),
    selectorFields('x_', 'Exclude (anyone matching a field is left out)', false)),
  h('fieldset', {}, h('legend', {}, 'Actions'),
    h('label', { class: 'inline' }, h('input', { type: 'checkbox', name: 'require_change', checked: true }), 'Require a password change'),
    h('label', { class: 'inline' }, h('input', { type: 'checkbox', name: 'revoke_sessions', checked: true }), 'Revoke sessions'),
    h('label', { class: 'inline' }, h('input', { type: 'checkbox', name: 'notify' }), 'Notify users')),
  h('button', { type: 'submit', id: 'c-create', name: 'c-create' }, 'Create and preview'), err);
  return form;
}

// campaignDetail builds the page once and updates it in place on each poll
// (every second while running), so that keyboard focus and screen-reader
// position survive; the buttons are rebuilt only when what they offer changes.
function campaignDetail(view, id) {
  const title = h('h2', { id: 'c-title' }, 'Campaign');
  const stateEl = h('strong', { id: 'c-state' });
  const stateMeta = h('span', { id: 'c-meta' });
  const stateLine = h('p', { 'aria-live': 'polite' }, 'State: ', stateEl, stateMeta);
  const buttonsRow = h('div', { class: 'row', id: 'c-buttons' });
  const errorEl = h('p', { class: 'error', id: 'c-failure', hidden: true });
  const fetchErr = h('p', { class: 'error', id: 'c-fetch-error', role: 'alert' });
  const progress = h('progress', { id: 'c-progress', max: 1, value: 0, 'aria-labelledby': 'prog-h' });
  const counts = h('p', { id: 'c-counts', 'aria-live': 'polite' });
  const rate = h('p', { id: 'c-rate', class: 'muted' });
  const previewBox = h('div', { id: 'c-preview' });
  const progressBox = h('section', { class: 'panel', 'aria-labelledby': 'prog-h' }, h('h3', { id: 'prog-h' }, 'Progress'), progress, counts, rate);
  const box = h('div', { id: 'campaign' }, title, stateLine, buttonsRow, errorEl, fetchErr, progressBox, previewBox,
    h('section', { 'aria-labelledby': 'rep-h' }, h('h3', { id: 'rep-h' }, 'Report'),
      h('div', { class: 'row' },
        h('button', { type: 'button', class: 'secondary', id: 'c-report-csv', onclick: () => download(`/api/v1/campaigns/${encodeURIComponent(id)}/report?format=csv`, `campaign-${id}.csv`) }, 'Download CSV'),
        h('button', { type: 'button', class: 'secondary', id: 'c-report-json', onclick: () => download(`/api/v1/campaigns/${encodeURIComponent(id)}/report?format=json`, `campaign-${id}.json`) }, 'Download JSON'))));
  view.append(h('p', {}, h('a', { href: '#campaigns' }, '\u2190 All campaigns')), box);

  let timer = 0, stopped = false, gen = 0, buttonsKey = '', previewKey = '', pv = null;
  stopView = () => { stopped = true; clearTimeout(timer); };
  const render = async () => {
    // One poll at a time: a click's render supersedes the pending one, and
    // an answer that arrives after a newer render started, or after the
    // page was left, is dropped.
    clearTimeout(timer);
    const my = ++gen;
    const current = () => !stopped && my === gen;
    let st;
    try {
      st = await api('GET', '/api/v1/campaigns/' + encodeURIComponent(id));
      if (!current()) return;
      if (!pv || ['draft', 'previewed', 'approved'].includes(st.campaign.state)) {
        pv = await api('GET', `/api/v1/campaigns/${encodeURIComponent(id)}/preview`);
        if (!current()) return;
      }
    } catch (e) {
      if (!current()) return;
      setText(fetchErr, e.status === 404 ? 'No such campaign.' : 'Could not read the campaign: ' + e.message);
      if (e.status !== 404 && e.status !== 401) timer = setTimeout(render, 3000);
      return;
    }
    setText(fetchErr, '');
    const c = st.campaign, s = st.stats, p = c.preview || (pv.campaign && pv.campaign.preview);
    if (title.textContent !== 'Campaign: ' + c.spec.name) { title.textContent = 'Campaign: ' + c.spec.name; document.title = `${c.spec.name} \u00b7 pwsync console`; }
    setText(stateEl, c.state);
    setText(stateMeta, ` \u00b7 created by ${c.created_by}` + (c.spec.domain ? ` \u00b7 domain ${c.spec.domain}` : '') +
      (c.approved_by ? ` \u00b7 approved by ${c.approved_by}` : '') +
      (c.needs_approval && !c.approved_by && !terminal(c.state) ? ' \u00b7 needs a second person (approver) to approve' : ''));
    errorEl.hidden = !c.error;
    setText(errorEl, c.error || '');

    const creator = !!me && me.name.toLowerCase() === (c.created_by || '').toLowerCase();
    const key = JSON.stringify([c.state, c.needs_approval, creator, me && me.roles]);
    if (key !== buttonsKey) {
      buttonsKey = key;
      const hadFocus = buttonsRow.contains(document.activeElement);
      buttonsRow.replaceChildren(...campaignButtons(c, creator, render));
      // The clicked button may be gone (Start becomes Pause): keep the
      // keyboard in the row.
      if (hadFocus) (buttonsRow.querySelector('button:not([disabled])') || stateEl).focus();
    }

    const total = s.total || c.targets || 0;
    if (+progress.max !== (total || 1)) progress.max = total || 1;
    const doneN = (s.done || 0) + (s.failed || 0);
    if (+progress.value !== doneN) progress.value = doneN;
    setText(counts, progressText(s, total));
    setText(rate, c.state === 'running' ? rateText(s) : '');

    // Before it runs, the preview is what to read first; then the progress.
    const first = ['draft', 'previewed', 'approved'].includes(c.state) ? previewBox : progressBox;
    if (first.previousElementSibling !== fetchErr) box.insertBefore(first, fetchErr.nextSibling);
    const pk = JSON.stringify([p, pv && pv.details]);
    if (pk !== previewKey) {
      previewKey = pk;
      previewBox.replaceChildren(p ? previewSection(p, pv.details || {}) : '');
    }
    if (!terminal(c.state)) timer = setTimeout(render, c.state === 'running' ? 1000 : 3000);
  };
  stateEl.tabIndex = -1;
  render();
}

function campaignButtons(c, creator, render) {
  const act = (what, label, role, cls) => has(role) ? h('button', { type: 'button', id: 'c-' + what, class: cls || null, onclick: busyClick(async () => {
    try { await api('POST', `/api/v1/campaigns/${encodeURIComponent(c.id)}/${what}`); status(label + ': done'); } catch (ex) { status(label + ' refused: ' + ex.message); }
    await render();
  }) }, label) : '';
  const out = [];
  if (['draft', 'previewed', 'approved'].includes(c.state)) out.push(act('preview', 'Preview again', 'operator', 'secondary'));
  if (c.state === 'previewed' && c.needs_approval && has('approver')) {
    // The server refuses the creator too; the button says so before a click.
    out.push(creator ? h('button', { type: 'button', id: 'c-approve', disabled: true, 'aria-describedby': 'c-approve-why' }, 'Approve') : act('approve', 'Approve', 'approver'));
    if (creator) out.push(h('span', { id: 'c-approve-why', class: 'muted' }, 'You created this campaign: another person with the approver role must approve it.'));
  }
  if (c.state === 'approved' || (c.state === 'previewed' && !c.needs_approval)) out.push(act('start', 'Start', 'operator'));
  if (c.state === 'running') out.push(act('pause', 'Pause', 'operator', 'secondary'));
  if (c.state === 'paused') out.push(act('resume', 'Resume', 'operator'));
  if (!terminal(c.state)) out.push(act('cancel', 'Cancel', 'operator', 'danger'));
  if (!terminal(c.state) && !has('operator')) out.push(h('span', { class: 'muted' }, 'Running and stopping a campaign needs the operator role.'));
  if (terminal(c.state)) out.push(h('span', { class: 'muted', id: 'c-finished' }, `Finished${c.finished_at ? ' ' + fmtTime(c.finished_at) : ''}: nothing more to do. The report is below.`));
  return out.filter(Boolean);
}

function previewSection(p, details) {
  return h('section', { class: 'panel', 'aria-labelledby': 'pv-h' }, h('h3', { id: 'pv-h' }, 'Preview'),
    h('p', { id: 'c-preview-counts' }, previewText(p)),
    h('table', { id: 'c-sample' }, h('caption', { class: 'muted' }, 'Sample'), h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'UPN'), h('th', { scope: 'col' }, 'Write'), h('th', { scope: 'col' }, 'Name'))),
      h('tbody', {}, (p.sample || []).map((t) => h('tr', {}, h('td', {}, t.u), h('td', {}, writeLabels[kindWrites[t.k]] || t.k), h('td', {}, t.n || ''))))),
    h('h3', {}, 'Excluded'), h('ul', { id: 'c-excluded' }, orNone((details.excluded || []).map((x) => h('li', {}, `${x.upn}: ${x.reason}`)))),
    h('h3', {}, 'Matched nobody'), h('ul', { id: 'c-unmatched' }, orNone((details.unmatched || []).map((u) => h('li', {}, u)))));
}

// ---- policy ----

async function policyView(view) {
  const rulesPre = h('pre', { id: 'policy-text' }, 'Loading\u2026');
  const out = h('pre', { id: 'explain-text', hidden: true, 'aria-live': 'polite' });
  const input = h('input', { id: 'explain-upn', type: 'text', name: 'upn', placeholder: 'alice@example.com', spellcheck: 'false' });
  view.append(h('h2', {}, 'Policy'), h('h3', {}, 'Rules in force'), rulesPre,
    h('h3', {}, 'Explain for a user'),
    h('form', { class: 'row', onsubmit: async (e) => {
      e.preventDefault();
      out.hidden = false;
      try { out.textContent = (await api('GET', '/api/v1/policy/explain/' + encodeURIComponent(input.value.trim()))).text; }
      catch (ex) { out.textContent = ex.status === 404 ? 'No AD user with this UPN has been seen.' : ex.message; }
    } }, h('div', { class: 'grow' }, h('label', { for: 'explain-upn' }, 'UPN'), input), h('button', { type: 'submit' }, 'Explain')), out);
  try { rulesPre.textContent = (await api('GET', '/api/v1/policy')).text; } catch (e) { rulesPre.textContent = e.message; }
}

// ---- backfill brake ----

const batchKinds = { full_sync: 'first full sync', reevaluate: 're-evaluation after a policy change' };

// backfillView lists the backfill batches; a held one (more users than
// evaluator.forced_change.backfill_threshold) waits for an approver here or
// with `pwsync backfill approve`.
function backfillView(view) {
  const list = h('div', { id: 'backfill-list', 'aria-live': 'polite' });
  const fetchErr = h('p', { class: 'error', role: 'alert', id: 'backfill-error' });
  view.append(h('h2', {}, 'Backfill'),
    h('p', { class: 'muted' }, 'Mass actions are counted before anything is written: a first full sync\u2019s backfill and the re-evaluation after a rules policy change. Above the threshold they are held until an approver approves or rejects them.'),
    fetchErr, list);
  let timer = 0, stopped = false, key = '';
  stopView = () => { stopped = true; clearTimeout(timer); };
  const render = async () => {
    clearTimeout(timer);
    let bs;
    try { bs = await api('GET', '/api/v1/backfill'); } catch (e) {
      if (stopped) return;
      setText(fetchErr, 'Could not read the backfill batches: ' + e.message);
      timer = setTimeout(render, 3000);
      return;
    }
    if (stopped) return;
    setText(fetchErr, '');
    const k = JSON.stringify([bs, me && me.roles]);
    if (k !== key) {
      key = k;
      list.replaceChildren(...(bs.length ? bs.map((b) => batchPanel(b, render)) : [h('p', { class: 'muted' }, 'No backfill batches.')]));
    }
    timer = setTimeout(render, 3000);
  };
  render();
}

function batchPanel(b, render) {
  const decide = (what, label, cls) => h('button', { type: 'button', id: `bf-${what}-${b.id}`, class: cls || null, onclick: busyClick(async () => {
    try { await api('POST', `/api/v1/backfill/${encodeURIComponent(b.id)}/${what}`); status(label + ': done'); } catch (ex) { status(label + ' refused: ' + ex.message); }
    await render();
  }) }, label);
  const buttons = [];
  if (b.status === 'held') {
    if (has('approver')) buttons.push(decide('approve', 'Approve'), decide('reject', 'Reject', 'danger'));
    else buttons.push(h('span', { class: 'muted' }, 'Approving or rejecting needs the approver role.'));
  }
  return h('section', { class: 'panel', 'aria-labelledby': 'bf-h-' + b.id },
    h('h3', { id: 'bf-h-' + b.id }, `${batchKinds[b.kind] || b.kind}${b.domain ? ' of ' + b.domain : ''}: ${b.status}`),
    h('p', {}, sentences(
      `${plural(b.users, 'user')} (threshold ${b.threshold}), ${plural(b.actions, 'action')}`,
      b.decided_by ? `${b.status} by ${b.decided_by} ${fmtTime(b.decided)}` : '',
      b.released ? `${b.released} released` : '',
      b.superseded ? `${b.superseded} dropped: the user changed since` : '',
      b.dry_run ? 'Dry run: nothing is written either way' : '',
      b.detail || '')),
    b.sample && b.sample.length ? h('p', { class: 'muted' }, 'Sample: ' + b.sample.join(', ')) : '',
    h('div', { class: 'row' }, buttons));
}

// ---- start ----

window.addEventListener('hashchange', route);
document.getElementById('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  signIn(document.getElementById('token').value.trim());
});
if (token()) signIn(token()); else document.getElementById('token').focus();
