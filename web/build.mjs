// `npm run build`: assemble dist/, the static site without its model: the app's files and the
// onnxruntime-web runtime files it loads (no CDN at run time). `moebius export-web` adds model/.
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
const ortDist = join(here, "node_modules", "onnxruntime-web", "dist");
// WASM: the wasm-only bundle and its runtime; WebGPU: the bundle with the JSEP runtime (WebGPU + WASM kernels).
const ORT_FILES = ["ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm",
                   "ort.min.mjs", "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm"];

if (!existsSync(ortDist)) {
  console.error("build: node_modules/onnxruntime-web is missing; run `npm ci` first");
  process.exit(1);
}
rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, "ort"), { recursive: true });
cpSync(join(here, "src"), dist, { recursive: true });
for (const name of ORT_FILES) cpSync(join(ortDist, name), join(dist, "ort", name));
const ortVersion = JSON.parse(readFileSync(join(here, "node_modules", "onnxruntime-web", "package.json"), "utf8")).version;
const app = JSON.parse(readFileSync(join(here, "package.json"), "utf8"));
writeFileSync(join(dist, "build.json"), JSON.stringify({ app: app.version, "onnxruntime-web": ortVersion }, null, 1) + "\n");
console.log(`built ${dist} (onnxruntime-web ${ortVersion})`);
