// The web view's model, pure (no DOM): tasks as entries, their order, the filter, and the
// sorted selection the table shows.

// SPEC 3: internal state -> the group the page colours and counts by.
const STATE_GROUP = {
  unknown: "unknown",
  init: "pending",
  preparing: "running",
  blocked: "running",
  acquiring: "running",
  queued: "running",
  running: "running",
  finished: "finished",
  aborting: "aborting",
  raborting: "aborting",
  waitrecover: "cleaning",
  recovering: "cleaning",
  racquiring: "cleaning",
  recovered: "recovered",
  failed: "failed",
};
// Each group's states, for the count chips' titles ("running" counts acquiring too: SPEC 3).
export const GROUP_STATES = Object.entries(STATE_GROUP).reduce((groups, [state, group]) => {
  (groups[group] ??= []).push(state);
  return groups;
}, {});
export const GROUP_ORDER = ["running", "pending", "aborting", "cleaning", "failed", "recovered", "finished", "unknown"];
export const DONE_STATES = new Set(["finished", "recovered", "failed"]);

// The order of the states, for sorting: by group, then SPEC 3's order within it.
const STATE_RANK = new Map(
  Object.keys(STATE_GROUP).map((state, i) => [state, GROUP_ORDER.indexOf(STATE_GROUP[state]) * 100 + i]),
);

export const TAG_PATTERN = /^[A-Za-z0-9_.:/-]{1,64}$/;

/** One task as the page keeps it: its TaskDetails plus what sorting and colouring need. */
export function entry(details) {
  return {
    details,
    id: details.id,
    group: STATE_GROUP[details.state] ?? "unknown",
    createdMs: instant(details.createdAt),
  };
}

/** Milliseconds since the epoch of an RFC 3339 time, with its microseconds (they order tasks). */
function instant(text) {
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) return 0;
  const fraction = /\.\d{3}(\d+)/.exec(text);
  return fraction ? ms + Number(`0.${fraction[1]}`) : ms;
}

const SORT_KEYS = {
  id: (e) => e.id,
  subsystem: (e) => e.details.subsystem,
  verb: (e) => e.details.verb,
  state: (e) => STATE_RANK.get(e.details.state) ?? -1,
  progress: (e) => e.details.progress ?? -1,
  message: (e) => e.details.message,
  age: (e) => -e.createdMs, // ascending age: the youngest first
};

/** A total order (ties broken by id), so a task's place can be found by binary search. */
export function comparator(sortKey, direction) {
  const key = SORT_KEYS[sortKey];
  return (a, b) => {
    const ka = key(a);
    const kb = key(b);
    if (ka < kb) return -direction;
    if (ka > kb) return direction;
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  };
}

/** The first index of ``sorted`` whose item does not sort before ``item``. */
export function lowerBound(sorted, item, compare) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compare(sorted[mid], item) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Whether a filter ``{tags, match: "any" | "all", subsystem?, group?}`` selects a task (no tags:
 * every task of the subsystem and state group, when they are given). */
export function selects(filter, details) {
  if (filter.subsystem && details.subsystem !== filter.subsystem) return false;
  if (filter.group && (STATE_GROUP[details.state] ?? "unknown") !== filter.group) return false;
  if (filter.tags.length === 0) return true;
  const tags = details.tags;
  return filter.match === "all"
    ? filter.tags.every((tag) => tags.includes(tag))
    : filter.tags.some((tag) => tags.includes(tag));
}

/** The tags typed in a box: separated by spaces or commas, each once. */
export function parseTags(text) {
  const tags = [];
  for (const token of text.split(/[\s,]+/)) {
    if (token && !tags.includes(token)) tags.push(token);
  }
  return tags;
}

/** A short age: "42s", "3m", "5h", "2d". */
export function formatAge(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** The tasks a filter selects, kept sorted; a changed task moves to its place by binary search. */
export class Selection {
  constructor(filter, compare) {
    this.filter = filter;
    this.compare = compare;
    this.shown = []; // entries, sorted by this.compare
    this.placed = new Map(); // id -> the entry object held in this.shown
  }

  /** Select and sort anew from every entry of ``tasks`` (a Map id -> entry). */
  rebuild(tasks) {
    const shown = [];
    this.placed = new Map();
    for (const e of tasks.values()) {
      if (selects(this.filter, e.details)) {
        shown.push(e);
        this.placed.set(e.id, e);
      }
    }
    shown.sort(this.compare);
    this.shown = shown;
  }

  /** Move task ``id`` to its place (or out) after its entry in ``tasks`` changed or left. */
  reposition(tasks, id) {
    const { shown, placed, compare } = this;
    const old = placed.get(id);
    const now = tasks.get(id);
    if (old === now) return;
    if (old) {
      shown.splice(lowerBound(shown, old, compare), 1);
      placed.delete(id);
    }
    if (now && selects(this.filter, now.details)) {
      shown.splice(lowerBound(shown, now, compare), 0, now);
      placed.set(id, now);
    }
  }
}
