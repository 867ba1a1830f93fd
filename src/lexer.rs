//! The SQL lexer shared by classification (`classify`, on every COM_QUERY)
//! and the mirror's determinism analysis (`determinism`, on mirrored writes).
//!
//! Not a parser: it splits text into words, quoted strings, punctuation, `:=`
//! and `;`, allocating nothing. Skipped as trivia: whitespace, `/* … */`,
//! `-- ` (then whitespace/control/EOF), `# …` to the end of the line.
//! Executable comments `/*!…*/`, `/*!50100 …*/`, `/*M!…*/` are lexed as SQL
//! (the version is ignored), as the server does. `'…'`/`"…"` take backslash
//! and doubled-quote escapes (`NO_BACKSLASH_ESCAPES` is not modelled);
//! `` `…` `` only doubled backticks. An unterminated string or comment runs
//! to the end of the text. Source of the rules: MySQL Reference Manual,
//! "Comments" and "String Literals"; MariaDB "Comment Syntax".

#![warn(missing_docs)]

/// One token of SQL text, borrowing from the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok<'a> {
    /// Unquoted identifier, keyword or number.
    Word(&'a [u8]),
    /// Quote byte and the raw text between the quotes.
    Quoted(u8, &'a [u8]),
    /// Any other single byte (`(`, `)`, `.`, `,`, `=`, `@`, …).
    Punct(u8),
    /// `:=`
    Assign,
    /// `;` (a statement separator outside strings and comments).
    Semi,
}

impl Tok<'_> {
    /// Whether this is the word `kw` (ASCII case-insensitive).
    pub(crate) fn is(self, kw: &[u8]) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Offset of the first `pat` in `s` at or after `from`.
fn find(s: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    let hay = s.get(from..)?;
    hay.windows(pat.len())
        .position(|w| w == pat)
        .map(|i| i + from)
}

/// A lexer over one COM_QUERY text (several statements possible).
#[derive(Clone, Default)]
pub(crate) struct Lexer<'a> {
    s: &'a [u8],
    /// Byte offset just past the last token returned.
    pub(crate) pos: usize,
    /// Inside an executable comment, whose `*/` is skipped.
    exec: bool,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(s: &'a [u8]) -> Self {
        Lexer {
            s,
            pos: 0,
            exec: false,
        }
    }

    /// Length of the whole text in bytes.
    pub(crate) fn len(&self) -> usize {
        self.s.len()
    }

    fn at(&self, i: usize) -> u8 {
        self.s.get(i).copied().unwrap_or(0)
    }

    fn skip_trivia(&mut self) {
        let s = self.s;
        while self.pos < s.len() {
            let (c, d) = (s[self.pos], self.at(self.pos + 1));
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
                self.pos += 1;
            } else if c == b'/' && d == b'*' {
                let p = self.pos + 2;
                let exec = match (self.at(p), self.at(p + 1)) {
                    (b'!', _) => Some(p + 1),
                    (b'M', b'!') => Some(p + 2),
                    _ => None,
                };
                match exec {
                    Some(mut q) => {
                        while self.at(q).is_ascii_digit() {
                            q += 1;
                        }
                        self.pos = q;
                        self.exec = true;
                    }
                    None => self.pos = find(s, p, b"*/").map_or(s.len(), |i| i + 2),
                }
            } else if c == b'*' && d == b'/' && self.exec {
                self.pos += 2;
                self.exec = false;
            } else if c == b'#' || (c == b'-' && d == b'-' && self.at(self.pos + 2) <= b' ') {
                self.pos = find(s, self.pos, b"\n").map_or(s.len(), |i| i + 1);
            } else {
                return;
            }
        }
    }

    /// Next token and the byte offset where it starts.
    pub(crate) fn next(&mut self) -> Option<(Tok<'a>, usize)> {
        self.skip_trivia();
        let s = self.s;
        let start = self.pos;
        let c = *s.get(start)?;
        let tok = match c {
            b';' => {
                self.pos += 1;
                Tok::Semi
            }
            b':' if self.at(start + 1) == b'=' => {
                self.pos += 2;
                Tok::Assign
            }
            b'\'' | b'"' | b'`' => {
                // Stop at the closing quote; skip `\x` (not in backticks) and doubled quotes.
                let mut i = start + 1;
                while i < s.len() && !(s[i] == c && self.at(i + 1) != c) {
                    i += if s[i] == c || (s[i] == b'\\' && c != b'`') {
                        2
                    } else {
                        1
                    };
                }
                let end = i.min(s.len());
                self.pos = (end + 1).min(s.len());
                Tok::Quoted(c, &s[start + 1..end])
            }
            c if is_word_byte(c) => {
                let len = s[start..].iter().position(|&b| !is_word_byte(b));
                self.pos = len.map_or(s.len(), |k| start + k);
                Tok::Word(&s[start..self.pos])
            }
            _ => {
                self.pos += 1;
                Tok::Punct(c)
            }
        };
        Some((tok, start))
    }
}
