//! Reading a small text result set on a session's own connection — used only
//! before any client statement runs on it (session alignment), so nothing the
//! client can observe (ROW_COUNT(), warnings) changes.

use super::Backend;
use crate::command;
use crate::error::BackendError;
use crate::wire::{self, ErrInfo};

/// Largest packet accepted in an internal result (bytes).
const MAX_INTERNAL_PACKET: usize = 1 << 20;

/// One text-protocol row: each column's bytes as text, `None` for SQL NULL.
pub type TextRow = Vec<Option<String>>;

impl<T> Backend<T> {
    /// Run `sql` (COM_QUERY) and return its first row (text protocol), the
    /// rest of the result read and dropped. `Ok(Err(_))` is the server's ERR
    /// packet; `Ok(Ok(None))` an OK or an empty result.
    ///
    /// # Errors
    /// [`BackendError::Io`] when the connection breaks,
    /// [`BackendError::Protocol`] for a response that does not parse or a
    /// packet over 1 MiB.
    pub async fn query_row(
        &mut self,
        sql: &str,
    ) -> Result<Result<Option<TextRow>, ErrInfo>, BackendError> {
        self.drain_expected().await?;
        self.send(&command::query(sql.as_bytes())).await?;
        let first = self.packet().await?;
        match first.first() {
            Some(0xFF) => return Ok(Err(wire::parse_err(&first))),
            Some(0x00) => return Ok(Ok(None)),
            _ => {}
        }
        let columns = wire::get_lenenc_int(&mut &first[..])
            .ok_or_else(|| self.malformed("bad column count"))?;
        for _ in 0..columns {
            self.packet().await?;
        }
        if !self.deprecate_eof() {
            self.packet().await?;
        }
        let mut row = None;
        loop {
            let p = self.packet().await?;
            match p.first() {
                Some(0xFF) => return Ok(Err(wire::parse_err(&p))),
                Some(0xFE) if p.len() < 0xFF_FFFF => break,
                _ if row.is_none() => {
                    row = Some(
                        parse_text_row(&p, columns)
                            .ok_or_else(|| self.malformed("bad text row"))?,
                    )
                }
                _ => {}
            }
        }
        Ok(Ok(row))
    }

    async fn packet(&mut self) -> Result<Vec<u8>, BackendError> {
        match self.io.read_packet(MAX_INTERNAL_PACKET).await {
            Ok(Some((p, _))) => Ok(p),
            Ok(None) => Err(self.io_err(std::io::ErrorKind::UnexpectedEof.into())),
            Err(wire::ReadError::Io(e)) => Err(self.io_err(e)),
            Err(e) => Err(self.malformed(e)),
        }
    }
}

/// Parse a text-protocol row of `columns` values (lenenc strings, 0xFB = NULL).
fn parse_text_row(mut p: &[u8], columns: u64) -> Option<TextRow> {
    let mut row = Vec::with_capacity(columns.min(64) as usize);
    for _ in 0..columns {
        if p.first() == Some(&0xFB) {
            p = &p[1..];
            row.push(None);
            continue;
        }
        let len = usize::try_from(wire::get_lenenc_int(&mut p)?).ok()?;
        let v = p.get(..len)?;
        row.push(Some(String::from_utf8_lossy(v).into_owned()));
        p = &p[len..];
    }
    Some(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_row_with_null_and_values() {
        let mut p = vec![3u8];
        p.extend_from_slice(b"UTC");
        p.push(0xFB);
        p.push(1);
        p.push(b'4');
        let row = parse_text_row(&p, 3).unwrap();
        assert_eq!(row, vec![Some("UTC".into()), None, Some("4".into())]);
        assert_eq!(parse_text_row(&p[..3], 3), None, "truncated row is refused");
    }
}
