// The ehrsim dashboard: reads and drives the admin API with fetch. Journal entries carry
// client-sent strings (paths, headers, HL7 fields), so every value is put in the page as text
// (textContent / text nodes), never as HTML.
"use strict";

const API = "/_admin";
const TOKEN_KEY = "ehrsim-admin-token";
const TAIL_ROWS = 200; // journal rows kept on the page
const POLL_MS = 1000;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  lastSeq: 0, // highest journal seq shown (0: load the tail afresh)
  clears: null, // the journal's `clears` when lastSeq was taken: another value means seqs restarted
  tail: 0, // bumped when the tail is cleared, so a poll already under way does not refill it
  protocol: "",
  timer: null,
  busy: false,
};

class Unauthorized extends Error {}

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : String(child ?? ""));
  }
  return node;
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let response;
  try {
    response = await fetch(API + path, { ...options, headers });
  } catch (err) {
    throw new Error(`ehrsim is not reachable at ${location.origin} (${err.message})`);
  }
  if (response.status === 401) throw new Unauthorized();
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error(data && data.message ? data.message : `${path}: HTTP ${response.status}`);
  }
  return data;
}

function post(path, body) {
  return api(path, { method: "POST", body: body === undefined ? undefined : JSON.stringify(body) });
}

// -- admin token ------------------------------------------------------------------------------
function askForToken() {
  stopPolling();
  $("main").hidden = true;
  $("login").hidden = false;
  if (state.token) {
    $("login-message").textContent =
      "The admin token was not accepted. Give the token ehrsim printed at start-up (or --admin-token).";
  }
  setStatus("The admin API needs the admin token.", true);
  $("token-input").focus();
}

function useToken(event) {
  event.preventDefault();
  state.token = $("token-input").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("token-input").value = "";
  start();
}

function failed(err) {
  if (err instanceof Unauthorized) askForToken();
  else setStatus(err.message, true);
}

// -- sections ---------------------------------------------------------------------------------
async function loadScenario() {
  const [health, scenario, sites] = await Promise.all([
    api("/health"),
    api("/scenario"),
    api("/sites"),
  ]);
  $("version").textContent = health.version;
  $("scenario-name").textContent = scenario.name;
  $("scenario-description").textContent = scenario.description || "";
  $("scenario-seed").textContent = `seed ${scenario.seed}`;
  document.title = `ehrsim: ${scenario.name}`;
  const body = $("sites-body");
  body.replaceChildren(
    ...sites.map((site) => {
      const smart = site.smart ? site.smart.configuration : "";
      const host = site.mllp_host && !["0.0.0.0", "::"].includes(site.mllp_host) ? site.mllp_host : location.hostname;
      const mllp = site.mllp_port ? `${host}:${site.mllp_port}` : "";
      return el(
        "tr",
        { "data-site": site.id },
        el("td", {}, site.id),
        el("td", { class: "mono" }, site.fhir_base),
        el("td", { class: "mono" }, smart || "no SMART auth"),
        el("td", { class: "mono" }, mllp || "none"),
        el("td", {}, site.resources),
      );
    }),
  );
}

const faultRows = new Map();

function faultRow(fault) {
  const toggle = el("input", { type: "checkbox", role: "switch", "aria-label": `fault ${fault.id} on` });
  toggle.addEventListener("change", () => switchFault(fault.id, toggle));
  const row = el("tr", { "data-fault": fault.id }, el("td", {}, toggle));
  for (let i = 0; i < 4; i += 1) row.append(el("td"));
  row.toggle = toggle;
  return row;
}

function renderFaults(faults) {
  const body = $("faults-body");
  const seen = new Set();
  for (const fault of faults) {
    seen.add(fault.id);
    let row = faultRows.get(fault.id);
    if (!row) {
      row = faultRow(fault);
      faultRows.set(fault.id, row);
      body.append(row);
    }
    row.dataset.enabled = String(fault.enabled);
    if (!row.toggle.disabled) row.toggle.checked = fault.enabled; // not while a switch is under way
    const { type, ...settings } = fault.action || {};
    const cells = row.children;
    cells[1].replaceChildren(el("strong", {}, fault.id), el("br"), fault.description || "");
    cells[2].textContent = `${type}${Object.keys(settings).length ? " " + JSON.stringify(settings) : ""}`;
    cells[3].textContent = JSON.stringify(fault.match || {});
    cells[4].textContent = `${fault.matched} / ${fault.hits}`;
  }
  for (const [id, row] of faultRows) {
    if (!seen.has(id)) {
      row.remove();
      faultRows.delete(id);
    }
  }
  $("faults-empty").hidden = faults.length > 0;
}

async function switchFault(id, toggle) {
  toggle.disabled = true;
  try {
    const fault = await post(`/faults/${encodeURIComponent(id)}/${toggle.checked ? "enable" : "disable"}`);
    setStatus(`fault ${fault.id} ${fault.enabled ? "enabled" : "disabled"}`);
    renderFaults(await api("/faults"));
  } catch (err) {
    failed(err);
  } finally {
    toggle.disabled = false;
  }
}

function renderClock(clock) {
  $("clock-now").textContent = clock.now;
  $("clock-elapsed").textContent = `${clock.elapsed} s`;
}

async function advanceClock(event) {
  event.preventDefault();
  const message = $("clock-message");
  message.textContent = "";
  try {
    renderClock(await post("/clock/advance", { duration: $("advance-duration").value.trim() }));
    setStatus("clock advanced");
  } catch (err) {
    if (err instanceof Unauthorized) askForToken();
    else message.textContent = err.message;
  }
}

async function resetSandbox() {
  if (!confirm("Reset the sandbox? Data, clock, journal, fault counters and rate limits go back to the start.")) {
    return;
  }
  try {
    const result = await post("/reset");
    clearTail();
    setStatus(`scenario ${result.scenario} reset`);
    await refresh();
    await loadScenario();
  } catch (err) {
    failed(err);
  }
}

// -- journal tail -----------------------------------------------------------------------------
function clearTail() {
  state.tail += 1;
  state.lastSeq = 0;
  $("journal-body").replaceChildren();
}

function journalQuery(extra) {
  const params = new URLSearchParams(extra);
  if (state.protocol) params.set("protocol", state.protocol);
  return `/journal?${params}`;
}

function entryRow(entry) {
  const http = entry.method !== undefined;
  const request = http
    ? `${entry.method} ${entry.path ?? ""}${entry.query ? `?${entry.query}` : ""}`
    : [
        entry.message_type,
        entry.control_id && `control id ${entry.control_id}`,
        entry.event, // MLLP connections: open, closed
        entry.by && `by ${entry.by}`,
      ]
        .filter(Boolean)
        .join(" ");
  const result = entry.status ?? entry.ack_code ?? entry.outcome ?? "";
  const faults = entry.faults || [];
  const bad = (typeof entry.status === "number" && entry.status >= 400) || ["AE", "AR", "CE", "CR"].includes(entry.ack_code);
  const classes = [bad && "bad", faults.length && "faulted"].filter(Boolean).join(" ");
  return el(
    "tr",
    { "data-seq": entry.seq, class: classes || undefined },
    el("td", {}, entry.seq),
    el("td", { class: "mono" }, entry.time ?? ""),
    el("td", {}, entry.site ?? ""),
    el("td", {}, entry.protocol ?? ""),
    el("td", {}, entry.kind ?? ""),
    el("td", { class: "mono request" }, request),
    el("td", { class: "result" }, result),
    el("td", { class: "faults" }, faults.join(", ")),
  );
}

async function pollJournal() {
  let tail = state.tail;
  let data = await api(journalQuery({ after: state.lastSeq, limit: 0 }));
  if (state.clears !== data.clears) {
    if (state.clears !== null) clearTail(); // emptied by a reset (here or elsewhere): start over
    state.clears = data.clears;
    tail = state.tail;
    data = await api(journalQuery({ after: state.lastSeq, limit: 0 }));
  }
  if (data.total > 0) {
    // Only the newest TAIL_ROWS of what is new: a long journal is not loaded whole.
    const offset = Math.max(0, data.total - TAIL_ROWS);
    data = await api(journalQuery({ after: state.lastSeq, offset }));
    if (tail !== state.tail) return;
    const body = $("journal-body");
    for (const entry of data.entries) {
      if (entry.seq <= state.lastSeq) continue;
      body.prepend(entryRow(entry));
      state.lastSeq = entry.seq;
    }
    while (body.children.length > TAIL_ROWS) body.lastElementChild.remove();
  }
  const dropped = data.dropped ? `, ${data.dropped} dropped` : "";
  $("journal-stats").textContent = `${data.size} of ${data.capacity} entries${dropped}${data.enabled ? "" : " (journal off)"}`;
}

// -- polling ----------------------------------------------------------------------------------
async function refresh() {
  const [faults, clock] = await Promise.all([api("/faults"), api("/clock")]);
  renderFaults(faults);
  renderClock(clock);
  await pollJournal();
}

async function tick() {
  if (state.busy) return;
  state.busy = true;
  try {
    await refresh();
    if ($("status").classList.contains("error")) setStatus("connected");
  } catch (err) {
    failed(err);
  } finally {
    state.busy = false;
  }
}

function stopPolling() {
  clearInterval(state.timer);
  state.timer = null;
}

async function start() {
  stopPolling();
  try {
    await loadScenario();
    await refresh();
  } catch (err) {
    failed(err);
    return;
  }
  $("login").hidden = true;
  $("main").hidden = false;
  setStatus("connected");
  state.timer = setInterval(tick, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", useToken);
  $("advance-form").addEventListener("submit", advanceClock);
  $("reset-button").addEventListener("click", resetSandbox);
  $("journal-protocol").addEventListener("change", (event) => {
    state.protocol = event.target.value;
    clearTail();
    tick();
  });
  start();
});
