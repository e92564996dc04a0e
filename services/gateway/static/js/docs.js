// API reference rendered from /openapi.json: endpoints grouped by tag, with parameters,
// request bodies and responses as readable type outlines. Works offline (no CDN).
const $ = (id) => document.getElementById(id);
const METHODS = ["get", "post", "put", "patch", "delete"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

let spec = null;
function deref(schema) {
  let s = schema || {};
  for (let i = 0; i < 16 && s.$ref; i += 1) {
    const parts = s.$ref.replace(/^#\//, "").split("/");
    s = parts.reduce((o, p) => (o ? o[p] : undefined), spec) || {};
  }
  return s;
}
const refName = (schema) => (schema && schema.$ref ? schema.$ref.split("/").pop() : null);

// One-line type: "string", "integer ≤ 100", "array of Camera", "Camera", "string | null".
function typeLabel(schema) {
  const name = refName(schema);
  if (name) return name;
  const s = schema || {};
  if (s.anyOf || s.oneOf) return (s.anyOf || s.oneOf).map(typeLabel).join(" | ");
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.type === "array") return `array of ${typeLabel(s.items)}`;
  if (s.type === "object" && s.additionalProperties && typeof s.additionalProperties === "object") {
    return `map of ${typeLabel(s.additionalProperties)}`;
  }
  let t = s.type || (s.properties ? "object" : "any");
  if (s.format) t += ` (${s.format})`;
  return t;
}

function constraints(schema) {
  const s = deref(schema);
  const all = [s, ...((s.anyOf || []).map(deref))];
  const out = [];
  for (const x of all) {
    if (x.minimum !== undefined) out.push(`≥ ${x.minimum}`);
    if (x.exclusiveMinimum !== undefined) out.push(`> ${x.exclusiveMinimum}`);
    if (x.maximum !== undefined) out.push(`≤ ${x.maximum}`);
    if (x.minLength !== undefined) out.push(`min length ${x.minLength}`);
    if (x.maxLength !== undefined) out.push(`max length ${x.maxLength}`);
    if (x.maxItems !== undefined) out.push(`max items ${x.maxItems}`);
    if (x.pattern !== undefined) out.push(`pattern ${x.pattern}`);
  }
  if (s.default !== undefined) out.push(`default ${JSON.stringify(s.default)}`);
  return out.join(", ");
}

// Fields of an object schema as a table; nested named schemas are listed once, below.
function schemaBlock(schema, seen = new Set(), depth = 0) {
  const name = refName(schema);
  const s = deref(schema);
  const wrap = el("div", { class: "docs-schema" });
  if (s.type === "array") {
    wrap.append(el("div", { class: "muted" }, `array of ${typeLabel(s.items)}`));
    if (refName(s.items) && depth < 3) wrap.append(schemaBlock(s.items, seen, depth + 1));
    return wrap;
  }
  const props = s.properties || {};
  if (!Object.keys(props).length) {
    wrap.append(el("code", {}, typeLabel(schema)));
    return wrap;
  }
  if (name) {
    if (seen.has(name)) { wrap.append(el("code", {}, name)); return wrap; }
    seen.add(name);
    wrap.append(el("div", { class: "docs-schema-name" }, name));
  }
  const required = new Set(s.required || []);
  const nested = [];
  const rows = Object.entries(props).map(([field, fs]) => {
    const d = deref(fs);
    for (const c of [fs, fs.items, ...(fs.anyOf || []), ...((fs.anyOf || []).map((x) => x.items))]) {
      const n = refName(c);
      if (n && !seen.has(n) && depth < 3) nested.push(c);
    }
    return el("tr", {},
      el("td", {}, el("code", {}, field), required.has(field) ? el("span", { class: "docs-req" }, " required") : null),
      el("td", {}, el("code", {}, typeLabel(fs))),
      el("td", {}, [d.description || fs.description || "", constraints(fs)].filter(Boolean).join(" — ")));
  });
  wrap.append(el("table", { class: "table docs-fields" },
    el("thead", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "notes"))),
    el("tbody", {}, ...rows)));
  for (const n of nested) wrap.append(schemaBlock(n, seen, depth + 1));
  return wrap;
}

function operationNode(path, method, op) {
  const id = `op-${method}-${path.replace(/[^a-zA-Z0-9]+/g, "-")}`;
  const details = el("details", { class: "card docs-op", id, "data-path": path, "data-method": method });
  details.append(el("summary", {},
    el("span", { class: `docs-method m-${method}` }, method.toUpperCase()),
    el("code", { class: "docs-path" }, path),
    el("span", { class: "muted" }, op.summary || "")));
  const node = el("div", { class: "docs-body" });
  details.append(node);
  if (op.description) node.append(el("p", { class: "docs-desc" }, op.description));
  const params = op.parameters || [];
  if (params.length) {
    node.append(el("h3", {}, "Parameters"));
    node.append(el("table", { class: "table docs-fields" },
      el("thead", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "notes"))),
      el("tbody", {}, ...params.map((p0) => {
        const p = deref(p0);
        return el("tr", {},
          el("td", {}, el("code", {}, p.name), p.required ? el("span", { class: "docs-req" }, " required") : null),
          el("td", {}, p.in),
          el("td", {}, el("code", {}, typeLabel(p.schema))),
          el("td", {}, [p.description || "", constraints(p.schema)].filter(Boolean).join(" — ")));
      }))));
  }
  if (op.requestBody) {
    const content = deref(op.requestBody).content || {};
    for (const [ctype, media] of Object.entries(content)) {
      node.append(el("h3", {}, `Request body `, el("code", {}, ctype)));
      node.append(schemaBlock(media.schema));
    }
  }
  node.append(el("h3", {}, "Responses"));
  for (const [code, r0] of Object.entries(op.responses || {})) {
    const r = deref(r0);
    const row = el("div", { class: "docs-response" },
      el("span", { class: `badge ${code.startsWith("2") ? "badge-online" : "badge-stale"}` }, code),
      el("span", {}, ` ${r.description || ""}`));
    node.append(row);
    for (const [ctype, media] of Object.entries(r.content || {})) {
      if (!media.schema || !Object.keys(media.schema).length) continue;
      node.append(el("div", { class: "muted" }, ctype));
      node.append(schemaBlock(media.schema));
    }
  }
  return details;
}

function render() {
  $("docs-title").textContent = `${spec.info.title} ${spec.info.version}`;
  $("docs-summary").textContent = spec.info.summary || spec.info.description || "";
  const groups = new Map();
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const method of METHODS) {
      if (!item[method]) continue;
      const tag = (item[method].tags || ["other"])[0];
      if (!groups.has(tag)) groups.set(tag, []);
      groups.get(tag).push(operationNode(path, method, item[method]));
    }
  }
  const root = $("docs");
  root.replaceChildren();
  for (const [tag, ops] of groups) {
    root.append(el("section", { class: "docs-group", id: `tag-${tag}` }, el("h2", {}, tag), ...ops));
    $("docs-toc").append(el("a", { href: `#tag-${tag}`, class: "btn btn-sm" }, `${tag} (${ops.length})`));
  }
  document.body.dataset.operations = String(root.querySelectorAll(".docs-op").length);
}

$("docs-filter").addEventListener("input", (e) => {
  const q = e.target.value.trim().toLowerCase();
  for (const op of document.querySelectorAll(".docs-op")) {
    op.hidden = Boolean(q) && !`${op.dataset.method} ${op.dataset.path} ${op.textContent}`.toLowerCase().includes(q);
  }
  for (const group of document.querySelectorAll(".docs-group")) {
    group.hidden = !group.querySelector(".docs-op:not([hidden])");
  }
});

fetch("/openapi.json", { credentials: "same-origin" })
  .then((resp) => {
    if (resp.status === 401) { window.location.assign("/login"); throw new Error("signed out"); }
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    return resp.json();
  })
  .then((s) => { spec = s; render(); })
  .catch((e) => {
    $("docs-error").textContent = `Could not load the API schema: ${e.message}`;
    $("docs-error").hidden = false;
  });
