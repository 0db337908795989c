// `kedge agent --config FILE`: runs the host agent until signalled.
import { KedgeError } from '../proto/model/errors';
import { createLogger } from '../proto/model/log';
import { loadAgentConfig } from '../agent/config';
import { runAgent } from '../agent/main';
import { parseFlags } from './args';
import { runUntilSignal } from './daemon';

const USAGE = 'kedge agent --config FILE [--mode sidecar|gateway] | kedge agent --pod   (the injected sidecar: config from the pod)';

/** Runs the agent; returns the exit code. */
export async function runAgentCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { config: { type: 'string', short: 'c' }, mode: { type: 'string', default: 'sidecar' }, pod: { type: 'boolean' } }, USAGE);
  if (values.pod && values.config) throw new KedgeError('KEDGE_USAGE', `--pod builds the config from the pod: drop --config\n\nusage: ${USAGE}`);
  if (values.pod) values.config = await (require('./pod-agent') as typeof import('./pod-agent')).writePodAgentConfig();
  if (!values.config || positionals.length) throw new KedgeError('KEDGE_USAGE', `usage: ${USAGE}`);
  if (values.mode !== 'sidecar' && values.mode !== 'gateway') throw new KedgeError('KEDGE_USAGE', `--mode ${values.mode}: use sidecar (default) or gateway`);
  // Validate everything before anything is bound or contacted.
  const config = loadAgentConfig(values.config);
  const logger = createLogger('kedge-agent', { workload: `${config.workload.namespace}/${config.workload.name}` });
  const agent = await runAgent(config, logger, values.mode);
  return runUntilSignal(() => agent.stop(), logger);
}
