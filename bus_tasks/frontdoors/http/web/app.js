// The web view of bus_tasks: every task in a table, filtered by tags, live from /api/watch.
//
// The page keeps the whole view (a Map of TaskDetails) and a sorted array of the tasks the
// filter selects; only the rows inside the scrolled window are in the DOM, at a fixed height,
// so 10,000 tasks cost what 40 do. Events change the Map at once; the sorted array and the DOM
// catch up once per animation frame.

import { DONE_STATES, GROUP_ORDER, GROUP_STATES, Selection, TAG_PATTERN, comparator, entry, formatAge, parseTags } from "./model.js";

const OVERSCAN_ROWS = 8;
// Past this many changed tasks in one frame, filtering and sorting anew beats moving each.
const REBUILD_OVER = 2000;
const AGE_TICK_MS = 5000;
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30000;
const TOKEN_KEY = "bus_tasks.control_token";

const $ = (id) => document.getElementById(id);
const el = {
  connection: $("connection"),
  revision: $("revision"),
  tagInput: $("tag-input"),
  filterForm: $("filter-form"),
  clearFilter: $("clear-filter"),
  subsystem: $("subsystem-select"),
  tokenBox: $("token-box"),
  tokenInput: $("token-input"),
  tokenLabel: $("token-label"),
  whoami: $("whoami"),
  shownCount: $("shown-count"),
  totalCount: $("total-count"),
  stateCounts: $("state-counts"),
  table: $("tasks"),
  viewport: $("viewport"),
  spacer: $("spacer"),
  empty: $("empty"),
  details: $("details"),
  detailsTitle: $("details-title"),
  detailsFields: $("details-fields"),
  detailsClose: $("details-close"),
  detailsActions: $("details-actions"),
  actionStop: $("action-stop"),
  actionClear: $("action-clear"),
  actionResult: $("action-result"),
};

// -- state -----------------------------------------------------------------------------------

const store = { tasks: new Map(), revision: null };
const view = {
  sortKey: "age",
  direction: 1,
  selection: new Selection({ tags: [], match: "any" }, comparator("age", 1)),
  selected: null, // the id whose details are open
  group: "", // the state group a count chip filters by ("" : every state)
};
const pending = { rebuild: true, subsystems: true, ids: new Set(), frame: 0 };
// authorized: the server decides who may call what (authorization = "on"), and says so in
// /api/whoami; then every read needs the token too (the watch sends it as a cookie).
const control = { enabled: false, authorized: false };
let rowHeightPx = 36;

function schedule() {
  if (!pending.frame) pending.frame = requestAnimationFrame(flush);
}

function changed(id) {
  pending.ids.add(id);
  schedule();
}

function rebuildAll() {
  pending.rebuild = true;
  schedule();
}

function flush() {
  pending.frame = 0;
  const { selection } = view;
  if (pending.rebuild || pending.ids.size > REBUILD_OVER) selection.rebuild(store.tasks);
  else for (const id of pending.ids) selection.reposition(store.tasks, id);
  const refilter = pending.rebuild;
  const detailsChanged = view.selected !== null && (refilter || pending.ids.has(view.selected));
  pending.rebuild = false;
  pending.subsystems = false;
  pending.ids.clear();
  renderRevision();
  if (refilter || pending.subsystems) renderSubsystems();
  renderSummary();
  // After a new filter every row is filled again (its chips show which tags are active).
  renderRows(refilter);
  if (detailsChanged) renderDetails();
}

// -- applying the watch events ----------------------------------------------------------------

function setRevision(revision) {
  store.revision = revision;
  schedule(); // shown with the next frame, with the changes up to it
}

function applySnapshot(data) {
  store.tasks = new Map();
  for (const details of Object.values(data.tasks)) store.tasks.set(details.id, entry(details));
  setRevision(data.revision);
  rebuildAll();
}

function applyChange(data) {
  const before = store.tasks.get(data.id)?.details.subsystem;
  if (data.task === null) store.tasks.delete(data.id);
  else store.tasks.set(data.id, entry(data.task));
  if (before !== data.task?.subsystem) pending.subsystems = true;
  setRevision(data.revision);
  changed(data.id);
}

// -- the live connection ----------------------------------------------------------------------

const connection = { source: null, retryMs: RETRY_MIN_MS, timer: 0 };

function setConnection(state, text) {
  el.connection.dataset.state = state;
  el.connection.textContent = text;
}

function listen(source, name, apply) {
  source.addEventListener(name, (event) => {
    if (source !== connection.source) return;
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (error) {
      console.error(`bus_tasks: unreadable ${name} event`, error);
      reconnect(true);
      return;
    }
    apply(data);
  });
}

/** Follow /api/watch; EventSource reconnects by itself with Last-Event-ID = the last revision. */
function connect() {
  const url = new URL("api/watch", document.baseURI);
  // A new EventSource starts without Last-Event-ID: resume from the revision held instead.
  if (store.revision !== null) url.searchParams.set("since", String(store.revision));
  const source = new EventSource(url);
  connection.source = source;
  source.addEventListener("open", () => {
    connection.retryMs = RETRY_MIN_MS;
    setConnection("live", "live");
  });
  listen(source, "snapshot", applySnapshot);
  listen(source, "change", applyChange);
  listen(source, "bookmark", (data) => setRevision(data.revision));
  listen(source, "gone", (data) => console.info("bus_tasks: cannot resume, a snapshot follows:", data.message));
  source.addEventListener("error", () => {
    if (source !== connection.source) return;
    if (source.readyState === EventSource.CLOSED) reconnect(false);
    else setConnection("reconnecting", "reconnecting…");
  });
}

/** Start a new EventSource after a back-off (the browser gave up on the old one). */
function reconnect(fresh) {
  connection.source?.close();
  connection.source = null;
  if (fresh) store.revision = null;
  setConnection("offline", `offline; retrying in ${Math.round(connection.retryMs / 1000)}s`);
  clearTimeout(connection.timer);
  connection.timer = setTimeout(connect, connection.retryMs);
  connection.retryMs = Math.min(connection.retryMs * 2, RETRY_MAX_MS);
}

// -- rendering ---------------------------------------------------------------------------------

function renderRevision() {
  const text = store.revision === null ? "" : String(store.revision);
  if (el.revision.dataset.revision === text) return;
  el.revision.dataset.revision = text;
  el.revision.textContent = text || "–";
}

function renderSummary() {
  const counts = new Map();
  const { shown } = view.selection;
  for (const e of shown) counts.set(e.group, (counts.get(e.group) ?? 0) + 1);
  el.shownCount.textContent = String(shown.length);
  el.shownCount.dataset.shownCount = String(shown.length);
  el.totalCount.textContent = String(store.tasks.size);
  el.totalCount.dataset.totalCount = String(store.tasks.size);
  const shownGroups = GROUP_ORDER.filter((group) => counts.get(group));
  const key = `${view.group}|${shownGroups.map((group) => `${group}:${counts.get(group)}`).join(" ")}`;
  if (key !== el.stateCounts.dataset.counts) {
    el.stateCounts.dataset.counts = key;
    el.stateCounts.replaceChildren(...shownGroups.map((group) => countItem(group, counts.get(group))));
  }
  el.table.setAttribute("aria-rowcount", String(shown.length + 1));
  el.empty.hidden = shown.length > 0;
  el.empty.textContent = store.tasks.size ? "No task matches the filter." : "No tasks.";
}

function countItem(group, count) {
  const li = document.createElement("li");
  const chip = document.createElement("button");
  chip.type = "button";
  chip.className = "badge";
  chip.dataset.group = group;
  chip.dataset.count = String(count);
  chip.textContent = `${group} ${count}`;
  const on = view.group === group;
  chip.setAttribute("aria-pressed", String(on));
  const states = GROUP_STATES[group] ?? [group];
  const counted = states.length > 1 ? ` (states ${states.join(", ")})` : "";
  chip.title = `${count} ${group}${counted}: ${on ? "show every state again" : "show only these"}`;
  li.append(chip);
  return li;
}

/** The subsystem filter's choices: every subsystem with tasks, and the one chosen. */
function renderSubsystems() {
  const names = [...new Set([...store.tasks.values()].map((e) => e.details.subsystem))].sort();
  const chosen = view.selection.filter.subsystem ?? "";
  if (chosen && !names.includes(chosen)) names.push(chosen);
  const key = names.join(" ");
  if (el.subsystem.dataset.names === key) return;
  el.subsystem.dataset.names = key;
  const all = new Option("all", "");
  el.subsystem.replaceChildren(all, ...names.map((name) => new Option(name, name)));
  el.subsystem.value = chosen;
}

const rows = { byId: new Map(), pool: [] };

function makeRow() {
  const row = document.createElement("div");
  row.className = "row";
  row.setAttribute("role", "row");
  const cell = (name) => {
    const c = document.createElement("div");
    c.className = `c-${name}`;
    c.setAttribute("role", "cell");
    row.append(c);
    return c;
  };
  const open = document.createElement("button");
  open.type = "button";
  open.className = "open";
  cell("id").append(open);
  const subsystem = cell("subsystem");
  const verb = cell("verb");
  const tags = cell("tags");
  const state = document.createElement("span");
  state.className = "badge";
  cell("state").append(state);
  const progress = cell("progress");
  const message = cell("message");
  const age = document.createElement("time");
  cell("age").append(age);
  const parts = { open, subsystem, verb, tags, state, progress, message, age };
  return { el: row, parts, entry: null, index: -1 };
}

function progressCell(cell, progress) {
  if (progress === null || progress === undefined) {
    cell.replaceChildren();
    cell.dataset.progress = "";
    return;
  }
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = progress;
  bar.setAttribute("aria-label", `${progress}%`);
  const text = document.createElement("span");
  text.textContent = `${progress}%`;
  cell.replaceChildren(bar, text);
  cell.dataset.progress = String(progress);
}

function tagChips(cell, tags) {
  const active = view.selection.filter.tags;
  cell.replaceChildren(
    ...tags.map((tag) => {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip";
      chip.dataset.tag = tag;
      chip.textContent = tag;
      chip.setAttribute("aria-pressed", String(active.includes(tag)));
      chip.title = active.includes(tag) ? `remove ${tag} from the filter` : `filter by ${tag}`;
      return chip;
    }),
  );
  cell.title = tags.join(" ");
}

function fillRow(row, e, now) {
  const d = e.details;
  const p = row.parts;
  row.el.dataset.taskId = d.id;
  row.el.dataset.state = d.state;
  row.el.dataset.group = e.group;
  p.open.textContent = d.id.slice(0, 8);
  p.open.title = d.id;
  p.open.setAttribute("aria-label", `details of task ${d.id}`);
  p.subsystem.textContent = d.subsystem;
  p.verb.textContent = d.verb;
  p.verb.title = d.verb;
  tagChips(p.tags, d.tags);
  p.state.textContent = d.state;
  p.state.dataset.group = e.group;
  const legacy = [d.taskState, d.taskResult].filter(Boolean).join(" ");
  p.state.title = d.code ? `${legacy}, code ${d.code}` : legacy;
  progressCell(p.progress, d.progress);
  p.message.textContent = d.message;
  p.message.title = d.message;
  p.age.dateTime = d.createdAt;
  p.age.textContent = formatAge(now - e.createdMs);
  p.age.title = `created ${d.createdAt}, updated ${d.updatedAt}`;
  row.entry = e;
}

/** Put the rows of the scrolled window in the DOM; ``refill``: the filter or tasks changed. */
function renderRows(refill) {
  const { shown } = view.selection;
  el.spacer.style.height = `${shown.length * rowHeightPx}px`;
  const top = el.viewport.scrollTop;
  const first = Math.max(0, Math.floor(top / rowHeightPx) - OVERSCAN_ROWS);
  const last = Math.min(shown.length, Math.ceil((top + el.viewport.clientHeight) / rowHeightPx) + OVERSCAN_ROWS);
  const now = Date.now();
  const kept = new Map();
  const ordered = [];
  for (let i = first; i < last; i++) {
    const e = shown[i];
    let row = rows.byId.get(e.id);
    if (row) rows.byId.delete(e.id);
    else row = rows.pool.pop() ?? makeRow();
    if (row.entry !== e || refill) fillRow(row, e, now);
    if (row.index !== i) {
      row.index = i;
      row.el.style.transform = `translateY(${i * rowHeightPx}px)`;
      row.el.setAttribute("aria-rowindex", String(i + 2));
    }
    row.el.classList.toggle("selected", e.id === view.selected);
    kept.set(e.id, row);
    ordered.push(row);
  }
  for (const row of rows.byId.values()) {
    row.el.remove();
    row.entry = null;
    row.index = -1;
    rows.pool.push(row);
  }
  rows.byId = kept;
  // The document order is the visual order (for assistive technology): move only what is out of place.
  let cursor = el.spacer.firstElementChild;
  for (const row of ordered) {
    if (row.el === cursor) cursor = cursor.nextElementSibling;
    else el.spacer.insertBefore(row.el, cursor);
  }
}

function tickAges() {
  const now = Date.now();
  for (const row of rows.byId.values()) row.parts.age.textContent = formatAge(now - row.entry.createdMs);
}

// -- details and control ------------------------------------------------------------------------

function renderDetails() {
  const id = view.selected;
  if (id === null) {
    el.details.hidden = true;
    return;
  }
  el.details.hidden = false;
  const e = store.tasks.get(id);
  el.detailsTitle.textContent = e ? `${e.details.subsystem} ${e.details.verb}` : "Task gone";
  const fields = [];
  const add = (name, value) => {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    if (typeof value === "string") dd.textContent = value;
    else {
      const pre = document.createElement("pre");
      pre.textContent = JSON.stringify(value, null, 2);
      dd.append(pre);
    }
    fields.push(dt, dd);
  };
  add("id", id);
  if (e) {
    const d = e.details;
    add("state", `${d.state} (${d.taskState}${d.taskResult ? `, ${d.taskResult}` : ""})`);
    add("code", String(d.code));
    add("message", d.message);
    add("progress", d.progress === null ? "–" : `${d.progress}%`);
    add("tags", d.tags.join(" ") || "–");
    add("created", d.createdAt);
    add("updated", d.updatedAt);
    add("result", d.result);
    add("data", d.data);
  } else {
    add("state", "left the view");
  }
  el.detailsFields.replaceChildren(...fields);
  el.detailsActions.hidden = !control.enabled;
  const done = e ? DONE_STATES.has(e.details.state) : false;
  el.actionStop.disabled = !e || done || e.group === "aborting";
  el.actionClear.disabled = !e || !done;
}

function select(id) {
  view.selected = id;
  el.actionResult.textContent = "";
  renderDetails();
  renderRows(false);
}

async function loadConfig() {
  el.tokenInput.value = sessionStorage.getItem(TOKEN_KEY) ?? "";
  try {
    const response = await fetch(new URL("api/config", document.baseURI), { headers: { Accept: "application/json" } });
    if (!response.ok) return; // no config (404): control stays off
    const config = await response.json();
    control.authorized = config.authorization === true;
    control.enabled = config.control === true && !control.authorized;
  } catch (error) {
    console.warn("bus_tasks: no /api/config, control off", error);
  }
  el.tokenBox.hidden = !(control.enabled || control.authorized);
  if (control.authorized) {
    el.tokenLabel.textContent = "Token";
    rememberToken(el.tokenInput.value.trim());
    await loadWhoami();
  }
  renderDetails();
}

/** The token for this tab: in session storage, and (authorization on) as the watch's cookie. */
function rememberToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  if (!control.authorized) return;
  const cookie = token ? encodeURIComponent(token) : "";
  const expires = token ? "" : "; Max-Age=0";
  document.cookie = `bus_tasks_token=${cookie}; Path=/; SameSite=Strict${expires}`;
}

/** Who is looking (authorization on): stop and clear are offered only to whom may call them. */
async function loadWhoami() {
  const token = el.tokenInput.value.trim();
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let who = { identity: null, role: null, calls: [] };
  try {
    const response = await fetch(new URL("api/whoami", document.baseURI), { headers });
    if (response.ok) who = await response.json();
  } catch (error) {
    console.warn("bus_tasks: no /api/whoami", error);
  }
  const calls = new Set(who.calls ?? []);
  control.enabled = calls.has("Task.stop") || calls.has("Task.clear");
  el.whoami.dataset.identity = who.identity ?? "";
  el.whoami.dataset.role = who.role ?? "";
  el.whoami.textContent = who.identity ? `${who.identity} (${who.role ?? "no role"})` : "not signed in";
  renderDetails();
}

async function sendControl(action) {
  const id = view.selected;
  const token = el.tokenInput.value.trim();
  if (!token) {
    el.actionResult.textContent = "Enter the control token first.";
    el.tokenInput.focus();
    return;
  }
  rememberToken(token);
  el.actionResult.textContent = `${action}…`;
  try {
    const response = await fetch(new URL(`api/tasks/${encodeURIComponent(id)}/${action}`, document.baseURI), {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
    });
    if (response.ok) {
      el.actionResult.textContent = `${action} sent`;
      return;
    }
    if (response.status === 401 || (response.status === 403 && !control.authorized)) {
      sessionStorage.removeItem(TOKEN_KEY);
    }
    let reason = `HTTP ${response.status}`;
    try {
      const body = await response.json();
      if (body && typeof body.message === "string") reason = `${body.message} (code ${body.code})`;
    } catch {
      // not JSON: the status says enough
    }
    el.actionResult.textContent = `${action} refused: ${reason}`;
  } catch (error) {
    el.actionResult.textContent = `${action} failed: ${error}`;
  }
}

// -- the filter ------------------------------------------------------------------------------

function matchValue() {
  return el.filterForm.elements.match.value === "all" ? "all" : "any";
}

/** Filter by what the tag box and the any/all toggle say, and keep it in the address. */
function applyFilter() {
  const tags = parseTags(el.tagInput.value);
  const invalid = tags.filter((tag) => !TAG_PATTERN.test(tag));
  el.tagInput.setAttribute("aria-invalid", String(invalid.length > 0));
  el.tagInput.title = invalid.length ? `not a tag: ${invalid.join(" ")}` : "";
  const match = matchValue();
  const subsystem = el.subsystem.value;
  view.selection.filter = { tags, match, subsystem, group: view.group };
  const hash = new URLSearchParams();
  for (const tag of tags) hash.append("tag", tag);
  if (match === "all") hash.set("match", "all");
  if (subsystem) hash.set("subsystem", subsystem);
  if (view.group) hash.set("state", view.group);
  const query = hash.toString();
  const wanted = query ? `#${query}` : "";
  if (location.hash !== wanted) history.replaceState(null, "", `${location.pathname}${location.search}${wanted}`);
  el.viewport.scrollTop = 0; // a new selection is read from its start
  rebuildAll();
}

function filterFromAddress() {
  const params = new URLSearchParams(location.hash.slice(1));
  el.tagInput.value = params.getAll("tag").join(" ");
  el.filterForm.elements.match.value = params.get("match") === "all" ? "all" : "any";
  const subsystem = params.get("subsystem") ?? "";
  if (subsystem && ![...el.subsystem.options].some((o) => o.value === subsystem)) {
    el.subsystem.append(new Option(subsystem, subsystem));
  }
  el.subsystem.value = subsystem;
  view.group = GROUP_ORDER.includes(params.get("state")) ? params.get("state") : "";
  applyFilter();
}

function toggleGroup(group) {
  view.group = view.group === group ? "" : group;
  applyFilter();
}

function toggleTag(tag) {
  const tags = parseTags(el.tagInput.value);
  const at = tags.indexOf(tag);
  if (at >= 0) tags.splice(at, 1);
  else tags.push(tag);
  el.tagInput.value = tags.join(" ");
  applyFilter();
}

/** Sort by ``key``: ascending, or the other way round when it already sorts by it. */
function sortBy(key, direction = view.sortKey === key ? -view.direction : 1) {
  view.direction = direction;
  view.sortKey = key;
  view.selection.compare = comparator(key, view.direction);
  for (const header of el.table.querySelectorAll("[role=columnheader]")) {
    const button = header.querySelector("[data-sort]");
    if (button && button.dataset.sort === key) {
      header.setAttribute("aria-sort", view.direction > 0 ? "ascending" : "descending");
    } else header.removeAttribute("aria-sort");
  }
  rebuildAll();
}

// -- wiring ----------------------------------------------------------------------------------

function start() {
  // The row height is the stylesheet's (--row-h): measured once, so CSS is its only source.
  const probe = document.createElement("div");
  probe.className = "row probe";
  el.spacer.append(probe);
  rowHeightPx = probe.getBoundingClientRect().height || rowHeightPx;
  probe.remove();

  let typing = 0;
  el.tagInput.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(applyFilter, 150);
  });
  el.filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(typing);
    applyFilter();
  });
  el.filterForm.addEventListener("change", (event) => {
    if (event.target.name === "match" || event.target.name === "subsystem") applyFilter();
  });
  el.clearFilter.addEventListener("click", () => {
    el.tagInput.value = "";
    el.subsystem.value = "";
    view.group = "";
    applyFilter();
  });
  el.stateCounts.addEventListener("click", (event) => {
    const chip = event.target.closest("[data-group]");
    if (chip) toggleGroup(chip.dataset.group);
  });
  window.addEventListener("hashchange", filterFromAddress);

  el.table.querySelector(".head").addEventListener("click", (event) => {
    const button = event.target.closest("[data-sort]");
    if (button) sortBy(button.dataset.sort);
  });
  el.viewport.addEventListener("click", (event) => {
    const chip = event.target.closest(".chip");
    if (chip) {
      toggleTag(chip.dataset.tag);
      return;
    }
    const row = event.target.closest(".row");
    if (row) select(row.dataset.taskId);
  });
  let scrolling = 0;
  el.viewport.addEventListener("scroll", () => {
    if (!scrolling) {
      scrolling = requestAnimationFrame(() => {
        scrolling = 0;
        renderRows(false);
      });
    }
  }, { passive: true });
  new ResizeObserver(() => renderRows(false)).observe(el.viewport);

  el.detailsClose.addEventListener("click", () => select(null));
  el.actionStop.addEventListener("click", () => sendControl("stop"));
  el.actionClear.addEventListener("click", () => sendControl("clear"));
  el.tokenBox.addEventListener("submit", (event) => event.preventDefault());
  el.tokenInput.addEventListener("change", async () => {
    rememberToken(el.tokenInput.value.trim());
    if (control.authorized) {
      await loadWhoami();
      reconnect(true); // the watch again, as whoever is looking now
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && view.selected !== null) select(null);
  });
  setInterval(tickAges, AGE_TICK_MS);

  sortBy("age", 1);
  filterFromAddress();
  // With authorization on, the watch needs the token's cookie: set before the first connect.
  loadConfig().finally(connect);
}

start();
