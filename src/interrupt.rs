//! Ending cleanly on SIGINT, SIGTERM and SIGHUP.
//!
//! A run that is told to stop stops starting work: the scan stops, no new file is started,
//! a file being written is finished if it is down to its last piece and dropped otherwise
//! (each lands whole, or not at all), and nothing is deleted;
//! the summary and the JSON report say the run was interrupted, and the exit status is
//! 128 + the signal, as shells expect (130, 143, 129). Every temporary of the run is gone by
//! then: a file's temporary is renamed into place or removed when its copy ends. A second
//! signal ends the process at once — still no partial file at a final name, since files are
//! only ever written under temporary names (an unnamed one vanishes; a named one is swept by
//! the next run).
//!
//! The handlers only store the signal number (an atomic store is all a signal handler may do);
//! the engine looks at it between pieces of work.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The signals that stop a run.
pub const SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
];

/// The signal that asked the run to stop (0: none), shared with the handlers.
fn received() -> &'static Arc<AtomicUsize> {
    static RECEIVED: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    RECEIVED.get_or_init(|| Arc::new(AtomicUsize::new(0)))
}

/// Stop on SIGINT, SIGTERM and SIGHUP (and exit at once on the second).
pub fn install() -> std::io::Result<()> {
    let stopping = Arc::new(AtomicBool::new(false));
    for signal in SIGNALS {
        // Handlers run in the order they were registered: the first checks whether an
        // earlier signal already asked to stop, before the next two record this one.
        let code = 128 + signal as u32;
        signal_hook::flag::register_conditional_shutdown(signal, code as i32, stopping.clone())?;
        signal_hook::flag::register_usize(signal, received().clone(), signal as usize)?;
        signal_hook::flag::register(signal, stopping.clone())?;
    }
    Ok(())
}

/// The signal that asked the run to stop, if one did.
pub fn requested() -> Option<i32> {
    match received().load(Ordering::Relaxed) {
        0 => None,
        signal => Some(signal as i32),
    }
}

/// `Err` once a stop was asked for: what a copy looks at between its pieces, so that a large
/// file does not hold up a stopped run. The copy then ends in this error and is not placed
/// (see [`is_stopped`]).
pub fn check() -> std::io::Result<()> {
    match requested() {
        None => Ok(()),
        Some(_) => Err(std::io::Error::other(Stopped)),
    }
}

/// Whether `e` is the error of [`check`]: a copy given up because the run was told to stop.
pub fn is_stopped(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Stopped>())
}

#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the run was told to stop before the copy was whole")
    }
}

impl std::error::Error for Stopped {}

/// The name of a stopping signal, for messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        signal_hook::consts::SIGINT => "SIGINT",
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
