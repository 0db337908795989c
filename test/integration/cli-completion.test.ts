// `kedge completion bash`: the script the CLI prints, sourced into a real
// bash and driven the way bash's completion drives it.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { runKedge, tempDir } from '../support/procs';

const run = promisify(execFile);

async function complete(script: string, words: string[]): Promise<string[]> {
  const drive = `source ${JSON.stringify(script)}; COMP_WORDS=(${words.map((w) => JSON.stringify(w)).join(' ')}); COMP_CWORD=${words.length - 1}; _kedge; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const { stdout } = await run('bash', ['-c', drive]);
  return stdout.split('\n').filter(Boolean).sort();
}

describe('shell completion', () => {
  it('completes commands, kinds, sub-commands and -o values in bash', async () => {
    const r = await runKedge(['completion', 'bash']);
    assert.equal(r.code, 0, r.stderr);
    const script = path.join(tempDir('completion'), 'kedge.bash');
    fs.writeFileSync(script, r.stdout);
    assert.deepEqual(await complete(script, ['kedge', 'st']), ['stat', 'status']);
    assert.deepEqual(await complete(script, ['kedge', 'get', 'wo']), ['workloads']);
    assert.deepEqual(await complete(script, ['kedge', 'delete', 'to']), ['tokens']);
    assert.deepEqual(await complete(script, ['kedge', 'capture', '']), ['install', 'remove', 'show']);
    assert.deepEqual(await complete(script, ['kedge', 'get', 'services', '-o', '']), ['json', 'table', 'yaml']);
    assert.ok((await complete(script, ['kedge', ''])).includes('join'));
  });

  it('prints a zsh script built on the same function, and refuses other shells', async () => {
    const z = await runKedge(['completion', 'zsh']);
    assert.equal(z.code, 0);
    assert.match(z.stdout, /bashcompinit/);
    assert.match(z.stdout, /complete -F _kedge kedge/);
    const bad = await runKedge(['completion', 'fish']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /usage: kedge completion bash\|zsh/);
  });
});
