//! The live status page (`GET /`) in a real headless browser: Debian's
//! chromium driven through chromedriver (WebDriver, via fantoccini) against
//! the real `cutover serve` binary and a MariaDB pair. The operator's walk:
//! open the page, see it ask for the token, enter it, read the state, move
//! initial → src_only → src_first, cancel a move, move to dst_first, and
//! check every move both on the page and through `GET /status`.
//! A screenshot is kept at `target/status-page.png`.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use support::binary::{free_port, target_dir, Cutover};
use support::Pair;

const TOKEN: &str = "page-test-token";
const NOT_INSTALLED: &str =
    "chromium/chromedriver not installed: run scripts/test (it installs Debian's chromium and chromium-driver)";

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Driver {
    async fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(NOT_INSTALLED);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Driver {
            child,
            port,
            _profile: tempfile::tempdir().unwrap(),
        }
    }

    /// A headless chromium session with the flags that work on this machine
    /// (shared/notes/environment.md: no sandbox as root, no background networking).
    async fn browser(&self) -> Client {
        let profile = self._profile.path().display().to_string();
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1400",
                    format!("--user-data-dir={profile}"),
                ]
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("WebDriver session with chromium")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` until it returns `Some` (20 s liveness bound).
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn displayed(c: &Client, css: &str) -> bool {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

async fn wait_text(c: &Client, css: &str, want: &str) {
    eventually(&format!("{css} to read {want:?}"), || async {
        (text(c, css).await == want).then_some(())
    })
    .await;
}

/// The state the page shows, checked three ways: the summary, the
/// highlighted box of the diagram, and `GET /status`.
async fn assert_state(c: &Client, cutover: &Cutover, state: &str) {
    wait_text(c, "#current-state", state).await;
    let class = c
        .find(Locator::Css(&format!("#state-{state}")))
        .await
        .unwrap()
        .attr("class")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(
        class.split(' ').any(|k| k == "current"),
        "diagram box of {state}: class {class:?}"
    );
    let currents = c
        .find_all(Locator::Css("#diagram .state.current"))
        .await
        .unwrap();
    assert_eq!(currents.len(), 1, "exactly one highlighted state");
    let api = cutover.get("/status").await.json();
    assert_eq!(
        api["current_state"], state,
        "GET /status disagrees with the page"
    );
}

/// Click the move button to `to`, check the dialog names `consequence`,
/// then press `answer` (`#confirm-ok` or `#confirm-cancel`). With `shot`,
/// keep a screenshot of the open dialog at `target/<shot>`.
async fn press_move(c: &Client, to: &str, consequence: &str, answer: &str, shot: Option<&str>) {
    let button = eventually(&format!("an enabled button to {to}"), || async {
        let b = c.find(Locator::Css(&format!("#move-{to}"))).await.ok()?;
        b.is_enabled().await.ok()?.then_some(b)
    })
    .await;
    button.click().await.unwrap();
    eventually("the confirmation dialog", || async {
        displayed(c, "#confirm").await.then_some(())
    })
    .await;
    let title = text(c, "#confirm-title").await;
    assert!(title.contains(to), "dialog title {title:?}");
    let body = format!(
        "{} {}",
        text(c, "#confirm-text").await,
        text(c, "#confirm-details").await
    );
    assert!(
        body.contains(consequence),
        "dialog does not name the consequence {consequence:?}: {body}"
    );
    if let Some(name) = shot {
        let path = target_dir().join(name);
        std::fs::write(&path, c.screenshot().await.unwrap()).unwrap();
        println!("confirmation dialog screenshot: {}", path.display());
    }
    c.find(Locator::Css(answer))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually("the dialog to close", || async {
        (!displayed(c, "#confirm").await).then_some(())
    })
    .await;
}

#[tokio::test]
async fn operator_walks_the_migration_from_the_status_page() {
    let pair = Pair::start().await;
    for db in [&pair.source, &pair.destination] {
        db.exec("CREATE TABLE shop.orders (id INT PRIMARY KEY, amount INT)")
            .await;
        db.exec("INSERT INTO shop.orders SELECT seq, seq * 10 FROM seq_1_to_500")
            .await;
    }
    // One row only the source has: an open inconsistency after validation.
    pair.source
        .exec("INSERT INTO shop.orders VALUES (9999, 1)")
        .await;
    let cutover = Cutover::start(&pair, &format!("admin_token = \"{TOKEN}\""), &[]).await;
    let r = cutover.post("/full/start").await;
    assert_eq!(r.status, 202, "{}", r.body);
    eventually("the full validation to finish", || async {
        let s = cutover.get("/status").await.json();
        (s["validation_detail"]["last_full"]["outcome"] == "completed").then_some(())
    })
    .await;

    let driver = Driver::start().await;
    let c = driver.browser().await;
    let url = format!("{}/", cutover.admin_url());
    c.goto(&url).await.unwrap();

    // Without the token: the page says so and offers no move.
    wait_text(&c, "#conn", "token needed").await;
    assert!(displayed(&c, "#auth-needed").await);
    assert!(
        !displayed(&c, "#moves-box").await,
        "moves shown without a token"
    );
    assert!(c
        .find_all(Locator::Css("button.move"))
        .await
        .unwrap()
        .is_empty());

    // With it: state, diagram and the legal moves.
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    c.find(Locator::Css("#token-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#conn", "live").await;
    assert!(!displayed(&c, "#auth-needed").await);
    assert_state(&c, &cutover, "initial").await;
    let url_now = c.current_url().await.unwrap().to_string();
    assert!(
        !url_now.contains(TOKEN),
        "token leaked into the URL: {url_now}"
    );

    // Backends, mirror counters, validation per table, open inconsistencies.
    wait_text(&c, "#backend-source td:nth-child(3)", "up").await;
    wait_text(&c, "#backend-destination td:nth-child(3)", "up").await;
    assert_eq!(
        text(&c, "#backend-source td:nth-child(2)").await,
        "authoritative"
    );
    assert!(text(&c, "#mirror").await.contains("mirrored writes ok"));
    let row = text(&c, "#validation tr[data-table=orders]").await;
    assert!(
        row.contains("100.0%") && row.contains("done"),
        "orders row: {row:?}"
    );
    wait_text(&c, "#open-inconsistencies", "1").await;
    c.find(Locator::Css("#incons-link"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let list = eventually("the inconsistency list", || async {
        let t = text(&c, "#incons-list").await;
        t.contains("target_missing").then_some(t)
    })
    .await;
    assert!(list.contains("orders") && list.contains("9999"), "{list}");

    // initial → src_only → src_first.
    press_move(
        &c,
        "src_only",
        "Nothing changes for the application",
        "#confirm-ok",
        None,
    )
    .await;
    assert_state(&c, &cutover, "src_only").await;
    press_move(
        &c,
        "src_first",
        "Every write is also applied to the destination",
        "#confirm-ok",
        None,
    )
    .await;
    assert_state(&c, &cutover, "src_first").await;

    // A write through the proxy is mirrored, and the page counts it.
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(cutover.port)
        .user(Some("app"))
        .pass(Some("app"))
        .db_name(Some("shop"))
        .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    use mysql_async::prelude::Queryable;
    conn.query_drop("INSERT INTO orders VALUES (10000, 5)")
        .await
        .unwrap();
    drop(conn);
    wait_text(&c, "#mirror-double_write_success", "1").await;
    assert_eq!(text(&c, "#mirror-double_write_failure").await, "0");

    // The authority move is guarded: the page shows it blocked, with the
    // reason, until a full validation that started after src_first is clean.
    eventually("dst_first shown as blocked", || async {
        let b = c.find(Locator::Css("#move-dst_first")).await.ok()?;
        let enabled = b.is_enabled().await.ok()?;
        (!enabled && text(&c, "#moves-box").await.contains("validation")).then_some(())
    })
    .await;
    let r = cutover.post_json("/full/start", r#"{"fix": true}"#).await;
    assert_eq!(r.status, 202, "{}", r.body);
    eventually("the repairing validation to finish clean", || async {
        let s = cutover.get("/status").await.json();
        let last = &s["validation_detail"]["last_full"];
        (last["outcome"] == "completed" && last["remaining"] == 0).then_some(())
    })
    .await;
    wait_text(&c, "#open-inconsistencies", "0").await;

    // Cancel changes nothing.
    press_move(
        &c,
        "dst_first",
        "The destination becomes authoritative",
        "#confirm-cancel",
        Some("status-page-confirm.png"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_state(&c, &cutover, "src_first").await;

    // Confirm moves; the page and the API agree, and the history shows it.
    press_move(
        &c,
        "dst_first",
        "in-flight transactions finish first",
        "#confirm-ok",
        None,
    )
    .await;
    assert_state(&c, &cutover, "dst_first").await;
    let result = text(&c, "#move-result").await;
    assert!(
        result.contains("Moved from src_first to dst_first"),
        "{result}"
    );
    assert_eq!(
        text(&c, "#backend-destination td:nth-child(2)").await,
        "authoritative"
    );
    let latest = "#history tbody tr:first-child td";
    assert_eq!(
        text(&c, &format!("{latest}:nth-child(2)")).await,
        "src_first"
    );
    assert_eq!(
        text(&c, &format!("{latest}:nth-child(3)")).await,
        "dst_first"
    );
    assert_eq!(text(&c, &format!("{latest}:nth-child(4)")).await, "api");
    let api = cutover.get("/status").await.json();
    assert_eq!(api["current_pattern"], "dst_first");
    let moves: Vec<&str> = api["next_moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["to"].as_str().unwrap())
        .collect();
    for to in &moves {
        assert!(
            displayed(&c, &format!("#move-{to}")).await,
            "no button for {to}"
        );
    }

    // The next_moves contract: a blocked move is a disabled button listing its
    // blockers; a move only the guard blocks (`forced_only`) is also disabled,
    // and the page names the force command instead of forcing. Rendered by the
    // page's own code from a status built like the API's (the next poll redraws
    // the real one).
    let mut crafted = cutover.get("/status").await.json();
    crafted["next_moves"] = serde_json::json!([
        {"to": "src_first", "allowed": true, "blockers": [], "forced_only": false},
        {"to": "dst_only", "allowed": false, "blockers": ["source unreachable (refused)"], "forced_only": false},
        {"to": "initial", "allowed": false, "blockers": ["a full validation started in dst_first"], "forced_only": true}
    ]);
    c.execute("render(arguments[0]);", vec![crafted])
        .await
        .unwrap();
    for to in ["dst_only", "initial"] {
        let blocked = c.find(Locator::Css(&format!("#move-{to}"))).await.unwrap();
        assert!(
            !blocked.is_enabled().await.unwrap(),
            "a blocked move ({to}) must not be pressable"
        );
    }
    assert!(c
        .find(Locator::Css("#move-src_first"))
        .await
        .unwrap()
        .is_enabled()
        .await
        .unwrap());
    let wrap = text(&c, "#moves").await;
    assert!(wrap.contains("source unreachable (refused)"), "{wrap}");
    assert!(
        wrap.contains("a full validation started in dst_first"),
        "{wrap}"
    );
    let forced = text(&c, "#moves-forced").await;
    assert!(
        forced.contains("initial") && forced.contains("--force") && !forced.contains("dst_only"),
        "{forced}"
    );

    let shot = c.screenshot().await.unwrap();
    let path = target_dir().join("status-page.png");
    std::fs::write(&path, &shot).unwrap();
    println!("status page screenshot: {}", path.display());
    assert!(shot.starts_with(b"\x89PNG"), "screenshot is a PNG");
    c.close().await.unwrap();
    assert_eq!(cutover.stop().await, Some(0));
}

#[tokio::test]
async fn the_page_is_served_without_a_token_and_holds_no_data() {
    let pair = Pair::start().await;
    let cutover = Cutover::start(&pair, &format!("admin_token = \"{TOKEN}\""), &[]).await;
    let r = support::control::request(cutover.admin, "GET", "/", "", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = r
        .header("content-security-policy")
        .unwrap_or_default()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(!r.body.contains(TOKEN));
    for data in [pair.source.url("shop"), "mysql://".to_string()] {
        assert!(
            !r.body.contains(&data),
            "the page embeds {data}: it must read /status"
        );
    }
    // Every other route still needs the token.
    let r = support::control::request(cutover.admin, "GET", "/status", "", None).await;
    assert_eq!(r.status, 401);
    let r = support::control::request(cutover.admin, "POST", "/", "", None).await;
    assert_eq!(r.status, 401, "only GET / is open");
}
