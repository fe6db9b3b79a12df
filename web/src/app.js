// Moebius in the browser: paint a mask over a photo and inpaint it in this page with the exported model on
// onnxruntime-web (WebGPU where the browser has it, WASM otherwise). Nothing is uploaded anywhere.
// The painting, undo and compare behave as in the editor of `moebius serve`.
import { inpaint, callSettings, CancelledError } from "./pipeline.js";
import { parseSeed } from "./random.js";

const $ = (id) => document.getElementById(id);
const view = $("view");
const ctx = view.getContext("2d");
const MASK_COLOR = "rgba(255, 64, 64, 1)";
const MAX_HISTORY = 30;
const params = new URLSearchParams(location.search);
const MODEL_URL = new URL(params.get("model") || "./model/", location.href);
// onnxruntime-web's WASM build addresses at most 4 GiB, weights and activations together.
const WASM_MODEL_LIMIT = 2 * 1024 ** 3;

const ed = {
  original: null, work: null, workName: "image.png", mask: null,
  history: [], at: -1,
  view: { scale: 1, x: 0, y: 0 },
  tool: "brush", size: 40, comparing: false, spaceHeld: false, running: false, cancel: false,
  pointer: null, lastSeed: null, lastSeconds: null, lastTimings: null, model: null, modelError: null,
};

// ------------------------------------------------------------------------------------------------
// Status and state

function setState(state) { document.body.dataset.state = state; }
function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}
function refreshButtons() {
  const has = !!ed.work;
  for (const id of ["compare", "mask-clear", "download"]) $(id).disabled = !has || ed.running;
  $("run").disabled = !has || ed.running || !ed.model;
  $("undo").disabled = ed.at <= 0 || ed.running;
  $("redo").disabled = ed.at >= ed.history.length - 1 || ed.running;
  $("cancel").hidden = !ed.running;
}

// ------------------------------------------------------------------------------------------------
// The model: the manifest, then the three graphs

function human(bytes) {
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (bytes >= 1000 && i < units.length - 1) { bytes /= 1000; i++; }
  return `${bytes.toFixed(i ? 1 : 0)} ${units[i]}`;
}

async function fetchBytes(url, onBytes) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url.pathname}: ${r.status} ${r.statusText}`);
  if (!r.body) return new Uint8Array(await r.arrayBuffer());
  const reader = r.body.getReader(), chunks = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value); n += value.length; onBytes(value.length);
  }
  const out = new Uint8Array(n);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

async function fileSize(url) {
  const r = await fetch(url, { method: "HEAD" });
  if (!r.ok) return null;
  const n = Number(r.headers.get("Content-Length"));
  return Number.isFinite(n) ? n : null;
}

async function chooseBackend() {
  const wanted = params.get("backend");
  if (wanted === "wasm" || !navigator.gpu) return "wasm";
  try {
    if (await navigator.gpu.requestAdapter()) return "webgpu";
  } catch (e) { /* no usable adapter: WASM */ }
  if (wanted === "webgpu") throw new Error("this browser exposes no usable WebGPU adapter");
  return "wasm";
}

async function loadModel() {
  let manifest;
  const manifestUrl = new URL("moebius_onnx.json", MODEL_URL);
  try {
    const r = await fetch(manifestUrl);
    if (!r.ok) throw new Error(`${r.status}`);
    manifest = await r.json();
  } catch (e) {
    throw new Error(`no model at ${MODEL_URL.pathname} (${manifestUrl.pathname} is missing or unreadable): ` +
                    "make the site with `moebius export-web WEIGHTS SITE` and serve SITE");
  }
  if (manifest.format !== "moebius-onnx" || manifest.format_version !== 1) {
    throw new Error(`${manifestUrl.pathname} is not a moebius-onnx version 1 manifest; export the model again`);
  }
  const roles = ["vae_encoder", "unet", "vae_decoder"];
  const files = roles.map((role) => ({ role, url: new URL(manifest.files[role], MODEL_URL) }));
  let total = 0;
  for (const f of files) {
    f.size = await fileSize(f.url);
    if (f.size === null) throw new Error(`the model is incomplete: ${f.url.pathname} is missing`);
    f.dataUrl = new URL(`${manifest.files[f.role]}.data`, MODEL_URL);
    f.dataSize = await fileSize(f.dataUrl);
    total += f.size + (f.dataSize || 0);
  }
  const backend = await chooseBackend();
  if (total > WASM_MODEL_LIMIT) {
    throw new Error(`the model is ${human(total)}, more than this browser's ONNX runtime can hold ` +
                    `(${human(WASM_MODEL_LIMIT)}); export it with --dtype float16 or --quantize int8`);
  }
  const ort = await import(backend === "webgpu" ? "./ort/ort.min.mjs" : "./ort/ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = new URL("./ort/", import.meta.url).href;
  if (!self.crossOriginIsolated) ort.env.wasm.numThreads = 1;  // threads need a cross-origin-isolated page
  // WASM inference in onnxruntime's worker keeps the page responsive (the WebGPU backend runs on this thread).
  if (backend === "wasm") ort.env.wasm.proxy = true;
  let loaded = 0;
  const sessions = {};
  for (const f of files) {
    const onBytes = (n) => {
      loaded += n;
      showProgress(loaded / total, `loading the model: ${human(loaded)} of ${human(total)}`);
    };
    const bytes = await fetchBytes(f.url, onBytes);
    const options = { executionProviders: [backend], graphOptimizationLevel: "all" };
    if (f.dataSize) {
      options.externalData = [{ path: `${manifest.files[f.role]}.data`, data: await fetchBytes(f.dataUrl, onBytes) }];
    }
    try {
      sessions[f.role] = await ort.InferenceSession.create(bytes, options);
    } catch (e) {
      const detail = String(e && e.message ? e.message : e).split("\n")[0];
      throw new Error(`cannot load ${f.url.pathname} on ${backend} (${detail}); the device may not have ` +
                      "the memory for it: try a smaller export (--dtype float16 or --quantize int8)");
    }
  }
  const precision = manifest.precision || {};
  return { ort, manifest, sessions, backend, bytes: total,
           precision: precision.quantize || precision.dtype || "float32" };
}

// ------------------------------------------------------------------------------------------------
// Canvases

function newCanvas(w, h) {
  const c = document.createElement("canvas");
  c.width = w; c.height = h;
  return c;
}
async function decode(blob) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, { imageOrientation: "from-image" });
  } catch (e) {
    throw new Error("this file is not an image the browser can open");
  }
  const c = newCanvas(bitmap.width, bitmap.height);
  c.getContext("2d").drawImage(bitmap, 0, 0);
  bitmap.close && bitmap.close();
  return c;
}
function canvasRGB(canvas) {
  const d = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const out = new Uint8Array((d.length / 4) * 3);
  for (let p = 0, q = 0; p < d.length; p += 4, q += 3) { out[q] = d[p]; out[q + 1] = d[p + 1]; out[q + 2] = d[p + 2]; }
  return out;
}
function rgbCanvas(rgb, w, h) {
  const c = newCanvas(w, h), cctx = c.getContext("2d"), img = cctx.createImageData(w, h);
  for (let p = 0, q = 0; q < rgb.length; p += 4, q += 3) {
    img.data[p] = rgb[q]; img.data[p + 1] = rgb[q + 1]; img.data[p + 2] = rgb[q + 2]; img.data[p + 3] = 255;
  }
  cctx.putImageData(img, 0, 0);
  return c;
}

// ------------------------------------------------------------------------------------------------
// History: every stroke, mask change and result is one step

function snapshot() {
  const m = ed.mask.getContext("2d").getImageData(0, 0, ed.mask.width, ed.mask.height);
  ed.history = ed.history.slice(0, ed.at + 1);
  ed.history.push({ work: ed.work, name: ed.workName, mask: m });
  if (ed.history.length > MAX_HISTORY) ed.history.shift();
  ed.at = ed.history.length - 1;
  refreshButtons();
}
function restore(index) {
  const h = ed.history[index];
  ed.at = index;
  ed.work = h.work; ed.workName = h.name;
  if (ed.mask.width !== h.mask.width || ed.mask.height !== h.mask.height) ed.mask = newCanvas(h.mask.width, h.mask.height);
  ed.mask.getContext("2d").putImageData(h.mask, 0, 0);
  refreshButtons();
  render();
}
function undo() { if (ed.at > 0 && !ed.running) restore(ed.at - 1); }
function redo() { if (ed.at < ed.history.length - 1 && !ed.running) restore(ed.at + 1); }

// ------------------------------------------------------------------------------------------------
// Opening images

async function openBlob(blob, name) {
  try {
    const canvas = await decode(blob);
    ed.original = canvas; ed.work = canvas; ed.workName = name || "image.png";
    ed.mask = newCanvas(canvas.width, canvas.height);
    ed.history = []; ed.at = -1;
    snapshot();
    fit();
    setState("ready");
    status(`${ed.workName}: ${canvas.width}×${canvas.height}. Paint over what should be removed, then Run.`);
  } catch (e) {
    status(e.message, true);
  }
}

// ------------------------------------------------------------------------------------------------
// View: image pixel (ix, iy) is drawn at screen (ix * scale + x, iy * scale + y), in CSS pixels

function resize() {
  const r = view.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
  view.width = Math.max(1, Math.round(r.width * dpr));
  view.height = Math.max(1, Math.round(r.height * dpr));
  render();
}
function fit() {
  if (!ed.work) return;
  const r = view.getBoundingClientRect();
  const s = Math.min(r.width / ed.work.width, r.height / ed.work.height) * 0.95;
  ed.view = { scale: s, x: (r.width - ed.work.width * s) / 2, y: (r.height - ed.work.height * s) / 2 };
  render();
}
function zoomAt(factor, sx, sy) {
  const v = ed.view, s = Math.min(40, Math.max(0.02, v.scale * factor));
  v.x = sx - (sx - v.x) * (s / v.scale);
  v.y = sy - (sy - v.y) * (s / v.scale);
  v.scale = s;
  render();
}
function zoomCentre(factor) {
  const r = view.getBoundingClientRect();
  zoomAt(factor, r.width / 2, r.height / 2);
}
function toImage(ev) {
  const r = view.getBoundingClientRect();
  const sx = ev.clientX - r.left, sy = ev.clientY - r.top;
  return { sx, sy, x: (sx - ed.view.x) / ed.view.scale, y: (sy - ed.view.y) / ed.view.scale };
}

function render() {
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, view.width, view.height);
  if (!ed.work) return;
  const v = ed.view;
  ctx.setTransform(dpr * v.scale, 0, 0, dpr * v.scale, dpr * v.x, dpr * v.y);
  ctx.imageSmoothingEnabled = v.scale < 1;
  ctx.drawImage(ed.comparing ? ed.original : ed.work, 0, 0);
  if (!ed.comparing) {
    ctx.globalAlpha = 0.5;
    ctx.drawImage(ed.mask, 0, 0);
    ctx.globalAlpha = 1;
  }
  if (ed.pointer && currentTool() !== "pan") {
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.beginPath();
    ctx.arc(ed.pointer.sx, ed.pointer.sy, ed.size / 2, 0, Math.PI * 2);
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5; ctx.stroke();
  }
}

// ------------------------------------------------------------------------------------------------
// Painting and panning with pointer events (mouse, pen and touch alike)

let drag = null;
function currentTool() { return ed.spaceHeld ? "pan" : ed.tool; }

function paintSegment(a, b) {
  const m = ed.mask.getContext("2d");
  m.save();
  m.globalCompositeOperation = currentTool() === "eraser" ? "destination-out" : "source-over";
  m.strokeStyle = MASK_COLOR; m.fillStyle = MASK_COLOR;
  m.lineCap = "round"; m.lineJoin = "round";
  m.lineWidth = ed.size / ed.view.scale;
  m.beginPath();
  if (a.x === b.x && a.y === b.y) {
    m.arc(a.x, a.y, m.lineWidth / 2, 0, Math.PI * 2);
    m.fill();
  } else {
    m.moveTo(a.x, a.y); m.lineTo(b.x, b.y); m.stroke();
  }
  m.restore();
}

// Two fingers pinch-zoom and pan (a stroke the first finger began is taken back).
const touches = new Map();
function pinchState() {
  const [a, b] = [...touches.values()];
  return { dist: Math.hypot(a.sx - b.sx, a.sy - b.sy) || 1, sx: (a.sx + b.sx) / 2, sy: (a.sy + b.sy) / 2 };
}

view.addEventListener("pointerdown", (ev) => {
  if (!ed.work || ed.running) return;
  view.setPointerCapture(ev.pointerId);
  const p = toImage(ev);
  if (ev.pointerType === "touch") touches.set(ev.pointerId, p);
  if (touches.size === 2) {
    if (drag && drag.painted) ed.mask.getContext("2d").putImageData(ed.history[ed.at].mask, 0, 0);
    drag = { pinch: true, last: pinchState() };
    render();
    return;
  }
  const pan = currentTool() === "pan" || ev.button === 1;
  drag = { pan, last: p, painted: false };
  if (!pan) { paintSegment(p, p); drag.painted = true; }
  render();
  ev.preventDefault();
});
view.addEventListener("pointermove", (ev) => {
  const p = toImage(ev);
  ed.pointer = ev.pointerType === "touch" ? null : p;
  if (touches.has(ev.pointerId)) touches.set(ev.pointerId, p);
  if (drag && drag.pinch) {
    if (touches.size === 2) {
      const now = pinchState();
      ed.view.x += now.sx - drag.last.sx; ed.view.y += now.sy - drag.last.sy;
      zoomAt(now.dist / drag.last.dist, now.sx, now.sy);
      drag.last = now;
    }
    return;
  }
  if (drag) {
    if (drag.pan) {
      ed.view.x += p.sx - drag.last.sx; ed.view.y += p.sy - drag.last.sy;
      drag.last = toImage(ev);
    } else {
      paintSegment(drag.last, p); drag.last = p; drag.painted = true;
    }
  }
  render();
});
const endDrag = (ev) => {
  touches.delete(ev.pointerId);
  if (drag && drag.pinch) { if (touches.size === 0) drag = null; return; }
  if (drag && drag.painted) snapshot();
  drag = null;
};
view.addEventListener("pointerup", endDrag);
view.addEventListener("pointercancel", endDrag);
view.addEventListener("pointerleave", () => { ed.pointer = null; render(); });
view.addEventListener("wheel", (ev) => {
  if (!ed.work) return;
  const p = toImage(ev);
  zoomAt(Math.exp(-ev.deltaY * 0.0015), p.sx, p.sy);
  ev.preventDefault();
}, { passive: false });

// ------------------------------------------------------------------------------------------------
// The mask: white (255) = fill, every painted pixel counts

function maskValues() {
  const src = ed.mask.getContext("2d").getImageData(0, 0, ed.mask.width, ed.mask.height).data;
  const out = new Uint8Array(src.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = src[i * 4 + 3] > 0 ? 255 : 0;
  return out;
}
function maskDataURL() {
  const v = maskValues();
  const rgb = new Uint8Array(v.length * 3);
  for (let i = 0; i < v.length; i++) rgb[i * 3] = rgb[i * 3 + 1] = rgb[i * 3 + 2] = v[i];
  return rgbCanvas(rgb, ed.mask.width, ed.mask.height).toDataURL("image/png");
}

function download(canvas, name) {
  canvas.toBlob((blob) => {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = name;
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }, "image/png");
}
function stem() { return ed.workName.replace(/\.[^.]+$/, "").replace(/_inpainted$/, ""); }

// ------------------------------------------------------------------------------------------------
// Running: everything in this page

function showProgress(fraction, text) {
  $("progress").hidden = fraction === null;
  $("progress-bar").style.width = `${Math.round((fraction || 0) * 100)}%`;
  $("progress-text").textContent = text || "";
}
const nextFrame = () => new Promise((ok) => setTimeout(ok, 0));

function randomSeed() {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return ((BigInt(words[0] & 0x7fffffff) << 32n) | BigInt(words[1])).toString();
}

async function run() {
  if (!ed.work || ed.running || !ed.model) return;
  const mask = maskValues();
  if (!mask.some((v) => v)) { status("paint over the area to fill first", true); return; }
  let settings, seed;
  try {
    settings = callSettings(ed.model.manifest, {
      num_inference_steps: $("opt-steps").value === "" ? undefined : Number($("opt-steps").value),
      guidance_scale: $("opt-guidance").value === "" ? undefined : Number($("opt-guidance").value),
    });
    seed = $("opt-seed").value.trim() === "" ? randomSeed() : parseSeed($("opt-seed").value).toString();
  } catch (e) { status(e.message, true); return; }
  ed.running = true; ed.cancel = false; refreshButtons(); setState("running");
  const started = performance.now();
  showProgress(0, "preparing");
  await nextFrame();
  try {
    const w = ed.work.width, h = ed.work.height;
    const result = await inpaint(ed.model, canvasRGB(ed.work), mask, w, h, settings, seed, {
      onStep: (done, total) => showProgress(done / total, `step ${done} of ${total}`),
      isCancelled: () => ed.cancel,
    });
    const canvas = rgbCanvas(result.rgb, w, h);
    ed.lastSeed = result.seed.toString();
    ed.lastSeconds = (performance.now() - started) / 1000;
    ed.lastTimings = result.timings;
    ed.work = canvas; ed.workName = `${stem()}_inpainted.png`;
    ed.mask = newCanvas(w, h);
    snapshot();
    if ($("opt-seed-lock").checked) $("opt-seed").value = ed.lastSeed;
    else $("opt-seed").placeholder = `random (last: ${ed.lastSeed})`;
    const info = `seed ${ed.lastSeed} · ${result.stepsRun} step(s) · ${ed.lastSeconds.toFixed(1)} s on ${ed.model.backend}`;
    $("last-info").textContent = info;
    setState("done");
    status(`done: ${info}; paint again to keep editing`);
  } catch (e) {
    if (e instanceof CancelledError) { setState("ready"); status("cancelled; the image is as it was"); }
    else { setState("error"); status(String(e && e.message ? e.message : e), true); }
  } finally {
    showProgress(null);
    ed.running = false; refreshButtons(); render();
  }
}

// ------------------------------------------------------------------------------------------------
// Controls

function setTool(tool) {
  ed.tool = tool;
  document.body.dataset.tool = tool;
  for (const t of ["brush", "eraser", "pan"]) $(`tool-${t}`).classList.toggle("active", t === tool);
}
function setSize(size) {
  ed.size = Math.max(2, Math.min(300, Math.round(size)));
  $("brush-size").value = ed.size; $("brush-size-value").textContent = ed.size;
  render();
}
function setComparing(on) { if (ed.work) { ed.comparing = on; render(); } }

$("open-file").addEventListener("change", (ev) => {
  const f = ev.target.files[0]; if (f) openBlob(f, f.name); ev.target.value = "";
});
for (const t of ["brush", "eraser", "pan"]) $(`tool-${t}`).addEventListener("click", () => setTool(t));
$("brush-size").addEventListener("input", (ev) => setSize(+ev.target.value));
$("undo").addEventListener("click", undo);
$("redo").addEventListener("click", redo);
$("zoom-in").addEventListener("click", () => zoomCentre(1.25));
$("zoom-out").addEventListener("click", () => zoomCentre(0.8));
$("zoom-fit").addEventListener("click", fit);
$("run").addEventListener("click", run);
$("cancel").addEventListener("click", () => { ed.cancel = true; status("cancelling after this step"); });
const cmp = $("compare");
cmp.addEventListener("pointerdown", () => setComparing(true));
for (const e of ["pointerup", "pointerleave", "pointercancel"]) cmp.addEventListener(e, () => setComparing(false));
$("options-toggle").addEventListener("click", () => {
  const open = $("options").hidden;
  $("options").hidden = !open;
  $("options-toggle").setAttribute("aria-expanded", String(open));
  resize(); fit();
});
$("mask-clear").addEventListener("click", () => {
  ed.mask.getContext("2d").clearRect(0, 0, ed.mask.width, ed.mask.height); snapshot(); render();
});
$("download").addEventListener("click", () => ed.work && download(ed.work, ed.workName));

document.addEventListener("keydown", (ev) => {
  if (ev.target.closest && ev.target.closest("input, select, textarea")) return;
  const k = ev.key.toLowerCase(), mod = ev.ctrlKey || ev.metaKey;
  if (mod && k === "z") { ev.shiftKey ? redo() : undo(); ev.preventDefault(); }
  else if (mod && k === "y") { redo(); ev.preventDefault(); }
  else if (mod) return;
  else if (k === "tab") { setComparing(true); ev.preventDefault(); }
  else if (k === " ") { ed.spaceHeld = true; document.body.dataset.tool = "pan"; ev.preventDefault(); }
  else if (k === "[") setSize(ed.size / 1.2);
  else if (k === "]") setSize(ed.size * 1.2);
  else if (k === "b") setTool("brush");
  else if (k === "e") setTool("eraser");
  else if (k === "escape") fit();
  else if (k === "+" || k === "=") zoomCentre(1.25);
  else if (k === "-") zoomCentre(0.8);
  else if (k === "r" && ev.shiftKey) run();
});
document.addEventListener("keyup", (ev) => {
  if (ev.key === "Tab") setComparing(false);
  if (ev.key === " ") { ed.spaceHeld = false; document.body.dataset.tool = ed.tool; }
});
document.addEventListener("paste", (ev) => {
  for (const item of (ev.clipboardData || {}).items || []) {
    if (item.type.startsWith("image/")) { openBlob(item.getAsFile(), "pasted.png"); ev.preventDefault(); return; }
  }
});
const stage = $("stage");
stage.addEventListener("dragover", (ev) => ev.preventDefault());
stage.addEventListener("drop", (ev) => {
  ev.preventDefault();
  const f = ev.dataTransfer.files[0]; if (f) openBlob(f, f.name);
});
window.addEventListener("resize", () => { resize(); fit(); });

// For scripted use, the browser test and the benchmark: read-only views of the page's state.
window.moebiusWeb = {
  state: () => document.body.dataset.state,
  model: () => (ed.model ? { backend: ed.model.backend, bytes: ed.model.bytes, precision: ed.model.precision } : null),
  modelError: () => ed.modelError,
  imageSize: () => (ed.work ? [ed.work.width, ed.work.height] : null),
  lastSeed: () => ed.lastSeed,
  lastSeconds: () => ed.lastSeconds,
  lastTimings: () => ed.lastTimings,
  view: () => ({ ...ed.view }),
  maskDataURL,
  originalDataURL: () => (ed.original ? ed.original.toDataURL("image/png") : null),
  workDataURL: () => (ed.work ? ed.work.toDataURL("image/png") : null),
};

setTool("brush");
setSize(40);
resize();
refreshButtons();
loadModel().then((model) => {
  ed.model = model;
  showProgress(null);
  $("model-info").textContent = `${MODEL_URL.pathname}: ${human(model.bytes)}, ${model.precision}, on ${model.backend}`;
  if (document.body.dataset.state === "loading") setState("empty");
  $("hint").textContent = "Open or paste an image, paint over what should go, then press Run. " +
    "Everything runs in this page: the image never leaves your computer.";
  status(`model ready (${human(model.bytes)}, ${model.precision}, ${model.backend})`);
  refreshButtons();
}, (e) => {
  ed.modelError = String(e && e.message ? e.message : e);
  showProgress(null);
  setState("model-error");
  $("hint").textContent = ed.modelError;
  status(ed.modelError, true);
});
