// The dashboard's only script: live updates from the event stream, the buttons' API calls, and the
// job log (ANSI colours, line numbers, links to a line). Data from the server only ever reaches the
// page as text (textContent, DOM nodes), never as markup; the page's policy forbids inline script.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]')?.content || "";

function flash(message, kind) {
  const box = document.getElementById("flash");
  if (!box) return;
  box.textContent = message;
  box.className = "flash " + (kind || "");
  box.hidden = !message;
}

// ---- the buttons and forms: POSTs to the JSON API, signed in by the cookie, with the CSRF token.

async function callApi(path, body) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let answer = null;
  try {
    answer = await response.json();
  } catch (_) {
    answer = null;
  }
  if (!response.ok) {
    const detail = answer && typeof answer.detail === "string" ? answer.detail : response.statusText;
    throw new Error(`${response.status}: ${detail}`);
  }
  return answer;
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-post]");
  if (!button) return;
  event.preventDefault();
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  button.disabled = true;
  try {
    const answer = await callApi(button.dataset.post);
    if (button.dataset.then === "build" && answer && answer.build_id) {
      window.location.assign(`/builds/${answer.build_id}`);
      return;
    }
    flash(`${button.textContent.trim()}: done`, "ok");
    refresh();
  } catch (error) {
    flash(`${button.textContent.trim()} refused: ${error.message}`, "bad");
  } finally {
    button.disabled = false;
  }
});

document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form[data-api]");
  if (!form) return;
  event.preventDefault();
  const body = {};
  for (const [name, value] of new FormData(form)) {
    body[name] = /^\d+$/.test(value) ? Number(value) : value;
  }
  const label = form.querySelector("button")?.textContent.trim() || "Request";
  try {
    const answer = await callApi(form.dataset.api, body);
    flash(`${label}: deployment #${answer.id} ${answer.status}`, "ok");
    refresh();
  } catch (error) {
    flash(`${label} refused: ${error.message}`, "bad");
  }
});

// ---- live pages: on an event that concerns the page, fetch the page again and swap its #live part.

let refreshing = false;
let again = false;
let timer = null;

function refresh() {
  clearTimeout(timer);
  timer = setTimeout(reload, 150); // a burst of events makes one fetch
}

async function reload() {
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = true;
  try {
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    if (response.redirected && new URL(response.url).pathname === "/login") {
      window.location.assign(response.url);
      return;
    }
    if (response.ok) {
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      const next = fresh.getElementById("live");
      const now = document.getElementById("live");
      if (next && now) now.replaceWith(document.importNode(next, true));
    }
  } finally {
    refreshing = false;
    if (again) {
      again = false;
      refresh();
    }
  }
}

function concerns(event) {
  const body = document.body.dataset;
  switch (body.watch) {
    case "builds":
      return event.kind === "build";
    case "build":
      return (
        (event.kind === "build" && String(event.id) === body.buildId) ||
        (event.kind === "job" && String(event.build_id) === body.buildId)
      );
    case "job":
      return event.kind === "job" && String(event.id) === body.jobId;
    case "environments":
      return event.kind === "deployment" || (event.kind === "build" && event.status === "success");
    default:
      return false;
  }
}

function watchEvents() {
  const body = document.body.dataset;
  if (!body.watch) return;
  // From the last event before the page was read: nothing that changed since is missed.
  const query = [body.events, body.after ? `after=${encodeURIComponent(body.after)}` : ""];
  const source = new EventSource(`/api/v1/events?${query.filter(Boolean).join("&")}`);
  const seen = (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (_) {
      return;
    }
    if (concerns(event)) refresh();
  };
  for (const kind of ["build", "job", "deployment"]) source.addEventListener(kind, seen);
  // Ages and running durations move on between events too.
  setInterval(() => {
    if (!document.hidden) refresh();
  }, 30000);
  source.addEventListener("open", () => document.body.classList.add("live"));
  source.addEventListener("error", () => document.body.classList.remove("live"));
}

// ---- the job log: ANSI SGR colours and bold become classes, every other escape is dropped.

const ESCAPE = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]|\r?\n|[\x00-\x08\x0b-\x1f\x7f]/g;
const UNFINISHED = /\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?)?$/;
const CUT = /^\[ciserver: ([\d,]+) bytes of output cut here/;

// A browser slows to a crawl with hundreds of thousands of lines: past HEAD bytes a log shows only
// its last TAIL_LINES lines (kept up to date while it grows) and says which lines it leaves out.
const HEAD = 1 << 20;
const TAIL_BYTES = 1 << 19;
const TAIL_LINES = 5000;

class LogView {
  constructor(box, head = HEAD, tailBytes = TAIL_BYTES, tailLines = TAIL_LINES) {
    this.box = box;
    this.count = 0;
    this.line = null;
    this.carry = "";
    this.style = { bold: false, italic: false, underline: false, fg: null, bg: null };
    this.scrolled = false;
    this.headLeft = head;
    this.tailBytes = tailBytes;
    this.tailLines = tailLines;
    this.gap = null; // the note between head and tail, once the head is full
    this.headEnd = 0; // the head's last line
    this.hidden = 0; // bytes left out
    this.queue = []; // tail text not shown yet
    this.queued = 0;
    this.rows = []; // the tail's rows, oldest first
    this.flushing = null;
  }

  add(chunk) {
    if (this.gap === null) {
      if (chunk.length <= this.headLeft) {
        this.headLeft -= chunk.length;
        this.parse(chunk);
        return;
      }
      const cut = chunk.lastIndexOf("\n", this.headLeft - 1) + 1;
      this.parse(chunk.slice(0, cut));
      chunk = chunk.slice(cut);
      this.openGap();
    }
    this.queue.push(chunk);
    this.queued += chunk.length;
    while (this.queue.length > 1 && this.queued - this.queue[0].length >= this.tailBytes) {
      const dropped = this.queue.shift();
      this.queued -= dropped.length;
      this.leaveOut(dropped);
    }
    if (this.flushing === null) this.flushing = setTimeout(() => this.flush(), 200);
  }

  openGap() {
    if (this.line !== null) this.endLine();
    this.headEnd = this.count;
    this.gap = document.createElement("div");
    this.gap.className = "line gap";
    this.box.append(this.gap);
  }

  leaveOut(text) {
    // Text never shown: its lines are counted, so the tail's numbers stay those of the whole log.
    const newlines = text.split("\n").length - 1;
    const cut = /^\[ciserver: ([\d,]+) bytes of output cut here/m.exec(text);
    if (cut) this.noteCut(cut[1], this.count + 1);
    this.hidden += text.length;
    if (newlines === 0) return;
    this.count += this.line !== null ? newlines - 1 : newlines;
    this.line = null;
    this.carry = "";
    this.sgr("0");
  }

  flush() {
    this.flushing = null;
    const text = this.queue.join("");
    this.queue = [];
    this.queued = 0;
    this.parse(text);
    while (this.rows.length > this.tailLines) {
      const row = this.rows.shift();
      this.hidden += row.textContent.length + 1;
      row.remove();
    }
    const first = this.rows.length ? Number(this.rows[0].id.slice(1)) : this.count + 1;
    const from = this.headEnd + 1;
    this.gap.textContent =
      first > from
        ? `lines ${from} to ${first - 1} (about ${this.hidden.toLocaleString("en")} bytes) are not shown here: the raw log has them`
        : "";
    this.gap.hidden = first <= from;
  }

  finish() {
    if (this.flushing !== null) {
      clearTimeout(this.flushing);
      this.flush();
    }
  }

  newLine() {
    this.count += 1;
    const row = document.createElement("div");
    row.className = "line";
    row.id = `L${this.count}`;
    const number = document.createElement("a");
    number.className = "ln";
    number.href = `#L${this.count}`;
    number.dataset.n = String(this.count);
    const text = document.createElement("span");
    text.className = "lt";
    row.append(number, text);
    this.box.append(row);
    if (this.gap !== null) this.rows.push(row);
    this.line = text;
  }

  text(piece) {
    if (!piece) return;
    if (this.line === null) this.newLine();
    const s = this.style;
    const classes = [];
    if (s.bold) classes.push("b");
    if (s.italic) classes.push("i");
    if (s.underline) classes.push("u");
    if (s.fg !== null) classes.push(`fg${s.fg}`);
    if (s.bg !== null) classes.push(`bg${s.bg}`);
    if (classes.length) {
      const span = document.createElement("span");
      span.className = classes.join(" ");
      span.textContent = piece;
      this.line.append(span);
    } else {
      this.line.append(document.createTextNode(piece));
    }
  }

  endLine() {
    if (this.line === null) this.newLine();
    const row = this.line.parentElement;
    const cut = CUT.exec(this.line.textContent);
    if (cut) {
      row.classList.add("cut");
      this.noteCut(cut[1], this.count);
    }
    this.line = null;
  }

  noteCut(bytes, line) {
    const note = document.getElementById("log-cut");
    if (!note) return;
    note.textContent = `This log was cut: ${bytes} bytes of output are left out at line ${line}; it keeps the head and the tail.`;
    note.hidden = false;
  }

  sgr(params) {
    const codes = params === "" ? [0] : params.split(";").map((p) => (p === "" ? 0 : Number(p)));
    const s = this.style;
    for (let i = 0; i < codes.length; i += 1) {
      const c = codes[i];
      if (c === 0) Object.assign(s, { bold: false, italic: false, underline: false, fg: null, bg: null });
      else if (c === 1) s.bold = true;
      else if (c === 3) s.italic = true;
      else if (c === 4) s.underline = true;
      else if (c === 22) s.bold = false;
      else if (c === 23) s.italic = false;
      else if (c === 24) s.underline = false;
      else if (c >= 30 && c <= 37) s.fg = c - 30;
      else if (c >= 90 && c <= 97) s.fg = c - 90 + 8;
      else if (c === 39) s.fg = null;
      else if (c >= 40 && c <= 47) s.bg = c - 40;
      else if (c >= 100 && c <= 107) s.bg = c - 100 + 8;
      else if (c === 49) s.bg = null;
      else if (c === 38 || c === 48) {
        // 256 colours keep their first 16 (the palette); others and true colour are dropped.
        const key = c === 38 ? "fg" : "bg";
        if (codes[i + 1] === 5) {
          const n = codes[i + 2];
          if (n >= 0 && n < 16) s[key] = n;
          i += 2;
        } else if (codes[i + 1] === 2) {
          i += 4;
        }
      }
    }
  }

  parse(chunk) {
    let data = this.carry + chunk;
    this.carry = "";
    const unfinished = UNFINISHED.exec(data);
    if (unfinished && unfinished[0].length < 256) {
      this.carry = unfinished[0];
      data = data.slice(0, unfinished.index);
    }
    let at = 0;
    for (const match of data.matchAll(ESCAPE)) {
      this.text(data.slice(at, match.index));
      at = match.index + match[0].length;
      const token = match[0];
      if (token.endsWith("\n")) this.endLine();
      else if (token.startsWith("\x1b[") && token.endsWith("m")) this.sgr(token.slice(2, -1));
    }
    this.text(data.slice(at));
    this.jumpToTarget();
  }

  jumpToTarget() {
    // The line in the address may arrive after the page loaded: scroll to it once it exists.
    if (this.scrolled || !window.location.hash.startsWith("#L")) return;
    const row = document.getElementById(window.location.hash.slice(1));
    if (row && row.parentElement === this.box) {
      // :target is only worked out on navigation, not for a line that arrives later: a class does it.
      for (const old of this.box.querySelectorAll(".line.hl")) old.classList.remove("hl");
      row.classList.add("hl");
      this.scrolled = true;
      row.scrollIntoView({ block: "center" });
    }
  }
}

function followLog() {
  const box = document.getElementById("log");
  if (!box) return;
  const view = new LogView(box);
  const state = document.getElementById("log-state");
  const source = new EventSource(`/api/v1/jobs/${box.dataset.logJob}/log/stream`);
  if (state) state.textContent = "following the log live";
  source.addEventListener("log", (message) => {
    const piece = JSON.parse(message.data);
    view.add(piece.text || "");
  });
  source.addEventListener("end", (message) => {
    source.close();
    view.finish();
    const end = JSON.parse(message.data);
    if (state) state.textContent = `${view.count} lines · the job ended: ${end.status || "unknown"}`;
    box.dataset.complete = "true";
    refresh();
  });
  source.addEventListener("error", () => {
    if (state && box.dataset.complete !== "true") state.textContent = "reconnecting to the log…";
  });
  window.addEventListener("hashchange", () => {
    view.scrolled = false;
    view.jumpToTarget();
  });
}

watchEvents();
followLog();
