// After `tsc` (the client's dist/*.js and every .d.ts): the element as one ES module
// (dist/component.js) and as one classic script (dist/heta-attribution.js), styles inlined.
// The classic script is committed at heta_core/results/assets/, where the explorer and the HTML
// report load it (the Python side never needs node); tests/service/component/test_bundle_and_cors.py checks that
// copy is what the sources build.
//
//   node scripts/bundle.mjs            # npm run build
//   node scripts/bundle.mjs --assets   # npm run assets: write heta_core's copy (after changing src/component or src/*.ts)
//   node scripts/bundle.mjs --out DIR  # only write heta-attribution.js into DIR
import { copyFile, mkdir, rm, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = (path) => fileURLToPath(new URL(`../${path}`, import.meta.url));
const common = { bundle: true, loader: { ".css": "text" }, target: "es2022", legalComments: "none", charset: "utf8", logLevel: "warning" };
const banner = "/* heta-attribution.js: <heta-attribution> and the HETA client, built by clients/typescript (npm run build). Do not edit. */";

async function classic() {
  const built = await esbuild.build({ ...common, entryPoints: [here("src/component/bundle.ts")], format: "iife", write: false, banner: { js: banner } });
  return built.outputFiles[0].contents;
}

const args = process.argv.slice(2);
if (args[0] === "--out" || args[0] === "--assets") {
  const folder = args[0] === "--out" ? args[1] : here("../../heta_core/results/assets");
  await mkdir(folder, { recursive: true });
  await writeFile(`${folder}/heta-attribution.js`, await classic());
} else {
  await esbuild.build({ ...common, entryPoints: [here("src/component/index.ts")], format: "esm", outfile: here("dist/component.js") });
  await writeFile(here("dist/heta-attribution.js"), await classic());
  // tsc's per-file output of the element would import styles.css: the bundles above replace it
  for (const name of ["element.js", "index.js", "bundle.js", "bundle.d.ts"]) await rm(here(`dist/component/${name}`), { force: true });
  await copyFile(here("src/component/render.d.ts"), here("dist/component/render.d.ts"));
  await copyFile(here("src/schema.d.ts"), here("dist/schema.d.ts"));
}
