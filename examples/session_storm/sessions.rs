//! The session-storm backend, shared with `tests/session_storm.rs` so the
//! test drives the code the demo prints figures for: a simulated identity
//! provider, a SQLite `sessions` table, and the get-or-create handler an
//! identity-aware proxy runs for every request.

#![allow(dead_code)] // the demo and the test each use a part

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension};
use sync_singleflight::Group;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    pub id: String,
    pub user: String,
}

impl Session {
    /// From a row of `id, user`.
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Session> {
        Ok(Session {
            id: row.get(0)?,
            user: row.get(1)?,
        })
    }
}

#[derive(Debug)]
pub enum AuthError {
    UnknownToken,
    Expired,
    Store(rusqlite::Error),
    /// An error another replica's flight got, as it reported it.
    Replica(String),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::UnknownToken => write!(f, "unknown token"),
            AuthError::Expired => write!(f, "token expired"),
            AuthError::Store(e) => write!(f, "session store: {e}"),
            AuthError::Replica(e) => write!(f, "{e}"),
        }
    }
}

impl From<rusqlite::Error> for AuthError {
    fn from(e: rusqlite::Error) -> AuthError {
        AuthError::Store(e)
    }
}

/// Errors are not `Clone`, so every caller of a failed flight shares one
/// through an `Arc`: the same instance, not an equal copy.
pub type SessionResult = Result<Session, Arc<AuthError>>;

/// Called as a verification starts; tests use it to hold verifications
/// until every caller of a burst has got as far as it should.
pub type Gate = Box<dyn Fn() + Send + Sync>;

/// A simulated identity provider: `verify` blocks like the remote call it
/// stands for, and every verification is counted.
pub struct Provider {
    /// token -> (user, expired)
    tokens: HashMap<String, (String, bool)>,
    delay: Duration,
    verifications: AtomicU64,
    gate: Option<Gate>,
}

impl Provider {
    pub fn new(delay: Duration) -> Provider {
        Provider {
            tokens: HashMap::new(),
            delay,
            verifications: AtomicU64::new(0),
            gate: None,
        }
    }

    pub fn issue(mut self, token: &str, user: &str, expired: bool) -> Provider {
        self.tokens
            .insert(token.to_string(), (user.to_string(), expired));
        self
    }

    pub fn with_gate(mut self, gate: Gate) -> Provider {
        self.gate = Some(gate);
        self
    }

    /// The user a token belongs to.
    pub fn verify(&self, token: &str) -> Result<String, AuthError> {
        if let Some(gate) = &self.gate {
            gate();
        }
        thread::sleep(self.delay);
        self.verifications.fetch_add(1, Ordering::SeqCst);
        match self.tokens.get(token) {
            Some((_, true)) => Err(AuthError::Expired),
            Some((user, false)) => Ok(user.clone()),
            None => Err(AuthError::UnknownToken),
        }
    }

    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::SeqCst)
    }
}

/// Sessions in an in-memory SQLite database. The token index is not
/// unique, as in many real schemas; a unique one would turn the duplicate
/// sessions below into constraint errors for all but one creator, which is
/// no more consistent for the callers.
pub struct Store {
    db: Mutex<Connection>,
}

impl Store {
    pub fn open() -> rusqlite::Result<Store> {
        let db = Connection::open_in_memory()?;
        db.execute_batch(SCHEMA)?;
        Ok(Store { db: Mutex::new(db) })
    }

    /// A store in a file that several processes share, as replicas do.
    pub fn create_file(path: &Path) -> rusqlite::Result<Store> {
        let db = Connection::open(path)?;
        db.execute_batch("PRAGMA journal_mode = WAL;")?;
        db.execute_batch(SCHEMA)?;
        Ok(Store { db: Mutex::new(db) })
    }

    /// Another process's handle on a file [`create_file`](Self::create_file)
    /// made. Writers from several processes take turns on the file's lock,
    /// so a writer waits for it rather than failing.
    pub fn open_file(path: &Path) -> rusqlite::Result<Store> {
        let db = Connection::open(path)?;
        db.busy_timeout(Duration::from_secs(10))?;
        Ok(Store { db: Mutex::new(db) })
    }

    pub fn find(&self, token: &str) -> rusqlite::Result<Option<Session>> {
        self.db
            .lock()
            .unwrap()
            .query_row(
                "SELECT id, user FROM sessions WHERE token = ?1 ORDER BY created_at LIMIT 1",
                [token],
                Session::from_row,
            )
            .optional()
    }

    /// Writes a session with a fresh random id.
    pub fn create(&self, token: &str, user: &str) -> rusqlite::Result<Session> {
        self.db.lock().unwrap().query_row(
            "INSERT INTO sessions (id, token, user) VALUES (lower(hex(randomblob(16))), ?1, ?2)
             RETURNING id, user",
            [token, user],
            Session::from_row,
        )
    }

    /// Writes a session for a flight holding fencing token `fence`, unless
    /// a newer flight (a higher token) already wrote one for this token:
    /// then that session is returned and nothing is written. A stale
    /// leader, paused past its lease while another took over, thus cannot
    /// leave a second session behind.
    pub fn create_fenced(&self, token: &str, user: &str, fence: u64) -> rusqlite::Result<Session> {
        let mut db = self.db.lock().unwrap();
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let newer = tx
            .query_row(
                "SELECT id, user FROM sessions WHERE token = ?1 AND fence > ?2 \
                 ORDER BY fence DESC LIMIT 1",
                (token, fence as i64),
                Session::from_row,
            )
            .optional()?;
        let session = match newer {
            Some(session) => session,
            None => {
                // Older flights' sessions go: one session per token.
                tx.execute("DELETE FROM sessions WHERE token = ?1", [token])?;
                tx.query_row(
                    "INSERT INTO sessions (id, token, user, fence) \
                     VALUES (lower(hex(randomblob(16))), ?1, ?2, ?3) RETURNING id, user",
                    (token, user, fence as i64),
                    Session::from_row,
                )?
            }
        };
        tx.commit()?;
        Ok(session)
    }

    /// Sessions written so far, for every token.
    pub fn written(&self) -> u64 {
        self.db
            .lock()
            .unwrap()
            .query_row("SELECT COUNT(*) FROM sessions", [], |row| row.get(0))
            .expect("count sessions")
    }
}

const SCHEMA: &str = "CREATE TABLE sessions (
         id TEXT PRIMARY KEY,
         token TEXT NOT NULL,
         user TEXT NOT NULL,
         created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')),
         fence INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX sessions_by_token ON sessions (token);";

/// The proxy's session layer: the store, the provider, and optionally a
/// group keyed by token in front of the handler.
pub struct Proxy {
    pub store: Store,
    pub provider: Provider,
    pub group: Option<Arc<Group<String, SessionResult>>>,
}

impl Proxy {
    /// Get-or-create, in the shape real proxies use. Lookup and create are
    /// separate statements with a slow call between them, so concurrent
    /// callers that all miss the lookup all create.
    pub fn handle(&self, token: &str) -> SessionResult {
        self.handle_fenced(token, None)
    }

    /// [`handle`](Self::handle) for a flight holding fencing token `fence`:
    /// the write goes through [`Store::create_fenced`].
    pub fn handle_fenced(&self, token: &str, fence: Option<u64>) -> SessionResult {
        let get_or_create = || -> Result<Session, AuthError> {
            if let Some(session) = self.store.find(token)? {
                return Ok(session);
            }
            let user = self.provider.verify(token)?;
            Ok(match fence {
                Some(fence) => self.store.create_fenced(token, &user, fence)?,
                None => self.store.create(token, &user)?,
            })
        };
        get_or_create().map_err(Arc::new)
    }

    /// What a request runs: the handler, through the group when there is
    /// one. The flight covers lookup, verification and insert, so a caller
    /// arriving after it lands finds the session in the store.
    pub fn get_or_create(&self, token: &str) -> SessionResult {
        match &self.group {
            Some(group) => group.work(token, || self.handle(token)),
            None => self.handle(token),
        }
    }
}

/// One caller's view of a burst.
pub struct Call {
    pub token: String,
    pub result: SessionResult,
    pub latency: Duration,
}

/// The callers of one burst, as they came back.
pub struct Burst {
    pub calls: Vec<Call>,
    /// From the first caller's start to the last one's: callers that start
    /// after a flight has landed find nothing to join and start another.
    pub arrival_spread: Duration,
}

/// `tokens.len()` threads, one per token listed, released together so they
/// hit the proxy at the same moment. Fails, without calling the proxy, when
/// a thread cannot be started (the system's thread limit).
pub fn burst(proxy: &Proxy, tokens: &[String]) -> Result<Burst, String> {
    let start = StartLine::new(tokens.len());
    let started = thread::scope(|s| {
        let mut handles = Vec::with_capacity(tokens.len());
        for (i, token) in tokens.iter().enumerate() {
            let start = &start;
            let spawned = thread::Builder::new().spawn_scoped(s, move || {
                start.wait().then(|| {
                    let began = Instant::now();
                    let result = proxy.get_or_create(token);
                    let call = Call {
                        token: token.clone(),
                        result,
                        latency: began.elapsed(),
                    };
                    (began, call)
                })
            });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    start.call_off();
                    return Err(format!(
                        "could not start thread {} of {}: {e}; lower --threads",
                        i + 1,
                        tokens.len()
                    ));
                }
            }
        }
        Ok(handles
            .into_iter()
            .map(|h| h.join().unwrap().expect("released, not called off"))
            .collect::<Vec<_>>())
    })?;
    let first = started.iter().map(|(began, _)| *began).min();
    let last = started.iter().map(|(began, _)| *began).max();
    Ok(Burst {
        arrival_spread: last.zip(first).map_or(Duration::ZERO, |(l, f)| l - f),
        calls: started.into_iter().map(|(_, call)| call).collect(),
    })
}

/// Like `std::sync::Barrier` for one use, but it can be called off: when a
/// burst's thread cannot be started, the threads already waiting must be
/// let go without calling anything, or the burst would hang.
struct StartLine {
    state: Mutex<Waiting>,
    changed: Condvar,
}

struct Waiting {
    arrived: usize,
    expected: usize,
    called_off: bool,
}

impl StartLine {
    fn new(expected: usize) -> StartLine {
        StartLine {
            state: Mutex::new(Waiting {
                arrived: 0,
                expected,
                called_off: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// Waits until every expected thread has arrived (true) or the burst is
    /// called off (false).
    fn wait(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        state.arrived += 1;
        if state.arrived == state.expected {
            self.changed.notify_all();
        }
        while state.arrived < state.expected && !state.called_off {
            state = self.changed.wait(state).unwrap();
        }
        !state.called_off
    }

    fn call_off(&self) {
        self.state.lock().unwrap().called_off = true;
        self.changed.notify_all();
    }
}

/// What the demo prints for a burst and the test asserts.
#[derive(Debug)]
pub struct Figures {
    pub verifications: u64,
    pub sessions_written: u64,
    /// For each token that got sessions: how many distinct ids its callers saw.
    pub ids_per_token: BTreeMap<String, usize>,
    pub errors: usize,
    /// Distinct error instances (by `Arc` identity): 1 when every failed
    /// caller shares one error.
    pub error_instances: usize,
    pub p50: Duration,
    pub p99: Duration,
}

impl Figures {
    pub fn of(proxy: &Proxy, calls: &[Call]) -> Figures {
        Figures::from_calls(proxy.provider.verifications(), proxy.store.written(), calls)
    }

    /// From counts taken elsewhere: a fleet adds up its replicas'.
    pub fn from_calls(verifications: u64, sessions_written: u64, calls: &[Call]) -> Figures {
        let mut ids: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        let mut errors: Vec<&Arc<AuthError>> = Vec::new();
        for call in calls {
            match &call.result {
                Ok(session) => {
                    ids.entry(call.token.clone())
                        .or_default()
                        .insert(&session.id);
                }
                Err(error) => errors.push(error),
            }
        }
        let instances: BTreeSet<*const AuthError> = errors.iter().map(|e| Arc::as_ptr(e)).collect();
        let mut latencies: Vec<Duration> = calls.iter().map(|c| c.latency).collect();
        latencies.sort_unstable();
        let percentile = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        Figures {
            verifications,
            sessions_written,
            ids_per_token: ids.into_iter().map(|(t, ids)| (t, ids.len())).collect(),
            errors: errors.len(),
            error_instances: instances.len(),
            p50: percentile(0.5),
            p99: percentile(0.99),
        }
    }
}
