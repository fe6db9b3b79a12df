// Moebius web editor: paint a mask over an image, send both to POST v1/inpaint, keep iterating on the result.
// Plain browser JavaScript, no build step and no network access beyond this server.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const view = $("view");
  const ctx = view.getContext("2d");
  const MASK_COLOR = "rgba(255, 64, 64, 1)";
  const MAX_HISTORY = 30;

  const ed = {
    original: null,   // canvas: the image first opened (hold-to-compare)
    work: null,       // canvas: the current working image
    workBlob: null,   // its bytes, sent to the server (the opened file, then each result)
    workName: "image.png",
    mask: null,       // canvas: painted strokes (alpha > 0 = fill)
    history: [], at: -1,
    view: { scale: 1, x: 0, y: 0 },
    tool: "brush", size: 40, comparing: false, spaceHeld: false, running: false,
    pointer: null, lastSeed: null, lastMaskBlob: null, lastMask: null,
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
    for (const id of ["run", "compare", "mask-download", "mask-clear", "download"]) $(id).disabled = !has || ed.running;
    $("undo").disabled = ed.at <= 0 || ed.running;
    $("redo").disabled = ed.at >= ed.history.length - 1 || ed.running;
    $("mask-reuse").disabled = !has || ed.running || !ed.lastMask || ed.lastMask.width !== ed.mask.width ||
      ed.lastMask.height !== ed.mask.height;
  }

  // ------------------------------------------------------------------------------------------------
  // Canvases

  function newCanvas(w, h) {
    const c = document.createElement("canvas");
    c.width = w; c.height = h;
    return c;
  }
  function copyCanvas(src) {
    const c = newCanvas(src.width, src.height);
    c.getContext("2d").drawImage(src, 0, 0);
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

  // ------------------------------------------------------------------------------------------------
  // History: every stroke, mask change and result is one step

  function snapshot() {
    const m = ed.mask.getContext("2d").getImageData(0, 0, ed.mask.width, ed.mask.height);
    ed.history = ed.history.slice(0, ed.at + 1);
    ed.history.push({ work: ed.work, blob: ed.workBlob, name: ed.workName, mask: m });
    if (ed.history.length > MAX_HISTORY) ed.history.shift();
    ed.at = ed.history.length - 1;
    refreshButtons();
  }
  function restore(index) {
    const h = ed.history[index];
    ed.at = index;
    ed.work = h.work; ed.workBlob = h.blob; ed.workName = h.name;
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
      ed.original = canvas; ed.work = canvas; ed.workBlob = blob; ed.workName = name || "image.png";
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
  // Masks in and out: white (255) = fill

  function maskCanvasBW() {
    const w = ed.mask.width, h = ed.mask.height;
    const src = ed.mask.getContext("2d").getImageData(0, 0, w, h).data;
    const out = newCanvas(w, h), octx = out.getContext("2d");
    const img = octx.createImageData(w, h), d = img.data;
    for (let i = 0; i < src.length; i += 4) {
      const v = src[i + 3] > 0 ? 255 : 0;
      d[i] = d[i + 1] = d[i + 2] = v; d[i + 3] = 255;
    }
    octx.putImageData(img, 0, 0);
    return out;
  }
  function maskIsEmpty() {
    const src = ed.mask.getContext("2d").getImageData(0, 0, ed.mask.width, ed.mask.height).data;
    for (let i = 3; i < src.length; i += 4) if (src[i] > 0) return false;
    return true;
  }
  const toBlob = (canvas, type = "image/png") => new Promise((ok) => canvas.toBlob(ok, type));

  async function loadMask(blob) {
    try {
      const c = await decode(blob);
      const w = ed.mask.width, h = ed.mask.height;
      const tmp = newCanvas(w, h), t = tmp.getContext("2d");
      t.imageSmoothingEnabled = false;
      t.drawImage(c, 0, 0, w, h);
      const src = t.getImageData(0, 0, w, h).data;
      let transparent = false;
      for (let i = 3; i < src.length; i += 4) if (src[i] < 255) { transparent = true; break; }
      const m = ed.mask.getContext("2d"), img = m.createImageData(w, h), d = img.data;
      for (let i = 0; i < src.length; i += 4) {
        const luma = 0.299 * src[i] + 0.587 * src[i + 1] + 0.114 * src[i + 2];
        const on = transparent ? src[i + 3] >= 128 : luma >= 128;
        if (on) { d[i] = 255; d[i + 1] = 64; d[i + 2] = 64; d[i + 3] = 255; }
      }
      m.putImageData(img, 0, 0);
      snapshot(); render();
      status(c.width === w && c.height === h ? "mask loaded" : `mask resized from ${c.width}×${c.height} to ${w}×${h}`);
    } catch (e) { status(e.message, true); }
  }

  function download(blob, name) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = name;
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }
  function stem() { return ed.workName.replace(/\.[^.]+$/, "").replace(/_inpainted$/, ""); }
  function extension(type) { return { "image/jpeg": "jpg", "image/webp": "webp" }[type] || "png"; }

  // ------------------------------------------------------------------------------------------------
  // Running: POST v1/inpaint, poll v1/progress/<id>, the result becomes the working image

  function requestId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Array.from({ length: 4 }, () => Math.random().toString(16).slice(2, 10)).join("");
  }
  function headers() {
    const h = {}, key = $("opt-api-key").value.trim();
    if (key) h["X-API-Key"] = key;
    return h;
  }
  function showProgress(fraction, text) {
    $("progress").hidden = fraction === null;
    $("progress-bar").style.width = `${Math.round((fraction || 0) * 100)}%`;
    $("progress-text").textContent = text || "";
  }

  async function run() {
    if (!ed.work || ed.running) return;
    if (maskIsEmpty()) { status("paint over the area to fill first", true); return; }
    ed.running = true; refreshButtons(); setState("running");
    const form = new FormData();
    form.append("image", ed.workBlob, ed.workName);
    ed.lastMaskBlob = await toBlob(maskCanvasBW());
    form.append("mask", ed.lastMaskBlob, "mask.png");
    form.append("preset", $("opt-preset").value);
    const fields = { num_inference_steps: "opt-steps", guidance_scale: "opt-guidance", seed: "opt-seed",
                     hd_strategy: "opt-hd" };
    for (const [name, id] of Object.entries(fields)) if ($(id).value !== "") form.append(name, $(id).value);
    const id = requestId(), started = performance.now();
    showProgress(0, "sending");
    const poll = setInterval(async () => {
      try {
        const r = await fetch(`v1/progress/${id}`, { headers: headers() });
        const p = await r.json();
        if (p.state === "queued") showProgress(0, "waiting in the queue");
        else if (p.state === "running" && p.total) showProgress(p.step / p.total, `step ${p.step} of ${p.total}`);
      } catch (e) { /* the answer will tell */ }
    }, 250);
    try {
      const r = await fetch("v1/inpaint", { method: "POST", body: form, headers: { ...headers(), "X-Request-Id": id } });
      if (!r.ok) {
        let message = `${r.status} ${r.statusText}`;
        try { message = (await r.json()).error || message; } catch (e) { /* not JSON */ }
        if (r.status === 503) message += ` (retry in ${r.headers.get("Retry-After") || "a few"} s)`;
        throw new Error(message);
      }
      const blob = await r.blob();
      const result = await decode(blob);
      ed.lastMask = ed.mask.getContext("2d").getImageData(0, 0, ed.mask.width, ed.mask.height);
      ed.lastSeed = r.headers.get("X-Seed");
      ed.work = result; ed.workBlob = blob; ed.workName = `${stem()}_inpainted.${extension(blob.type)}`;
      ed.mask = newCanvas(result.width, result.height);
      if (result.width !== ed.original.width || result.height !== ed.original.height) ed.original = result;
      snapshot();
      if (!$("opt-seed-lock").checked) $("opt-seed").placeholder = `random (last: ${ed.lastSeed})`;
      else $("opt-seed").value = ed.lastSeed;
      $("last-info").textContent = `seed ${ed.lastSeed} · ${((performance.now() - started) / 1000).toFixed(1)} s`;
      setState("done");
      status(`done in ${((performance.now() - started) / 1000).toFixed(1)} s (seed ${ed.lastSeed}); paint again to keep editing`);
    } catch (e) {
      setState("error");
      status(e.message, true);
    } finally {
      clearInterval(poll);
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
  $("mask-file").addEventListener("change", (ev) => {
    const f = ev.target.files[0]; if (f && ed.work) loadMask(f); ev.target.value = "";
  });
  for (const t of ["brush", "eraser", "pan"]) $(`tool-${t}`).addEventListener("click", () => setTool(t));
  $("brush-size").addEventListener("input", (ev) => setSize(+ev.target.value));
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("zoom-in").addEventListener("click", () => zoomCentre(1.25));
  $("zoom-out").addEventListener("click", () => zoomCentre(0.8));
  $("zoom-fit").addEventListener("click", fit);
  $("run").addEventListener("click", run);
  const cmp = $("compare");
  cmp.addEventListener("pointerdown", () => setComparing(true));
  for (const e of ["pointerup", "pointerleave", "pointercancel"]) cmp.addEventListener(e, () => setComparing(false));
  $("options-toggle").addEventListener("click", () => {
    const open = $("options").hidden;
    $("options").hidden = !open;
    $("options-toggle").setAttribute("aria-expanded", String(open));
    resize(); fit();
  });
  $("mask-download").addEventListener("click", async () => download(await toBlob(maskCanvasBW()), `${stem()}_mask.png`));
  $("mask-clear").addEventListener("click", () => {
    ed.mask.getContext("2d").clearRect(0, 0, ed.mask.width, ed.mask.height); snapshot(); render();
  });
  $("mask-reuse").addEventListener("click", () => {
    if (!ed.lastMask) return;
    ed.mask.getContext("2d").putImageData(ed.lastMask, 0, 0); snapshot(); render();
  });
  $("download").addEventListener("click", () => ed.workBlob && download(ed.workBlob, ed.workName));

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

  // For scripted use and the browser test: read-only views of the editor's state.
  window.moebiusEditor = {
    state: () => document.body.dataset.state,
    imageSize: () => (ed.work ? [ed.work.width, ed.work.height] : null),
    lastSeed: () => ed.lastSeed,
    view: () => ({ ...ed.view }),
    maskDataURL: () => maskCanvasBW().toDataURL("image/png"),
    lastMaskDataURL: () => new Promise((ok) => {
      if (!ed.lastMaskBlob) return ok(null);
      const r = new FileReader(); r.onload = () => ok(r.result); r.readAsDataURL(ed.lastMaskBlob);
    }),
    workDataURL: () => new Promise((ok) => {
      const r = new FileReader(); r.onload = () => ok(r.result); r.readAsDataURL(ed.workBlob);
    }),
  };

  setTool("brush");
  setSize(40);
  resize();
  refreshButtons();
})();
