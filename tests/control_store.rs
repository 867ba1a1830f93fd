//! The state file: atomic writes, a corrupt file refuses to start, a
//! restart keeps the state, and the admin bind-address safety check.

mod support;

use std::sync::Arc;

use cutover::control::{
    ControlError, ControlPlane, FileStateStore, PersistedState, State, StateStore, StoreError,
};
use cutover::pattern::{Pattern, PatternHandle};
use cutover::stats::DataPathStats;
use support::control::{closed_port_url, config, Admin};

#[test]
fn save_replaces_the_file_atomically_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let store = FileStateStore::new(&path);
    assert_eq!(
        store.load().unwrap(),
        None,
        "missing file = nothing saved yet"
    );

    let mut s = PersistedState::fresh(State::Initial);
    store.save(&s).unwrap();
    s.state = State::SrcFirst;
    s.pattern = Pattern::SrcFirst;
    store.save(&s).unwrap();

    assert_eq!(store.load().unwrap(), Some(s));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["state.json".to_string()],
        "temp file left behind"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["state"], "src_first");
    assert_eq!(json["pattern"], "src_first");
}

#[test]
fn an_unreadable_or_corrupt_state_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let cfg = config(&closed_port_url(), &closed_port_url(), &path, "");
    let valid = serde_json::to_string(&PersistedState::fresh(State::DstFirst)).unwrap();
    let cases = [
        ("garbage", "{not json".to_string()),
        ("empty", String::new()),
        ("missing fields", "{}".to_string()),
        (
            "future version",
            valid.replace("\"version\":1", "\"version\":2"),
        ),
        (
            "pattern disagrees with state",
            valid.replace("\"pattern\":\"dst_first\"", "\"pattern\":\"src_only\""),
        ),
        (
            "unknown state",
            valid.replace("\"state\":\"dst_first\"", "\"state\":\"sideways\""),
        ),
    ];
    for (what, text) in cases {
        std::fs::write(&path, &text).unwrap();
        let err = match ControlPlane::load(&cfg) {
            Ok(_) => panic!("{what}: started from a corrupt state file"),
            Err(e) => e,
        };
        assert!(
            matches!(err, ControlError::Store(StoreError::Corrupt { .. })),
            "{what}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{what}: {msg}");
        assert!(msg.contains("refusing to start"), "{what}: {msg}");
        // The file is left alone for the operator to inspect.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "{what}");
    }

    // Exists but cannot be read at all (a directory in its place).
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let err = ControlPlane::load(&cfg)
        .err()
        .expect("started with an unreadable state file");
    assert!(
        matches!(err, ControlError::Store(StoreError::Unreadable { .. })),
        "{err:?}"
    );
}

#[test]
fn a_fresh_install_writes_its_state_or_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let cfg = config(&closed_port_url(), &closed_port_url(), &path, "");
    let (cp, pattern) = ControlPlane::load(&cfg).unwrap();
    assert_eq!((cp.state(), pattern), (State::Initial, Pattern::SrcOnly));
    let saved = FileStateStore::new(&path).load().unwrap().unwrap();
    assert_eq!(saved.state, State::Initial);

    // initial_pattern names where a fresh install starts...
    let other = dir.path().join("other.json");
    let cfg = config(
        &closed_port_url(),
        &closed_port_url(),
        &other,
        "initial_pattern = 'dst_first'",
    );
    let (cp, pattern) = ControlPlane::load(&cfg).unwrap();
    assert_eq!((cp.state(), pattern), (State::DstFirst, Pattern::DstFirst));
    // ...but a persisted state wins over it.
    let cfg = config(
        &closed_port_url(),
        &closed_port_url(),
        &path,
        "initial_pattern = 'dst_first'",
    );
    let (cp, pattern) = ControlPlane::load(&cfg).unwrap();
    assert_eq!((cp.state(), pattern), (State::Initial, Pattern::SrcOnly));

    // A state file that cannot be written is an error at start, not at the first move.
    let cfg = config(
        &closed_port_url(),
        &closed_port_url(),
        &dir.path().join("no/such/dir/state.json"),
        "",
    );
    let err = ControlPlane::load(&cfg)
        .err()
        .expect("started with an unwritable state file");
    assert!(
        matches!(err, ControlError::Store(StoreError::Write { .. })),
        "{err:?}"
    );
}

/// The state survives a restart: two `ControlPlane`s on one state file, the
/// second started after the first stopped. Only persistence is under test, so
/// a probe that always answers stands in for the backends; the end-to-end
/// restart with real MariaDB and the proxy routing is in control_restart.rs.
#[tokio::test]
async fn restart_keeps_the_state_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let cfg = config(&closed_port_url(), &closed_port_url(), &path, "");

    let (cp, pattern) = ControlPlane::load(&cfg).unwrap();
    let admin = Admin::serve(cp.with_probe(Arc::new(AlwaysUp)), pattern, None).await;
    // (no validator here: the authority move is forced past the guard)
    for step in ["/src_only", "/src_first", "/dst_first?force=true"] {
        let r = admin.post(step, "").await;
        assert_eq!(r.status, 200, "{step}: {}", r.body);
    }
    assert_eq!(admin.pattern.load(), Pattern::DstFirst);
    admin.stop().await;

    let (cp, pattern) = ControlPlane::load(&cfg).unwrap();
    assert_eq!(cp.state(), State::DstFirst);
    assert_eq!(
        pattern,
        Pattern::DstFirst,
        "the data path must start in dst_first"
    );
    let admin = Admin::serve(cp.with_probe(Arc::new(AlwaysUp)), pattern, None).await;
    let status = admin.get("/status").await.json();
    assert_eq!(status["current_state"], "dst_first");
    assert_eq!(status["current_pattern"], "dst_first");
    let history = status["history"].as_array().unwrap();
    let moves: Vec<(&str, &str)> = history
        .iter()
        .map(|h| (h["from"].as_str().unwrap(), h["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        moves,
        vec![
            ("initial", "src_only"),
            ("src_only", "src_first"),
            ("src_first", "dst_first")
        ]
    );
    assert!(status["migration_stats"]["start_time"].is_string());
    admin.stop().await;
}

/// A data path that was started with the wrong pattern is corrected to the persisted state.
#[tokio::test]
async fn serve_aligns_the_data_path_with_the_persisted_state() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &closed_port_url(),
        &closed_port_url(),
        &dir.path().join("s.json"),
        "initial_pattern = 'src_first'",
    );
    let (cp, _) = ControlPlane::load(&cfg).unwrap();
    let admin = Admin::serve(cp.with_probe(Arc::new(AlwaysUp)), Pattern::DstOnly, None).await;
    let status = admin.get("/status").await.json();
    assert_eq!(status["current_pattern"], "src_first");
    assert_eq!(admin.pattern.load(), Pattern::SrcFirst);
    admin.stop().await;
}

#[tokio::test]
async fn a_non_loopback_admin_address_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let open = config(
        &closed_port_url(),
        &closed_port_url(),
        &path,
        "admin_listen = '0.0.0.0:9033'",
    );
    let err = ControlPlane::load(&open)
        .err()
        .expect("non-loopback admin without a token started");
    assert!(matches!(err, ControlError::InsecureAdmin { .. }), "{err:?}");
    assert!(err.to_string().contains("admin_token"), "{err}");

    let with_token = config(
        &closed_port_url(),
        &closed_port_url(),
        &path,
        "admin_listen = '0.0.0.0:9033'\nadmin_token = 's3cret'",
    );
    assert!(ControlPlane::load(&with_token).is_ok());

    // The listener actually handed to serve() is checked too.
    let loopback_cfg = config(&closed_port_url(), &closed_port_url(), &path, "");
    let (cp, pattern) = ControlPlane::load(&loopback_cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = cp
        .serve(
            listener,
            PatternHandle::new(pattern),
            DataPathStats::new(),
            async {},
        )
        .await
        .expect_err("served on 0.0.0.0 without a token");
    assert!(matches!(err, ControlError::InsecureAdmin { .. }), "{err:?}");
}

/// Stands in for the backends in tests about persistence only.
struct AlwaysUp;

impl cutover::control::BackendProbe for AlwaysUp {
    fn probe(&self, _side: cutover::pattern::Side) -> cutover::control::health::ProbeFuture<'_> {
        Box::pin(async { Ok(std::time::Duration::from_millis(1)) })
    }
}
