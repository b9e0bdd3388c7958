// Browser test of the tracking table (Suivi des imports), in headless Chromium.
//
// Run by crates/atmp/tests/platform (browser_*), against `atmp serve --demo` started there.
// Environment: ATMP_URL (https://localhost:PORT), ATMP_LOGIN, ATMP_PASSWORD, ATMP_DOWNLOADS
// (a folder), CHROMIUM (default /usr/bin/chromium). Exits non-zero on the first failed check.
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";
import { launch, newContext, login } from "./lib.mjs";

const url = process.env.ATMP_URL;
const browser = await launch();
let failed = false;
try {
  const context = await newContext(browser);
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  const menu = page.getByRole("navigation", { name: "Menu principal" });

  const summary = async () => (await page.locator("#total").textContent()).trim();
  const rows = async () => page.locator("#suivi tbody tr").filter({ has: page.locator("a") }).count();
  const firstCells = async (n) => (await page.locator(`#suivi tbody tr td:nth-child(${n})`).allTextContents()).map((s) => s.trim());
  const TYPE = 4;

  // Log in: the page asked for comes back once the one-time password is changed.
  await page.goto(`${url}/suivi`);
  assert.match(page.url(), /\/connexion\?retour=\/suivi$/, "not logged in: the login page");
  await login(page, process.env.ATMP_LOGIN, process.env.ATMP_PASSWORD, "Un nouveau mot de passe 2026");
  await page.waitForURL(/\/suivi$/);
  assert.equal(await page.locator("h1").textContent(), "Suivi des imports");

  // Default period (the last twelve months): every import of the collectivité, newest first.
  const total = await summary();
  const m = total.match(/^(\d+) import\(s\) — page 1 sur (\d+)$/);
  assert.ok(m, `summary: ${total}`);
  const count = Number(m[1]);
  const pages = Number(m[2]);
  assert.ok(count > 20 && pages === Math.ceil(count / 20), total);
  assert.equal(await rows(), 20);
  const dates = await firstCells(1);
  const key = (d) => d.replace(/^(\d\d)\/(\d\d)\/(\d{4}) /, "$3$2$1 ");
  assert.deepEqual([...dates].sort((a, b) => key(b).localeCompare(key(a))), dates, "newest first");

  // Paging: last, previous, first, next.
  await page.getByRole("link", { name: "Dernière" }).click();
  assert.match(await summary(), new RegExp(`page ${pages} sur ${pages}$`));
  assert.equal(await rows(), count - 20 * (pages - 1));
  assert.equal(await page.getByRole("link", { name: "Suivante" }).count(), 0, "no next on the last page");
  await page.getByRole("link", { name: "Précédente" }).click();
  assert.match(await summary(), new RegExp(`page ${pages - 1} sur ${pages}$`));
  if (pages > 2) await page.getByRole("link", { name: "Première" }).click();
  assert.match(await summary(), /page 1 sur/);
  assert.equal(await page.getByRole("link", { name: "Précédente" }).count(), 0, "no previous on the first page");
  await page.getByRole("link", { name: "Suivante" }).click();
  assert.match(await summary(), new RegExp(`page 2 sur ${pages}$`));
  await page.getByRole("link", { name: "Première" }).click();
  assert.match(await summary(), /page 1 sur/);

  // Filter by type.
  await page.getByLabel("Type de fichiers").selectOption({ label: "Service" });
  await page.getByRole("button", { name: "Filtrer" }).click();
  assert.match(await summary(), /^1 import\(s\)/);
  assert.deepEqual(await firstCells(TYPE), ["Service"]);
  await page.getByLabel("Type de fichiers").selectOption({ label: "Déclaration" });
  await page.getByRole("button", { name: "Filtrer" }).click();
  assert.match(await summary(), new RegExp(`^${count - 1} import\\(s\\)`));
  assert.ok((await firstCells(TYPE)).every((t) => t === "Déclaration"));

  // Filter by period: a year without imports, then back to today.
  await page.locator("#f-du").fill("2020-01-01");
  await page.locator("#f-au").fill("2020-12-31");
  await page.getByRole("button", { name: "Filtrer" }).click();
  assert.match(await summary(), /^0 import\(s\)/);
  assert.equal(await page.getByText("Aucun import ne correspond à ces filtres.").count(), 1);
  const today = new Date().toISOString().slice(0, 10);
  await page.locator("#f-du").fill(today);
  await page.locator("#f-au").fill(today);
  await page.getByLabel("Type de fichiers").selectOption({ label: "Tous" });
  await page.getByRole("button", { name: "Filtrer" }).click();
  assert.match(await summary(), new RegExp(`^${count} import\\(s\\)`));

  // Download the error log of the import with errors.
  const row = page.locator("#suivi tbody tr", { hasText: "erreur(s)" }).first();
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    row.getByRole("link", { name: "erreurs" }).click(),
  ]);
  assert.match(download.suggestedFilename(), /^import-\d+-\d{14}-erreurs\.log$/);
  const saved = `${process.env.ATMP_DOWNLOADS}/${download.suggestedFilename()}`;
  await download.saveAs(saved);
  const log = readFileSync(saved, "utf8");
  assert.match(log, /;ERROR;Agent : CARDON Yanick - 07\/05\/1984 - 184052153114629;;;Les données de l'agent dans la base/);
  assert.ok(!log.includes(";INFO;"), "the error log holds ERROR lines only");

  // The import's page: the rejected agent, both identities side by side, the differences
  // marked — read from the quarantine's rows.
  await row.getByRole("link", { name: /erreur\(s\)/ }).click();
  await page.waitForURL(/\/imports\/\d+$/);
  const importUrl = page.url();
  const importId = importUrl.match(/(\d+)$/)[1];
  const rejet = page.locator("section.rejet").first();
  assert.match(await rejet.locator("h3").textContent(), /CARDON Yanick/);
  const diff = await rejet.locator("tr.diff th").allTextContents();
  assert.deepEqual(diff, ["Prénom (différent)", "Date de naissance (différent)"]);
  const cells = await rejet.locator("tbody tr").nth(1).locator("td").allTextContents();
  assert.deepEqual(cells, ["Yannick", "Yanick"]);

  // The collectivité's administrator opens the rejection, chooses field by field: the file's
  // first name is right, the base's birth date is right; the base is corrected.
  await rejet.getByRole("link", { name: /^Rejet n° \d+$/ }).click();
  await page.waitForURL(/\/rejets\/\d+$/);
  const rejetUrl = page.url();
  assert.match(await page.locator("h1").textContent(), /Identité différente de la base/);
  await page.getByRole("group", { name: "Prénom : valeur à garder" }).getByLabel(/celle du fichier/).check();
  await page.getByRole("group", { name: "Date de naissance : valeur à garder" }).getByLabel(/celle de la base/).check();
  await page.getByRole("button", { name: "Corriger l'agent de la base" }).click();
  assert.match(await page.locator("p.succes").textContent(), /L'agent de la base est corrigé/);
  // The base now says Yanick; the birth dates still differ, so a replay fails again.
  const base = await page.locator("#identites tbody tr").nth(1).locator("td").first().textContent();
  assert.equal(base.trim(), "Yannick", "the page shows the rejection as it was recorded");
  await page.getByRole("button", { name: "Rejouer ce rejet" }).click();
  await page.waitForURL(/\/imports\/\d+$/);
  assert.notEqual(page.url(), importUrl);
  assert.match(await page.locator("#rejeu-de").textContent(), new RegExp(`import n° ${importId}\\.`));
  assert.match(await page.locator("h1").textContent(), new RegExp(`Rejeu de l'import n° ${importId} du `));
  // Failed again on the birth date: the rejection is still to be done, with its new reason.
  await page.goto(rejetUrl);
  assert.match(await page.locator("#etat").textContent(), /À traiter/);
  await page.getByRole("group", { name: "Date de naissance : valeur à garder" }).getByLabel(/celle du fichier/).check();
  await page.getByRole("button", { name: "Corriger l'agent de la base" }).click();
  await page.getByRole("button", { name: "Rejouer ce rejet" }).click();
  await page.waitForURL(/\/imports\/\d+$/);
  const replayUrl = page.url();
  assert.match(await page.locator("#resultat").textContent(), /^Import réussi$/);
  // The rejection is closed by that replay, and the original import links it.
  await page.goto(rejetUrl);
  assert.match(await page.locator("#etat").textContent(), /Rejoué — intégré par l'import n° \d+/);
  await page.goto(importUrl);
  const replayId = replayUrl.match(/(\d+)$/)[1];
  assert.ok(await page.locator("#rejeux").getByRole("link", { name: `import n° ${replayId}` }).count() === 1);
  // The tracking table shows the replay as a replay of that import.
  await menu.getByRole("link", { name: "Suivi des imports" }).click();
  const replayRow = page.locator("#suivi tbody tr", { has: page.locator(`a[href="/imports/${replayId}"]`) }).first();
  assert.match(await replayRow.textContent(), new RegExp(`rejeu de l'import n° ${importId}`));
  // "Rejets à traiter": the list reads the rows; this one is no longer there.
  await menu.getByRole("link", { name: "Rejets à traiter" }).click();
  await page.waitForURL(/\/rejets$/);
  assert.equal(await page.locator(`#rejets a[href="${new URL(rejetUrl).pathname}"]`).count(), 0);

  // Log out.
  await page.getByRole("button", { name: "Se déconnecter" }).click();
  await page.waitForURL(/\/connexion$/);
  await page.goto(`${url}/suivi`);
  assert.match(page.url(), /\/connexion\?retour=/);
  console.log(`browser test passed: ${count} imports on ${pages} pages`);
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
