//! Client commands, parsed once per packet, and the one builder of the
//! command payloads the proxy sends on its own.
//!
//! A command packet is the command byte followed by its body (MySQL Client/
//! Server Protocol, "Command Phase"). The session parses each client packet
//! into a [`Command`] and dispatches on it; the raw payload is still what is
//! relayed, so a command reaches the backends byte for byte. Bytes are named
//! by `mysql_common`'s [`Com`] enum.

#![warn(missing_docs)]

pub use mysql_common::constants::Command as Com;

/// One client command, borrowing from its packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// COM_QUIT: the client closes the session.
    Quit,
    /// COM_INIT_DB: the schema name (like `USE`).
    InitDb(&'a [u8]),
    /// COM_QUERY: the SQL text (one or, with multi-statements, several).
    Query(&'a [u8]),
    /// COM_FIELD_LIST (deprecated; answered by the authoritative side).
    FieldList,
    /// COM_STATISTICS: a one-line status string.
    Statistics,
    /// COM_PING.
    Ping,
    /// COM_CHANGE_USER: the body after the command byte (user, auth data,
    /// schema, collation, plugin), parsed with the session's capabilities.
    ChangeUser(&'a [u8]),
    /// COM_STMT_PREPARE: the SQL text.
    StmtPrepare(&'a [u8]),
    /// COM_STMT_EXECUTE: the client's statement id (flags, parameters follow).
    StmtExecute(u32),
    /// COM_STMT_SEND_LONG_DATA: statement id (parameter and data follow).
    StmtSendLongData(u32),
    /// COM_STMT_CLOSE: statement id.
    StmtClose(u32),
    /// COM_STMT_RESET: statement id.
    StmtReset(u32),
    /// COM_STMT_FETCH: statement id (row count follows).
    StmtFetch(u32),
    /// COM_SET_OPTION: 0 = multi-statements on, 1 = off.
    SetOption(u16),
    /// COM_RESET_CONNECTION.
    ResetConnection,
    /// Any other command byte: answered with ER_UNKNOWN_COM_ERROR.
    Unsupported(u8),
}

/// Why a client packet is not a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A packet without even a command byte.
    #[error("empty command packet")]
    Empty,
    /// Too short for the command's fixed fields (statement id, option).
    #[error("{0:?} packet too short")]
    Short(Com),
}

impl<'a> Command<'a> {
    /// Parse one client packet (command byte included).
    ///
    /// # Errors
    /// [`ParseError::Empty`] for an empty payload; [`ParseError::Short`]
    /// when a statement id (4 bytes) or an option (2 bytes) is missing.
    pub fn parse(payload: &'a [u8]) -> Result<Command<'a>, ParseError> {
        let (&byte, body) = payload.split_first().ok_or(ParseError::Empty)?;
        let Some(com) = com_of(byte) else {
            return Ok(Command::Unsupported(byte));
        };
        let stmt_id = || {
            body.get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(ParseError::Short(com))
        };
        Ok(match com {
            Com::COM_QUIT => Command::Quit,
            Com::COM_INIT_DB => Command::InitDb(body),
            Com::COM_QUERY => Command::Query(body),
            Com::COM_FIELD_LIST => Command::FieldList,
            Com::COM_STATISTICS => Command::Statistics,
            Com::COM_PING => Command::Ping,
            Com::COM_CHANGE_USER => Command::ChangeUser(body),
            Com::COM_STMT_PREPARE => Command::StmtPrepare(body),
            Com::COM_STMT_EXECUTE => Command::StmtExecute(stmt_id()?),
            Com::COM_STMT_SEND_LONG_DATA => Command::StmtSendLongData(stmt_id()?),
            Com::COM_STMT_CLOSE => Command::StmtClose(stmt_id()?),
            Com::COM_STMT_RESET => Command::StmtReset(stmt_id()?),
            Com::COM_STMT_FETCH => Command::StmtFetch(stmt_id()?),
            Com::COM_SET_OPTION => match body.get(..2) {
                Some(b) => Command::SetOption(u16::from_le_bytes([b[0], b[1]])),
                None => return Err(ParseError::Short(com)),
            },
            Com::COM_RESET_CONNECTION => Command::ResetConnection,
            _ => Command::Unsupported(byte),
        })
    }
}

/// The commands cutover serves, by byte (the others are unsupported).
fn com_of(byte: u8) -> Option<Com> {
    const SERVED: [Com; 15] = [
        Com::COM_QUIT,
        Com::COM_INIT_DB,
        Com::COM_QUERY,
        Com::COM_FIELD_LIST,
        Com::COM_STATISTICS,
        Com::COM_PING,
        Com::COM_CHANGE_USER,
        Com::COM_STMT_PREPARE,
        Com::COM_STMT_EXECUTE,
        Com::COM_STMT_SEND_LONG_DATA,
        Com::COM_STMT_CLOSE,
        Com::COM_STMT_RESET,
        Com::COM_SET_OPTION,
        Com::COM_STMT_FETCH,
        Com::COM_RESET_CONNECTION,
    ];
    SERVED.into_iter().find(|c| *c as u8 == byte)
}

/// The payload of a command the proxy sends on its own: `com`'s byte, then
/// `body` (SQL text for COM_QUERY / COM_STMT_PREPARE, the option as u16 LE
/// for COM_SET_OPTION, nothing for COM_PING / COM_QUIT). Every command the
/// proxy originates (session replay, lazy prepares, pinning, KILL,
/// ROLLBACK) is built here.
pub fn payload(com: Com, body: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(body.len() + 1);
    p.push(com as u8);
    p.extend_from_slice(body);
    p
}

/// A COM_QUERY payload for `sql` (text or bytes).
pub fn query(sql: impl AsRef<[u8]>) -> Vec<u8> {
    payload(Com::COM_QUERY, sql.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_served_command() {
        assert_eq!(
            Command::parse(b"\x03SELECT 1"),
            Ok(Command::Query(b"SELECT 1"))
        );
        assert_eq!(Command::parse(b"\x02shop"), Ok(Command::InitDb(b"shop")));
        assert_eq!(Command::parse(&[0x01]), Ok(Command::Quit));
        assert_eq!(Command::parse(&[0x0E]), Ok(Command::Ping));
        assert_eq!(
            Command::parse(&[0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0]),
            Ok(Command::StmtExecute(7))
        );
        assert_eq!(
            Command::parse(&[0x19, 0xFF, 0xFF, 0xFF, 0xFF]),
            Ok(Command::StmtClose(u32::MAX))
        );
        assert_eq!(Command::parse(&[0x1B, 1, 0]), Ok(Command::SetOption(1)));
        assert_eq!(Command::parse(&[0x1F]), Ok(Command::ResetConnection));
    }

    #[test]
    fn short_empty_and_unknown_packets() {
        assert_eq!(Command::parse(&[]), Err(ParseError::Empty));
        assert_eq!(
            Command::parse(&[0x17, 1]),
            Err(ParseError::Short(Com::COM_STMT_EXECUTE))
        );
        assert_eq!(
            Command::parse(&[0x1B, 1]),
            Err(ParseError::Short(Com::COM_SET_OPTION))
        );
        for unknown in [0x00u8, 0x05, 0x0C, 0x1D, 0x1E, 0x20, 0xFA, 0xFF] {
            assert_eq!(
                Command::parse(&[unknown]),
                Ok(Command::Unsupported(unknown))
            );
        }
    }

    #[test]
    fn builds_payloads() {
        assert_eq!(query("ROLLBACK"), b"\x03ROLLBACK".to_vec());
        assert_eq!(
            payload(Com::COM_SET_OPTION, &1u16.to_le_bytes()),
            vec![0x1B, 1, 0]
        );
        assert_eq!(payload(Com::COM_PING, &[]), vec![0x0E]);
    }
}
