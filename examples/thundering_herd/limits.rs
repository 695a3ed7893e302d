//! How many files the demo may hold open. Every client connection costs a
//! descriptor at each end and every SQLite connection a few more, so a large
//! `--concurrency` or `--connections` meets `ulimit -n` long before memory or
//! threads run out; checked up front, that is one clear message instead of
//! "unable to open database file" halfway through a run.

/// Raises the soft limit on open files to the hard limit, as Go's runtime
/// does at start-up (the soft limit is often 1024 for compatibility with
/// `select`, which nothing here uses), and returns the limit now in force.
pub fn open_files_allowed() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: a valid rlimit; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    limit.rlim_cur
}

/// Descriptors one server process and its clients need: a socket at each end
/// of every client connection, the listener, and for each SQLite connection
/// the database, its write-ahead log and the shared-memory index; plus a
/// margin for standard streams, the thread pool's pipes and the like.
pub fn open_files_needed(clients: usize, sqlite_connections: usize) -> u64 {
    const MARGIN: u64 = 64;
    2 * clients as u64 + 1 + 3 * (sqlite_connections as u64 + 1) + MARGIN
}

/// Threads one run needs: for each client, its own thread, a server worker,
/// and the thread `tiny_http` gives its connection; plus `tiny_http`'s
/// acceptor and the four threads it keeps in its pool.
pub fn threads_needed(clients: usize) -> usize {
    3 * clients + 5
}

/// Starts `count` threads that end at once, to learn up front whether this
/// process may have that many (`ulimit -u`, `ulimit -v`, the kernel's
/// limits). The run's own threads are started later, some of them inside
/// `tiny_http`, which panics when it cannot start one; probing first makes
/// the common case one clear message before anything else has started.
pub fn can_start_threads(count: usize) -> std::io::Result<()> {
    let hold = std::sync::RwLock::new(());
    let held = hold
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    std::thread::scope(|s| {
        let mut result = Ok(());
        for _ in 0..count {
            let spawned = std::thread::Builder::new().spawn_scoped(s, || {
                // Every probe stays alive until all have started.
                drop(hold.read());
            });
            if let Err(e) = spawned {
                result = Err(e);
                break;
            }
        }
        drop(held);
        result
    })
}
