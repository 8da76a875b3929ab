// The page of `mrl serve`. Every string from the server or the user is shown with textContent (never parsed
// as markup); elements are built with createElement / createElementNS. No library, no network but this server.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let health = null;
let current = null;          // the job id shown in the result section
let polling = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

const fmt = (x, d = 4) => (x === null || x === undefined || Number.isNaN(x)) ? "n/a" : Number(x).toFixed(d);

function aucText(card) {
  if (card.test_auc === null || card.test_auc === undefined) return card.note || "not recorded";
  let s = fmt(card.test_auc, 3);
  if (card.auc_ci) s += ` [${fmt(card.auc_ci[0], 3)}, ${fmt(card.auc_ci[1], 3)}]`;
  const parts = [];
  if (card.ci) parts.push(`${Math.round(card.ci * 100)} % interval`);
  if (card.n_test) parts.push(`${card.n_test} test videos`);
  return parts.length ? `${s} (${parts.join(", ")})` : s;
}

function showError(msg) {
  const e = $("error");
  e.textContent = msg;
  e.hidden = !msg;
}

function setProgress(file, text, value) {
  $("progress-box").hidden = false;
  $("progress-file").textContent = file;
  $("progress-text").textContent = text;
  $("progress").value = value;
}

async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store"});
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) throw new Error((body && body.detail) || `${r.status} ${r.statusText}`);
  return body;
}

async function loadHealth() {
  try {
    health = await getJSON("/api/health");
    const c = health.model;
    $("model-line").textContent =
      `Model: ${c.name} · test AUC ${aucText(c)} · threshold ${fmt(c.threshold, 4)} · device ${health.device}`;
    $("limit").textContent = `up to ${health.max_upload_mb} MB`;
  } catch (e) {
    $("model-line").textContent = `The server does not answer: ${e.message}`;
  }
}

// ---------------------------------------------------------------- upload
function upload(file) {
  showError("");
  if (!file) return;
  if (health && file.size > health.max_upload_mb * 1048576) {
    showError(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB; this server accepts videos of at most ` +
              `${health.max_upload_mb} MB (mrl serve --max-upload-mb).`);
    return;
  }
  const form = new FormData();
  form.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/detect");
  xhr.responseType = "json";
  xhr.upload.onprogress = (ev) => {
    if (ev.lengthComputable) setProgress(file.name, `uploading ${Math.round(100 * ev.loaded / ev.total)} %`,
                                         0.1 * ev.loaded / ev.total);
  };
  xhr.onload = () => {
    const body = xhr.response || {};
    if (xhr.status === 202) {
      setProgress(body.filename, body.ahead ? `waiting (${body.ahead} ahead)` : "starting", 0.1);
      follow(body.id);
      refreshHistory();
    } else {
      $("progress-box").hidden = true;
      showError(body.detail || `upload refused: ${xhr.status} ${xhr.statusText}`);
    }
  };
  xhr.onerror = () => { $("progress-box").hidden = true; showError("the upload failed (is the server still running?)"); };
  setProgress(file.name, "uploading", 0);
  xhr.send(form);
}

const PHASE = {queued: "waiting", starting: "starting", crop: "finding and cropping the face",
               score: "scoring the windows", heatmaps: "drawing the Grad-CAM maps", writing: "writing the results"};

function follow(id) {
  if (polling) clearTimeout(polling);
  const tick = async () => {
    let job;
    try { job = await getJSON(`/api/jobs/${encodeURIComponent(id)}`); }
    catch (e) { showError(e.message); return; }
    if (job.status === "queued" || job.status === "running") {
      setProgress(job.filename, `${PHASE[job.phase] || job.phase} ${Math.round(100 * job.progress)} %`,
                  0.1 + 0.9 * job.progress);
      polling = setTimeout(tick, 400);
      return;
    }
    $("progress-box").hidden = true;
    if (job.status === "failed") showError(`${job.filename}: ${job.reason}`);
    else if (job.status === "rejected") showError(`${job.filename} cannot be scored: ${job.reason}`);
    show(job);
    refreshHistory();
  };
  tick();
}

// ---------------------------------------------------------------- the result
function show(job) {
  current = job.id;
  const r = job.result;
  $("result-file").textContent = job.filename;
  const v = $("verdict");
  if (!r || job.status !== "done") {
    v.textContent = job.status === "rejected" ? "not scored" : job.status;
    v.className = "verdict rejected";
  } else {
    v.textContent = r.decision === "fake" ? "FAKE" : "REAL";
    v.className = `verdict ${r.decision}`;
  }
  $("score").textContent = r ? fmt(r.score) : "n/a";
  $("threshold").textContent = r ? `${fmt(r.threshold)} (${r.threshold_source})` : "n/a";
  $("n-windows").textContent = r ? String(r.n_windows) : "0";
  $("frames").textContent = r ? `${r.frames_used} of ${r.frames_read} read` + (r.fps ? ` (${fmt(r.fps, 2)} fps)` : "") : "n/a";
  $("model-name").textContent = health ? health.model.name : "";
  $("model-auc").textContent = health ? aucText(health.model) : "";
  const w = $("warnings");
  w.replaceChildren(...((r && r.warnings) || []).map((x) => el("li", x)));
  drawChart(r);
  drawHeatmaps(r);
  const ok = !!r;
  for (const [a, url] of [["dl-json", r && r.downloads.json], ["dl-csv", r && r.downloads.csv]]) {
    $(a).href = ok ? url : "#";
    $(a).hidden = !ok;
  }
  $("result").hidden = false;
}

function drawChart(r) {
  const box = $("chart");
  box.replaceChildren();
  if (!r || !r.windows || !r.windows.length) { box.append(el("p", "No window was scored.", "muted")); return; }
  const W = 960, H = 240, L = 48, R = 12, T = 12, B = 40;
  const last = Math.max(r.frames_read || 0, ...r.windows.map((w) => w.last_frame + 1));
  const x = (f) => L + (W - L - R) * f / last;
  const y = (p) => T + (H - T - B) * (1 - p);
  const s = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "score per window over the video"});
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {
    s.append(svg("line", {x1: L, x2: W - R, y1: y(p), y2: y(p), class: "grid"}));
    s.append(svg("text", {x: L - 6, y: y(p) + 4, "text-anchor": "end"}, p.toFixed(2)));
  }
  for (const w of r.windows) {
    const x0 = x(w.first_frame), x1 = x(w.last_frame + 1);
    const bar = svg("rect", {x: x0 + 1, y: y(w.prob), width: Math.max(1, x1 - x0 - 2), height: y(0) - y(w.prob),
                             class: w.prob >= r.threshold ? "win above" : "win", "data-window": w.window,
                             "data-prob": w.prob});
    const t = r.fps ? ` (${fmt(w.first_frame / r.fps, 2)}-${fmt((w.last_frame + 1) / r.fps, 2)} s)` : "";
    bar.append(svg("title", {}, `window ${w.window}: frames ${w.first_frame}-${w.last_frame}${t}, p = ${fmt(w.prob)}`));
    s.append(bar);
  }
  s.append(svg("line", {x1: L, x2: W - R, y1: y(r.threshold), y2: y(r.threshold), class: "thr"}));
  s.append(svg("text", {x: W - R, y: y(r.threshold) - 4, "text-anchor": "end"}, `threshold ${fmt(r.threshold, 3)}`));
  s.append(svg("line", {x1: L, x2: W - R, y1: y(0), y2: y(0), class: "axis"}));
  s.append(svg("line", {x1: L, x2: L, y1: y(0), y2: y(1), class: "axis"}));
  const ticks = 6;
  for (let i = 0; i <= ticks; i++) {
    const f = Math.round(last * i / ticks);
    const label = r.fps ? `${(f / r.fps).toFixed(1)} s` : `frame ${f}`;
    s.append(svg("text", {x: x(f), y: H - B + 16, "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle"}, label));
  }
  s.append(svg("text", {x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle"},
               r.fps ? "time in the video" : "frame"));
  box.append(s);
}

function drawHeatmaps(r) {
  const box = $("heatmaps");
  box.replaceChildren();
  const imgs = (r && r.heatmap_images) || [];
  if (!imgs.length) { box.append(el("p", "No heatmap (no window was scored).", "muted")); return; }
  for (const h of imgs) {
    const fig = el("figure");
    const img = el("img");
    img.src = h.url;
    img.alt = `Grad-CAM of window ${h.window}, snippet ${h.snippet}, frame ${h.frame}`;
    fig.append(img, el("figcaption", `window ${h.window} (p = ${fmt(h.prob, 3)}), frame ${h.frame}`));
    box.append(fig);
  }
}

// ---------------------------------------------------------------- history
async function refreshHistory() {
  let data;
  try { data = await getJSON("/api/jobs"); } catch (e) { return; }
  const body = $("history").tBodies[0];
  body.replaceChildren();
  for (const j of data.jobs) {
    const tr = el("tr");
    const s = j.summary || {};
    tr.append(el("td", j.filename, "filename"), el("td", j.status, `st-${j.status}`),
              el("td", s.decision || "", s.decision ? `v-${s.decision}` : ""),
              el("td", s.score === undefined || s.score === null ? "" : fmt(s.score)),
              el("td", new Date(j.created * 1000).toLocaleTimeString()));
    tr.addEventListener("click", async () => {
      if (j.status === "queued" || j.status === "running") { follow(j.id); return; }
      try { show(await getJSON(`/api/jobs/${encodeURIComponent(j.id)}`)); } catch (e) { showError(e.message); }
    });
    body.append(tr);
  }
  $("history-empty").hidden = data.jobs.length > 0;
}

// ---------------------------------------------------------------- wiring
document.addEventListener("DOMContentLoaded", () => {
  loadHealth();
  refreshHistory();
  const zone = $("dropzone");
  $("file").addEventListener("change", (ev) => upload(ev.target.files[0]));
  for (const t of ["dragenter", "dragover"]) zone.addEventListener(t, (ev) => { ev.preventDefault(); zone.classList.add("over"); });
  for (const t of ["dragleave", "drop"]) zone.addEventListener(t, (ev) => { ev.preventDefault(); zone.classList.remove("over"); });
  zone.addEventListener("drop", (ev) => upload(ev.dataTransfer.files[0]));
  document.addEventListener("dragover", (ev) => ev.preventDefault());
  document.addEventListener("drop", (ev) => ev.preventDefault());
});
