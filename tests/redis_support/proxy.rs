//! A TCP fault proxy between a group and a real redis-server, in plain std
//! threads: added latency each way, a blackhole (connections accepted,
//! nothing forwarded until it ends: a partition that heals), and resets of
//! every open connection.
//!
//! Why not `noxious` (the Rust port of Toxiproxy): 1.0.4 has no reset
//! toxic, and it would bring tokio, tokio-util 0.6, futures, rand 0.8 and
//! async-trait into the dev-dependencies, plus a runtime to drive it, for
//! what ~200 lines of std do here. Network namespaces with `tc netem` need
//! CAP_NET_ADMIN, which CI containers often lack.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Faults {
    /// Added to every chunk, each way.
    latency: Mutex<Duration>,
    /// While set, nothing is forwarded (held, not lost, like TCP would).
    blackhole: AtomicBool,
    /// Every connection's two sockets, to reset them all.
    sockets: Mutex<Vec<TcpStream>>,
    /// Armed: the next chunk toward the server (`[0]`) or toward the
    /// client (`[1]`) is dropped and every connection reset.
    reset_next: [AtomicBool; 2],
    stopped: AtomicBool,
}

impl Faults {
    fn reset_all(&self) {
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// A running proxy; stops accepting on drop.
pub struct FaultProxy {
    port: u16,
    faults: Arc<Faults>,
}

impl FaultProxy {
    /// Proxies a free local port to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("no free port");
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults::default());
        let shared = Arc::clone(&faults);
        thread::spawn(move || {
            for client in listener.incoming() {
                if shared.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let shared = Arc::clone(&shared);
                thread::spawn(move || connect(client, upstream, &shared));
            }
        });
        FaultProxy { port, faults }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Adds `latency` to every chunk in each direction (zero to stop).
    pub fn set_latency(&self, latency: Duration) {
        *self.faults.latency.lock().unwrap() = latency;
    }

    /// Starts (`true`) or ends a blackhole: connections are still
    /// accepted, nothing is forwarded either way until it ends.
    pub fn blackhole(&self, on: bool) {
        self.faults.blackhole.store(on, Ordering::SeqCst);
    }

    /// Closes both sides of every open connection (new ones still work).
    pub fn reset_all(&self) {
        self.faults.reset_all();
    }

    /// Arms a reset: the next chunk sent toward the server
    /// (`to_server`) or toward a client is dropped, and every connection
    /// is closed at that moment. A request lost on its way, or a reply
    /// lost after the server ran the command.
    pub fn reset_on_next(&self, to_server: bool) {
        self.faults.reset_next[usize::from(!to_server)].store(true, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.faults.stopped.store(true, Ordering::SeqCst);
        self.reset_all();
        // Unblock the accept loop so it sees `stopped`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn connect(client: TcpStream, upstream: u16, faults: &Arc<Faults>) {
    wait_while_blackholed(faults);
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut sockets = faults.sockets.lock().unwrap();
        sockets.push(client.try_clone().unwrap());
        sockets.push(server.try_clone().unwrap());
    }
    pump(
        client.try_clone().unwrap(),
        server.try_clone().unwrap(),
        0,
        faults,
    );
    pump(server, client, 1, faults);
}

fn wait_while_blackholed(faults: &Faults) {
    while faults.blackhole.load(Ordering::SeqCst) && !faults.stopped.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(1));
    }
}

/// Forwards `from` to `to`: a reader thread stamps each chunk with when it
/// may leave, a writer thread sends it then (so latency delays without
/// throttling).
fn pump(mut from: TcpStream, mut to: TcpStream, direction: usize, faults: &Arc<Faults>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reader_faults = Arc::clone(faults);
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = Instant::now() + *reader_faults.latency.lock().unwrap();
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(Shutdown::Both);
    });
    let writer_faults = Arc::clone(faults);
    thread::spawn(move || {
        for (due, chunk) in rx {
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                thread::sleep(wait);
            }
            wait_while_blackholed(&writer_faults);
            if writer_faults.reset_next[direction].swap(false, Ordering::SeqCst) {
                writer_faults.reset_all();
                break;
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}
