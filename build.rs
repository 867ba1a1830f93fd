//! Build script: stamps the git commit into the binary for `cutover --version`
//! and the `cutover_build_info` metric.
//!
//! The hash comes from `CUTOVER_GIT_HASH` if set (container builds, where the
//! build context has no `.git`), else from `git rev-parse --short=12 HEAD`,
//! else it is `unknown`. A build never fails for lack of git.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=CUTOVER_GIT_HASH");
    let from_env = std::env::var("CUTOVER_GIT_HASH")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    let hash = from_env
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // Rebuild when HEAD moves: HEAD itself (per worktree), the branch ref and packed-refs
    // (shared by all worktrees).
    // A path that does not exist would make cargo rerun this script on every build.
    let watch = |p: PathBuf| {
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    };
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        watch(PathBuf::from(dir).join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]).map(PathBuf::from) {
        if let Some(head_ref) = git(&["rev-parse", "--symbolic-full-name", "HEAD"]) {
            if head_ref.starts_with("refs/") {
                watch(common.join(&head_ref));
            }
        }
        watch(common.join("packed-refs"));
    }
    println!("cargo:rustc-env=CUTOVER_GIT_HASH={hash}");
}
