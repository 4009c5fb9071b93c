// The console's pages. Each renders into its container and returns
// { refresh, leave }: refresh is called on every change the watch sees.
// Text is always set as text (never parsed as HTML).

import * as api from './api.js';

// An element: h('a', { href: '#/' }, 'text', child, ...).
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const stateTag = (s) => h('span', { class: `state state-${String(s || 'unknown').replace(/[^a-z-]/g, '')}` }, s || '-');
const unitLink = (name) => h('a', { href: `#/units/${encodeURIComponent(name)}` }, name);
const machineLink = (id, hosts) => id
  ? h('a', { href: `#/machines/${encodeURIComponent(id)}` }, (hosts && hosts.get(id)) || id.slice(0, 12))
  : '-';
const time = (ms) => new Date(ms).toLocaleString();
const gib = (b) => (b >= 1 << 30 ? `${(b / (1 << 30)).toFixed(1)} GiB` : `${Math.round(b / (1 << 20))} MiB`);
const cpus = (m) => `${(m / 1000).toFixed(2)} CPU`;

function meter(label, used, total, fmt) {
  const pct = total > 0 ? Math.min(100, Math.round((used / total) * 100)) : 0;
  return h('div', {},
    h('span', {}, `${label}: ${fmt(used)} of ${fmt(total)} reserved (${pct}%)`),
    h('span', {
      class: `bar-meter${pct >= 90 ? ' high' : ''}`, role: 'meter', 'aria-label': `${label} reserved`,
      'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': pct,
    }, fill(pct)));
}

// The filled part of a meter: its width set through the CSSOM, which the
// Content-Security-Policy allows (a style attribute it would refuse).
function fill(pct) {
  const el = h('span', {});
  el.style.width = `${pct}%`;
  return el;
}

function table(headers, rows, caption) {
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'stack' },
      caption ? h('caption', { class: 'hint' }, caption) : null,
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows.map((cells) => h('tr', {},
        cells.map((c, i) => h('td', { 'data-label': headers[i] }, c)))))));
}

function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

const hostsOf = (machines) => new Map(machines.map((m) => [m.id, m.hostname]));
const fetchMachines = () => api.all('/v1/machines', 'machines');
const fetchUnits = () => api.all('/v1/units', 'units');
const fetchStates = (q) => api.all(`/v1/state${q || ''}`, 'states');
const nothing = { refresh() {}, leave() {} };

// The newest `keep` events of the last 24 hours matching `query`, paging
// through the history (oldest first) for at most 50 pages; and the index
// to follow from.
async function recentEvents(query, keep) {
  const since = Date.now() - 24 * 3600 * 1000;
  let token = '';
  let events = [];
  let index = 0;
  for (let i = 0; i < 50; i++) {
    const more = token ? `&nextPageToken=${encodeURIComponent(token)}` : '';
    const page = await api.get(`/v1/events?sinceMs=${since}&limit=1000${query}${more}`);
    events = events.concat(page.events).slice(-keep);
    index = page.index;
    if (!page.nextPageToken) break;
    token = page.nextPageToken;
  }
  return { events, index };
}

// A page whose body is rebuilt from fresh data on every change.
async function live(container, build) {
  const body = h('div', {});
  container.append(body);
  let running = null;
  const refresh = async () => {
    if (running) return running;
    running = (async () => {
      try {
        body.replaceChildren(...[await build()].flat());
      } catch (e) {
        if (e.status !== 401) body.replaceChildren(h('p', { class: 'error', role: 'alert' }, e.message));
      } finally {
        running = null;
      }
    })();
    return running;
  };
  await refresh();
  return { refresh, leave() {} };
}

async function overview(container) {
  container.append(h('h1', {}, 'Cluster overview'));
  return live(container, async () => {
    const [machines, units, servers] = await Promise.all([
      fetchMachines(), fetchUnits(), api.get('/v1/servers'),
    ]);
    const hosts = hostsOf(machines);
    const leader = servers.servers.find((s) => s.leader);
    const states = ['inactive', 'loaded', 'launched'];
    const count = (d, c) => units.filter((u) => u.desiredState === d && (u.currentState || 'inactive') === c).length;
    const stuck = units.filter((u) => u.unscheduledReason);
    return [
      h('div', { class: 'grid' },
        h('section', { class: 'card', 'aria-labelledby': 'o-leader' },
          h('h2', { id: 'o-leader' }, 'Servers'),
          facts([
            ['Leader', leader ? `${leader.id} (${leader.address})` : 'none elected'],
            ['Servers', String(servers.servers.length)],
            ['Machines', String(machines.length)],
            ['Units', String(units.length)],
          ])),
        h('section', { class: 'card', 'aria-labelledby': 'o-states' },
          h('h2', { id: 'o-states' }, 'Units by state'),
          h('div', { class: 'table-wrap' }, h('table', { class: 'counts' },
            h('caption', { class: 'hint' }, 'Rows: desired state; columns: current state'),
            h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'desired \\ current'), states.map((s) => h('th', { scope: 'col' }, s)))),
            h('tbody', {}, states.map((d) => h('tr', {}, h('th', { scope: 'row' }, d),
              states.map((c) => h('td', {}, String(count(d, c)))))))))),
      ),
      h('section', { 'aria-labelledby': 'o-machines' },
        h('h2', { id: 'o-machines' }, 'Machines'),
        machines.length === 0 ? h('p', { class: 'hint' }, 'No machine has joined.') :
          h('div', { class: 'grid' }, machines.map((m) => h('article', { class: 'card' },
            h('h3', {}, machineLink(m.id, hosts)),
            meter('CPU', m.used.cpuMillis, m.capacity.cpuMillis, cpus),
            meter('Memory', m.used.memoryBytes, m.capacity.memoryBytes, gib),
            h('p', { class: 'hint' }, `${m.units} unit${m.units === 1 ? '' : 's'}`))))),
      h('section', { 'aria-labelledby': 'o-unsched' },
        h('h2', { id: 'o-unsched' }, 'Unschedulable units'),
        stuck.length === 0 ? h('p', { class: 'hint' }, 'Every unit that should be placed is placed.') :
          table(['Unit', 'Reason'], stuck.map((u) => [unitLink(u.name), u.unscheduledReason]))),
    ];
  });
}

async function units(container) {
  container.append(h('h1', {}, 'Units'));
  const filter = h('input', { id: 'unit-filter', type: 'search', placeholder: 'web, db@…' });
  const desired = h('select', { id: 'unit-desired' },
    h('option', { value: '' }, 'any'), ['inactive', 'loaded', 'launched'].map((s) => h('option', { value: s }, s)));
  container.append(h('div', { class: 'filters', role: 'search' },
    h('div', {}, h('label', { for: 'unit-filter' }, 'Name contains'), filter),
    h('div', {}, h('label', { for: 'unit-desired' }, 'Desired state'), desired)));
  let data = null;
  const body = h('div', {});
  container.append(body);
  const draw = () => {
    if (!data) return;
    const q = filter.value.trim().toLowerCase();
    const shown = data.units.filter((u) => (!q || u.name.toLowerCase().includes(q))
      && (!desired.value || u.desiredState === desired.value));
    const active = new Map();
    for (const s of data.states) active.set(s.unit, `${s.activeState}/${s.subState}`);
    body.replaceChildren(
      h('p', { class: 'hint', 'aria-live': 'polite' }, `${shown.length} of ${data.units.length} units`),
      table(['Name', 'Desired', 'Current', 'Active', 'Machine'], shown.map((u) => [
        unitLink(u.name), stateTag(u.desiredState), stateTag(u.currentState || 'inactive'),
        active.has(u.name) ? stateTag(active.get(u.name)) : '-',
        machineLink(u.machineID, data.hosts),
      ])));
  };
  filter.addEventListener('input', draw);
  desired.addEventListener('change', draw);
  const refresh = async () => {
    const [u, s, m] = await Promise.all([fetchUnits(), fetchStates(), fetchMachines()]);
    data = { units: u, states: s, hosts: hostsOf(m) };
    draw();
  };
  await refresh();
  return { refresh, leave() {} };
}

async function unit(container, ctx, [name]) {
  const heading = h('h1', {}, name);
  container.append(h('p', {}, h('a', { href: '#/units' }, '← Units')), heading);
  const actionsBox = h('div', { class: 'actions' });
  const message = h('p', { class: 'error', role: 'alert' });
  if (ctx.canAct) container.append(h('section', { 'aria-label': 'Actions' }, actionsBox, message));
  const statusBox = h('div', {}, h('p', { class: 'hint' }, 'Asking the unit\'s host…'));

  const act = async (label, run) => {
    message.textContent = '';
    for (const b of actionsBox.querySelectorAll('button')) b.disabled = true;
    try { await run(); } catch (e) { message.textContent = `${label} failed: ${e.message}`; }
    for (const b of actionsBox.querySelectorAll('button')) b.disabled = false;
  };
  const action = (label, verb, text, run, danger) => h('button', {
    type: 'button', class: danger ? 'danger' : '', 'data-action': verb,
    onclick: async () => {
      if (await ctx.confirm(`${label} ${name}?`, text, label, danger)) await act(label, run);
    },
  }, label);
  if (ctx.canAct) {
    actionsBox.append(
      action('Start', 'start', 'Its desired state becomes launched: it is placed and started.', () => api.setDesired(name, 'launched')),
      action('Stop', 'stop', 'Its desired state becomes loaded: it stays on its machine, stopped.', () => api.setDesired(name, 'loaded')),
      action('Restart', 'restart', 'It is stopped, then started again once its machine reports it stopped.', async () => {
        await api.setDesired(name, 'loaded');
        for (let i = 0; i < 60; i++) {
          const now = await api.get(api.unitPath(name));
          if (now.currentState !== 'launched') break;
          await new Promise((r) => setTimeout(r, 1000));
        }
        await api.setDesired(name, 'launched');
      }),
      action('Destroy', 'destroy', 'The unit is stopped and removed from the cluster. This cannot be undone.', async () => {
        await api.destroy(name);
        ctx.go('#/units');
      }, true));
  }

  const build = async () => {
    const [got, states, machines, events] = await Promise.all([
      api.get(api.unitPath(name)), fetchStates(`?unitName=${encodeURIComponent(name)}`), fetchMachines(),
      recentEvents(`&unit=${encodeURIComponent(name)}`, 20),
    ]);
    const u = got;
    const hosts = hostsOf(machines);
    const recent = events.events.slice().reverse();
    return [
      h('section', { class: 'card', 'aria-labelledby': 'u-summary' },
        h('h2', { id: 'u-summary' }, 'Summary'),
        facts([
          ['Desired state', h('span', { id: 'desired-state' }, stateTag(u.desiredState))],
          ['Current state', h('span', { id: 'current-state' }, stateTag(u.currentState || 'inactive'))],
          ['Machine', machineLink(u.machineID, hosts)],
          ['Unscheduled', u.unscheduledReason || '-'],
          ['Content hash', u.hash],
        ])),
      h('section', { 'aria-labelledby': 'u-where' },
        h('h2', { id: 'u-where' }, 'Where it runs'),
        states.length === 0 ? h('p', { class: 'hint' }, 'No machine reports it.') :
          table(['Machine', 'Active', 'Load', 'Health', 'Restarts', 'Last error'], states.map((s) => [
            machineLink(s.machine, hosts), stateTag(`${s.activeState}`), s.loadState,
            stateTag(s.health === 'none' ? '-' : s.health), String(s.nRestarts), s.lastError || '-',
          ]))),
      h('section', { 'aria-labelledby': 'u-events' },
        h('h2', { id: 'u-events' }, 'Recent events'),
        recent.length === 0 ? h('p', { class: 'hint' }, 'No event in the last 24 hours.') :
          table(['When', 'Event', 'Machine', 'Detail', 'By'], recent.map((e) => [
            time(e.atMs), e.kind, machineLink(e.machine, hosts), e.detail || '', e.actor || '']))),
      h('section', { 'aria-labelledby': 'u-file' },
        h('h2', { id: 'u-file' }, 'Unit file'), h('pre', { tabindex: 0 }, u.text)),
    ];
  };
  const page = await live(container, build);
  container.append(h('section', { 'aria-labelledby': 'u-status' },
    h('h2', { id: 'u-status' }, 'On its host'), statusBox));
  loadStatus(name, statusBox, ctx.canAct);
  return page;
}

// The unit as its host's systemd has it, and its last journal lines (for
// operators and admins): asked of its agent, so it may take a while.
async function loadStatus(name, box, mayReadLogs) {
  try {
    const s = await api.get(`${api.unitPath(name)}/status?lines=20`);
    box.replaceChildren(
      facts([
        ['Host', s.hostname || '-'],
        ['Active', stateTag(s.activeState)], ['Sub state', s.subState],
        ['Main PID', s.mainPid ? String(s.mainPid) : '-'],
        ['Memory', s.memoryBytes ? gib(s.memoryBytes) : '-'],
        ['Health', s.health === 'none' ? '-' : s.health],
        ['Restarts', String(s.restarts)],
      ]),
      s.log && s.log.length
        ? h('div', {}, h('h3', {}, 'Journal'), h('pre', { tabindex: 0 }, s.log.map((l) => l.message).join('\n')))
        : h('p', { class: 'hint' }, mayReadLogs ? 'No journal lines.' : 'Journal lines are for operators and admins (logs can hold secrets).'));
  } catch (e) {
    box.replaceChildren(h('p', { class: 'hint' }, `The host did not answer: ${e.message}`));
  }
}

async function machines(container) {
  container.append(h('h1', {}, 'Machines'));
  return live(container, async () => {
    const ms = await fetchMachines();
    const hosts = hostsOf(ms);
    if (ms.length === 0) return h('p', { class: 'hint' }, 'No machine has joined.');
    return table(['Machine', 'Address', 'CPU', 'Memory', 'Units', 'Metadata'], ms.map((m) => [
      machineLink(m.id, hosts), m.primaryIP || '-',
      meter('CPU', m.used.cpuMillis, m.capacity.cpuMillis, cpus),
      meter('Memory', m.used.memoryBytes, m.capacity.memoryBytes, gib),
      String(m.units),
      Object.entries(m.metadata).map(([k, v]) => `${k}=${v}`).join(', ') || '-',
    ]));
  });
}

async function machine(container, ctx, [id]) {
  container.append(h('p', {}, h('a', { href: '#/machines' }, '← Machines')));
  const heading = h('h1', {}, id);
  container.append(heading);
  return live(container, async () => {
    const [ms, us, states] = await Promise.all([
      fetchMachines(), fetchUnits(), fetchStates(`?machineID=${encodeURIComponent(id)}`),
    ]);
    const m = ms.find((x) => x.id === id);
    const late = states.some((s) => (s.lastError || '').startsWith('machine unreachable'));
    const lease = !m ? 'not live: it holds no lease (gone, or never joined)'
      : late ? 'live, heartbeats late: its states read unknown' : 'live: its lease is held';
    if (m) heading.textContent = m.hostname;
    const placed = us.filter((u) => u.machineID === id);
    const active = new Map(states.map((s) => [s.unit, s.activeState]));
    return [
      h('section', { class: 'card', 'aria-labelledby': 'm-facts' },
        h('h2', { id: 'm-facts' }, 'Machine'),
        facts([
          ['Id', id], ['Lease', lease],
          ['Addresses', m ? m.addresses.join(', ') || '-' : '-'],
          ['Agent', m ? m.agentVersion : '-'],
          ['Metadata', m ? Object.entries(m.metadata).map(([k, v]) => `${k}=${v}`).join(', ') || '-' : '-'],
        ]),
        m ? meter('CPU', m.used.cpuMillis, m.capacity.cpuMillis, cpus) : null,
        m ? meter('Memory', m.used.memoryBytes, m.capacity.memoryBytes, gib) : null),
      h('section', { 'aria-labelledby': 'm-units' },
        h('h2', { id: 'm-units' }, 'Units'),
        placed.length === 0 ? h('p', { class: 'hint' }, 'No unit is placed here.') :
          table(['Unit', 'Desired', 'Current', 'Active'], placed.map((u) => [
            unitLink(u.name), stateTag(u.desiredState), stateTag(u.currentState || 'inactive'),
            stateTag(active.get(u.name) || '-')]))),
    ];
  });
}

// The cluster's history, newest first, followed with the events feed's
// long poll (as `flotilla events --follow` does).
async function events(container) {
  container.append(h('h1', {}, 'Events'));
  const [first, ms] = await Promise.all([recentEvents('', 200), fetchMachines()]);
  const hosts = hostsOf(ms);
  const shown = first.events;
  const seen = new Set(shown.map((e) => e.id));
  const body = h('div', {});
  container.append(h('p', { class: 'hint' }, 'The last 24 hours, newest first; new events appear as they happen.'), body);
  const draw = () => body.replaceChildren(shown.length === 0
    ? h('p', { class: 'hint' }, 'No event yet.')
    : table(['When', 'Event', 'Unit', 'Machine', 'Detail', 'By'], [...shown].reverse().map((e) => [
      time(e.atMs), e.kind, e.unit ? unitLink(e.unit) : '-', machineLink(e.machine, hosts), e.detail || '', e.actor || ''])));
  draw();
  const abort = new AbortController();
  (async () => {
    let index = first.index;
    while (!abort.signal.aborted) {
      try {
        const page = await api.get(`/v1/events?index=${index}&wait=25&limit=1000`, abort.signal);
        const fresh = page.events.filter((e) => !seen.has(e.id));
        if (fresh.length) {
          for (const e of fresh) seen.add(e.id);
          shown.push(...fresh);
          shown.splice(0, Math.max(0, shown.length - 200));
          draw();
        }
        index = page.index;
      } catch (e) {
        if (abort.signal.aborted || e.status === 401) return;
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  })();
  return { refresh() {}, leave() { abort.abort(); } };
}

async function notFound(container) {
  container.append(h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the overview')));
  return nothing;
}

export const views = {
  overview,
  units: (c, ctx, rest) => (rest.length ? unit(c, ctx, rest) : units(c, ctx)),
  machines: (c, ctx, rest) => (rest.length ? machine(c, ctx, rest) : machines(c, ctx)),
  events,
  notFound,
};
