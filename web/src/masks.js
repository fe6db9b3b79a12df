// Mask operations on hole maps (Uint8Array of 0/1, row-major H×W), the same rules as
// moebius.pipeline.masks: threshold, dilate, PIL-exact Gaussian feather, resampling to latent or working size.

const f32 = Math.fround;

/** Soft 0–255 mask -> hole map: value >= threshold is a hole. */
export function binarize(soft, threshold = 127.5, invert = false) {
  const out = new Uint8Array(soft.length);
  for (let i = 0; i < soft.length; i++) out[i] = (soft[i] >= threshold) !== invert ? 1 : 0;
  return out;
}

/** [x0, y0, x1, y1] (end-exclusive) of the set pixels, or null. */
export function boundingBox(hole, width, height) {
  let x0 = width, y0 = height, x1 = -1, y1 = -1;
  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let x = 0; x < width; x++) {
      if (hole[row + x]) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        y1 = y;
      }
    }
  }
  return x1 < 0 ? null : [x0, y0, x1 + 1, y1 + 1];
}

function growBox([x0, y0, x1, y1], pad, width, height) {
  return [Math.max(x0 - pad, 0), Math.max(y0 - pad, 0), Math.min(x1 + pad, width), Math.min(y1 + pad, height)];
}

function crop(map, width, [x0, y0, x1, y1]) {
  const w = x1 - x0, out = new map.constructor(w * (y1 - y0));
  for (let y = y0; y < y1; y++) out.set(map.subarray(y * width + x0, y * width + x1), (y - y0) * w);
  return out;
}

function paste(map, width, [x0, y0, x1, y1], part) {
  const w = x1 - x0;
  for (let y = y0; y < y1; y++) map.set(part.subarray((y - y0) * w, (y - y0 + 1) * w), y * width + x0);
}

function grow1px(hole, w, h, vertical) {
  const out = hole.slice();
  if (vertical) {
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      if ((y > 0 && hole[(y - 1) * w + x]) || (y < h - 1 && hole[(y + 1) * w + x])) out[y * w + x] = 1;
    }
  } else {
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      if ((x > 0 && hole[y * w + x - 1]) || (x < w - 1 && hole[y * w + x + 1])) out[y * w + x] = 1;
    }
  }
  return out;
}

/** Grow a hole by `radius` px: alternating 3×3 square and plus-shaped max filters (a near-disc octagon). */
export function dilate(hole, width, height, radius) {
  const box = boundingBox(hole, width, height);
  if (radius <= 0 || box === null) return hole.slice();
  const region = growBox(box, radius + 1, width, height);
  const w = region[2] - region[0], h = region[3] - region[1];
  let grown = crop(hole, width, region);
  for (let i = 0; i < radius; i++) {
    const across = grow1px(grown, w, h, false);
    if (i % 2 === 0) grown = grow1px(across, w, h, true);
    else {
      const down = grow1px(grown, w, h, true);
      for (let k = 0; k < across.length; k++) across[k] |= down[k];
      grown = across;
    }
  }
  const out = hole.slice();
  paste(out, width, region, grown);
  return out;
}

/** Pillow's box radius for a Gaussian of `radius` made of `passes` box blurs (float32 as Pillow computes it). */
function boxRadius(radius, passes) {
  const sigma2 = f32(f32(radius * radius) / passes);
  const L = f32(Math.sqrt(12.0 * sigma2 + 1.0));
  const l = f32(Math.floor((L - 1.0) / 2.0));
  let a = f32(f32(2 * l + 1) * f32(f32(l * f32(l + 1)) - f32(3 * sigma2)));
  a = f32(a / f32(6 * f32(sigma2 - f32(f32(l + 1) * f32(l + 1)))));
  return f32(l + a);
}

/** One horizontal box-blur pass of every row, in Pillow's 8.24 fixed point with edge pixels repeated. */
function boxBlurRows(src, width, height, floatRadius) {
  const radius = Math.trunc(floatRadius);
  const ww = Math.trunc(f32(16777216 / f32(f32(floatRadius * 2) + 1)));
  const fw = Math.floor((16777216 - (radius * 2 + 1) * ww) / 2);
  const last = width - 1;
  const out = new Uint8Array(src.length);
  const at = (row, x) => src[row + Math.min(Math.max(x, 0), last)];
  for (let y = 0; y < height; y++) {
    const row = y * width;
    let acc = 0;
    for (let k = -radius - 1; k < radius; k++) acc += at(row, k);  // the window centred on pixel -1
    for (let x = 0; x <= last; x++) {
      acc += at(row, x + radius) - at(row, x - radius - 1);
      const bulk = acc * ww + (at(row, x - radius - 1) + at(row, x + radius + 1)) * fw;
      out[row + x] = Math.floor((bulk + 8388608) / 16777216);
    }
  }
  return out;
}

function transpose(src, width, height) {
  const out = new Uint8Array(src.length);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) out[x * height + y] = src[y * width + x];
  return out;
}

/** PIL's ImageFilter.GaussianBlur(radius) of an 8-bit single-channel image: three box passes per axis. */
export function gaussianBlurU8(map, width, height, radius) {
  if (radius <= 0) return map.slice();
  const r = boxRadius(radius, 3);
  let out = map;
  if (r !== 0) {
    for (let i = 0; i < 3; i++) out = boxBlurRows(out, width, height, r);
    out = transpose(out, width, height);
    for (let i = 0; i < 3; i++) out = boxBlurRows(out, height, width, r);
    out = transpose(out, height, width);
  }
  return out === map ? map.slice() : out;
}

/** Paste weight 0–255: max(255·hole, GaussianBlur(255·hole)), computed on the hole's box plus the blur's reach. */
export function featherAlpha(hole, width, height, radius) {
  const alpha = new Uint8Array(hole.length);
  for (let i = 0; i < hole.length; i++) alpha[i] = hole[i] ? 255 : 0;
  const box = boundingBox(hole, width, height);
  if (radius <= 0 || box === null) return alpha;
  const region = growBox(box, Math.ceil(4 * radius) + 4, width, height);
  const w = region[2] - region[0], h = region[3] - region[1];
  const part = crop(alpha, width, region);
  const blurred = gaussianBlurU8(part, w, h, radius);
  for (let i = 0; i < part.length; i++) part[i] = Math.max(part[i], blurred[i]);
  paste(alpha, width, region, part);
  return alpha;
}

function anyPoolRows(hole, w, h, size) {
  // each output row i covers source rows floor(i·h/size) .. ceil((i+1)·h/size)
  const out = new Uint8Array(size * w);
  for (let i = 0; i < size; i++) {
    const start = Math.floor((i * h) / size), end = Math.ceil(((i + 1) * h) / size);
    for (let y = start; y < end; y++) for (let x = 0; x < w; x++) if (hole[y * w + x]) out[i * w + x] = 1;
  }
  return out;
}

/** Resample a hole map to (newW, newH) losing no hole pixel: any-pool to shrink, nearest to enlarge. */
export function downsampleAny(hole, width, height, newW, newH) {
  if (newW === width && newH === height) return hole.slice();
  if (newW <= width && newH <= height) {
    const rows = anyPoolRows(hole, width, height, newH);
    return transpose(anyPoolRows(transpose(rows, width, newH), newH, width, newW), newH, newW);
  }
  const index = (n, size) => {
    const scale = f32(f32(n) / f32(size));
    return Array.from({ length: size }, (_, i) => Math.min(Math.floor(f32(f32(i) * scale)), n - 1));
  };
  const rows = index(height, newH), cols = index(width, newW), out = new Uint8Array(newW * newH);
  for (let y = 0; y < newH; y++) for (let x = 0; x < newW; x++) out[y * newW + x] = hole[rows[y] * width + cols[x]];
  return out;
}

/** Pixel hole (h×w 0/1) -> latent mask Float32Array (h/f × w/f): "nearest" = top-left pixel, "max" = any pixel. */
export function latentMask(hole, width, height, factor, mode) {
  const lw = width / factor, lh = height / factor, out = new Float32Array(lw * lh);
  for (let y = 0; y < lh; y++) for (let x = 0; x < lw; x++) {
    let v = 0;
    if (mode === "nearest") v = hole[y * factor * width + x * factor];
    else for (let dy = 0; dy < factor && !v; dy++) for (let dx = 0; dx < factor; dx++) {
      if (hole[(y * factor + dy) * width + x * factor + dx]) { v = 1; break; }
    }
    out[y * lw + x] = v;
  }
  return out;
}
