// Browser test of every page, for every role of the demo, in headless Chromium:
// - axe-core (WCAG 2.1 A/AA, the ground of RGAA 4.1) finds no serious or critical violation,
//   at 1366 px and at 390 px, and no page scrolls sideways at 390 px; a screenshot of each;
// - a collectivité's administrator creates a user (a refused form keeps what was typed),
//   resets its password, and the old one no longer opens;
// - an expired session says so and returns to the page asked for after login;
// - the dashboard shows the demo's figures and its chart.
//
// Run by crates/atmp/tests/platform (browser_*), against `atmp serve --demo` started there.
// Environment: ATMP_URL; ATMP_USERS, JSON [{login, password}] (the printed one-time
// passwords); ATMP_SHOTS, a folder for the screenshots; ATMP_EXPECT, JSON of the sdis
// dashboard's expected figures {fichiers_mois, total_graphique}; CHROMIUM.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { launch, newContext, login, axe, overflow } from "./lib.mjs";

const url = process.env.ATMP_URL;
const users = JSON.parse(process.env.ATMP_USERS);
const shots = process.env.ATMP_SHOTS;
const expect = JSON.parse(process.env.ATMP_EXPECT);
mkdirSync(shots, { recursive: true });
const WIDTHS = [1366, 390];
const NEW_PASSWORD = "Mot de passe de recette 2026";
const browser = await launch();
let failed = false;
const problems = [];
let checked = 0;

// Checks the page the browser is on at both widths; `name` names its screenshots.
async function check(page, name) {
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: width > 600 ? 900 : 844 });
    const where = `${name} à ${width} px (${new URL(page.url()).pathname})`;
    for (const v of await axe(page)) problems.push(`${where}: ${v}`);
    const o = await overflow(page);
    if (o > 0) problems.push(`${where}: la page défile horizontalement de ${o} px`);
    await page.screenshot({ path: `${shots}/${name}-${width}.png`, fullPage: true });
    checked++;
  }
  await page.setViewportSize({ width: 1366, height: 900 });
}

const slug = (p) => p.replace(/^\//, "").replace(/[^a-z0-9]+/gi, "-").replace(/-$/, "") || "accueil";

try {
  // Logged out: the login page, the accessibility statement, a page that does not exist.
  {
    const context = await newContext(browser);
    const page = await context.newPage();
    await page.goto(`${url}/connexion`);
    await check(page, "anonyme-connexion");
    await page.goto(`${url}/accessibilite`);
    assert.match(await page.locator("h1").textContent(), /Déclaration d'accessibilité/);
    await check(page, "anonyme-accessibilite");
    await page.goto(`${url}/nulle-part`);
    await check(page, "anonyme-introuvable");
    // A failed login keeps the identifier typed.
    await page.goto(`${url}/connexion`);
    await page.getByLabel("Identifiant").fill("quelqu-un");
    await page.getByLabel("Mot de passe", { exact: true }).fill("faux mot de passe");
    await page.getByRole("button", { name: "Se connecter" }).click();
    assert.equal(await page.getByLabel("Identifiant").inputValue(), "quelqu-un");
    assert.match(await page.locator("[role=alert]").textContent(), /incorrect/);
    await check(page, "anonyme-connexion-refusee");
    await context.close();
  }

  for (const u of users) {
    const context = await newContext(browser);
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    await page.goto(`${url}/`);
    // The one-time password's page, checked before it is changed.
    await page.getByLabel("Identifiant").fill(u.login);
    await page.getByLabel("Mot de passe", { exact: true }).fill(u.password);
    await page.getByRole("button", { name: "Se connecter" }).click();
    await page.waitForURL(/\/mot-de-passe/);
    await check(page, `${u.login}-mot-de-passe-impose`);
    await page.getByLabel("Mot de passe actuel").fill(u.password);
    await page.getByLabel(/^Nouveau mot de passe/).fill(NEW_PASSWORD);
    await page.getByLabel("Confirmation").fill(NEW_PASSWORD);
    await page.getByRole("button", { name: "Enregistrer" }).click();
    u.password = NEW_PASSWORD;
    await page.goto(`${url}/`);
    assert.equal(await page.locator("h1").textContent(), "Tableau de bord");
    // Every entry of the menu, the pages they lead to, and one of each detail page.
    const menu = page.getByRole("navigation", { name: "Menu principal" });
    const hrefs = await menu.getByRole("link").evaluateAll((as) => as.map((a) => a.getAttribute("href")));
    assert.ok(hrefs.length >= 3, `${u.login}: ${hrefs}`);
    const visit = [...hrefs, "/mot-de-passe", "/accessibilite"];
    const details = [
      ["/suivi", "#suivi a[href^='/imports/']"],
      ["/rejets", "#rejets a[href^='/rejets/']"],
      ["/admin/collectivites", "#collectivites a[href$='/services']"],
    ];
    for (const [from, sel] of details) {
      if (!hrefs.includes(from)) continue;
      await page.goto(`${url}${from}`);
      const first = page.locator(sel).first();
      if (await first.count()) visit.push(await first.getAttribute("href"));
    }
    // The log of the first import, read on its page and filtered to its errors.
    const imp = visit.find((h) => /^\/imports\/\d+$/.test(h));
    if (imp) {
      await page.goto(`${url}${imp}`);
      const view = page.getByRole("link", { name: "consulter et filtrer" }).first();
      const href = await view.getAttribute("href");
      visit.push(href, `${href}?niveau=ERROR`);
    }
    for (const h of visit) {
      const r = await page.goto(`${url}${h}`);
      assert.ok(r.ok(), `${u.login} ${h}: ${r.status()}`);
      if (h === "/" || hrefs.includes(h)) {
        const current = await menu.locator("[aria-current=page]").getAttribute("href");
        assert.equal(current, hrefs.includes(h) ? h : current, `${u.login} ${h}: aria-current`);
      }
      await check(page, `${u.login}-${slug(h)}`);
    }
    // The tracking table filtered by result, kept in the address.
    await page.goto(`${url}/suivi`);
    await page.getByLabel("Résultat").selectOption({ label: "Réussi avec erreurs" });
    await page.getByRole("button", { name: "Filtrer" }).click();
    assert.match(page.url(), /resultat=erreurs/);
    const badges = await page.locator("#suivi tbody .badge").allTextContents();
    assert.ok(badges.every((b) => /Réussi avec erreurs/.test(b)), `${badges}`);
    await check(page, `${u.login}-suivi-filtre`);
    u.context = context;
    u.page = page;
  }

  // The dashboard of the SDIS's administrator: the demo's figures and its chart.
  {
    const { page } = users.find((u) => u.login === "sdis");
    await page.goto(`${url}/`);
    assert.equal(Number(await page.locator("#fichiers-mois").textContent()), expect.fichiers_mois);
    assert.ok((await page.locator("#graphique svg rect").count()) > 0, "bars in the chart");
    assert.match(await page.locator("#graphique-titre").textContent(), new RegExp(`: ${expect.total_graphique} fichier\\(s\\)`));
    const weeks = await page.locator("#semaines tbody tr").count();
    assert.equal(weeks, 26);
    const totals = await page.locator("#semaines tbody tr td:last-child").allTextContents();
    assert.equal(totals.reduce((a, t) => a + Number(t), 0), expect.total_graphique);
    assert.ok((await page.locator("#derniers tbody tr").count()) >= 1);
    const [csv] = await Promise.all([
      page.waitForEvent("download"),
      page.getByRole("link", { name: /Télécharger ces chiffres/ }).click(),
    ]);
    assert.equal(csv.suggestedFilename(), "imports-par-semaine.csv");
  }

  // A collectivité's administrator creates a user, then resets its password.
  {
    const { page } = users.find((u) => u.login === "sdis");
    await page.goto(`${url}/admin/utilisateurs`);
    await page.getByLabel(/^Identifiant/).fill("agent-rh");
    await page.getByLabel("Rôle").selectOption({ label: "Utilisateur collectivité" });
    await page.getByLabel(/^Collectivité ou CDG/).selectOption({ index: 0 });
    await page.getByLabel(/^Courriel/).fill("pas-une-adresse");
    await page.getByRole("button", { name: "Créer" }).click();
    // Refused: the error next to the field, what was typed kept.
    assert.match(await page.locator("#u-email-erreur").textContent(), /nom@domaine\.fr/);
    assert.equal(await page.getByLabel(/^Identifiant/).inputValue(), "agent-rh");
    assert.equal(await page.getByLabel(/^Courriel/).inputValue(), "pas-une-adresse");
    assert.equal(await page.getByLabel(/^Courriel/).getAttribute("aria-invalid"), "true");
    await check(page, "sdis-utilisateurs-erreur");
    await page.getByLabel(/^Courriel/).fill("agent-rh@sdis.invalid");
    await page.getByRole("button", { name: "Créer" }).click();
    const created = await page.locator("p.succes").textContent();
    const first = created.match(/affiché une seule fois : (\S+)$/)[1];
    const row = page.locator("#utilisateurs tbody tr", { hasText: "agent-rh" });
    await row.getByRole("button", { name: "Réinitialiser le mot de passe de agent-rh" }).click();
    const reset = await page.locator("p.succes").textContent();
    assert.match(reset, /Mot de passe de agent-rh réinitialisé/);
    const second = reset.match(/première connexion : (\S+)$/)[1];
    assert.notEqual(first, second);
    const other = await newContext(browser);
    const p2 = await other.newPage();
    await p2.goto(`${url}/connexion`);
    await p2.getByLabel("Identifiant").fill("agent-rh");
    await p2.getByLabel("Mot de passe", { exact: true }).fill(first);
    await p2.getByRole("button", { name: "Se connecter" }).click();
    assert.match(await p2.locator("[role=alert]").textContent(), /incorrect/, "the old password no longer opens");
    await login(p2, "agent-rh", second, "Le mot de passe de l'agent 2026");
    await p2.goto(`${url}/suivi`);
    assert.equal(await p2.locator("h1").textContent(), "Suivi des imports");
    await other.close();
  }

  // The platform administrator mistypes a SIRET: the error at the field, the rest kept.
  {
    const { page } = users.find((u) => u.login === "admin");
    await page.goto(`${url}/admin/collectivites`);
    await page.getByLabel(/^SIRET/).fill("732 829 320 00075");
    await page.getByLabel("Nom", { exact: true }).fill("Commune de Valbrune");
    await page.getByRole("button", { name: "Créer" }).click();
    assert.match(await page.locator("#c-siret-erreur").textContent(), /clé de contrôle.*vérifiez-le/);
    assert.equal(await page.getByLabel(/^SIRET/).getAttribute("aria-invalid"), "true");
    assert.equal(await page.getByLabel("Nom", { exact: true }).inputValue(), "Commune de Valbrune");
    await check(page, "admin-collectivites-erreur");
    // Then a password change with a confirmation that differs: said at the confirmation.
    await page.goto(`${url}/mot-de-passe`);
    await page.getByLabel("Mot de passe actuel").fill(users.find((u) => u.login === "admin").password);
    await page.getByLabel(/^Nouveau mot de passe/).fill("Un autre mot de passe 2026");
    await page.getByLabel(/^Confirmation/).fill("Un autre mot de passe 2025");
    await page.getByRole("button", { name: "Enregistrer" }).click();
    assert.match(await page.locator("#m-confirmation-erreur").textContent(), /ne correspond pas/);
    assert.equal(await page.getByLabel(/^Confirmation/).inputValue(), "", "a password is not drawn again");
    await check(page, "admin-mot-de-passe-erreur");
  }

  // An expired session: the page says so, and login returns to the page asked for.
  {
    const u = users.find((u) => u.login === "cdg");
    const { context, page } = u;
    await context.addCookies([{ name: "atmp_session", value: "perimee", url }]);
    await page.goto(`${url}/rejets?raison=identite&etat=a_traiter`);
    assert.match(page.url(), /\/connexion\?expiree=1&retour=/);
    assert.match(await page.locator("[role=status]").textContent(), /Votre session a expiré/);
    await login(page, "cdg", u.password);
    await page.waitForURL(/\/rejets\?raison=identite&etat=a_traiter$/);
    assert.equal(await page.locator("h1").textContent(), "Rejets à traiter");
  }

  if (problems.length) {
    throw new Error(`${problems.length} problème(s) d'accessibilité :\n${problems.join("\n")}`);
  }
  console.log(`pages test passed: ${checked} page views checked by axe-core`);
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
