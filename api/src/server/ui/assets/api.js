// The JSON API, called with the session cookie and the console's header:
// the server accepts the cookie only with that header, which a cross-site
// form or link cannot send.

const CONSOLE = { 'X-Flotilla-Console': '1' };

export class ApiError extends Error {
  constructor(status, reason, message) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

// Called when the server says the session is gone (401).
let onSignedOut = () => {};
export function whenSignedOut(f) { onSignedOut = f; }

export async function call(method, path, body, signal) {
  const init = { method, headers: { ...CONSOLE }, credentials: 'same-origin', cache: 'no-store', signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const e = data && data.error ? data.error : { reason: 'error', message: `${response.status} ${response.statusText}` };
    if (response.status === 401 && path !== '/v1/session') onSignedOut(e.message);
    throw new ApiError(response.status, e.reason, e.message);
  }
  return data;
}

export const get = (path, signal) => call('GET', path, undefined, signal);

// Every item of a paged listing (`nextPageToken`).
export async function all(path, key) {
  const items = [];
  let token = '';
  for (;;) {
    const sep = path.includes('?') ? '&' : '?';
    const page = await get(token ? `${path}${sep}nextPageToken=${encodeURIComponent(token)}` : path);
    items.push(...page[key]);
    if (!page.nextPageToken) return items;
    token = page.nextPageToken;
  }
}

export const signIn = (token) => call('POST', '/v1/session', { token });
export const signOut = () => call('DELETE', '/v1/session');
export const whoami = () => get('/v1/whoami');
export const unitPath = (name) => `/v1/units/${encodeURIComponent(name)}`;
export const setDesired = (name, desiredState) => call('PUT', unitPath(name), { desiredState });
export const destroy = (name) => call('DELETE', unitPath(name));
