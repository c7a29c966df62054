//! Debian's Chromium (`/usr/bin/chromium`, headless) driven by Playwright
//! (`playwright-core` from npm, installed in `tests/browser/` by
//! `scripts/test.sh`): how a browser meets recvault's media.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::api::{api_toml, call, key_toml, KEY_READ};
use crate::harness::*;

/// Chromium's flags for every test: no network of its own, no GPU, no
/// sandbox (the test may run as root), autoplay without a gesture.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
];

/// The folder holding `node_modules/playwright-core`.
fn node_modules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules")
}

/// Runs a Playwright script with Chromium on a fresh profile: `script`
/// gets `launch()` (the browser context), `out(value)` (the JSON the test
/// reads back) and its arguments as `ARGS`. At most `limit_secs`.
fn run_browser(script: &str, args: &[&str], limit_secs: u32) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let flags = serde_json::to_string(FLAGS).unwrap();
    let prelude = format!(
        r#"
const {{ chromium }} = require('playwright-core');
const ARGS = process.argv.slice(2);
const PROFILE = {profile:?};
let profiles = 0;
// The pages' console messages and errors, on standard error.
const CONSOLE_ERRORS = [];
const SCRIPT_ERRORS = [];
const watch = p => {{
  p.on('console', m => {{
    if (m.type() === 'error') CONSOLE_ERRORS.push(m.text());
    console.error('[page ' + m.type() + '] ' + m.text());
  }});
  p.on('pageerror', e => {{ SCRIPT_ERRORS.push(e.message); console.error('[page error] ' + e.message); }});
}};
async function launch() {{
  profiles += 1;
  const ctx = await chromium.launchPersistentContext(PROFILE + profiles, {{
    executablePath: '/usr/bin/chromium', headless: true, args: {flags},
  }});
  ctx.pages().forEach(watch);
  ctx.on('page', watch);
  return ctx;
}}
const launchFresh = launch;
function out(v) {{ console.log('RESULT ' + JSON.stringify(v)); }}
"#,
        profile = dir.path().join("profile").to_string_lossy(),
    );
    let file = dir.path().join("t.js");
    std::fs::write(
        &file,
        format!(
            "{prelude}\n(async () => {{\n{script}\n}})().catch(e => {{ console.error(e); process.exit(1); }});\n"
        ),
    )
    .unwrap();
    let out = Command::new("timeout")
        .args(["-k", "5", &limit_secs.to_string(), "node"])
        .arg(&file)
        .args(args)
        .env("NODE_PATH", node_modules())
        .output()
        .expect("node (scripts/test.sh installs it with playwright-core)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser script failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no result:\n{stdout}\n{stderr}"));
    serde_json::from_str(line).unwrap()
}

/// Plays `<video src>` of URL (ARGS[0]), muted: waits for readyState ≥ 3
/// with currentTime past 2 s, then seeks to ARGS[1] s and waits until it
/// plays 1 s beyond. Meanwhile polls the call's index (ARGS[2], with the
/// key ARGS[3]) for when the MP4 became rendered. Reports the states seen
/// (with seconds since the page was made), the Range requests and their
/// answers, and the second the render was seen done.
const PLAY_AND_SEEK: &str = r#"
const [url, seekTo, callUrl, key] = [ARGS[0], Number(ARGS[1]), ARGS[2], ARGS[3]];
const ctx = await launch();
const page = ctx.pages()[0] || await ctx.newPage();
let t0 = Date.now();
const secs = () => (Date.now() - t0) / 1000;
const ranges = [];
page.on('response', r => {
  if (r.url() === url) ranges.push({ range: r.request().headers()['range'] || 'none', status: r.status(), at: secs() });
});
let renderedAt = null;
const poll = setInterval(async () => {
  try {
    const call = await (await fetch(callUrl, { headers: { authorization: 'Bearer ' + key } })).json();
    const mp4 = call.media.find(m => m.name.endsWith('.mp4') && m.derived);
    if (mp4 && mp4.rendered && renderedAt === null) renderedAt = secs();
  } catch (e) {}
}, 250);
t0 = Date.now();
await page.setContent(`<video id="v" muted autoplay preload="auto" src="${url}"></video>`,
                      { waitUntil: 'domcontentloaded' });
const timeline = [];
const state = () => page.evaluate(() => {
  const v = document.getElementById('v');
  return { readyState: v.readyState, currentTime: v.currentTime, duration: v.duration,
           error: v.error ? (v.error.code + ' ' + v.error.message) : null,
           width: v.videoWidth, height: v.videoHeight };
});
const until = async (ok, ms) => {
  const end = Date.now() + ms;
  let s = await state();
  while (Date.now() < end && !s.error && !ok(s)) {
    await page.waitForTimeout(100); s = await state(); s.at = secs();
    const last = timeline[timeline.length - 1];
    if (!last || last.readyState !== s.readyState || Math.floor(last.currentTime) !== Math.floor(s.currentTime)) timeline.push(s);
  }
  s.at = secs();
  s.ok = !s.error && ok(s);
  return s;
};
const metadata = await until(s => s.readyState >= 1, 120000);
const playing = await until(s => s.readyState >= 3 && s.currentTime > 2, 120000);
let seeked = null;
if (playing.ok) {
  await page.evaluate(x => { const v = document.getElementById('v'); v.currentTime = x; v.play(); }, seekTo);
  seeked = await until(s => s.readyState >= 3 && s.currentTime > seekTo + 1, 180000);
}
clearInterval(poll);
out({ metadata, playing, seeked, renderedAt, ranges, timeline });
await ctx.close();
"#;

/// The risky part of a web player, proven first: Chromium's `<video src>`
/// plays an MP4 that was never rendered (the first request starts the
/// render; the entry's size is the reserved size, so the browser sees a
/// whole file whose tail is still being made), and seeks to 80 % of the
/// call, over HTTP Range from the content API (a signed link: no header
/// needed, as for a page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_plays_and_seeks_an_mp4_that_was_never_rendered() {
    let prefix = unique_prefix("browser-mp4");
    let config = format!(
        "{}{}\n{}",
        crate::media::media_config(&prefix),
        key_toml("page", KEY_READ, &["calls:read", "media:read"]),
        api_toml("browser"),
    );
    let server = Server::start_logging(
        tempfile::tempdir().unwrap(),
        &format!("{}\n{config}", s3().storage_toml()),
        "info,recvault::media::render=debug",
    );
    let work = tempfile::tempdir().unwrap();
    let id = "call-browser";
    let seconds = 60;
    let dir = recvault::media::fixture::session(work.path(), id, seconds).unwrap();
    crate::media::push_session(&server, &dir);
    let port = server.api_port;
    let call_id = format!("2026-11-23_{id}");
    let shown = call(
        port,
        "GET",
        &format!("/v1/calls/{call_id}"),
        Some(KEY_READ),
        &[],
    );
    assert_eq!(shown.code, 200, "{}", String::from_utf8_lossy(&shown.body));
    let made = call(
        port,
        "POST",
        &format!("/v1/calls/{call_id}/media/{id}.mp4/links"),
        Some(KEY_READ),
        &[
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"ttl_secs": 3600, "max_uses": 1000}"#,
        ],
    );
    assert_eq!(made.code, 201, "{}", String::from_utf8_lossy(&made.body));
    let url = made.json()["url"].as_str().unwrap().to_string();
    assert!(
        !server.log_shows("render started"),
        "nothing rendered before the browser asks"
    );
    let seek_to = f64::from(seconds) * 0.8;
    let call_url = format!("http://127.0.0.1:{port}/v1/calls/{call_id}");
    let got = run_browser(
        PLAY_AND_SEEK,
        &[&url, &seek_to.to_string(), &call_url, KEY_READ],
        420,
    );
    eprintln!("browser saw: {got:#}");
    let playing = &got["playing"];
    assert_eq!(playing["ok"], true, "never played: {got:#}");
    assert_eq!(
        (playing["width"].as_u64(), playing["height"].as_u64()),
        (Some(1280), Some(480)),
        "{got:#}"
    );
    let seeked = &got["seeked"];
    assert_eq!(seeked["ok"], true, "did not play after the seek: {got:#}");
    assert!(seeked["currentTime"].as_f64().unwrap() > seek_to + 1.0);
    assert_eq!(
        server.log().matches("render started").count(),
        1,
        "rendered once"
    );
}

/// The page, end to end, as a QA analyst uses it: a wrong password, a
/// login, the day's list, a call whose MP4 was never rendered playing and
/// seeking in the page's player, the dual player's two videos on one
/// clock, a download of the listed size; then erase refused without the
/// `delete` permission and without the CSRF token, and another tenant's
/// user kept out. Screenshots go to `target/screenshots/`.
const PAGE_TOUR: &str = r##"
const [base, callId, pw, shots] = ARGS;
const ctx = await launch();
const page = ctx.pages()[0] || await ctx.newPage();
const result = {};
const wait = async (fn, ms, arg) => {
  try { await page.waitForFunction(fn, arg, { timeout: ms, polling: 100 }); return true; } catch (e) { return false; }
};
const logIn = async (p, user, password) => {
  await p.goto(base + '/');
  await p.fill('#user', user);
  await p.fill('#password', password);
  await p.click('#login-submit');
};
// A wrong password: an error on the form, still logged out.
await logIn(page, 'qa', 'not-the-password');
result.wrongPassword = await wait(() => document.getElementById('login-error').textContent.length > 0, 10000)
  ? await page.textContent('#login-error') : null;
result.loggedOutAfterWrong = await page.isHidden('#logout');
await logIn(page, 'qa', pw);
result.loggedIn = await wait(() => !document.getElementById('logout').hidden, 10000);
result.who = await page.textContent('#who');
// The day's list.
await page.goto(base + '/#/day/2026-11-23');
result.listed = await wait(id => !!document.querySelector('a[href="#/call/' + id + '"]'), 20000, callId);
await page.screenshot({ path: shots + '/day.png', fullPage: true });
await page.click('a[href="#/call/' + callId + '"]');
result.callPage = await wait(() => !!document.getElementById('mp4-video'), 20000);
result.renderedBefore = await page.evaluate(async id => {
  const c = await (await fetch('/v1/calls/' + id)).json();
  return c.media.find(m => m.name.endsWith('.mp4') && m.derived).rendered;
}, callId);
// The MP4: plays while it renders, then seeks to 80 %.
await page.evaluate(() => { const v = document.getElementById('mp4-video'); v.muted = true; v.play(); });
const mp4 = () => page.evaluate(async id => {
  const v = document.getElementById('mp4-video');
  const c = await (await fetch('/v1/calls/' + id)).json();
  return { readyState: v.readyState, currentTime: v.currentTime, duration: v.duration,
           error: v.error ? v.error.message : null, note: document.getElementById('mp4-note').textContent,
           rendered: c.media.find(m => m.name.endsWith('.mp4') && m.derived).rendered };
}, callId);
result.mp4Playing = await wait(() => { const v = document.getElementById('mp4-video'); return v.readyState >= 3 && v.currentTime > 2; }, 120000);
result.mp4AtPlay = await mp4();
const seekTo = result.mp4AtPlay.duration * 0.8;
await page.evaluate(t => { document.getElementById('mp4-video').currentTime = t; }, seekTo);
result.mp4Seeked = await wait(t => { const v = document.getElementById('mp4-video'); return v.readyState >= 3 && v.currentTime > t + 1; }, 180000, seekTo);
result.mp4AfterSeek = await mp4();
result.mp4Player = await page.evaluate(() => ({ jumps: window.recvaultPlayer.jumps, received: window.recvaultPlayer.received,
                                                error: window.recvaultPlayer.error || null }));
result.seekTo = seekTo;
await page.evaluate(() => document.getElementById('mp4-video').pause());
await page.screenshot({ path: shots + '/call.png', fullPage: true });
// The dual player: both advance, within 0.3 s of each other, for 5 s.
await page.evaluate(() => { for (const v of document.querySelectorAll('.dual video')) v.muted = true; });
await page.click('#dual-play');
const pair = () => page.evaluate(() => {
  const d = window.recvaultDual;
  return d.sides.map(s => ({ party: s.party, at: s.video.currentTime + s.offset, paused: s.video.paused, ready: s.video.readyState }));
});
result.dualStarted = await wait(() => window.recvaultDual && window.recvaultDual.sides.every(s => s.video.currentTime > 0.5), 60000);
result.dualOffsets = await page.evaluate(() => window.recvaultDual.sides.map(s => s.offset));
const samples = [];
for (let i = 0; i < 20; i++) { samples.push(await pair()); await page.waitForTimeout(250); }
result.dualSamples = samples;
await page.screenshot({ path: shots + '/dual.png', fullPage: true });
await page.click('#dual-play');
await page.waitForTimeout(500);
const paused1 = await pair();
await page.waitForTimeout(1000);
result.dualPaused = [paused1, await pair()];
await page.evaluate(() => { const s = document.getElementById('dual-seek'); s.value = '30'; s.dispatchEvent(new Event('input')); });
await wait(() => window.recvaultDual.sides.every(s => !s.video.seeking && s.video.readyState >= 2), 30000);
result.dualSeeked = await pair();
// Downloads: the listed size.
result.downloads = await page.evaluate(async () => {
  const out = [];
  for (const a of document.querySelectorAll('table.files a[download]')) {
    if (!/\.(tar\.gz|webm)$/.test(a.textContent)) continue;
    const r = await fetch(a.getAttribute('href'));
    out.push({ name: a.textContent, listed: Number(a.dataset.size), got: (await r.arrayBuffer()).byteLength, status: r.status,
               disposition: r.headers.get('content-disposition') });
  }
  return out;
});
// Erase: no button without `delete`, and refused by the server.
result.eraseButtonForQa = await page.isVisible('#erase');
result.eraseAsQa = await page.evaluate(async id => {
  const me = await (await fetch('/session')).json();
  const r = await fetch('/v1/calls/' + id, { method: 'DELETE', headers: { 'X-CSRF-Token': me.csrf } });
  return { status: r.status, error: (await r.json()).error };
}, callId);
// A user with `delete`: refused without the CSRF token (and with a wrong one).
const ctxLead = await launch();
const lead = ctxLead.pages()[0] || await ctxLead.newPage();
await logIn(lead, 'lead', pw);
await lead.waitForFunction(() => !document.getElementById('logout').hidden, null, { timeout: 10000 });
await lead.goto(base + '/#/call/' + callId);
result.eraseButtonForLead = await lead.waitForSelector('#erase', { timeout: 20000 }).then(() => true, () => false);
result.eraseWithoutCsrf = await lead.evaluate(async id => {
  const a = await fetch('/v1/calls/' + id, { method: 'DELETE' });
  const b = await fetch('/v1/calls/' + id, { method: 'DELETE', headers: { 'X-CSRF-Token': 'forged' } });
  return [a.status, b.status, (await a.json()).error];
}, callId);
result.stillThere = await lead.evaluate(async id => (await fetch('/v1/calls/' + id)).status, callId);
await ctx.close();
// Another tenant's user, on a fresh profile: the call's URL is not found.
const ctx2 = await launchFresh();
const other = ctx2.pages()[0] || await ctx2.newPage();
await logIn(other, 'other', pw);
await other.waitForFunction(() => !document.getElementById('logout').hidden, null, { timeout: 10000 });
await other.goto(base + '/#/call/' + callId);
result.otherTenant = await other.evaluate(async id => (await fetch('/v1/calls/' + id)).status, callId);
result.otherTenantPage = await other.waitForSelector('.error', { timeout: 20000 }).then(e => e.textContent(), () => null);
await ctx2.close();
// The lead erases it with the page's button (after the confirmation), then logs out.
lead.on('dialog', d => { result.confirmation = d.message(); d.accept(); });
await lead.click('#erase');
result.erasedToDay = await lead.waitForFunction(() => location.hash === '#/day/2026-11-23', null, { timeout: 30000 })
  .then(() => true, () => false);
result.afterErase = await lead.evaluate(async id => (await fetch('/v1/calls/' + id)).status, callId);
await lead.click('#logout');
result.loggedOut = await lead.waitForSelector('#user', { timeout: 10000 }).then(() => true, () => false);
result.afterLogout = await lead.evaluate(async () => (await fetch('/v1/calls')).status);
await ctxLead.close();
result.consoleErrors = CONSOLE_ERRORS;
result.scriptErrors = SCRIPT_ERRORS;
out(result);
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_page_plays_a_call_in_both_players_and_refuses_a_csrf_forged_erase_and_other_tenants(
) {
    let prefix = unique_prefix("browser-page");
    let pw = crate::media::PW;
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = HASH.get_or_init(|| recvault::password::hash(pw).unwrap());
    let config = format!(
        "{}\n[[tenants.users]]\nname = \"lead\"\npassword = \"{hash}\"\npermissions = [\"list\", \"download\", \"delete\"]\n\n\
         [[tenants]]\nid = \"beta\"\nprefix = \"{prefix}beta/\"\n\n[[tenants.users]]\nname = \"other\"\npassword = \"{hash}\"\n{}",
        crate::media::media_config(&prefix),
        api_toml("page"),
    );
    let server = Server::start(&config);
    let work = tempfile::tempdir().unwrap();
    let id = "call-page";
    // The user's camera and microphone start 2 s after the agent's.
    let dir = recvault::media::fixture::session_late(work.path(), id, 60, 2000).unwrap();
    crate::media::push_session(&server, &dir);
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let base = format!("http://127.0.0.1:{}", server.api_port);
    let call_id = format!("2026-11-23_{id}");
    let got = run_browser(
        PAGE_TOUR,
        &[&base, &call_id, pw, shots.to_str().unwrap()],
        600,
    );
    eprintln!("browser saw: {got:#}");
    eprintln!("screenshots: {}", shots.display());
    // Login.
    assert!(
        got["wrongPassword"]
            .as_str()
            .is_some_and(|t| t.contains("wrong user name or password")),
        "{got:#}"
    );
    assert_eq!(got["loggedOutAfterWrong"], true);
    assert_eq!(got["loggedIn"], true, "{got:#}");
    assert_eq!(got["who"], "qa (acme)");
    assert!(
        server
            .audit()
            .lines()
            .any(|l| l.contains("\"protocol\":\"web\"") && l.contains("\"ok\":false")),
        "the failed login is audited"
    );
    assert!(
        server.log_shows("login failed"),
        "and counted by the defender"
    );
    // The list and the MP4 player on a call never rendered.
    assert_eq!(got["listed"], true, "{got:#}");
    assert_eq!(got["callPage"], true);
    assert_eq!(
        got["renderedBefore"], false,
        "the page's first view renders"
    );
    assert_eq!(got["mp4Playing"], true, "{got:#}");
    assert_eq!(got["mp4Seeked"], true, "{got:#}");
    // Past what the player buffers ahead (30 s): a Range request from
    // where 48 s should be, not a wait for the stream from the start.
    assert!(got["mp4Player"]["jumps"].as_u64().unwrap() >= 1, "{got:#}");
    assert_eq!(got["mp4Player"]["error"], Value::Null, "{got:#}");
    let after = got["mp4AfterSeek"]["currentTime"].as_f64().unwrap();
    assert!(after > got["seekTo"].as_f64().unwrap() + 1.0, "{got:#}");
    // The dual player: the late user placed 2 s in; both advance, within
    // 0.3 s of each other on the call's clock.
    assert_eq!(got["dualStarted"], true, "{got:#}");
    let offsets = &got["dualOffsets"];
    assert_eq!(offsets[0].as_f64(), Some(0.0), "{got:#}");
    assert!((offsets[1].as_f64().unwrap() - 2.0).abs() < 0.05, "{got:#}");
    let samples = got["dualSamples"].as_array().unwrap();
    let mut worst: f64 = 0.0;
    for s in samples {
        let (a, b) = (s[0]["at"].as_f64().unwrap(), s[1]["at"].as_f64().unwrap());
        worst = worst.max((a - b).abs());
    }
    let first = samples.first().unwrap();
    let last = samples.last().unwrap();
    for side in 0..2 {
        let advanced = last[side]["at"].as_f64().unwrap() - first[side]["at"].as_f64().unwrap();
        assert!(
            advanced > 3.0,
            "side {side} advanced {advanced} s in 5 s: {got:#}"
        );
    }
    assert!(
        worst <= 0.3,
        "the two sides drifted {worst} s apart: {got:#}"
    );
    let paused = &got["dualPaused"];
    for side in 0..2 {
        assert_eq!(paused[1][side]["paused"], true, "{got:#}");
        assert_eq!(
            paused[0][side]["at"], paused[1][side]["at"],
            "a paused side stays put: {got:#}"
        );
        let at = got["dualSeeked"][side]["at"].as_f64().unwrap();
        assert!((at - 30.0).abs() < 0.3, "a seek moves both: {got:#}");
    }
    // Downloads of the listed size.
    let downloads = got["downloads"].as_array().unwrap();
    assert!(downloads.len() >= 2, "{got:#}");
    for d in downloads {
        assert_eq!(d["status"], 200, "{d}");
        assert_eq!(d["got"], d["listed"], "{d}");
        assert!(
            d["disposition"].as_str().unwrap().starts_with("attachment"),
            "{d}"
        );
    }
    // Erase guarded; the other tenant kept out.
    assert_eq!(got["eraseButtonForQa"], false);
    assert_eq!(got["eraseAsQa"]["status"], 403, "{got:#}");
    assert_eq!(got["eraseButtonForLead"], true);
    assert_eq!(got["eraseWithoutCsrf"][0], 403, "{got:#}");
    assert_eq!(got["eraseWithoutCsrf"][1], 403, "{got:#}");
    assert!(
        got["eraseWithoutCsrf"][2]
            .as_str()
            .unwrap()
            .contains("CSRF"),
        "{got:#}"
    );
    assert_eq!(got["stillThere"], 200);
    assert_eq!(got["otherTenant"], 404, "{got:#}");
    assert!(
        got["confirmation"]
            .as_str()
            .is_some_and(|m| m.contains("cannot be undone")),
        "{got:#}"
    );
    assert_eq!(got["erasedToDay"], true, "{got:#}");
    assert_eq!(got["afterErase"], 404, "erased: {got:#}");
    assert_eq!(
        (got["loggedOut"].clone(), got["afterLogout"].clone()),
        (Value::Bool(true), Value::from(401)),
        "{got:#}"
    );
    // No script error, nothing the CSP refused.
    assert_eq!(got["scriptErrors"], Value::Array(vec![]), "{got:#}");
    for e in got["consoleErrors"].as_array().unwrap() {
        let e = e.as_str().unwrap();
        assert!(
            e.starts_with("Failed to load resource"),
            "console error: {e}"
        );
    }
    // Views, downloads and the erase are audited like SFTP's, as `web`.
    let audit = server.audit();
    for event in ["download", "erase"] {
        assert!(
            audit
                .lines()
                .any(|l| l.contains(&format!("\"event\":\"{event}\""))
                    && l.contains("\"protocol\":\"web\"")),
            "no web {event} in the audit trail:\n{audit}"
        );
    }
    assert!(
        got["otherTenantPage"]
            .as_str()
            .is_some_and(|t| t.contains("no such call")),
        "{got:#}"
    );
}

/// The page by keyboard alone (login, the day's list, the dual player's
/// play button), the dual player with the user's file held back (a stalled
/// side holds the clock and pauses the other) and at 1.5× and 2×, the
/// search form, the calendar's month buttons and a share link made on the
/// page. ARGS: base URL, call id, password.
const DUAL_AND_KEYS: &str = r##"
const [base, callId, pw] = ARGS;
const ctx = await launch();
const page = ctx.pages()[0] || await ctx.newPage();
const result = {};
const wait = async (fn, ms, arg) => {
  try { await page.waitForFunction(fn, arg, { timeout: ms, polling: 100 }); return true; } catch (e) { return false; }
};
const focused = () => page.evaluate(() => document.activeElement ? (document.activeElement.id || document.activeElement.getAttribute('href') || document.activeElement.tagName) : null);
const tabTo = async want => {
  for (let i = 0; i < 120; i++) {
    if (await focused() === want) return i;
    await page.keyboard.press('Tab');
  }
  return null;
};
// The user's own file (WebM, or MP4 for an H.264 party) is held back
// until `release()`.
let release;
const gate = new Promise(r => { release = r; });
let gated = 0;
await ctx.route(/\/media\/user\.(webm|mp4)/, async route => { gated += 1; await gate; await route.continue(); });
// Keyboard only: the login form has the focus; Tab, Enter.
await page.goto(base + '/#/day/2026-11-23');
await page.waitForSelector('#user');
result.focusAtLogin = await focused();
await page.keyboard.type('qa');
await page.keyboard.press('Tab');
await page.keyboard.type(pw);
await page.keyboard.press('Enter');
result.loggedIn = await wait(() => !document.getElementById('logout').hidden, 10000);
result.listed = await wait(id => !!document.querySelector('a[href="#/call/' + id + '"]'), 20000, callId);
result.tabsToCall = await tabTo('#/call/' + callId);
await page.keyboard.press('Enter');
result.callPage = await wait(() => !!document.getElementById('dual-play') && !!window.recvaultDual, 20000);
await page.evaluate(() => { for (const v of document.querySelectorAll('video')) v.muted = true; });
result.tabsToPlay = await tabTo('dual-play');
await page.keyboard.press('Enter');
// The agent plays to the user's start (2 s), then the held-back user holds the clock.
const dual = () => page.evaluate(() => {
  const d = window.recvaultDual;
  return { t: d.t, playing: d.playing, stalled: d.stalled, wall: performance.now(),
           sides: d.sides.map(s => ({ party: s.party, at: s.video.currentTime + s.offset, rate: s.video.playbackRate,
                                       paused: s.video.paused, ready: s.video.readyState })) };
});
result.stalled = await wait(() => { const d = window.recvaultDual; return d.playing && d.stalled && d.t >= 1.9; }, 60000);
await page.waitForTimeout(1000);
const held1 = await dual();
await page.waitForTimeout(2000);
result.held = [held1, await dual()];
result.gated = gated;
release();
result.resumed = await wait(() => { const d = window.recvaultDual; return !d.stalled && d.t > 4 && d.sides.every(s => !s.video.paused); }, 60000);
// Faster: each rate for 3 s.
result.rates = {};
for (const r of ['1.5', '2']) {
  await page.selectOption('#dual-rate', r);
  await page.waitForTimeout(1000);
  const samples = [];
  for (let i = 0; i < 12; i++) { samples.push(await dual()); await page.waitForTimeout(250); }
  result.rates[r] = samples;
}
await page.click('#dual-play');
// A share link for agent.webm, one download.
await page.selectOption('#link-file', 'agent.webm');
await page.fill('#link-uses', '1');
await page.click('#link-make');
result.linkMade = await wait(() => !!document.getElementById('link-url'), 10000);
result.link = result.linkMade ? await page.inputValue('#link-url') : null;
result.linkNote = result.linkMade ? await page.textContent('#link-note') : null;
result.agentSize = await page.evaluate(() => Number(document.querySelector('a[download="agent.webm"]').dataset.size));
// A link that cannot be made: zero uses is refused with the server's reason.
await page.evaluate(() => { document.getElementById('link-uses').min = '0'; });
await page.fill('#link-uses', '0');
await page.click('#link-make');
result.linkRefused = await wait(() => { const e = document.querySelector('#link-result .error'); return e && e.textContent.length > 0; }, 10000)
  ? await page.textContent('#link-result .error') : null;
// Search: by agent, then an agent with no calls.
await page.goto(base + '/#/search');
await page.waitForSelector('#q-agent');
await page.fill('#q-from', '2026-11-23');
await page.fill('#q-to', '2026-11-23');
await page.fill('#q-agent', 'agent-1');
await page.click('form.search button[type=submit]');
result.searchFound = await wait(id => !!document.querySelector('a[href="#/call/' + id + '"]'), 20000, callId);
result.searchHash = await page.evaluate(() => location.hash);
await page.fill('#q-agent', 'agent-9');
await page.click('form.search button[type=submit]');
result.searchNone = await wait(() => [...document.querySelectorAll('p.muted')].some(p => p.textContent === 'No calls.'), 20000);
result.searchNoneLinks = await page.evaluate(() => document.querySelectorAll('table.calls a').length);
// The calendar: a month back, two forward, then a day of it.
await page.goto(base + '/#/month/2026-11');
await page.waitForSelector('#month-prev');
await page.click('#month-prev');
result.prevMonth = await wait(() => location.hash === '#/month/2026-10' && !!document.querySelector('button[data-day="2026-10-31"]'), 5000);
await page.click('#month-next');
await page.click('#month-next');
result.nextMonth = await wait(() => location.hash === '#/month/2026-12' && !!document.querySelector('button[data-day="2026-12-31"]'), 5000);
await page.click('#month-prev');
await page.waitForSelector('button[data-day="2026-11-23"]');
await page.click('button[data-day="2026-11-23"]');
result.dayFromCalendar = await wait(id => location.hash === '#/day/2026-11-23' && !!document.querySelector('a[href="#/call/' + id + '"]'), 20000, callId);
await ctx.close();
result.scriptErrors = SCRIPT_ERRORS;
out(result);
"##;

/// The largest distance between the two sides on the call's clock, over
/// `samples` (as DUAL_AND_KEYS reports them).
fn worst_drift(samples: &[Value]) -> f64 {
    samples
        .iter()
        .map(|s| {
            let sides = &s["sides"];
            (sides[0]["at"].as_f64().unwrap() - sides[1]["at"].as_f64().unwrap()).abs()
        })
        .fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_dual_player_holds_for_a_stalled_side_keeps_step_at_speed_and_the_page_works_by_keyboard(
) {
    let prefix = unique_prefix("browser-dual");
    let pw = crate::media::PW;
    let config = format!(
        "{}{}",
        crate::media::media_config(&prefix),
        api_toml("dual")
    );
    let server = Server::start(&config);
    let work = tempfile::tempdir().unwrap();
    let id = "call-dual";
    let dir = recvault::media::fixture::session_late(work.path(), id, 60, 2000).unwrap();
    crate::media::push_session(&server, &dir);
    let base = format!("http://127.0.0.1:{}", server.api_port);
    let call_id = format!("2026-11-23_{id}");
    let got = run_browser(DUAL_AND_KEYS, &[&base, &call_id, pw], 600);
    eprintln!("browser saw: {got:#}");
    // By keyboard: the form takes the focus, Tab and Enter do the rest.
    assert_eq!(got["focusAtLogin"], "user", "{got:#}");
    assert_eq!(got["loggedIn"], true, "{got:#}");
    assert_eq!(got["listed"], true, "{got:#}");
    assert!(
        got["tabsToCall"].is_u64(),
        "the call's link is reachable by Tab: {got:#}"
    );
    assert_eq!(got["callPage"], true, "{got:#}");
    assert!(
        got["tabsToPlay"].is_u64(),
        "the play button is reachable by Tab: {got:#}"
    );
    // The held-back user: the clock stops at its start, the agent pauses there.
    assert_eq!(got["stalled"], true, "{got:#}");
    assert!(got["gated"].as_u64().unwrap() >= 1, "{got:#}");
    let held = got["held"].as_array().unwrap();
    for h in held {
        assert_eq!(h["stalled"], true, "{got:#}");
        assert_eq!(h["sides"][0]["paused"], true, "the agent waits: {got:#}");
        let t = h["t"].as_f64().unwrap();
        assert!(
            (1.9..2.4).contains(&t),
            "the clock holds at the user's start: {got:#}"
        );
    }
    assert_eq!(
        held[0]["t"], held[1]["t"],
        "no time passes on a stalled clock: {got:#}"
    );
    assert_eq!(got["resumed"], true, "released, both play: {got:#}");
    // At 1.5× and 2×: each side's rate is the chosen one (within the
    // drift nudge), both advance, within 0.3 s of each other.
    for (rate, want) in [("1.5", 1.5), ("2", 2.0)] {
        let samples = got["rates"][rate].as_array().unwrap();
        let drift = worst_drift(samples);
        assert!(drift <= 0.3, "at {rate}×: drift {drift} s: {got:#}");
        let (first, last) = (samples.first().unwrap(), samples.last().unwrap());
        let wall = (last["wall"].as_f64().unwrap() - first["wall"].as_f64().unwrap()) / 1000.0;
        for side in 0..2 {
            for s in samples {
                let r = s["sides"][side]["rate"].as_f64().unwrap();
                assert!(
                    (r - want).abs() <= want * 0.1 + 1e-9,
                    "at {rate}×, side {side} plays at {r}: {got:#}"
                );
            }
            let moved = last["sides"][side]["at"].as_f64().unwrap()
                - first["sides"][side]["at"].as_f64().unwrap();
            eprintln!("at {rate}×: side {side} moved {moved:.2} s in {wall:.2} s");
            assert!(
                moved > 0.5,
                "at {rate}×, side {side} moved {moved} s: {got:#}"
            );
        }
    }
    // The share link: made on the page, works once without a login.
    assert_eq!(got["linkMade"], true, "{got:#}");
    assert!(
        got["linkNote"]
            .as_str()
            .is_some_and(|t| t.contains("1 download") && t.contains("agent.webm")),
        "{got:#}"
    );
    let link = got["link"].as_str().unwrap();
    let path = link.strip_prefix(&base).unwrap_or_else(|| panic!("{link}"));
    let first = call(server.api_port, "GET", path, None, &[]);
    assert_eq!(first.code, 200, "{got:#}");
    assert_eq!(first.body.len() as u64, got["agentSize"].as_u64().unwrap());
    assert_eq!(
        call(server.api_port, "GET", path, None, &[]).code,
        410,
        "used up"
    );
    assert!(
        got["linkRefused"]
            .as_str()
            .is_some_and(|t| t.contains("max_uses")),
        "{got:#}"
    );
    // Search and calendar.
    assert_eq!(got["searchFound"], true, "{got:#}");
    assert!(
        got["searchHash"]
            .as_str()
            .unwrap()
            .contains("agent=agent-1"),
        "{got:#}"
    );
    assert_eq!(got["searchNone"], true, "{got:#}");
    assert_eq!(got["searchNoneLinks"], 0, "{got:#}");
    assert_eq!(got["prevMonth"], true, "{got:#}");
    assert_eq!(got["nextMonth"], true, "{got:#}");
    assert_eq!(got["dayFromCalendar"], true, "{got:#}");
    assert_eq!(got["scriptErrors"], Value::Array(vec![]), "{got:#}");
    // The page's link is audited as made by the user, over the web.
    assert!(
        server
            .audit()
            .lines()
            .any(|l| l.contains("\"protocol\":\"web\"")
                && l.contains("agent.webm")
                && l.contains("link")),
        "{}",
        server.audit()
    );
}

/// Logs in, does nothing past `[api] session_idle_secs` (2), then opens a
/// day: the login form comes back with the reason. Logs in again and
/// stays busy (a request every 0.5 s) for longer than that: still in.
const IDLE: &str = r##"
const [base, pw] = ARGS;
const ctx = await launch();
const page = ctx.pages()[0] || await ctx.newPage();
const result = {};
const logIn = async () => {
  await page.waitForSelector('#user');
  await page.fill('#user', 'qa');
  await page.fill('#password', pw);
  await page.click('#login-submit');
  return page.waitForFunction(() => !document.getElementById('logout').hidden, null, { timeout: 10000 }).then(() => true, () => false);
};
await page.goto(base + '/');
result.loggedIn = await logIn();
result.idleTimeout = await page.evaluate(async () => (await (await fetch('/session')).json()).idle_timeout_secs);
await page.waitForTimeout(3500);
await page.evaluate(() => { location.hash = '#/day/2026-11-23'; });
result.backToLogin = await page.waitForFunction(() => !!document.getElementById('user') && document.getElementById('logout').hidden
  && document.getElementById('login-error').textContent.length > 0, null, { timeout: 10000 }).then(() => true, () => false);
result.reason = await page.textContent('#login-error').catch(() => null);
result.loggedInAgain = await logIn();
const statuses = [];
for (let i = 0; i < 10; i++) {
  statuses.push(await page.evaluate(async () => (await fetch('/v1/calls?from=2026-11-23&to=2026-11-23')).status));
  await page.waitForTimeout(500);
}
result.busyStatuses = statuses;
await ctx.close();
result.scriptErrors = SCRIPT_ERRORS;
out(result);
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_session_ends_when_idle_and_the_page_asks_for_the_login_again() {
    let prefix = unique_prefix("browser-idle");
    let config = format!(
        "{}{}session_idle_secs = 2\nsession_max_secs = 60\n",
        crate::media::media_config(&prefix),
        api_toml("idle")
    );
    let server = Server::start(&config);
    let base = format!("http://127.0.0.1:{}", server.api_port);
    let got = run_browser(IDLE, &[&base, crate::media::PW], 120);
    eprintln!("browser saw: {got:#}");
    assert_eq!(got["loggedIn"], true, "{got:#}");
    assert_eq!(got["idleTimeout"], 2, "{got:#}");
    assert_eq!(got["backToLogin"], true, "{got:#}");
    assert!(
        got["reason"]
            .as_str()
            .is_some_and(|t| t.contains("session ended")),
        "{got:#}"
    );
    assert_eq!(got["loggedInAgain"], true, "{got:#}");
    assert!(
        got["busyStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s == 200),
        "a busy session stays: {got:#}"
    );
    assert_eq!(got["scriptErrors"], Value::Array(vec![]), "{got:#}");
}
