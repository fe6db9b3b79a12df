// One inpainting call in the page, the arithmetic of moebius.onnx.OnnxInpaintPipeline step for step:
// masks -> tiles (HD crop) -> per group of equal-size tiles: pre-fill, VAE encode, the DDIM loop with
// classifier-free guidance, VAE decode -> paste back. The three graphs run on onnxruntime-web; everything
// else is here, in float32 where the Python pipeline computes in float32, so a seed gives the same image.

import { TorchCompatibleGenerator, parseSeed } from "./random.js";
import { binarize, dilate, featherAlpha, latentMask } from "./masks.js";
import { planRegions, extractTile, restoreTile } from "./hd.js";
import { navierStokesFill } from "./prefill.js";
import { pasteKeepUnmasked, pasteOfficial, shiftColour } from "./blend.js";

const f32 = Math.fround;

export class CancelledError extends Error {
  constructor() { super("cancelled"); this.name = "CancelledError"; }
}

/** The DDIM of the manifest's tables (moebius.onnx.scheduler.NumpyDDIM). */
export class DDIM {
  constructor(scheduler) {
    this.sqrtAlpha = Float32Array.from([...scheduler.sqrt_alphas_cumprod, scheduler.sqrt_final_alpha_cumprod]);
    this.sqrtOneMinus = Float32Array.from([...scheduler.sqrt_one_minus_alphas_cumprod,
                                           scheduler.sqrt_one_minus_final_alpha_cumprod]);
    this.stepsOffset = scheduler.steps_offset || 0;
    this.prediction = scheduler.prediction_type || "epsilon";
    this.train = this.sqrtAlpha.length - 1;
  }

  timesteps(steps, strength) {
    if (!(steps >= 1 && steps <= this.train)) throw new Error(`steps must lie in [1, ${this.train}], got ${steps}`);
    if (!(strength > 0 && strength <= 1)) throw new Error(`strength must lie in (0, 1], got ${strength}`);
    const run = Math.min(Math.trunc(steps * strength), steps);
    if (run < 1) throw new Error(`strength ${strength} with ${steps} steps runs no step at all`);
    const all = Array.from({ length: steps }, (_, k) => k * Math.floor(this.train / steps) + this.stepsOffset).reverse();
    return all.slice(steps - run);
  }

  addNoise(x0, noise, t) {
    const a = this.sqrtAlpha[t], b = this.sqrtOneMinus[t], out = new Float32Array(x0.length);
    for (let i = 0; i < x0.length; i++) out[i] = f32(f32(a * x0[i]) + f32(b * noise[i]));
    return out;
  }

  step(output, t, sample, steps) {
    let prev = t - Math.floor(this.train / steps);
    if (prev < 0) prev = this.train;
    const a = this.sqrtAlpha[t], b = this.sqrtOneMinus[t], ap = this.sqrtAlpha[prev], bp = this.sqrtOneMinus[prev];
    const out = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      let x0, eps;
      if (this.prediction === "epsilon") {
        x0 = f32(f32(sample[i] - f32(b * output[i])) / a); eps = output[i];
      } else {
        x0 = f32(f32(a * sample[i]) - f32(b * output[i])); eps = f32(f32(b * sample[i]) + f32(a * output[i]));
      }
      out[i] = f32(f32(ap * x0) + f32(bp * eps));
    }
    return out;
  }
}

/** The settings of a call: the manifest's "default" preset (the weights' call defaults applied) + overrides. */
export function callSettings(manifest, overrides = {}) {
  const presets = manifest.presets || {};
  const base = presets.default || { ...manifest.defaults };
  const s = { ...base };
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined && v !== null && v !== "") s[k] = v;
  if (s.size_rule !== "native") throw new Error("the page runs the native size rule only (the official preset squashes to 512²)");
  if (!["none", "navier-stokes"].includes(s.prefill)) throw new Error(`the page has no ${s.prefill} pre-fill (navier-stokes or none)`);
  if (s.scheduler && s.scheduler !== "ddim") throw new Error("an ONNX export samples with DDIM");
  if (!(s.guidance_scale >= 1)) throw new Error(`guidance must be >= 1, got ${s.guidance_scale}`);
  s.num_inference_steps = Number(s.num_inference_steps);
  if (!Number.isInteger(s.num_inference_steps) || s.num_inference_steps < 1) {
    throw new Error(`steps must be a positive whole number, got ${overrides.num_inference_steps}`);
  }
  return s;
}

function drawsNeeded(s) {
  const names = [];
  if (s.sample_posterior && s.strength < 1) names.push("image_posterior");
  if (s.sample_posterior) names.push("masked_image_posterior");
  names.push("initial");
  if (s.noise_offset > 0) names.push("offset");
  return names;
}

/** rgb H×W×3 uint8 -> Float32Array 3×H×W in [-1, 1] (x/255·2−1 in double, then float32). */
function toModelRange(rgb, w, h) {
  const out = new Float32Array(3 * w * h);
  for (let p = 0; p < w * h; p++) for (let c = 0; c < 3; c++) out[c * w * h + p] = f32((rgb[p * 3 + c] / 255) * 2 - 1);
  return out;
}

function toUint8(decoded, w, h, quantize) {
  const out = new Uint8Array(w * h * 3);
  for (let c = 0; c < 3; c++) for (let p = 0; p < w * h; p++) {
    const x = decoded[c * w * h + p];
    let v = f32(Math.min(Math.max(x, 0), 1) * 255);
    if (quantize === "round") {
      const r = Math.round(v);
      v = Math.abs(r - v) === 0.5 && r % 2 !== 0 ? r - 1 : r;
    }
    out[p * 3 + c] = Math.trunc(v);
  }
  return out;
}

function concat(arrays) {
  const out = new Float32Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) { out.set(a, at); at += a.length; }
  return out;
}

/**
 * Inpaint one image.
 *   rgb: Uint8Array H×W×3; mask: Uint8Array H×W (0–255, >= threshold = fill); settings: callSettings(...).
 *   model: {ort, manifest, sessions: {unet, vae_encoder, vae_decoder}}.
 *   onStep(done, total), isCancelled() -> bool.
 * -> {rgb, seed, stepsRun, strategy, regions, timings (ms per phase)}
 */
export async function inpaint(model, rgb, mask, width, height, settings, seedValue, { onStep = () => {}, isCancelled = () => false } = {}) {
  const { ort, manifest, sessions } = model;
  const s = settings;
  const ae = manifest.autoencoder, factor = ae.downsample_factor, channels = ae.latent_channels;
  const multiple = factor * manifest.unet.latent_multiple;
  const ddim = new DDIM(manifest.scheduler);
  const timesteps = ddim.timesteps(s.num_inference_steps, s.strength);
  const seed = parseSeed(seedValue);

  let hole = binarize(mask, s.mask_threshold, s.invert_mask);
  hole = dilate(hole, width, height, s.mask_dilate);
  if (!hole.some((v) => v)) return { rgb: rgb.slice(), seed, stepsRun: 0, strategy: "none", regions: [], timings: null };

  const [strategy, regions] = planRegions(hole, width, height, s);
  const generator = new TorchCompatibleGenerator(seed);
  const names = drawsNeeded(s);
  const jobs = regions.map((region) => {
    const tile = extractTile(rgb, hole, width, region, multiple);
    const lh = tile.height / factor, lw = tile.width / factor;
    const draws = {};
    for (const name of names) draws[name] = generator.randn(name === "offset" ? [1, channels, 1, 1] : [1, channels, lh, lw]);
    return { region, tile, draws, generated: null };
  });
  const groups = new Map();
  for (const job of jobs) {
    const key = `${job.tile.height}x${job.tile.width}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(job);
  }
  const total = timesteps.length * groups.size;
  let done = 0;
  // milliseconds per phase, for the page's status line and bench/web_benchmark.py
  const timings = { prefill: 0, encode: 0, unet: 0, decode: 0, total: 0 };
  const begun = performance.now();
  let mark = begun;
  const lap = (phase) => { const now = performance.now(); timings[phase] += now - mark; mark = now; };
  const check = () => { if (isCancelled()) throw new CancelledError(); };

  for (const members of groups.values()) {
    check();
    const { width: tw, height: th } = members[0].tile;
    const lw = tw / factor, lh = th / factor, B = members.length, plane = lw * lh;
    const starts = [];
    for (const job of members) {
      starts.push(s.prefill === "none" ? job.tile.rgb : navierStokesFill(job.tile.rgb, job.tile.hole, tw, th));
      check();
    }
    lap("prefill");
    const image = concat(starts.map((t) => toModelRange(t, tw, th)));
    const masked = image.slice();
    members.forEach((job, b) => {
      for (let c = 0; c < 3; c++) for (let p = 0; p < tw * th; p++) {
        if (job.tile.hole[p]) masked[(b * 3 + c) * tw * th + p] = 0;
      }
    });
    // encode
    const needImage = s.strength < 1;
    const pixels = needImage ? concat([image, masked]) : masked;
    const enc = await sessions.vae_encoder.run({ image: new ort.Tensor("float32", pixels, [pixels.length / (3 * tw * th), 3, th, tw]) });
    lap("encode");
    check();
    const mean = enc.mean.data, std = enc.std.data, per = B * channels * plane;
    const roles = needImage ? ["image", "masked_image"] : ["masked_image"];
    const latents = {};
    roles.forEach((role, r) => {
      const noise = s.sample_posterior ? concat(members.map((j) => j.draws[`${role}_posterior`])) : null;
      const z = new Float32Array(per);
      for (let i = 0; i < per; i++) {
        let v = mean[r * per + i];
        if (noise) v = f32(v + f32(std[r * per + i] * noise[i]));
        if (ae.shift_factor !== null && ae.shift_factor !== undefined) v = f32(v - f32(ae.shift_factor));
        z[i] = f32(v * f32(ae.scaling_factor));
      }
      latents[role] = z;
    });
    const maskLat = concat(members.map((job) => latentMask(job.tile.hole, tw, th, factor, s.mask_downsample)));
    // start
    let noise = concat(members.map((j) => j.draws.initial));
    if (s.noise_offset > 0) {
      const offset = concat(members.map((j) => j.draws.offset)), scale = f32(s.noise_offset);
      noise = noise.map((v, i) => f32(v + f32(scale * offset[Math.floor(i / plane)])));
    }
    let x = s.strength >= 1 ? noise : ddim.addNoise(latents.image, noise, timesteps[0]);
    const useCfg = s.guidance_scale !== 1;
    const cond = manifest.unet.cond_ids, uncond = manifest.unet.uncond_ids;
    const idRows = useCfg ? [...Array(B).fill(uncond), ...Array(B).fill(cond)] : Array(B).fill(cond);
    const ids = BigInt64Array.from(idRows.flat().map((v) => BigInt(v)));
    const inC = 1 + 2 * channels;
    for (const t of timesteps) {
      check();
      mark = performance.now();
      const sample = new Float32Array(B * inC * plane);
      for (let b = 0; b < B; b++) {
        const o = b * inC * plane;
        sample.set(x.subarray(b * channels * plane, (b + 1) * channels * plane), o);
        sample.set(maskLat.subarray(b * plane, (b + 1) * plane), o + channels * plane);
        sample.set(latents.masked_image.subarray(b * channels * plane, (b + 1) * channels * plane), o + (channels + 1) * plane);
      }
      const batch = useCfg ? 2 * B : B;
      const feeds = {
        sample: new ort.Tensor("float32", useCfg ? concat([sample, sample]) : sample, [batch, inC, lh, lw]),
        timestep: new ort.Tensor("int64", new BigInt64Array(batch).fill(BigInt(t)), [batch]),
        input_ids: new ort.Tensor("int64", ids, [batch, cond.length]),
      };
      const raw = (await sessions.unet.run(feeds)).noise.data;
      let guided = raw;
      if (useCfg) {
        const n = B * channels * plane, scale = f32(s.guidance_scale);
        guided = new Float32Array(n);
        for (let i = 0; i < n; i++) guided[i] = f32(raw[i] + f32(scale * f32(raw[n + i] - raw[i])));
      }
      x = ddim.step(guided, t, x, s.num_inference_steps);
      lap("unet");
      onStep(++done, total);
    }
    check();
    const z = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) {
      let v = f32(x[i] / f32(ae.scaling_factor));
      if (ae.shift_factor !== null && ae.shift_factor !== undefined) v = f32(v + f32(ae.shift_factor));
      z[i] = v;
    }
    mark = performance.now();
    const decoded = (await sessions.vae_decoder.run({ latent: new ort.Tensor("float32", z, [B, channels, lh, lw]) })).image.data;
    lap("decode");
    members.forEach((job, b) => {
      const one = decoded.subarray(b * 3 * tw * th, (b + 1) * 3 * tw * th).map((v) => f32(f32(v + 1) / 2));
      job.generated = toUint8(one, tw, th, s.quantize);
    });
  }

  // paste back
  const out = rgb.slice();
  const feather = s.paste === "keep_unmasked" ? featherAlpha(hole, width, height, s.mask_blur) : null;
  for (const job of jobs) {
    const [x0, y0, x1, y1] = job.region.box, bw = x1 - x0, bh = y1 - y0;
    let pixels = restoreTile(job.generated, job.tile, job.region);
    const orig = new Uint8Array(bw * bh * 3), boxHole = new Uint8Array(bw * bh), boxAlpha = new Uint8Array(bw * bh);
    for (let y = 0; y < bh; y++) {
      orig.set(rgb.subarray(((y + y0) * width + x0) * 3, ((y + y0) * width + x1) * 3), y * bw * 3);
      boxHole.set(hole.subarray((y + y0) * width + x0, (y + y0) * width + x1), y * bw);
      if (feather) boxAlpha.set(feather.subarray((y + y0) * width + x0, (y + y0) * width + x1), y * bw);
    }
    let result;
    if (s.paste === "official") result = pasteOfficial(pixels, orig, boxHole, bw, bh, s.compensate);
    else {
      if (s.compensate) pixels = shiftColour(pixels, orig, boxHole, bw, bh);
      result = s.paste === "none" ? pixels : pasteKeepUnmasked(pixels, orig, boxAlpha);
    }
    for (let y = 0; y < bh; y++) out.set(result.subarray(y * bw * 3, (y + 1) * bw * 3), ((y + y0) * width + x0) * 3);
  }
  timings.total = performance.now() - begun;
  return { rgb: out, seed, stepsRun: timesteps.length, strategy, regions: jobs.map((j) => j.region.box), timings };
}
