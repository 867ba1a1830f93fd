//! A minimal fake MySQL 8 server, standing in for the real one (no MySQL 8
//! is installable here): the MySQL 8.4 greeting with caching_sha2_password,
//! fast authentication (`01 03`) for accounts in its cache, full
//! authentication (`01 04`) otherwise — the password in cleartext over
//! TLS, or RSA-OAEP(SHA-1) of `(pw ‖ NUL) XOR nonce` without TLS, with the
//! key sent on request `02` — then OK to every command. It records which
//! path each login took. `tests/tls_caching_sha2.rs` checks it with PyMySQL
//! (which implements every path) before testing cutover against it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use cutover::wire::PacketIo;
use mysql_common::io::ParseBuf;
use mysql_common::packets::HandshakeResponse;
use mysql_common::proto::MyDeserialize;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use tokio::net::TcpListener;

/// How the fake behaves.
#[derive(Clone)]
pub struct Options {
    pub user: String,
    pub password: String,
    /// Offer TLS (CLIENT_SSL) with this server configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Switch every login to this plugin first (to test refusals), instead
    /// of caching_sha2_password.
    pub switch_to: Option<String>,
}

/// Which authentication path a login took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// Scramble matched the cache: `01 03`.
    Fast,
    /// `01 04`, password over TLS.
    FullTls,
    /// `01 04`, client asked for the key (`02`), then RSA.
    FullRsaRequested,
    /// `01 04`, client sent RSA with a key it already had.
    FullRsaConfigured,
    /// Wrong password or user (ERR 1045).
    Denied,
    /// Switched to another plugin and closed.
    Switched(String),
}

pub struct FakeMysql8 {
    pub port: u16,
    pub public_key_pem: String,
    paths: Arc<Mutex<Vec<Path>>>,
    cache: Arc<Mutex<HashSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    opts: Options,
    key: RsaPrivateKey,
    paths: Arc<Mutex<Vec<Path>>>,
    cache: Arc<Mutex<HashSet<String>>>,
}

impl FakeMysql8 {
    pub async fn start(opts: Options) -> FakeMysql8 {
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let public_key_pem = RsaPublicKey::from(&key)
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let cache = Arc::new(Mutex::new(HashSet::new()));
        let shared = Arc::new(Shared {
            opts,
            key,
            paths: paths.clone(),
            cache: cache.clone(),
        });
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(PacketIo::new(stream), &shared).await {
                        eprintln!("fake MySQL 8: connection ended: {e}");
                    }
                });
            }
        });
        FakeMysql8 {
            port,
            public_key_pem,
            paths,
            cache,
            task,
        }
    }

    /// The paths taken so far, in order.
    pub fn paths(&self) -> Vec<Path> {
        self.paths.lock().unwrap().clone()
    }

    /// Forget cached accounts (like a MySQL 8 restart).
    pub fn flush_cache(&self) {
        self.cache.lock().unwrap().clear();
    }
}

impl Drop for FakeMysql8 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const CAPS: u32 = 0xdfff_ffff & !(1 << 5) & !(1 << 11); // no COMPRESS; SSL only when offered

fn nonce() -> Vec<u8> {
    use rand::Rng;
    let mut r = rand::thread_rng();
    (0..20).map(|_| r.gen_range(0x21u8..0x7f)).collect()
}

fn greeting(nonce: &[u8], tls: bool) -> Vec<u8> {
    let caps = CAPS | if tls { 1 << 11 } else { 0 };
    let mut p = vec![10u8];
    p.extend_from_slice(b"8.4.0-fake\0");
    p.extend_from_slice(&7u32.to_le_bytes());
    p.extend_from_slice(&nonce[..8]);
    p.push(0);
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(255);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(&nonce[8..]);
    p.push(0);
    p.extend_from_slice(b"caching_sha2_password\0");
    p
}

fn ok() -> Vec<u8> {
    vec![0, 0, 0, 2, 0, 0, 0]
}

fn denied(user: &str) -> Vec<u8> {
    let mut p = vec![0xFF];
    p.extend_from_slice(&1045u16.to_le_bytes());
    p.extend_from_slice(b"#28000");
    p.extend_from_slice(
        format!("Access denied for user '{user}'@'localhost' (using password: YES)").as_bytes(),
    );
    p
}

async fn read(io: &mut PacketIo) -> std::io::Result<(Vec<u8>, u8)> {
    let f = io.expect_frame().await?;
    Ok((f.payload().to_vec(), f.seq().wrapping_add(1)))
}

async fn serve(mut io: PacketIo, s: &Shared) -> std::io::Result<()> {
    let nonce = nonce();
    io.send_packet(0, &greeting(&nonce, s.opts.tls.is_some()))
        .await?;
    let (mut resp, mut seq) = read(&mut io).await?;
    let caps = u32::from_le_bytes(resp[..4].try_into().unwrap());
    if caps & (1 << 11) != 0 && resp.len() == 32 {
        let cfg = s
            .opts
            .tls
            .clone()
            .expect("client asked for TLS that was not offered");
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        io.upgrade(|t| acceptor.accept(t)).await?;
        (resp, seq) = read(&mut io).await?;
    }
    let hs = HandshakeResponse::deserialize((), &mut ParseBuf(&resp))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let user = String::from_utf8_lossy(hs.user()).into_owned();
    let mut answer = hs.scramble_buf().to_vec();
    let plugin = hs.auth_plugin().map(|p| p.as_bytes().to_vec());
    if let Some(other) = &s.opts.switch_to {
        let mut sw = vec![0xFE];
        sw.extend_from_slice(other.as_bytes());
        sw.push(0);
        sw.extend_from_slice(&nonce);
        sw.push(0);
        io.send_packet(seq, &sw).await?;
        s.paths.lock().unwrap().push(Path::Switched(other.clone()));
        let _ = read(&mut io).await;
        return Ok(());
    }
    if plugin.as_deref() != Some(b"caching_sha2_password") {
        let mut sw = b"\xFEcaching_sha2_password\0".to_vec();
        sw.extend_from_slice(&nonce);
        sw.push(0);
        io.send_packet(seq, &sw).await?;
        (answer, seq) = read(&mut io).await?;
    }
    let (path, seq) = authenticate(&mut io, s, &user, &nonce, &answer, seq).await?;
    let reply = if path == Path::Denied {
        denied(&user)
    } else {
        ok()
    };
    s.paths.lock().unwrap().push(path.clone());
    io.send_packet(seq, &reply).await?;
    if path == Path::Denied {
        return Ok(());
    }
    s.cache.lock().unwrap().insert(user);
    loop {
        let Some(f) = io.read_frame().await? else {
            return Ok(());
        };
        match f.payload().first() {
            Some(0x01) => return Ok(()), // COM_QUIT
            _ => {
                io.send_packet(1, &ok()).await?;
            }
        }
    }
}

async fn authenticate(
    io: &mut PacketIo,
    s: &Shared,
    user: &str,
    nonce: &[u8],
    scramble: &[u8],
    seq: u8,
) -> std::io::Result<(Path, u8)> {
    let right_user = user == s.opts.user;
    let expected = mysql_common::scramble::scramble_sha256(nonce, s.opts.password.as_bytes());
    let cached = s.cache.lock().unwrap().contains(user);
    if right_user && cached {
        if expected.map(|e| e.to_vec()) != Some(scramble.to_vec()) {
            return Ok((Path::Denied, seq));
        }
        let seq = io.send_packet(seq, &[1, 3]).await?;
        return Ok((Path::Fast, seq));
    }
    io.send_packet(seq, &[1, 4]).await?;
    let (mut pkt, mut seq) = read(io).await?;
    let (password, path) = if io.is_secure() {
        pkt.pop_if(|b| *b == 0);
        (pkt, Path::FullTls)
    } else {
        let path = if pkt == [2] {
            let mut key = vec![1u8];
            key.extend_from_slice(s.public_key_pem().as_bytes());
            io.send_packet(seq, &key).await?;
            (pkt, seq) = read(io).await?;
            Path::FullRsaRequested
        } else {
            Path::FullRsaConfigured
        };
        let plain = s
            .key
            .decrypt(Oaep::new::<sha1::Sha1>(), &pkt)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        let mut pw: Vec<u8> = plain
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ nonce[i % nonce.len()])
            .collect();
        pw.pop_if(|b| *b == 0);
        (pw, path)
    };
    if right_user && password == s.opts.password.as_bytes() {
        Ok((path, seq))
    } else {
        Ok((Path::Denied, seq))
    }
}

impl Shared {
    fn public_key_pem(&self) -> String {
        RsaPublicKey::from(&self.key)
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }
}

/// A rustls server configuration from PEM files (for `Options::tls`).
pub fn server_tls(cert: &std::path::Path, key: &std::path::Path) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    Arc::new(cfg)
}
