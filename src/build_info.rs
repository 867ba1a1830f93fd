//! What this binary is: crate version and the git commit it was built from
//! (stamped by `build.rs`; `unknown` when built without git).

/// The git commit (12 hex digits), or `unknown`.
pub const GIT_HASH: &str = env!("CUTOVER_GIT_HASH");

/// `cutover --version`: `0.1.0 (0123456789ab)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("CUTOVER_GIT_HASH"),
    ")"
);
