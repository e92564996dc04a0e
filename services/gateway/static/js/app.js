// Sentri dashboard: overview, live grid with detection boxes, events, faces, analysis, access.
import { api, cameraPath } from "./api.js";
import { LiveSocket } from "./live.js";

const $ = (id) => document.getElementById(id);
const state = {
  cameras: new Map(), // camera_id -> camera row from /api/cameras
  tiles: new Map(), // camera_id -> tile controller
  detections: new Map(), // camera_id -> {record, at}
  eventsCursor: null,
  view: "live",
  newKeys: [], // fingerprints of pending-key notices not yet shown
  me: null, // /api/auth/me: user, role, cameras
  auditCursor: null,
};
const SERVICES = ["detector", "faces", "analyst"];
const NO_SIGNAL_MS = 5000;
const BOX_TTL_MS = 2000;
const COLORS = ["#38bdf8", "#f472b6", "#a3e635", "#fbbf24", "#c084fc", "#34d399", "#fb7185", "#60a5fa"];

// ------------------------------------------------------------------ helpers
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function toast(text, isError = false) {
  const t = $("toast");
  t.textContent = text;
  t.className = isError ? "toast err" : "toast";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 3500);
}

const fmtTime = (ms) => new Date(ms).toLocaleTimeString();
const ago = (s) => {
  if (!s) return "never";
  const d = Math.max(0, Date.now() / 1000 - s);
  if (d < 60) return `${Math.round(d)} s ago`;
  if (d < 3600) return `${Math.round(d / 60)} min ago`;
  return `${Math.round(d / 3600)} h ago`;
};
const colorFor = (key) => {
  let h = 0;
  for (const ch of String(key)) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return COLORS[h % COLORS.length];
};

// Run fn at most once per `gapMs`, for a burst of calls: the first call schedules one
// run, later calls in the same window join it (nothing is lost, nothing is repeated).
function coalesce(fn, gapMs) {
  let timer = null;
  let last = 0;
  return () => {
    if (timer) return;
    const wait = Math.max(0, last + gapMs - Date.now());
    timer = setTimeout(() => {
      timer = null;
      last = Date.now();
      fn();
    }, Math.max(wait, 100));
  };
}

// --------------------------------------------------------------------- tiles
class Tile {
  constructor(cam) {
    this.id = cam.camera_id;
    this.node = $("tile-template").content.firstElementChild.cloneNode(true);
    this.node.dataset.camera = this.id;
    this.node.dataset.frames = "0";
    this.node.dataset.boxes = "0";
    this.canvas = this.node.querySelector(".tile-canvas");
    this.ctx = this.canvas.getContext("2d");
    this.overlay = this.node.querySelector(".tile-overlay");
    this.lastFrameAt = 0;
    this.decoding = false;
    this.pending = null;
    this.bitmap = null;
    this.node.querySelector(".tile-name").textContent = this.id;
    this.node.querySelector(".stream-toggle").addEventListener("click", () => this.toggleStream());
    for (const b of this.node.querySelectorAll("[data-service]")) {
      b.addEventListener("click", () => this.toggleProcessing(b.dataset.service, b));
    }
    this.node.querySelector(".quality").addEventListener("change", (e) => this.settings({ quality: Number(e.target.value) }, e.target));
    this.node.querySelector(".fps").addEventListener("change", (e) => this.settings({ fps: Number(e.target.value) }, e.target));
    this.update(cam);
  }

  get cam() { return state.cameras.get(this.id) || {}; }

  update(cam) {
    const badge = this.node.querySelector(".badge");
    const status = cam.client_status || "offline";
    badge.className = `badge badge-${status}`;
    badge.textContent = status;
    badge.title = `client ${cam.client_id}`;
    for (const b of this.node.querySelectorAll("[data-service]")) {
      const on = Boolean(cam.processing && cam.processing[b.dataset.service]);
      b.classList.toggle("on", on);
      b.classList.remove("pending");
      b.setAttribute("aria-pressed", String(on));
    }
    const st = cam.worker_stats && cam.worker_stats.detector;
    const parts = [];
    if (cam.fps_in !== undefined) parts.push(`in ${Number(cam.fps_in).toFixed(1)} fps`);
    if (st) {
      parts.push(`detect ${Number(st.fps).toFixed(1)} fps`);
      parts.push(`skipped ${st.skipped}`);
      if (st.skipped_static) parts.push(`static ${st.skipped_static}`);
      parts.push(`latency ${Math.round(st.latency_ms)} ms`);
    }
    if (cam.width) parts.push(`${cam.width}×${cam.height}`);
    this.node.querySelector(".tile-stats").textContent = parts.join(" · ") || "no statistics yet";
    this.renderState();
  }

  streaming() {
    // The registry's flag wins; unknown (older agents) counts as streaming.
    return this.cam.streaming !== false;
  }

  renderState() {
    const label = this.node.querySelector(".tile-state");
    const btn = this.node.querySelector(".stream-toggle");
    const live = Date.now() - this.lastFrameAt < NO_SIGNAL_MS;
    let s;
    if (!this.streaming()) s = "stopped";
    else if (live) s = "live";
    else s = "nosignal";
    if (this.pendingStream) s = this.pendingStream;
    this.node.dataset.state = s;
    this.node.classList.toggle("stopped", s === "stopped");
    label.className = `tile-state ${s === "live" ? "live" : s === "stopped" ? "stopped" : ""}`;
    label.textContent = { live: "● live", stopped: "■ stopped", nosignal: "no signal", starting: "starting…", stopping: "stopping…" }[s];
    btn.textContent = this.streaming() ? "■ Stop" : "▶ Start";
    btn.classList.toggle("on", this.streaming());
    if (s === "stopped") {
      this.overlay.hidden = false;
      this.overlay.textContent = "Stream stopped";
    } else if (!live) {
      this.overlay.hidden = false;
      this.overlay.textContent = this.lastFrameAt ? "No signal — waiting for frames…" : "Waiting for frames…";
    } else {
      this.overlay.hidden = true;
    }
  }

  async toggleStream() {
    const start = !this.streaming();
    this.pendingStream = start ? "starting" : "stopping";
    this.renderState();
    try {
      await api(`${cameraPath(this.id)}/stream/${start ? "start" : "stop"}`, { method: "POST" });
      toast(`${start ? "Start" : "Stop"} sent to ${this.id}`);
    } catch (e) {
      this.pendingStream = null;
      this.renderState();
      toast(`Could not ${start ? "start" : "stop"}: ${e.message}`, true);
      return;
    }
    // The agent confirms through the registry (client change notification).
    clearTimeout(this.pendingTimer);
    this.pendingTimer = setTimeout(() => { this.pendingStream = null; this.renderState(); }, 10000);
  }

  async toggleProcessing(service, button) {
    const on = !button.classList.contains("on");
    button.classList.add("pending");
    try {
      await api(`/api/distributed/${on ? "start" : "stop"}_processing`, {
        method: "POST", body: { camera_id: this.id, service },
      });
      const cam = this.cam;
      cam.processing = { ...(cam.processing || {}), [service]: on };
      this.update(cam);
    } catch (e) {
      button.classList.remove("pending");
      toast(`Could not switch ${service}: ${e.message}`, true);
    }
  }

  async settings(body, select) {
    try {
      await api(`${cameraPath(this.id)}/settings`, { method: "POST", body });
      toast(`Settings sent to ${this.id}`);
    } catch (e) {
      toast(`Settings refused: ${e.message}`, true);
    }
    select.value = "";
  }

  frame(header, jpeg) {
    this.lastFrameAt = Date.now();
    this.node.dataset.frames = String(Number(this.node.dataset.frames) + 1);
    this.node.dataset.seq = String(header.seq);
    if (this.decoding) { this.pending = jpeg; return; } // keep only the newest
    this.decode(jpeg);
  }

  async decode(jpeg) {
    this.decoding = true;
    try {
      const bmp = await createImageBitmap(new Blob([jpeg], { type: "image/jpeg" }));
      if (this.bitmap) this.bitmap.close();
      this.bitmap = bmp;
      this.draw();
    } catch { /* undecodable frame: skip */ }
    this.decoding = false;
    if (this.pending) {
      const next = this.pending;
      this.pending = null;
      this.decode(next);
    }
    if (this.overlay.hidden === false && this.streaming()) this.renderState();
  }

  draw() {
    const bmp = this.bitmap;
    if (!bmp) return;
    if (this.canvas.width !== bmp.width || this.canvas.height !== bmp.height) {
      this.canvas.width = bmp.width;
      this.canvas.height = bmp.height;
    }
    const ctx = this.ctx;
    ctx.drawImage(bmp, 0, 0);
    const det = state.detections.get(this.id);
    let boxes = 0;
    if (det && Date.now() - det.at < BOX_TTL_MS && this.cam.processing && this.cam.processing.detector) {
      const W = bmp.width, H = bmp.height;
      const lw = Math.max(2, Math.round(W / 320));
      ctx.lineWidth = lw;
      ctx.font = `600 ${Math.max(12, Math.round(W / 45))}px system-ui, sans-serif`;
      ctx.textBaseline = "top";
      for (const o of det.record.objects || []) {
        if (!Array.isArray(o.box) || o.box.length !== 4) continue;
        const [x1, y1, x2, y2] = o.box;
        const x = x1 * W, y = y1 * H, w = (x2 - x1) * W, h = (y2 - y1) * H;
        const color = colorFor(o.track_id ?? o.class);
        ctx.strokeStyle = color;
        ctx.strokeRect(x, y, w, h);
        const label = `${o.class}${o.track_id !== undefined && o.track_id !== null ? ` #${o.track_id}` : ""} ${Math.round((o.confidence || 0) * 100)}%`;
        const tw = ctx.measureText(label).width + 8;
        const th = parseInt(ctx.font.match(/(\d+)px/)[1], 10) + 6;
        const lx = Math.max(0, Math.min(x - lw / 2, W - tw));
        const ly = y - th >= 0 ? y - th : y; // above the box, or inside it at the top edge
        ctx.fillStyle = color;
        ctx.fillRect(lx, ly, tw, th);
        ctx.fillStyle = "#0b1016";
        ctx.fillText(label, lx + 4, ly + 3);
        boxes += 1;
      }
    }
    this.node.dataset.boxes = String(boxes);
  }
}

// ------------------------------------------------------------------- loaders
async function loadCameras() {
  const cams = await api("/api/cameras");
  const seen = new Set();
  for (const cam of cams) {
    seen.add(cam.camera_id);
    state.cameras.set(cam.camera_id, cam);
    let tile = state.tiles.get(cam.camera_id);
    if (!tile) {
      tile = new Tile(cam);
      state.tiles.set(cam.camera_id, tile);
      $("grid").append(tile.node);
    } else {
      if (tile.pendingStream && (cam.streaming !== false) === (tile.pendingStream === "starting")) {
        tile.pendingStream = null;
      }
      tile.update(cam);
    }
  }
  for (const [id, tile] of state.tiles) {
    if (!seen.has(id)) {
      tile.node.remove();
      state.tiles.delete(id);
      state.cameras.delete(id);
    }
  }
  $("grid-empty").hidden = cams.length > 0;
  live.setCameras(cams.map((c) => c.camera_id));
  const sel = $("ev-camera");
  const current = sel.value;
  sel.replaceChildren(el("option", { value: "" }, "all"), ...cams.map((c) => el("option", { value: c.camera_id }, c.camera_id)));
  sel.value = current;
}

async function loadStats() {
  const s = await api("/api/distributed/stats");
  $("st-clients").textContent = s.clients_total;
  $("st-clients-sub").textContent = `${s.clients.online} online · ${s.clients.stale} stale · ${s.clients.offline} offline`;
  $("st-cameras").textContent = s.cameras;
  $("st-streaming").textContent = `${s.streaming} streaming · ${s.live_viewed} viewed`;
  $("st-fps").textContent = s.services.detector.fps.toFixed(1);
  $("st-det").textContent = s.detections_per_min;
  $("st-objects").textContent = `${s.objects_per_min} objects/min`;
  $("st-events").textContent = s.events_per_min;
  const reps = SERVICES.map((x) => s.services[x].replicas);
  $("st-workers").textContent = reps.reduce((a, b) => a + b, 0);
  $("st-workers-sub").textContent = `det ${reps[0]} · faces ${reps[1]} · analyst ${reps[2]}`;
}

function eventNode(ev) {
  const title = {
    object_entered: `${ev.class || ev.label || "object"} entered`,
    object_left: `${ev.class || ev.label || "object"} left`,
    face_recognized: `${ev.name || "someone"} recognised`,
    analysis: "scene analysed",
  }[ev.type] || ev.type;
  const img = ev.snapshot_url
    ? el("img", { src: ev.snapshot_url, alt: `snapshot of ${ev.camera_id}`, loading: "lazy" })
    : el("div", { class: "noimg" }, "no snapshot");
  const extra = [ev.track_id !== undefined ? `track #${ev.track_id}` : null, ev.summary || ev.text || null].filter(Boolean).join(" · ");
  return el("li", { class: `event kind-${ev.type}` }, img,
    el("div", {}, el("div", { class: "event-title" }, title),
      el("div", { class: "event-meta" }, `${ev.camera_id} · ${ev.ts ? fmtTime(ev.ts) : ""}`),
      extra ? el("div", { class: "event-meta" }, extra) : null));
}

async function loadEvents(more = false) {
  const params = new URLSearchParams({ limit: "30" });
  if ($("ev-camera").value) params.set("camera_id", $("ev-camera").value);
  if ($("ev-type").value) params.set("type", $("ev-type").value);
  if (more && state.eventsCursor) params.set("cursor", state.eventsCursor);
  const page = await api(`/api/events?${params}`);
  const list = $("events");
  if (!more) list.replaceChildren();
  for (const ev of page.events) list.append(eventNode(ev));
  state.eventsCursor = page.next_cursor;
  $("ev-more").hidden = !page.next_cursor;
  $("events-empty").hidden = list.children.length > 0;
}

async function loadFaces() {
  let people;
  try {
    people = await api("/api/faces");
  } catch (e) {
    $("faces").replaceChildren(el("p", { class: "muted" }, `Face gallery unavailable: ${e.message}`));
    return;
  }
  $("faces").replaceChildren(...people.map(personNode));
  $("faces-empty").hidden = people.length > 0;
}

function personNode(p) {
  const photos = p.photos ?? p.encodings ?? p.count;
  const n = Array.isArray(photos) ? photos.length : photos;
  const rename = async () => {
    const name = prompt(`New name for ${p.name}`, p.name);
    if (!name || name === p.name) return;
    try {
      await api(`/api/faces/${encodeURIComponent(p.name)}/rename`, { method: "POST", body: { new_name: name } });
      toast(`Renamed to ${name}`);
      loadFaces();
    } catch (e) { toast(e.message, true); }
  };
  const remove = async () => {
    if (!confirm(`Delete ${p.name} from the gallery?`)) return;
    try {
      await api(`/api/faces/${encodeURIComponent(p.name)}`, { method: "DELETE" });
      toast(`Deleted ${p.name}`);
      loadFaces();
    } catch (e) { toast(e.message, true); }
  };
  return el("div", { class: "person", "data-person": p.name },
    el("div", { class: "person-name" }, p.name),
    el("div", { class: "muted" }, n !== undefined ? `${n} face sample${n === 1 ? "" : "s"}` : ""),
    el("div", { class: "person-actions needs-operator" },
      el("button", { class: "btn btn-sm rename", onclick: rename }, "Rename"),
      el("button", { class: "btn btn-sm btn-danger delete", onclick: remove }, "Delete")));
}

async function loadAnalysis() {
  const res = await api("/api/analysis?limit=0");
  const items = Object.entries(res.latest);
  $("analysis").replaceChildren(...items.map(([cam, rec]) => el("div", { class: "summary" },
    el("h3", {}, cam),
    el("div", { class: "event-meta" }, [rec.ts ? fmtTime(rec.ts) : "", rec.threat_level ? `threat: ${rec.threat_level}` : "", rec.provider || ""].filter(Boolean).join(" · ")),
    el("p", {}, rec.summary || "(no summary)"),
    rec.suggested_action ? el("div", { class: "event-meta" }, `Suggested: ${rec.suggested_action}`) : null)));
  $("analysis-empty").hidden = items.length > 0;
}

async function loadClients() {
  const res = await api("/api/distributed/clients");
  $("clients").replaceChildren(...res.clients.map((c) => el("tr", {},
    el("td", {}, c.client_id),
    el("td", {}, el("span", { class: `badge badge-${c.status}` }, c.status)),
    el("td", {}, [c.hostname, c.platform].filter(Boolean).join(" · ")),
    el("td", {}, String(c.cameras.length)),
    el("td", {}, ago(c.last_seen)))));
  $("clients-empty").hidden = res.count > 0;
  $("clients-table").hidden = res.count === 0;
}

async function loadTokens() {
  const tokens = await api("/api/auth/tokens");
  $("tokens").replaceChildren(...tokens.map((t) => el("tr", {},
    el("td", {}, t.name), el("td", {}, el("code", {}, t.id)), el("td", {}, ago(t.created)),
    el("td", {}, ago(t.last_used)),
    el("td", {}, el("button", { class: "btn btn-sm btn-danger", onclick: async () => {
      await api(`/api/auth/tokens/${t.id}`, { method: "DELETE" });
      loadTokens();
    } }, "Revoke")))));
}

// ------------------------------------------------------------- agent keys
const KEY_BADGE = { pending: "badge-stale", approved: "badge-online", rejected: "badge-offline" };

function showPendingCount(keys) {
  const n = keys.filter((k) => k.status === "pending").length;
  const badge = $("agents-pending");
  badge.textContent = String(n);
  badge.hidden = n === 0;
}

async function decideKey(k, decision) {
  if (decision === "reject" && !confirm(`Reject agent key ${k.fingerprint}? The agent will be refused.`)) return;
  try {
    await api(`/api/agents/keys/${encodeURIComponent(k.fingerprint)}/${decision}`, { method: "POST" });
    toast(`Key ${k.fingerprint} ${decision === "approve" ? "approved" : "rejected"}`);
  } catch (e) {
    toast(`Could not ${decision}: ${e.message}`, true);
  }
  loadAgentKeys().catch(() => {});
}

function keyRow(k) {
  const actions = el("div", { class: "key-actions" });
  if (k.status !== "approved") {
    actions.append(el("button", { class: "btn btn-sm btn-approve approve", onclick: () => decideKey(k, "approve") }, "Approve"));
  }
  if (k.status !== "rejected") {
    actions.append(el("button", { class: "btn btn-sm btn-danger reject", onclick: () => decideKey(k, "reject") }, "Reject"));
  }
  return el("tr", { "data-fingerprint": k.fingerprint, "data-status": k.status },
    el("td", {}, el("span", { class: "fingerprint", title: `public key ${k.key}` }, k.fingerprint)),
    el("td", {}, el("span", { class: `badge ${KEY_BADGE[k.status] || ""}` }, k.status)),
    el("td", {}, k.client_ids.join(", ") || "–"),
    el("td", {}, ago(k.first_seen)),
    el("td", {}, ago(k.last_seen)),
    el("td", {}, k.decided_at ? `${ago(k.decided_at)}${k.decided_by ? ` by ${k.decided_by}` : ""}` : "–"),
    el("td", {}, actions));
}

async function loadAgentKeys() {
  if (!state.me || state.me.role !== "admin") return;
  let keys;
  try {
    keys = await api("/api/agents/keys");
  } catch (e) {
    if (e.status === 403) { $("agents-tab").hidden = true; return; } // not an administrator
    throw e;
  }
  showPendingCount(keys);
  if (state.view !== "agents") return;
  $("agent-keys").replaceChildren(...keys.map(keyRow));
  $("agent-keys-empty").hidden = keys.length > 0;
  $("agent-keys-table").hidden = keys.length === 0;
}

// ------------------------------------------------------------- accounts
const parsePatterns = (text) => text.split(",").map((x) => x.trim()).filter(Boolean);

async function changeUser(u, body, what) {
  try {
    await api(`/api/users/${encodeURIComponent(u.username)}`, { method: "PATCH", body });
    toast(`${u.username}: ${what}`);
  } catch (e) {
    toast(`${u.username}: ${e.message}`, true);
  }
  loadUsers().catch(() => {});
}

function userRow(u) {
  const role = el("select", { class: "user-role", "aria-label": `role of ${u.username}` },
    ...["viewer", "operator", "admin"].map((r) => el("option", { value: r }, r)));
  role.value = u.role;
  role.addEventListener("change", () => changeUser(u, { role: role.value }, `role ${role.value}`));
  const actions = el("div", { class: "user-actions" },
    el("button", { class: "btn btn-sm edit-cameras", onclick: () => {
      const text = prompt(`Cameras of ${u.username} (comma separated)`, u.cameras.join(", "));
      if (text !== null) changeUser(u, { cameras: parsePatterns(text) }, "cameras changed");
    } }, "Cameras"),
    el("button", { class: "btn btn-sm reset-password", onclick: () => {
      const pw = prompt(`New password for ${u.username} (at least 12 characters; ends their sessions)`);
      if (pw) changeUser(u, { password: pw }, "password changed");
    } }, "Password"),
    el("button", { class: "btn btn-sm toggle-disabled", onclick: () => changeUser(u, { disabled: !u.disabled }, u.disabled ? "enabled" : "disabled") },
      u.disabled ? "Enable" : "Disable"),
    el("button", { class: "btn btn-sm btn-danger delete-user", onclick: async () => {
      if (!confirm(`Delete ${u.username} and their API tokens?`)) return;
      try {
        await api(`/api/users/${encodeURIComponent(u.username)}`, { method: "DELETE" });
        toast(`Deleted ${u.username}`);
      } catch (e) { toast(e.message, true); }
      loadUsers().catch(() => {});
    } }, "Delete"));
  return el("tr", { "data-user": u.username },
    el("td", {}, u.username), el("td", {}, role), el("td", {}, u.cameras.join(", ")),
    el("td", {}, el("span", { class: `badge ${u.disabled ? "badge-offline" : "badge-online"}` }, u.disabled ? "disabled" : "active")),
    el("td", {}, ago(u.updated)), el("td", {}, actions));
}

async function loadUsers() {
  const users = await api("/api/users");
  $("users").replaceChildren(...users.map(userRow));
}

// ---------------------------------------------------------------- audit
const AUDIT_ACTIONS = ["login", "login_failed", "login_rate_limited", "logout", "password_changed",
  "user_created", "user_updated", "user_deleted", "token_created", "token_revoked",
  "agent_key_approved", "agent_key_rejected", "agent_key_deleted", "processing_started", "processing_stopped",
  "stream_started", "stream_stopped", "stream_settings", "face_enrolled", "face_renamed",
  "face_deleted", "clients_cleaned_up"];

async function loadAudit(more = false) {
  const params = new URLSearchParams({ limit: "100" });
  if ($("audit-action").value) params.set("action", $("audit-action").value);
  if (more && state.auditCursor) params.set("cursor", state.auditCursor);
  const page = await api(`/api/audit?${params}`);
  const rows = page.records.map((x) => el("tr", { "data-action": x.action },
    el("td", {}, new Date(x.ts).toLocaleString()), el("td", {}, x.action),
    el("td", {}, x.via && x.via !== "-" ? `${x.user} (${x.via})` : x.user), el("td", {}, x.ip),
    el("td", {}, x.target), el("td", { class: "audit-detail" }, Object.keys(x.detail).length ? JSON.stringify(x.detail) : "")));
  if (more) $("audit").append(...rows); else $("audit").replaceChildren(...rows);
  state.auditCursor = page.next_cursor;
  $("audit-more").hidden = !page.next_cursor;
  $("audit-empty").hidden = $("audit").children.length > 0;
}

const loaders = { events: loadEvents, faces: loadFaces, analysis: loadAnalysis, clients: loadClients, agents: loadAgentKeys, accounts: loadUsers, audit: loadAudit, settings: loadTokens };

function showView(view) {
  state.view = view;
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.view === view);
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== `view-${view}`;
  if (loaders[view]) loaders[view]().catch((e) => toast(e.message, true));
}

// ------------------------------------------------------------ live updates
function onMessage(msg) {
  switch (msg.type) {
    case "distributed_detection_update": {
      const rec = msg.data;
      state.detections.set(rec.camera_id, { record: rec, at: Date.now() });
      const tile = state.tiles.get(rec.camera_id);
      if (tile) tile.draw();
      refreshStats();
      break;
    }
    case "distributed_client_change":
      refreshRegistry();
      break;
    case "event":
      window.dispatchEvent(new CustomEvent("sentri:event", { detail: msg.data })); // rules.js
      if (state.view === "events") {
        const f = { cam: $("ev-camera").value, type: $("ev-type").value };
        if ((!f.cam || f.cam === msg.data.camera_id) && (!f.type || f.type === msg.data.type)) {
          $("events").prepend(eventNode(msg.data));
          $("events-empty").hidden = true;
        }
      }
      break;
    case "analysis_update":
      if (state.view === "analysis") loadAnalysis().catch(() => {});
      break;
    case "face_update":
      break;
    case "agent_key_pending":
      state.newKeys.push(msg.data.fingerprint);
      refreshAgentKeys();
      break;
    case "agent_key_update":
      refreshAgentKeys();
      break;
    case "hello":
      $("user").textContent = msg.data.user;
      break;
    case "error":
      break;
    default:
      break;
  }
}

// Change notifications come in bursts (60 agents registering, a flood of pending keys):
// each burst costs one reload, never one per notice.
const refreshRegistry = coalesce(() => {
  loadCameras().catch(() => {});
  loadStats().catch(() => {});
  if (state.view === "clients") loadClients().catch(() => {});
}, 1000);
// Detection updates mean worker stats moved: tiles' and overview figures, every 5 s at most.
const refreshStats = coalesce(() => {
  loadCameras().catch(() => {});
  loadStats().catch(() => {});
}, 5000);
const refreshAgentKeys = coalesce(() => {
  const fps = state.newKeys;
  if (fps.length === 1) toast(`New agent key waiting for approval: ${fps[0]}`);
  else if (fps.length > 1) toast(`${fps.length} new agent keys waiting for approval`);
  state.newKeys = [];
  loadAgentKeys().catch(() => {});
}, 2000);

const live = new LiveSocket({
  onMessage,
  onFrame: (header, jpeg) => {
    const tile = state.tiles.get(header.camera_id);
    if (tile) tile.frame(header, jpeg);
  },
  onState: (s) => {
    if (s === "live") refreshRegistry(); // notices missed while reconnecting
    const b = $("conn-state");
    b.textContent = s === "live" ? "live" : s === "connecting" ? "connecting…" : "reconnecting…";
    b.className = `badge ${s === "live" ? "badge-online" : s === "connecting" ? "badge-stale" : "badge-offline"}`;
  },
});

// ----------------------------------------------------------------- wiring
$("tabs").addEventListener("click", (e) => {
  const tab = e.target.closest(".tab");
  if (tab && tab.dataset.view) showView(tab.dataset.view);
});
$("agent-key-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    const k = await api("/api/agents/keys", { method: "POST", body: { key: $("agent-key").value.trim() } });
    toast(`Key ${k.fingerprint} approved`);
    e.target.reset();
  } catch (err) {
    toast(`Key not approved: ${err.message}`, true);
  }
  loadAgentKeys().catch(() => {});
});
$("logout").addEventListener("click", async () => {
  await api("/api/auth/logout", { method: "POST" }).catch(() => {});
  window.location.assign("/login");
});
$("ev-refresh").addEventListener("click", () => loadEvents().catch((e) => toast(e.message, true)));
$("ev-camera").addEventListener("change", () => loadEvents().catch(() => {}));
$("ev-type").addEventListener("change", () => loadEvents().catch(() => {}));
$("ev-more").addEventListener("click", () => loadEvents(true).catch((e) => toast(e.message, true)));
$("cleanup").addEventListener("click", async () => {
  const res = await api("/api/distributed/cleanup", { method: "POST" });
  $("cleanup-msg").textContent = res.removed.length ? `Removed ${res.removed.join(", ")}` : "Nothing to remove";
  loadClients();
});
$("enroll-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const msg = $("enroll-msg");
  const form = new FormData();
  form.append("name", $("enroll-name").value.trim());
  for (const f of $("enroll-files").files) form.append("files", f);
  msg.className = "msg";
  msg.textContent = "Enrolling…";
  $("enroll-submit").disabled = true;
  try {
    const p = await api("/api/faces", { method: "POST", form });
    msg.className = "msg ok";
    msg.textContent = `Enrolled ${p.name}.`;
    e.target.reset();
    loadFaces();
  } catch (err) {
    msg.className = "msg err";
    msg.textContent = `Not enrolled: ${err.message}`;
  } finally {
    $("enroll-submit").disabled = false;
  }
});
$("token-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const t = await api("/api/auth/tokens", { method: "POST", body: { name: $("token-name").value } });
  const box = $("token-new");
  box.textContent = `New token (copy it now, it is not shown again): ${t.token}`;
  box.hidden = false;
  e.target.reset();
  loadTokens();
});

if (location.pathname === "/distributed") showView("live");
$("user-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const msg = $("user-msg");
  const body = {
    username: $("user-name").value.trim(), password: $("user-password").value,
    role: $("user-role").value, cameras: parsePatterns($("user-cameras").value),
  };
  try {
    await api("/api/users", { method: "POST", body });
    msg.className = "msg ok";
    msg.textContent = `Created ${body.username} (${body.role}).`;
    e.target.reset();
  } catch (err) {
    msg.className = "msg err";
    msg.textContent = `Not created: ${err.message}`;
  }
  loadUsers().catch(() => {});
});
$("audit-action").append(...AUDIT_ACTIONS.map((a) => el("option", { value: a }, a)));
$("audit-action").addEventListener("change", () => loadAudit().catch((e) => toast(e.message, true)));
$("audit-refresh").addEventListener("click", () => loadAudit().catch((e) => toast(e.message, true)));
$("audit-more").addEventListener("click", () => loadAudit(true).catch((e) => toast(e.message, true)));

// Who am I: the role decides which pages and controls show (the server enforces it).
function applyRole(me) {
  state.me = me;
  $("user").textContent = me.role === "admin" ? me.user : `${me.user} (${me.role})`;
  document.body.dataset.role = me.role;
  for (const node of document.querySelectorAll(".admin-only")) node.hidden = me.role !== "admin";
}

loadCameras().catch((e) => toast(e.message, true));
loadStats().catch(() => {});
api("/api/auth/me").then((me) => {
  applyRole(me);
  loadAgentKeys().catch(() => {});
}).catch(() => {});
// No polling: registry changes and detections arrive over the websocket (coalesced
// above).  Per-minute figures and idle workers' stats also drift with time: slowly.
setInterval(() => refreshStats(), 30000);
setInterval(() => { for (const t of state.tiles.values()) t.renderState(); }, 1000);
