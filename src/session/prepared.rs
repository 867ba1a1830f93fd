//! Prepared statements: proxy-allocated ids mapped to each backend's own.

use std::collections::HashMap;

use crate::classify::Class;
use crate::determinism::Analysis;
use crate::pattern::Side;

/// Most prepared statements one session may hold (MySQL's own default
/// max_prepared_stmt_count is 16382 for the whole server).
pub const MAX_STATEMENTS: usize = 16_382;

#[derive(Debug)]
pub struct Statement {
    pub sql: Vec<u8>,
    pub class: Class,
    pub params: u16,
    /// The backend's statement id, per side, where prepared.
    pub ids: [Option<u32>; 2],
    /// Parameter types from the last execute that bound them.
    types: Option<Vec<u8>>,
    /// Whether each side has received parameter types since it prepared.
    types_sent: [bool; 2],
    /// What determinism makes of the text (computed at the first mirrored
    /// execute; the text never changes).
    pub analysis: Option<Analysis>,
}

impl Statement {
    pub fn new(sql: Vec<u8>, class: Class, params: u16) -> Self {
        Statement {
            sql,
            class,
            params,
            ids: [None, None],
            types: None,
            types_sent: [false, false],
            analysis: None,
        }
    }

    pub fn set_id(&mut self, side: Side, id: u32) {
        self.ids[side.index()] = Some(id);
        self.types_sent[side.index()] = false;
    }

    pub fn id(&self, side: Side) -> Option<u32> {
        self.ids[side.index()]
    }

    /// Rewrite a COM_STMT_EXECUTE for `side`: its own statement id, and the
    /// parameter types re-sent when this side has not seen them yet (a
    /// client may send types only on the first execute). `None` if the
    /// packet is malformed.
    pub fn execute_for(&mut self, side: Side, payload: &[u8]) -> Option<Vec<u8>> {
        let id = self.id(side)?;
        if payload.len() < 10 {
            return None;
        }
        let mut out = Vec::with_capacity(payload.len() + 2 * self.params as usize);
        out.extend_from_slice(&payload[..1]);
        out.extend_from_slice(&id.to_le_bytes());
        if self.params == 0 {
            out.extend_from_slice(&payload[5..]);
            return Some(out);
        }
        let nulls = (self.params as usize).div_ceil(8);
        let bound_at = 10 + nulls;
        let bound = *payload.get(bound_at)?;
        if bound == 1 {
            let types = payload.get(bound_at + 1..bound_at + 1 + 2 * self.params as usize)?;
            self.types = Some(types.to_vec());
            self.types_sent[side.index()] = true;
            out.extend_from_slice(&payload[5..]);
        } else if !self.types_sent[side.index()] {
            let types = self.types.as_ref()?;
            out.extend_from_slice(&payload[5..bound_at]);
            out.push(1);
            out.extend_from_slice(types);
            out.extend_from_slice(&payload[bound_at + 1..]);
            self.types_sent[side.index()] = true;
        } else {
            out.extend_from_slice(&payload[5..]);
        }
        Some(out)
    }

    /// Rewrite the statement id of SEND_LONG_DATA / RESET / FETCH / CLOSE.
    pub fn with_id(&self, side: Side, payload: &[u8]) -> Option<Vec<u8>> {
        let id = self.id(side)?;
        let mut out = payload.to_vec();
        out.get_mut(1..5)?.copy_from_slice(&id.to_le_bytes());
        Some(out)
    }
}

#[derive(Debug, Default)]
pub struct Statements {
    next_id: u32,
    last_id: u32,
    map: HashMap<u32, Statement>,
}

impl Statements {
    pub fn insert(&mut self, stmt: Statement) -> Option<u32> {
        if self.map.len() >= MAX_STATEMENTS {
            return None;
        }
        loop {
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.map.contains_key(&self.next_id) {
                break;
            }
        }
        self.map.insert(self.next_id, stmt);
        self.last_id = self.next_id;
        Some(self.next_id)
    }

    /// The id the next `insert` will return (to rewrite PREPARE_OK before
    /// we know whether it succeeded).
    pub fn peek_next_id(&self) -> u32 {
        let mut id = self.next_id;
        loop {
            id = id.wrapping_add(1).max(1);
            if !self.map.contains_key(&id) {
                return id;
            }
        }
    }

    /// MariaDB clients may address "the statement prepared last" as id
    /// 0xFFFFFFFF (pipelined prepare + execute).
    pub fn resolve(&self, id: u32) -> u32 {
        if id == u32::MAX {
            self.last_id
        } else {
            id
        }
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut Statement> {
        self.map.get_mut(&id)
    }

    pub fn remove(&mut self, id: u32) -> Option<Statement> {
        self.map.remove(&id)
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forget a side's ids (its connection was lost or replaced).
    pub fn forget_side(&mut self, side: Side) {
        for s in self.map.values_mut() {
            s.ids[side.index()] = None;
            s.types_sent[side.index()] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(id: u32, bound: bool) -> Vec<u8> {
        // 2 params: null bitmap 1 byte
        let mut p = vec![0x17];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&[0, 1, 0, 0, 0, 0]);
        if bound {
            p.push(1);
            p.extend_from_slice(&[8, 0, 253, 0]);
        } else {
            p.push(0);
        }
        p.extend_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0, 1, b'x']);
        p
    }

    #[test]
    fn rewrites_id_and_resends_types() {
        let mut s = Statement::new(b"INSERT INTO t VALUES (?,?)".to_vec(), Class::Write, 2);
        s.set_id(Side::Source, 70);
        let out = s.execute_for(Side::Source, &exec(1, true)).unwrap();
        assert_eq!(&out[1..5], &70u32.to_le_bytes());
        assert_eq!(out.len(), exec(1, true).len());
        // destination prepared later; client sends bound=0
        s.set_id(Side::Destination, 9);
        let out = s.execute_for(Side::Destination, &exec(1, false)).unwrap();
        assert_eq!(out, {
            let mut e = exec(9, true);
            e[1..5].copy_from_slice(&9u32.to_le_bytes());
            e
        });
        // second time: passes through unchanged
        let out = s.execute_for(Side::Destination, &exec(1, false)).unwrap();
        assert_eq!(out.len(), exec(1, false).len());
        assert!(s.execute_for(Side::Source, &[0x17, 1]).is_none());
    }

    #[test]
    fn ids_are_unique_and_bounded() {
        let mut m = Statements::default();
        let a = m.insert(Statement::new(vec![], Class::Read, 0)).unwrap();
        assert_eq!(m.peek_next_id(), a + 1);
        let b = m.insert(Statement::new(vec![], Class::Read, 0)).unwrap();
        assert_ne!(a, b);
    }
}
