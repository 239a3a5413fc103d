//! The web console in a real headless Chromium, driven through
//! chromedriver (WebDriver), against a real recordhook with an admin
//! listener and a forward sink whose target the test controls.
//!
//! A custom harness (libtest-mimic): without `chromium` and `chromedriver`
//! the test is reported as *ignored*, with the reason; under `CI` it fails
//! instead (`.ci/run` installs Debian's `chromium` and `chromium-driver`).
//! It saves a screenshot of the console in `target/console.png`.

// Tests fail loudly by unwrapping; production code may not (see Cargo.toml lints).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../api/binary.rs"]
mod binary;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../api/target.rs"]
mod target;
#[allow(dead_code)]
#[path = "../tencent_fake/mod.rs"]
mod tencent_fake;
#[path = "../common/trial.rs"]
mod trial;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use helpers::*;
use target::Target;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const TOKEN: &str = "console-token-0123456789abcdef";

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    // fantoccini's rustls may bring a second crypto provider: pick the one
    // recordhook uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ci = std::env::var_os("CI").is_some_and(|value| !value.is_empty());
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|path| !Path::new(path).exists())
        .collect();
    let ignored = !ci && !missing.is_empty();
    if ignored {
        eprintln!(
            "ignored: the browser test needs {} (Debian: apt-get install chromium chromium-driver)",
            missing.join(" and ")
        );
    }
    let trials = vec![
        trial::trial(
            "the_console_shows_callbacks_live_and_retries_a_dead_letter".to_owned(),
            ignored,
            || Box::pin(console_test()),
        ),
        trial::trial(
            "the_console_badges_a_reconciled_callback_and_lists_the_gaps".to_owned(),
            ignored,
            || Box::pin(reconciliation_test()),
        ),
    ];
    libtest_mimic::run(&args, trials).exit_code()
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    // Ask the kernel for a free port, then hand it to chromedriver.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let up = eventually(Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "chromedriver did not start");
    driver
}

async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"],
        }),
    );
    ClientBuilder::rustls()
        .unwrap()
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .unwrap()
}

/// Clicks the element `css` selects.
async fn click(client: &Client, css: &str) {
    let element = client.find(Locator::Css(css)).await.unwrap();
    element.click().await.unwrap();
}

/// Types `text` into the field `css` selects.
async fn type_into(client: &Client, css: &str, text: &str) {
    let element = client.find(Locator::Css(css)).await.unwrap();
    element.send_keys(text).await.unwrap();
}

/// Waits up to 20 s for `script` (returning a boolean) to be true in the page.
async fn wait_for(client: &Client, what: &str, script: &str) {
    for _ in 0..200 {
        let value = client.execute(script, Vec::new()).await.unwrap();
        if value.as_bool() == Some(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let html = client.source().await.unwrap_or_default();
    panic!("{what}: not within 20 s; the page:\n{html}");
}

async fn console_test() {
    let target = Target::start().await;
    target.set_default(400);
    let app = spawn_app_with_config(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntokens = [\"{TOKEN}\"]\n\
         [[sinks]]\nname = \"backend\"\ntype = \"forward\"\nurl = \"{}\"\n\
         retry_initial_ms = 10\nretry_max_ms = 50\nmax_attempts = 2\n",
        target.url
    ))
    .await;
    let admin = app.admin_address.clone().unwrap();
    let driver = start_driver().await;
    let client = browser(&driver).await;
    client.goto(&format!("{admin}/")).await.unwrap();

    // Without a token: the form, and a wrong token is refused.
    wait_for(
        &client,
        "the token form",
        "return !document.querySelector('#login').hidden",
    )
    .await;
    type_into(&client, "#token", "not-the-token-at-all").await;
    click(&client, "#sign-in").await;
    wait_for(
        &client,
        "the refusal",
        "return document.querySelector('#login-error').textContent.includes('refused')",
    )
    .await;
    let stored = client
        .execute(
            "return sessionStorage.getItem('recordhook-admin-token')",
            Vec::new(),
        )
        .await
        .unwrap();
    assert!(stored.is_null(), "a refused token was kept: {stored}");

    // With the token: the callbacks view.
    type_into(&client, "#token", TOKEN).await;
    click(&client, "#sign-in").await;
    wait_for(
        &client,
        "the callbacks view",
        "return !document.querySelector('#events-view').hidden",
    )
    .await;
    let cookies = client.get_all_cookies().await.unwrap();
    assert!(cookies.is_empty(), "the console set cookies: {cookies:?}");

    // A callback sent now appears without a reload.
    assert_eq!(app.post_json(&recording("browser-1")).await.status(), 200);
    let row = "document.querySelector('#events tbody tr')";
    wait_for(
        &client,
        "the new callback in the list",
        &format!("return !!{row} && {row}.textContent.includes('browser-1')"),
    )
    .await;
    // Its detail shows its sink; the forward target refuses it for good.
    click(&client, "#events tbody tr").await;
    wait_for(
        &client,
        "the detail with its sink",
        "return !!document.querySelector('#detail-sinks tr[data-sink=backend]')",
    )
    .await;
    wait_for(
        &client,
        "the dead letter in the detail",
        "document.querySelector('#events tbody tr').click(); \
         const s = document.querySelector('#detail-sinks tr[data-sink=backend]'); \
         return !!s && s.textContent.includes('dead')",
    )
    .await;
    let raw = client
        .find(Locator::Css("#detail-raw"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(raw.contains("browser-1"), "{raw}");
    assert!(!raw.contains(KEY), "the console shows the callback key");
    client.screenshot().await.map(|png| save(&png)).unwrap();

    // Dead letters: the target recovers, retry is pressed, it is delivered.
    click(&client, "#nav button[data-view=dead]").await;
    wait_for(
        &client,
        "the dead letter row",
        "return !!document.querySelector('#dead button.retry')",
    )
    .await;
    target.set_default(200);
    click(&client, "#dead button.retry").await;
    wait_for(
        &client,
        "the retry's result",
        "return document.querySelector('#dead-result').textContent.includes('queued again: 1')",
    )
    .await;
    click(&client, "#nav button[data-view=events]").await;
    wait_for(
        &client,
        "the callback delivered",
        "const r = document.querySelector('#events tbody tr'); \
         return !!r && r.textContent.includes('backend: delivered')",
    )
    .await;
    client.close().await.unwrap();
    assert!(target.received().len() >= 2);
}

/// A server reconciling against a fake of Tencent's API that holds one
/// recording CSS sent while the server was away and one record whose body
/// Tencent did not keep: the events list badges the recovered callback,
/// and the Reconciliation view shows the run and the gap.
async fn reconciliation_test() {
    use tencent_fake::{FakeOptions, FakeTencent, SentCallback, StreamSession};
    let fake = FakeTencent::start(FakeOptions::new("AKIDbrowser", "browser-secret-key")).await;
    let start = now() - 900;
    fake.add_stream(StreamSession::new(
        "push.example.com",
        "live",
        "room-browser",
        start,
        Some(now() - 300),
    ));
    let mut missed = recording("browser-recovered");
    missed["stream_id"] = "room-browser".into();
    signed_at(&mut missed, start + 700);
    fake.add_callback(SentCallback {
        request: missed.to_string(),
        result_code: -1,
        ..SentCallback::new("room-browser", 100, start + 100)
    });
    fake.add_callback(SentCallback {
        result_code: -1,
        ..SentCallback::new("room-browser", 200, start + 200)
    });
    let app = spawn_app_with_config(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntokens = [\"{TOKEN}\"]\n\
         [reconcile]\nenabled = true\nsecret_id = \"AKIDbrowser\"\n\
         secret_key = \"browser-secret-key\"\nendpoint = \"{}\"\nlag_secs = 0\n\
         lookback_secs = 3600\n",
        fake.endpoint()
    ))
    .await;
    let admin = app.admin_address.clone().unwrap();
    let driver = start_driver().await;
    let client = browser(&driver).await;
    client.goto(&format!("{admin}/")).await.unwrap();
    wait_for(
        &client,
        "the token form",
        "return !document.querySelector('#login').hidden",
    )
    .await;
    type_into(&client, "#token", TOKEN).await;
    click(&client, "#sign-in").await;
    wait_for(
        &client,
        "the recovered callback with its badge",
        "const b = document.querySelector('#events tbody tr .badge.reconciled'); \
         return !!b && b.closest('tr').textContent.includes('room-browser')",
    )
    .await;
    click(&client, "#nav button[data-view=reconciliation]").await;
    wait_for(
        &client,
        "the run and the gap",
        "return document.querySelector('#gap-count').textContent === '1' && \
         !!document.querySelector('#runs tbody tr') && \
         document.querySelector('#runs tbody tr').textContent.includes('ok') && \
         document.querySelector('#gaps tbody tr').textContent.includes('no request body')",
    )
    .await;
    let page = client.source().await.unwrap();
    assert!(
        !page.contains("browser-secret-key"),
        "the console shows the API key"
    );
    client
        .screenshot()
        .await
        .map(|png| save_as(&png, "console-reconciliation.png"))
        .unwrap();
    client.close().await.unwrap();
}

/// Keeps the screenshot under the target directory, for the README's.
fn save(png: &[u8]) {
    save_as(png, "console.png");
}

fn save_as(png: &[u8], name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}
