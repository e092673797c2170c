//! The daemon's latest log lines, kept in memory for the technician's diagnostics bundle.
//!
//! The command line's log writer is [`Tee`]: every line goes to standard error (the journal, or the
//! terminal) as before, and the last [`KEPT_LINES`] are also kept here, so a technician with no
//! shell can still hand the office what the daemon said before a fault.
use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;

/// How many of the latest lines are kept.
pub const KEPT_LINES: usize = 500;
/// Longer lines are cut to this many bytes (at a character boundary).
const MAX_LINE_BYTES: usize = 2_000;

struct Kept {
    lines: VecDeque<String>,
    /// The start of a line whose end has not been written yet.
    partial: String,
}

static KEPT: Mutex<Kept> = Mutex::new(Kept {
    lines: VecDeque::new(),
    partial: String::new(),
});

/// A log writer: standard error, and the kept lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tee;

impl Write for Tee {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        keep(bytes);
        std::io::stderr().write_all(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn keep(bytes: &[u8]) {
    let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    kept.partial.push_str(&String::from_utf8_lossy(bytes));
    while let Some(end) = kept.partial.find('\n') {
        let line: String = kept.partial.drain(..=end).collect();
        let mut line = strip_colours(line.trim_end());
        if line.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        if kept.lines.len() == KEPT_LINES {
            kept.lines.pop_front();
        }
        kept.lines.push_back(line);
    }
}

/// Removes terminal colour codes (`ESC [ … m`), which a log on a terminal carries.
fn strip_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The kept lines, oldest first.
pub fn lines() -> Vec<String> {
    let kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    kept.lines.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_are_kept_without_colours_and_only_the_latest() {
        let mut tee = Tee;
        tee.write_all(b"\x1b[32m INFO\x1b[0m gateway: first")
            .unwrap();
        tee.write_all(b" half\nsecond\n").unwrap();
        let kept = lines();
        let first = kept.iter().position(|l| l == " INFO gateway: first half");
        assert!(first.is_some(), "{kept:?}");
        assert_eq!(kept[first.unwrap() + 1], "second");
        for i in 0..KEPT_LINES + 10 {
            tee.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        let kept = lines();
        assert_eq!(kept.len(), KEPT_LINES);
        assert_eq!(kept.last().unwrap(), &format!("line {}", KEPT_LINES + 9));
        assert!(!kept.iter().any(|l| l == "second"));
    }
}
