//! Keeping the reader going (reconnects, authority moves, fallback) and
//! the upkeep beside it (checkpoint, lag, gauges).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::reader::{Exit, Reader};
use super::server::Server;
use super::status::{Lag, ReaderState};
use super::{connect, lock, position, save_checkpoint, server_for, Capture, CaptureError};
use crate::pattern::Side;
use crate::validate::db::Db;
use crate::validate::{now_ms, Validator};

/// Keep reading: reconnect after errors, follow the authority, fall back on
/// a lost position.
pub(super) async fn supervise(
    v: Validator,
    mut reader: Reader,
    mut stream: mysql_async::BinlogStream,
    stop: CancellationToken,
) {
    let c = &v.inner.capture;
    let mut backoff = Duration::from_secs(1);
    loop {
        let pattern = v.inner.pattern.clone();
        let exit = reader
            .read(stream, &stop, move || pattern.load().primary())
            .await;
        let resume = match exit {
            Ok(Exit::Stopped) => {
                save_checkpoint(&v, &reader.server);
                return;
            }
            Ok(Exit::AuthorityMoved) => {
                tracing::info!(from = %reader.server.side, "authority moved: change capture follows it");
                c.queue.reset_stream();
                position::remove(&v.inner.data_dir);
                lock(&c.shared).checkpoint = None;
                None
            }
            Err(e) => {
                tracing::warn!(
                    "binlog stream of the {}: {e}; reconnecting",
                    reader.server.side
                );
                c.counters.error(&e);
                save_checkpoint(&v, &reader.server);
                c.queue.read_pos()
            }
        };
        reader.pool.clone().disconnect().await;
        loop {
            if stop.is_cancelled() {
                return;
            }
            match connect(&v, resume.clone()).await {
                Ok((r, s)) => {
                    reader = r;
                    stream = s;
                    backoff = Duration::from_secs(1);
                    c.set_state(ReaderState::Running);
                    break;
                }
                Err(e) => {
                    tracing::warn!(
                        "change capture cannot (re)connect: {e}; next attempt in {backoff:?}"
                    );
                    c.counters.error(&e);
                    c.set_state(ReaderState::Reconnecting);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Twice a second: save the checkpoint when the watermark moved; once a
/// second: measure the lag and publish the gauges.
pub(super) async fn upkeep(v: Validator, stop: CancellationToken) {
    let c = &v.inner.capture;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut n = 0u64;
    let mut probe: Option<(Side, Server, Db)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let side = lock(&c.shared).side;
        let Some(side) = side else { continue };
        if probe.as_ref().is_none_or(|(s, _, _)| *s != side) {
            if let Some((_, _, db)) = probe.take() {
                db.disconnect().await;
            }
            match server_for(&v, side) {
                Ok((mut server, db)) => {
                    let _ = server.check().await; // learns the flavour (MariaDB: GTIDs)
                    probe = Some((side, server, db));
                }
                Err(e) => {
                    c.counters.error(&e);
                    continue;
                }
            }
        }
        let Some((_, server, db)) = probe.as_ref() else {
            continue;
        };
        if lock(&c.shared).state == Some(ReaderState::Running) {
            save_checkpoint(&v, server);
        }
        n += 1;
        c.counters.rate(); // keeps the keys/s window fresh between /status polls
        if n.is_multiple_of(2) {
            if let Ok(lag) = measure_lag(c, server, db).await {
                metrics::gauge!("cutover_capture_lag_seconds").set(lag.seconds);
                metrics::gauge!("cutover_capture_lag_events").set(lag.events.unwrap_or(0) as f64);
                metrics::gauge!("cutover_capture_lag_bytes").set(lag.bytes.unwrap_or(0) as f64);
                lock(&c.shared).lag = lag;
            }
            metrics::gauge!("cutover_capture_queue_depth").set(c.queue.depth() as f64);
        }
    }
    if let Some((_, _, db)) = probe {
        db.disconnect().await;
    }
}

/// How far the reader is behind the server.
async fn measure_lag(c: &Capture, server: &Server, db: &Db) -> Result<Lag, CaptureError> {
    let (now, files) = tokio::try_join!(server.current(db), server.files(db))?;
    let (pos, ts, idle) = {
        let l = lock(&c.live);
        (l.position.clone(), l.last_event_ts, l.idle)
    };
    let bytes = files.iter().position(|(f, _)| *f == pos.file).map(|i| {
        let rest: u64 = files[i + 1..].iter().map(|(_, s)| s).sum();
        files[i].1.saturating_sub(pos.pos) + rest
    });
    let events = server.mariadb.then(|| pos.gtid.behind(&now.gtid));
    let caught_up = idle || bytes == Some(0) || events == Some(0) && bytes.is_none();
    let seconds = if caught_up || ts == 0 {
        0.0
    } else {
        ((now_ms() / 1000) - i64::from(ts)).max(0) as f64
    };
    Ok(Lag {
        seconds,
        events,
        bytes,
    })
}
