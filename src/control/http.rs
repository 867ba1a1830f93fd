//! The admin API's shared HTTP parts: the rejection type and its status
//! mapping, bearer auth, query and body parsing, JSON/text responses. The
//! handlers (one per route) are in `admin.rs`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::scheduler::SchedulerError;
use super::validation::ValidationError;

/// Largest request body accepted.
pub(super) const MAX_BODY: usize = 64 * 1024;

pub(super) type Resp = Response<Full<Bytes>>;

/// A request that cannot be served: its status, message and (for a guarded
/// move) the blockers, also as a list.
#[derive(Debug)]
pub(super) struct Reject {
    pub status: StatusCode,
    pub message: String,
    pub blockers: Option<Vec<String>>,
}

impl Reject {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Reject {
            status,
            message: message.into(),
            blockers: None,
        }
    }
}

impl From<SchedulerError> for Reject {
    fn from(e: SchedulerError) -> Self {
        let status = match &e {
            SchedulerError::IllegalMove(_)
            | SchedulerError::Blocked { .. }
            | SchedulerError::StateChanged { .. }
            | SchedulerError::Conflict(_)
            | SchedulerError::DrainTimeout { .. }
            | SchedulerError::SwitchAborted { .. } => StatusCode::CONFLICT,
            SchedulerError::BackendUnavailable { .. } | SchedulerError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            SchedulerError::Persist(_) => StatusCode::INTERNAL_SERVER_ERROR,
            SchedulerError::Validation(v) => validation_status(v),
        };
        let blockers = match &e {
            SchedulerError::Blocked { blockers, .. } => Some(blockers.clone()),
            SchedulerError::SwitchAborted { silent, .. } if !silent.is_empty() => Some(
                silent
                    .iter()
                    .map(|m| format!("member {m} did not acknowledge"))
                    .collect(),
            ),
            _ => None,
        };
        Reject {
            status,
            message: e.to_string(),
            blockers,
        }
    }
}

fn validation_status(e: &ValidationError) -> StatusCode {
    match e {
        ValidationError::Unavailable => StatusCode::NOT_IMPLEMENTED,
        ValidationError::UnknownTables(_) | ValidationError::Invalid(_) => StatusCode::BAD_REQUEST,
        ValidationError::AlreadyRunning(_) => StatusCode::CONFLICT,
        ValidationError::Backend(_) => StatusCode::SERVICE_UNAVAILABLE,
        ValidationError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(super) fn bad_request(msg: impl Into<String>) -> Reject {
    Reject::new(StatusCode::BAD_REQUEST, msg)
}

pub(super) fn authorize(req: &Request<Incoming>, token: Option<&str>) -> Result<(), Reject> {
    let Some(token) = token else { return Ok(()) };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(Reject::new(StatusCode::UNAUTHORIZED, "wrong admin token")),
        None => Err(Reject::new(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <admin_token>` header",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) struct Query {
    pub force: bool,
}

pub(super) fn parse_query(q: Option<&str>, is_move: bool) -> Result<Query, Reject> {
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

/// How long a request body may take to arrive in full: a client that
/// announces more bytes (`Content-Length`) than it sends gets 408 instead of
/// holding the connection.
pub(super) const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) async fn read_body(req: Request<Incoming>) -> Result<Bytes, Reject> {
    let collect = Limited::new(req.into_body(), MAX_BODY).collect();
    let Ok(collected) = tokio::time::timeout(BODY_TIMEOUT, collect).await else {
        return Err(Reject::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within {} s (Content-Length larger than the body?)",
                BODY_TIMEOUT.as_secs()
            ),
        ));
    };
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {MAX_BODY} bytes"),
        )),
        Err(e) => Err(bad_request(format!("reading request body: {e}"))),
    }
}

/// An optional JSON object body: empty means all defaults.
pub(super) fn parse_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Reject> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_body_required(body)
}

pub(super) fn parse_body_required<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reject> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_request("this route needs a JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoBody {}

pub(super) fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Resp {
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

pub(super) fn text_response(content_type: &'static str, body: Bytes) -> Resp {
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
