//! Micro-benchmarks of the per-statement hot path: classification, routing,
//! packet framing, the response relay state machine, the prepared-statement
//! EXECUTE rewrite, buffered packet I/O over a loopback TCP pair (plaintext
//! and TLS), and what mirroring fidelity (issue 9) adds per statement
//! (`fidelity/*`: each next to the same work without it).
//! `cargo bench --bench hot_path` (criterion, no plots).
//!
//! These are not tests: nothing here asserts timings.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use cutover::classify::{self, Class};
use cutover::pattern::{Pattern, Side};
use cutover::response::{ResponseKind, Step, Tracker};
use cutover::route;
use cutover::session::prepared::Statement;
use cutover::wire;

const POINT_SELECT: &str = "SELECT c FROM sbtest1 WHERE id=4711";
const UPSERT: &str =
    "INSERT INTO orders (id, customer_id, total, note) VALUES (17, 42, 99.95, 'first order') \
     ON DUPLICATE KEY UPDATE total = VALUES(total), note = VALUES(note)";
const JOIN3: &str = "SELECT o.id, c.name, SUM(i.qty * i.price) AS amount FROM orders o \
     JOIN customers c ON c.id = o.customer_id JOIN order_items i ON i.order_id = o.id \
     WHERE o.created_at > '2024-01-01' AND c.country = 'DE' GROUP BY o.id, c.name \
     ORDER BY amount DESC LIMIT 10";
const BEGIN: &str = "BEGIN";
const SET_NAMES: &str = "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci";
const COMMENTED: &str =
    "/* app=checkout,route=/cart */ SELECT id, total FROM orders WHERE customer_id = 42";

fn bench_classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    for (name, sql) in [
        ("point_select", POINT_SELECT),
        ("upsert", UPSERT),
        ("join3", JOIN3),
        ("begin", BEGIN),
        ("set_names", SET_NAMES),
        ("commented_select", COMMENTED),
    ] {
        g.throughput(Throughput::Bytes(sql.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| classify::classify(black_box(sql.as_bytes())))
        });
    }
    g.bench_function("class_only/point_select", |b| {
        b.iter(|| classify::classify_class(black_box(POINT_SELECT.as_bytes())))
    });
    g.finish();
}

fn bench_route(c: &mut Criterion) {
    let classes = [
        Class::Read,
        Class::Write,
        Class::Ddl,
        Class::Transaction,
        Class::SessionState,
    ];
    c.bench_function("route/plan_all_20", |b| {
        b.iter(|| {
            for p in Pattern::ALL {
                for cl in classes {
                    black_box(route::plan(black_box(p), black_box(cl)));
                }
            }
        })
    });
}

fn bench_framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("write_packet");
    for (name, len) in [("small_48B", 48usize), ("1MiB", 1 << 20)] {
        let payload = vec![0x5Au8; len];
        let mut out = Vec::with_capacity(len + 64);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                black_box(wire::write_packet(&mut out, 1, black_box(&payload)));
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("lenenc");
    let values = [7u64, 250, 251, 65_535, 70_000, 16_777_216, u64::MAX / 3];
    let mut buf = Vec::with_capacity(64);
    g.bench_function("put_7_values", |b| {
        b.iter(|| {
            buf.clear();
            for v in values {
                wire::put_lenenc_int(&mut buf, black_box(v));
            }
            black_box(buf.len());
        })
    });
    let mut encoded = Vec::new();
    for v in values {
        wire::put_lenenc_int(&mut encoded, v);
    }
    g.bench_function("get_7_values", |b| {
        b.iter(|| {
            let mut s: &[u8] = black_box(&encoded);
            while let Some(v) = wire::get_lenenc_int(&mut s) {
                black_box(v);
            }
        })
    });
    let ok = [0x00u8, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00];
    g.bench_function("parse_ok", |b| b.iter(|| wire::parse_ok(black_box(&ok))));
    g.finish();
}

fn lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    wire::put_lenenc_int(out, s.len() as u64);
    out.extend_from_slice(s);
}

fn column_def(name: &str, ty: u8) -> Vec<u8> {
    let mut p = Vec::new();
    for s in ["def", "sbtest", "sbtest1", "sbtest1", name, name] {
        lenenc_str(&mut p, s.as_bytes());
    }
    p.push(0x0c);
    p.extend_from_slice(&45u16.to_le_bytes()); // charset
    p.extend_from_slice(&480u32.to_le_bytes()); // length
    p.push(ty);
    p.extend_from_slice(&0u16.to_le_bytes()); // flags
    p.push(0); // decimals
    p.extend_from_slice(&[0, 0]);
    p
}

/// Payloads of a text-protocol result: 3 columns (id, k, c), `rows` rows, terminator.
fn result_set(rows: usize, deprecate_eof: bool) -> Vec<Vec<u8>> {
    let mut packets = vec![vec![3u8]];
    packets.push(column_def("id", 3));
    packets.push(column_def("k", 3));
    packets.push(column_def("c", 254));
    if !deprecate_eof {
        packets.push(vec![0xFE, 0, 0, 0x02, 0]);
    }
    let c = "83868641912-28773972837-60736120486-75162659906-27563526494-20381887404-41576422241-93426793964-56405065102-33518432330";
    for i in 0..rows {
        let mut r = Vec::with_capacity(160);
        lenenc_str(&mut r, (i + 1).to_string().as_bytes());
        lenenc_str(&mut r, (5000 + i * 7).to_string().as_bytes());
        lenenc_str(&mut r, c.as_bytes());
        packets.push(r);
    }
    if deprecate_eof {
        packets.push(vec![0xFE, 0, 0, 0x02, 0, 0, 0]);
    } else {
        packets.push(vec![0xFE, 0, 0, 0x02, 0]);
    }
    packets
}

fn bench_tracker(c: &mut Criterion) {
    let mut g = c.benchmark_group("tracker_100_rows");
    for (name, deprecate_eof) in [("deprecate_eof", true), ("classic_eof", false)] {
        let packets = result_set(100, deprecate_eof);
        g.throughput(Throughput::Elements(packets.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut t = Tracker::new(ResponseKind::Query, deprecate_eof);
                for p in &packets {
                    if t.feed(black_box(p)).unwrap() == Step::Done {
                        break;
                    }
                }
                assert!(t.is_done());
                black_box(t.summary.result_sets)
            })
        });
    }
    // Relay as the proxy does it: feed each packet and copy it, re-framed, into
    // an output buffer.
    let packets = result_set(100, true);
    let mut out = Vec::with_capacity(32 * 1024);
    g.bench_function("feed_and_reframe", |b| {
        b.iter(|| {
            out.clear();
            let mut t = Tracker::new(ResponseKind::Query, true);
            let mut seq = 1u8;
            for p in &packets {
                seq = wire::write_packet(&mut out, seq, p);
                if t.feed(black_box(p)).unwrap() == Step::Done {
                    break;
                }
            }
            black_box(out.len())
        })
    });
    let ok = [0x00u8, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00];
    g.bench_function("single_ok", |b| {
        b.iter(|| {
            let mut t = Tracker::new(ResponseKind::Query, true);
            black_box(t.feed(black_box(&ok)).unwrap())
        })
    });
    g.finish();
}

fn bench_execute(c: &mut Criterion) {
    // COM_STMT_EXECUTE of sysbench's point select: 1 INT parameter, types bound.
    let mut exec = vec![0x17u8];
    exec.extend_from_slice(&1u32.to_le_bytes()); // proxy statement id
    exec.push(0); // flags
    exec.extend_from_slice(&1u32.to_le_bytes()); // iteration count
    exec.push(0); // null bitmap (1 param)
    exec.push(1); // new params bound
    exec.extend_from_slice(&[3, 0]); // MYSQL_TYPE_LONG
    exec.extend_from_slice(&4711u32.to_le_bytes());
    let mut stmt = Statement::new(POINT_SELECT.as_bytes().to_vec(), Class::Read, 1);
    stmt.set_id(Side::Source, 99);
    c.bench_function("prepared/execute_for", |b| {
        b.iter(|| black_box(stmt.execute_for(Side::Source, black_box(&exec))))
    });
}

/// A connected loopback TCP pair as two `PacketIo`s; with `tls`, upgraded
/// the way cutover upgrades (its rustls client config for `verify_identity`
/// and its `[tls]` acceptor, an ECDSA P-256 certificate made here).
fn packet_io_pair(rt: &tokio::runtime::Runtime, tls: bool) -> (wire::PacketIo, wire::PacketIo) {
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
        let (mut a, mut b) = (
            wire::PacketIo::new(c.unwrap()),
            wire::PacketIo::new(s.unwrap().0),
        );
        if tls {
            let (client, acceptor) = tls_configs();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let connector = tokio_rustls::TlsConnector::from(client);
            let (x, y) = tokio::join!(
                a.upgrade(|st| connector.connect(name, st)),
                b.upgrade(|st| acceptor.accept(st))
            );
            x.unwrap();
            y.unwrap();
        }
        (a, b)
    })
}

fn tls_configs() -> (
    std::sync::Arc<rustls::ClientConfig>,
    std::sync::Arc<tokio_rustls::TlsAcceptor>,
) {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let backend = cutover::tls::BackendTls::load(&cutover::tls::BackendTlsKeys {
        ssl_mode: Some("verify_identity".into()),
        ssl_ca: Some(c.clone()),
        ..Default::default()
    })
    .unwrap();
    let server = cutover::tls::server::ServerTls::load(&cutover::tls::server::ClientTlsConfig {
        cert: Some(c),
        key: Some(k),
        require: false,
    })
    .unwrap()
    .unwrap();
    (backend.rustls.unwrap(), server.acceptor())
}

/// `PacketIo` over a loopback TCP pair, plaintext and TLS: what the relay
/// pays per packet for buffering, framing, encryption and the stream's
/// read/write calls (syscalls included).
fn bench_packet_io(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for tls in [false, true] {
        let (a, b) = packet_io_pair(&rt, tls);
        let group = if tls { "packet_io_tls" } else { "packet_io" };
        packet_io_group(c, &rt, group, a, b);
    }
}

fn packet_io_group(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    group: &str,
    mut a: wire::PacketIo,
    mut b: wire::PacketIo,
) {
    let mut g = c.benchmark_group(group);
    let packets = result_set(100, true);
    g.throughput(Throughput::Elements(packets.len() as u64));
    g.bench_function("result_100_rows", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let mut seq = 1u8;
                for p in &packets {
                    seq = a.queue_packet(seq, p);
                }
                a.flush().await.unwrap();
                for _ in 0..packets.len() {
                    black_box(b.expect_frame().await.unwrap());
                }
            })
        })
    });
    g.throughput(Throughput::Elements(2));
    let query = [&[0x03u8][..], POINT_SELECT.as_bytes()].concat();
    let ok = [0x00u8, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00];
    g.bench_function("ping_pong", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                a.send_packet(0, &query).await.unwrap();
                let f = b.expect_frame().await.unwrap();
                b.send_packet(f.seq().wrapping_add(1), &ok).await.unwrap();
                black_box(a.expect_frame().await.unwrap());
            })
        })
    });
    g.finish();
}

/// Issue 9 on the hot path: a plain read's class decision with and without
/// the stored-function check (no function exists / some exist), and a
/// mirrored write's pinning as `SET STATEMENT … FOR` next to the old `SET`.
fn bench_fidelity(c: &mut Criterion) {
    use cutover::catalog::{self, Catalog, CatalogData, Effects};
    use cutover::determinism::{self, ClientPins, Pin};
    let mut g = c.benchmark_group("fidelity");
    let empty = Catalog::default();
    let with = Catalog::default();
    let mut data = CatalogData::default();
    for f in ["bump", "next_id", "audit_it"] {
        let e = Effects {
            writes: true,
            nondeterministic: false,
            targets: Vec::new(),
        };
        data.functions.insert(("shop".into(), f.into()), e);
    }
    with.store(data);
    let decide = |cat: &Catalog, sql: &[u8]| {
        let class = classify::classify(sql).class;
        if class != Class::Read || !cat.has_functions() {
            return (class, sql.contains(&b'@'));
        }
        let data = cat.load();
        let writes = catalog::calls(sql).any(|(_, name)| {
            let name = String::from_utf8_lossy(name);
            data.function(Some("shop"), &name).is_some_and(|f| f.writes)
        });
        (
            if writes { Class::Write } else { class },
            sql.contains(&b'@'),
        )
    };
    for (name, sql) in [("point_select", POINT_SELECT), ("join3", JOIN3)] {
        let sql = sql.as_bytes();
        g.bench_function(format!("read/{name}/before"), |b| {
            b.iter(|| classify::classify(black_box(sql)).class)
        });
        g.bench_function(format!("read/{name}/no_functions"), |b| {
            b.iter(|| decide(&empty, black_box(sql)))
        });
        g.bench_function(format!("read/{name}/functions_exist"), |b| {
            b.iter(|| decide(&with, black_box(sql)))
        });
    }
    let pins = ClientPins::default();
    g.bench_function("write/upsert/pin_as_set_before", |b| {
        b.iter(|| {
            let a = determinism::analyze(black_box(UPSERT.as_bytes()));
            (a, Pin::now().prefix(pins, None))
        })
    });
    g.bench_function("write/upsert/pin_as_set_statement", |b| {
        b.iter(|| {
            let a = determinism::analyze(black_box(UPSERT.as_bytes()));
            let assign = Pin::now().assignments(pins, None).unwrap_or_default();
            determinism::set_statement(UPSERT.as_bytes(), &assign, a.multi)
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_fidelity,
    bench_classify,
    bench_route,
    bench_framing,
    bench_tracker,
    bench_execute,
    bench_packet_io
);
criterion_main!(benches);
