//! Reading a (small) text-protocol result set on a backend connection for
//! the proxy's own use: user-variable values before a mirrored statement,
//! a temporary table's definition and rows, the routine catalog.
//!
//! Column definitions (Protocol::ColumnDefinition41) give each column's
//! type and character set; rows are length-encoded strings, `0xFB` for
//! NULL (MySQL Client/Server Protocol, "Text Resultset"). Only the first
//! result set is kept; memory is bounded by a byte limit.

use super::Backend;
use crate::error::BackendError;
use crate::response::{ResponseKind, Step, Tracker};
use crate::wire::{self, ErrInfo};

/// A column of a captured result: MySQL type byte, character set id and
/// flags (`UNSIGNED` = 0x20, `BINARY` = 0x80).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnMeta {
    /// `MYSQL_TYPE_*` (e.g. 0x08 LONGLONG, 0x05 DOUBLE, 0xF6 NEWDECIMAL).
    pub column_type: u8,
    /// Character set (collation) id of the values as sent; 63 = binary.
    pub charset: u16,
    /// Column flags.
    pub flags: u16,
}

/// One value of a text row: `None` is SQL NULL.
pub type Cell = Option<Vec<u8>>;

/// A result set the proxy read itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// Column metadata, in order.
    pub columns: Vec<ColumnMeta>,
    /// Rows (each as many cells as columns).
    pub rows: Vec<Vec<Cell>>,
    /// The command failed.
    pub err: Option<ErrInfo>,
    /// More than the byte limit arrived: `rows` holds only the beginning.
    pub truncated: bool,
    /// Bytes of row data kept.
    pub bytes: usize,
}

/// Parses the packets of one response into a [`Captured`].
struct Reader {
    tracker: Tracker,
    out: Captured,
    limit: usize,
    /// Column definitions still expected (`None` before the count).
    columns_left: Option<u64>,
    /// Past the first result set: nothing more is kept.
    done_first: bool,
}

impl Reader {
    fn new(deprecate_eof: bool, limit: usize) -> Self {
        Reader {
            tracker: Tracker::new(ResponseKind::Query, deprecate_eof),
            out: Captured::default(),
            limit,
            columns_left: None,
            done_first: false,
        }
    }

    /// Feed one packet; `Ok(true)` when the response is complete.
    fn feed(&mut self, payload: &[u8]) -> Result<bool, crate::response::Malformed> {
        let before = self.tracker.summary.result_sets;
        let step = self.tracker.feed(payload)?;
        if let Some(err) = &self.tracker.summary.err {
            self.out.err = Some(err.clone());
        }
        let first = !self.done_first && before == 0;
        if first && step == Step::More {
            self.packet(payload);
        }
        if self.tracker.summary.result_sets > 0 {
            self.done_first = true;
        }
        Ok(step == Step::Done)
    }

    fn packet(&mut self, payload: &[u8]) {
        match self.columns_left {
            None => {
                let mut b = payload;
                self.columns_left = wire::get_lenenc_int(&mut b);
            }
            Some(n) if n > 0 => {
                self.out.columns.push(parse_column(payload));
                self.columns_left = Some(n - 1);
            }
            Some(_) => {
                // a classic EOF after the definitions, or a row
                if payload.first() == Some(&0xFE) && payload.len() < 9 {
                    return;
                }
                self.row(payload);
            }
        }
    }

    fn row(&mut self, payload: &[u8]) {
        if self.out.truncated || self.out.bytes + payload.len() > self.limit {
            self.out.truncated = true;
            return;
        }
        let mut b = payload;
        let mut cells = Vec::with_capacity(self.out.columns.len());
        for _ in 0..self.out.columns.len() {
            if b.first() == Some(&0xFB) {
                b = &b[1..];
                cells.push(None);
                continue;
            }
            let Some(len) = wire::get_lenenc_int(&mut b) else {
                return;
            };
            let len = len as usize;
            if b.len() < len {
                return;
            }
            cells.push(Some(b[..len].to_vec()));
            b = &b[len..];
        }
        self.out.bytes += payload.len();
        self.out.rows.push(cells);
    }
}

/// Type, character set and flags of a ColumnDefinition41 packet.
fn parse_column(payload: &[u8]) -> ColumnMeta {
    let mut b = payload;
    for _ in 0..6 {
        match wire::get_lenenc_int(&mut b) {
            Some(n) if b.len() >= n as usize => b = &b[n as usize..],
            _ => break,
        }
    }
    // length of the fixed fields (0x0c), then charset u16, length u32, type, flags u16
    let fixed = b.get(1..).unwrap_or_default();
    let u16_at = |i: usize| {
        fixed
            .get(i..i + 2)
            .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
    };
    ColumnMeta {
        charset: u16_at(0),
        column_type: fixed.get(6).copied().unwrap_or(0),
        flags: u16_at(7),
    }
}

impl<T> Backend<T> {
    /// Queue a text query whose result the proxy reads itself, without a
    /// round trip of its own: it is sent with the next command, and its
    /// result is read (before that command's) into [`Self::take_captured`].
    /// At most `limit` bytes of rows are kept.
    pub fn queue_capture(&mut self, payload: &[u8], limit: usize) {
        self.before_command();
        self.io.queue_packet(0, payload);
        self.expected.push_back(super::Expected::Captured(limit));
    }

    /// Results of queued captures read so far, in order.
    pub fn take_captured(&mut self) -> Vec<Captured> {
        std::mem::take(&mut self.captured)
    }

    /// Run a text query now and read its first result set (at most `limit`
    /// bytes of rows; outstanding answers are read first).
    ///
    /// # Errors
    /// [`BackendError::Io`] / [`BackendError::Protocol`] when the connection
    /// breaks or the answer does not parse; a server error is in
    /// [`Captured::err`].
    pub async fn query_rows(
        &mut self,
        payload: &[u8],
        limit: usize,
    ) -> Result<Captured, BackendError> {
        self.send(payload).await?;
        self.drain_expected().await?;
        self.read_captured(limit).await
    }

    /// Read one response into a [`Captured`].
    pub(super) async fn read_captured(&mut self, limit: usize) -> Result<Captured, BackendError> {
        let mut reader = Reader::new(self.deprecate_eof(), limit);
        loop {
            let frame = self.io.expect_frame().await.map_err(|e| self.io_err(e))?;
            if frame.payload_len() == wire::MAX_PAYLOAD {
                reader.out.truncated = true;
            }
            if reader
                .feed(frame.payload())
                .map_err(|e| self.malformed(e))?
            {
                break;
            }
        }
        let summary = reader.tracker.summary.clone();
        self.note_status(&summary);
        Ok(reader.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::query;
    use crate::pattern::Side;
    use crate::testing;

    #[tokio::test]
    async fn reads_columns_rows_and_nulls() {
        let (mut b, _fake) = testing::backend::<()>(Side::Source, testing::tiny_db()).await;
        let c = b.query_rows(&query("SELECT 1"), 1 << 20).await.unwrap();
        assert_eq!(c.columns.len(), 1);
        assert_eq!(c.columns[0].column_type, 253);
        assert_eq!(c.columns[0].charset, 45);
        assert_eq!(c.rows, vec![vec![Some(b"1".to_vec())]]);
        assert!(!c.truncated && c.err.is_none());
        b.queue_capture(&query("SELECT 2"), 0);
        let s = b
            .run(&query("UPDATE t SET a = 1"), ResponseKind::Query)
            .await
            .unwrap();
        assert_eq!(s.ok.map(|o| o.affected_rows), Some(1));
        let captured = b.take_captured();
        assert_eq!(captured.len(), 1);
        assert!(captured[0].truncated, "over the 0-byte limit");
        assert!(captured[0].rows.is_empty());
    }

    #[test]
    fn parses_a_column_definition() {
        let mut col = Vec::new();
        for s in ["def", "shop", "t", "t", "n", "n"] {
            wire::put_lenenc_int(&mut col, s.len() as u64);
            col.extend_from_slice(s.as_bytes());
        }
        col.extend_from_slice(&[0x0c, 63, 0, 20, 0, 0, 0, 0x08, 0x20, 0, 0, 0, 0]);
        assert_eq!(
            parse_column(&col),
            ColumnMeta {
                column_type: 0x08,
                charset: 63,
                flags: 0x20
            }
        );
    }
}
