//! Headless Chromium (Debian's `chromium` and `chromium-driver`, installed by `.ci/run`)
//! driven over WebDriver, for peershare's browser tests (`tests/browser.rs`) and
//! benchmark (`peershare-bench browser`): one chromedriver per run, one browser per page,
//! each with a fresh profile and its own download directory. Everything stays on
//! 127.0.0.1.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Hang guard for one wait on the page (not a performance assertion).
pub const PAGE_GUARD: Duration = Duration::from_secs(120);

pub struct Chrome {
    _driver: Child,
    url: String,
    _profiles: tempfile::TempDir,
}

impl Chrome {
    /// Start chromedriver on a free loopback port.
    pub async fn start() -> Self {
        assert!(
            Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
            "the browser tests need Debian's chromium and chromium-driver (.ci/run installs them)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + PAGE_GUARD;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not listen"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Chrome {
            _driver: driver,
            url,
            _profiles: tempfile::tempdir().expect("profiles dir"),
        }
    }

    /// A new browser (a WebDriver session) whose downloads land in `downloads`.
    pub async fn page(&self, downloads: &Path) -> Page {
        let profile = tempfile::tempdir_in(self._profiles.path()).expect("profile dir");
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-default-apps".into(),
            "--password-store=basic".into(),
            // Host candidates on 127.0.0.1, as the native peers' in the tests.
            "--allow-loopback-in-peer-connection".into(),
            "--disable-features=WebRtcHideLocalIpsWithMdns".into(),
            format!("--user-data-dir={}", profile.path().display()),
            "--window-size=1100,1400".into(),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                    "safebrowsing.enabled": false,
                },
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("WebDriver session");
        Page {
            client,
            downloads: downloads.to_path_buf(),
            _profile: profile,
        }
    }
}

pub struct Page {
    pub client: Client,
    pub downloads: PathBuf,
    _profile: tempfile::TempDir,
}

impl Page {
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("open page");
    }

    /// Run `body` (a function body: `return …`) in the page.
    pub async fn eval(&self, body: &str) -> Value {
        self.client
            .execute(body, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{body}"))
    }

    /// Poll `body` until it returns something other than `null`/`false`; that value.
    pub async fn wait(&self, what: &str, body: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PAGE_GUARD;
        loop {
            let v = self.eval(body).await;
            if !(v.is_null() || v == Value::Bool(false)) {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                let events = self.events().await;
                panic!("page: no {what} in time; events so far: {events:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page's event log (`window.peershare.events`), as event names and fields.
    pub async fn events(&self) -> Vec<Value> {
        match self
            .eval("return window.peershare ? JSON.parse(JSON.stringify(window.peershare.events)) : [];")
            .await
        {
            Value::Array(v) => v,
            other => panic!("events: {other:?}"),
        }
    }

    /// The names of the page's events, in order.
    pub async fn event_names(&self) -> Vec<String> {
        self.events()
            .await
            .iter()
            .map(|e| e["event"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Open the page at `url` and start a new share (*Start a new share*); the code the
    /// page shows once it has joined.
    pub async fn create_session(&self, url: &str) -> String {
        self.goto(url).await;
        self.click("#create-button").await;
        let code = self
            .wait(
                "a code",
                "return window.peershare && window.peershare.code;",
            )
            .await;
        code.as_str()
            .unwrap_or_else(|| panic!("code: {code}"))
            .to_string()
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Choose `files` in the page's file input (what a person's file picker does).
    pub async fn choose_files(&self, files: &[&Path]) {
        let input = self
            .client
            .find(Locator::Css("#file-input"))
            .await
            .expect("file input");
        let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        input
            .send_keys(&paths.join("\n"))
            .await
            .expect("choose files");
    }

    /// Wait until Chromium has saved `name` in the download directory; its bytes.
    pub async fn downloaded(&self, name: &str) -> Vec<u8> {
        let path = self.downloads.join(name);
        let partial = self.downloads.join(format!("{name}.crdownload"));
        let deadline = tokio::time::Instant::now() + PAGE_GUARD;
        while !path.exists() || partial.exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "Chromium did not save {name}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::fs::read(&path).expect("read download")
    }

    /// With `PEERSHARE_SCREENSHOTS=DIR` set, save what the page shows as `DIR/NAME.png`
    /// (the screenshots in docs/ are made so); otherwise nothing.
    pub async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("PEERSHARE_SCREENSHOTS") else {
            return;
        };
        let png = self.client.screenshot().await.expect("screenshot");
        let path = Path::new(&dir).join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Resize the browser window (CSS pixels), e.g. to a phone's width.
    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize window");
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
