//! Progress on stderr for long runs: a live bar that redraws one line on a terminal, plain lines
//! (one per finished run) otherwise, so logs stay readable.

use std::io::Write;
use std::time::Instant;

/// A progress display over `total` steps.
pub struct Progress {
    total: usize,
    done: usize,
    tty: bool,
    start: Instant,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        // SAFETY: isatty only inspects the descriptor.
        let tty = unsafe { libc::isatty(2) } == 1;
        Progress {
            total,
            done: 0,
            tty,
            start: Instant::now(),
        }
    }

    /// Announces the step about to run (terminal only: the bar shows what is running).
    pub fn starting(&self, what: &str) {
        if self.tty {
            let line = bar_line(
                self.done,
                self.total,
                self.start.elapsed().as_secs_f64(),
                what,
            );
            let _ = write!(std::io::stderr(), "\r\x1b[2K{line}");
        }
    }

    /// Records a finished step and how it went.
    pub fn finished(&mut self, what: &str, outcome: &str) {
        self.done += 1;
        if !self.tty {
            eprintln!("[{}/{}] {what}: {outcome}", self.done, self.total);
        }
    }

    /// Clears the bar.
    pub fn end(&self) {
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

/// The bar's text: `[#####.....]  12/180  0:41 elapsed, ~1:20 left  larson on slab`.
pub fn bar_line(done: usize, total: usize, elapsed: f64, what: &str) -> String {
    const WIDTH: usize = 24;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(0).min(WIDTH);
    let left = if done > 0 {
        let rest = elapsed / done as f64 * (total - done.min(total)) as f64;
        format!(", ~{} left", clock(rest))
    } else {
        String::new()
    };
    format!(
        "[{}{}] {done}/{total}  {} elapsed{left}  {what}",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        clock(elapsed)
    )
}

/// "1:05" for 65 seconds.
pub fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_and_clock() {
        assert_eq!(clock(65.2), "1:05");
        assert_eq!(clock(0.0), "0:00");
        let b = bar_line(6, 24, 30.0, "larson on slab");
        assert_eq!(
            b,
            "[######..................] 6/24  0:30 elapsed, ~1:30 left  larson on slab"
        );
        assert!(bar_line(0, 0, 0.0, "x").starts_with("[........................] 0/0"));
        assert!(bar_line(5, 5, 10.0, "x").starts_with("[########################] 5/5"));
    }
}
