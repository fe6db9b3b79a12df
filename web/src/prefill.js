// OpenCV's cv2.inpaint(..., radius, INPAINT_NS) for an 8-bit RGB image, written for the page: the hole is
// filled pixel by pixel in fast-marching order (nearest the known border first), each pixel a weighted mean
// of the known pixels within `radius`, weighted by closeness and by how well the direction to them follows
// the image's isophotes. The float32 arithmetic and the visiting order follow OpenCV, so a hole inside the
// image is filled exactly as moebius.pipeline.prefill (which calls OpenCV) fills it; where a hole touches
// the image's top or left edge, OpenCV 5 reads its border pixels differently and the fill can differ there
// by a few levels.

const f32 = Math.fround;
const KNOWN = 0, BAND = 1, INSIDE = 2;
export const PREFILL_RADIUS = 3;

/** A min-heap of (T, insertion order): pops the smallest T, ties in the order they were pushed. */
class FifoHeap {
  constructor() { this.t = []; this.seq = []; this.i = []; this.j = []; this.count = 0; this.n = 0; }
  less(a, b) { return this.t[a] < this.t[b] || (this.t[a] === this.t[b] && this.seq[a] < this.seq[b]); }
  swap(a, b) {
    for (const k of ["t", "seq", "i", "j"]) { const v = this[k][a]; this[k][a] = this[k][b]; this[k][b] = v; }
  }
  push(i, j, t) {
    let k = this.n++;
    this.t[k] = t; this.seq[k] = this.count++; this.i[k] = i; this.j[k] = j;
    while (k > 0) {
      const p = (k - 1) >> 1;
      if (!this.less(k, p)) break;
      this.swap(k, p); k = p;
    }
  }
  pop() {
    if (this.n === 0) return null;
    const out = [this.i[0], this.j[0]];
    this.n--;
    if (this.n > 0) {
      this.t[0] = this.t[this.n]; this.seq[0] = this.seq[this.n]; this.i[0] = this.i[this.n]; this.j[0] = this.j[this.n];
      let k = 0;
      for (;;) {
        const l = 2 * k + 1, r = l + 1;
        let m = k;
        if (l < this.n && this.less(l, m)) m = l;
        if (r < this.n && this.less(r, m)) m = r;
        if (m === k) break;
        this.swap(k, m); k = m;
      }
    }
    return out;
  }
}

/**
 * rgb: Uint8Array H×W×3, hole: Uint8Array H×W (1 = fill) -> a new rgb with the hole filled by Navier–Stokes;
 * pixels outside the hole are unchanged.
 */
export function navierStokesFill(rgb, hole, width, height, radius = PREFILL_RADIUS) {
  const out = rgb.slice();
  const range = Math.min(Math.max(Math.round(radius), 1), 100);
  // Work on a grid one pixel larger on every side: cell (i, j) is pixel (i − 1, j − 1).
  const rows = height + 2, cols = width + 2;
  const mask = new Uint8Array(rows * cols);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) if (hole[y * width + x]) mask[(y + 1) * cols + x + 1] = 1;
  for (let j = 0; j < cols; j++) { mask[j] = 0; mask[(rows - 1) * cols + j] = 0; }
  for (let i = 0; i < rows; i++) { mask[i * cols] = 0; mask[i * cols + cols - 1] = 0; }
  // the narrow band: the hole dilated by a 3×3 cross, minus the hole, off the grid's border
  const band = new Uint8Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
    const c = i * cols + j;
    const near = mask[c] || (i > 0 && mask[c - cols]) || (i < rows - 1 && mask[c + cols]) ||
      (j > 0 && mask[c - 1]) || (j < cols - 1 && mask[c + 1]);
    band[c] = near && !mask[c] && i > 0 && j > 0 && i < rows - 1 && j < cols - 1 ? 1 : 0;
  }
  const flag = new Uint8Array(rows * cols);  // KNOWN
  const t = new Float32Array(rows * cols).fill(1.0e6);
  const heap = new FifoHeap();
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
    const c = i * cols + j;
    if (band[c]) { heap.push(i, j, 0); flag[c] = BAND; t[c] = 0; }
    if (mask[c]) flag[c] = INSIDE;
  }

  const solve = (i1, j1, i2, j2) => {
    const a11 = t[i1 * cols + j1], a22 = t[i2 * cols + j2], m12 = Math.min(a11, a22);
    const in1 = flag[i1 * cols + j1] === INSIDE, in2 = flag[i2 * cols + j2] === INSIDE;
    let sol;
    if (!in1 && !in2) {
      sol = Math.abs(a11 - a22) >= 1.0 ? 1 + m12 : (a11 + a22 + Math.sqrt(2 - (a11 - a22) * (a11 - a22))) * 0.5;
    } else if (!in1) sol = 1 + a11;
    else if (!in2) sol = 1 + a22;
    else sol = 1 + m12;
    return f32(sol);
  };
  const px = (y, x, c) => out[(y * width + x) * 3 + c];
  const NEIGHBOURS = [[-1, 0], [0, -1], [1, 0], [0, 1]];

  for (let popped = heap.pop(); popped !== null; popped = heap.pop()) {
    const [ii, jj] = popped;
    flag[ii * cols + jj] = KNOWN;
    for (const [di, dj] of NEIGHBOURS) {
      const i = ii + di, j = jj + dj;
      if (i <= 0 || j <= 0 || i > rows - 1 || j > cols - 1) continue;
      if (flag[i * cols + j] !== INSIDE) continue;
      const dist = Math.min(solve(i - 1, j, i, j - 1), solve(i + 1, j, i, j - 1),
                            solve(i - 1, j, i, j + 1), solve(i + 1, j, i, j + 1));
      t[i * cols + j] = dist;
      for (let color = 0; color < 3; color++) {
        let ia = 0, s = f32(1.0e-20);
        for (let k = i - range; k <= i + range; k++) {
          const km = k - 1 + (k === 1 ? 1 : 0), kp = k - 1 - (k === rows - 2 ? 1 : 0);
          for (let l = j - range; l <= j + range; l++) {
            const lm = l - 1 + (l === 1 ? 1 : 0), lp = l - 1 - (l === cols - 2 ? 1 : 0);
            if (!(k > 0 && l > 0 && k < rows - 1 && l < cols - 1)) continue;
            if (flag[k * cols + l] === INSIDE || (l - j) * (l - j) + (k - i) * (k - i) > range * range) continue;
            const ry = k - i, rx = l - j;
            const len = ry * ry + rx * rx;
            const dst = f32(1 / f32(len * len + 1));
            const up = flag[(k - 1) * cols + l] !== INSIDE, down = flag[(k + 1) * cols + l] !== INSIDE;
            const left = flag[k * cols + l - 1] !== INSIDE, right = flag[k * cols + l + 1] !== INSIDE;
            let gx = 0, gy = 0;
            if (down && up) gx = Math.abs(px(kp + 1, lm, color) - px(kp, lm, color)) + Math.abs(px(kp, lm, color) - px(km - 1, lm, color));
            else if (down) gx = Math.abs(px(kp + 1, lm, color) - px(kp, lm, color)) * 2;
            else if (up) gx = Math.abs(px(kp, lm, color) - px(km - 1, lm, color)) * 2;
            if (right && left) gy = Math.abs(px(km, lp + 1, color) - px(km, lm, color)) + Math.abs(px(km, lm, color) - px(km, lm - 1, color));
            else if (right) gy = Math.abs(px(km, lp + 1, color) - px(km, lm, color)) * 2;
            else if (left) gy = Math.abs(px(km, lm, color) - px(km, lm - 1, color)) * 2;
            gx = -gx;
            const dot = f32(f32(rx * gx) + f32(ry * gy));
            let dir;
            if (Math.abs(dot) <= 0.01) dir = f32(0.000001);
            else dir = f32(Math.abs(dot / Math.sqrt(f32(len * f32(f32(gx * gx) + f32(gy * gy))))));
            const w = f32(dst * dir);
            ia = f32(ia + w * px(km, lm, color));  // one rounding: OpenCV's build fuses this multiply-add
            s = f32(s + w);
          }
        }
        out[((i - 1) * width + j - 1) * 3 + color] = roundHalfEven8(ia / s);
      }
      flag[i * cols + j] = BAND;
      heap.push(i, j, dist);
    }
  }
  return out;
}

function roundHalfEven8(v) {
  if (!(v > 0)) return 0;
  if (v >= 255) return 255;
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 === 1 ? r - 1 : r;
}
