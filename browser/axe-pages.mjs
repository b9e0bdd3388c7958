// axe-core on a few pages that need no login (those pages.mjs cannot reach on the demo:
// "Mot de passe oublié" exists only when mail is configured), at 1366 and 390 px.
// Environment: ATMP_URL; ATMP_PATHS, the paths separated by spaces; CHROMIUM.
import { launch, newContext, axe, overflow } from "./lib.mjs";

const url = process.env.ATMP_URL;
const browser = await launch();
const problems = [];
let checked = 0;
try {
  const context = await newContext(browser);
  const page = await context.newPage();
  for (const p of process.env.ATMP_PATHS.split(" ").filter(Boolean)) {
    await page.goto(`${url}${p}`);
    for (const width of [1366, 390]) {
      await page.setViewportSize({ width, height: width > 600 ? 900 : 844 });
      for (const v of await axe(page)) problems.push(`${p} à ${width} px : ${v}`);
      const o = await overflow(page);
      if (o > 0) problems.push(`${p} à ${width} px : la page défile horizontalement de ${o} px`);
      checked++;
    }
  }
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log(`axe-core: ${checked} page views, no serious or critical violation`);
