//! The runbook's restart: start, move to dst_first, restart the proxy, and
//! it is still dst_first and routing to the destination (real MariaDB pair,
//! real proxy, real admin API).

mod support;

use std::sync::Arc;

use cutover::control::ControlPlane;
use cutover::listener::Listener;
use cutover::pattern::Pattern;
use mysql_async::prelude::*;
use support::control::{config, Admin};
use support::Pair;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn restart_in_dst_first_keeps_routing_to_the_destination() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &pair.source.url("shop"),
        &pair.destination.url("shop"),
        &dir.path().join("state.json"),
        "listen = '127.0.0.1:0'",
    );

    // First run: walk to dst_first.
    let admin = Admin::start(&cfg).await;
    // (no validator here: the authority move is forced past the guard)
    for step in ["/src_only", "/src_first", "/dst_first?force=true"] {
        let r = admin.post(step, "").await;
        assert_eq!(r.status, 200, "{step}: {}", r.body);
    }
    admin.stop().await;

    // Restart: the persisted state decides the data path's starting pattern.
    let (cp, pattern) = ControlPlane::load(&cfg).unwrap();
    assert_eq!(pattern, Pattern::DstFirst);
    let admin = Admin::serve(cp, pattern, None).await;
    assert_eq!(
        admin.get("/status").await.json()["current_state"],
        "dst_first"
    );

    let proxy = Listener::bind(
        Arc::new(cfg.clone()),
        admin.pattern.clone(),
        admin.stats.clone(),
    )
    .await
    .unwrap();
    let proxy_port = proxy.local_addr().port();
    let stop = CancellationToken::new();
    let proxy_task = tokio::spawn(proxy.run(stop.clone()));

    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(proxy_port)
        .user(Some("app"))
        .pass(Some("app"))
        .db_name(Some("shop"))
        .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .expect("connect through cutover");
    let port: Option<u16> = conn.query_first("SELECT @@port").await.unwrap();
    assert_eq!(
        port,
        Some(pair.destination.port),
        "reads must come from the destination in dst_first"
    );
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    conn.disconnect().await.unwrap();
    let on_destination: Vec<i32> = pair.destination.query("SELECT id FROM t").await;
    assert_eq!(on_destination, vec![1]);

    stop.cancel();
    proxy_task.await.unwrap();
    admin.stop().await;
}
