//! `rediss://` against a real redis-server with `--tls-port` and
//! certificates made here with the `openssl` command (as a deployment's
//! would be): the right CA, a wrong CA, a plain server behind a `rediss://`
//! URL, and client certificates. The command rather than a Rust crate such
//! as rcgen: a dev-dependency would compile `ring` into every test build,
//! the default `cargo test` included.
#![cfg(feature = "redis-tls")]

#[path = "redis_support/groups.rs"]
mod groups;
mod redis_support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use groups::config;
use redis_support::{RedisServer, free_port};
use sync_singleflight::redis::{
    ErrorKind, FallbackReason, RedisConfig, RedisGroup, Source, TlsConfig,
};

/// Runs `openssl` with `args` in `dir`, panicking with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (.ci/run installs it): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` arguments for a new P-256 key without a passphrase
/// (quick to make).
const NEW_P256_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A certificate authority: its certificate and key as files in a folder
/// of its own, where the certificates it signs are made too.
struct Ca {
    dir: tempfile::TempDir,
    signed: std::cell::Cell<u32>,
}

impl Ca {
    fn pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.pem")).unwrap()
    }
}

/// A new self-signed CA called `name`.
fn ca(name: &str) -> Ca {
    let dir = tempfile::tempdir().unwrap();
    let subject = format!("/CN={name}");
    let rest = [
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        &subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ];
    openssl(
        dir.path(),
        &[&["req", "-x509"][..], &NEW_P256_KEY, &rest].concat(),
    );
    Ca {
        dir,
        signed: std::cell::Cell::new(0),
    }
}

/// A certificate for `names` (IP addresses or DNS names) signed by `ca`:
/// (certificate PEM, key PEM).
fn leaf(ca: &Ca, names: &[&str]) -> (String, String) {
    let n = ca.signed.get() + 1;
    ca.signed.set(n);
    let dir = ca.dir.path();
    let file = |what: &str| -> PathBuf { dir.join(format!("leaf{n}.{what}")) };
    let names: Vec<String> = names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(_) => format!("IP:{name}"),
            Err(_) => format!("DNS:{name}"),
        })
        .collect();
    std::fs::write(
        file("ext"),
        format!(
            "basicConstraints=critical,CA:FALSE\nsubjectAltName={}\n",
            names.join(",")
        ),
    )
    .unwrap();
    let path = |what: &str| file(what).display().to_string();
    let (key, csr) = (path("key"), path("csr"));
    let rest = ["-keyout", &key, "-out", &csr, "-subj", "/CN=leaf"];
    openssl(dir, &[&["req", "-new"][..], &NEW_P256_KEY, &rest].concat());
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &path("csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &path("ext"),
            "-out",
            &path("pem"),
        ],
    );
    (
        std::fs::read_to_string(file("pem")).unwrap(),
        std::fs::read_to_string(file("key")).unwrap(),
    )
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

/// `TlsConfig`'s docs: "The `redis://` scheme ignores it." A group with a
/// CA configured and a plain URL (a service whose URL comes from the
/// environment, TLS in production and not in development) opens and works.
#[test]
fn a_tls_config_is_ignored_by_plain_urls() {
    let ca = ca("test CA");
    let plain = RedisServer::start();
    let tls = TlsConfig::with_ca(ca.pem().into_bytes());
    let opened = RedisGroup::<String, u32>::open(&plain.url(), tls_config("plain", tls.clone()));
    let group = opened.expect("a plain URL ignores the TLS configuration");
    assert_eq!(group.try_work("k", || 1).unwrap().source, Source::Leader);
    let urls = [plain.url()];
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let cluster = RedisGroup::<String, u32>::open_cluster(&urls, tls_config("plain", tls));
    assert!(cluster.is_ok(), "{:?}", cluster.err());
}
