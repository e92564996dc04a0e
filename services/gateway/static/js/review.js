// Review page: 24-hour timelines (recording coverage, gaps, event markers), a
// filtered event list with thumbnails, and a player with seeking and download.
import { api } from "/static/js/api.js";

const DAY = 86_400_000;
const $ = (id) => document.getElementById(id);
const state = { cursor: null, cameras: new Set(), until: Date.now() };

const fmtBytes = (n) => {
  if (n == null) return "?";
  const u = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n < 10 && i ? 1 : 0)} ${u[i]}`;
};
const fmtTime = (ms) => new Date(ms).toLocaleString();
const camPath = (id) => id.split("/").map(encodeURIComponent).join("/");
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
};

async function loadStorage() {
  try {
    const s = await api("/api/storage");
    const parts = [`storage: ${fmtBytes(s.used_bytes)} used`];
    if (s.max_bytes) parts.push(`of ${fmtBytes(s.max_bytes)}`);
    if (s.free_bytes != null) parts.push(`· ${fmtBytes(s.free_bytes)} free`);
    if (s.oldest_recording) parts.push(`· since ${fmtTime(s.oldest_recording)}`);
    $("storage-use").textContent = parts.join(" ");
    Object.keys(s.cameras).forEach((c) => state.cameras.add(c));
  } catch (err) {
    $("storage-use").textContent = `storage: ${err.message}`;
  }
}

function place(node, since, start, end) {
  const left = Math.max(0, (start - since) / DAY) * 100;
  const right = Math.min(1, (end - since) / DAY) * 100;
  node.style.left = `${left}%`;
  node.style.width = `${Math.max(0, right - left)}%`;
}

function merge(segments) {
  const out = [];
  for (const s of segments) {
    const last = out[out.length - 1];
    if (last && s.start - last.end < 2000) last.end = Math.max(last.end, s.end);
    else out.push({ start: s.start, end: s.end });
  }
  return out;
}

async function loadTimelines() {
  const until = (state.until = Date.now());
  const since = until - DAY;
  const box = $("timelines");
  box.replaceChildren();
  const cams = [...state.cameras].sort();
  let any = false;
  for (const cam of cams) {
    const q = new URLSearchParams({ camera_id: cam, since, until });
    let rec;
    try { rec = await api(`/api/recordings?${q}`); } catch { continue; }
    const evq = new URLSearchParams({ camera_id: cam, type: "object_entered", since, until, limit: 500 });
    let events = [];
    try { events = (await api(`/api/events?${evq}`)).events; } catch { /* markers are optional */ }
    const row = el("div", "tl-row");
    row.dataset.camera = cam;
    row.append(el("div", "tl-name", cam));
    const bar = el("div", "tl-bar");
    for (const c of merge(rec.segments)) {
      const d = el("div", "tl-cov");
      d.title = `${fmtTime(c.start)} – ${fmtTime(c.end)}`;
      place(d, since, c.start, c.end);
      bar.append(d);
      any = true;
    }
    for (const g of rec.gaps) {
      const d = el("div", "tl-gap");
      d.title = `gap (${g.reason}) ${fmtTime(g.start)} – ${fmtTime(g.end)}`;
      place(d, since, g.start, g.end);
      bar.append(d);
    }
    for (const ev of events) {
      const d = el("div", "tl-ev");
      d.style.left = `${((ev.ts - since) / DAY) * 100}%`;
      d.title = `${ev.class || ev.type} ${fmtTime(ev.ts)}`;
      d.addEventListener("click", (e) => { e.stopPropagation(); playEvent(ev); });
      bar.append(d);
    }
    bar.addEventListener("click", (e) => {
      const r = bar.getBoundingClientRect();
      const t = since + ((e.clientX - r.left) / r.width) * DAY;
      playRecording(cam, Math.round(t - 5000), Math.round(t + 55000));
    });
    row.append(bar);
    box.append(row);
  }
  $("timelines-empty").hidden = any;
  const axis = $("axis");
  axis.replaceChildren();
  for (let h = 0; h <= 24; h += 4) {
    const s = el("span", null, new Date(since + h * 3600_000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    s.style.left = `${(h / 24) * 100}%`;
    axis.append(s);
  }
}

function play(src, title, info) {
  const v = $("player");
  $("player-title").textContent = title;
  $("player-info").textContent = info || "";
  v.src = src;
  const dl = $("download");
  dl.href = src;
  dl.hidden = false;
  v.play().catch(() => { /* autoplay may be refused; controls remain */ });
}

async function playEvent(ev) {
  if (!ev.clip_url) {
    $("player-title").textContent = "No footage for this event";
    return;
  }
  const head = await fetch(ev.clip_url, { method: "GET", headers: { Range: "bytes=0-0" }, credentials: "same-origin" });
  if (!head.ok) {
    let msg = `HTTP ${head.status}`;
    try { msg = (await head.json()).detail; } catch { /* keep status */ }
    $("player-title").textContent = msg;
    $("player").removeAttribute("src");
    $("player").load();
    $("download").hidden = true;
    return;
  }
  const o = ev.object || {};
  play(ev.clip_url, `${o.label || ev.class || ev.type} · ${ev.camera_id}`,
    `${fmtTime(o.start || ev.ts)}${o.end ? ` – ${fmtTime(o.end)}` : ""}`);
}

function playRecording(cam, start, end) {
  play(`/api/recordings/${camPath(cam)}/clip.mp4?start=${start}&end=${end}`, `${cam} · recording`,
    `${fmtTime(start)} – ${fmtTime(end)}`);
}

function eventItem(ev) {
  const li = el("li", "rv-event");
  li.dataset.eventId = ev.event_id || "";
  const o = ev.object || {};
  const snap = ev.snapshot_id || o.snapshot_id;
  if (snap && ev.event_id) {
    const img = el("img");
    img.loading = "lazy";
    img.alt = "";
    img.src = `/api/events/${encodeURIComponent(ev.event_id)}/snapshot.jpg?box=1`;
    img.addEventListener("error", () => img.replaceWith(el("div", "noimg", "no snapshot")));
    li.append(img);
  } else {
    li.append(el("div", "noimg", "no snapshot"));
  }
  const body = el("div");
  body.append(el("div", "title", `${o.label || ev.class || ev.name || ev.type}`));
  const dur = o.end && o.start ? ` · ${Math.round((o.end - o.start) / 1000)} s` : o.running ? " · ongoing" : "";
  body.append(el("div", "meta", `${ev.camera_id} · ${fmtTime(ev.ts)}${dur}`));
  const tags = el("div");
  if (ev.clip_url) tags.append(el("span", "tag", "clip"));
  for (const f of o.faces || []) tags.append(el("span", "tag", f));
  body.append(tags);
  if (o.summary || ev.summary) body.append(el("div", "meta", o.summary || ev.summary));
  li.append(body);
  li.addEventListener("click", () => {
    document.querySelectorAll(".rv-event.active").forEach((n) => n.classList.remove("active"));
    li.classList.add("active");
    playEvent(ev);
  });
  return li;
}

async function loadEvents(more = false) {
  const q = new URLSearchParams({ limit: 50 });
  const cam = $("f-camera").value, type = $("f-type").value, label = $("f-label").value.trim();
  if (cam) q.set("camera_id", cam);
  if (type) q.set("type", type);
  if (label) q.set("label", label);
  if ($("f-clip").checked) q.set("has_clip", "true");
  if (more && state.cursor) q.set("cursor", state.cursor);
  const list = $("rv-events");
  if (!more) list.replaceChildren();
  let page;
  try { page = await api(`/api/events?${q}`); } catch (err) {
    $("rv-empty").hidden = false;
    $("rv-empty").textContent = err.message;
    return;
  }
  for (const ev of page.events) {
    if (ev.camera_id) state.cameras.add(ev.camera_id);
    list.append(eventItem(ev));
  }
  state.cursor = page.next_cursor;
  $("rv-more").hidden = !page.next_cursor;
  $("rv-empty").hidden = list.children.length > 0;
}

function fillCameras() {
  const sel = $("f-camera");
  const have = new Set([...sel.options].map((o) => o.value));
  for (const c of [...state.cameras].sort()) {
    if (!have.has(c)) sel.append(new Option(c, c));
  }
}

async function main() {
  await loadStorage();
  await loadEvents();
  fillCameras();
  await loadTimelines();
  document.body.dataset.ready = "1";
  $("f-apply").addEventListener("click", () => loadEvents());
  $("rv-more").addEventListener("click", () => loadEvents(true));
  setInterval(() => { loadStorage(); }, 30_000);
}

main();
