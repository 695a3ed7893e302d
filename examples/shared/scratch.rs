//! Scratch directories for the demos' SQLite files, removed when dropped and
//! also when the process is interrupted (Ctrl-C, SIGTERM, SIGHUP): a large
//! run leaves hundreds of megabytes behind otherwise, and destructors do not
//! run when a signal ends the process.

#![allow(dead_code)] // not every includer uses every function

use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the interrupt handler before it removes anything: from then on
/// the handler decides how the process ends.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Every scratch directory this process has made. Removing one that its
/// `TempDir` already removed is harmless, so entries are never taken out.
static MADE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A new scratch directory whose name starts with
/// `sync-singleflight-{tag}-`. `tempfile` makes the rest of the name random
/// and creates it exclusively, so two processes or tests starting in the
/// same instant never share one.
pub fn scratch_dir(tag: &str) -> io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("sync-singleflight-{tag}-"))
        .tempdir()?;
    MADE.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(dir.path().to_path_buf());
    Ok(dir)
}

/// On Ctrl-C, SIGTERM or SIGHUP: removes every scratch directory, says so,
/// and exits with 130 (the shell's code for an interrupted command).
pub fn remove_on_interrupt(program: &'static str) -> Result<(), String> {
    ctrlc::set_handler(move || {
        INTERRUPTED.store(true, Ordering::SeqCst);
        let made = MADE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for dir in made.iter() {
            let _ = std::fs::remove_dir_all(dir);
        }
        eprintln!("\n{program}: interrupted; scratch files removed");
        std::process::exit(130);
    })
    .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))
}

/// For the main thread before it reports an error or exits: once an
/// interrupt is being handled, waits for the handler to end the process
/// (with 130), so that an error the removal itself caused (a database file
/// gone from under a query) is not reported, and the exit status is the
/// interrupt's.
pub fn defer_to_interrupt() {
    while INTERRUPTED.load(Ordering::SeqCst) {
        std::thread::park();
    }
}
