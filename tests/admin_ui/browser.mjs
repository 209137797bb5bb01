// Drives Debian's Chromium (headless) through playwright-core against the
// real permaproxy binary that tests/admin_ui/browser.rs started and filled.
// It reads its plan from PP_UI_PLAN (JSON), checks what a person would see,
// and prints one line "RESULT {json}" for the Rust side, which checks the
// rest (the hosted URL's 404, the zip's bytes). Any failed check throws:
// the process exits non-zero and the Rust test fails with this output.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import path from "node:path";

const plan = JSON.parse(process.env.PP_UI_PLAN);
const admin = plan.admin;
const result = {};
const step = (name) => console.log(`step: ${name}`);

const browser = await chromium.launch({
  executablePath: plan.chromium,
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  timeout: 60_000,
});
try {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 860 },
    deviceScaleFactor: 1,
    acceptDownloads: true,
  });
  context.setDefaultTimeout(30_000);
  const page = await context.newPage();
  // Any alert() would mean injected script ran: record it, fail at the end.
  const dialogs = [];
  page.on("dialog", async (d) => {
    if (d.type() === "confirm") return d.accept();
    dialogs.push(`${d.type()}: ${d.message()}`);
    return d.dismiss();
  });
  const cspViolations = [];
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });

  step("1. a stranger is sent to the login form; a wrong token is refused");
  await page.goto(`${admin}/admin/ui`);
  assert.match(page.url(), /\/admin\/ui\/login$/);
  await page.screenshot({ path: path.join(plan.screenshots, "login.png") });
  await page.fill("#token", "not-the-token");
  const [refused] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/admin/ui/login") && r.request().method() === "POST"),
    page.click("button[type=submit]"),
  ]);
  assert.equal(refused.status(), 401);
  await page.waitForSelector(".flash.error");
  assert.equal((await context.cookies()).length, 0, "no cookie for a wrong token");

  step("1. the right token logs in with an HttpOnly, SameSite=Strict cookie");
  await page.fill("#token", plan.token);
  await Promise.all([page.waitForURL(`${admin}/admin/ui`), page.click("button[type=submit]")]);
  const cookies = await context.cookies();
  assert.equal(cookies.length, 1);
  assert.equal(cookies[0].httpOnly, true);
  assert.equal(cookies[0].sameSite, "Strict");
  assert.equal(await page.evaluate(() => document.cookie), "", "scripts cannot read the session");
  await page.waitForSelector(".stats .stat");

  step("2. the gallery renders every thumbnail, each decoded");
  await page.goto(`${admin}/admin/ui/users/${plan.gallery_user}`);
  const thumbs = page.locator(".gallery .thumb img");
  assert.equal(await thumbs.count(), plan.gallery_count);
  // Lazy images load as they come into view: bring each in, then wait.
  for (let i = 0; i < plan.gallery_count; i++) {
    const img = thumbs.nth(i);
    await img.scrollIntoViewIfNeeded();
    await img.evaluate((el) => el.decode());
  }
  const widths = await thumbs.evaluateAll((els) => els.map((e) => e.naturalWidth));
  assert.ok(widths.every((w) => w > 0), `undecoded thumbnails: ${widths}`);
  result.thumbnails = widths.length;
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(plan.screenshots, "gallery.png") });

  step("3. delete one image from its detail page; the count drops");
  const before = Number(await page.textContent("#image-count"));
  await page.goto(`${admin}/admin/ui/users/${plan.gallery_user}/images/${plan.delete_id}`);
  const hosted = await page.inputValue("#hosted-url");
  await page.locator(".preview img").evaluate((el) => el.decode());
  await page.screenshot({ path: path.join(plan.screenshots, "image.png"), fullPage: true });
  assert.ok(hosted.endsWith(plan.delete_path), `${hosted} vs ${plan.delete_path}`);
  await Promise.all([
    page.waitForURL(`${admin}/admin/ui/users/${plan.gallery_user}`),
    page.click("form[data-confirm] button[type=submit]"),
  ]);
  assert.equal(await page.locator(".gallery .thumb img").count(), plan.gallery_count - 1);
  assert.equal(Number(await page.textContent("#image-count")), before - 1);
  const gone = await fetch(`${plan.public}${plan.delete_path}`);
  assert.equal(gone.status, 410, "the hosted URL of the deleted image");
  assert.equal((await gone.json()).reason, "deleted", "a deleted image says why");
  result.deleted = plan.delete_id;

  step("4. a POST without the session's CSRF token is refused");
  const victim = `${admin}/admin/ui/users/${plan.gallery_user}/images/${plan.keep_id}/delete`;
  const statuses = await page.evaluate(async (url) => {
    const post = (body) => fetch(url, { method: "POST", body: new URLSearchParams(body), redirect: "manual" });
    return [(await post({})).status, (await post({ csrf: "forged" })).status];
  }, victim);
  assert.deepEqual(statuses, [403, 403]);
  const kept = await fetch(`${plan.public}${plan.keep_path}`);
  assert.equal(kept.status, 200, "the image a forged POST aimed at is still served");

  step("5. the export button downloads the user's zip");
  await page.goto(`${admin}/admin/ui/users/${plan.export_user}`);
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("a[download]")]);
  const zipPath = path.join(plan.downloads, "export.zip");
  await download.saveAs(zipPath);
  result.zip = zipPath;
  result.zip_name = download.suggestedFilename();

  step("6. HTML in a source URL and in a download error renders as text");
  await page.goto(`${admin}/admin/ui/users/${plan.hostile_user}/images/${plan.hostile_id}`);
  const source = await page.textContent(".source");
  assert.ok(source.includes(plan.hostile_text), `source shown as ${source}`);
  assert.equal(await page.locator("img[src=x]").count(), 0);
  await page.goto(`${admin}/admin/ui/failed`);
  const errors = await page.locator(".error-text").allTextContents();
  assert.ok(errors.some((t) => t.includes(plan.hostile_text)), `errors shown: ${errors}`);
  await page.screenshot({ path: path.join(plan.screenshots, "failed.png") });
  assert.equal(await page.locator("img[src=x]").count(), 0);
  assert.equal(await page.locator("script:not([src])").count(), 0);

  step("users and the cleanup preview render");
  await page.goto(`${admin}/admin/ui/users`);
  assert.ok((await page.locator("table.table tbody tr").count()) >= 3);
  await page.screenshot({ path: path.join(plan.screenshots, "users.png") });
  await page.goto(`${admin}/admin/ui/cleanup`);
  await page.waitForSelector("h2");
  await page.screenshot({ path: path.join(plan.screenshots, "cleanup.png") });

  step("overview, once its charts have samples");
  await page.goto(`${admin}/admin/ui`);
  await page.waitForSelector(".ranked img");
  for (const img of await page.locator("main img").all()) await img.evaluate((el) => el.decode());
  assert.ok((await page.locator("polyline").count()) > 0, "charts drawn");
  await page.screenshot({ path: path.join(plan.screenshots, "overview.png"), fullPage: true });

  step("logout ends the session");
  await Promise.all([page.waitForURL(/\/admin\/ui\/login$/), page.click("form.logout button")]);
  await page.goto(`${admin}/admin/ui/users`);
  assert.match(page.url(), /\/admin\/ui\/login$/);

  assert.deepEqual(dialogs, [], "no script of a user's ran");
  assert.deepEqual(cspViolations, [], "the page breaks none of its own CSP");
  console.log(`RESULT ${JSON.stringify(result)}`);
} finally {
  await browser.close();
}
