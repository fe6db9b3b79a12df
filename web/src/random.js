// Standard-normal draws equal to torch.randn(shape, generator=torch.Generator().manual_seed(seed)) on CPU,
// the same numbers moebius.onnx.random draws in numpy, so a seed gives the same image here as in Python.
//
// torch's CPU generator is a Mersenne Twister (MT19937) seeded with the seed's low 32 bits. A tensor of at
// least 16 values is filled with float32 uniforms (24 random bits each), then Box–Muller turns each block of
// 16 into normals (value j and j + 8 from one pair); a size that is not a multiple of 16 redraws its last 16.
// Smaller tensors draw one double-precision Box–Muller pair per two values (53-bit uniforms from two 32-bit
// words), and an odd count keeps the spare value for the next draw.

const N = 624;
const M = 397;
const f32 = Math.fround;
const TWO_PI_F32 = f32(2 * Math.PI);

export class MT19937 {
  constructor(seed32) {
    this.mt = new Uint32Array(N);
    this.index = N;
    this.mt[0] = seed32 >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = this.mt[i - 1] ^ (this.mt[i - 1] >>> 30);
      // 1812433253 * prev + i, modulo 2**32, without losing bits to float rounding
      this.mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
  }

  twist() {
    const mt = this.mt;
    for (let i = 0; i < N; i++) {
      const y = (mt[i] & 0x80000000) | (mt[(i + 1) % N] & 0x7fffffff);
      mt[i] = mt[(i + M) % N] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.index = 0;
  }

  nextUint32() {
    if (this.index >= N) this.twist();
    let y = this.mt[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
}

/** A seed in [0, 2**63) as a BigInt (numbers above 2**53 must be given as strings or BigInts). */
export function parseSeed(value) {
  let seed;
  try {
    seed = BigInt(typeof value === "string" ? value.trim() : value);
  } catch (e) {
    throw new Error(`the seed must be a whole number, got ${JSON.stringify(value)}`);
  }
  if (seed < 0n || seed >= 2n ** 63n) throw new Error(`seeds must lie in [0, 2**63), got ${seed}`);
  return seed;
}

export class TorchCompatibleGenerator {
  constructor(seed) {
    this.seed = parseSeed(seed);
    this.mt = new MT19937(Number(this.seed & 0xffffffffn));
    this.spare = null;
  }

  uniform24(n) {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = (this.mt.nextUint32() & 0xffffff) * 2 ** -24;
    return out;
  }

  /** float32 standard normals, a Float32Array of prod(shape) values in row-major order. */
  randn(shape) {
    const size = shape.reduce((a, b) => a * b, 1);
    if (size >= 16) {
      const data = this.uniform24(size);
      for (let start = 0; start + 16 <= size; start += 16) boxMuller16(data, start, data);
      if (size % 16) {
        const tail = this.uniform24(16);
        boxMuller16(tail, 0, tail);
        data.set(tail, size - 16);
      }
      return data;
    }
    const out = new Float32Array(size);
    for (let i = 0; i < size; i++) out[i] = this.normalDouble();
    return out;
  }

  normalDouble() {
    if (this.spare !== null) {
      const value = this.spare;
      this.spare = null;
      return value;
    }
    const w = [0, 0, 0, 0].map(() => this.mt.nextUint32());
    // (high word << 32 | low word) & (2**53 - 1), times 2**-53: exact in a double
    const u1 = ((w[0] & 0x1fffff) * 2 ** 32 + w[1]) * 2 ** -53;
    const u2 = ((w[2] & 0x1fffff) * 2 ** 32 + w[3]) * 2 ** -53;
    const radius = Math.sqrt(-2.0 * Math.log1p(-u2));
    const theta = 2.0 * Math.PI * u1;
    this.spare = radius * Math.sin(theta);
    return radius * Math.cos(theta);
  }
}

/** 16 float32 uniforms at src[start..] -> 16 normals in place: j and j + 8 from (1 − u_j, u_{j+8}), float32. */
function boxMuller16(src, start, dst) {
  const out = new Float32Array(16);
  for (let j = 0; j < 8; j++) {
    const u1 = f32(1 - src[start + j]);
    const u2 = src[start + j + 8];
    const radius = f32(Math.sqrt(f32(-2 * f32(Math.log(u1)))));
    const theta = f32(TWO_PI_F32 * u2);
    out[j] = f32(radius * f32(Math.cos(theta)));
    out[j + 8] = f32(radius * f32(Math.sin(theta)));
  }
  dst.set(out, start);
}
