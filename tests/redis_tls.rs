//! `rediss://` against a real redis-server with `--tls-port` and
//! certificates made here with rcgen: the right CA, a wrong CA, a plain
//! server behind a `rediss://` URL, and client certificates.
#![cfg(feature = "redis-tls")]

#[path = "redis_support/groups.rs"]
mod groups;
mod redis_support;

use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use groups::config;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use redis_support::{RedisServer, free_port};
use sync_singleflight::redis::{
    ErrorKind, FallbackReason, RedisConfig, RedisGroup, Source, TlsConfig,
};

type Ca = CertifiedIssuer<'static, KeyPair>;

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `names` signed by `ca`: (certificate PEM, key PEM).
fn leaf(ca: &Ca, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A TLS server whose certificate `ca` signed (for 127.0.0.1), that
/// verifies client certificates against `ca` when `clients` is true.
struct TlsServer {
    server: RedisServer,
    tls_port: u16,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    fn start(ca: &Ca, clients: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let (cert, key) = leaf(ca, &["127.0.0.1", "localhost"]);
        let tls_port = free_port();
        let args = [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &write("server.pem", &cert),
            "--tls-key-file",
            &write("server.key", &key),
            "--tls-ca-cert-file",
            &write("ca.pem", &ca.pem()),
            "--tls-auth-clients",
            if clients { "yes" } else { "no" },
        ]
        .map(String::from);
        TlsServer {
            server: RedisServer::start_with(&args.each_ref().map(String::as_str)),
            tls_port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }
}

fn tls_config(namespace: &str, tls: TlsConfig) -> RedisConfig {
    let mut cfg = config(namespace);
    cfg.tls = tls;
    cfg
}

fn group(url: &str, cfg: RedisConfig) -> RedisGroup<String, u32> {
    RedisGroup::open(url, cfg).unwrap()
}

#[test]
fn rediss_with_the_right_ca_dedups_across_replicas() {
    let ca = ca("test CA");
    let server = TlsServer::start(&ca, false);
    let tls = TlsConfig::with_ca(ca.pem().into_bytes());
    let a = group(&server.url(), tls_config("tls", tls.clone()));
    let b = group(&server.url(), tls_config("tls", tls));
    let health = a.check(2);
    assert!(health.is_ok(), "{health:?}");
    assert_eq!(a.try_work("k", || 1).unwrap().source, Source::Leader);
    let inside = Barrier::new(2);
    thread::scope(|s| {
        let led = s.spawn(|| {
            a.work_with_outcome("slow", || {
                inside.wait();
                thread::sleep(Duration::from_millis(300));
                2
            })
        });
        inside.wait();
        let followed = b.try_work("slow", || 3).unwrap();
        assert_eq!((followed.value, followed.source), (2, Source::Follower));
        assert_eq!(led.join().unwrap().source, Source::Leader);
    });
    // The server really spoke TLS on that port: a plain client gets nowhere.
    let plain = group(
        &format!("redis://127.0.0.1:{}", server.tls_port),
        config("tls"),
    );
    assert!(plain.try_work("k", || 4).is_err());
    drop(server.server);
}

#[test]
fn a_wrong_ca_is_a_tls_error_and_a_fallback_that_keeps_the_breaker_closed() {
    let server = TlsServer::start(&ca("the server's CA"), false);
    let other = TlsConfig::with_ca(ca("another CA").pem().into_bytes());
    let wrong = group(&server.url(), tls_config("tls", other.clone()));
    for _ in 0..5 {
        let err = wrong.try_work("k", || 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
        assert_eq!(err.reason(), FallbackReason::Misconfigured);
        let open = wrong.work_with_outcome("k", || 2);
        assert_eq!(open.value, 2);
        assert_eq!(open.source, Source::Fallback(FallbackReason::Misconfigured));
    }
    assert_eq!(wrong.stats().breaker_opens, 0);
    assert_eq!(wrong.check(1).error.unwrap().kind(), ErrorKind::Tls);

    // A rediss:// URL to a plain server: the server waits for the end of a
    // line the TLS hello never sends, so this is a timeout, not a TLS error.
    let plain = RedisServer::start();
    let url = format!("rediss://127.0.0.1:{}", plain.port());
    let err = group(&url, tls_config("tls", other))
        .try_work("k", || 1)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
}

#[test]
fn client_certificates_are_presented_when_the_server_asks() {
    let ca = ca("test CA");
    let server = TlsServer::start(&ca, true);
    let trust = TlsConfig::with_ca(ca.pem().into_bytes());
    let anonymous = group(&server.url(), tls_config("mtls", trust.clone()));
    let err = anonymous.try_work("k", || 1).unwrap_err();
    assert_eq!(err.reason(), FallbackReason::Misconfigured, "{err}");
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    let (cert, key) = leaf(&ca, &["client"]);
    let with_cert = trust.client_cert(cert.into_bytes(), key.into_bytes());
    let known = group(&server.url(), tls_config("mtls", with_cert));
    assert_eq!(known.try_work("k", || 2).unwrap().source, Source::Leader);
    // A certificate without its key is refused at open.
    let mut half = TlsConfig::with_ca(ca.pem().into_bytes());
    half.client_cert_pem = Some(b"cert".to_vec());
    let refused = RedisGroup::<String, u32>::open(&server.url(), tls_config("mtls", half));
    assert!(refused.unwrap_err().to_string().contains("key"));
}
