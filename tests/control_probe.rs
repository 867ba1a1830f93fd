//! Backend probes: the authenticated ping (default) and the greeting-only
//! probe, against real MariaDB; the greeting probe's edge cases against a
//! tiny fake listener (only the probe itself is under test there).

mod support;

use std::time::Duration;

use cutover::control::{BackendProbe, PingProbe, TcpGreetingProbe};
use cutover::pattern::Side;
use support::control::{closed_port_url, config};
use support::MariaDb;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

fn cfg_with(source_url: &str, extra: &str) -> cutover::config::Config {
    let dir = std::env::temp_dir().join("unused-state.json");
    config(source_url, &closed_port_url(), &dir, extra)
}

#[tokio::test]
async fn both_probes_see_a_real_mariadb_and_only_ping_checks_credentials() {
    let db = MariaDb::start("probe").await;
    let good = cfg_with(&db.url("shop"), "");
    let rtt = PingProbe::new(&good)
        .probe(Side::Source)
        .await
        .expect("ping");
    assert!(rtt < Duration::from_secs(1));
    TcpGreetingProbe::new(&good)
        .probe(Side::Source)
        .await
        .expect("greeting");

    let bad_password = format!("mysql://app:wrong@127.0.0.1:{}/shop", db.port);
    let bad = cfg_with(&bad_password, "");
    let e = PingProbe::new(&bad).probe(Side::Source).await.unwrap_err();
    assert!(e.contains("1045"), "{e}");
    // The greeting probe cannot tell.
    TcpGreetingProbe::new(&bad)
        .probe(Side::Source)
        .await
        .expect("greeting");

    // Nothing listening.
    let e = PingProbe::new(&good)
        .probe(Side::Destination)
        .await
        .unwrap_err();
    assert!(e.contains("connect"), "{e}");
    let e = TcpGreetingProbe::new(&good)
        .probe(Side::Destination)
        .await
        .unwrap_err();
    assert!(e.contains("connect failed"), "{e}");
}

/// A listener that answers every connection with `packet` (or nothing).
async fn fake_server(packet: Option<Vec<u8>>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let packet = packet.clone();
            tokio::spawn(async move {
                match packet {
                    Some(p) => {
                        let _ = s.write_all(&p).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(5)).await,
                }
            });
        }
    });
    format!("mysql://app:app@127.0.0.1:{port}/shop")
}

fn packet(payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut p = len.to_le_bytes()[..3].to_vec();
    p.push(0);
    p.extend_from_slice(payload);
    p
}

#[tokio::test]
async fn greeting_probe_judges_the_first_packet() {
    let greeting = fake_server(Some(packet(b"\x0a11.4.0-MariaDB\0"))).await;
    TcpGreetingProbe::new(&cfg_with(&greeting, ""))
        .probe(Side::Source)
        .await
        .expect("protocol 10 greeting");

    let too_many = fake_server(Some(packet(b"\xff\x10\x04Too many connections"))).await;
    let e = TcpGreetingProbe::new(&cfg_with(&too_many, ""))
        .probe(Side::Source)
        .await
        .unwrap_err();
    assert!(e.contains("ERROR 1040: Too many connections"), "{e}");

    let http = fake_server(Some(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec())).await;
    let e = TcpGreetingProbe::new(&cfg_with(&http, ""))
        .probe(Side::Source)
        .await
        .unwrap_err();
    assert!(e.contains("not a MySQL server"), "{e}");

    let silent = fake_server(None).await;
    let mut cfg = cfg_with(&silent, "");
    cfg.limits.connect_timeout_ms = 100;
    let e = TcpGreetingProbe::new(&cfg)
        .probe(Side::Source)
        .await
        .unwrap_err();
    assert!(e.contains("no greeting within 100 ms"), "{e}");
}
