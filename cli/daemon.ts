// The process edge shared by long-running commands: stop cleanly on SIGINT
// and SIGTERM (a second signal forces exit).
import { errorMessage } from '../proto/model/errors';
import type { Logger } from '../proto/model/log';

/** Resolves with the exit code once a signal arrived and `stop` finished. */
export function runUntilSignal(stop: () => Promise<void>, logger: Logger): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) {
        logger.warn({ signal: sig }, 'second signal: exiting now');
        process.exit(1);
      }
      stopping = true;
      logger.info({ signal: sig }, 'stopping');
      stop()
        .then(() => resolve(0))
        .catch((err) => {
          logger.error({ err: errorMessage(err) }, 'error while stopping');
          resolve(1);
        });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
