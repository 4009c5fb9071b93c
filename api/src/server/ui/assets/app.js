// The console's shell: sign-in, the caller's role, hash routes, and the
// one long poll of /v1/watch that refreshes the page shown on a change.

import * as api from './api.js';
import { views } from './views.js';

const $ = (id) => document.getElementById(id);

let me = null;          // the caller (GET /v1/whoami)
let current = null;     // the view shown: { refresh(), leave() }
let generation = 0;     // a new sign-in or page starts a new generation
let watcher = null;     // the watch loop's AbortController

function setLive(text) { $('live').textContent = text; }

function showSignIn(message) {
  me = null;
  if (watcher) watcher.abort();
  if (current) current.leave();
  current = null;
  $('view').replaceChildren();
  $('nav').hidden = true;
  $('who').hidden = true;
  $('sign-in').hidden = false;
  $('sign-in-error').textContent = message || '';
  setLive('');
  $('token').focus();
}

function showSignedIn(who) {
  me = who;
  $('sign-in').hidden = true;
  $('nav').hidden = false;
  $('who').hidden = false;
  $('who-name').textContent = who.name;
  $('who-role').textContent = who.role;
  startWatch();
  route();
}

const canAct = () => me && (me.role === 'operator' || me.role === 'admin');

// Asks the user before a change: resolves to true when confirmed.
export function confirmAction(title, text, okLabel, danger) {
  const dialog = $('confirm');
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  const ok = $('confirm-ok');
  ok.textContent = okLabel;
  ok.className = danger ? 'danger' : '';
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
    $('confirm-cancel').focus();
  });
}

async function route() {
  if (!me) return;
  const hash = location.hash || '#/';
  if (!hash.startsWith('#/')) return; // an in-page link (the skip link)
  const parts = hash.slice(2).split('/').map(decodeURIComponent);
  const name = parts[0] || 'overview';
  const view = views[name] || views.notFound;
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (current) current.leave();
  const gen = ++generation;
  const container = document.createElement('div');
  const ctx = { me, canAct: canAct(), confirm: confirmAction, gen: () => gen === generation, go: (h) => { location.hash = h; } };
  try {
    current = await view(container, ctx, parts.slice(1));
  } catch (e) {
    if (gen !== generation) return;
    container.replaceChildren(errorBox(e));
    current = { refresh() {}, leave() {} };
  }
  if (gen !== generation) { current.leave(); return; }
  $('view').replaceChildren(container);
  const h1 = container.querySelector('h1');
  document.title = h1 ? `${h1.textContent} · flotilla` : 'flotilla console';
}

function errorBox(e) {
  const p = document.createElement('p');
  p.className = 'error';
  p.setAttribute('role', 'alert');
  p.textContent = e.message;
  return p;
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

// Waits for any change to units, assignments or states, then refreshes
// the page shown: no reloads.
function startWatch() {
  if (watcher) watcher.abort();
  const abort = new AbortController();
  watcher = abort;
  (async () => {
    let index = 0;
    while (!abort.signal.aborted) {
      try {
        const r = await api.get(`/v1/watch?index=${index}&wait=25`, abort.signal);
        if (index && r.index !== index && current) await current.refresh();
        index = r.index;
        setLive('Live: updates as the cluster changes');
      } catch (e) {
        if (abort.signal.aborted || e.status === 401) return;
        setLive('Connection lost: retrying');
        await sleep(2000, abort.signal);
      }
    }
  })();
}

async function start() {
  api.whenSignedOut((message) => showSignIn(message || 'Your session ended: sign in again.'));
  $('sign-in-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = event.target.querySelector('button');
    const token = $('token').value.trim();
    if (!token) { $('sign-in-error').textContent = 'Enter a token.'; return; }
    button.disabled = true;
    try {
      const who = await api.signIn(token);
      $('token').value = '';
      showSignedIn(who);
    } catch (e) {
      $('sign-in-error').textContent = e.status === 401
        ? `Sign-in refused: ${e.message}`
        : e.message;
      $('token').focus();
    } finally {
      button.disabled = false;
    }
  });
  $('sign-out').addEventListener('click', async () => {
    try { await api.signOut(); } catch { /* the cookie is cleared either way */ }
    location.hash = '#/';
    showSignIn('Signed out.');
  });
  window.addEventListener('hashchange', () => { if (me) route(); });
  try {
    showSignedIn(await api.whoami());
  } catch (e) {
    showSignIn(e.status === 401 ? '' : e.message);
  }
}

start();
