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
async function launch() {{
  return chromium.launchPersistentContext(PROFILE, {{
    executablePath: '/usr/bin/chromium', headless: true, args: {flags},
  }});
}}
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
