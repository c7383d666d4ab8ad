//! TLS for the front door and the `share` client: the certificates the server
//! serves (reloaded on SIGHUP), the roots a client trusts, and the rustls
//! configurations tokio-rustls runs connections with (see `crate::wire::conn`).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

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
    use rustls::pki_types::ServerName;
    use sha2::{Digest, Sha256};
    use std::io;
    use std::process::Command;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    type Tls = tokio_rustls::TlsStream<tokio::net::TcpStream>;

    /// A TLS connection on loopback: (client, server) ends, the client
    /// trusting the roots in `ca`.
    async fn pair(pki: &TestPki, ca: &Path) -> io::Result<(Tls, Tls)> {
        let certs = Arc::new(CertFiles::load(&pki.path("cert.pem"), &pki.path("key.pem")).unwrap());
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(certs));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            acceptor.accept(tcp).await
        });
        let connector = tokio_rustls::TlsConnector::from(client_config(trusted(Some(ca)).unwrap()));
        let name = ServerName::try_from("localhost").unwrap();
        let client = connector
            .connect(name, tokio::net::TcpStream::connect(addr).await?)
            .await;
        let server = server.await.unwrap();
        Ok((client?.into(), server?.into()))
    }

    /// Write `len` bytes of a pattern while reading what the peer sends; the
    /// digests of what was sent and what was read.
    async fn both_ways(stream: Tls, len: usize) -> (Vec<u8>, Vec<u8>) {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let sent = tokio::spawn(async move {
            let mut hash = Sha256::new();
            let block: Vec<u8> = (0..65_536u32).map(|i| (i * 7 % 251) as u8).collect();
            let mut left = len;
            while left > 0 {
                let n = left.min(block.len());
                writer.write_all(&block[..n]).await.unwrap();
                hash.update(&block[..n]);
                left -= n;
            }
            writer.shutdown().await.unwrap();
            hash.finalize().to_vec()
        });
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 10_000];
        loop {
            let n = reader.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
        }
        (sent.await.unwrap(), hash.finalize().to_vec())
    }

    #[tokio::test]
    async fn bulk_both_ways_at_once_arrives_intact() {
        let pki = TestPki::new();
        let (client, server) = pair(&pki, &pki.path("ca.pem")).await.unwrap();
        // Both peers write 8 MiB while reading.
        let len = 8 << 20;
        let far = tokio::spawn(both_ways(server, len));
        let (client_sent, client_got) = both_ways(client, len).await;
        let (server_sent, server_got) = far.await.unwrap();
        assert_eq!(client_sent, server_got);
        assert_eq!(server_sent, client_got);
    }

    #[tokio::test]
    async fn an_unknown_issuer_is_refused() {
        let pki = TestPki::new();
        let other = TestPki::new();
        let Err(err) = pair(&pki, &other.path("ca.pem")).await else {
            panic!("the handshake went through");
        };
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
