// Runs every compiled benchmark (dist/test/bench/*.js) in sequence, each in
// its own node process so one bench's heap and JIT state cannot skew the next.
// Usage: node scripts/run-bench.mjs [substring filter ...]   (after `npm run build`)
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');
const benchRoot = join(root, 'dist', 'test', 'bench');
const filters = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const passThrough = process.argv.slice(2).filter((a) => a.startsWith('--'));

if (!existsSync(benchRoot)) {
  console.error(`no compiled benchmarks in ${benchRoot}; run "npm run build" first`);
  process.exit(1);
}
const files = readdirSync(benchRoot)
  .filter((name) => name.endsWith('.js'))
  .map((name) => join(benchRoot, name))
  .filter((f) => filters.length === 0 || filters.some((s) => relative(root, f).includes(s)))
  .sort();
if (files.length === 0) {
  console.error(`no benchmark matched ${filters.join(', ')} under ${benchRoot}`);
  process.exit(1);
}

let failed = 0;
for (const file of files) {
  console.log(`\n# ${relative(root, file)}`);
  const r = spawnSync(process.execPath, [file, ...passThrough], { stdio: 'inherit', cwd: root });
  if (r.status !== 0) {
    failed++;
    console.error(`${relative(root, file)} exited with ${r.status ?? r.signal}`);
  }
}
process.exit(failed === 0 ? 0 : 1);
