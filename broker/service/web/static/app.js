// The Celeriac dashboard: plain JavaScript over the broker's JSON API (/api/...), no build step.
// Text from the broker (task names, errors, arguments) is only ever set as textContent.
"use strict";

const CHANGE_HEADERS = { "X-Celeriac-Dashboard": "1", "Content-Type": "application/json" };
const MAX_EVENTS = 200;
const PLOT_EVERY_MS = 2000;
const REFRESH_AFTER_EVENT_MS = 300;

const $ = (id) => document.getElementById(id);
let session = null;
let stream = null;
let refreshTimer = null;
let plotTimer = null;
let pendingLines = [];
let flushScheduled = false;

class LoginNeeded extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (response.status === 401) {
    showLogin(body && body.error);
    throw new LoginNeeded();
  }
  if (!response.ok) throw new Error((body && body.error) || response.statusText);
  return body;
}

function post(path, value) {
  return api(path, { method: "POST", headers: CHANGE_HEADERS, body: JSON.stringify(value) });
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  return node;
}

function taskLink(taskId) {
  return el("a", { href: "#/tasks/" + encodeURIComponent(taskId), text: taskId });
}

function when(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 23);
}

function number(value, digits = 0) {
  return el("td", { class: "number", text: Number(value).toFixed(digits) });
}

function showError(error) {
  if (error instanceof LoginNeeded) return;
  $("error").textContent = error ? String(error.message || error) : "";
}

function showPage(name) {
  for (const page of document.querySelectorAll("main > section")) {
    page.hidden = page.id !== "page-" + name;
  }
}

// -- session -------------------------------------------------------------------------------

function showLogin(message) {
  session = null;
  closeStream();
  $("error").textContent = message || "";
  $("logout").hidden = true;
  $("who").textContent = "";
  showPage("login");
}

async function start() {
  try {
    session = await api("/api/session");
  } catch (error) {
    showError(error);
    return;
  }
  document.body.classList.toggle("can-change", session.can_change);
  $("who").textContent = session.auth ? session.name + " (" + session.roles.join(",") + ")" : "";
  $("logout").hidden = !session.auth;
  openStream();
  route();
}

// -- live events ---------------------------------------------------------------------------

function openStream() {
  closeStream();
  stream = new EventSource("/api/events");
  stream.onopen = () => setStreamState("open");
  stream.onerror = () => setStreamState("closed");
  stream.onmessage = (message) => onEvent(JSON.parse(message.data));
}

function closeStream() {
  if (stream) stream.close();
  stream = null;
  setStreamState("closed");
}

function setStreamState(state) {
  $("stream-state").dataset.state = state;
  $("stream-state").textContent = state === "open" ? "live: on" : "live: off";
}

function onEvent(event) {
  if (event.dropped) {
    $("dropped").textContent = event.dropped + " event(s) missed (the page fell behind)";
  }
  if (event.kind !== "worker_heartbeat") {
    pendingLines.push(event);
    // A hidden tab gets no frames: keep only what one flush would show.
    if (pendingLines.length > 2 * MAX_EVENTS) pendingLines.splice(0, MAX_EVENTS);
    if (!flushScheduled) {
      flushScheduled = true;
      requestAnimationFrame(flushEventLines);
    }
  }
  if (!refreshTimer) {
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      refresh();
    }, REFRESH_AFTER_EVENT_MS);
  }
}

// Lines are added once per frame, the newest MAX_EVENTS only, so a busy broker's thousands of
// events a second cost the page one DOM update per frame.
function flushEventLines() {
  flushScheduled = false;
  const events = pendingLines.splice(0).slice(-MAX_EVENTS);
  const list = $("events");
  list.prepend(...events.reverse().map(eventLine));
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function eventLine(event) {
  const line = el("li", { class: event.kind, "data-kind": event.kind });
  line.append(when(event.at).slice(11) + " " + event.kind + " ");
  if (event.task_id) {
    line.dataset.taskId = event.task_id;
    line.append(event.task_name + "[", taskLink(event.task_id), "]");
  }
  if (event.queue) line.append(" queue=" + event.queue);
  if (event.worker_id) line.append(" worker=" + event.worker_id);
  if (event.runtime) line.append(" in " + (event.runtime * 1000).toFixed(1) + " ms");
  if (event.detail) line.append(" " + event.detail);
  return line;
}

// -- pages ---------------------------------------------------------------------------------

function route() {
  showError(null);
  const hash = location.hash || "#/";
  clearInterval(plotTimer);
  plotTimer = null;
  if (hash.startsWith("#/tasks/")) {
    showPage("task");
    showTask(decodeURIComponent(hash.slice("#/tasks/".length))).catch(showError);
  } else if (hash === "#/dead-letters") {
    showPage("dead");
    showDeadLetters().catch(showError);
  } else {
    showPage("overview");
    showOverview().catch(showError);
    plotTimer = setInterval(() => showPlots().catch(showError), PLOT_EVERY_MS);
  }
}

function refresh() {
  const hash = location.hash || "#/";
  if (!session) return;
  if (hash === "#/" || hash === "#") showOverview().catch(showError);
  else if (hash === "#/dead-letters") showDeadLetters().catch(showError);
  else if (hash.startsWith("#/tasks/")) {
    showTask(decodeURIComponent(hash.slice("#/tasks/".length))).catch(showError);
  }
}

async function showOverview() {
  const overview = await api("/api/overview");
  $("dead-count").textContent = overview.dead_letters ? "(" + overview.dead_letters + ")" : "";
  const queues = $("queues").tBodies[0];
  queues.replaceChildren(
    ...overview.queues.map((q) =>
      el("tr", { "data-queue": q.name }, el("td", { text: q.name }), number(q.queued),
        number(q.scheduled), number(q.leased), number(q.consumers), number(q.rate_in, 2),
        number(q.rate_out, 2)),
    ),
  );
  const workers = $("workers").tBodies[0];
  workers.replaceChildren(
    ...overview.workers.map((w) => {
      const running = el("td", { class: "running" });
      for (const task of w.running) {
        running.append(el("div", {}, task.name + " ", taskLink(task.task_id)));
      }
      return el("tr", { "data-worker": w.worker_id },
        el("td", { text: w.worker_id + " (" + w.hostname + ", pid " + w.pid + ")" }),
        el("td", { text: w.pool + " x" + w.concurrency + (w.draining ? ", draining" : "") }),
        el("td", { text: w.queues.join(", ") }),
        el("td", { text: w.running.length + "/" + w.concurrency }),
        running);
    }),
  );
  await showPlots();
}

async function showPlots() {
  const stats = await api("/api/stats");
  const seconds = stats.seconds;
  plot($("plot-throughput"), seconds, [
    ["accepted", (s) => s.accepted],
    ["succeeded", (s) => s.succeeded],
    ["failed", (s) => s.failed],
  ]);
  plot($("plot-latency"), seconds, [
    ["p50", (s) => (s.p50 === undefined ? null : s.p50 * 1000)],
    ["p95", (s) => (s.p95 === undefined ? null : s.p95 * 1000)],
  ]);
}

// A hand-drawn line chart: one polyline per series, gaps where a value is null.
function plot(node, points, series) {
  const width = 600, height = 140, left = 40, bottom = 16, top = 6;
  let max = 0;
  for (const [, value] of series) {
    for (const point of points) max = Math.max(max, value(point) || 0);
  }
  max = max > 0 ? max : 1;
  const x = (i) => left + (i * (width - left - 4)) / Math.max(1, points.length - 1);
  const y = (v) => height - bottom - (v * (height - bottom - top)) / max;
  const children = [
    svg("line", { class: "axis", x1: left, y1: height - bottom, x2: width, y2: height - bottom }),
    svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: height - bottom }),
    svg("text", { x: 2, y: top + 8, text: max.toPrecision(3) }),
    svg("text", { x: 2, y: height - bottom, text: "0" }),
    svg("text", { x: left, y: height - 3, text: "-5 min" }),
    svg("text", { x: width - 24, y: height - 3, text: "now" }),
  ];
  for (const [name, value] of series) {
    let run = [];
    const flush = () => {
      if (run.length) children.push(svg("polyline", { class: name, points: run.join(" ") }));
      run = [];
    };
    points.forEach((point, i) => {
      const v = value(point);
      if (v === null) flush();
      else run.push(x(i).toFixed(1) + "," + y(v).toFixed(1));
    });
    flush();
  }
  node.replaceChildren(...children);
}

function payloadCell(payload, missing = "none") {
  if (!payload) return el("td", { class: "note", text: missing });
  const cell = el("td");
  const shown = (value) => el("pre", { text: JSON.stringify(value, null, 2) });
  if ("args" in payload) {
    cell.append(el("div", { text: "args" }), shown(payload.args));
    cell.append(el("div", { text: "kwargs" }), shown(payload.kwargs));
  } else if ("value" in payload) {
    cell.append(shown(payload.value));
  } else {
    const note = payload.note ? ", " + payload.note : "";
    cell.append(el("div", { text: payload.content_type + ", " + payload.size + " bytes" + note }));
    if (payload.preview) cell.append(el("pre", { text: payload.preview }));
  }
  return cell;
}

async function showTask(taskId) {
  $("task-id").textContent = taskId;
  const body = $("task").tBodies[0];
  body.replaceChildren();
  const task = await api("/api/tasks/" + encodeURIComponent(taskId));
  const row = (name, cell) => el("tr", { "data-field": name }, el("th", { text: name }), cell);
  const text = (value) => el("td", { text: value === null || value === undefined ? "" : value });
  const rows = [
    row("state", text(task.state)),
    row("name", text(task.name)),
    row("queue", text(task.queue)),
    row("worker", text(task.worker_id)),
    row("attempts", text(task.attempts + (task.retries ? " (" + task.retries + " retries)" : ""))),
    row("arguments", payloadCell(task.args, task.phase === "finished"
      ? "not kept once a task has finished (dead letters keep theirs)" : "none")),
    row("result", payloadCell(task.result, task.phase === "finished" ? "none" : "not yet")),
  ];
  if (task.eta) rows.push(row("eta", text(when(task.eta))));
  if (task.date_done) rows.push(row("done", text(when(task.date_done))));
  if (task.dead_lettered) rows.push(row("dead letter", text("yes")));
  if (task.error) {
    rows.push(row("error", text(task.error.type + ": " + task.error.message)));
    rows.push(row("traceback", el("td", {}, el("pre", { text: task.error.traceback }))));
  }
  if (task.progress) rows.push(row("progress", payloadCell(task.progress)));
  body.replaceChildren(...rows);
}

async function showDeadLetters() {
  const listed = await api("/api/dead-letters");
  $("dead-total").textContent = listed.total;
  $("dead").tBodies[0].replaceChildren(
    ...listed.dead_letters.map((d) => {
      const requeue = el("button", { type: "button", class: "requeue", text: "Requeue" });
      requeue.onclick = () => change("requeue", { task_ids: [d.task_id] });
      const purge = el("button", { type: "button", class: "purge", text: "Purge" });
      purge.onclick = () => {
        if (confirm("Purge dead letter " + d.task_id + "?")) change("purge", { task_ids: [d.task_id] });
      };
      const error = d.error ? d.error.type + ": " + d.error.message : "";
      return el("tr", { "data-task-id": d.task_id },
        el("td", {}, taskLink(d.task_id)), el("td", { text: d.name }), el("td", { text: d.queue }),
        el("td", { text: error }), el("td", { text: when(d.dead_at) }),
        el("td", { class: "changes" }, requeue, " ", purge));
    }),
  );
}

async function change(action, selection) {
  try {
    const answer = await post("/api/dead-letters/" + action, selection);
    const count = action === "requeue" ? answer.requeued : answer.purged;
    $("dead-done").textContent = (action === "requeue" ? "requeued " : "purged ") + count;
    await showDeadLetters();
  } catch (error) {
    showError(error);
  }
}

// -- wiring --------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("hashchange", route);
  $("lookup").onsubmit = (event) => {
    event.preventDefault();
    const taskId = $("lookup-id").value.trim();
    if (taskId) location.hash = "#/tasks/" + encodeURIComponent(taskId);
  };
  $("login-form").onsubmit = async (event) => {
    event.preventDefault();
    try {
      await post("/api/login", { token: $("token").value });
      $("token").value = "";
      await start();
    } catch (error) {
      if (!(error instanceof LoginNeeded)) $("error").textContent = String(error.message || error);
    }
  };
  $("logout").onclick = async () => {
    await post("/api/logout", {});
    showLogin("logged out");
  };
  $("requeue-all").onclick = () => change("requeue", { all: true });
  $("purge-all").onclick = () => {
    if (confirm("Purge every dead letter?")) change("purge", { all: true });
  };
  start();
});
