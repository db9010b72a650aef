// stfn serve: the page. Plain JavaScript, no dependencies: models from /v1/models, a video to
// /v1/explain, and the answer drawn as bars, a strip of frames with their flow, and a timeline.
"use strict";

const $ = (id) => document.getElementById(id);
const COLOURS = ["#2f6fde", "#e8710a", "#1e8e3e", "#9334e6", "#00a3a3"];
let cards = {};
let maxBytes = Infinity;

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function fmt(x, digits = 3) {
  return x === null || x === undefined ? "-" : Number(x).toFixed(digits);
}

async function loadModels() {
  const health = await (await fetch("/healthz")).json();
  maxBytes = health.max_upload_mb * 1024 * 1024;
  $("limit").textContent = `up to ${Math.round(health.max_upload_mb)} MB; the video is deleted from the server after the answer`;
  $("prepared-link").hidden = !health.prepared;
  const doc = await (await fetch("/v1/models")).json();
  for (const m of doc.models) {
    cards[m.name] = m;
    $("model").append(el("option", { value: m.name }, m.name));
  }
  showCard();
}

function sourceText(s) {
  if (!s || s.format === "stfn") return "an stfn checkpoint";
  if (s.format === "hub") return s.repo ? `Hugging Face Hub ${s.repo}` : `Hub folder ${s.path}`;
  if (s.format === "mmaction2") return `converted from MMAction2 (${s.path})`;
  return JSON.stringify(s);
}

function showCard() {
  const m = cards[$("model").value];
  if (!m) return;
  const c = m.card || {};
  const acc = c.accuracy ? Object.entries(c.accuracy).map(([k, v]) => `${k} ${fmt(v, 1)}`).join(", ") : "not recorded";
  const rows = [
    ["checkpoint", m.checkpoint], ["architecture", `${c.arch} (${c.backbone})`], ["streams", (c.streams || []).join(" + ")],
    ["input", `${c.frames} positions, ${c.flow_length} flow fields each, ${c.crop_size} px crops`],
    ["trained on", `${c.dataset}, split ${c.split} (${c.train_videos} videos, ${c.epoch} epochs)`],
    ["accuracy at training time", acc], ["classes", `${c.num_classes}: ${(c.classes || []).join(", ")}`],
    ["came from", sourceText(c.source)], ["trained with", c.command || "not recorded"],
    ["runs on", `${m.settings.device}, ${m.settings.amp}, flow ${m.settings.flow ? m.settings.flow.algorithm : "none"}`],
    ["backend", `${m.settings.backend} (--backend ${m.settings.backend_setting || m.settings.backend})`],
  ];
  const table = $("card");
  table.replaceChildren();
  for (const [k, v] of rows) {
    const tr = el("tr");
    tr.append(el("th", {}, k), el("td", {}, String(v)));
    table.append(tr);
  }
  $("card-section").hidden = false;
}

async function send(file) {
  if (!file) return;
  if (file.size > maxBytes) {
    setStatus(`${file.name} is larger than the server's limit (${Math.round(maxBytes / 1048576)} MB)`, true);
    return;
  }
  const form = new FormData();
  form.append("model", $("model").value);
  form.append("top_k", $("top-k").value || "5");
  for (const name of ["crops", "window", "stride"]) if ($(name).value) form.append(name, $(name).value);
  form.append("file", file, file.name);
  setStatus(`${file.name}: uploading and predicting ...`);
  $("result").hidden = true;
  const started = performance.now();
  let answer;
  try {
    const response = await fetch("/v1/explain", { method: "POST", body: form });
    answer = await response.json();
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      setStatus(`${response.status}: ${answer.detail}${retry ? ` (retry in ${retry} s)` : ""}`, true);
      return;
    }
  } catch (e) {
    setStatus(`the server did not answer: ${e}`, true);
    return;
  }
  show(answer, (performance.now() - started) / 1000);
}

function show(doc, seconds) {
  const r = doc.results[0];
  const ex = doc.explain;
  $("video-name").textContent = `${r.video}: ${r.frames} frames at ${fmt(r.fps, 2)} fps`;
  const top = $("top");
  top.replaceChildren();
  for (const t of r.top) {
    const li = el("li");
    const bar = el("span", { class: "bar", style: `width: ${Math.max(1, 260 * t.prob)}px` });
    li.append(el("span", { class: "name" }, t.class), bar, el("span", { class: "prob" }, fmt(t.prob, 3)));
    top.append(li);
  }
  const tm = $("timings");
  tm.replaceChildren();
  for (const k of ["decode", "flow", "transform", "network", "total", "windows"]) {
    if (r.timings[k] === undefined) continue;
    const tr = el("tr");
    tr.append(el("th", {}, k === "total" ? "total (prediction)" : k === "windows" ? "timeline windows" : k),
              el("td", { class: "num" }, `${fmt(r.timings[k] * 1000, 0)} ms`));
    tm.append(tr);
  }
  const tr = el("tr");
  tr.append(el("th", {}, "round trip"), el("td", { class: "num" }, `${fmt(seconds * 1000, 0)} ms`));
  tm.append(tr);
  drawStrip(r, ex);
  drawTimeline(r, ex);
  $("result").hidden = false;
  setStatus(`${r.video}: done (${doc.checkpoint})`);
}

function drawStrip(r, ex) {
  const strip = $("strip");
  strip.replaceChildren();
  $("flow-max").textContent = ex.flow_max ? fmt(ex.flow_max, 1) : "-";
  ex.positions.forEach((p, i) => {
    const fig = el("figure", { class: "position" });
    fig.append(el("img", { class: "frame", src: ex.thumbnails[i], alt: `frame ${p}` }));
    if (ex.flow_images) fig.append(el("img", { class: "flow", src: ex.flow_images[i], alt: `flow at frame ${p}` }));
    const t = r.fps ? ` (${fmt(p / r.fps, 1)} s)` : "";
    fig.append(el("figcaption", {}, `frame ${p}${t}`));
    strip.append(fig);
  });
}

function drawTimeline(r, ex) {
  const w = ex.windows;
  const fps = r.fps || 0;
  const unit = (frames, secs) => (secs ? `${frames} frames (${fmt(secs, 2)} s)` : `${frames} frames`);
  $("window-info").textContent = `${w.starts.length} windows of ${unit(w.window, w.window_seconds)}, ` +
    `every ${unit(w.stride, w.stride_seconds)}; each point: the probability the model gives on the ${ex.positions.length} positions inside one window, at the window's centre.`;
  const W = 900, H = 220, L = 40, B = 30, T = 10, R = 10;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
    return n;
  };
  const shown = r.top.slice(0, COLOURS.length);
  // the y axis runs from 0 to the largest plotted probability, rounded up to a tenth
  const top = Math.max(0.1, Math.ceil(10 * Math.max(...shown.flatMap((t) => w.probs.map((p) => p[t.index])))) / 10);
  const x = (f) => L + (W - L - R) * (r.frames > 1 ? f / (r.frames - 1) : 0.5);
  const y = (p) => T + (H - T - B) * (1 - p / top);
  for (const p of [0, top / 2, top]) {
    add("line", { x1: L, x2: W - R, y1: y(p), y2: y(p), stroke: "#d9dce5" });
    add("text", { x: L - 6, y: y(p) + 4, "text-anchor": "end", "font-size": 11, fill: "#5d6577" }, p.toFixed(2));
  }
  for (let k = 0; k <= 4; k++) {
    const f = Math.round((r.frames - 1) * k / 4);
    add("text", { x: x(f), y: H - 10, "text-anchor": k === 0 ? "start" : k === 4 ? "end" : "middle", "font-size": 11, fill: "#5d6577" },
        fps ? `${(f / fps).toFixed(1)} s` : `${f}`);
  }
  const legend = el("div", { class: "legend" });
  shown.forEach((t, c) => {
    const pts = w.starts.map((s, i) => `${x(s + w.window / 2)},${y(w.probs[i][t.index])}`).join(" ");
    add("polyline", { points: pts, fill: "none", stroke: COLOURS[c], "stroke-width": 2, class: "series" });
    w.starts.forEach((s, i) => add("circle", { cx: x(s + w.window / 2), cy: y(w.probs[i][t.index]), r: 3, fill: COLOURS[c] }));
    const item = el("span");
    item.append(el("i", { style: `background: ${COLOURS[c]}` }), document.createTextNode(t.class));
    legend.append(item);
  });
  $("timeline").replaceChildren(svg, legend);
}

function drawWheel() {
  // the flow colour wheel: hue = direction (right red, down yellow-green, left cyan, up violet), brightness = magnitude
  const c = $("wheel"), g = c.getContext("2d"), n = c.width, img = g.createImageData(n, n);
  for (let j = 0; j < n; j++) for (let i = 0; i < n; i++) {
    const dx = i - n / 2 + 0.5, dy = j - n / 2 + 0.5, m = Math.hypot(dx, dy) / (n / 2);
    const h = ((Math.atan2(dy, dx) * 180 / Math.PI) + 360) % 360 / 60, v = m > 1 ? 0 : m, o = 4 * (j * n + i);
    [5, 3, 1].forEach((k, ch) => {
      const q = (k + h) % 6;
      img.data[o + ch] = 255 * v * (1 - Math.min(Math.max(Math.min(q, 4 - q), 0), 1));
    });
    img.data[o + 3] = m > 1 ? 0 : 255;
  }
  g.putImageData(img, 0, 0);
}

$("file").addEventListener("change", (e) => send(e.target.files[0]));
$("model").addEventListener("change", showCard);
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); send(e.dataTransfer.files[0]); });
drawWheel();
loadModels().catch((e) => setStatus(`could not load the models: ${e}`, true));
