// Putting generated pixels back, as moebius.pipeline.blend does: the keep-unmasked integer blend, colour
// compensation, and the official radius-3 feathered paste.

import { boundingBox, gaussianBlurU8 } from "./masks.js";

const OFFICIAL_PASTE_RADIUS = 3;
const COMPENSATE_FACTOR = 1.1;
const COMPENSATE_GROW = 10;

/** round((gen·a + orig·(255 − a)) / 255) per channel: exact at a = 0 (input kept) and a = 255. */
export function pasteKeepUnmasked(generated, original, alpha) {
  const out = new Uint8Array(original.length);
  for (let p = 0; p < alpha.length; p++) {
    const a = alpha[p];
    for (let c = 0; c < 3; c++) {
      const i = p * 3 + c;
      out[i] = Math.floor((generated[i] * a + original[i] * (255 - a) + 127) / 255);
    }
  }
  return out;
}

function compensateRegion(hole, width, height) {
  const region = new Uint8Array(hole.length);
  const box = boundingBox(hole, width, height);
  if (box === null) return region;
  const [x0, y0, x1, y1] = [box[0], box[1], box[2] - 1, box[3] - 1];
  const cx = Math.floor((x0 + x1) / 2), cy = Math.floor((y0 + y1) / 2);
  const hx = Math.ceil((x1 - x0 + COMPENSATE_GROW) / 2), hy = Math.ceil((y1 - y0 + COMPENSATE_GROW) / 2);
  for (let y = Math.max(cy - hy, 0); y < Math.min(cy + hy + 1, height); y++) {
    for (let x = Math.max(cx - hx, 0); x < Math.min(cx + hx + 1, width); x++) region[y * width + x] = hole[y * width + x] ? 0 : 1;
  }
  return region;
}

function colourDelta(generated, original, hole, width, height) {
  const region = compensateRegion(hole, width, height);
  const sums = [0, 0, 0, 0, 0, 0];
  let n = 0;
  for (let p = 0; p < region.length; p++) {
    if (!region[p]) continue;
    n++;
    for (let c = 0; c < 3; c++) { sums[c] += original[p * 3 + c]; sums[c + 3] += generated[p * 3 + c]; }
  }
  return n === 0 ? [0, 0, 0] : [0, 1, 2].map((c) => sums[c] / n - sums[c + 3] / n);
}

/** gen + 1.1·δ, rounded (half to even) and clipped, δ the surroundings' mean colour minus the generated one. */
export function shiftColour(generated, original, hole, width, height) {
  const delta = colourDelta(generated, original, hole, width, height), out = new Uint8Array(generated.length);
  for (let i = 0; i < generated.length; i++) {
    const v = generated[i] + COMPENSATE_FACTOR * delta[i % 3];
    let r = Math.round(v);
    if (Math.abs(r - v) === 0.5 && r % 2 !== 0) r -= 1;
    out[i] = Math.min(255, Math.max(0, r));
  }
  return out;
}

/** The official paste: m = GaussianBlur(3) of the mask / 255 over the whole tile, floats truncated. */
export function pasteOfficial(generated, original, hole, width, height, compensate) {
  const mask = new Uint8Array(hole.length);
  for (let i = 0; i < hole.length; i++) mask[i] = hole[i] ? 255 : 0;
  const m = gaussianBlurU8(mask, width, height, OFFICIAL_PASTE_RADIUS);
  const delta = compensate ? colourDelta(generated, original, hole, width, height) : [0, 0, 0];
  const out = new Uint8Array(generated.length);
  for (let i = 0; i < generated.length; i++) {
    const w = m[Math.floor(i / 3)] / 255.0;
    let g = generated[i] / 255.0;
    if (compensate) g = g + (COMPENSATE_FACTOR * delta[i % 3]) / 255.0;
    const v = Math.min(1, Math.max(0, g * w + (original[i] / 255.0) * (1.0 - w))) * 255.0;
    out[i] = Math.trunc(v);
  }
  return out;
}
