// familiar serve's page: plain DOM, no framework, no build step. Everything shown comes from the
// same JSON API scripts use (/v1/… and OLMoTrace's /{index}/attribution); text from the corpus is
// always set as textContent, never parsed as HTML.
"use strict";

const PAGE = 10;
const $ = (id) => document.getElementById(id);
const state = { index: null, ids: null, nTokens: 0, offset: 0, total: 0, spans: [] };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// A JSON request; errors become readable messages (the server's own words where it sent some).
async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new Error("The server cannot be reached (" + e.message + "). Is familiar serve still running?");
  }
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    data = null;
  }
  if (!response.ok) {
    const why = data && data.error ? data.error : response.statusText;
    const hint = response.status === 503 ? " The server is busy or the query took too long; try again." : "";
    throw new Error(why + hint);
  }
  return data;
}

function setBusy(button, busy) {
  button.disabled = busy;
  button.setAttribute("aria-busy", busy ? "true" : "false");
}

async function loadIndexes() {
  const list = await api("GET", "/v1/indexes");
  const select = $("index");
  select.replaceChildren();
  for (const i of list) {
    select.append(el("option", { value: i.name }, i.name));
  }
  const info = {};
  for (const i of list) info[i.name] = i;
  const describe = () => {
    state.index = select.value;
    const i = info[select.value];
    $("index-info").textContent = i
      ? `${i.documents.toLocaleString()} documents · ${i.tokens.toLocaleString()} tokens · ${i.shards} shard${i.shards === 1 ? "" : "s"}`
      : "";
  };
  select.addEventListener("change", describe);
  describe();
}

// ---- count, next tokens, documents ----------------------------------------------------------

async function search(event) {
  event.preventDefault();
  clearError();
  const text = $("query").value;
  if (text === "") {
    showError("Type a text to count.");
    return;
  }
  const button = $("count-btn");
  setBusy(button, true);
  try {
    const c = await api("POST", `/v1/${encodeURIComponent(state.index)}/count`, { text });
    state.ids = c.token_ids;
    state.nTokens = c.token_ids.length;
    $("count").textContent = c.count.toLocaleString();
    $("count-label").textContent = c.count === 1 ? "occurrence" : "occurrences";
    const tokens = $("tokens");
    tokens.replaceChildren(...c.tokens.map((t, k) => el("span", { class: "token", title: "id " + c.token_ids[k] }, t)));
    $("count-result").hidden = false;
    await Promise.all([nextTokens(), occurrences(0)]);
  } catch (e) {
    showError(e.message);
  } finally {
    setBusy(button, false);
  }
}

async function nextTokens() {
  const n = await api("POST", `/v1/${encodeURIComponent(state.index)}/ntd`, { token_ids: state.ids, limit: 15 });
  const list = $("ntd");
  list.replaceChildren();
  const top = n.next.length ? n.next[0].count : 1;
  for (const t of n.next) {
    const pct = (100 * t.prob).toFixed(1) + "%";
    const bar = el("span", { class: "bar", role: "img", "aria-label": pct });
    bar.style.width = Math.max(0.5, (100 * t.count) / top) + "%";
    list.append(
      el("li", {}, el("span", { class: "label", title: "id " + t.token_id }, t.token === null ? "?" : t.token),
        el("span", {}, bar), el("span", { class: "value" }, `${t.count.toLocaleString()} · ${pct}`)));
  }
  $("ntd-total").textContent = n.prefix_count
    ? `(${n.support.toLocaleString()} distinct next tokens; ${n.end_of_document.toLocaleString()} at a document's end)`
    : "(the text does not occur)";
  $("ntd-box").hidden = false;
}

async function occurrences(offset) {
  const idx = encodeURIComponent(state.index);
  const page = await api("POST", `/v1/${idx}/locate`, { token_ids: state.ids, offset, limit: PAGE });
  state.offset = offset;
  state.total = page.total;
  const windows = await Promise.all(page.hits.map((h) =>
    api("POST", `/v1/${idx}/window`, { doc_id: h.doc_id, offset: h.offset_in_doc, len: state.nTokens, before: 25, after: 25 })));
  const list = $("docs");
  list.replaceChildren();
  list.start = offset + 1;
  page.hits.forEach((h, k) => {
    const w = windows[k];
    list.append(el("li", {},
      el("span", { class: "context" }, "…" + w.left, el("mark", {}, w.match), w.right + "… "),
      docButton(h.doc_id)));
  });
  $("page-info").textContent = page.total
    ? `${offset + 1}–${offset + page.hits.length} of ${page.total.toLocaleString()}`
    : "no occurrences";
  $("prev").disabled = offset === 0;
  $("next").disabled = offset + page.hits.length >= page.total;
  $("docs-box").hidden = false;
}

async function turn(delta) {
  clearError();
  try {
    await occurrences(Math.max(0, state.offset + delta));
  } catch (e) {
    showError(e.message);
  }
}

// ---- a document -----------------------------------------------------------------------------

function docButton(id) {
  return el("button", { type: "button", class: "linkish", onclick: () => openDoc(id) }, `document ${id}`);
}

async function openDoc(id) {
  clearError();
  try {
    const d = await api("GET", `/v1/${encodeURIComponent(state.index)}/docs/${id}`);
    $("doc-title").textContent = `Document ${d.doc_id}`;
    const meta = $("doc-meta");
    meta.replaceChildren();
    const rows = [["id", d.external_id], ["source", d.source === null ? "—" : d.source], ["file", d.input_file],
      ["tokens", d.token_count.toLocaleString()], ["shard", d.shard]];
    for (const [k, v] of Object.entries(d.metadata)) rows.push([k, v]);
    for (const [k, v] of rows) meta.append(el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, String(v))));
    $("doc-text").textContent = d.text;
    $("doc-view").hidden = false;
    $("doc-close").focus();
  } catch (e) {
    showError(e.message);
  }
}

// ---- tracing a model's output ---------------------------------------------------------------

async function traceOutput(event) {
  event.preventDefault();
  clearError();
  const text = $("trace-input").value;
  if (text.trim() === "") {
    showError("Paste a model's output to trace.");
    return;
  }
  const button = $("trace-btn");
  setBusy(button, true);
  try {
    const r = await api("POST", `/${encodeURIComponent(state.index)}/attribution`, {
      response: text,
      minimumSpanLength: Number($("min-len").value),
      maximumFrequency: Number($("max-freq").value),
      maximumSpanDensity: Number($("density").value),
      maximumDocumentsPerSpan: 10,
      maximumContextLength: 40,
    });
    state.spans = r.spans;
    renderTrace(text, r.spans);
    $("trace-summary").textContent = r.spans.length
      ? `${r.spans.length} span${r.spans.length === 1 ? "" : "s"} found in the corpus. Select one to see its documents.`
      : "No span of the output occurs in the corpus under these settings.";
    $("trace-summary").hidden = false;
    $("span-docs-box").hidden = true;
  } catch (e) {
    showError(e.message);
  } finally {
    setBusy(button, false);
  }
}

// The text in pieces at every span boundary (offsets in characters, as the server counts them);
// a piece inside a span is a button that lists that span's documents.
function renderTrace(text, spans) {
  const chars = Array.from(text);
  const cuts = new Set([0, chars.length]);
  for (const s of spans) {
    cuts.add(s.charLeft);
    cuts.add(s.charRight);
  }
  const points = [...cuts].sort((a, b) => a - b);
  const out = $("trace-output");
  out.replaceChildren();
  for (let k = 0; k + 1 < points.length; k++) {
    const [a, b] = [points[k], points[k + 1]];
    const piece = chars.slice(a, b).join("");
    // The longest span covering the piece.
    let best = -1;
    spans.forEach((s, i) => {
      if (s.charLeft <= a && b <= s.charRight && (best < 0 || s.length > spans[best].length)) best = i;
    });
    if (best < 0) {
      out.append(piece);
    } else {
      const s = spans[best];
      out.append(el("button", {
        type: "button", class: "span", "data-span": best, "aria-pressed": "false",
        title: `${s.count} occurrence${s.count === 1 ? "" : "s"} in the corpus`,
        onclick: () => showSpan(best),
      }, piece));
    }
  }
  out.hidden = false;
}

function showSpan(i) {
  const s = state.spans[i];
  for (const b of document.querySelectorAll("#trace-output button.span")) {
    b.setAttribute("aria-pressed", String(Number(b.dataset.span) === i));
  }
  $("span-text").textContent = s.text;
  const list = $("span-docs");
  list.replaceChildren();
  for (const d of s.documents) {
    const at = d.text.indexOf(s.text);
    const context = at < 0
      ? el("span", { class: "context" }, d.text)
      : el("span", { class: "context" }, d.text.slice(0, at), el("mark", {}, s.text), d.text.slice(at + s.text.length));
    const source = d.metadata && d.metadata.source ? ` · ${d.metadata.source}` : "";
    list.append(el("li", {}, context, " ", docButton(d.documentIndex), el("span", { class: "muted" }, source)));
  }
  if (!s.documents.length) list.append(el("li", {}, "No document listed."));
  $("span-docs-box").hidden = false;
}

window.addEventListener("DOMContentLoaded", async () => {
  $("count-form").addEventListener("submit", search);
  $("trace-form").addEventListener("submit", traceOutput);
  $("prev").addEventListener("click", () => turn(-PAGE));
  $("next").addEventListener("click", () => turn(PAGE));
  $("doc-close").addEventListener("click", () => { $("doc-view").hidden = true; });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !$("doc-view").hidden) $("doc-view").hidden = true;
  });
  try {
    await loadIndexes();
    document.body.dataset.ready = "true";
  } catch (e) {
    showError(e.message);
  }
});
