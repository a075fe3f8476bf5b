// inspectnet inspection station: upload photos, show a verdict card per photo, export CSV.
// Plain browser JavaScript, no build step and no third-party code, so it runs offline.
"use strict";

const TOKEN_KEY = "inspectnet.token";
const CONCURRENCY = 2;      // parallel requests: enough to overlap upload and inference
const MAX_RETRIES = 20;     // on 503 (queue full / warming up), honouring Retry-After
const IMAGE_EXT = /\.(png|jpe?g|bmp|tiff?|webp|gif)$/i;

const state = { model: null, items: [], queue: [], active: 0 };
const $ = (sel) => document.querySelector(sel);

function authHeaders() {
  const t = $("#token-input").value.trim();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

function showMessage(text) {
  const m = $("#message");
  m.textContent = text || "";
  m.hidden = !text;
}

async function loadModel() {
  try {
    const r = await fetch("v1/model", { headers: authHeaders() });
    const body = await r.json().catch(() => ({}));
    if (r.status === 401) {
      $("#model-line").textContent = "This server needs an API token: enter it below.";
      return;
    }
    if (!r.ok) throw new Error(body.detail || r.statusText);
    state.model = body;
    const c = body.card;
    $("#model-line").textContent =
      `${c.architecture} · ${c.classes.join(" / ")} · decides: ${body.decision}` +
      ` · review within ±${body.review_margin} · ${body.engine} engine`;
    showMessage("");
  } catch (e) {
    $("#model-line").textContent = `Cannot reach the model: ${e.message}`;
  }
}

function positiveClass() {
  return state.model ? state.model.card.positive_class : "damaged";
}

// ------------------------------------------------------------------ requests

async function postImage(file, cam) {
  const form = new FormData();
  form.append("files", file, file.name);
  for (let attempt = 0; ; attempt++) {
    const r = await fetch(`v1/predict${cam ? "?cam=true" : ""}`, { method: "POST", body: form, headers: authHeaders() });
    const body = await r.json().catch(() => ({ detail: `HTTP ${r.status}` }));
    if (r.status === 503 && attempt < MAX_RETRIES) {
      const wait = Number(r.headers.get("Retry-After")) || 1;
      await new Promise((res) => setTimeout(res, wait * 1000));
      continue;
    }
    if (!r.ok) throw new Error(body.detail || `HTTP ${r.status}`);
    return body.results[0];
  }
}

function pump() {
  while (state.active < CONCURRENCY && state.queue.length) {
    const item = state.queue.shift();
    state.active++;
    postImage(item.file, false)
      .then((res) => { item.result = res; })
      .catch((e) => { item.error = e.message; })
      .finally(() => {
        state.active--;
        render(item);
        summarize();
        pump();
      });
  }
}

// ------------------------------------------------------------------ cards

function statusOf(item) {
  if (item.error) return "error";
  if (!item.result) return "pending";
  if (item.result.review) return "review";
  return item.result.verdict === item.result.positive_class ? "flagged" : "intact";
}

function addFiles(files) {
  const images = Array.from(files).filter((f) => f.type.startsWith("image/") || IMAGE_EXT.test(f.name));
  if (!images.length) {
    showMessage("No image files in that selection.");
    return;
  }
  showMessage("");
  for (const file of images) {
    const node = $("#card-template").content.firstElementChild.cloneNode(true);
    const item = { file, name: file.webkitRelativePath || file.name, node, url: URL.createObjectURL(file),
                   result: null, error: null, heatmap: null, camShown: false };
    node.querySelector(".photo").src = item.url;
    node.querySelector(".photo").alt = `photo ${item.name}`;
    node.querySelector(".name").textContent = item.name;
    node.querySelector(".toggle-cam").addEventListener("click", () => toggleCam(item));
    $("#cards").appendChild(node);
    state.items.push(item);
    state.queue.push(item);
  }
  summarize();
  pump();
}

function render(item) {
  const node = item.node;
  const status = statusOf(item);
  node.className = `card ${status}`;
  node.dataset.status = status;
  const verdict = node.querySelector(".verdict");
  const prob = node.querySelector(".prob");
  const btn = node.querySelector(".toggle-cam");
  verdict.textContent = "";
  if (status === "error") {
    verdict.textContent = `error: ${item.error}`;
    prob.textContent = "";
    btn.disabled = true;
    return;
  }
  const r = item.result;
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.textContent = status === "review" ? `review (${r.verdict}?)` : r.verdict;
  if (r.review_reason) badge.title = r.review_reason;
  verdict.appendChild(badge);
  node.dataset.verdict = r.verdict;
  const cut = r.threshold === null || r.threshold === undefined ? "" : ` · threshold ${r.threshold.toFixed(3)}`;
  prob.textContent = `p(${r.positive_class}) = ${r.p_positive.toFixed(3)}${cut}`;
  btn.disabled = false;
}

async function toggleCam(item) {
  const node = item.node;
  const btn = node.querySelector(".toggle-cam");
  const img = node.querySelector(".heatmap");
  if (!item.heatmap) {
    btn.disabled = true;
    btn.textContent = "Computing heatmap…";
    try {
      const r = await postImage(item.file, true);
      item.heatmap = `data:image/png;base64,${r.heatmap_png}`;
      img.src = item.heatmap;
    } catch (e) {
      btn.disabled = false;
      btn.textContent = "Show heatmap";
      showMessage(`Heatmap for ${item.name}: ${e.message}`);
      return;
    }
    btn.disabled = false;
  }
  item.camShown = !item.camShown;
  img.hidden = !item.camShown;
  btn.setAttribute("aria-pressed", String(item.camShown));
  btn.textContent = item.camShown ? "Hide heatmap" : "Show heatmap";
}

function summarize() {
  const done = state.items.filter((i) => i.result || i.error);
  const count = (s) => done.filter((i) => statusOf(i) === s).length;
  const pending = state.items.length - done.length;
  const parts = [`${done.length - count("error")} inspected`, `${count("flagged")} flagged ${positiveClass()}`];
  if (count("review")) parts.push(`${count("review")} to review`);
  if (count("error")) parts.push(`${count("error")} unreadable`);
  if (pending) parts.push(`${pending} waiting`);
  $("#summary").textContent = state.items.length ? parts.join(", ") : "No images inspected yet.";
  $("#download-csv").disabled = done.length === 0;
  $("#clear").disabled = state.items.length === 0;
}

// ------------------------------------------------------------------ CSV

function csvCell(v) {
  const s = v === null || v === undefined ? "" : String(v);
  // Quote everything that could break the row; neutralise spreadsheet formulas.
  const safe = /^[=+\-@]/.test(s) ? `'${s}` : s;
  return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

function downloadCsv() {
  const pos = positiveClass();
  const rows = [["file", "status", "verdict", "probability", `p_${pos}`, "threshold", "review_reason", "error"]];
  for (const i of state.items) {
    if (!i.result && !i.error) continue;
    const r = i.result || {};
    rows.push([i.name, statusOf(i), r.verdict,
               r.probability !== undefined ? r.probability.toFixed(6) : "",
               r.p_positive !== undefined ? r.p_positive.toFixed(6) : "",
               r.threshold !== undefined && r.threshold !== null ? r.threshold.toFixed(6) : "",
               r.review_reason || "", i.error]);
  }
  const text = rows.map((row) => row.map(csvCell).join(",")).join("\r\n") + "\r\n";
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  a.download = "inspectnet-results.csv";
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function clearAll() {
  for (const i of state.items) URL.revokeObjectURL(i.url);
  state.items = [];
  state.queue = [];
  $("#cards").replaceChildren();
  summarize();
}

// ------------------------------------------------------------------ drag and drop

async function filesFromEntry(entry, out) {
  if (entry.isFile) {
    out.push(await new Promise((res, rej) => entry.file(res, rej)));
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {  // readEntries returns at most ~100 entries per call
      const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
      if (!batch.length) break;
      for (const e of batch) await filesFromEntry(e, out);
    }
  }
}

async function onDrop(ev) {
  ev.preventDefault();
  $("#drop-zone").classList.remove("over");
  const items = Array.from(ev.dataTransfer.items || []);
  const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null)).filter(Boolean);
  if (entries.length) {
    const files = [];
    for (const e of entries) await filesFromEntry(e, files);
    addFiles(files);
  } else {
    addFiles(ev.dataTransfer.files);
  }
}

function init() {
  const tokenInput = $("#token-input");
  tokenInput.value = localStorage.getItem(TOKEN_KEY) || "";
  tokenInput.addEventListener("change", () => {
    localStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
    loadModel();
  });
  for (const id of ["#file-input", "#folder-input"]) {
    $(id).addEventListener("change", (ev) => {
      addFiles(ev.target.files);
      ev.target.value = "";  // picking the same files again must fire "change" again
    });
  }
  const zone = $("#drop-zone");
  zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", onDrop);
  $("#download-csv").addEventListener("click", downloadCsv);
  $("#clear").addEventListener("click", clearAll);
  loadModel();
}

document.addEventListener("DOMContentLoaded", init);
