//! The bytes a run writes: counted as they go, and paced to an average rate (`--bwlimit RATE`).
//!
//! Every writer — the local copies, the downloads written here, the remote uploads — accounts
//! each piece before it writes it, and waits until the run's clock says that many bytes are
//! due; so the rate holds over the whole run, whatever the number of workers, and a pause (a
//! file being opened, a directory made) lets the next piece go at once. With a limit, local
//! copies go in pieces of a tenth of a second's worth, so the pace stays smooth; without one
//! accounting costs nothing unless the progress bar asked for the count, which it shows
//! moving while a large file is still on its way (then one atomic add a piece).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Limit {
    /// Bytes a second.
    rate: u64,
    start: Instant,
    /// Bytes accounted so far.
    sent: AtomicU64,
}

static LIMIT: OnceLock<Limit> = OnceLock::new();

/// Bytes accounted so far, limit or not, once [`count`] was called.
static MOVED: AtomicU64 = AtomicU64::new(0);

/// Whether [`MOVED`] is kept. Not by default: an add to one counter shared by every worker,
/// per small file, moves its cache line from core to core for nobody to read.
static COUNTING: AtomicBool = AtomicBool::new(false);

/// Count the bytes written from now on, for [`moved`].
pub fn count() {
    COUNTING.store(true, Ordering::Relaxed);
}

/// Bytes accounted so far by every writer since [`count`] (a piece tried again counts again).
pub fn moved() -> u64 {
    MOVED.load(Ordering::Relaxed)
}

/// Pace the run's writes to `rate` bytes a second (0: no limit).
pub fn set(rate: u64) {
    if rate > 0 {
        let _ = LIMIT.set(Limit {
            rate,
            start: Instant::now(),
            sent: AtomicU64::new(0),
        });
    }
}

/// The size of the pieces a paced copy goes in (`None`: no limit).
pub fn piece() -> Option<u64> {
    LIMIT.get().map(|l| (l.rate / 10).clamp(4 << 10, 1 << 30))
}

/// Account `bytes` about to be written: how long to wait first.
pub fn delay(bytes: u64) -> Duration {
    if COUNTING.load(Ordering::Relaxed) {
        MOVED.fetch_add(bytes, Ordering::Relaxed);
    }
    let Some(limit) = LIMIT.get() else {
        return Duration::ZERO;
    };
    let sent = limit.sent.fetch_add(bytes, Ordering::Relaxed) + bytes;
    let due = Duration::from_secs_f64(sent as f64 / limit.rate as f64);
    due.saturating_sub(limit.start.elapsed())
}

/// Account `bytes` about to be written, and wait until they are due.
pub fn pace(bytes: u64) {
    let wait = delay(bytes);
    if !wait.is_zero() {
        std::thread::sleep(wait);
    }
}

/// Read a rate as rsync takes it: a number of KiB a second, or with a suffix `B`, `K`, `M`,
/// `G` (powers of 1024); fractions allowed; `0` is no limit. Returns bytes a second.
pub fn parse(text: &str) -> Result<u64, String> {
    let bad =
        || format!("--bwlimit {text}: a rate such as 500K, 2.5M or 1G (KiB/s without a suffix)");
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "K"),
    };
    let scale: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches("B")
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(bad()),
    };
    let scale = if unit.eq_ignore_ascii_case("b") {
        1
    } else {
        scale
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    Ok((value * scale as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_rsync_reads_them() {
        assert_eq!(parse("100"), Ok(100 << 10));
        assert_eq!(parse("500K"), Ok(500 << 10));
        assert_eq!(parse("2.5M"), Ok(5 << 19));
        assert_eq!(parse("1g"), Ok(1 << 30));
        assert_eq!(parse("4096B"), Ok(4096));
        assert_eq!(parse("0"), Ok(0));
        assert!(parse("fast").is_err() && parse("-1").is_err() && parse("3X").is_err());
    }
}
