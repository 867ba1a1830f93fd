//! `cutover ctl`: the admin API from a terminal.
//!
//! A thin client: every command is one or a few requests to the running
//! server's admin API (reqwest, blocking, rustls), rendered for a person
//! (`render.rs`) or passed through (`status --json`). Nothing here touches
//! the databases or the state file.
//!
//! Exit codes: 0 done; 1 differences remain (`validate --wait`, `fix` with
//! failures); 2 usage or configuration error; 3 the admin API could not be
//! reached (or a waited-for run vanished); 4 the server refused (its message and blockers on stderr).

mod render;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

use crate::config::{Config, Overrides};

pub const EXIT_OK: u8 = 0;
pub const EXIT_DIFFERENCES: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;
pub const EXIT_REFUSED: u8 = 4;

/// Bound on one admin request (moves drain for at most `switch_drain_timeout_ms`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on `POST /fix` (it repairs every open event before answering).
const REPAIR_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// `cutover ctl [--admin URL] [--token T] <command>`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Admin API base URL (default: http://<admin_listen> of --config, else http://127.0.0.1:9033).
    #[arg(long, env = "CUTOVER_ADMIN_URL")]
    pub admin: Option<String>,
    /// Bearer token (the server's `admin_token`).
    #[arg(long, env = "CUTOVER_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Configuration file to read `admin_listen` from (when --admin is not given).
    #[arg(long, default_value = "./cutover.toml", env = "CUTOVER_CONFIG")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// State, pattern, the allowed next moves and why, validation progress, open inconsistencies, mirror health.
    Status {
        /// Print the raw `GET /status` body.
        #[arg(long)]
        json: bool,
    },
    /// Move to a state (src_only, src_first, dst_first, dst_only, completed).
    Switch {
        state: crate::control::State,
        /// Override the state machine and the authority-move guard (recorded in the history).
        #[arg(long)]
        force: bool,
    },
    /// Start a full validation (resumes a stopped one).
    Validate {
        /// Only these tables (comma-separated).
        #[arg(long, value_delimiter = ',')]
        tables: Vec<String>,
        /// Repair what differs (backfill): the target is made equal to the authoritative side.
        #[arg(long)]
        fix: bool,
        /// Start over instead of resuming a stopped run.
        #[arg(long)]
        restart: bool,
        /// Wait with a progress bar, print the summary; exit 0 clean, 1 differences remain.
        #[arg(long)]
        wait: bool,
    },
    /// Repair open inconsistencies from the authoritative side.
    Fix,
    /// List inconsistency events.
    Inconsistencies {
        /// open, fixed or obsolete.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// The moves made so far.
    History,
}

/// What went wrong talking to the server, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the admin API at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The run waited for ended without a report (exit 3).
    #[error("{0}")]
    RunLost(String),
    #[error("{status}: {message}")]
    Refused {
        status: u16,
        message: String,
        blockers: Vec<String>,
    },
}

impl CtlError {
    fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => EXIT_USAGE,
            CtlError::Unreachable { .. } | CtlError::RunLost(_) => EXIT_UNREACHABLE,
            CtlError::Refused { .. } => EXIT_REFUSED,
        }
    }
}

/// Run `cutover ctl`; returns the process exit code. Output goes to
/// stdout, errors (the server's message and blockers) to stderr.
pub fn main(args: CtlArgs) -> u8 {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cutover: {e}");
            if let CtlError::Refused { blockers, .. } = &e {
                for b in blockers {
                    eprintln!("  - needs {b}");
                }
            }
            e.exit_code()
        }
    }
}

fn run(args: CtlArgs) -> Result<u8, CtlError> {
    let api = Api::new(&args)?;
    match args.command {
        CtlCommand::Status { json } => {
            let s = api.get("/status")?;
            if json {
                println!("{}", pretty(&s));
            } else {
                print!("{}", render::status(&s));
            }
            Ok(EXIT_OK)
        }
        CtlCommand::Switch { state, force } => {
            let path = match state {
                crate::control::State::Completed => "/complete".to_string(),
                s => format!("/{s}"),
            };
            let path = if force {
                format!("{path}?force=true")
            } else {
                path
            };
            let s = api.post(&path, None)?;
            print!("{}", render::moved(&s, state));
            Ok(EXIT_OK)
        }
        CtlCommand::Validate {
            tables,
            fix,
            restart,
            wait,
        } => {
            let mut body = json!({ "fix": fix, "restart": restart });
            if !tables.is_empty() {
                body["tables"] = json!(tables);
            }
            let started = api.post("/full/start", Some(body))?;
            print!("{}", render::started(&started));
            if !wait {
                return Ok(EXIT_OK);
            }
            let last = wait_for_run(&api, &started["run_id"])?;
            print!("{}", render::run_summary(&last));
            let clean = last["outcome"] == "completed" && last["remaining"] == 0;
            Ok(if clean { EXIT_OK } else { EXIT_DIFFERENCES })
        }
        CtlCommand::Fix => {
            // a repair of many events can take long: no client-side timeout
            let r = api.post_with("/fix", None, REPAIR_TIMEOUT)?;
            print!("{}", render::fixed(&r));
            Ok(if r["failed"].as_u64().unwrap_or(0) == 0 {
                EXIT_OK
            } else {
                EXIT_DIFFERENCES
            })
        }
        CtlCommand::Inconsistencies { status, limit } => {
            let mut path = format!("/inconsistencies?limit={limit}");
            if let Some(s) = status {
                path.push_str(&format!("&status={s}"));
            }
            print!("{}", render::events(&api.get(&path)?));
            Ok(EXIT_OK)
        }
        CtlCommand::History => {
            print!("{}", render::history(&api.get("/status")?["history"]));
            Ok(EXIT_OK)
        }
    }
}

/// Poll `/status` until the run `run_id` is recorded, drawing a progress
/// bar (rows checked of the estimate, current table, ETA) on a terminal.
fn wait_for_run(api: &Api, run_id: &Value) -> Result<Value, CtlError> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:30}] {percent:>3}% {pos}/{len} rows, ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    // Polls in a row without the run going and without its report.
    let mut vanished = 0;
    loop {
        let s = api.get("/status")?;
        let detail = &s["validation_detail"];
        let last = &detail["last_full"];
        let running = s["validation"]["full_running"] == true;
        if !running && last["run_id"] == *run_id {
            bar.finish_and_clear();
            return Ok(last.clone());
        }
        vanished = if running { 0 } else { vanished + 1 };
        if vanished > 30 {
            bar.finish_and_clear();
            return Err(CtlError::RunLost(format!(
                "run {run_id} is not running and left no report (was the server restarted?); \
                 `cutover ctl validate` resumes it from its checkpoint"
            )));
        }
        if let Some(tables) = detail["full"]["tables"].as_array() {
            let total: u64 = tables
                .iter()
                .filter_map(|t| t["estimated_total"].as_u64())
                .sum();
            let done: u64 = tables
                .iter()
                .filter_map(|t| t["rows_checked"].as_u64())
                .sum();
            bar.set_length(total.max(done));
            bar.set_position(done);
            if let Some(t) = tables.iter().find(|t| t["done"] == false) {
                bar.set_message(t["table"].as_str().unwrap_or("").to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// The admin API at one base URL, with an optional bearer token.
struct Api {
    base: String,
    token: Option<String>,
    client: Client,
}

impl Api {
    fn new(args: &CtlArgs) -> Result<Api, CtlError> {
        let base = match &args.admin {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => default_url(&args.config)?,
        };
        let client = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| CtlError::Usage(format!("HTTP client: {e}")))?;
        Ok(Api {
            base,
            token: args.token.clone().filter(|t| !t.is_empty()),
            client,
        })
    }

    fn get(&self, path: &str) -> Result<Value, CtlError> {
        self.send(self.client.get(format!("{}{path}", self.base)))
    }

    fn post(&self, path: &str, body: Option<Value>) -> Result<Value, CtlError> {
        self.post_with(path, body, REQUEST_TIMEOUT)
    }

    fn post_with(
        &self,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, CtlError> {
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .timeout(timeout);
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        self.send(req)
    }

    fn send(&self, req: reqwest::blocking::RequestBuilder) -> Result<Value, CtlError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().map_err(|e| CtlError::Unreachable {
            url: self.base.clone(),
            source: e,
        })?;
        decode(resp)
    }
}

/// The JSON body of a 2xx answer, or the server's refusal.
fn decode(resp: Response) -> Result<Value, CtlError> {
    let status = resp.status();
    let text = resp.text().unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_success() {
        return Ok(body);
    }
    let message = body["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    let blockers = body["blockers"]
        .as_array()
        .map(|b| {
            b.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Err(CtlError::Refused {
        status: status.as_u16(),
        message,
        blockers,
    })
}

/// `http://<admin_listen>` from the config file when it exists.
fn default_url(config: &std::path::Path) -> Result<String, CtlError> {
    if !config.exists() {
        return Ok("http://127.0.0.1:9033".into());
    }
    let cfg = Config::load(config, &Overrides::default())
        .map_err(|e| CtlError::Usage(format!("{e} (or pass --admin URL)")))?;
    Ok(format!("http://{}", cfg.admin_listen))
}
