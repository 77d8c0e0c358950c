// The package's example: explain one answer with a running `heta serve` and print the top tokens.
//
//   node node_modules/heta-client/example/show.mjs http://127.0.0.1:8000   (HETA_API_KEY when the server has keys)
import { HetaClient } from "heta-client";

const heta = new HetaClient({ baseUrl: process.argv[2] ?? "http://127.0.0.1:8000", apiKey: process.env.HETA_API_KEY });
const result = await heta.attribute({ text: "c=6 e=6 b=3 h=3 m=6 ? h", target_text: " 3" });
const top = [...result.tokens].sort((a, b) => Number(b.score) - Number(a.score)).slice(0, 3);
console.log(`${result.method} explains "${result.targets.map((t) => t.text).join("")}" (job ${result.job_id})`);
for (const token of top) console.log(`${JSON.stringify(token.text)}\t${token.score}`);
