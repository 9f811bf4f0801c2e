// nclav dashboard: plain JavaScript module, no build step, no third-party code.
// Pages are "#/..." fragments rendered from the API's JSON. Every piece of data reaches the
// page through textContent or an attribute (never parsed as markup), so outputs and logs are
// escaped.
// The API token is sent once to POST ui/login; the session lives in an HttpOnly cookie and the
// CSRF token only in this module's memory.

import { layoutGraph } from "./graph.js";

// The API sits beside the page: "/ui" -> "/", "/stage/ui" -> "/stage/".
const BASE = location.pathname.replace(/ui\/?$/, "");
const FINAL_RUN = new Set(["succeeded", "failed", "cancelled"]);
const session = { csrf: null, features: {} };
let page = { stop: [] }; // what the current page must cancel when we leave it

// -- DOM helpers ------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const badge = (status) =>
  h("span", { class: `badge s-${status}`, "data-status": status }, status ?? "unknown");
const link = (href, text, attrs = {}) => h("a", { href, ...attrs }, text);
const encLink = (e) => link(`#/enclave/${encodeURIComponent(e)}`, e);
const partLink = (e, p) =>
  link(`#/enclave/${encodeURIComponent(e)}/partition/${encodeURIComponent(p)}`, p);
const runLink = (id) => link(`#/run/${encodeURIComponent(id)}`, id.slice(0, 8), { title: id });
const when = (t) => (t ? t.replace("T", " ").replace(/\.\d+Z$/, "Z") : "—");
const json = (v) => h("pre", { class: "json" }, JSON.stringify(v, null, 2));

function table(caption, headers, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("caption", { class: "muted" }, caption),
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h(
      "tbody",
      {},
      rows.length
        ? rows
        : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, "none")),
    ),
  );
}

const row = (cells, attrs = {}) =>
  h("tr", attrs, cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : h("td", {}, c))));

// Replace el's children; null/false children are left out (replaceChildren would print them).
const fill = (el, ...children) => {
  el.replaceChildren();
  return append(el, children);
};

function notice(text) {
  const el = document.getElementById("notice");
  el.textContent = text;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => (el.textContent = ""), 6000);
}

function duration(start, end) {
  if (!start) return "—";
  const ms = (end ? Date.parse(end) : Date.now()) - Date.parse(start);
  if (!(ms >= 0)) return "—";
  return ms < 1000 ? `${ms} ms` : ms < 120000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60000)} min`;
}

// -- API ----------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function call(path, { method = "GET", body, accept, signal } = {}) {
  const headers = { Accept: accept || "application/json" };
  if (method !== "GET") headers["X-Nclav-CSRF"] = session.csrf || "";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(BASE + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
    signal,
  });
  if (res.status === 401 && path !== "ui/login") {
    showLogin("Your session has ended; sign in again.");
    throw new ApiError(401, "signed out");
  }
  if (!res.ok) {
    let message = `${res.status}`;
    try {
      message = (await res.json()).error.message;
    } catch {
      /* not the JSON error shape */
    }
    throw new ApiError(res.status, message);
  }
  return res;
}

const get = async (path, opts) => (await call(path, opts)).json();

// Repeat fn every ms until the page changes (fn returning false stops it early). A slow
// answer (a big tree) spaces the repeats out: at least ten times the time it took.
function every(ms, fn) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    let again = true;
    const started = performance.now();
    try {
      again = (await fn()) !== false;
    } catch (e) {
      if (e.status === 401) return;
    }
    const wait = Math.max(ms, 10 * (performance.now() - started));
    if (again && !stopped) timer = setTimeout(tick, wait);
  };
  timer = setTimeout(tick, ms);
  page.stop.push(() => {
    stopped = true;
    clearTimeout(timer);
  });
}

// Read a server-sent-event stream from a fetch response; calls onEvent(name, data, id).
async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      let name = "message";
      let id = null;
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const [field, ...rest] = line.split(":");
        const val = rest.join(":").replace(/^ /, "");
        if (field === "event") name = val;
        else if (field === "data") data.push(val);
        else if (field === "id") id = val;
      }
      if (data.length) onEvent(name, data.join("\n"), id);
    }
  }
}

// -- sign in / out ------------------------------------------------------------------------------

function showLogin(message) {
  for (const stop of page.stop) stop();
  page = { stop: [] };
  session.csrf = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    required: true,
    "aria-describedby": "login-help",
  });
  const error = h("p", { class: "error", role: "alert", id: "login-error" }, message || "");
  const form = h(
    "form",
    { class: "login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Sign in to nclav"),
    h("label", { for: "token" }, "API token"),
    input,
    h(
      "p",
      { class: "muted", id: "login-help" },
      "The token `nclav serve` printed (or ~/.nclav/token). It is exchanged for a session " +
        "cookie and not kept by the browser.",
    ),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    error,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      const res = await call("ui/login", { method: "POST", body: { token: input.value } });
      const doc = await res.json();
      input.value = "";
      session.csrf = doc.csrf_token;
      await start();
    } catch (e) {
      error.textContent = `Sign-in failed: ${e.message}`;
    }
  });
  const main = document.getElementById("main");
  fill(main, form);
  input.focus();
}

async function signOut() {
  await fetch(BASE + "ui/logout", { method: "POST", credentials: "same-origin" });
  showLogin("Signed out.");
}

async function start() {
  const doc = await (await fetch(BASE + "ui/session", { credentials: "same-origin", cache: "no-store" })).json();
  session.features = doc.features || {};
  if (!doc.signed_in) return showLogin();
  session.csrf = doc.csrf_token;
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
  document.getElementById("nav-drift").hidden = !session.features.drift;
  route();
}

// -- routing ------------------------------------------------------------------------------------

const ROUTES = [
  [/^\/?$/, overviewPage],
  [/^\/graph$/, graphPage],
  [/^\/runs$/, runsPage],
  [/^\/run\/([^/]+)$/, runPage],
  [/^\/enclave\/([^/]+)$/, enclavePage],
  [/^\/enclave\/([^/]+)\/partition\/([^/]+)$/, partitionPage],
  [/^\/log\/([^/]+)\/([^/]+)\/([^/]+)$/, logPage],
  [/^\/drift$/, driftPage],
];

async function route() {
  if (!session.csrf) return;
  for (const stop of page.stop) stop();
  page = { stop: [] };
  document.getElementById("notice").textContent = ""; // a notice belongs to the page it came from
  window.scrollTo(0, 0);
  const path = location.hash.replace(/^#/, "") || "/";
  const main = document.getElementById("main");
  for (const a of document.querySelectorAll("#nav a")) {
    const target = a.getAttribute("href").slice(1);
    const current = target === "/" ? path === "/" : path.startsWith(target);
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [pattern, render] of ROUTES) {
    const m = path.match(pattern);
    if (!m) continue;
    const mine = page;
    try {
      await render(main, ...m.slice(1).map(decodeURIComponent));
    } catch (e) {
      if (e.status === 401 || mine !== page) return;
      fill(main, h("h1", {}, "Error"), h("p", { class: "error", role: "alert" }, e.message));
    }
    if (mine === page && document.activeElement === document.body) main.focus({ preventScroll: true });
    return;
  }
  fill(main, h("h1", {}, "Not found"), h("p", {}, `No page ${path}`));
}

// -- Overview -----------------------------------------------------------------------------------

function counts(title, map, field) {
  const entries = Object.entries(map).sort();
  return h(
    "section",
    { class: "card", "aria-label": title, "data-field": field },
    h("h2", {}, title),
    h(
      "dl",
      {},
      entries.map(([k, v]) => [h("dt", {}, k), h("dd", { "data-key": k }, String(v))]),
    ),
  );
}

// What started a run: the trigger, and the commit when a git push did.
const origin = (r) => (r.origin?.commit ? [r.trigger, " ", h("code", { title: r.origin.commit }, r.origin.commit.slice(0, 8))] : r.trigger);

function runRows(runs) {
  return runs.map((r) =>
    row(
      [runLink(r.id), badge(r.status), origin(r), when(r.created_at), String(r.changes),
        r.errors.length ? h("span", { class: "error" }, r.errors[0]) : ""],
      { "data-run": r.id },
    ),
  );
}

const RUN_HEADERS = ["Run", "Status", "Origin", "Created", "Changes", "Error"];

async function overviewPage(main) {
  fill(main, h("h1", {}, "Overview"), h("p", { class: "muted" }, "Loading…"));
  const mine = page;
  const render = async () => {
    const o = await get("ui/api/overview");
    if (mine !== page) return false;
    const children = [
      h("h1", {}, "Overview"),
      h(
        "div",
        { class: "cards" },
        h(
          "section",
          { class: "card", "aria-label": "Enclaves" },
          h("h2", {}, "Enclaves"),
          h("div", { class: "big", "data-field": "enclave-count" }, String(o.enclave_count)),
          h("div", { class: "muted" }, `${o.partition_count} partitions · last applied `, h("span", { "data-field": "last-reconciled" }, when(o.last_reconciled_at))),
          o.source
            ? h("div", { class: "muted", "data-field": "source-commit" }, "at commit ",
              h("code", { title: o.source.commit }, o.source.commit.slice(0, 12)), ` (${o.source.ref}) `, o.source.message)
            : null,
        ),
        counts("Enclaves by status", o.by_status, "by-status"),
        counts("Enclaves by cloud", o.by_cloud, "by-cloud"),
        counts("Partitions by status", o.partitions_by_status, "partitions-by-status"),
        o.drift ? counts("Partitions by drift", o.drift, "drift-counts") : null,
      ),
      h("h2", { id: "awaiting" }, `Awaiting approval (${o.awaiting_approval.length})`),
      table("Runs waiting for a decision", RUN_HEADERS, runRows(o.awaiting_approval), { "aria-labelledby": "awaiting", "data-field": "awaiting" }),
      h("h2", { id: "in-flight" }, `Runs in flight (${o.runs_in_flight.length})`),
      table("Queued or running", RUN_HEADERS, runRows(o.runs_in_flight), { "aria-labelledby": "in-flight", "data-field": "in-flight" }),
      h("h2", { id: "errors" }, `Errors (${o.error_count})`),
      table(
        o.error_count > o.errors.length ? `newest ${o.errors.length} of ${o.error_count}` : "Enclaves and partitions in error",
        ["Enclave", "Partition", "Error", "When"],
        o.errors.map((e) =>
          row([encLink(e.enclave_id), e.partition_id ? partLink(e.enclave_id, e.partition_id) : "—",
            h("span", { class: "error" }, e.message), when(e.occurred_at)]),
        ),
        { "aria-labelledby": "errors", "data-field": "errors" },
      ),
      h("h2", { id: "recent" }, "Recent runs"),
      table("Newest first", RUN_HEADERS, runRows(o.recent_runs), { "aria-labelledby": "recent", "data-field": "recent-runs" }),
    ];
    fill(main, children);
  };
  await render();
  every(5000, render);
}

// GET /drift: {"partitions": [one per partition], "counts": {status: n, "acknowledged": n}}.
const driftItems = (doc) => (Array.isArray(doc?.partitions) ? doc.partitions : []);
const driftCounts = (doc) => doc?.counts || {};

// -- Graph --------------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  return append(el, children);
}

async function graphPage(main) {
  fill(main, h("h1", {}, "Graph"), h("p", { class: "muted" }, "Loading…"));
  const g = await get("graph");
  const layout = layoutGraph(g.nodes, g.edges);
  const svg = s("svg", {
    class: "graph",
    width: layout.width,
    height: layout.height,
    viewBox: `0 0 ${layout.width} ${layout.height}`,
    role: "group",
    "aria-label": `Dependency graph: ${g.nodes.length} enclaves, ${layout.edges.length} import edges`,
  });
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" }, s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8c959f" }))));
  for (const e of layout.edges) {
    svg.append(s("path", { class: "edge", d: e.path, "marker-end": "url(#arrow)", "data-from": e.from, "data-to": e.to }, s("title", {}, `${e.to} imports ${e.labels.join(", ")} from ${e.from}`)));
  }
  for (const n of layout.nodes) {
    const node = g.nodes[n.index];
    const parts = node.partitions || [];
    const a = s("a", {
      href: `#/enclave/${encodeURIComponent(node.id)}`,
      class: `node s-${node.status}`,
      "data-enclave": node.id,
      "aria-label": `Enclave ${node.id}, ${node.status}, ${parts.length} partitions`,
    });
    a.append(
      s("rect", { class: "box", x: n.x, y: n.y, width: n.w, height: n.h, rx: 6 }),
      s("text", { x: n.x + 8, y: n.y + 16 }, node.id.length > 26 ? node.id.slice(0, 25) + "…" : node.id),
    );
    parts.slice(0, 20).forEach((p, i) => {
      a.append(s("rect", { class: `part s-${p.status}`, x: n.x + 8 + i * 9, y: n.y + 24, width: 7, height: 7, rx: 1 }, s("title", {}, `${p.id}: ${p.status}`)));
    });
    svg.append(a);
  }
  const edgeList = h("ul", {}, layout.edges.map((e) => h("li", {}, encLink(e.to), " imports ", e.labels.join(", "), " from ", encLink(e.from))));
  fill(main, 
    h("h1", {}, "Graph"),
    h("p", { class: "muted" }, `${g.nodes.length} enclaves; an arrow points from the exporting enclave to the importer. Select an enclave to open it.`),
    h("div", { class: "graph-wrap" }, svg),
    h("details", {}, h("summary", {}, `Import edges as a list (${layout.edges.length})`), edgeList),
  );
}

// -- Enclave and partition ----------------------------------------------------------------------

function kv(obj, label) {
  const entries = Object.entries(obj || {});
  return table(label, ["Name", "Value"], entries.map(([k, v]) => row([h("code", {}, k), typeof v === "string" ? v : JSON.stringify(v)], { "data-key": k })), { "data-field": label });
}

async function enclavePage(main, id) {
  const e = await get(`enclaves/${encodeURIComponent(id)}`);
  const drift = session.features.drift ? await get(`drift?enclave=${encodeURIComponent(id)}`).catch(() => null) : null;
  const driftBy = {};
  for (const d of driftItems(drift)) driftBy[d.partition_id] = d;
  const desired = e.desired || {};
  fill(main, 
    h("h1", {}, "Enclave ", h("span", { "data-field": "enclave-id" }, e.enclave_id), " ", badge(e.meta.status)),
    h("p", { class: "muted" }, `${desired.name ?? ""} · cloud ${e.resolved_cloud ?? desired.cloud ?? "—"} · region ${desired.region ?? "—"} · updated ${when(e.meta.updated_at)}`),
    e.meta.last_error ? h("p", { class: "error", role: "alert", tabindex: "0", "data-field": "last-error" }, e.meta.last_error.message) : null,
    h("h2", {}, "Partitions"),
    table(
      "Applied partitions",
      ["Partition", "Status", "Produces", "Updated", "Drift", "Error"],
      Object.entries(e.partitions).map(([pid, p]) =>
        row([partLink(e.enclave_id, pid), badge(p.meta.status), p.desired?.produces ?? "—", when(p.meta.updated_at),
          driftBy[pid] ? [badge(driftBy[pid].status), driftBy[pid].acknowledged ? " (acknowledged)" : ""] : "—",
          p.meta.last_error ? h("span", { class: "error" }, p.meta.last_error.message) : ""], { "data-partition": pid }),
      ),
      { "data-field": "partitions" },
    ),
    h("h2", {}, "Handles"),
    h("h3", {}, "Enclave handle"), json(e.enclave_handle),
    h("h3", {}, "Export handles"), json(e.export_handles),
    h("h3", {}, "Import handles"), json(e.import_handles),
  );
}

async function partitionPage(main, enc, part) {
  const base = `enclaves/${encodeURIComponent(enc)}/partitions/${encodeURIComponent(part)}`;
  const e = await get(`enclaves/${encodeURIComponent(enc)}`);
  const p = e.partitions[part];
  if (!p) throw new ApiError(404, `partition ${part} not found in ${enc}`);
  const runs = await get(`${base}/iac/runs`);
  const section = h("section", { "aria-labelledby": "drift-title" });
  fill(main, 
    h("h1", {}, encLink(enc), " / ", h("span", { "data-field": "partition-id" }, part), " ", badge(p.meta.status)),
    p.meta.last_error ? h("p", { class: "error", role: "alert", tabindex: "0", "data-field": "last-error" }, p.meta.last_error.message) : null,
    h("p", { class: "muted" }, `created ${when(p.meta.created_at)} · updated ${when(p.meta.updated_at)}`),
    h("h2", {}, "Outputs"),
    kv(p.resolved_outputs, "outputs"),
    h("h2", {}, "Partition handle"),
    json(p.partition_handle),
    session.features.drift ? section : null,
    h("h2", {}, "IaC runs"),
    table(
      "Newest first",
      ["Run", "Operation", "Status", "Started", "Duration", "Exit code", "Log"],
      runs.map((r) =>
        row([h("code", { title: r.id }, r.id.slice(0, 8)), r.operation, badge(r.status), when(r.started_at), duration(r.started_at, r.finished_at),
          r.exit_code ?? "—", link(`#/log/${encodeURIComponent(enc)}/${encodeURIComponent(part)}/${r.id}`, "log", { "aria-label": `log of ${r.operation} ${r.id.slice(0, 8)}` })], { "data-iac-run": r.id }),
      ),
      { "data-field": "iac-runs" },
    ),
    h("h2", {}, "Applied configuration"),
    json(p.desired),
  );
  if (session.features.drift) await renderDrift(section, enc, part);
}

async function renderDrift(section, enc, part) {
  const path = `enclaves/${encodeURIComponent(enc)}/partitions/${encodeURIComponent(part)}/drift`;
  const d = await get(path);
  if (!document.contains(section)) return;
  const act = (what) => async (ev) => {
    ev.target.disabled = true;
    try {
      await call(`${path}/${what}`, { method: "POST" });
      notice(what === "check" ? "Drift check started" : "Drift acknowledged");
    } catch (e) {
      notice(`Failed: ${e.message}`);
    }
    await renderDrift(section, enc, part);
  };
  const log = d.iac_run_id
    ? link(`#/log/${encodeURIComponent(enc)}/${encodeURIComponent(part)}/${d.iac_run_id}`, "log of the check")
    : null;
  fill(section,
    h("h2", { id: "drift-title" }, "Drift"),
    h("p", { "data-field": "drift-status" }, "Status: ", badge(d.status), d.acknowledged ? " (acknowledged)" : "",
      d.checking ? " · a check is running" : "", ` · checked ${when(d.checked_at)}`,
      d.next_check_at ? ` · next check ${when(d.next_check_at)}` : "", log ? [" · ", log] : null),
    d.error ? h("p", { class: "error" }, d.error) : null,
    d.resource_drift?.length
      ? table("What drifted", ["Resource", "Actions", "Attributes"],
        d.resource_drift.map((r) => row([h("code", {}, r.address), (r.actions || []).join(", "), (r.attributes || []).join(", ")])),
        { "data-field": "drifted-resources" })
      : null,
    d.plan_text ? [h("h3", {}, "Plan"), h("pre", { class: "log", tabindex: "0", "aria-label": "Drift plan" }, d.plan_text)] : null,
    h("div", { class: "toolbar" },
      h("button", { type: "button", onclick: act("check"), disabled: d.checking }, "Check drift now"),
      d.status === "drifted" ? h("button", { type: "button", onclick: act("ack") }, "Acknowledge drift") : null),
  );
  // While a check runs, look again every 2 s until it is over (the page may have moved on).
  if (d.checking) setTimeout(() => document.contains(section) && renderDrift(section, enc, part).catch(() => {}), 2000);
}

// -- Runs ---------------------------------------------------------------------------------------

async function runsPage(main) {
  const mine = page;
  const render = async () => {
    const runs = await get("runs?limit=100");
    if (mine !== page) return false;
    fill(main, 
      h("h1", {}, "Runs"),
      table("Newest first; origin is what started the run (CLI, API, commit, schedule)",
        ["Run", "Status", "Origin", "Created", "Duration", "Changes", "Enclaves", "Error"],
        runs.map((r) =>
          row([runLink(r.id), badge(r.status), origin(r), when(r.created_at), duration(r.started_at, r.finished_at), String(r.changes),
            r.enclave_ids.length ? r.enclave_ids.slice(0, 3).join(", ") + (r.enclave_ids.length > 3 ? "…" : "") : "all",
            r.errors.length ? h("span", { class: "error" }, r.errors[0]) : ""], { "data-run": r.id }),
        ),
        { "data-field": "runs" },
      ),
    );
  };
  await render();
  every(2000, render);
}

async function runPage(main, id) {
  let refresh = null;
  const mine = page;
  const render = async () => {
    const r = await get(`runs/${encodeURIComponent(id)}`);
    if (mine !== page) return false;
    const start = Date.parse(r.started_at || r.created_at);
    const ends = r.steps.map((x) => Date.parse(x.finished_at || x.started_at || "")).filter((x) => x > 0);
    const end = r.finished_at ? Date.parse(r.finished_at) : Math.max(Date.now(), ...ends);
    const span = Math.max(1, end - start);
    const bar = (x) => {
      const track = h("div", { class: "track", "aria-hidden": "true" });
      if (x.started_at) {
        const b = h("div", { class: `bar s-${x.status}` });
        const s0 = Date.parse(x.started_at) - start;
        const s1 = (x.finished_at ? Date.parse(x.finished_at) : Date.now()) - start;
        b.style.left = `${Math.max(0, (100 * s0) / span)}%`;
        b.style.width = `${Math.max(0.3, (100 * (s1 - s0)) / span)}%`;
        track.append(b);
      }
      return h("td", { class: "bar-cell" }, track);
    };
    // Partition steps name a partition; wiring steps name an export or an import alias.
    const onPartition = (x) => x.target && /_partition$/.test(x.action);
    const target = (x) => (!x.target ? "—" : onPartition(x) ? partLink(x.enclave_id, x.target) : x.target);
    const logCell = (x) => (onPartition(x) && x.started_at
      ? link(`#/log/${encodeURIComponent(x.enclave_id)}/${encodeURIComponent(x.target)}/latest`, "log", { "aria-label": `log of step ${x.step_id}` })
      : "");
    const actions = [];
    if (r.status === "awaiting_approval" && session.features.approvals) {
      const decide = (what) => async (ev) => {
        for (const b of ev.target.parentNode.querySelectorAll("button")) b.disabled = true;
        try {
          await call(`runs/${encodeURIComponent(id)}/${what}`, { method: "POST" });
          notice(what === "approve" ? "Run approved" : "Run cancelled");
        } catch (e) {
          notice(`Failed: ${e.message}`);
        }
        await render();
      };
      actions.push(h("div", { class: "toolbar", role: "group", "aria-label": "Decide this run" },
        h("button", { type: "button", class: "primary", onclick: decide("approve") }, "Approve"),
        h("button", { type: "button", class: "danger", onclick: decide("cancel") }, "Cancel run")));
    }
    fill(main, 
      h("h1", {}, "Run ", h("code", { "data-field": "run-id" }, r.id), " ", badge(r.status)),
      r.origin?.commit ? h("p", { "data-field": "run-origin" }, `Commit ${r.origin.commit} (${r.origin.ref}) by ${r.origin.author || "?"}: ${r.origin.message || ""}`) : null,
      h("p", { class: "muted" }, `origin ${r.trigger} · created ${when(r.created_at)} · duration ${duration(r.started_at, r.finished_at)} · ${r.changes} changes${r.bundle ? ` · bundle ${r.bundle.slice(0, 12)}` : ""}`),
      ...actions,
      r.errors.length ? h("div", { role: "alert" }, h("h2", {}, "Errors"), h("ul", { "data-field": "run-errors" }, r.errors.map((x) => h("li", { class: "error" }, x)))) : null,
      r.approval ? h("section", { "aria-labelledby": "approval-title", "data-field": "approval" },
        h("h2", { id: "approval-title" }, "Plan awaiting approval"),
        h("p", {}, r.approval.reason),
        h("ul", {}, (r.approval.deletions || []).map((d) => h("li", {}, d))),
        h("details", {}, h("summary", {}, `Planned changes (${(r.approval.changes || []).length})`), json(r.approval.changes || []))) : null,
      h("h2", {}, "Steps"),
      table("Each step: when it started, how long it took, attempts and errors",
        ["Step", "Action", "Target", "Status", "Start", "Duration", "Attempts", "Timeline", "Error", "Log"],
        r.steps.map((x) =>
          row([h("code", {}, x.step_id), x.action, target(x), badge(x.status),
            x.started_at ? `+${duration(r.started_at || r.created_at, x.started_at)}` : "—",
            duration(x.started_at, x.finished_at), String(x.attempts), bar(x),
            x.error ? h("span", { class: "error" }, x.error) : "", logCell(x)], { "data-step": x.step_id }),
        ),
        { class: "timeline", "data-field": "steps" },
      ),
    );
    return !FINAL_RUN.has(r.status);
  };
  const live = await render();
  if (!live) return;
  // Live: the run's event stream when the server has one, else polling (both stop at the end).
  const controller = new AbortController();
  page.stop.push(() => controller.abort());
  let queued = false;
  refresh = () => {
    if (queued) return;
    queued = true;
    setTimeout(async () => {
      queued = false;
      try {
        if (!(await render())) controller.abort();
      } catch { /* the poll below retries */ }
    }, 250);
  };
  if (session.features.run_events) {
    call(`runs/${encodeURIComponent(id)}/events`, { accept: "text/event-stream", signal: controller.signal })
      .then((res) => ((res.headers.get("Content-Type") || "").startsWith("text/event-stream") ? readEvents(res, refresh) : null))
      .catch(() => {});
  }
  every(1000, async () => !controller.signal.aborted && render());
}

// -- Logs ---------------------------------------------------------------------------------------

async function logPage(main, enc, part, runId) {
  const base = `enclaves/${encodeURIComponent(enc)}/partitions/${encodeURIComponent(part)}/iac/runs`;
  const run = await get(`${base}/${runId === "latest" ? "latest" : encodeURIComponent(runId)}`);
  const url = `${base}/${run.id}/log`;
  const controller = new AbortController();
  page.stop.push(() => controller.abort());
  const lines = [""];
  const pre = h("pre", { class: "log", tabindex: "0", "aria-label": "Log output", "data-field": "log" });
  const status = h("span", { "data-field": "log-status" }, badge(run.status));
  const follow = h("input", { type: "checkbox", id: "follow", checked: true });
  const search = h("input", { type: "search", id: "log-search", placeholder: "lines containing…" });
  const matches = h("span", { class: "muted", "data-field": "matches", "aria-live": "polite" });
  let decoder = new TextDecoder();
  let offset = 0;

  const draw = () => {
    const q = search.value;
    if (q) {
      const found = lines.filter((l) => l.includes(q));
      pre.textContent = found.join("\n");
      matches.textContent = `${found.length} matching lines`;
    } else {
      matches.textContent = "";
      pre.textContent = lines.join("\n");
    }
    if (follow.checked) pre.scrollTop = pre.scrollHeight;
  };
  const add = (text) => {
    if (!text) return;
    const parts = text.split("\n");
    lines[lines.length - 1] += parts[0];
    for (const p of parts.slice(1)) lines.push(p);
    if (!search.value) {
      pre.append(document.createTextNode(text));
      if (follow.checked) pre.scrollTop = pre.scrollHeight;
    } else draw();
  };
  const ended = (st) => {
    fill(status, badge(st));
    notice("The run has ended");
  };
  search.addEventListener("input", draw);
  fill(main, 
    h("h1", {}, "Log: ", encLink(enc), " / ", partLink(enc, part), ` · ${run.operation} `, status),
    h("p", { class: "muted" }, `IaC run ${run.id} · started ${when(run.started_at)}`),
    h("div", { class: "toolbar" },
      h("label", {}, follow, " Follow"),
      h("button", { type: "button", onclick: () => { pre.scrollTop = pre.scrollHeight; follow.checked = true; } }, "Jump to end"),
      h("label", { for: "log-search" }, "Search"), search, matches),
    pre,
  );

  // One request decides: an event stream when the server streams, else the text form (polled).
  const poll = async (res) => {
    let delay = 500;
    for (;;) {
      res = res || (await call(`${url}?offset=${offset}`, { accept: "text/plain", signal: controller.signal }));
      const data = new Uint8Array(await res.arrayBuffer());
      const next = res.headers.get("X-Nclav-Next-Offset");
      offset = next !== null ? Number(next) : offset + data.length;
      add(decoder.decode(data, { stream: true }));
      const st = res.headers.get("X-Nclav-Run-Status") || "running";
      const complete = res.headers.get("X-Nclav-Complete");
      if (complete === "true" || (complete === null && st !== "running" && data.length === 0)) {
        add(decoder.decode());
        return ended(st);
      }
      delay = data.length ? 500 : Math.min(2000, delay * 2);
      res = null;
      await new Promise((ok) => setTimeout(ok, delay));
      if (controller.signal.aborted) return;
    }
  };
  const stream = async () => {
    for (;;) {
      const res = await call(`${url}?offset=${offset}`, { accept: "text/event-stream", signal: controller.signal });
      if (!(res.headers.get("Content-Type") || "").startsWith("text/event-stream")) return poll(res);
      let done = false;
      await readEvents(res, (name, data, id) => {
        const doc = JSON.parse(data);
        if (name === "log") {
          add(doc.text);
          offset = id !== null ? Number(id) : offset;
        } else if (name === "end") {
          done = true;
          ended(doc.status);
        }
      });
      if (done || controller.signal.aborted) return;
      await new Promise((ok) => setTimeout(ok, 1000));
    }
  };
  stream().catch((e) => {
    if (e.name !== "AbortError" && e.status !== 401) notice(`Log: ${e.message}`);
  });
}

// -- Drift --------------------------------------------------------------------------------------

async function driftPage(main) {
  if (!session.features.drift) {
    fill(main, h("h1", {}, "Drift"), h("p", {}, "This server does not check drift."));
    return;
  }
  const doc = await get("drift");
  const items = driftItems(doc);
  fill(main,
    h("h1", {}, "Drift"),
    h("div", { class: "cards" }, counts("Partitions by drift", driftCounts(doc), "drift-counts")),
    h("h2", {}, "Partitions"),
    table("Every partition's last drift check",
      ["Enclave", "Partition", "Status", "Checked", "Drifted resources", "Error"],
      items.map((d) => row([encLink(d.enclave_id), partLink(d.enclave_id, d.partition_id),
        [badge(d.status), d.acknowledged ? " (acknowledged)" : "", d.checking ? " (checking)" : ""],
        when(d.checked_at), String((d.resource_drift || []).length), d.error ? h("span", { class: "error" }, d.error) : ""],
      { "data-partition": `${d.enclave_id}/${d.partition_id}` })),
      { "data-field": "drift" }),
  );
}

// -- boot ---------------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
document.getElementById("signout").addEventListener("click", signOut);
start().catch((e) => {
  document.getElementById("main").replaceChildren(h("h1", {}, "nclav"), h("p", { class: "error" }, `Cannot reach the server: ${e.message}`));
});
