//! TLS for the front door and the `share` client: a rustls stream that two threads use at once.
//!
//! The relay moves bytes with one thread per direction, so a connection needs a
//! reading handle and a writing handle at the same time (`try_clone`). rustls's
//! own `StreamOwned` has one owner, so `TlsStream` shares the rustls state behind
//! a mutex that is never held across a blocking socket call: a reader holding the
//! lock while it waits for the network would stall the writer, and two peers
//! both writing into full buffers would deadlock. Encrypted output is queued in
//! order under the state lock and written to the socket under a separate lock by
//! whoever gets there, so records reach the wire in the order they were sealed.

use crate::sync::lock;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, TryLockError};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConnection;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};

/// Longest a TLS handshake may take, like the front door's head-read limit.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Ciphertext read from the socket in one go.
const READ_CHUNK: usize = 16 * 1024;

/// A socket whose every read and write ends by one deadline: rustls's
/// `complete_io` reads as often as it likes, and a per-read timeout would let
/// a byte every few seconds hold the handshake open for ever.
struct ByDeadline<'a> {
    tcp: &'a TcpStream,
    deadline: Instant,
}

impl ByDeadline<'_> {
    /// The time left, set as the socket's timeouts; an error once it is up.
    fn arm(&self) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the TLS handshake did not finish in time",
            ));
        }
        self.tcp.set_read_timeout(Some(left))?;
        self.tcp.set_write_timeout(Some(left))
    }
}

impl Read for ByDeadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        self.tcp.read(buf)
    }
}

impl Write for ByDeadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm()?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// The rustls state and the ciphertext read but not yet taken by rustls.
struct State {
    conn: Connection,
    inbound: Vec<u8>,
}

struct Shared {
    state: Mutex<State>,
    /// Sealed records not yet on the wire, in order.
    outbound: Mutex<Vec<u8>>,
    /// Held by whoever is writing `outbound` to the socket.
    wire: Mutex<TcpStream>,
}

/// A TLS connection over a blocking `TcpStream`; clones share the session.
pub struct TlsStream {
    tcp: TcpStream,
    shared: Arc<Shared>,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsStream {
    /// Run the handshake to completion by `deadline` and wrap the socket.
    fn establish(
        conn: impl Into<Connection>,
        tcp: TcpStream,
        deadline: Instant,
    ) -> io::Result<TlsStream> {
        let mut conn = conn.into();
        let mut socket = ByDeadline {
            tcp: &tcp,
            deadline,
        };
        while conn.is_handshaking() {
            conn.complete_io(&mut socket)?;
        }
        tcp.set_read_timeout(None)?;
        tcp.set_write_timeout(None)?;
        let wire = tcp.try_clone()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                conn,
                inbound: Vec::new(),
            }),
            outbound: Mutex::new(Vec::new()),
            wire: Mutex::new(wire),
        });
        Ok(TlsStream { tcp, shared })
    }

    /// The server side of a freshly accepted connection, its handshake done by
    /// `deadline` (the front door's one deadline for the handshake and the
    /// first request head, so a client trickling bytes cannot stretch it).
    pub fn accept(
        config: Arc<ServerConfig>,
        tcp: TcpStream,
        deadline: Instant,
    ) -> io::Result<TlsStream> {
        let conn = ServerConnection::new(config).map_err(tls_error)?;
        TlsStream::establish(conn, tcp, deadline)
    }

    /// The client side: `host` is checked against the server's certificate.
    pub fn connect(config: Arc<ClientConfig>, host: &str, tcp: TcpStream) -> io::Result<TlsStream> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = ClientConnection::new(config, name).map_err(tls_error)?;
        TlsStream::establish(conn, tcp, Instant::now() + HANDSHAKE_TIMEOUT)
    }

    /// Another handle on the same session, for the other direction.
    pub fn try_clone(&self) -> io::Result<TlsStream> {
        Ok(TlsStream {
            tcp: self.tcp.try_clone()?,
            shared: Arc::clone(&self.shared),
        })
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }

    /// Queue whatever rustls has sealed; called with the state locked, so order holds.
    fn seal(&self, conn: &mut Connection) -> io::Result<()> {
        let mut outbound = lock(&self.shared.outbound);
        while conn.wants_write() {
            conn.write_tls(&mut *outbound)?;
        }
        Ok(())
    }

    /// Put queued records on the wire. A reader passes `wait = false`: if a
    /// writer holds the wire it will also send what the reader queued, because
    /// it looks at the queue again after letting go.
    fn send(&self, wait: bool) -> io::Result<()> {
        loop {
            let mut wire = if wait {
                lock(&self.shared.wire)
            } else {
                match self.shared.wire.try_lock() {
                    Ok(guard) => guard,
                    Err(TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(TryLockError::WouldBlock) => return Ok(()),
                }
            };
            loop {
                let chunk = std::mem::take(&mut *lock(&self.shared.outbound));
                if chunk.is_empty() {
                    break;
                }
                wire.write_all(&chunk)?;
            }
            drop(wire);
            if lock(&self.shared.outbound).is_empty() {
                return Ok(());
            }
        }
    }

    /// Feed buffered ciphertext to rustls and take out plaintext if there is some.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let mut state = lock(&self.shared.state);
        let State { conn, inbound } = &mut *state;
        while !inbound.is_empty() {
            let mut rest = &inbound[..];
            match conn.read_tls(&mut rest) {
                Ok(used) => {
                    inbound.drain(..used);
                }
                // rustls's plaintext buffer is full: hand some out first.
                Err(_) => break,
            }
            if let Err(e) = conn.process_new_packets() {
                let _ = self.seal(conn);
                drop(state);
                let _ = self.send(false);
                return Err(tls_error(e));
            }
        }
        self.seal(conn)?;
        let read = match conn.reader().read(buf) {
            Ok(n) => Some(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            // The peer closed the socket without close_notify: an end all the same.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Some(0),
            Err(e) => return Err(e),
        };
        Ok(read)
    }
}

impl Read for &TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut budget = ReadBudget::new(&self.tcp);
        let read = self.read_within(buf, &mut budget);
        budget.restore()?;
        read
    }
}

/// How long a plaintext read may gather ciphertext pieces before the time
/// they take counts against the socket's timeout.
const REARM_AFTER: Duration = Duration::from_millis(50);

/// The socket's read timeout as the bound on one whole plaintext read, not
/// on each piece of ciphertext: a record sent a byte at a time must not
/// stretch a head's deadline without end. Only a read that needs a second
/// piece pays for looking the timeout up and setting what is left of it.
struct ReadBudget<'a> {
    tcp: &'a TcpStream,
    started: Instant,
    /// The socket's own timeout, once looked up, and whether it was changed.
    timeout: Option<Option<Duration>>,
    changed: bool,
}

impl<'a> ReadBudget<'a> {
    fn new(tcp: &'a TcpStream) -> ReadBudget<'a> {
        ReadBudget {
            tcp,
            started: Instant::now(),
            timeout: None,
            changed: false,
        }
    }

    /// Before another socket read within the same plaintext read: set what
    /// is left of the timeout, or time out. Pieces that follow each other
    /// quickly (a bulk transfer) cost no system call: the bound is then the
    /// timeout and at most `REARM_AFTER`.
    fn again(&mut self) -> io::Result<()> {
        if self.started.elapsed() < REARM_AFTER {
            return Ok(());
        }
        let timeout = match self.timeout {
            Some(timeout) => timeout,
            None => *self.timeout.insert(self.tcp.read_timeout()?),
        };
        let Some(timeout) = timeout else {
            return Ok(());
        };
        let left = timeout.saturating_sub(self.started.elapsed());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.changed = true;
        self.tcp.set_read_timeout(Some(left))
    }

    /// Put the socket's own timeout back, if it was changed.
    fn restore(self) -> io::Result<()> {
        match self.timeout {
            Some(timeout) if self.changed => self.tcp.set_read_timeout(timeout),
            _ => Ok(()),
        }
    }
}

impl TlsStream {
    fn read_within(&self, buf: &mut [u8], budget: &mut ReadBudget) -> io::Result<usize> {
        let mut pieces = 0;
        loop {
            let got = self.try_read(buf)?;
            self.send(false)?;
            if let Some(n) = got {
                return Ok(n);
            }
            if pieces > 0 {
                budget.again()?;
            }
            pieces += 1;
            let mut chunk = [0u8; READ_CHUNK];
            let n = match (&self.tcp).read(&mut chunk) {
                // Part of a record came, the rest not in time: say so apart
                // from a socket that stayed silent (`WouldBlock`).
                Err(e) if pieces > 1 && crate::proxy::is_timeout_kind(e.kind()) => {
                    return Err(io::ErrorKind::TimedOut.into())
                }
                other => other?,
            };
            let mut state = lock(&self.shared.state);
            if n == 0 {
                // Tell rustls the socket ended; its reader then says how.
                state.conn.read_tls(&mut &[][..])?;
            } else {
                state.inbound.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

impl Write for &TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = {
            let mut state = lock(&self.shared.state);
            let written = state.conn.writer().write(buf)?;
            self.seal(&mut state.conn)?;
            written
        };
        self.send(true)?;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send(true)
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

impl TlsStream {
    /// Close one or both directions; closing the write side sends close_notify first.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            let mut state = lock(&self.shared.state);
            state.conn.send_close_notify();
            let _ = self.seal(&mut state.conn);
            drop(state);
            let _ = self.send(true);
        }
        self.tcp.shutdown(how)
    }
}

/// The server's certificate, read from PEM files and re-read on demand (SIGHUP).
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertFiles {
    /// Load the chain and key; errors name the file and what to do.
    pub fn load(cert: &Path, key: &Path) -> Result<CertFiles, String> {
        let current = certified_key(cert, key)?;
        Ok(CertFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(current)),
        })
    }

    /// The DNS names the certificate in use is for (`*.` wildcards included).
    pub fn dns_names(&self) -> Vec<String> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        let Some(leaf) = current.cert.first() else {
            return Vec::new();
        };
        match webpki::EndEntityCert::try_from(leaf) {
            Ok(cert) => cert
                .valid_dns_names()
                .map(str::to_ascii_lowercase)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Read the files again; on failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = certified_key(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(())
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // One certificate (a wildcard for tunnels) answers every name.
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let pem = fs::read(cert).map_err(|e| {
        format!(
            "Could not read the TLS certificate {}: {e}.",
            cert.display()
        )
    })?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate chain: {e}.", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "No certificate found in {}; --tls-cert needs the PEM certificate chain.",
            cert.display()
        ));
    }
    let pem =
        fs::read(key).map_err(|e| format!("Could not read the TLS key {}: {e}.", key.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!(
            "No private key found in {} ({e}); --tls-key needs a PEM key.",
            key.display()
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key_der, &provider).map_err(|e| {
        format!(
            "The key in {} does not fit the certificate in {}: {e}.",
            key.display(),
            cert.display()
        )
    })
}

/// The front door's TLS settings around a reloadable certificate.
pub fn server_config(certs: Arc<CertFiles>) -> Arc<ServerConfig> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What the CLI trusts: the system's roots, or only the CAs in the given PEM file.
pub fn trusted(ca_cert: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, String> {
    let Some(path) = ca_cert else {
        return Ok(rustls_native_certs::load_native_certs().certs);
    };
    let pem = fs::read(path)
        .map_err(|e| format!("Could not read the CA certificate {}: {e}.", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate: {e}.", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "No PEM certificate found in {}; --ca-cert needs the CA certificate as PEM.",
            path.display()
        ));
    }
    Ok(certs)
}

/// The `share` client's TLS settings, trusting `certs`.
pub fn client_config(certs: Vec<CertificateDer<'static>>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(certs);
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::net::TcpListener;
    use std::process::Command;
    use std::thread;

    /// A throwaway CA and a leaf for localhost, *.localhost and 127.0.0.1, made by openssl.
    pub struct TestPki {
        pub dir: tempfile::TempDir,
    }

    impl TestPki {
        pub fn new() -> TestPki {
            let dir = tempfile::tempdir().unwrap();
            let sh = r#"set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -days 2 -subj /CN=berth-test-ca -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out leaf.csr \
  -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost,DNS:*.localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 \
  -extfile ext 2>/dev/null
"#;
            let status = Command::new("sh")
                .args(["-c", sh])
                .current_dir(dir.path())
                .status()
                .expect("openssl runs");
            assert!(status.success(), "openssl made the test certificates");
            TestPki { dir }
        }

        pub fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    fn pair(pki: &TestPki, ca: &Path) -> io::Result<(TlsStream, TlsStream)> {
        let certs = Arc::new(CertFiles::load(&pki.path("cert.pem"), &pki.path("key.pem")).unwrap());
        let config = server_config(certs);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = thread::spawn(move || {
            let (tcp, _) = listener.accept()?;
            TlsStream::accept(config, tcp, Instant::now() + HANDSHAKE_TIMEOUT)
        });
        let client = client_config(trusted(Some(ca)).unwrap());
        let client = TlsStream::connect(client, "localhost", TcpStream::connect(addr)?);
        let server = server.join().unwrap();
        Ok((client?, server?))
    }

    /// Write `len` bytes of a pattern from one handle while another reads; return the digests.
    fn both_ways(stream: TlsStream, len: usize) -> (Vec<u8>, Vec<u8>) {
        let mut writer = stream.try_clone().unwrap();
        let sent = thread::spawn(move || {
            let mut hash = Sha256::new();
            let block: Vec<u8> = (0..65_536u32).map(|i| (i * 7 % 251) as u8).collect();
            let mut left = len;
            while left > 0 {
                let n = left.min(block.len());
                writer.write_all(&block[..n]).unwrap();
                hash.update(&block[..n]);
                left -= n;
            }
            writer.shutdown(Shutdown::Write).unwrap();
            hash.finalize().to_vec()
        });
        let mut reader = stream;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 10_000];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
        }
        (sent.join().unwrap(), hash.finalize().to_vec())
    }

    #[test]
    fn bulk_both_ways_at_once_arrives_intact() {
        let pki = TestPki::new();
        let (client, server) = pair(&pki, &pki.path("ca.pem")).unwrap();
        // Both peers write 8 MiB before reading a byte: a lock held across a
        // blocking write would deadlock here.
        let len = 8 << 20;
        let far = thread::spawn(move || both_ways(server, len));
        let (client_sent, client_got) = both_ways(client, len);
        let (server_sent, server_got) = far.join().unwrap();
        assert_eq!(client_sent, server_got);
        assert_eq!(server_sent, client_got);
    }

    #[test]
    fn an_unknown_issuer_is_refused() {
        let pki = TestPki::new();
        let other = TestPki::new();
        let err = pair(&pki, &other.path("ca.pem"))
            .err()
            .expect("handshake fails");
        assert!(
            err.to_string().contains("invalid peer certificate"),
            "{err}"
        );
    }

    #[test]
    fn reload_swaps_the_certificate_and_keeps_it_on_failure() {
        let first = TestPki::new();
        let second = TestPki::new();
        let certs = CertFiles::load(&first.path("cert.pem"), &first.path("key.pem")).unwrap();
        let before = certs.current.read().unwrap().cert[0].clone();
        fs::copy(second.path("cert.pem"), first.path("cert.pem")).unwrap();
        fs::copy(second.path("key.pem"), first.path("key.pem")).unwrap();
        certs.reload().unwrap();
        let after = certs.current.read().unwrap().cert[0].clone();
        assert_ne!(before, after);
        fs::write(first.path("key.pem"), "not a key").unwrap();
        let err = certs.reload().unwrap_err();
        assert!(err.contains("No private key found"), "{err}");
        assert_eq!(certs.current.read().unwrap().cert[0], after);
    }

    #[test]
    fn bad_files_get_sentences() {
        let pki = TestPki::new();
        let missing = CertFiles::load(&pki.path("nope.pem"), &pki.path("key.pem")).unwrap_err();
        assert!(
            missing.contains("Could not read the TLS certificate"),
            "{missing}"
        );
        let other = TestPki::new();
        let mismatch = CertFiles::load(&pki.path("cert.pem"), &other.path("key.pem")).unwrap_err();
        assert!(mismatch.contains("does not fit"), "{mismatch}");
        let empty = trusted(Some(&pki.path("ext"))).unwrap_err();
        assert!(empty.contains("No PEM certificate found"), "{empty}");
    }
}
