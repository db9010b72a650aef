// stfn serve --prepared: the manifest as a table; a video's frames and flow side by side.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== "") node.textContent = text;
  return node;
}

async function load() {
  const response = await fetch("/v1/prepared");
  const doc = await response.json();
  if (!response.ok) { $("status").textContent = doc.detail; return; }
  $("title").textContent = `${doc.root}: ${doc.counts.ok} ok, ${doc.counts.failed} failed`;
  const flow = Object.entries(doc.flow).map(([k, v]) => `${k} ${v}`).join(", ");
  const resize = Object.entries(doc.resize).map(([k, v]) => `${k} ${v}`).join(", ") || "source size";
  $("settings").textContent = `flow: ${flow}; resize: ${resize}`;
  const body = $("videos");
  for (const v of doc.videos) {
    const tr = el("tr", { class: v.status, "data-key": v.key });
    const size = v.width ? `${v.width}x${v.height}` : "-";
    for (const cell of [v.key, v.status, v.frames ?? "-", v.flows ?? "-", size, v.error || ""]) tr.append(el("td", {}, String(cell)));
    tr.addEventListener("click", () => showVideo(v.key, tr));
    body.append(tr);
  }
}

async function showVideo(key, row) {
  document.querySelectorAll(".videos tr.selected").forEach((r) => r.classList.remove("selected"));
  row.classList.add("selected");
  const response = await fetch(`/v1/prepared/video?key=${encodeURIComponent(key)}`);
  const v = await response.json();
  $("key").textContent = `${key}: ${v.status}${v.error ? ` (${v.error})` : ""}`;
  const problems = $("problems");
  problems.replaceChildren(...(v.problems || []).map((p) => el("li", { class: "problem" }, p)));
  const pairs = $("pairs");
  pairs.replaceChildren();
  v.positions.forEach((p, i) => {
    const fig = el("figure");
    const pair = el("div", { class: "pair" });
    const q = `key=${encodeURIComponent(key)}&index=`;
    pair.append(el("img", { src: `/v1/prepared/frame?${q}${p}`, alt: `frame ${p}` }));
    if (v.flow_positions.length) pair.append(el("img", { src: `/v1/prepared/flow?${q}${v.flow_positions[i]}`, alt: `flow ${v.flow_positions[i]}` }));
    fig.append(pair, el("figcaption", {}, `frame ${p}` + (v.flow_positions.length ? ` | flow ${v.flow_positions[i]} -> ${v.flow_positions[i] + 1}` : "")));
    fig.querySelectorAll("img").forEach((img) => img.addEventListener("error", () => {
      img.replaceWith(el("span", { class: "problem" }, `${img.alt}: missing or unreadable`));
    }));
    pairs.append(fig);
  });
  $("detail").hidden = false;
}

fetch("/healthz").then((r) => r.json()).then((h) => { $("predict-link").hidden = !h.models.length; }).catch(() => {});
load().catch((e) => { $("status").textContent = `could not load the manifest: ${e}`; });
