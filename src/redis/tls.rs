//! [`TlsConfig`]: the certificates of a `rediss://` connection (feature
//! `redis-tls`).

/// Certificates for `rediss://` URLs: which CA to trust, and a client
/// certificate for servers that ask for one (`tls-auth-clients yes`).
///
/// With no CA the server's certificate is verified against the system's
/// roots (`/etc/ssl/certs` and the like, through `rustls-native-certs`):
/// right for managed Redis services. Give the CA that signed the server's
/// certificate for a private one. Everything is PEM. The `redis://` scheme
/// ignores it.
///
/// TLS goes through rustls with its `ring` provider: no OpenSSL headers or
/// system library to install, and the plain `redis` feature does not build
/// it.
///
/// # Examples
///
/// ```no_run
/// use sync_singleflight::redis::{RedisConfig, RedisGroup, TlsConfig};
///
/// let mut config = RedisConfig::new("users", 1);
/// config.tls = TlsConfig::with_ca(std::fs::read("ca.pem")?);
/// let users: RedisGroup<u64, String> =
///     RedisGroup::open("rediss://:password@redis.internal:6380", config)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsConfig {
    /// The CA certificate(s) to trust instead of the system roots (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate chain (PEM), with [`client_key_pem`](Self::client_key_pem).
    pub client_cert_pem: Option<Vec<u8>>,
    /// The client certificate's private key (PEM).
    pub client_key_pem: Option<Vec<u8>>,
}

impl TlsConfig {
    /// Trust `ca_pem` instead of the system roots.
    ///
    /// # Examples
    ///
    /// See [`TlsConfig`].
    pub fn with_ca(ca_pem: Vec<u8>) -> Self {
        TlsConfig {
            ca_pem: Some(ca_pem),
            ..TlsConfig::default()
        }
    }

    /// Also present this client certificate and key.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use sync_singleflight::redis::{RedisConfig, TlsConfig};
    ///
    /// let mut config = RedisConfig::new("users", 1);
    /// config.tls = TlsConfig::with_ca(std::fs::read("ca.pem")?)
    ///     .client_cert(std::fs::read("client.pem")?, std::fs::read("client.key")?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn client_cert(mut self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        self.client_cert_pem = Some(cert_pem);
        self.client_key_pem = Some(key_pem);
        self
    }

    /// Whether anything differs from "system roots, no client certificate".
    pub(super) fn is_custom(&self) -> bool {
        self.ca_pem.is_some() || self.client_cert_pem.is_some()
    }

    /// The `redis` crate's form; a certificate without its key (or the
    /// reverse) is refused.
    pub(super) fn certificates(&self) -> Result<redis::TlsCertificates, String> {
        let client_tls = match (&self.client_cert_pem, &self.client_key_pem) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            (None, None) => None,
            _ => return Err("a client certificate needs both its certificate and its key".into()),
        };
        Ok(redis::TlsCertificates {
            client_tls,
            root_cert: self.ca_pem.clone(),
        })
    }
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key's bytes in a log.
        f.debug_struct("TlsConfig")
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .field(
                "client_cert_pem",
                &self.client_cert_pem.as_ref().map(|c| c.len()),
            )
            .field("client_key_pem", &self.client_key_pem.is_some())
            .finish()
    }
}
