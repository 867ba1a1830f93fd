//! Process-wide log output: `tracing` events to stderr, as text or JSON.
//!
//! - `CUTOVER_LOG`: a `tracing` filter (default `info`), e.g. `debug` or
//!   `cutover::session=trace,info`.
//! - `CUTOVER_LOG_FORMAT`: `text` (default) or `json` (one object per line,
//!   for log shippers: `timestamp`, `level`, `target`, the event's fields
//!   flattened, and the connection span as `span` / `spans`).
//! - Text output carries ANSI colours only when stderr is a terminal and
//!   `NO_COLOR` is unset (<https://no-color.org>), so files, pipes and
//!   journald get plain text.

use std::io::IsTerminal;
use std::str::FromStr;

/// Environment variable holding the `tracing` filter.
pub const LOG_FILTER_ENV: &str = "CUTOVER_LOG";
/// Environment variable choosing the output format.
pub const LOG_FORMAT_ENV: &str = "CUTOVER_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `CUTOVER_LOG_FORMAT` has a value that is neither `text` nor `json`.
#[derive(Debug, thiserror::Error)]
#[error("{LOG_FORMAT_ENV}: expected `text` or `json`, got `{0}`")]
pub struct UnknownLogFormat(pub String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(UnknownLogFormat(s.to_string())),
        }
    }
}

/// Install the global subscriber from the environment.
///
/// # Errors
/// [`UnknownLogFormat`] when `CUTOVER_LOG_FORMAT` is set to something else
/// than `text` or `json` (nothing is installed then).
pub fn init() -> Result<LogFormat, UnknownLogFormat> {
    let format = match std::env::var(LOG_FORMAT_ENV) {
        Ok(v) => v.parse()?,
        Err(_) => LogFormat::Text,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_FILTER_ENV)
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(colour_wanted()).init(),
    }
    Ok(format)
}

fn colour_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert_eq!("".parse::<LogFormat>().unwrap(), LogFormat::Text);
        let e = "logfmt".parse::<LogFormat>().unwrap_err();
        assert!(e.to_string().contains("CUTOVER_LOG_FORMAT"), "{e}");
        assert!(e.to_string().contains("logfmt"), "{e}");
    }
}
