// The trio-agents inspector: the live tree of a served runtime (GET /inspect/events), no build step, no CDN.
//
// One SSE connection feeds the whole tree: a Snapshot, then Changed messages (the latest state of each session
// that changed, at most ten a second). Sessions are kept in a Map; only one page of them is in the DOM, each
// session's element rebuilt only when its data changed, and renders are coalesced into one animation frame.
"use strict";

const PAGE_SIZE = 50;
const LOG_LIMIT = 2000;

const state = {
  sessions: new Map(), // id -> session node (as the server sends it)
  versions: new Map(), // id -> a counter bumped at each change (to rebuild only what changed)
  rendered: new Map(), // id -> {element, version, expanded}
  expanded: new Set(),
  listeners: [],
  offset: 0, // server clock minus ours, in ms
  page: 0,
  source: null,
  log: null, // {source, sid, rid}
  frame: 0,
  drafts: new Map(), // question id -> text typed in its answer box
};

const $ = (id) => document.getElementById(id);

function escapeHtml(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function serverNow() {
  return Date.now() + state.offset;
}

function duration(start, end) {
  if (start == null) return "";
  const ms = Math.max(0, (end ?? serverNow()) - start);
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

function durationSpan(start, end) {
  const live = end == null ? ` class="dur live" data-start="${start}"` : ` class="dur"`;
  return `<span${live}>${duration(start, end)}</span>`;
}

function tokens(input, output) {
  return `<span class="tokens" title="input → output tokens">${input ?? 0} → ${output ?? 0} tok</span>`;
}

// -- signing in --------------------------------------------------------------------------------------------

async function signIn(token) {
  const init = { method: "POST", credentials: "same-origin" };
  if (token !== undefined) {
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify({ token });
  }
  const response = await fetch("/inspect/login", init);
  return response.status === 204;
}

async function start() {
  let allowed = false;
  try {
    allowed = await signIn();
  } catch (error) {
    setStatus("down", `cannot reach the server: ${error}`);
    return;
  }
  if (allowed) {
    connect();
  } else {
    $("login").hidden = false;
    setStatus("down", "sign in");
    $("token").focus();
  }
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  if (await signIn($("token").value)) {
    $("token").value = "";
    $("login").hidden = true;
    connect();
  } else {
    $("login-error").textContent = "that is not the token";
  }
});

// -- the tree's stream -------------------------------------------------------------------------------------

function setStatus(kind, text) {
  const status = $("status");
  status.className = `status ${kind}`;
  status.textContent = text;
}

function connect() {
  $("main").hidden = false;
  if (state.source) state.source.close();
  const source = new EventSource("/inspect/events");
  state.source = source;
  source.addEventListener("open", () => setStatus("live", "live"));
  source.addEventListener("Snapshot", (event) => {
    const message = JSON.parse(event.data);
    state.offset = message.now - Date.now();
    state.sessions.clear();
    for (const session of message.sessions) {
      state.sessions.set(session.id, session);
      bump(session.id);
    }
    state.listeners = message.listeners;
    for (const id of [...state.versions.keys()]) if (!state.sessions.has(id)) state.versions.delete(id);
    schedule();
  });
  source.addEventListener("Changed", (event) => {
    const message = JSON.parse(event.data);
    state.offset = message.now - Date.now();
    for (const session of message.sessions) {
      state.sessions.set(session.id, session);
      bump(session.id);
    }
    for (const id of message.closed) {
      state.sessions.delete(id);
      state.versions.delete(id);
    }
    if (message.listeners) state.listeners = message.listeners;
    schedule();
  });
  source.addEventListener("error", async () => {
    if (source.readyState === EventSource.CLOSED) {
      // Refused (the sign-in was forgotten, the server restarted): sign in again.
      setStatus("down", "disconnected");
      source.close();
      if (state.source === source) state.source = null;
      try {
        if (await signIn()) {
          setTimeout(connect, 1000);
        } else {
          $("main").hidden = true;
          $("login").hidden = false;
        }
      } catch {
        setTimeout(start, 2000);
      }
    } else {
      setStatus("connecting", "reconnecting…");
    }
  });
}

function bump(id) {
  state.versions.set(id, (state.versions.get(id) ?? 0) + 1);
}

function schedule() {
  if (!state.frame) state.frame = requestAnimationFrame(render);
}

// -- rendering ---------------------------------------------------------------------------------------------

function rank(session) {
  if (session.pending) return 0;
  if (session.state === "running") return 1;
  return 2;
}

function visibleSessions() {
  const filter = $("filter").value.trim().toLowerCase();
  const show = $("show").value;
  const chosen = [];
  for (const session of state.sessions.values()) {
    if (filter && !session.id.toLowerCase().includes(filter)) continue;
    if (show === "active" && rank(session) === 2) continue;
    if (show === "pending" && !session.pending) continue;
    chosen.push(session);
  }
  // Waiting for an answer first, then running, then the rest; oldest first within each.
  chosen.sort((a, b) => rank(a) - rank(b) || a.opened - b.opened || (a.id < b.id ? -1 : 1));
  return chosen;
}

function render() {
  state.frame = 0;
  const chosen = visibleSessions();
  const pages = Math.max(1, Math.ceil(chosen.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const shown = chosen.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE);
  $("page").textContent = `page ${state.page + 1} of ${pages} (${chosen.length} sessions)`;
  $("prev").disabled = state.page === 0;
  $("next").disabled = state.page >= pages - 1;

  let running = 0;
  let pending = 0;
  let input = 0;
  let output = 0;
  for (const session of state.sessions.values()) {
    if (session.state === "running") running += 1;
    pending += session.pending;
    input += session.input_tokens;
    output += session.output_tokens;
  }
  $("totals").textContent =
    `${state.sessions.size} sessions · ${running} running · ${pending} waiting for an answer · ${input} → ${output} tokens`;

  const listeners = $("listeners");
  listeners.hidden = state.listeners.length === 0;
  listeners.textContent = `remote listeners: ${state.listeners.map((l) => `${l.session} at ${l.url}`).join(", ")}`;

  const container = $("sessions");
  const keep = new Set(shown.map((session) => session.id));
  for (const [id, entry] of state.rendered) {
    if (!keep.has(id)) {
      entry.element.remove();
      state.rendered.delete(id);
    }
  }
  let previous = null;
  for (const session of shown) {
    const version = state.versions.get(session.id);
    const expanded = state.expanded.has(session.id);
    let entry = state.rendered.get(session.id);
    if (!entry) {
      const element = document.createElement("div");
      element.className = "session";
      element.dataset.sid = session.id;
      entry = { element, version: -1, expanded: null };
      state.rendered.set(session.id, entry);
    }
    if (entry.version !== version || entry.expanded !== expanded) {
      saveDrafts(entry.element);
      entry.element.innerHTML = renderSession(session, expanded);
      entry.element.dataset.state = session.state;
      entry.version = version;
      entry.expanded = expanded;
    }
    const wanted = previous ? previous.nextSibling : container.firstChild;
    if (wanted !== entry.element) container.insertBefore(entry.element, wanted);
    previous = entry.element;
  }
  if (shown.length === 0) {
    container.dataset.empty = "true";
  } else {
    delete container.dataset.empty;
  }
}

function saveDrafts(element) {
  for (const box of element.querySelectorAll("[data-answer-for]")) state.drafts.set(box.dataset.answerFor, box.value);
}

function renderSession(session, expanded) {
  const runs = session.runs;
  const last = runs.length ? runs[runs.length - 1] : null;
  const handlers = session.handlers
    .map((h) => `${escapeHtml(h.name)} (${h.overflow}): ${h.handled} handled, ${h.dropped} dropped, ${h.failed} failed, ${h.buffered} buffered`)
    .join("; ");
  const questions = runs.flatMap((run) => run.pending.map((question) => renderQuestion(session, run, question))).join("");
  return `
    <div class="head" data-action="toggle">
      <span class="caret">${expanded ? "▾" : "▸"}</span>
      <span class="sid">${escapeHtml(session.id)}</span>
      <span class="badge ${session.state}">${session.state}</span>
      ${session.pending ? `<span class="badge pending">${session.pending} waiting</span>` : ""}
      <span class="muted">${session.run_count} run${session.run_count === 1 ? "" : "s"}</span>
      ${tokens(session.input_tokens, session.output_tokens)}
      <span class="muted">${last ? `last: ${escapeHtml(last.id)} ${last.state}` : ""}</span>
      ${session.handlers.length ? `<span class="muted">${session.handlers.length} handler${session.handlers.length === 1 ? "" : "s"}</span>` : ""}
      <span class="spacer"></span>
      <button type="button" class="danger" data-action="close">Close session</button>
    </div>
    ${questions ? `<div class="body questions">${questions}</div>` : ""}
    ${expanded ? `<div class="body">
      ${handlers ? `<div class="handlers">stream handlers: ${handlers}</div>` : ""}
      ${runs.length ? runs.slice().reverse().map((run) => renderRun(session, run)).join("") : `<div class="muted">no run yet</div>`}
    </div>` : ""}`;
}

function renderRun(session, run) {
  const running = run.state === "running";
  const modelCalls = run.model_calls
    .map((call, i) => `<tr><td>model call ${i + 1}${call.agent ? ` <span class="muted">(${escapeHtml(call.agent)})</span>` : ""}</td>
      <td>${durationSpan(call.started, call.ended)}</td><td>${tokens(call.input_tokens, call.output_tokens)}</td>
      <td class="muted">${call.stop ? escapeHtml(call.stop) : "streaming…"}</td></tr>`)
    .join("");
  const toolCalls = run.tool_calls.map(renderToolCall).join("");
  return `
    <div class="run ${escapeHtml(run.state)}" data-rid="${escapeHtml(run.id)}">
      <div class="head">
        <span class="rid">${escapeHtml(run.id)}</span>
        <span class="badge run-state ${escapeHtml(run.state)}">${escapeHtml(run.state)}</span>
        ${durationSpan(run.started, run.ended)}
        ${tokens(run.input_tokens, run.output_tokens)}
        <span class="muted">${run.events} events</span>
        ${run.agents.length ? `<span class="muted">sub-agents: ${run.agents.map(escapeHtml).join(", ")}</span>` : ""}
        <button type="button" data-action="log" data-rid="${escapeHtml(run.id)}">Event log</button>
        ${running ? `<button type="button" class="danger" data-action="cancel" data-rid="${escapeHtml(run.id)}">Cancel run</button>` : ""}
      </div>
      ${run.message ? `<div class="muted">${escapeHtml(run.message)}</div>` : ""}
      ${run.error ? `<div class="error">${escapeHtml(run.error)}</div>` : ""}
      ${run.text ? `<div class="text">${escapeHtml(run.text)}</div>` : ""}
      ${modelCalls ? `<table class="calls models">
        <tr><th>model</th><th>time</th><th>tokens</th><th>stop</th></tr>${modelCalls}</table>` : ""}
      ${toolCalls ? `<table class="calls tools">
        <tr><th>tool</th><th>arguments</th><th>progress</th><th>time</th><th>result</th></tr>${toolCalls}</table>` : ""}
      ${run.tool_calls_hidden ? `<div class="muted">and ${run.tool_calls_hidden} earlier tool calls (see the event log)</div>` : ""}
    </div>`;
}

function renderToolCall(call) {
  let progress = "";
  if (call.progress != null) {
    progress = call.total ? `<progress max="${call.total}" value="${call.progress}"></progress> ${call.progress}/${call.total}` : `${call.progress}`;
    if (call.progress_message) progress += ` <span class="muted">${escapeHtml(call.progress_message)}</span>`;
  }
  const outcome = call.error != null
    ? `<td class="error">${escapeHtml(call.error)}</td>`
    : `<td class="result">${call.ended == null ? '<span class="muted">running…</span>' : escapeHtml(call.result)}</td>`;
  return `<tr class="tool-call" data-call="${escapeHtml(call.call_id)}">
    <td>${escapeHtml(call.name)}${call.agent ? ` <span class="muted">(${escapeHtml(call.agent)})</span>` : ""}</td>
    <td class="args">${escapeHtml(call.arguments)}</td><td>${progress}</td>
    <td>${durationSpan(call.started, call.ended)}</td>${outcome}</tr>`;
}

function renderQuestion(session, run, question) {
  const schema = question.schema;
  const type = schema && schema.type;
  let field = "";
  if (schema && type !== "boolean") {
    const draft = state.drafts.get(question.id) ?? "";
    const hint = type === "object" ? "JSON object" : escapeHtml(type ?? "JSON");
    field = `<textarea data-answer-for="${escapeHtml(question.id)}" placeholder="${hint}">${escapeHtml(draft)}</textarea>`;
  }
  const ids = `data-rid="${escapeHtml(run.id)}" data-eid="${escapeHtml(question.id)}"`;
  return `<div class="question" data-eid="${escapeHtml(question.id)}">
    <span class="badge pending">${escapeHtml(run.id)} asks</span>
    <span class="message">${escapeHtml(question.message)}</span>
    <span class="muted">(${escapeHtml(question.agent)})</span>
    ${field}
    <button type="button" class="accept" data-action="accept" ${ids}>Approve</button>
    <button type="button" class="decline" data-action="decline" ${ids}>Decline</button>
    <span class="error answer-error"></span>
  </div>`;
}

// -- actions -----------------------------------------------------------------------------------------------

async function call(method, path, body) {
  const init = { method, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      message = (await response.json()).error.message;
    } catch {}
    throw new Error(message);
  }
}

function answerContent(button, sid, rid, eid) {
  const session = state.sessions.get(sid);
  const run = session && session.runs.find((r) => r.id === rid);
  const question = run && run.pending.find((q) => q.id === eid);
  const schema = question ? question.schema : null;
  if (!schema) return null;
  if (schema.type === "boolean") return true;
  const box = button.parentElement.querySelector("textarea");
  const text = box ? box.value : "";
  if (schema.type === "string") return text;
  return JSON.parse(text);
}

$("sessions").addEventListener("click", async (event) => {
  const target = event.target.closest("[data-action]");
  if (!target) return;
  const element = target.closest(".session");
  const sid = element.dataset.sid;
  const { action, rid, eid } = target.dataset;
  const path = `/sessions/${encodeURIComponent(sid)}`;
  try {
    if (action === "toggle") {
      if (event.target.closest("button, textarea")) return;
      if (state.expanded.has(sid)) state.expanded.delete(sid);
      else state.expanded.add(sid);
      schedule();
    } else if (action === "close") {
      target.disabled = true;
      await call("DELETE", path);
    } else if (action === "cancel") {
      target.disabled = true;
      await call("POST", `${path}/runs/${encodeURIComponent(rid)}/cancel`);
    } else if (action === "log") {
      openLog(sid, rid);
    } else if (action === "accept" || action === "decline") {
      const content = action === "accept" ? answerContent(target, sid, rid, eid) : null;
      target.disabled = true;
      await call("POST", `${path}/elicitations/${encodeURIComponent(eid)}`, { action, content });
      state.drafts.delete(eid);
    }
  } catch (error) {
    target.disabled = false;
    const slot = target.parentElement.querySelector(".answer-error");
    if (slot) slot.textContent = String(error.message ?? error);
    else setStatus("down", String(error.message ?? error));
  }
});

function openLog(sid, rid) {
  closeLog();
  $("log").hidden = false;
  $("log-title").textContent = `${rid} (session ${sid})`;
  const list = $("log-events");
  list.textContent = "";
  const source = new EventSource(`/sessions/${encodeURIComponent(sid)}/runs/${encodeURIComponent(rid)}/events`);
  state.log = { source, sid, rid };
  const append = (event) => {
    if (list.childElementCount >= LOG_LIMIT) list.firstElementChild.remove();
    const item = document.createElement("li");
    const data = JSON.parse(event.data);
    delete data.type;
    delete data.run_id;
    const bold = document.createElement("b");
    bold.textContent = event.type;
    item.append(bold, ` ${JSON.stringify(data)}`);
    list.append(item);
    if (event.type === "RunFinished") source.close(); // the log is complete: do not let EventSource replay it
  };
  for (const kind of KNOWN_EVENTS) source.addEventListener(kind, append);
  source.addEventListener("error", () => {
    if (source.readyState !== EventSource.CLOSED) return;
    const item = document.createElement("li");
    item.className = "error";
    item.textContent = "the log is not available (the run is no longer kept?)";
    list.append(item);
  });
}

function closeLog() {
  if (state.log) state.log.source.close();
  state.log = null;
  $("log").hidden = true;
}

const KNOWN_EVENTS = [
  "RunStarted", "TextDelta", "ReasoningDelta", "ToolCallDelta", "ToolCallStarted", "ToolProgress", "ToolCallFinished",
  "Usage", "ServerToolUse", "ModelStopped", "ModelFallback", "Refusal", "OutputDelta", "FinalOutput", "CustomEvent",
  "ErrorEvent", "ElicitationRequest", "AgentSwitched", "SubAgentEvent", "RunFinished", "EventsDropped",
];

$("log-close").addEventListener("click", closeLog);
$("filter").addEventListener("input", () => { state.page = 0; schedule(); });
$("show").addEventListener("change", () => { state.page = 0; schedule(); });
$("prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); schedule(); });
$("next").addEventListener("click", () => { state.page += 1; schedule(); });
$("expand-all").addEventListener("click", () => {
  for (const id of state.rendered.keys()) state.expanded.add(id);
  schedule();
});
$("collapse-all").addEventListener("click", () => { state.expanded.clear(); schedule(); });

// Running durations tick once a second, in place (no rebuild: buttons stay where they are).
setInterval(() => {
  for (const span of document.querySelectorAll("span.dur.live")) span.textContent = duration(Number(span.dataset.start), null);
}, 1000);

start();
