// Which part of the image the model sees, and at what size: moebius.pipeline.hd's strategies (crop around
// the mask above the trigger size, resize, or the whole image), tiles cut, resized (Pillow's Lanczos) and
// padded by mirroring to the model's size multiple, and their way back.

import { downsampleAny } from "./masks.js";

const COMPONENT_CELL = 8;

/** [strategy, [{box: [x0, y0, x1, y1], size: [w, h]}]] for a hole map and the preset's HD settings. */
export function planRegions(hole, width, height, s) {
  const full = [0, 0, width, height];
  const scaled = (w, h, scale) => [Math.max(1, roundHalfEven(w * scale)), Math.max(1, roundHalfEven(h * scale))];
  if (s.hd_strategy === "resize") {
    return ["resize", [{ box: full, size: scaled(width, height, Math.min(1.0, s.resize_limit / Math.max(width, height))) }]];
  }
  if (s.hd_strategy === "crop" && Math.max(width, height) > s.crop_trigger_size) {
    return ["crop", cropBoxes(hole, width, height, s.crop_margin, s.native_size).map((box) => {
      const bw = box[2] - box[0], bh = box[3] - box[1];
      return { box, size: scaled(bw, bh, Math.min(1.0, s.native_size / Math.min(bw, bh))) };
    })];
  }
  return ["original", [{ box: full, size: [width, height] }]];
}

function roundHalfEven(v) {
  const r = Math.round(v);
  return Math.abs(r - v) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Boxes (to 8 px cells) of the 8-connected hole components, in raster order of their first cell. */
export function componentBoxes(hole, width, height, cell = COMPONENT_CELL) {
  const gh = Math.ceil(height / cell), gw = Math.ceil(width / cell);
  const grid = new Uint8Array(gh * gw), seen = new Uint8Array(gh * gw);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
    if (hole[y * width + x]) grid[Math.floor(y / cell) * gw + Math.floor(x / cell)] = 1;
  }
  const boxes = [];
  for (let start = 0; start < grid.length; start++) {
    if (!grid[start] || seen[start]) continue;
    seen[start] = 1;
    const queue = [start];
    let r0 = Math.floor(start / gw), r1 = r0, c0 = start % gw, c1 = c0;
    for (let q = 0; q < queue.length; q++) {
      const r = Math.floor(queue[q] / gw), c = queue[q] % gw;
      r0 = Math.min(r0, r); r1 = Math.max(r1, r); c0 = Math.min(c0, c); c1 = Math.max(c1, c);
      for (let nr = r - 1; nr <= r + 1; nr++) for (let nc = c - 1; nc <= c + 1; nc++) {
        const n = nr * gw + nc;
        if (nr >= 0 && nr < gh && nc >= 0 && nc < gw && grid[n] && !seen[n]) { seen[n] = 1; queue.push(n); }
      }
    }
    boxes.push([c0 * cell, r0 * cell, Math.min((c1 + 1) * cell, width), Math.min((r1 + 1) * cell, height)]);
  }
  return boxes;
}

function growTo(lo, hi, size, limit) {
  size = Math.min(size, limit);
  const extra = size - (hi - lo);
  if (extra <= 0) return [lo, hi];
  lo -= Math.floor(extra / 2);
  hi = lo + size;
  if (lo < 0) [lo, hi] = [0, size];
  if (hi > limit) [lo, hi] = [limit - size, limit];
  return [lo, hi];
}

const overlap = (a, b) => a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];

/** One box per group of components: + margin, grown to min_size per side, overlapping boxes merged. */
export function cropBoxes(hole, width, height, margin, minSize) {
  const boxes = componentBoxes(hole, width, height).map(([x0, y0, x1, y1]) => {
    const [a0, a1] = growTo(Math.max(x0 - margin, 0), Math.min(x1 + margin, width), minSize, width);
    const [b0, b1] = growTo(Math.max(y0 - margin, 0), Math.min(y1 + margin, height), minSize, height);
    return [a0, b0, a1, b1];
  });
  let merged = true;
  while (merged) {
    merged = false;
    outer: for (let i = 0; i < boxes.length; i++) {
      for (let j = i + 1; j < boxes.length; j++) {
        if (overlap(boxes[i], boxes[j])) {
          const a = boxes[i], b = boxes.splice(j, 1)[0];
          boxes[i] = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[2], b[2]), Math.max(a[3], b[3])];
          merged = true;
          break outer;
        }
      }
    }
  }
  return boxes.sort((a, b) => a[1] - b[1] || a[0] - b[0]);
}

// ----------------------------------------------------------------------------------------------------
// Pillow's Lanczos resampling of 8-bit RGB (separable, 22-bit fixed-point coefficients, horizontal first)

const PRECISION_BITS = 32 - 8 - 2;

function lanczos(x) {
  const sinc = (v) => (v === 0 ? 1 : Math.sin(Math.PI * v) / (Math.PI * v));
  return x > -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0;
}

function coefficients(inSize, outSize) {
  const scale = inSize / outSize, filterScale = Math.max(scale, 1), support = 3 * filterScale;
  const taps = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale, ss = 1 / filterScale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const k = [];
    let total = 0;
    for (let x = 0; x < xmax; x++) { const w = lanczos((x + xmin - center + 0.5) * ss); k.push(w); total += w; }
    const fixed = k.map((w) => { const v = total !== 0 ? w / total : w; return Math.trunc(v * (1 << PRECISION_BITS) + (v < 0 ? -0.5 : 0.5)); });
    taps.push({ xmin, k: fixed });
  }
  return taps;
}

const clip8 = (v) => { const r = Math.floor(v / (1 << PRECISION_BITS)); return r < 0 ? 0 : r > 255 ? 255 : r; };

function resampleRows(rgb, width, height, newW) {
  const taps = coefficients(width, newW), out = new Uint8Array(newW * height * 3);
  for (let y = 0; y < height; y++) for (let xx = 0; xx < newW; xx++) {
    const { xmin, k } = taps[xx];
    for (let c = 0; c < 3; c++) {
      let ss = 1 << (PRECISION_BITS - 1);
      for (let x = 0; x < k.length; x++) ss += rgb[(y * width + x + xmin) * 3 + c] * k[x];
      out[(y * newW + xx) * 3 + c] = clip8(ss);
    }
  }
  return out;
}

function resampleColumns(rgb, width, height, newH) {
  const taps = coefficients(height, newH), out = new Uint8Array(width * newH * 3);
  for (let yy = 0; yy < newH; yy++) {
    const { xmin, k } = taps[yy];
    for (let x = 0; x < width; x++) for (let c = 0; c < 3; c++) {
      let ss = 1 << (PRECISION_BITS - 1);
      for (let y = 0; y < k.length; y++) ss += rgb[((y + xmin) * width + x) * 3 + c] * k[y];
      out[(yy * width + x) * 3 + c] = clip8(ss);
    }
  }
  return out;
}

/** Image.resize((newW, newH), Image.LANCZOS) of an H×W×3 Uint8Array. */
export function resizeLanczos(rgb, width, height, newW, newH) {
  let out = rgb;
  if (newW !== width) out = resampleRows(out, width, height, newW);
  if (newH !== height) out = resampleColumns(out, newW, height, newH);
  return out === rgb ? rgb.slice() : out;
}

// ----------------------------------------------------------------------------------------------------
// Tiles

function cropRGB(rgb, width, [x0, y0, x1, y1]) {
  const w = x1 - x0, out = new Uint8Array(w * (y1 - y0) * 3);
  for (let y = y0; y < y1; y++) out.set(rgb.subarray((y * width + x0) * 3, (y * width + x1) * 3), (y - y0) * w * 3);
  return out;
}

function cropMap(map, width, [x0, y0, x1, y1]) {
  const w = x1 - x0, out = new Uint8Array(w * (y1 - y0));
  for (let y = y0; y < y1; y++) out.set(map.subarray(y * width + x0, y * width + x1), (y - y0) * w);
  return out;
}

/** numpy's "symmetric" padding index (edge pixel repeated, then mirrored). */
function mirror(i, n) {
  const period = 2 * n;
  i = ((i % period) + period) % period;
  return i < n ? i : period - 1 - i;
}

/** Cut a region, resize it (Lanczos; the hole losing no pixel) and pad it to `multiple` by mirroring. */
export function extractTile(rgb, hole, width, region, multiple) {
  let crop = cropRGB(rgb, width, region.box), cropHole = cropMap(hole, width, region.box);
  const [bw, bh] = [region.box[2] - region.box[0], region.box[3] - region.box[1]];
  const [w, h] = region.size;
  if (w !== bw || h !== bh) {
    crop = resizeLanczos(crop, bw, bh, w, h);
    cropHole = downsampleAny(cropHole, bw, bh, w, h);
  }
  const pw = w + ((multiple - (w % multiple)) % multiple), ph = h + ((multiple - (h % multiple)) % multiple);
  if (pw === w && ph === h) return { rgb: crop, hole: cropHole, width: w, height: h, content: [w, h] };
  const outRGB = new Uint8Array(pw * ph * 3), outHole = new Uint8Array(pw * ph);
  for (let y = 0; y < ph; y++) for (let x = 0; x < pw; x++) {
    const sy = mirror(y, h), sx = mirror(x, w);
    for (let c = 0; c < 3; c++) outRGB[(y * pw + x) * 3 + c] = crop[(sy * w + sx) * 3 + c];
    if (y < h && x < w) outHole[y * pw + x] = cropHole[y * w + x];
  }
  return { rgb: outRGB, hole: outHole, width: pw, height: ph, content: [w, h] };
}

/** The tile's generated pixels (tile-sized H×W×3) back to the region's box size. */
export function restoreTile(generated, tile, region) {
  const [w, h] = tile.content;
  const out = cropRGB(generated, tile.width, [0, 0, w, h]);
  const [bw, bh] = [region.box[2] - region.box[0], region.box[3] - region.box[1]];
  return w !== bw || h !== bh ? resizeLanczos(out, w, h, bw, bh) : out;
}
