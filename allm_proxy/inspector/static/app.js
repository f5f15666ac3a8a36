// The allm-proxy inspector. Builds every node with createElement and textContent: prompts are user text,
// and nothing shown here is ever parsed as HTML. Talks only to the server that served it.
"use strict";

(function () {
  const token = new URLSearchParams(location.search).get("access_token");
  const MAX_SHOWN = 1000;
  const state = { entries: [], selected: null, info: null, cassettes: null };

  function api(path) {
    if (!token) return path;
    return path + (path.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token);
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  async function getJSON(path) {
    const response = await fetch(api(path), { headers: { accept: "application/json" } });
    const body = await response.json();
    if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
    return body;
  }

  // -- where an entry's bytes are ---------------------------------------------------------------

  function blobUrl(entry, kind, k) {
    if (entry.cassette_interaction) {
      const q = new URLSearchParams({ cassette: entry.cassette, interaction: entry.index, kind: kind, index: k });
      return api("/allm/cassettes/blob?" + q.toString());
    }
    return api("/allm/requests/" + encodeURIComponent(entry.id) + "/" + kind + "/" + k);
  }

  function hasBytes(info) {
    return Boolean(info && info.sha256 && !info.bytes_dropped);
  }

  function prompt(entry) {
    const value = entry.params && entry.params.prompt;
    return typeof value === "string" ? value : "";
  }

  function label(info) {
    const parts = [];
    if (info.part) parts.push(info.part);
    if (info.width && info.height) parts.push(info.width + "\u00d7" + info.height);
    if (info.mime_type) parts.push(info.mime_type);
    if (info.bytes !== null && info.bytes !== undefined) parts.push(info.bytes + " bytes");
    if (info.sha256) parts.push("sha256:" + info.sha256.slice(0, 12));
    if (info.bytes_dropped) parts.push("(bytes no longer kept)");
    return parts.join(" \u00b7 ");
  }

  // -- the list -------------------------------------------------------------------------------

  function thumbs(entry) {
    const box = el("span", { class: "thumbs" });
    const add = (kind, info, k) => {
      if (hasBytes(info)) {
        const isMask = info.part === "mask";
        box.append(el("img", { class: "thumb" + (isMask ? " mask" : ""), src: blobUrl(entry, kind, k),
                               alt: (isMask ? "mask " : kind === "inputs" ? "input " : "output ") + k,
                               title: label(info), loading: "lazy" }));
      } else if (info.bytes_dropped) {
        box.append(el("span", { class: "gone", text: "(dropped)" }));
      }
    };
    (entry.inputs || []).forEach((info, k) => add("inputs", info, k));
    if ((entry.inputs || []).length && (entry.images || []).length) box.append(el("span", { class: "thumb-sep", text: "\u2192" }));
    (entry.images || []).forEach((info, k) => add("images", info, k));
    return box;
  }

  function shortTime(iso) {
    if (!iso) return "";
    const when = new Date(iso);
    return isNaN(when) ? String(iso) : when.toLocaleTimeString([], { hour12: false });
  }

  function row(entry) {
    const bad = (entry.status || 0) >= 400;
    const item = el("li", { class: "entry" + (bad ? " error" : ""), "data-id": entry.id, tabindex: 0,
                            onclick: () => select(entry, item),
                            onkeydown: (e) => { if (e.key === "Enter") select(entry, item); } },
      el("span", { class: "time", text: entry.cassette_interaction ? "#" + entry.index : shortTime(entry.time) }),
      el("span", { class: "op", text: entry.operation || entry.path || "" }),
      el("span", { class: "model", text: entry.model || "(default model)" }),
      thumbs(entry),
      el("span", { class: "meta" },
        el("span", { class: "provider", text: entry.provider || "-" }),
        el("span", { class: "status" + (bad ? " bad" : ""), text: String(entry.status ?? "") }),
        entry.ms !== undefined ? el("span", { class: "ms", text: entry.ms + " ms" }) : null,
        el("span", { class: "source", text: entry.source || "proxy" }),
        entry.session && entry.session !== "default" ? el("span", { class: "session", text: "session " + entry.session }) : null),
      el("span", { class: "prompt", text: prompt(entry), title: prompt(entry) }));
    if (state.selected && state.selected.id === entry.id) item.classList.add("selected");
    return item;
  }

  function filtered() {
    const session = document.getElementById("f-session").value.trim();
    const operation = document.getElementById("f-operation").value;
    const errorsOnly = document.getElementById("f-errors").checked;
    const text = document.getElementById("f-prompt").value.trim().toLowerCase();
    return state.entries.filter((e) =>
      (!session || e.session === session) && (!operation || e.operation === operation) &&
      (!errorsOnly || (e.status || 0) >= 400) && (!text || prompt(e).toLowerCase().includes(text)));
  }

  function renderTraffic() {
    const list = document.getElementById("entries");
    const shown = filtered().slice().reverse();  // newest first
    list.replaceChildren(...shown.map(row));
    const note = document.getElementById("traffic-note");
    if (!state.info || !state.info.journal) note.textContent = "This server keeps no journal (--no-journal, or allm-proxy inspect).";
    else if (!state.entries.length) note.textContent = "No requests yet. Point a client at " + location.origin + "/v1 and they appear here.";
    else note.textContent = shown.length + " of " + state.entries.length + " requests";
    const sessions = [...new Set(state.entries.map((e) => e.session).filter(Boolean))];
    document.getElementById("sessions").replaceChildren(...sessions.map((s) => el("option", { value: s })));
  }

  function addEntry(entry) {
    const at = state.entries.findIndex((e) => e.id === entry.id);
    if (at >= 0) state.entries[at] = entry;
    else state.entries.push(entry);
    if (state.entries.length > MAX_SHOWN) state.entries.splice(0, state.entries.length - MAX_SHOWN);
  }

  // -- the detail -----------------------------------------------------------------------------

  function section(title, ...content) {
    return [el("h3", { text: title }), ...content];
  }

  function pre(data, cls) {
    return el("pre", { class: cls || null, text: typeof data === "string" ? data : JSON.stringify(data, null, 2) });
  }

  function figure(entry, kind, k, info) {
    if (!hasBytes(info)) return el("figure", {}, el("figcaption", { text: label(info) || "(no bytes)" }));
    return el("figure", {}, el("img", { class: "full", src: blobUrl(entry, kind, k), alt: kind + " " + k }),
      el("figcaption", { text: label(info) }));
  }

  function maskOverlay(entry) {
    const inputs = entry.inputs || [];
    const mask = inputs.findIndex((i) => i.part === "mask");
    const base = inputs.findIndex((i) => i.part !== "mask");
    if (mask < 0 || base < 0 || !hasBytes(inputs[mask]) || !hasBytes(inputs[base])) return null;
    return el("figure", { class: "mask-figure" },
      el("div", { class: "overlay" },
        el("img", { src: blobUrl(entry, "inputs", base), alt: "input under the mask" }),
        el("img", { class: "mask-layer", src: blobUrl(entry, "inputs", mask), alt: "mask" })),
      el("figcaption", { text: "the mask laid over input " + base + " (transparent: the area to edit)" }));
  }

  function facts(pairs) {
    const list = el("dl", { class: "facts" });
    for (const [key, value] of pairs) {
      if (value === null || value === undefined || value === "") continue;
      list.append(el("dt", { text: key }), el("dd", { text: String(value) }));
    }
    return list;
  }

  function upstreamTable(calls) {
    return el("table", { class: "upstream" },
      el("thead", {}, el("tr", {}, ...["method", "url", "status", "ms", "answered by"].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...calls.map((c) => el("tr", {},
        el("td", { text: c.method }), el("td", { text: c.url }),
        el("td", { text: c.status ?? (c.error || "") }), el("td", { text: c.ms ?? "" }),
        el("td", { text: c.source || "" })))));
  }

  function missTable(miss) {
    const ours = miss.request || {};
    const near = miss.nearest;
    const rows = [];
    const line = (name, a, b) => {
      const differs = near !== null && JSON.stringify(a) !== JSON.stringify(b);
      const show = (v) => v === undefined || v === null ? "\u2014" : typeof v === "string" ? v : JSON.stringify(v);
      rows.push(el("tr", { class: differs ? "differs" : null },
        el("th", { class: differs ? "differs" : null, text: name }),
        el("td", { class: differs ? "differs" : null, text: show(a) }),
        el("td", { class: differs ? "differs" : null, text: near ? show(b) : "" })));
    };
    const other = near || {};
    line("method", ours.method, other.method);
    line("uri", ours.uri, other.uri);
    line("model", ours.model, other.model);
    line("prompt", ours.prompt, other.prompt);
    const fields = new Set([...Object.keys(ours.fields || {}), ...Object.keys(other.fields || {})]);
    fields.delete("model"); fields.delete("prompt");
    for (const name of [...fields].sort()) line(name, (ours.fields || {})[name], (other.fields || {})[name]);
    const files = (f) => (f || []).map((x) => x.part + " " + x.bytes + " bytes sha256:" + String(x.sha256).slice(0, 12));
    line("files", files(ours.files), files(other.files));
    const table = el("table", { class: "miss" },
      el("thead", {}, el("tr", {}, el("th", { text: "" }), el("th", { text: "this request" }),
        el("th", { text: near ? "nearest recording #" + near.index : "no recording comes near" }))),
      el("tbody", {}, ...rows));
    const differs = el("ul", { class: "differs-list" },
      ...(miss.differs || []).map((d) => el("li", {}, el("strong", { text: d.matcher }), d.why ? " \u2014 " + d.why : "")));
    const where = el("p", { class: "note", text: "cassette " + miss.cassette + " \u00b7 record mode " + miss.record_mode +
      " \u00b7 session " + miss.session + (miss.replayed_all ? " \u00b7 recorded, but every recording was replayed already" : "") });
    return [where, table, (miss.differs || []).length ? el("p", { text: "Matchers that differ:" }) : null, differs];
  }

  function renderDetail(entry) {
    const pane = document.getElementById("detail-pane");
    const bad = (entry.status || 0) >= 400;
    const parts = [
      el("h2", {}, (entry.operation || entry.path || "") + " \u00b7 " + (entry.model || "(default model)") + " \u2192 ",
        el("span", { class: "status" + (bad ? " bad" : ""), text: String(entry.status ?? "") })),
      facts([["id", entry.id], ["x-request-id", entry.upstream_request_id], ["time", entry.time],
        ["request", (entry.method || "") + " " + (entry.path || "")], ["provider", entry.provider],
        ["provider model", entry.provider_model], ["source", entry.source], ["ms", entry.ms],
        ["session", entry.session], ["cassette", entry.cassette], ["prompt", prompt(entry)]]),
    ];
    if (entry.error) parts.push(...section("Error", pre(entry.error, "error-box")));
    if (entry.miss) parts.push(...section("Cassette miss: this request and the nearest recording", ...missTable(entry.miss)));
    const inputs = entry.inputs || [];
    if (inputs.length) {
      const overlay = maskOverlay(entry);
      parts.push(...section("Inputs", el("div", { class: "images" }, ...inputs.map((info, k) => figure(entry, "inputs", k, info)))));
      if (overlay) parts.push(...section("Mask over input", overlay));
    }
    const images = entry.images || [];
    parts.push(...section("Images", images.length
      ? el("div", { class: "images" }, ...images.map((info, k) => figure(entry, "images", k, info)))
      : el("p", { class: "note", text: "No images in this answer." })));
    parts.push(...section("Params", pre(entry.params || {})));
    if (entry.usage) parts.push(...section("Usage", pre(entry.usage)));
    if ((entry.upstream || []).length) parts.push(...section("Upstream calls", upstreamTable(entry.upstream)));
    pane.replaceChildren(...parts.filter(Boolean));
  }

  function select(entry, item) {
    state.selected = entry;
    document.querySelectorAll(".entry.selected").forEach((n) => n.classList.remove("selected"));
    if (item) item.classList.add("selected");
    renderDetail(entry);
  }

  // -- cassettes ------------------------------------------------------------------------------

  async function loadCassettes() {
    const note = document.getElementById("cassettes-note");
    note.textContent = "Reading cassettes\u2026";
    try {
      const body = await getJSON("/allm/cassettes");
      state.cassettes = body.data;
    } catch (err) {
      note.textContent = "Could not read the cassettes: " + err.message;
      return;
    }
    const list = document.getElementById("cassette-list");
    list.replaceChildren(...state.cassettes.map((c) => {
      for (const entry of c.interactions) entry.cassette_interaction = true;
      return el("div", { class: "cassette" },
        el("h3", { text: c.name + " (" + c.interactions.length + " interaction" + (c.interactions.length === 1 ? "" : "s") + ")" }),
        c.error ? el("p", { class: "note", text: "does not parse: " + c.error }) : null,
        el("ol", { class: "entries" }, ...c.interactions.map(row)));
    }));
    note.textContent = state.cassettes.length ? "" : "No cassettes yet.";
  }

  function show(tab) {
    for (const button of document.querySelectorAll(".tab")) button.classList.toggle("active", button.dataset.tab === tab);
    document.getElementById("traffic").hidden = tab !== "traffic";
    document.getElementById("cassettes").hidden = tab !== "cassettes";
    if (tab === "cassettes") loadCassettes();
  }

  // -- live feed ------------------------------------------------------------------------------

  function connect() {
    const live = document.getElementById("live");
    const source = new EventSource(api("/allm/requests/stream"));
    source.addEventListener("open", () => { live.textContent = "live"; live.className = "live on"; });
    source.addEventListener("error", () => { live.textContent = "reconnecting"; live.className = "live off"; });
    source.addEventListener("entry", (event) => {
      addEntry(JSON.parse(event.data));
      renderTraffic();
    });
    return source;
  }

  async function start() {
    for (const button of document.querySelectorAll(".tab")) button.addEventListener("click", () => show(button.dataset.tab));
    for (const id of ["f-session", "f-operation", "f-errors", "f-prompt"]) {
      document.getElementById(id).addEventListener("input", renderTraffic);
    }
    document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
    state.info = await getJSON("/allm/info");
    document.getElementById("tab-cassettes").hidden = !state.info.cassettes;
    document.getElementById("clear").hidden = !state.info.journal;
    document.getElementById("clear").addEventListener("click", async () => {
      const session = document.getElementById("f-session").value.trim();
      const query = session ? "?session=" + encodeURIComponent(session) : "";
      await fetch(api("/allm/requests" + query), { method: "DELETE" });
      state.entries = session ? state.entries.filter((e) => e.session !== session) : [];
      renderTraffic();
    });
    if (state.info.journal) {
      connect();  // first, so nothing appended while the list loads is missed (entries merge by id)
      const body = await getJSON("/allm/requests");
      for (const entry of body.data) addEntry(entry);
      state.entries.sort((a, b) => String(a.time).localeCompare(String(b.time)));
    } else {
      const live = document.getElementById("live");
      live.textContent = state.info.mode === "inspect" ? "cassettes only (allm-proxy inspect)" : "no journal";
      live.className = "live";
      document.getElementById("tab-traffic").hidden = state.info.mode === "inspect";
      if (state.info.cassettes) show("cassettes");
    }
    renderTraffic();
  }

  start().catch((err) => {
    document.getElementById("traffic-note").textContent = "The inspector could not start: " + err.message;
  });
})();
