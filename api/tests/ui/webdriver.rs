//! A minimal WebDriver client: just the commands the console's browser
//! tests use, as JSON over HTTP to a chromedriver this module starts (and
//! stops when dropped). WebDriver is a plain JSON protocol
//! (https://www.w3.org/TR/webdriver2/); a client crate would bring its own
//! HTTP stack for a dozen calls that reqwest already makes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::eventually;

/// The key of an element reference in WebDriver's answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one headless Chromium session in it.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

fn find_program(names: &[&str]) -> PathBuf {
    for name in names {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "{} is not installed: the console's browser tests need Debian's chromium and chromium-driver (scripts/test installs them)",
        names.join(" or ")
    );
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium (with a
    /// fresh profile) that accepts the test cluster's certificate.
    pub async fn start() -> Browser {
        let driver_bin = find_program(&["chromedriver"]);
        let chromium = find_program(&["chromium", "chromium-browser"]);
        let port = flotilla_testbed::free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            http,
            session: String::new(),
            driver,
            _profile: profile,
        };
        eventually(
            "chromedriver to answer",
            Duration::from_secs(20),
            || async {
                let r = browser
                    .http
                    .get(format!("{base}/status"))
                    .send()
                    .await
                    .ok()?;
                let v: Value = serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
                v["value"]["ready"].as_bool().filter(|r| *r)
            },
        )
        .await;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The test cluster's CA is its own; the browser is not told
            // to trust it.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let answer = browser.call("POST", &format!("{base}/session"), caps).await;
        let id = answer["sessionId"].as_str().unwrap();
        browser.session = format!("{base}/session/{id}");
        browser
    }

    async fn call(&self, method: &str, url: &str, body: Value) -> Value {
        self.try_call(method, url, body).await.unwrap()
    }

    /// A command; its error (a stale element, say) as text.
    async fn try_call(&self, method: &str, url: &str, body: Value) -> Result<Value, String> {
        let mut r = self.http.request(method.parse().unwrap(), url);
        if method != "GET" && method != "DELETE" {
            r = r
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = r.send().await.unwrap();
        let status = response.status();
        let v: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        if !status.is_success() {
            return Err(format!(
                "WebDriver {method} {url}: {status} {}",
                v["value"]["message"]
            ));
        }
        Ok(v["value"].clone())
    }

    async fn session(&self, method: &str, path: &str, body: Value) -> Value {
        self.call(method, &format!("{}{path}", self.session), body)
            .await
    }

    pub async fn goto(&self, url: &str) {
        self.session("POST", "/url", json!({ "url": url })).await;
    }

    pub async fn set_size(&self, width: u32, height: u32) {
        self.session(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        )
        .await;
    }

    /// The elements matching a CSS selector now.
    pub async fn all(&self, css: &str) -> Vec<Element> {
        let v = self
            .session(
                "POST",
                "/elements",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v.as_array()
            .unwrap_or_else(|| panic!("elements {css}: {v}"))
            .iter()
            .map(|e| {
                Element(
                    e[ELEMENT]
                        .as_str()
                        .unwrap_or_else(|| panic!("element {e}"))
                        .to_owned(),
                )
            })
            .collect()
    }

    /// The first element matching `css`, once there is one.
    pub async fn find(&self, css: &str) -> Element {
        eventually(&format!("an element {css}"), crate::DEADLINE, || async {
            self.all(css).await.into_iter().next()
        })
        .await
    }

    pub async fn text(&self, e: &Element) -> String {
        self.session("GET", &format!("/element/{}/text", e.0), Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Clicks the first element matching `css`, finding it again if the
    /// page redrew it in between (live updates redraw pages).
    pub async fn click_on(&self, css: &str) {
        flotilla_testbed::poll::eventually_async_or(
            &format!("a click on {css}"),
            crate::DEADLINE,
            async || {
                let e = self.all(css).await.into_iter().next().ok_or("none yet")?;
                let url = format!("{}/element/{}/click", self.session, e.0);
                self.try_call("POST", &url, json!({})).await.map(|_| ())
            },
        )
        .await;
    }

    pub async fn type_text(&self, e: &Element, text: &str) {
        self.session("POST", &format!("/element/{}/clear", e.0), json!({}))
            .await;
        self.session(
            "POST",
            &format!("/element/{}/value", e.0),
            json!({ "text": text }),
        )
        .await;
    }

    /// Runs `script` in the page; answers its return value.
    pub async fn eval(&self, script: &str) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Waits until the text of the first element matching `css` contains
    /// `want`; returns that text.
    pub async fn wait_text(&self, css: &str, want: &str) -> String {
        eventually_or_text(self, css, want).await
    }

    /// A PNG of the page as shown.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.session("GET", "/screenshot", Value::Null).await;
        decode_base64(v.as_str().unwrap())
    }
}

async fn eventually_or_text(b: &Browser, css: &str, want: &str) -> String {
    flotilla_testbed::poll::eventually_async_or(
        &format!("{css} to read {want:?}"),
        crate::DEADLINE,
        async || {
            // Read in one script: live updates redraw the page between
            // two WebDriver commands.
            let script = format!(
                "return [...document.querySelectorAll({})].map((e) => e.innerText);",
                serde_json::to_string(css).unwrap()
            );
            let texts = b.eval(&script).await;
            let seen: Vec<String> = texts
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect();
            seen.iter()
                .find(|t| t.contains(want))
                .cloned()
                .ok_or_else(|| format!("it read {seen:?}"))
        },
    )
    .await
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver ends its browsers when it ends; stopping the
        // session first lets Chromium exit cleanly.
        if !self.session.is_empty() {
            delete_blocking(&self.session);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `DELETE url` (plain HTTP on loopback), without a runtime: drops run
/// outside async code, and also while a failed test unwinds.
fn delete_blocking(url: &str) {
    use std::io::{Read, Write};
    let Some(rest) = url.strip_prefix("http://") else {
        return;
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let request = format!(
        "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
    }
}

/// Standard base64 (RFC 4648, with padding), as WebDriver sends
/// screenshots.
fn decode_base64(text: &str) -> Vec<u8> {
    fn value(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    }
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(decode_base64("aGVsbG8="), b"hello");
    assert_eq!(decode_base64("aGk="), b"hi");
    assert_eq!(decode_base64("YWJj"), b"abc");
}
