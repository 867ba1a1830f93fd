//! cutover: a MySQL wire-protocol proxy that moves a live application from a
//! SOURCE database to a DESTINATION database with zero downtime.
//!
//! Two wings joined by a narrow handle ([`pattern::PatternHandle`]):
//! - the **data path** (`listener` → `session` → `classify`/`route` → `backend`)
//!   speaks the MySQL protocol to applications and relays statements;
//! - the **control plane** (scheduler, admin API, metrics, validation) swaps
//!   the pattern and observes metrics. The data path never imports it.
//!
//! `ctl` is the operator's terminal client of the admin API (HTTP only).

pub mod auth;
pub mod backend;
pub mod build_info;
pub mod capabilities;
pub mod catalog;
pub mod classify;
pub mod codes;
pub mod command;
pub mod config;
pub mod control;
pub mod ctl;
pub mod determinism;
pub mod error;
pub mod fence;
pub mod greeting;
mod lexer;
pub mod listener;
pub mod logging;
pub mod metric_catalog;
pub mod pattern;
pub mod response;
pub mod route;
pub mod session;
pub mod shared;
pub mod stats;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod validate;
pub mod wire;
