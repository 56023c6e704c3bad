// The server's HTTP API (spec comfy_api.md §5), always through the /api prefix, relative to the
// page so the editor also works behind a path prefix. A `?token=` in the page URL (servers started
// with --auth-token) is remembered for the session and sent as a bearer token.

const TOKEN_KEY = "sumi.authToken";

function authToken() {
  const fromPage = new URLSearchParams(location.search).get("token");
  if (fromPage) sessionStorage.setItem(TOKEN_KEY, fromPage);
  return sessionStorage.getItem(TOKEN_KEY);
}

class ApiError extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** Absolute URL of an API route; `withToken` adds ?token= where headers cannot be set (img, ws). */
function apiUrl(path, params = {}, { withToken = false } = {}) {
  const url = new URL(`api${path}`, document.baseURI);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) url.searchParams.set(key, value);
  }
  const token = withToken && authToken();
  if (token) url.searchParams.set("token", token);
  return url.href;
}

async function send(path, { method = "GET", params, json, body } = {}) {
  const headers = {};
  const token = authToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(apiUrl(path, params), { method, headers, body });
  if (response.status === 401) {
    throw new ApiError("The server needs an access token: open the editor as /?token=YOUR_TOKEN", 401, null);
  }
  return response;
}

async function readBody(response) {
  const text = await response.text();
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return text;
  }
}

async function call(path, options) {
  const response = await send(path, options);
  const body = await readBody(response);
  if (!response.ok) {
    const message = body?.error?.message || body?.error || `${response.status} ${response.statusText}`;
    throw new ApiError(`${options?.method || "GET"} ${path}: ${message}`, response.status, body);
  }
  return body;
}

/** `/view` URL of an output item `{filename, subfolder, type}`. */
export function viewUrl({ filename, subfolder = "", type = "output" }) {
  return apiUrl("/view", { filename, subfolder, type }, { withToken: true });
}

export function socketUrl(clientId) {
  const url = new URL(apiUrl("/ws", { clientId }, { withToken: true }));
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

export const api = {
  objectInfo: () => call("/object_info"),

  /** POST /prompt; resolves to {ok, status, body} so callers can read a 400's node_errors. */
  async queuePrompt(payload) {
    const response = await send("/prompt", { method: "POST", json: payload });
    return { ok: response.ok, status: response.status, body: await readBody(response) };
  },

  interrupt: () => call("/interrupt", { method: "POST", json: {} }),
  clearQueue: () => call("/queue", { method: "POST", json: { clear: true } }),
  freeMemory: () => call("/free", { method: "POST", json: { unload_models: true, free_memory: true } }),

  /** POST /upload/image; resolves to {name, subfolder, type}. */
  uploadImage(file, filename = file.name) {
    const form = new FormData();
    form.append("image", file, filename);
    form.append("type", "input");
    return call("/upload/image", { method: "POST", body: form });
  },

  jobs: (limit) => call("/jobs", { params: { limit } }),
  job: (id) => call(`/jobs/${encodeURIComponent(id)}`),

  /** The user's saved workflows (user/default/workflows); [] when there are none yet. */
  async userWorkflows() {
    const response = await send("/userdata", { params: { dir: "workflows", recurse: "true" } });
    if (response.status === 404) return [];
    if (!response.ok) throw new ApiError(`GET /userdata: ${response.status}`, response.status, null);
    return readBody(response);
  },
  userWorkflow: (path) => call(`/userdata/${encodeURIComponent(`workflows/${path}`)}`),
  saveUserWorkflow: (path, workflow) => call(`/userdata/${encodeURIComponent(`workflows/${path}`)}`, {
    method: "POST", params: { overwrite: "true" }, body: JSON.stringify(workflow, null, 2),
  }),

  /** The repository's shipped workflows/ folder; null when the server has no such route. */
  async shippedWorkflows() {
    const response = await send("/sumi/workflows");
    if (response.status === 404) return null;
    if (!response.ok) throw new ApiError(`GET /sumi/workflows: ${response.status}`, response.status, null);
    return readBody(response);
  },
  shippedWorkflow: (name) => call(`/sumi/workflows/${encodeURIComponent(name)}`),
};
