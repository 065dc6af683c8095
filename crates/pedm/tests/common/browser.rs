//! A real browser for the console tests: Debian's `chromium`, driven through its
//! `chromedriver` (WebDriver) with fantoccini. Installed by `scripts/install-test-deps`.

use fantoccini::{Client, ClientBuilder, Locator};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What a hostile requester might write: must show as text, never run or become markup.
pub const XSS: &str = r#"<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>"'&"#;

/// Chromium's driver (`None`: not installed, reason printed), a server with the standard
/// targets, and alice's token.
pub async fn start_console() -> Option<(Driver, super::Server, String)> {
    let driver = Driver::start().await?;
    let s = super::Server::start();
    super::standard_targets(&s).await;
    let alice = super::user_with_token(&s, "alice", false).await;
    Some((driver, s, alice))
}

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One chromedriver; each [`Driver::browser`] is a separate browser with its own profile
/// (its own cookies: a second person).
pub struct Driver {
    child: Child,
    url: String,
    profiles: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// `None` (with the reason printed) where Chromium or its driver is not installed.
    pub async fn start() -> Option<Driver> {
        for p in [CHROMIUM, CHROMEDRIVER] {
            if !std::path::Path::new(p).exists() {
                println!("SKIP: {p} is missing (scripts/install-test-deps installs it)");
                return None;
            }
        }
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let port = super::free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        let http = reqwest::Client::new();
        // Wait for its status endpoint to say it is ready.
        let mut ready = false;
        for _ in 0..200 {
            if let Ok(r) = http.get(&status).send().await
                && let Ok(v) = r.json::<serde_json::Value>().await
                && v["value"]["ready"] == true
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "chromedriver did not become ready");
        Some(Driver {
            child,
            url,
            profiles: tempfile::tempdir().expect("tempdir"),
        })
    }

    /// A new headless browser (its own profile) at `width` x 900.
    pub async fn browser(&self, name: &str, width: u32) -> Client {
        let profile = self.profiles.path().join(name);
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            format!("--window-size={width},900"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": CHROMIUM, "args": args }),
        );
        ClientBuilder::rustls()
            .expect("rustls connector")
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a chromium session")
    }
}

/// Waits (up to 60 s, WebDriver polling) for an element matching `css`.
pub async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e,
        Err(e) => {
            let src = c.source().await.unwrap_or_default();
            panic!("no element {css}: {e}\npage:\n{src}");
        }
    }
}

/// Waits until `script` (a JavaScript expression) is true in the page.
pub async fn wait_until(c: &Client, what: &str, script: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = c
            .execute(&format!("return !!({script});"), vec![])
            .await
            .expect("execute");
        if v == serde_json::Value::Bool(true) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let src = c.source().await.unwrap_or_default();
            panic!("timed out waiting for {what}\npage:\n{src}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Types `text` into the field matching `css`.
pub async fn fill(c: &Client, css: &str, text: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no field {css}: {e}"))
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
}

/// Clicks the element matching `css`.
pub async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("nothing to click at {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

/// Signs in on the console by pasting `token`.
pub async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/ui/sign-in")).await.expect("goto");
    c.find(Locator::Css("#token"))
        .await
        .expect("token field")
        .send_keys(token)
        .await
        .expect("type");
    c.find(Locator::Css("#sign-in"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    wait_for(c, "#who").await;
}

/// Saves a screenshot for the docs when `PEDM_CONSOLE_SCREENSHOTS` names a directory.
pub async fn screenshot(c: &Client, name: &str) {
    let Ok(dir) = std::env::var("PEDM_CONSOLE_SCREENSHOTS") else {
        return;
    };
    let png = c.screenshot().await.expect("screenshot");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png)
        .expect("write screenshot");
}

/// Runs axe-core (installed by `scripts/install-test-deps` into `scripts/test-axe`) on the
/// page and returns its serious and critical violations, one line each.
pub async fn axe_serious(c: &Client) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/test-axe/node_modules/axe-core/axe.min.js");
    let source = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run scripts/install-test-deps",
            path.display()
        )
    });
    // WebDriver's script injection is not subject to the page's CSP.
    c.execute(&format!("{source}\nreturn true;"), vec![])
        .await
        .expect("inject axe-core");
    let v = c
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             axe.run(document, { resultTypes: ['violations'] }).then(r => done(\
               r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')\
                 .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' +\
                   v.nodes.map(n => n.target.join(' ')).join(', '))));",
            vec![],
        )
        .await
        .expect("axe.run");
    serde_json::from_value(v).expect("a list of violations")
}

/// A main page: screenshot it for the docs, and fail on any serious accessibility problem.
pub async fn check_page(c: &Client, name: &str) {
    screenshot(c, name).await;
    let v = axe_serious(c).await;
    assert!(
        v.is_empty(),
        "{name}: accessibility violations:\n{}",
        v.join("\n")
    );
}
