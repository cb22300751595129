// The API client: the token lives in sessionStorage (this tab only); every call sends it as a
// Bearer header; a 401 anywhere ends the session and returns to sign-in.

const KEY = "cargotrace.token";
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

export async function api(path, { method = "GET", body, params } = {}) {
  const url = new URL("/api/v1" + path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, v);
  }
  const headers = { Authorization: `Bearer ${token()}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401) {
    onUnauthorized();
    throw new ApiError(401, "unauthorized", "Your session has ended; sign in again.");
  }
  if (!res.ok) {
    const err = await res.json().catch(() => null);
    throw new ApiError(res.status, err?.error?.code ?? "error", err?.error?.message ?? res.statusText);
  }
  return res.json();
}

/** Every page of a list endpoint, up to `max` items. */
export async function all(path, params = {}, max = 5000) {
  const items = [];
  let cursor = null;
  do {
    const page = await api(path, { params: { ...params, limit: 1000, cursor } });
    items.push(...page.items);
    cursor = page.next;
  } while (cursor && items.length < max);
  return items;
}
