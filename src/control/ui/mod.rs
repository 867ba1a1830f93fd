//! The live status page (`GET /`): one self-contained HTML document — the
//! markup, style and script of this directory embedded at compile time and
//! inlined once. No CDN, no build step.
//!
//! The page polls `GET /status` every 2 s and posts moves to the move routes
//! with the operator's token as `Authorization: Bearer` (taken in a field,
//! kept in the tab's `sessionStorage`, never put in a URL). It is served
//! without a token because it holds no data; the API calls it makes are
//! authorised as any other client's.
//!
//! The Content-Security-Policy allows exactly the inlined script and style
//! (by SHA-256 hash) and requests to this origin only.

use std::sync::OnceLock;

use base64::Engine;
use sha2::{Digest, Sha256};

const HTML: &str = include_str!("index.html");
const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("app.js");

/// The assembled page and its Content-Security-Policy header value.
pub struct Page {
    pub html: String,
    pub csp: String,
}

/// The page, built on first use.
pub fn page() -> &'static Page {
    static PAGE: OnceLock<Page> = OnceLock::new();
    PAGE.get_or_init(|| {
        let html = HTML
            .replacen("/*STYLE*/", STYLE, 1)
            .replacen("/*SCRIPT*/", SCRIPT, 1);
        let csp = format!(
            "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'",
            sha256_b64(&inline_block(&html, "<script>", "</script>")),
            sha256_b64(&inline_block(&html, "<style>", "</style>")),
        );
        Page { html, csp }
    })
}

/// The text between the first `open` tag and its `close` tag (what a
/// browser hashes for CSP).
fn inline_block(html: &str, open: &str, close: &str) -> String {
    let start = html.find(open).map_or(0, |i| i + open.len());
    let end = html[start..].find(close).map_or(html.len(), |i| start + i);
    html[start..end].to_string()
}

fn sha256_b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::state_machine::LEGAL_MOVES;

    #[test]
    fn page_is_self_contained() {
        let p = page();
        assert!(!p.html.contains("/*STYLE*/") && !p.html.contains("/*SCRIPT*/"));
        assert!(p.html.contains("function poll()"));
        assert!(p.html.contains("#diagram"));
        for external in ["src=\"http", "href=\"http", "@import", "url(http", "//cdn"] {
            assert!(!p.html.contains(external), "page loads {external}…");
        }
        assert_eq!(p.html.matches("<script>").count(), 1);
        assert_eq!(p.html.matches("<style>").count(), 1);
        assert!(p.csp.contains("script-src 'sha256-"), "{}", p.csp);
        assert!(!p.csp.contains("unsafe"), "{}", p.csp);
    }

    #[test]
    fn token_never_goes_into_a_url() {
        // The only places the token is used: the Authorization header and sessionStorage.
        for line in SCRIPT.lines().filter(|l| l.contains("token")) {
            assert!(
                !line.contains("?token") && !line.contains("&token") && !line.contains("location"),
                "{line}"
            );
        }
        assert!(SCRIPT.contains("headers['Authorization'] = 'Bearer ' + token"));
    }

    #[test]
    fn the_drawn_state_machine_is_legal_moves() {
        let line = SCRIPT
            .lines()
            .find(|l| l.starts_with("const LEGAL = "))
            .expect("const LEGAL in app.js");
        let json = line
            .trim_start_matches("const LEGAL = ")
            .trim_end_matches(';')
            .replace('\'', "\"");
        let drawn: Vec<(String, String)> = serde_json::from_str(&json).expect("LEGAL parses");
        let legal: Vec<(String, String)> = LEGAL_MOVES
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(drawn, legal);
    }
}
