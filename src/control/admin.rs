//! The admin HTTP API: one small handler per route, with routing, bearer
//! auth, body/query parsing and the mapping of scheduler errors to HTTP
//! status codes shared. hyper 1.x, HTTP/1.1 only (a connection limit, a
//! header timeout and a bounded graceful drain around the accept loop).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::automation::{DEFAULT_STEP_WAIT_MS, MAX_STEP_WAIT_MS};
use super::coordinator::{Executor, Forwarded, ForwardedReply};
use super::http::{
    authorize, bad_request, json_response, parse_body, parse_body_required, parse_query, read_body,
    text_response, NoBody, Reject, Resp,
};
use super::metrics;
use super::scheduler::Scheduler;
use super::state_machine::State;
use super::status::Trigger;
use super::validation::{EventQuery, FullRequest, IncrRequest};
use crate::stats::DataPathStats;

/// The OpenAPI document of this API (`GET /openapi.json`).
pub const OPENAPI_JSON: &str = include_str!("../../docs/openapi.json");

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
    /// Forget a registered fleet member that is gone.
    FleetEvict,
    /// The status page; the only route served without a token (it holds no data).
    StatusPage,
}

impl Route {
    /// Served by the fleet's leader only (other members forward it through
    /// the coordinator): it changes the state or reaches the validator.
    fn leader_only(self) -> bool {
        matches!(
            self,
            Route::Move(_)
                | Route::FullStart
                | Route::FullStop
                | Route::IncrStart
                | Route::IncrStop
                | Route::AutoMigrate
                | Route::AutoMigrateCancel
                | Route::Inconsistencies
                | Route::Fix
        )
    }
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
    ("/fleet/evict", "POST", Route::FleetEvict),
];

pub(super) struct Ctx {
    pub scheduler: Arc<Scheduler>,
    pub stats: Arc<DataPathStats>,
    pub token: Option<String>,
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

async fn handle(req: Request<Incoming>, ctx: &Ctx) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = match route(req, ctx).await {
        Ok(r) => r,
        Err(reject) => error_response(reject, &path),
    };
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "admin request");
    resp
}

/// `{"error": …}` (plus `blockers` for a guarded move) with the status's headers.
fn error_response(reject: Reject, path: &str) -> Resp {
    let mut body = json!({ "error": reject.message });
    if let Some(b) = reject.blockers {
        body["blockers"] = json!(b);
    }
    let mut r = json_response(reject.status, &body);
    if reject.status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if reject.status == StatusCode::METHOD_NOT_ALLOWED {
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

/// What every handler gets: the shared context, the query string and the
/// body (empty for GET).
struct Call<'a> {
    ctx: &'a Ctx,
    query: Option<&'a str>,
    body: &'a [u8],
}

impl Call<'_> {
    fn scheduler(&self) -> &Arc<Scheduler> {
        &self.ctx.scheduler
    }

    /// Refuse any query parameter (routes that take none).
    fn no_query(&self) -> Result<(), Reject> {
        parse_query(self.query, false).map(|_| ())
    }
}

/// Authorize, find the route, read the body, dispatch to its handler.
async fn route(req: Request<Incoming>, ctx: &Ctx) -> Result<Resp, Reject> {
    let path = req.uri().path().to_string();
    let path = path.as_str();
    if path == "/" && req.method() == hyper::Method::GET {
        return Ok(status_page());
    }
    authorize(&req, ctx.token.as_deref())?;
    let Some(&(_, method, route)) = ROUTES
        .iter()
        .find(|(p, m, _)| *p == path && *m == req.method().as_str())
    else {
        return Err(if ROUTES.iter().any(|(p, _, _)| *p == path) {
            Reject::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on {path}", req.method()),
            )
        } else {
            Reject::new(StatusCode::NOT_FOUND, format!("no route {path}"))
        });
    };
    let query = req.uri().query().map(str::to_owned);
    let body = if method == "POST" {
        read_body(req).await?
    } else {
        Bytes::new()
    };
    if route.leader_only() {
        let call = Forwarded {
            from: String::new(),
            method: method.to_string(),
            path: path.to_string(),
            query: query.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        if let Some(answer) = ctx.scheduler.coord.forward(call) {
            let reply = answer
                .await
                .map_err(|m| Reject::new(StatusCode::SERVICE_UNAVAILABLE, m))?;
            return Ok(forwarded_response(reply));
        }
    }
    let c = Call {
        ctx,
        query: query.as_deref(),
        body: &body,
    };
    dispatch(c, route).await
}

/// Run the handler of `route`.
async fn dispatch(c: Call<'_>, route: Route) -> Result<Resp, Reject> {
    match route {
        Route::Move(to) => move_to(c, to).await,
        Route::FullStart => full_start(c).await,
        Route::FullStop => full_stop(c).await,
        Route::IncrStart => incr_start(c).await,
        Route::IncrStop => incr_stop(c).await,
        Route::Fix => fix(c).await,
        Route::Inconsistencies => inconsistencies(c),
        Route::AutoMigrate => auto_migrate(c).await,
        Route::AutoMigrateCancel => auto_migrate_cancel(c).await,
        Route::Status => status(c).await,
        Route::Stats => stats(c).await,
        Route::Health => health(c).await,
        Route::Metrics => metrics_text(c).await,
        Route::FleetEvict => fleet_evict(c).await,
        Route::StatusPage => Ok(status_page()),
        Route::OpenApi => Ok(text_response(
            "application/json",
            Bytes::from_static(OPENAPI_JSON.as_bytes()),
        )),
    }
}

/// `POST /<state>[?force=true]`: 200 + status with `changed` (false when
/// already there).
async fn move_to(c: Call<'_>, to: State) -> Result<Resp, Reject> {
    let query = parse_query(c.query, true)?;
    parse_body::<NoBody>(c.body)?;
    let s = c.scheduler();
    let changed = s.transition(to, query.force, Trigger::Api, None).await?;
    let mut body = s.status_json().await;
    body["changed"] = json!(changed);
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /full/start {"tables", "fix", "restart"}`: 202 + what the run does.
async fn full_start(c: Call<'_>) -> Result<Resp, Reject> {
    c.no_query()?;
    let b: FullStartBody = parse_body(c.body)?;
    if b.tables
        .as_ref()
        .is_some_and(|t| t.iter().any(|n| n.is_empty()))
    {
        return Err(bad_request("field `tables`: table names must not be empty"));
    }
    let s = c.scheduler();
    let req = FullRequest {
        tables: b.tables,
        fix: b.fix,
        restart: b.restart,
    };
    let started = s.start_full(req).await?;
    let mut body = serde_json::to_value(started).unwrap_or_default();
    body["validation"] = serde_json::to_value(s.status().await.validation).unwrap_or_default();
    Ok(json_response(StatusCode::ACCEPTED, &body))
}

async fn full_stop(c: Call<'_>) -> Result<Resp, Reject> {
    c.no_query()?;
    parse_body::<NoBody>(c.body)?;
    let s = c.scheduler();
    s.stop_full().await?;
    Ok(json_response(StatusCode::OK, &s.status().await.validation))
}

/// `POST /incr/start {"utime", "interval", "fix"}`: 202 + `run_id` and the detail.
async fn incr_start(c: Call<'_>) -> Result<Resp, Reject> {
    c.no_query()?;
    let b: IncrStartBody = parse_body_required(c.body)?;
    if b.interval == 0 {
        return Err(bad_request("field `interval`: must be at least 1 (ms)"));
    }
    let since = i64::try_from(b.utime).map_err(|_| bad_request("field `utime`: too large"))?;
    let s = c.scheduler();
    let run_id = s
        .start_incremental(IncrRequest {
            since_utime_ms: since,
            interval_ms: b.interval,
            fix: b.fix,
        })
        .await?;
    let mut body = serde_json::to_value(s.validation_detail()).unwrap_or_default();
    body["run_id"] = json!(run_id);
    Ok(json_response(StatusCode::ACCEPTED, &body))
}

async fn incr_stop(c: Call<'_>) -> Result<Resp, Reject> {
    c.no_query()?;
    parse_body::<NoBody>(c.body)?;
    let s = c.scheduler();
    s.stop_incremental().await?;
    Ok(json_response(StatusCode::OK, &s.validation_detail()))
}

async fn fix(c: Call<'_>) -> Result<Resp, Reject> {
    c.no_query()?;
    parse_body::<NoBody>(c.body)?;
    let result = c.scheduler().fix().await?;
    Ok(json_response(StatusCode::OK, &result))
}

async fn auto_migrate(c: Call<'_>) -> Result<Resp, Reject> {
    c.no_query()?;
    let b: AutoMigrateBody = parse_body(c.body)?;
    let wait = b.step_wait_ms.unwrap_or(DEFAULT_STEP_WAIT_MS);
    if wait > MAX_STEP_WAIT_MS {
        return Err(bad_request(format!(
            "field `step_wait_ms`: at most {MAX_STEP_WAIT_MS}"
        )));
    }
    let run = c
        .scheduler()
        .start_auto_migrate(Duration::from_millis(wait))
        .await?;
    Ok(json_response(StatusCode::ACCEPTED, &run))
}

async fn auto_migrate_cancel(c: Call<'_>) -> Result<Resp, Reject> {
    c.no_query()?;
    parse_body::<NoBody>(c.body)?;
    let s = c.scheduler();
    s.cancel_auto_migrate().await?;
    Ok(json_response(
        StatusCode::OK,
        &s.status().await.auto_migrate,
    ))
}

/// `GET /status`: the scheduler's status plus the validator's per-table
/// progress and run summaries (`validation_detail`).
async fn status(c: Call<'_>) -> Result<Resp, Reject> {
    c.no_query()?;
    Ok(json_response(
        StatusCode::OK,
        &c.scheduler().status_json().await,
    ))
}

async fn stats(c: Call<'_>) -> Result<Resp, Reject> {
    c.no_query()?;
    Ok(json_response(
        StatusCode::OK,
        &c.scheduler().migration_stats().await,
    ))
}

async fn health(c: Call<'_>) -> Result<Resp, Reject> {
    c.no_query()?;
    let s = c.scheduler();
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

async fn metrics_text(c: Call<'_>) -> Result<Resp, Reject> {
    c.no_query()?;
    let s = c.scheduler();
    s.refresh_health(METRICS_PROBE_MAX_AGE).await;
    if let Some(v) = s.validation_detail() {
        metrics::publish_validation(&v);
    }
    let text = metrics::render(&c.ctx.stats, s.open_inconsistencies());
    Ok(text_response(
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(text),
    ))
}

/// `GET /inconsistencies?status=open|fixed|obsolete&limit=N&after=ID`
fn inconsistencies(c: Call<'_>) -> Result<Resp, Reject> {
    let (mut status, mut limit, mut after) = (None, 100usize, None);
    for pair in c.query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
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
    let events = c.scheduler().inconsistencies(EventQuery {
        status,
        limit,
        after,
    })?;
    Ok(json_response(StatusCode::OK, &events))
}

/// `POST /fleet/evict?member=ID`: forget a registered (`keep_serving`)
/// member whose lease is gone, so switches stop waiting for it.
async fn fleet_evict(c: Call<'_>) -> Result<Resp, Reject> {
    parse_body::<NoBody>(c.body)?;
    let mut member = None;
    for pair in c.query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("member", v)) if !v.is_empty() => member = Some(v.to_string()),
            _ => return Err(bad_request(format!("unknown query parameter `{pair}`"))),
        }
    }
    let member = member.ok_or_else(|| bad_request("query parameter `member` is required"))?;
    let evicted = c.scheduler().coord.evict(member.clone()).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "member": member, "evicted": evicted }),
    ))
}

/// The leader's answer to a forwarded request, relayed as it is.
fn forwarded_response(reply: ForwardedReply) -> Resp {
    let mut r = Resp::new(http_body_util::Full::new(Bytes::from(reply.body)));
    *r.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
    if let Ok(v) = HeaderValue::from_str(&reply.content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Serves requests other fleet members forward to this one (the leader):
/// the same handler an HTTP request reaches, answered as status + body.
pub(super) fn executor(ctx: Arc<Ctx>) -> Executor {
    Arc::new(move |call: Forwarded| {
        let ctx = Arc::clone(&ctx);
        Box::pin(async move {
            let found = ROUTES
                .iter()
                .find(|(p, m, _)| *p == call.path && *m == call.method);
            let resp = match found {
                Some(&(_, _, route)) => {
                    let c = Call {
                        ctx: &ctx,
                        query: call.query.as_deref(),
                        body: call.body.as_bytes(),
                    };
                    dispatch(c, route).await
                }
                None => Err(Reject::new(
                    StatusCode::NOT_FOUND,
                    format!("no route {}", call.path),
                )),
            };
            let resp = resp.unwrap_or_else(|r| error_response(r, &call.path));
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            ForwardedReply {
                status,
                content_type,
                body,
            }
        }) as super::validation::BoxFuture<'static, ForwardedReply>
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FullStartBody {
    tables: Option<Vec<String>>,
    #[serde(default)]
    fix: bool,
    #[serde(default)]
    restart: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrStartBody {
    utime: u64,
    interval: u64,
    #[serde(default)]
    fix: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoMigrateBody {
    step_wait_ms: Option<u64>,
}

/// `GET /`: the status page (it holds no data: it polls `/status` with the
/// operator's token).
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
