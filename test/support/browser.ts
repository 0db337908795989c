// Debian's chromium driven by playwright-core, started as this machine needs
// it (headless, as root, with the closed network's background connections
// off), with a fresh profile.
import * as fs from 'node:fs';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { tempDir } from './procs';

/** The browser binary: $KEDGE_CHROMIUM or Debian's. */
export const CHROMIUM = process.env.KEDGE_CHROMIUM ?? '/usr/bin/chromium';

/** A describe() skip reason off CI on a machine without chromium; CI installs it (.ci/run), so there the test fails instead. */
export const SKIP_WITHOUT_CHROMIUM: false | string = fs.existsSync(CHROMIUM) || process.env.CI ? false : `no chromium at ${CHROMIUM}: apt-get install -y chromium`;

/** Starts chromium at 1280x800 and returns it with its first page. */
export async function launchChromium(): Promise<{ browser: BrowserContext; page: Page }> {
  const browser = await chromium.launchPersistentContext(tempDir('chromium-profile'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 800 },
    // The federation serves the dashboard over HTTPS with a certificate from
    // the test's fresh mesh root, which Chromium's store does not hold (the
    // CLI tests check that chain); the browser accepts it without asking.
    ignoreHTTPSErrors: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return { browser, page: browser.pages()[0] ?? (await browser.newPage()) };
}
