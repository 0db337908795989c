// `kedge <command> --help` prints the command's usage and exits 0; a bad
// flag prints what is wrong and the usage, and exits 2.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseFlags } from '../../cli/args';
import { hasCode } from '../../proto/model/errors';
import { runKedge } from '../support/procs';

describe('kedge command help', () => {
  it('parseFlags turns --help and -h into KEDGE_HELP, but not after --', () => {
    const opts = { output: { type: 'string', short: 'o' } } as const;
    for (const argv of [['--help'], ['x', '-h'], ['-o', 'json', '--help']]) {
      assert.throws(() => parseFlags(argv, opts, 'kedge thing [-o FMT]'), (err: unknown) => hasCode(err, 'KEDGE_HELP') && (err as Error).message === 'usage: kedge thing [-o FMT]', argv.join(' '));
    }
    assert.deepEqual(parseFlags(['--', '--help'], opts, 'u').positionals, ['--help']);
    assert.throws(() => parseFlags(['--frob'], opts, 'u'), (err: unknown) => hasCode(err, 'KEDGE_USAGE') && /--frob[\s\S]*usage: u/.test((err as Error).message));
  });

  it('prints the usage on stdout with exit 0 for every command that has flags', async () => {
    for (const cmd of ['federation', 'agent', 'token', 'ca', 'get', 'status', 'apply', 'delete', 'demo']) {
      const r = await runKedge([cmd, '--help']);
      assert.equal(r.code, 0, `${cmd}: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^usage: kedge ${cmd}\\b`), cmd);
      assert.equal(r.stderr, '');
    }
    const fed = await runKedge(['federation', '-h']);
    assert.match(fed.stdout, /--etcd-ca V.*--etcd-password-file V/);
  });

  it('still refuses an unknown flag with exit 2, naming it', async () => {
    const r = await runKedge(['get', '--bogus']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Unknown option '--bogus'[\s\S]*usage: kedge get/);
  });
});
