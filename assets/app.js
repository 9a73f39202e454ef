// The page of `stategraph serve`: reads /api/* and draws it. No build step,
// no framework: cytoscape.js (vendored) draws the graph, the rest is DOM.
// The URL holds what is shown: ?state=NAME&cone=ADDRESS.
"use strict";

const WRITE = "#d62728"; // src/graph/render.rs WRITE_COLOUR
const READ = "#1f77b4"; // src/graph/render.rs READ_COLOUR

const params = new URLSearchParams(location.search);
let state = params.get("state");
let cone = params.get("cone");
let cy = null;

async function api(path) {
  const res = await fetch(path, { headers: { accept: "application/json" } });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch (e) {
    // Not JSON: a rejected query string, or a proxy's page.
    throw new Error(res.status + " " + res.statusText + ": " + text.slice(0, 200));
  }
  if (!res.ok) throw new Error(body.error || res.status + " " + res.statusText);
  return body;
}

// An element with text content (never HTML: addresses and values are data).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

function query(extra) {
  const p = new URLSearchParams({ state, ...extra });
  return p.toString();
}

function showUrl() {
  const p = new URLSearchParams({ state });
  if (cone) p.set("cone", cone);
  history.replaceState(null, "", "?" + p.toString());
}

function utc(t) {
  return t ? t.replace("T", " ").replace(/\.\d+/, "").replace(/(Z|\+00:00)$/, "") : "";
}

function who(x) {
  return x.user + "@" + x.host + (x.ci_job ? " (" + x.ci_job + ")" : "");
}

async function loadStates() {
  const { states } = await api("/api/states");
  const list = document.getElementById("state-list");
  list.replaceChildren();
  if (!state && states.length) state = states[0];
  for (const name of states) {
    const a = el("a", { href: "?" + new URLSearchParams({ state: name }) }, name);
    if (name === state) a.classList.add("selected");
    list.append(el("li", {}, a));
  }
  if (!states.length) list.append(el("li", { class: "muted" }, "No states stored yet."));
  document.getElementById("current").textContent = state ? "state " + state : "";
}

const style = [
  {
    selector: "node",
    style: {
      label: "data(id)",
      shape: "round-rectangle",
      width: (n) => Math.max(40, n.id().length * 6.4 + 16),
      height: 24,
      "font-family": "monospace",
      "font-size": 10,
      "text-valign": "center",
      "text-halign": "center",
      color: "#1f2328",
      "background-color": "#dfe6ec",
      "border-width": 1,
      "border-color": "#8b98a5",
    },
  },
  {
    selector: "edge",
    style: {
      width: 1.5,
      "curve-style": "bezier",
      "line-color": "#9aa4ad",
      "target-arrow-color": "#9aa4ad",
      "target-arrow-shape": "triangle",
    },
  },
  { selector: "node.write", style: { "background-color": WRITE, color: "#fff", "border-color": WRITE } },
  { selector: "node.read", style: { "background-color": READ, color: "#fff", "border-color": READ } },
  { selector: "node.changed", style: { "border-width": 3, "border-color": "#111" } },
  { selector: ".outside", style: { opacity: 0.25 } },
  { selector: "edge.in-cone", style: { "line-color": "#57606a", "target-arrow-color": "#57606a" } },
];

// Marks each node and edge with its role in the drawing's cone.
function mark(drawing) {
  const role = new Map(drawing.nodes.map((n) => [n.address, n]));
  cy.batch(() => {
    cy.nodes().forEach((node) => {
      const n = role.get(node.id()) || {};
      node.classes([n.role, n.changed ? "changed" : null].filter(Boolean));
    });
    cy.edges().forEach((edge) => {
      const a = role.get(edge.data("source")) || {};
      const b = role.get(edge.data("target")) || {};
      const inCone = (r) => r === "write" || r === "read";
      edge.classes(
        a.role === "outside" || b.role === "outside" ? ["outside"] : inCone(a.role) && inCone(b.role) ? ["in-cone"] : []
      );
    });
  });
  const summary = document.getElementById("cone-summary");
  summary.classList.remove("error");
  summary.textContent = drawing.changed.length
    ? "Cone of " + cone + ": " + drawing.write.length + " to write, " + drawing.read.length +
      " to read, of " + drawing.instances + " instances."
    : drawing.instances + " instances. Click a resource to see its change cone and history.";
}

async function loadGraph() {
  const drawing = await api("/api/graph?" + query({}));
  const elements = drawing.nodes
    .map((n) => ({ group: "nodes", data: { id: n.address } }))
    .concat(drawing.edges.map((e) => ({ group: "edges", data: { source: e.from, target: e.to } })));
  cy = cytoscape({
    container: document.getElementById("graph"),
    elements,
    style,
    autounselectify: true,
    boxSelectionEnabled: false,
    maxZoom: 1.5,
    layout: { name: "dagre", rankDir: "LR", nodeSep: 12, rankSep: 40, animate: false, fit: true, padding: 16 },
  });
  cy.on("tap", "node", (e) => selectCone(e.target.id()));
  mark(drawing);
}

async function selectCone(address) {
  cone = address;
  showUrl();
  const summary = document.getElementById("cone-summary");
  try {
    mark(await api("/api/graph?" + query({ cone })));
  } catch (e) {
    summary.textContent = e.message;
    summary.classList.add("error");
  }
  await loadHistory(address);
}

function change(c) {
  const show = (v) => JSON.stringify(v);
  if (c.before === undefined || c.before === null) return el("li", { class: "add" }, "+ " + c.path + " = " + show(c.after));
  if (c.after === undefined || c.after === null) return el("li", { class: "del" }, "- " + c.path + " = " + show(c.before));
  return el("li", { class: "chg" }, "~ " + c.path + ": " + show(c.before) + " -> " + show(c.after));
}

async function loadHistory(address) {
  document.getElementById("history-address").textContent = address;
  const box = document.getElementById("history");
  // A resource with several instances, or a module, is no node: its
  // instances each have their own history.
  if (cy && cy.getElementById(address).empty()) {
    box.replaceChildren(
      el("p", { class: "muted" }, address + " is not one instance: click one in the graph to see its history.")
    );
    return;
  }
  let versions;
  try {
    versions = await api("/api/history?" + query({ address }));
  } catch (e) {
    box.replaceChildren(el("p", { class: "error" }, e.message));
    return;
  }
  if (!versions.length) {
    box.replaceChildren(el("p", { class: "muted" }, "The state has never held " + address + "."));
    return;
  }
  box.replaceChildren(
    ...versions.map((v) => {
      const status = v.status === "committed" ? "" : " [" + v.status + "]";
      const head = el(
        "div",
        { class: "head" },
        el("b", {}, "version " + v.version),
        " transaction " + v.transaction + status + " · " + utc(v.at) + " · " + who(v) + " · ",
        el("span", { class: "mono" }, v.command)
      );
      const changes = v.changes.length ? el("ul", {}, ...v.changes.map(change)) : el("p", { class: "muted" }, "(no attribute changed)");
      const parts = [head, changes];
      if (v.removed && v.superseded_by) parts.push(el("p", {}, "removed by transaction " + v.superseded_by));
      return el("div", { class: "version", "data-version": v.version }, ...parts);
    })
  );
}

async function loadTimeline() {
  const entries = await api("/api/log?" + query({ limit: 50 }));
  const body = document.querySelector("#timeline tbody");
  body.replaceChildren(
    ...entries.map((e) => {
      const n = (k) => (e.summary && e.summary[k]) || 0;
      const serial =
        e.serial_after == null ? "-" : (e.serial_before == null ? "new" : e.serial_before) + "→" + e.serial_after;
      return el(
        "tr",
        { "data-txn": e.id },
        el("td", {}, e.id),
        el("td", {}, e.kind),
        el("td", {}, e.status),
        el("td", {}, utc(e.started_at)),
        el("td", {}, who(e)),
        el("td", {}, serial),
        el("td", {}, "+" + n("added") + " ~" + n("changed") + " -" + n("removed")),
        el("td", { class: "mono" }, e.command)
      );
    })
  );
  if (!entries.length) body.append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No transactions yet.")));
}

function lockTable(items, queued) {
  const head = queued
    ? ["ticket", "who", "command", "exclusive", "shared", "queued since"]
    : ["ID", "who", "command", "exclusive", "shared", "since", "lease"];
  const rows = items.map((l) => {
    const cells = [l.id, who(l), l.command, l.exclusive.length, l.shared.length];
    if (queued) cells.push(utc(l.queued_at));
    else cells.push(utc(l.acquired_at), (l.expired ? "expired " : "until ") + utc(l.lease_expires_at));
    return el("tr", { title: l.exclusive.concat(l.shared).join("\n") }, ...cells.map((c) => el("td", {}, c)));
  });
  return el("table", {}, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))), el("tbody", {}, ...rows));
}

async function loadLocks() {
  const { held, queue } = await api("/api/locks?" + query({}));
  document.getElementById("locks").replaceChildren(
    held.length ? lockTable(held, false) : el("p", { class: "muted" }, "No locks are held.")
  );
  document.getElementById("queue").replaceChildren(
    queue.length ? lockTable(queue, true) : el("p", { class: "muted" }, "Nobody is waiting.")
  );
}

function failed(where, e) {
  document.getElementById(where).replaceChildren(el("p", { class: "error" }, e.message));
}

// The timeline's error in its table, which the next refresh fills again.
function timelineFailed(e) {
  document.querySelector("#timeline tbody").replaceChildren(
    el("tr", {}, el("td", { colspan: 8, class: "error" }, e.message))
  );
}

async function main() {
  cytoscape.use(cytoscapeDagre);
  try {
    await loadStates();
  } catch (e) {
    failed("state-list", e);
  }
  if (state) {
    await Promise.all([
      loadGraph().catch((e) => failed("graph", e)),
      loadTimeline().catch(timelineFailed),
      loadLocks().catch((e) => failed("locks", e)),
    ]);
    if (cone && cy) await selectCone(cone);
    // Locks come and go, transactions land: keep both current.
    setInterval(() => {
      loadLocks().catch((e) => failed("locks", e));
      loadTimeline().catch(timelineFailed);
    }, 5000);
  }
  const r = document.getElementById("graph").getBoundingClientRect();
  // For tests and tools: where the graph is drawn, and that the page is done.
  document.getElementById("graph").dataset.rect = [r.x, r.y, r.width, r.height].map(Math.round).join(",");
  document.body.dataset.ready = "1";
}

main();
