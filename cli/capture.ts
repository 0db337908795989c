// `kedge capture install|remove|show [--dry-run]`: see agent/capture.
import { runCaptureCommand } from '../agent/capture';

/** Runs `kedge capture`; returns the exit code. */
export function runCapture(argv: string[]): Promise<number> {
  return runCaptureCommand(argv, { stdout: process.stdout, stderr: process.stderr });
}
