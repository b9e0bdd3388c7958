// Shared steps of the browser tests: Chromium, logging in (with the change of a one-time
// password the first time), axe-core on a page.
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import assert from "node:assert/strict";

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

// A context for one user. The platform's certificate is self-signed: accepted for these
// tests only. `bypassCSP` lets the test inject axe-core: the pages themselves run no script.
export async function newContext(browser, width = 1366) {
  return browser.newContext({
    ignoreHTTPSErrors: true,
    acceptDownloads: true,
    bypassCSP: true,
    viewport: { width, height: width > 600 ? 900 : 844 },
  });
}

// Logs in from the page the browser is on (the login page); a one-time password is changed
// for `newPassword` on the way. Returns the password that now works.
export async function login(page, loginName, password, newPassword) {
  await page.getByLabel("Identifiant").fill(loginName);
  await page.getByLabel("Mot de passe", { exact: true }).fill(password);
  await page.getByRole("button", { name: "Se connecter" }).click();
  await page.waitForLoadState();
  if (!new URL(page.url()).pathname.startsWith("/mot-de-passe")) return password;
  assert.ok(newPassword, `${loginName}: a one-time password to change`);
  assert.match(await page.locator("main").textContent(), /choisissez-en un nouveau/);
  await page.getByLabel("Mot de passe actuel").fill(password);
  await page.getByLabel(/^Nouveau mot de passe/).fill(newPassword);
  await page.getByLabel("Confirmation").fill(newPassword);
  await page.getByRole("button", { name: "Enregistrer" }).click();
  await page.waitForLoadState();
  return newPassword;
}

// Runs axe-core (WCAG 2.1 A and AA, the rules RGAA 4.1 rests on) on the page: the
// violations of impact serious or critical, each with its rule and its first targets.
export async function axe(page) {
  if (!(await page.evaluate(() => typeof window.axe !== "undefined"))) {
    await page.addScriptTag({ content: AXE });
  }
  const r = await page.evaluate(async () =>
    window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }),
  );
  return r.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(" | ")}`);
}

// The page scrolls sideways when its content is wider than the window.
export async function overflow(page) {
  return page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
}
