// pwsync console: plain ES module, no build step. Every datum comes from the
// admin API with the bearer token kept in sessionStorage (this tab only).
// Untrusted text is only ever set with textContent.

const TOKEN_KEY = 'pwsync.token';
let me = null;          // {name, roles}
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

const status = (msg) => { document.getElementById('status').textContent = msg; };
const token = () => sessionStorage.getItem(TOKEN_KEY);
const has = (role) => !!me && (role === 'viewer' ? me.roles.length > 0 : me.roles.includes(role));
const fmtTime = (t) => t ? new Date(t).toLocaleString(undefined, { hour12: false }) : '';
const clock = (t) => t ? new Date(t).toLocaleTimeString(undefined, { hour12: false }) : '';

// plural: "1 user", "2 users"; sentences joins the non-empty parts, each
// ending with a full stop (no dangling separators).
const plural = (n, one, many) => `${n} ${n === 1 ? one : (many || one + 's')}`;
const sentences = (...parts) => parts.filter(Boolean).map((x) => /[.!?]$/.test(x) ? x : x + '.').join(' ');
const stepLabels = { ad_must_change: 'AD must-change (pwdLastSet=0)', must_change: 'cloud must-change',
  verify_must_change: 'read-back of the cloud flag', revoke: 'session revoke', notify: 'notice' };
const kindLabels = { synced: 'synced', cloud: 'cloud-managed' };

function previewText(p) {
  const kinds = Object.entries(p.by_kind || {}).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${kindLabels[k] || k}`).join(', ');
  const steps = Object.entries(p.by_step || {}).filter(([, n]) => n > 0)
    .map(([k, n]) => `${stepLabels[k] || k} for ${plural(n, 'user')}`).join(', ');
  const excl = Object.entries(p.excluded || {}).filter(([, n]) => n > 0);
  const nExcl = excl.reduce((a, [, n]) => a + n, 0);
  return sentences(
    `${plural(p.total, 'user')} selected` + (kinds ? `: ${kinds}` : ''),
    steps ? `Steps: ${steps}` : 'No steps',
    nExcl ? `${nExcl} excluded: ` + excl.map(([r, n]) => `${n} ${r}`).join('; ') : 'Nobody excluded',
    p.unmatched ? `${plural(p.unmatched, 'UPN')} matched nobody` : '');
}

// orNone: a list's items, or one muted "None." item.
const orNone = (items) => items.length ? items : [h('li', { class: 'muted' }, 'None.')];

function progressText(s, total, rate, eta) {
  const writes = [plural(s.writes || 0, 'Graph write'), plural(s.ldap_writes || 0, 'LDAP write')];
  if (s.throttled) writes.push(`${s.throttled} throttled`);
  if (s.fallbacks) writes.push(`${plural(s.fallbacks, 'fallback')} after a flag Graph did not set`);
  return sentences(
    `${s.done || 0} done, ${s.failed || 0} failed, ${s.remaining ?? total} remaining of ${total}`,
    writes.join(', '),
    rate ? `${rate.toFixed(1)} users/s` + (s.remaining ? `, ETA ${eta}` : '') : '');
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

// ---- routing: #live, #user/<upn>, #campaigns, #campaigns/<id>, #policy ----

function route() {
  if (!me) return;
  stopView(); stopView = () => {};
  const [page, arg] = decodeURIComponent(location.hash.slice(1) || 'live').split(/\/(.*)/s);
  for (const a of document.querySelectorAll('nav a')) {
    if (a.getAttribute('href') === '#' + page) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const view = document.getElementById('view');
  view.replaceChildren();
  const pages = { live: liveView, user: userView, campaigns: campaignsView, policy: policyView };
  (pages[page] || liveView)(view, arg || '');
}

// ---- live view ----

function liveView(view) {
  const rows = h('tbody');
  const dlBody = h('tbody');
  const chart = h('div', { class: 'chart', id: 'latency-chart' });
  const summary = h('p', { id: 'latency-summary', class: 'muted' });
  view.append(h('h2', {}, 'Live'),
    h('div', { class: 'grid' },
      h('section', { 'aria-labelledby': 'feed-h' }, h('h3', { id: 'feed-h' }, 'Events, decisions, actions'),
        h('div', { class: 'scroll', tabindex: '0', 'aria-label': 'Live feed' },
          h('table', { id: 'live-table' }, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Time'), h('th', { scope: 'col' }, 'Kind'),
            h('th', { scope: 'col' }, 'User'), h('th', { scope: 'col' }, 'What'), h('th', { scope: 'col' }, 'Outcome'))), rows))),
      h('section', { 'aria-labelledby': 'lat-h' }, h('h3', { id: 'lat-h' }, 'AD change \u2192 Graph write latency, last hour'), chart, summary)),
    h('section', { 'aria-labelledby': 'dl-h' }, h('h3', { id: 'dl-h' }, 'Dead letters'),
      h('table', { id: 'dl-table' }, h('thead', {}, h('tr', {}, ...['Time', 'User', 'Subject', 'Why', 'Reason', ''].map((c) => h('th', { scope: 'col' }, c)))), dlBody)));

  const ctl = new AbortController();
  let timer = 0;
  stopView = () => { ctl.abort(); clearInterval(timer); };
  followLive(ctl.signal, (kind, it) => {
    rows.prepend(liveRow(kind, it));
    while (rows.children.length > 300) rows.lastChild.remove();
  });
  const refresh = () => { drawLatency(chart, summary); loadDeadLetters(dlBody); };
  refresh();
  timer = setInterval(refresh, 10000);
}

function liveRow(kind, it) {
  let k = 'event', what = '', outcome = '', cls = '';
  if (kind === 'event') {
    k = it.source + ' ' + it.type;
    what = it.must_change ? 'must change at next logon' : it.event_id;
  } else {
    const r = it.record;
    k = r.kind;
    what = [r.rule, r.action, r.step].filter(Boolean).join(' / ') || r.detail || '';
    outcome = r.outcome + (r.http_status ? ' ' + r.http_status : '');
    cls = r.outcome === 'ok' || r.outcome === 'act' ? 'ok' : (r.outcome === 'failed' || r.outcome === 'dead_letter' ? 'bad' : '');
  }
  const user = it.upn ? h('a', { href: '#user/' + encodeURIComponent(it.upn) }, it.upn) : '';
  return h('tr', { 'data-kind': k }, h('td', {}, clock(it.time)), h('td', {}, h('span', { class: 'badge' }, k)), h('td', {}, user),
    h('td', {}, what), h('td', { class: cls }, outcome));
}

// followLive reads /api/v1/live (Server-Sent Events) with fetch, so that the
// token travels in the Authorization header (EventSource cannot send one).
async function followLive(signal, onItem) {
  while (!signal.aborted) {
    try {
      const resp = await fetch('/api/v1/live?since=15m', { headers: { Authorization: 'Bearer ' + token() }, signal });
      if (resp.status === 401) { signOut('Your token was refused.'); return; }
      if (!resp.ok) throw new Error('live: ' + resp.status);
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
          if (data) onItem(ev, JSON.parse(data));
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
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'lat-title lat-desc' },
    svg('title', { id: 'lat-title' }, 'Latency of the last hour'),
    svg('desc', { id: 'lat-desc' }, `${data.summary.count} writes; p50 ${Math.round(data.summary.p50_ms)} ms, p99 ${Math.round(data.summary.p99_ms)} ms`));
  for (let i = 0; i <= 4; i++) {
    const y = ymax * i / 4;
    s.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: sy(y), y2: sy(y) }),
      svg('text', { x: L - 4, y: sy(y) + 4, 'text-anchor': 'end' }, y >= 1000 ? (y / 1000).toFixed(1) + ' s' : Math.round(y) + ' ms'));
  }
  for (let m = 0; m <= 60; m += 15) {
    const x = sx(from + m * 60e3);
    s.append(svg('text', { x, y: H - 6, 'text-anchor': 'middle' }, m === 60 ? 'now' : `-${60 - m} min`));
  }
  s.append(svg('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }), svg('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
  for (const p of pts) s.append(svg('circle', { cx: sx(p.x), cy: sy(p.y), r: 3 }, svg('title', {}, `${p.upn || ''} ${Math.round(p.y)} ms`)));
  box.replaceChildren(s);
  summary.textContent = data.summary.count
    ? `${data.summary.count} Graph writes; median ${Math.round(data.summary.p50_ms)} ms, p99 ${Math.round(data.summary.p99_ms)} ms, max ${Math.round(data.summary.max_ms)} ms.`
    : 'No Graph writes in the last hour.';
}

async function loadDeadLetters(body) {
  let data;
  try { data = await api('GET', '/api/v1/deadletters'); } catch { return; }
  if (!data.dead_letters.length) {
    body.replaceChildren(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'None.')));
    return;
  }
  body.replaceChildren(...data.dead_letters.map((d) => {
    const btn = has('operator') && d.available
      ? h('button', { type: 'button', 'aria-label': `Retry dead letter ${d.seq}`, onclick: async (e) => {
          e.target.disabled = true;
          try { const r = await api('POST', `/api/v1/deadletters/${d.seq}/retry`); status(r.retried ? 'Republished to ' + r.subject : 'Already retried.'); }
          catch (err) { status('Retry failed: ' + err.message); e.target.disabled = false; }
        } }, 'Retry')
      : '';
    return h('tr', {}, h('td', {}, fmtTime(d.time)), h('td', {}, d.upn || ''), h('td', {}, d.subject || d.stream),
      h('td', {}, d.why), h('td', {}, d.reason), h('td', {}, btn));
  }));
}

// ---- user page ----

function userView(view, upn) {
  const results = h('ul', { class: 'results', id: 'user-results', 'aria-label': 'Search results' });
  const detail = h('div', { id: 'user-detail' });
  const input = h('input', { id: 'user-q', type: 'search', name: 'q', placeholder: 'alice@example.com or Alice', value: upn || '' });
  view.append(h('h2', {}, 'Users'),
    h('form', { class: 'row', role: 'search', onsubmit: async (e) => {
      e.preventDefault();
      const q = input.value.trim();
      if (q.includes('@')) { location.hash = '#user/' + encodeURIComponent(q); return; }
      try {
        const r = await api('GET', '/api/v1/users?q=' + encodeURIComponent(q));
        results.replaceChildren(...(r.users.length ? r.users.map((u) => h('li', {},
          h('a', { href: '#user/' + encodeURIComponent(u.upn) }, u.upn), ' ', h('span', { class: 'muted' }, u.display_name || ''))) : [h('li', {}, 'No match.')]));
      } catch (err) { results.replaceChildren(h('li', { class: 'error' }, err.message)); }
    } }, h('div', {}, h('label', { for: 'user-q' }, 'UPN or name'), input), h('button', { type: 'submit' }, 'Search')),
    results, detail);
  if (upn) showUser(detail, upn);
  else input.focus();
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
        h('h3', {}, 'Pending'), h('p', { id: 'user-pending' }, v.pending.length ? v.pending.join('; ') : 'Nothing.'))),
    h('h3', {}, 'Timeline (event \u2192 rule \u2192 action \u2192 Graph answer)'),
    h('div', { class: 'scroll', tabindex: '0', 'aria-label': 'Timeline' }, h('table', { id: 'timeline' },
      h('thead', {}, h('tr', {}, ...['Time', 'Kind', 'What', 'Outcome', 'HTTP', 'Latency', 'Detail'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, v.timeline.slice().reverse().map((r) => h('tr', {},
        h('td', {}, fmtTime(r.time)), h('td', {}, r.kind), h('td', {}, [r.rule, r.action, r.step].filter(Boolean).join(' / ')),
        h('td', { class: r.outcome === 'ok' ? 'ok' : (r.outcome === 'failed' || r.outcome === 'dead_letter' ? 'bad' : '') }, r.outcome),
        h('td', {}, r.http_status || ''), h('td', {}, r.latency_ms ? Math.round(r.latency_ms) + ' ms' : ''), h('td', {}, r.detail || '')))))));
}

// ---- campaigns ----

async function campaignsView(view, id) {
  if (id) return campaignDetail(view, id);
  const list = h('tbody');
  view.append(h('h2', {}, 'Campaigns'));
  if (has('operator')) view.append(createForm());
  view.append(h('h3', {}, 'All campaigns'), h('table', { id: 'campaign-list' },
    h('thead', {}, h('tr', {}, ...['Name', 'State', 'Targets', 'Created by', 'Created'].map((x) => h('th', { scope: 'col' }, x)))), list));
  try {
    const r = await api('GET', '/api/v1/campaigns');
    list.replaceChildren(...(r.campaigns || []).slice().reverse().map((c) => h('tr', {},
      h('td', {}, h('a', { href: '#campaigns/' + c.id }, c.spec.name)), h('td', {}, c.state), h('td', {}, c.targets),
      h('td', {}, c.created_by), h('td', {}, fmtTime(c.created_at)))));
    if (!list.children.length) list.append(h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'None yet.')));
  } catch (e) { list.replaceChildren(h('tr', {}, h('td', { colspan: 5, class: 'error' }, e.message))); }
}

function createForm() {
  const f = (id, label, el) => h('div', {}, h('label', { for: id }, label), el);
  const lines = (s) => s.split(/[\n,;]+/).map((x) => x.trim()).filter(Boolean);
  const err = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { id: 'campaign-form', class: 'panel', onsubmit: async (e) => {
    e.preventDefault();
    const v = (n) => form.elements[n].value.trim();
    const spec = { name: v('name'), reason: v('reason') || undefined,
      include: { upns: lines(v('upns')), ous: lines(v('ous')), ad_groups: lines(v('ad_groups')), entra_groups: lines(v('entra_groups')),
        ldap_filter: v('ldap_filter') || undefined, all_in_scope: form.elements.all_in_scope.checked || undefined },
      actions: { require_change: form.elements.require_change.checked, revoke_sessions: form.elements.revoke_sessions.checked, notify: form.elements.notify.checked } };
    for (const k of ['upns', 'ous', 'ad_groups', 'entra_groups']) if (!spec.include[k].length) delete spec.include[k];
    try {
      const c = await api('POST', '/api/v1/campaigns', spec);
      await api('POST', `/api/v1/campaigns/${c.id}/preview`);
      location.hash = '#campaigns/' + c.id;
    } catch (ex) { err.textContent = ex.message; }
  } },
  h('h3', {}, 'New campaign'),
  f('c-name', 'Name', h('input', { id: 'c-name', name: 'name', type: 'text', required: true })),
  f('c-reason', 'Reason (incident)', h('input', { id: 'c-reason', name: 'reason', type: 'text' })),
  h('fieldset', {}, h('legend', {}, 'Selector (combined)'),
    f('c-upns', 'UPNs (one per line)', h('textarea', { id: 'c-upns', name: 'upns' })),
    f('c-ous', 'OUs (DNs, one per line)', h('textarea', { id: 'c-ous', name: 'ous' })),
    f('c-adg', 'AD groups (DNs, nested membership)', h('input', { id: 'c-adg', name: 'ad_groups', type: 'text' })),
    f('c-eg', 'Entra groups (object ids)', h('input', { id: 'c-eg', name: 'entra_groups', type: 'text' })),
    f('c-ldap', 'LDAP filter', h('input', { id: 'c-ldap', name: 'ldap_filter', type: 'text', placeholder: '(department=Finance)' })),
    h('label', { class: 'inline' }, h('input', { type: 'checkbox', name: 'all_in_scope' }), 'All users in scope')),
  h('fieldset', {}, h('legend', {}, 'Actions'),
    h('label', { class: 'inline' }, h('input', { type: 'checkbox', name: 'require_change', checked: true }), 'Require a password change'),
    h('label', { class: 'inline' }, h('input', { type: 'checkbox', name: 'revoke_sessions', checked: true }), 'Revoke sessions'),
    h('label', { class: 'inline' }, h('input', { type: 'checkbox', name: 'notify' }), 'Notify users')),
  h('button', { type: 'submit', id: 'c-create' }, 'Create and preview'), err);
  return form;
}

async function campaignDetail(view, id) {
  const box = h('div', { id: 'campaign' });
  view.append(h('p', {}, h('a', { href: '#campaigns' }, '\u2190 All campaigns')), box);
  let timer = 0;
  stopView = () => clearTimeout(timer);
  const render = async () => {
    let st, pv;
    try {
      st = await api('GET', '/api/v1/campaigns/' + encodeURIComponent(id));
      pv = await api('GET', `/api/v1/campaigns/${encodeURIComponent(id)}/preview`);
    } catch (e) { box.replaceChildren(h('p', { class: 'error' }, e.message)); return; }
    const c = st.campaign, s = st.stats, p = c.preview || (pv.campaign && pv.campaign.preview);
    const act = (what, label, role, cls) => has(role) ? h('button', { type: 'button', id: 'c-' + what, class: cls || '', onclick: async (e) => {
      e.target.disabled = true;
      try { await api('POST', `/api/v1/campaigns/${c.id}/${what}`); status(label + ': done'); } catch (ex) { status(label + ' refused: ' + ex.message); }
      render();
    } }, label) : '';
    const buttons = [];
    if (['draft', 'previewed', 'approved'].includes(c.state)) buttons.push(act('preview', 'Preview again', 'operator', 'secondary'));
    const creator = !!me && me.name.toLowerCase() === (c.created_by || '').toLowerCase();
    if (c.state === 'previewed' && c.needs_approval && has('approver')) {
      // The server refuses the creator too; the button says so before a click.
      buttons.push(creator ? h('button', { type: 'button', id: 'c-approve', disabled: true, 'aria-describedby': 'c-approve-why' }, 'Approve') : act('approve', 'Approve', 'approver'));
      if (creator) buttons.push(h('span', { id: 'c-approve-why', class: 'muted' }, 'You created this campaign: another person with the approver role must approve it.'));
    }
    if (c.state === 'approved' || (c.state === 'previewed' && !c.needs_approval)) buttons.push(act('start', 'Start', 'operator'));
    if (c.state === 'running') buttons.push(act('pause', 'Pause', 'operator', 'secondary'));
    if (c.state === 'paused') buttons.push(act('resume', 'Resume', 'operator'));
    if (!['done', 'cancelled', 'failed'].includes(c.state)) buttons.push(act('cancel', 'Cancel', 'operator', 'danger'));
    const total = s.total || c.targets || 0;
    const rate = s.started && s.done ? s.done / ((Date.now() - Date.parse(s.started)) / 1000) : 0;
    const eta = rate > 0 && s.remaining ? Math.round(s.remaining / rate) + ' s' : '\u2014';
    box.replaceChildren(
      h('h2', {}, 'Campaign: ', c.spec.name),
      h('p', {}, 'State: ', h('strong', { id: 'c-state' }, c.state), ` \u00b7 created by ${c.created_by}`,
        c.approved_by ? ` \u00b7 approved by ${c.approved_by}` : '', c.needs_approval && !c.approved_by ? ' \u00b7 needs a second person (approver) to approve' : ''),
      h('div', { class: 'row' }, buttons),
      c.error ? h('p', { class: 'error' }, c.error) : '',
      h('section', { class: 'panel', 'aria-labelledby': 'prog-h' }, h('h3', { id: 'prog-h' }, 'Progress'),
        h('progress', { id: 'c-progress', max: total || 1, value: (s.done || 0) + (s.failed || 0), 'aria-label': 'Campaign progress' }),
        h('p', { id: 'c-counts' }, progressText(s, total, rate, eta))),
      p ? h('section', { class: 'panel', 'aria-labelledby': 'pv-h' }, h('h3', { id: 'pv-h' }, 'Preview'),
        h('p', { id: 'c-preview-counts' }, previewText(p)),
        h('table', { id: 'c-sample' }, h('caption', { class: 'muted' }, 'Sample'), h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'UPN'), h('th', { scope: 'col' }, 'Kind'), h('th', { scope: 'col' }, 'Name'))),
          h('tbody', {}, (p.sample || []).map((t) => h('tr', {}, h('td', {}, t.u), h('td', {}, t.k), h('td', {}, t.n || ''))))),
        h('h3', {}, 'Excluded'), h('ul', { id: 'c-excluded' }, orNone((pv.details.excluded || []).map((x) => h('li', {}, `${x.upn}: ${x.reason}`)))),
        h('h3', {}, 'Matched nobody'), h('ul', { id: 'c-unmatched' }, orNone((pv.details.unmatched || []).map((u) => h('li', {}, u))))) : '',
      h('section', { 'aria-labelledby': 'rep-h' }, h('h3', { id: 'rep-h' }, 'Report'),
        h('div', { class: 'row' },
          h('button', { type: 'button', class: 'secondary', id: 'c-report-csv', onclick: () => download(`/api/v1/campaigns/${c.id}/report?format=csv`, `campaign-${c.id}.csv`) }, 'Download CSV'),
          h('button', { type: 'button', class: 'secondary', id: 'c-report-json', onclick: () => download(`/api/v1/campaigns/${c.id}/report?format=json`, `campaign-${c.id}.json`) }, 'Download JSON'))));
    if (!['done', 'cancelled', 'failed'].includes(c.state)) timer = setTimeout(render, c.state === 'running' ? 1000 : 3000);
  };
  render();
}

// ---- policy ----

async function policyView(view) {
  const rulesPre = h('pre', { id: 'policy-text' }, 'Loading\u2026');
  const out = h('pre', { id: 'explain-text', hidden: true });
  const input = h('input', { id: 'explain-upn', type: 'text', name: 'upn', placeholder: 'alice@example.com' });
  view.append(h('h2', {}, 'Policy'), h('h3', {}, 'Rules in force'), rulesPre,
    h('h3', {}, 'Explain for a user'),
    h('form', { class: 'row', onsubmit: async (e) => {
      e.preventDefault();
      out.hidden = false;
      try { out.textContent = (await api('GET', '/api/v1/policy/explain/' + encodeURIComponent(input.value.trim()))).text; }
      catch (ex) { out.textContent = ex.status === 404 ? 'No AD user with this UPN has been seen.' : ex.message; }
    } }, h('div', {}, h('label', { for: 'explain-upn' }, 'UPN'), input), h('button', { type: 'submit' }, 'Explain')), out);
  try { rulesPre.textContent = (await api('GET', '/api/v1/policy')).text; } catch (e) { rulesPre.textContent = e.message; }
}

// ---- start ----

window.addEventListener('hashchange', route);
document.getElementById('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  signIn(document.getElementById('token').value.trim());
});
if (token()) signIn(token()); else document.getElementById('token').focus();
