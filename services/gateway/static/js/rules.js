// Zones and lines: drawn on live tiles (click to add points, drag to edit), line
// counters on each tile, and the Rules page (all rules, webhook dead letters).
// Self-contained: finds tiles in #grid, hears rule events through "sentri:event".
import { api, cameraPath } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const RULE_EVENTS = new Set(["zone_entered", "zone_left", "loitering", "line_crossed"]);
const overlays = new Map(); // camera_id -> TileRules

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

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

const slugify = (s, fallback) => (s || "").trim().toLowerCase().replace(/[^a-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 40) || fallback;
const clamp01 = (v) => Math.min(1, Math.max(0, v));
const round = (v) => Math.round(v * 10000) / 10000;

class TileRules {
  constructor(tile) {
    this.tile = tile;
    this.id = tile.dataset.camera;
    this.view = tile.querySelector(".tile-view");
    this.canvas = tile.querySelector(".tile-canvas");
    this.rules = { zones: [], lines: [] };
    this.counts = {};
    this.draft = null; // {kind: "zone"|"line", id, points, isNew}
    this.drag = -1;
    this.active = new Map(); // zone id -> until (ms), flashed on events
    this.seen = {}; // rule event type -> count (data-rule-events, for tests and tooling)

    this.layer = svg("svg", { class: "rules-layer", preserveAspectRatio: "xMidYMid meet" });
    this.view.append(this.layer);
    this.layer.addEventListener("pointerdown", (e) => this.pointerDown(e));
    this.layer.addEventListener("pointermove", (e) => this.pointerMove(e));
    this.layer.addEventListener("pointerup", () => { this.drag = -1; });

    this.counters = el("span", { class: "rules-counters" });
    this.last = el("span", { class: "rules-last muted" });
    this.msg = el("span", { class: "rules-msg" });
    this.name = el("input", { class: "rules-name", placeholder: "name", maxlength: "40", size: "10", "aria-label": "Rule name" });
    this.classes = el("input", { class: "rules-classes", placeholder: "classes (all)", size: "10", "aria-label": "Classes" });
    this.loiter = el("input", { class: "rules-loiter", type: "number", min: "0", step: "1", placeholder: "loiter s", "aria-label": "Loiter seconds" });
    this.editBar = el("div", { class: "rules-edit", hidden: "" },
      this.name, this.classes, this.loiter,
      el("button", { class: "btn btn-sm btn-primary rules-save", onclick: () => this.save() }, "Save"),
      el("button", { class: "btn btn-sm rules-delete", onclick: () => this.remove() }, "Delete"),
      el("button", { class: "btn btn-sm rules-cancel", onclick: () => this.cancel() }, "Cancel"));
    this.bar = el("div", { class: "rules-bar" },
      el("button", { class: "btn btn-sm rules-add-zone", title: "Draw a zone: click to add corners, drag to move them", onclick: () => this.start("zone") }, "+ Zone"),
      el("button", { class: "btn btn-sm rules-add-line", title: "Draw a line: click its two ends (A is on the left walking from the first to the second)", onclick: () => this.start("line") }, "+ Line"),
      this.counters, this.last, this.editBar, this.msg);
    tile.querySelector(".tile-stats").after(this.bar);
    this.load();
  }

  async load() {
    try {
      this.rules = await api(`${cameraPath(this.id)}/rules`);
      await this.loadCounts();
    } catch (e) {
      this.msg.textContent = `rules: ${e.message}`;
    }
    this.render();
  }

  async loadCounts() {
    if (!this.rules.lines.length) { this.counts = {}; this.renderCounters(); return; }
    const res = await api(`${cameraPath(this.id)}/counts`);
    this.counts = res.lines;
    this.renderCounters();
  }

  renderCounters() {
    const parts = Object.entries(this.counts).map(([id, c]) =>
      `${c.name}: ${c.a_label}→${c.b_label} ${c.a_to_b} · ${c.b_label}→${c.a_label} ${c.b_to_a}`);
    this.counters.textContent = parts.join(" | ");
    this.tile.dataset.lineCounts = JSON.stringify(Object.fromEntries(
      Object.entries(this.counts).map(([id, c]) => [id, { a_to_b: c.a_to_b, b_to_a: c.b_to_a }])));
  }

  size() {
    const w = this.canvas.width || 640, h = this.canvas.height || 480;
    return [w, h];
  }

  toNorm(e) {
    const pt = this.layer.createSVGPoint();
    pt.x = e.clientX; pt.y = e.clientY;
    const p = pt.matrixTransform(this.layer.getScreenCTM().inverse());
    const [w, h] = this.size();
    return [round(clamp01(p.x / w)), round(clamp01(p.y / h))];
  }

  render() {
    const [w, h] = this.size();
    this.layer.setAttribute("viewBox", `0 0 ${w} ${h}`);
    this.layer.classList.toggle("editing", Boolean(this.draft));
    const sw = Math.max(2, w / 300);
    const font = Math.max(12, w / 40);
    const nodes = [];
    const px = (pts) => pts.map(([x, y]) => `${x * w},${y * h}`).join(" ");
    const now = Date.now();
    for (const z of this.rules.zones) {
      if (this.draft && this.draft.id === z.id && this.draft.kind === "zone") continue;
      const on = (this.active.get(z.id) || 0) > now;
      const poly = svg("polygon", { points: px(z.points), class: `rules-zone hit${on ? " active" : ""}`, "data-zone": z.id, "stroke-width": sw });
      poly.addEventListener("click", () => this.edit("zone", z));
      const [x, y] = z.points[0];
      const label = svg("text", { x: x * w + 4, y: y * h + font, class: "rules-label", "font-size": font });
      label.textContent = z.name || z.id;
      nodes.push(poly, label);
    }
    for (const ln of this.rules.lines) {
      if (this.draft && this.draft.id === ln.id && this.draft.kind === "line") continue;
      nodes.push(...this.lineNodes(ln, w, h, sw, font, false));
    }
    if (this.draft) {
      const d = this.draft;
      if (d.kind === "zone") {
        nodes.push(svg(d.points.length >= 3 ? "polygon" : "polyline", { points: px(d.points), class: "rules-draft", "stroke-width": sw }));
      } else if (d.points.length === 2) {
        nodes.push(...this.lineNodes({ ...d, name: this.name.value || d.id, a_label: d.a_label || "A", b_label: d.b_label || "B" }, w, h, sw, font, true));
      }
      d.points.forEach(([x, y], i) => {
        nodes.push(svg("circle", { cx: x * w, cy: y * h, r: sw * 3, class: "rules-vertex hit", "data-index": i }));
      });
    }
    this.layer.replaceChildren(...nodes);
  }

  lineNodes(ln, w, h, sw, font, draft) {
    const [[x1, y1], [x2, y2]] = ln.points;
    const line = svg("line", { x1: x1 * w, y1: y1 * h, x2: x2 * w, y2: y2 * h, class: `rules-line hit${draft ? " draft" : ""}`, "data-line": ln.id, "stroke-width": sw * 1.5 });
    if (!draft) line.addEventListener("click", () => this.edit("line", ln));
    // Side labels: A on the left of first -> second point (screen, y down), B on the right.
    const mx = (x1 + x2) / 2 * w, my = (y1 + y2) / 2 * h;
    const dx = (x2 - x1) * w, dy = (y2 - y1) * h;
    const len = Math.hypot(dx, dy) || 1;
    const nx = dy / len, ny = -dx / len; // left normal on screen
    const off = font * 1.2;
    const a = svg("text", { x: mx + nx * off, y: my + ny * off, class: "rules-side", "font-size": font, "text-anchor": "middle" });
    a.textContent = ln.a_label || "A";
    const b = svg("text", { x: mx - nx * off, y: my - ny * off, class: "rules-side", "font-size": font, "text-anchor": "middle" });
    b.textContent = ln.b_label || "B";
    const out = [line, a, b];
    const c = this.counts[ln.id];
    if (c && !draft) {
      const t = svg("text", { x: x1 * w + 4, y: y1 * h - 4, class: "rules-label rules-count", "font-size": font, "data-line": ln.id });
      t.textContent = `${ln.name || ln.id} ${c.a_to_b}↦ ${c.b_to_a}↤`;
      out.push(t);
    }
    return out;
  }

  start(kind) {
    this.draft = { kind, id: null, points: [], isNew: true };
    this.name.value = "";
    this.classes.value = "";
    this.loiter.value = "";
    this.loiter.hidden = kind !== "zone";
    this.editBar.hidden = false;
    this.tile.querySelector(".rules-delete").hidden = true;
    this.msg.textContent = kind === "zone" ? "click to add corners" : "click the two ends";
    this.render();
  }

  edit(kind, item) {
    if (this.draft) return;
    this.draft = { kind, id: item.id, points: item.points.map((p) => [...p]), isNew: false, a_label: item.a_label, b_label: item.b_label, item };
    this.name.value = item.name || item.id;
    this.classes.value = (item.classes || []).join(", ");
    this.loiter.value = item.loiter_s ? String(item.loiter_s) : "";
    this.loiter.hidden = kind !== "zone";
    this.editBar.hidden = false;
    this.tile.querySelector(".rules-delete").hidden = false;
    this.msg.textContent = "drag the points";
    this.render();
  }

  cancel() {
    this.draft = null;
    this.editBar.hidden = true;
    this.msg.textContent = "";
    this.render();
  }

  pointerDown(e) {
    if (!this.draft) return;
    e.preventDefault();
    const idx = e.target.dataset ? Number(e.target.dataset.index) : NaN;
    if (e.target.classList.contains("rules-vertex") && !Number.isNaN(idx)) {
      this.drag = idx;
      this.layer.setPointerCapture(e.pointerId);
      return;
    }
    const d = this.draft;
    if (d.kind === "line" && d.points.length >= 2) return;
    d.points.push(this.toNorm(e));
    this.render();
  }

  pointerMove(e) {
    if (!this.draft || this.drag < 0) return;
    this.draft.points[this.drag] = this.toNorm(e);
    this.render();
  }

  async save() {
    const d = this.draft;
    if (!d) return;
    const kinds = d.kind === "zone" ? "zones" : "lines";
    const taken = new Set(this.rules[kinds].map((x) => x.id));
    let id = d.id;
    if (!id) {
      id = slugify(this.name.value, `${d.kind}${taken.size + 1}`);
      for (let i = 2; taken.has(id); i += 1) id = `${slugify(this.name.value, d.kind)}-${i}`;
    }
    const body = { ...(d.item || {}), id, name: this.name.value.trim(), points: d.points,
      classes: this.classes.value.split(",").map((s) => s.trim()).filter(Boolean) };
    if (d.kind === "zone") body.loiter_s = Number(this.loiter.value || 0);
    try {
      this.rules = await api(`${cameraPath(this.id)}/${kinds}`, { method: "POST", body });
      this.msg.textContent = `${d.kind} saved`;
      this.draft = null;
      this.editBar.hidden = true;
      await this.loadCounts();
    } catch (e) {
      this.msg.textContent = `not saved: ${e.message}`;
    }
    this.render();
  }

  async remove() {
    const d = this.draft;
    if (!d || d.isNew) return;
    try {
      this.rules = await api(`${cameraPath(this.id)}/${d.kind === "zone" ? "zones" : "lines"}/${encodeURIComponent(d.id)}`, { method: "DELETE" });
      this.draft = null;
      this.editBar.hidden = true;
      this.msg.textContent = `${d.kind} deleted`;
      await this.loadCounts();
    } catch (e) {
      this.msg.textContent = `not deleted: ${e.message}`;
    }
    this.render();
  }

  onEvent(ev) {
    const who = `${ev.class || "object"}${ev.track_id !== undefined ? ` #${ev.track_id}` : ""}`;
    const text = {
      zone_entered: `${who} entered ${ev.zone_name || ev.zone}`,
      zone_left: `${who} left ${ev.zone_name || ev.zone} after ${Math.round(ev.dwell_s || 0)} s`,
      loitering: `${who} loitering in ${ev.zone_name || ev.zone}`,
      line_crossed: `${who} crossed ${ev.line_name || ev.line} (${ev.from_side}→${ev.to_side})`,
    }[ev.type];
    this.last.textContent = text;
    this.tile.dataset.lastRuleEvent = ev.type;
    this.seen[ev.type] = (this.seen[ev.type] || 0) + 1;
    this.tile.dataset.ruleEvents = JSON.stringify(this.seen);
    if (ev.zone && ev.type !== "zone_left") this.active.set(ev.zone, Date.now() + 2000);
    if (ev.type === "line_crossed") this.loadCounts().then(() => this.render()).catch(() => {});
    else this.render();
  }
}

// ---------------------------------------------------------------- tiles
function attach(node) {
  if (!(node instanceof HTMLElement) || !node.classList.contains("tile") || !node.dataset.camera) return;
  if (overlays.has(node.dataset.camera)) return;
  overlays.set(node.dataset.camera, new TileRules(node));
}

const grid = document.getElementById("grid");
if (grid) {
  for (const n of grid.children) attach(n);
  new MutationObserver((muts) => {
    for (const m of muts) {
      for (const n of m.addedNodes) attach(n);
      for (const n of m.removedNodes) if (n instanceof HTMLElement && n.dataset.camera) overlays.delete(n.dataset.camera);
    }
  }).observe(grid, { childList: true });
}

window.addEventListener("sentri:event", (e) => {
  const ev = e.detail || {};
  if (!RULE_EVENTS.has(ev.type)) return;
  const o = overlays.get(ev.camera_id);
  if (o) o.onEvent(ev);
});

// Keep the overlay in step with the frame size, and counters fresh.
setInterval(() => { for (const o of overlays.values()) if (!o.draft || o.drag < 0) o.render(); }, 1000);
setInterval(() => { for (const o of overlays.values()) o.loadCounts().catch(() => {}); }, 15000);

// ---------------------------------------------------------------- Rules page
async function loadRulesPage() {
  const view = document.getElementById("view-rules");
  if (!view) return;
  const [all, dead] = await Promise.all([
    api("/api/rules"),
    api("/api/notifier/deadletters").catch(() => null),
  ]);
  const cards = [];
  cards.push(el("p", { class: "muted" }, "Draw zones and lines on a live tile with “+ Zone” and “+ Line” (click to add points, drag to move them, click a shape to edit it). Rules apply without a restart. Webhooks can be added below or in the config file; MQTT is set in the config file's notifier section (see docs/rules.md)."));
  const cams = Object.keys(all).sort();
  for (const cam of cams) {
    const r = all[cam];
    const rows = [
      ...r.zones.map((z) => el("tr", {}, el("td", {}, "zone"), el("td", {}, z.name || z.id), el("td", {}, (z.classes || []).join(", ") || "all"),
        el("td", {}, z.loiter_s ? `loiter ${z.loiter_s} s` : ""), el("td", {}, `${z.points.length} points`),
        el("td", {}, el("button", { class: "btn btn-sm", onclick: () => del(cam, "zones", z.id) }, "Delete")))),
      ...r.lines.map((l) => el("tr", {}, el("td", {}, "line"), el("td", {}, l.name || l.id), el("td", {}, (l.classes || []).join(", ") || "all"),
        el("td", {}, `${l.a_label} / ${l.b_label}`), el("td", { class: "rules-page-count", "data-line": l.id }, ""),
        el("td", {}, el("button", { class: "btn btn-sm", onclick: () => del(cam, "lines", l.id) }, "Delete")))),
    ];
    const card = el("div", { class: "card rules-card", "data-camera": cam }, el("h2", {}, cam),
      rows.length ? el("table", { class: "table" }, el("tbody", {}, ...rows)) : el("p", { class: "muted" }, "No zones or lines."));
    cards.push(card);
    if (r.lines.length) {
      api(`${cameraPath(cam)}/counts`).then((c) => {
        for (const td of card.querySelectorAll(".rules-page-count")) {
          const n = c.lines[td.dataset.line];
          if (n) td.textContent = `24 h: ${n.a_to_b} ${n.a_label}→${n.b_label}, ${n.b_to_a} ${n.b_label}→${n.a_label}`;
        }
      }).catch(() => {});
    }
  }
  if (!cams.length) cards.push(el("div", { class: "empty" }, el("h2", {}, "No rules yet")));
  const deadCard = el("div", { class: "card", id: "dead-letters" }, el("h2", {}, "Webhook dead letters"));
  if (dead === null) {
    deadCard.append(el("p", { class: "muted" }, "Only administrators can see dead letters."));
  } else if (!dead.length) {
    deadCard.append(el("p", { class: "muted" }, "None: every webhook delivery succeeded or is still being retried."));
  } else {
    deadCard.append(
      el("table", { class: "table" }, el("thead", {}, el("tr", {}, ...["When", "Webhook", "Event", "Camera", "Attempts", "Error", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...dead.map((d) => el("tr", {}, el("td", {}, new Date(d.ts).toLocaleString()), el("td", {}, d.webhook),
          el("td", {}, `${d.type || ""} ${d.event_id || ""}`), el("td", {}, d.camera_id || ""), el("td", {}, String(d.attempts)), el("td", {}, d.error),
          el("td", {}, el("button", { class: "btn btn-sm dead-retry", onclick: async () => { await api(`/api/notifier/deadletters/${encodeURIComponent(d.id)}/retry`, { method: "POST" }); loadRulesPage(); } }, "Retry")))))),
      el("button", { class: "btn", onclick: async () => { await api("/api/notifier/deadletters", { method: "DELETE" }); loadRulesPage(); } }, "Clear"));
  }
  cards.push(deadCard);
  if (dead !== null) cards.push(await webhooksCard());
  view.replaceChildren(...cards);
}

const list = (v) => v.split(",").map((x) => x.trim()).filter(Boolean);

async function webhooksCard() {
  const data = await api("/api/notifier/webhooks");
  const card = el("div", { class: "card", id: "webhooks" }, el("h2", {}, "Webhooks"),
    el("p", { class: "muted" }, "Signed JSON POSTs (X-Sentri-Signature: HMAC-SHA256 over timestamp.body; see docs/rules.md). Applied by the notifier without a restart."));
  const rows = data.webhooks.map((w) => el("tr", { "data-webhook": w.name }, el("td", {}, w.name), el("td", {}, w.url),
    el("td", {}, Object.entries(w.filter).filter(([, v]) => v.length).map(([k, v]) => `${k}: ${k === "schedule" ? v.map((x) => `${x.days.join("/")} ${x.start}-${x.end}`).join(", ") : v.join(", ")}`).join("; ") || "every event"),
    el("td", {}, el("button", { class: "btn btn-sm", onclick: async () => { await api(`/api/notifier/webhooks/${encodeURIComponent(w.name)}`, { method: "DELETE" }); loadRulesPage(); } }, "Delete"))));
  for (const name of data.configured) rows.push(el("tr", {}, el("td", {}, name), el("td", { class: "muted" }, "from the config file"), el("td", {}), el("td", {})));
  if (rows.length) card.append(el("table", { class: "table" }, el("tbody", {}, ...rows)));
  const f = (name, attrs = {}) => el("input", { name, ...attrs });
  const msg = el("span", { class: "msg" });
  const form = el("form", { class: "form-row webhook-form" },
    el("label", {}, "Name ", f("name", { required: "", pattern: "[A-Za-z0-9_-]{1,40}", size: "10" })),
    el("label", {}, "URL ", f("url", { required: "", type: "url", size: "28", placeholder: "https://…" })),
    el("label", {}, "Secret ", f("secret", { type: "password", minlength: "16", size: "14", placeholder: "≥16 chars; empty keeps" })),
    el("label", {}, "Types ", f("types", { size: "14", placeholder: "all" })),
    el("label", {}, "Cameras ", f("cameras", { size: "12", placeholder: "all" })),
    el("label", {}, "Classes ", f("classes", { size: "8", placeholder: "all" })),
    el("label", {}, "Zones ", f("zones", { size: "8", placeholder: "all" })),
    el("label", {}, "Lines ", f("lines", { size: "8", placeholder: "all" })),
    el("label", {}, "From ", f("start", { type: "time" })),
    el("label", {}, "to ", f("end", { type: "time" })),
    el("button", { class: "btn btn-primary", type: "submit" }, "Save webhook"), msg);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const v = Object.fromEntries(new FormData(form).entries());
    const filter = { types: list(v.types), cameras: list(v.cameras), classes: list(v.classes), zones: list(v.zones), lines: list(v.lines) };
    if (v.start || v.end) filter.schedule = [{ start: v.start || "00:00", end: v.end || "24:00" }];
    try {
      await api("/api/notifier/webhooks", { method: "POST", body: { name: v.name, url: v.url, secret: v.secret, filter } });
      loadRulesPage();
    } catch (err) {
      msg.className = "msg err";
      msg.textContent = `Not saved: ${err.message}`;
    }
  });
  card.append(form);
  return card;
}

async function del(cam, kinds, id) {
  await api(`${cameraPath(cam)}/${kinds}/${encodeURIComponent(id)}`, { method: "DELETE" });
  const o = overlays.get(cam);
  if (o) o.load();
  loadRulesPage();
}

const tab = document.querySelector('.tab[data-view="rules"]');
if (tab) tab.addEventListener("click", () => loadRulesPage().catch(() => {}));
