//! cutover logging in to a backend: the answer to the greeting, then every
//! packet of the authentication exchange until OK or ERR (MySQL
//! Client/Server Protocol, "Authentication Method Switch", "Caching_sha2
//! fast / full authentication").

use rsa::RsaPublicKey;

use super::{caching_sha2, clear, ed25519, native, Credentials, Plugin, Secret};
use crate::error::BackendError;
use crate::pattern::Side;
use crate::wire::{self, PacketIo};

/// One login's authentication state.
pub struct Exchange<'a> {
    side: Side,
    creds: &'a Credentials,
    /// The connection is TLS: cleartext passwords may be sent.
    secure: bool,
    /// `server_public_key`, if configured.
    server_key: Option<&'a RsaPublicKey>,
    plugin: Plugin,
    nonce: Vec<u8>,
    /// caching_sha2 asked the server for its public key (`02`).
    awaiting_key: bool,
}

impl<'a> Exchange<'a> {
    /// Authentication as `creds` on a connection that is (`secure`) or is
    /// not TLS.
    pub fn new(
        side: Side,
        creds: &'a Credentials,
        secure: bool,
        server_key: Option<&'a RsaPublicKey>,
    ) -> Self {
        Exchange {
            side,
            creds,
            secure,
            server_key,
            plugin: Plugin::Native,
            nonce: Vec::new(),
            awaiting_key: false,
        }
    }

    /// The plugin named in the handshake response and its answer to the
    /// greeting's `nonce`. A plugin cutover cannot answer up front (unknown,
    /// or cleartext without TLS, or any but mysql_native_password for a
    /// pass-through login, which knows only the native hash) is answered as
    /// mysql_native_password: the server then switches to the account's
    /// plugin, where a clear error can name it.
    pub fn first(&mut self, plugin: Option<&[u8]>, nonce: &[u8]) -> (Plugin, Vec<u8>) {
        let chosen = match plugin.and_then(Plugin::from_name) {
            _ if self.creds.known_password().is_none() => Plugin::Native,
            Some(Plugin::Clear) if !self.secure => Plugin::Native,
            Some(Plugin::Ed25519) | None => Plugin::Native, // ed25519 needs the switch's message
            Some(p) => p,
        };
        self.plugin = chosen;
        self.nonce = nonce.to_vec();
        let answer = self.answer(chosen, nonce).unwrap_or_default();
        (chosen, answer)
    }

    /// The account's password; refused (naming `plugin`) for a pass-through
    /// login, which knows only SHA1(password).
    fn password(&self, plugin: Plugin) -> Result<&'a str, BackendError> {
        self.creds.known_password().ok_or_else(|| {
            self.refuse(
                plugin.as_str(),
                "a pass-through login proves itself with the mysql_native_password hash only; \
                 give this account mysql_native_password on the backends, or list it in [[users]]",
            )
        })
    }

    fn answer(&self, plugin: Plugin, nonce: &[u8]) -> Result<Vec<u8>, BackendError> {
        if let (Plugin::Native, Secret::NativeHash(stage1)) = (plugin, &self.creds.secret) {
            return Ok(native::answer_from_hash(nonce, stage1).to_vec());
        }
        let pw = self.password(plugin)?;
        Ok(match plugin {
            Plugin::Native => native::scramble(nonce, pw),
            Plugin::CachingSha2 => caching_sha2::scramble(nonce, pw),
            Plugin::Ed25519 => ed25519::sign(nonce, pw),
            Plugin::Clear if self.secure => clear::answer(pw),
            Plugin::Clear => {
                return Err(self.refuse(
                    plugin.as_str(),
                    "it sends the password in cleartext, which cutover does only over TLS; \
                     set ssl_mode = \"verify_identity\" (or required) for this backend",
                ))
            }
        })
    }

    fn refuse(&self, plugin: &str, why: &str) -> BackendError {
        BackendError::Auth {
            side: self.side,
            user: self.creds.user.clone(),
            plugin: plugin.to_string(),
            reason: why.to_string(),
        }
    }

    /// Answer an AuthSwitchRequest (`FE` stripped: `plugin NUL data`).
    ///
    /// # Errors
    /// [`BackendError::Auth`] naming the plugin when cutover cannot answer it.
    pub fn switch(&mut self, request: &[u8]) -> Result<Vec<u8>, BackendError> {
        let nul = request.iter().position(|&b| b == 0);
        let Some(nul) = nul else {
            let name = String::from_utf8_lossy(request);
            let name = if name.is_empty() {
                "mysql_old_password".into()
            } else {
                name
            };
            return Err(self.refuse(&name, "cutover cannot answer it"));
        };
        let name = &request[..nul];
        let Some(plugin) = Plugin::from_name(name) else {
            let supported = "cutover supports mysql_native_password, caching_sha2_password, \
                             client_ed25519 and mysql_clear_password (over TLS)";
            return Err(self.refuse(&String::from_utf8_lossy(name), supported));
        };
        let data = switch_data(plugin, &request[nul + 1..]);
        self.plugin = plugin;
        self.nonce = data.to_vec();
        self.awaiting_key = false;
        self.answer(plugin, data)
    }

    /// An `01` packet (more authentication data, `01` stripped); `Some` is
    /// the answer to send, `None` means wait for the next packet.
    ///
    /// # Errors
    /// [`BackendError::Auth`] for data the plugin does not expect or a
    /// public key that does not parse or fit.
    pub fn more_data(&mut self, data: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        if self.plugin != Plugin::CachingSha2 {
            return Err(self.refuse(self.plugin.as_str(), "unexpected extra authentication data"));
        }
        let pw = self.password(Plugin::CachingSha2)?;
        if self.awaiting_key {
            self.awaiting_key = false;
            let key = caching_sha2::parse_public_key(data).map_err(|e| {
                self.refuse("caching_sha2_password", &format!("server public key: {e}"))
            })?;
            return self.sealed(&key).map(Some);
        }
        match data {
            [caching_sha2::FAST_AUTH_OK] => Ok(None),
            [caching_sha2::FULL_AUTH] if self.secure => Ok(Some(clear::answer(pw))),
            [caching_sha2::FULL_AUTH] => match self.server_key {
                Some(key) => self.sealed(key).map(Some),
                None => {
                    self.awaiting_key = true;
                    Ok(Some(vec![caching_sha2::REQUEST_PUBLIC_KEY]))
                }
            },
            _ => Err(self.refuse("caching_sha2_password", "unexpected authentication data")),
        }
    }

    fn sealed(&self, key: &RsaPublicKey) -> Result<Vec<u8>, BackendError> {
        caching_sha2::encrypt_password(self.password(Plugin::CachingSha2)?, &self.nonce, key)
            .map_err(|e| self.refuse("caching_sha2_password", &e))
    }
}

/// The plugin data of an AuthSwitchRequest as the plugin must see it.
/// mysql_native_password and caching_sha2_password send the 20-byte
/// scramble NUL-terminated (MySQL sql_acl.cc: `SCRAMBLE_LENGTH + 1`);
/// MariaDB's `auth_ed25519` sends its 32 random bytes as they are, so a
/// message whose last byte is 0 (1 login in 256) must keep it.
fn switch_data(plugin: Plugin, data: &[u8]) -> &[u8] {
    match (plugin, data) {
        (Plugin::Ed25519, _) => data,
        (_, [head @ .., 0]) => head,
        _ => data,
    }
}

/// Read the server's answers and reply until OK (returns its status flags)
/// or ERR.
///
/// # Errors
/// [`BackendError::Server`] for a refused login (ERR relayed), as
/// [`Exchange::switch`] / [`Exchange::more_data`], [`BackendError::Io`] when
/// the connection breaks, [`BackendError::Protocol`] for a packet that
/// belongs to no authentication step.
pub async fn authenticate(io: &mut PacketIo, ex: &mut Exchange<'_>) -> Result<u16, BackendError> {
    let side = ex.side;
    let io_err = |source| BackendError::Io { side, source };
    loop {
        let reply = io.expect_frame().await.map_err(io_err)?;
        let seq = reply.seq().wrapping_add(1);
        let p = reply.payload();
        let answer = match p.first() {
            Some(0x00) => return Ok(wire::parse_ok(p).map(|o| o.status).unwrap_or(0)),
            Some(0xFF) => {
                return Err(BackendError::Server {
                    side,
                    err: wire::parse_err(p),
                })
            }
            Some(0xFE) => Some(ex.switch(&p[1..])?),
            Some(0x01) => ex.more_data(&p[1..])?,
            _ => {
                let reason = "unexpected packet during authentication".into();
                return Err(BackendError::Protocol { side, reason });
            }
        };
        if let Some(answer) = answer {
            io.send_packet(seq, &answer).await.map_err(io_err)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(secure: bool) -> Exchange<'static> {
        let creds = Box::leak(Box::new(Credentials::password("app", "secret")));
        Exchange::new(Side::Destination, creds, secure, None)
    }

    #[test]
    fn a_pass_through_hash_answers_native_only() {
        let stage1 = [7u8; 20];
        let creds = Box::leak(Box::new(Credentials {
            user: "pt".into(),
            secret: Secret::NativeHash(stage1),
        }));
        let nonce = [5u8; 20];
        let mut e = Exchange::new(Side::Source, creds, true, None);
        let (p, a) = e.first(Some(b"caching_sha2_password"), &nonce);
        assert_eq!(
            (p, a),
            (
                Plugin::Native,
                native::answer_from_hash(&nonce, &stage1).to_vec()
            )
        );
        let mut native = b"mysql_native_password\0".to_vec();
        native.extend_from_slice(&[3; 20]);
        native.push(0);
        assert_eq!(
            e.switch(&native).unwrap(),
            native::answer_from_hash(&[3; 20], &stage1).to_vec()
        );
        let mut ed = b"client_ed25519\0".to_vec();
        ed.extend_from_slice(&[9; 32]);
        let err = e.switch(&ed).unwrap_err().to_string();
        assert!(
            err.contains("client_ed25519") && err.contains("pt"),
            "{err}"
        );
        let err = e
            .switch(b"caching_sha2_password\0abcdefghijklmnopqrst\0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("caching_sha2_password"), "{err}");
    }

    #[test]
    fn first_answer_follows_the_greeting_plugin() {
        let nonce = [5u8; 20];
        let (p, a) = ex(false).first(Some(b"caching_sha2_password"), &nonce);
        assert_eq!(
            (p, a),
            (
                Plugin::CachingSha2,
                caching_sha2::scramble(&nonce, "secret")
            )
        );
        let (p, a) = ex(false).first(Some(b"mysql_native_password"), &nonce);
        assert_eq!((p, a.len()), (Plugin::Native, 20));
        assert_eq!(
            ex(false).first(Some(b"sha256_password"), &nonce).0,
            Plugin::Native
        );
        assert_eq!(
            ex(false).first(Some(b"mysql_clear_password"), &nonce).0,
            Plugin::Native
        );
        let (p, a) = ex(true).first(Some(b"mysql_clear_password"), &nonce);
        assert_eq!((p, a), (Plugin::Clear, b"secret\0".to_vec()));
    }

    #[test]
    fn caching_sha2_full_auth_paths() {
        let mut plain = ex(false);
        plain.first(Some(b"caching_sha2_password"), &[1; 20]);
        assert_eq!(
            plain.more_data(&[3]).unwrap(),
            None,
            "fast auth: wait for the OK"
        );
        assert_eq!(
            plain.more_data(&[4]).unwrap(),
            Some(vec![2]),
            "ask for the key"
        );
        let e = plain.more_data(b"not a key").unwrap_err().to_string();
        assert!(
            e.contains("caching_sha2_password") && e.contains("destination"),
            "{e}"
        );

        let mut tls = ex(true);
        tls.first(Some(b"caching_sha2_password"), &[1; 20]);
        assert_eq!(tls.more_data(&[4]).unwrap(), Some(b"secret\0".to_vec()));
    }

    #[test]
    fn an_ed25519_message_ending_in_nul_is_signed_whole() {
        let mut msg = [0x5a_u8; 32];
        msg[31] = 0;
        let mut request = b"client_ed25519\0".to_vec();
        request.extend_from_slice(&msg);
        let sig = ex(false).switch(&request).unwrap();
        assert_eq!(sig, ed25519::sign(&msg, "secret"), "all 32 bytes signed");
        assert_ne!(sig, ed25519::sign(&msg[..31], "secret"));
        let mut native = b"mysql_native_password\0".to_vec();
        native.extend_from_slice(&[3; 20]);
        native.push(0);
        assert_eq!(
            ex(false).switch(&native).unwrap(),
            native::scramble(&[3; 20], "secret"),
            "the native scramble's NUL terminator is not part of it"
        );
    }

    #[test]
    fn switches_name_the_plugin_when_refused() {
        let mut e = ex(false);
        let sig = e
            .switch(b"client_ed25519\0abcdefghijklmnopqrstuvwxyz012345")
            .unwrap();
        assert_eq!(sig.len(), 64);
        let err = e.switch(b"mysql_clear_password\0").unwrap_err().to_string();
        assert!(
            err.contains("mysql_clear_password") && err.contains("TLS"),
            "{err}"
        );
        let err = e
            .switch(b"auth_gssapi_client\0x\0")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth_gssapi_client")
                && err.contains("destination")
                && err.contains("app"),
            "{err}"
        );
        let err = e.switch(b"").unwrap_err().to_string();
        assert!(err.contains("mysql_old_password"), "{err}");
        assert_eq!(
            ex(true).switch(b"mysql_clear_password\0").unwrap(),
            b"secret\0"
        );
    }
}
