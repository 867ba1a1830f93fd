//! The admin HTTP API: routing, JSON, bearer-token auth and the mapping of
//! scheduler errors to HTTP status codes. hyper 1.x, HTTP/1.1 only.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::automation::{DEFAULT_STEP_WAIT_MS, MAX_STEP_WAIT_MS};
use super::metrics;
use super::scheduler::{Scheduler, SchedulerError};
use super::state_machine::State;
use super::status::Trigger;
use crate::stats::DataPathStats;

/// The OpenAPI document of this API (`GET /openapi.json`).
pub const OPENAPI_JSON: &str = include_str!("../../docs/openapi.json");

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// Admin connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 256;
/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may finish after shutdown is asked.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Backend probes older than this are refreshed on a `/metrics` scrape.
const METRICS_PROBE_MAX_AGE: Duration = Duration::from_secs(5);

/// What a path does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Move(State),
    FullStart,
    FullStop,
    IncrStart,
    IncrStop,
    AutoMigrate,
    AutoMigrateCancel,
    Status,
    Stats,
    Health,
    Metrics,
    OpenApi,
    Inconsistencies,
    Fix,
    /// The status page; the only route served without a token (it holds no data).
    StatusPage,
}

/// Every route: path, method, what it does. The OpenAPI document lists the same.
pub const ROUTES: &[(&str, &str, Route)] = &[
    ("/", "GET", Route::StatusPage),
    ("/src_only", "POST", Route::Move(State::SrcOnly)),
    ("/src_first", "POST", Route::Move(State::SrcFirst)),
    ("/dst_first", "POST", Route::Move(State::DstFirst)),
    ("/dst_only", "POST", Route::Move(State::DstOnly)),
    ("/complete", "POST", Route::Move(State::Completed)),
    ("/full/start", "POST", Route::FullStart),
    ("/full/stop", "POST", Route::FullStop),
    ("/incr/start", "POST", Route::IncrStart),
    ("/incr/stop", "POST", Route::IncrStop),
    ("/auto-migrate", "POST", Route::AutoMigrate),
    ("/auto-migrate/cancel", "POST", Route::AutoMigrateCancel),
    ("/status", "GET", Route::Status),
    ("/stats", "GET", Route::Stats),
    ("/health", "GET", Route::Health),
    ("/metrics", "GET", Route::Metrics),
    ("/openapi.json", "GET", Route::OpenApi),
    ("/inconsistencies", "GET", Route::Inconsistencies),
    ("/fix", "POST", Route::Fix),
];

pub(super) struct Ctx {
    pub scheduler: Arc<Scheduler>,
    pub stats: Arc<DataPathStats>,
    pub token: Option<String>,
    pub validation: Option<Arc<crate::validate::Validator>>,
}

/// Accept and serve admin connections until `shutdown` resolves, then drain.
pub(super) async fn serve(
    listener: TcpListener,
    ctx: Arc<Ctx>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let ctx = Arc::clone(&ctx);
        let service = service_fn(move |req| {
            let ctx = Arc::clone(&ctx);
            async move { Ok::<_, Infallible>(handle(req, &ctx).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "admin connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("admin connections still open after drain timeout");
    }
}

type Resp = Response<Full<Bytes>>;

/// A request that cannot be served, with its status.
#[derive(Debug)]
struct Reject(StatusCode, String);

impl From<SchedulerError> for Reject {
    fn from(e: SchedulerError) -> Self {
        let status = match &e {
            SchedulerError::IllegalMove(_)
            | SchedulerError::StateChanged { .. }
            | SchedulerError::Conflict(_)
            | SchedulerError::DrainTimeout { .. } => StatusCode::CONFLICT,
            SchedulerError::BackendUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            SchedulerError::Persist(_) => StatusCode::INTERNAL_SERVER_ERROR,
            SchedulerError::ValidatorUnavailable | SchedulerError::IncrementalUnavailable => {
                StatusCode::NOT_IMPLEMENTED
            }
        };
        Reject(status, e.to_string())
    }
}

fn bad_request(msg: impl Into<String>) -> Reject {
    Reject(StatusCode::BAD_REQUEST, msg.into())
}

async fn handle(req: Request<Incoming>, ctx: &Ctx) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = match route(req, ctx).await {
        Ok(r) => r,
        Err(Reject(status, message)) => {
            let mut r = json_response(status, &json!({ "error": message }));
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            if status == StatusCode::METHOD_NOT_ALLOWED {
                let allowed: Vec<&str> = ROUTES
                    .iter()
                    .filter(|(p, _, _)| *p == path)
                    .map(|(_, m, _)| *m)
                    .collect();
                if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                    r.headers_mut().insert(ALLOW, v);
                }
            }
            r
        }
    };
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "admin request");
    resp
}

async fn route(req: Request<Incoming>, ctx: &Ctx) -> Result<Resp, Reject> {
    let path = req.uri().path();
    if path == "/" && req.method() == hyper::Method::GET {
        return Ok(status_page());
    }
    authorize(&req, ctx.token.as_deref())?;
    let Some(&(_, method, route)) = ROUTES
        .iter()
        .find(|(p, m, _)| *p == path && *m == req.method().as_str())
    else {
        return Err(if ROUTES.iter().any(|(p, _, _)| *p == path) {
            Reject(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on {path}", req.method()),
            )
        } else {
            Reject(StatusCode::NOT_FOUND, format!("no route {path}"))
        });
    };
    if route == Route::Inconsistencies {
        return inconsistencies(req.uri().query(), ctx);
    }
    let query = parse_query(req.uri().query(), matches!(route, Route::Move(_)))?;
    let body = if method == "POST" {
        read_body(req).await?
    } else {
        Bytes::new()
    };
    let s = &ctx.scheduler;
    match route {
        Route::Move(to) => {
            parse_body::<NoBody>(&body)?;
            s.transition(to, query.force, Trigger::Api, None).await?;
            Ok(json_response(StatusCode::OK, &s.status().await))
        }
        Route::FullStart => {
            let b: FullStartBody = parse_body(&body)?;
            if b.tables
                .as_ref()
                .is_some_and(|t| t.iter().any(|n| n.is_empty()))
            {
                return Err(bad_request("field `tables`: table names must not be empty"));
            }
            s.start_full(b.tables).await?;
            Ok(json_response(
                StatusCode::ACCEPTED,
                &s.status().await.validation,
            ))
        }
        Route::FullStop => {
            parse_body::<NoBody>(&body)?;
            s.stop_full().await?;
            Ok(json_response(StatusCode::OK, &s.status().await.validation))
        }
        Route::IncrStart => {
            let b: IncrStartBody = parse_body_required(&body)?;
            if b.interval == 0 {
                return Err(bad_request("field `interval`: must be at least 1 (ms)"));
            }
            let v = validation(ctx)?;
            let since =
                i64::try_from(b.utime).map_err(|_| bad_request("field `utime`: too large"))?;
            v.start_incremental(since, Some(b.interval), false)
                .await
                .map_err(validation_error)?;
            Ok(json_response(StatusCode::ACCEPTED, &v.status()))
        }
        Route::IncrStop => {
            parse_body::<NoBody>(&body)?;
            let v = validation(ctx)?;
            v.stop_incremental().await.map_err(validation_error)?;
            Ok(json_response(StatusCode::OK, &v.status()))
        }
        Route::Fix => {
            parse_body::<NoBody>(&body)?;
            let v = validation(ctx)?;
            let report = v.fix_open().await.map_err(validation_error)?;
            Ok(json_response(StatusCode::OK, &report))
        }
        Route::Inconsistencies => unreachable!("answered before the body is read"),
        Route::StatusPage => Ok(status_page()),
        Route::AutoMigrate => {
            let b: AutoMigrateBody = parse_body(&body)?;
            let wait = b.step_wait_ms.unwrap_or(DEFAULT_STEP_WAIT_MS);
            if wait > MAX_STEP_WAIT_MS {
                return Err(bad_request(format!(
                    "field `step_wait_ms`: at most {MAX_STEP_WAIT_MS}"
                )));
            }
            let run = s.start_auto_migrate(Duration::from_millis(wait)).await?;
            Ok(json_response(StatusCode::ACCEPTED, &run))
        }
        Route::AutoMigrateCancel => {
            parse_body::<NoBody>(&body)?;
            s.cancel_auto_migrate().await?;
            Ok(json_response(
                StatusCode::OK,
                &s.status().await.auto_migrate,
            ))
        }
        Route::Status => {
            let mut status = serde_json::to_value(s.status().await).unwrap_or_default();
            if let (Some(v), Some(obj)) = (&ctx.validation, status.as_object_mut()) {
                // per-table progress (rows checked, estimate, percent, ETA) and run summaries
                obj.insert(
                    "validation_detail".into(),
                    serde_json::to_value(v.status()).unwrap_or_default(),
                );
            }
            Ok(json_response(StatusCode::OK, &status))
        }
        Route::Stats => Ok(json_response(StatusCode::OK, &s.migration_stats().await)),
        Route::Health => {
            let state = s.current_state().await;
            Ok(match s.health().await {
                Ok(pattern) => json_response(
                    StatusCode::OK,
                    &json!({"ok": true, "state": state, "pattern": pattern}),
                ),
                Err(failed) => json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"ok": false, "state": state, "pattern": s.pattern_handle().load(), "error": failed}),
                ),
            })
        }
        Route::Metrics => {
            s.refresh_health(METRICS_PROBE_MAX_AGE).await;
            if let Some(v) = &ctx.validation {
                metrics::publish_validation(&v.status());
            }
            let text = metrics::render(&ctx.stats);
            Ok(text_response(
                "text/plain; version=0.0.4; charset=utf-8",
                Bytes::from(text),
            ))
        }
        Route::OpenApi => Ok(text_response(
            "application/json",
            Bytes::from_static(OPENAPI_JSON.as_bytes()),
        )),
    }
}

/// `GET /`: the embedded status page (see `control::ui`).
fn status_page() -> Resp {
    let page = super::ui::page();
    let mut r = text_response("text/html; charset=utf-8", Bytes::from(page.html.as_str()));
    let h = r.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&page.csp) {
        h.insert(hyper::header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        hyper::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn authorize(req: &Request<Incoming>, token: Option<&str>) -> Result<(), Reject> {
    let Some(token) = token else { return Ok(()) };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(Reject(StatusCode::UNAUTHORIZED, "wrong admin token".into())),
        None => Err(Reject(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <admin_token>` header".into(),
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Query {
    force: bool,
}

fn validation(ctx: &Ctx) -> Result<&Arc<crate::validate::Validator>, Reject> {
    ctx.validation.as_ref().ok_or_else(|| {
        Reject(
            StatusCode::NOT_IMPLEMENTED,
            "validator not available: no validator is configured in this process".into(),
        )
    })
}

fn validation_error(e: crate::validate::ValidateError) -> Reject {
    let msg = e.to_string();
    let status = if msg.contains("already running") {
        StatusCode::CONFLICT
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Reject(status, msg)
}

/// `GET /inconsistencies?status=open|fixed|obsolete&limit=N&after=ID`
fn inconsistencies(q: Option<&str>, ctx: &Ctx) -> Result<Resp, Reject> {
    let v = validation(ctx)?;
    let (mut status, mut limit, mut after) = (None, 100usize, None);
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "status" => {
                status = Some(val.parse().map_err(|_| {
                    bad_request(format!(
                        "query parameter `status`: expected open, fixed or obsolete, got `{val}`"
                    ))
                })?)
            }
            "limit" => {
                limit = val
                    .parse()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| bad_request("query parameter `limit`: expected 1..10000"))?
            }
            "after" => {
                after =
                    Some(val.parse().map_err(|_| {
                        bad_request("query parameter `after`: expected an event id")
                    })?)
            }
            _ => return Err(bad_request(format!("unknown query parameter `{k}`"))),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &v.inconsistencies(status, limit, after),
    ))
}

fn parse_query(q: Option<&str>, is_move: bool) -> Result<Query, Reject> {
    let mut query = Query { force: false };
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        match (k, is_move) {
            ("force", true) => {
                query.force = match v {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(bad_request(format!(
                            "query parameter `force`: expected true or false, got `{v}`"
                        )))
                    }
                }
            }
            _ => return Err(bad_request(format!("unknown query parameter `{k}`"))),
        }
    }
    Ok(query)
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Reject> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {MAX_BODY} bytes"),
        )),
        Err(e) => Err(bad_request(format!("reading request body: {e}"))),
    }
}

/// An optional JSON object body: empty means all defaults.
fn parse_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Reject> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_body_required(body)
}

fn parse_body_required<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reject> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_request("this route needs a JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoBody {}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FullStartBody {
    tables: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // parsed for validation; used once incremental validation exists
struct IncrStartBody {
    utime: u64,
    interval: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoMigrateBody {
    step_wait_ms: Option<u64>,
}

fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Resp {
    let (status, bytes) = match serde_json::to_vec_pretty(body) {
        Ok(mut b) => {
            b.push(b'\n');
            (status, b)
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{{\"error\":\"serializing response: {e}\"}}").into_bytes(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn text_response(content_type: &'static str, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_force() {
        assert!(parse_query(Some("force=true"), true).unwrap().force);
        assert!(!parse_query(None, true).unwrap().force);
        assert!(parse_query(Some("force=yes"), true).is_err());
        assert!(parse_query(Some("forse=true"), true).is_err());
        assert!(parse_query(Some("force=true"), false).is_err());
    }

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
