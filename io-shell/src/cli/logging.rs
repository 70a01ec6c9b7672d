//! Logs go to stderr through tracing (journald picks them up under systemd),
//! or to `--log-file` (appended), which SIGHUP reopens so that logrotate can
//! move it away: lines written before the reopen land in the moved file,
//! lines after it in the new one, and none is lost in between (each line is
//! written whole under the lock that the reopen takes to swap the file).
//!
//! While a progress bar is on the terminal (the first scan's), log lines are
//! printed above it: the bar is cleared, the line written and the bar drawn
//! again ([`indicatif::ProgressBar::suspend`]), so a warning never tears it.

use indicatif::ProgressBar;
use parking_lot::Mutex;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The progress bar on the terminal now, if any.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Makes log lines go above `bar` until [`clear_progress_bar`].
pub fn set_progress_bar(bar: &ProgressBar) {
    *BAR.lock() = Some(bar.clone());
}

/// The bar is gone: log lines go straight to stderr again.
pub fn clear_progress_bar() {
    *BAR.lock() = None;
}

/// The `--log-file`, once opened: where it is and the open file.
struct LogFile {
    path: PathBuf,
    file: File,
}

/// The log file, if logs go to one.
static LOG_FILE: Mutex<Option<LogFile>> = Mutex::new(None);

fn open_append(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Where log lines go: the log file if there is one, else stderr (around
/// the progress bar when one is shown).
#[derive(Clone, Copy, Debug, Default)]
pub struct StderrAboveBar;

impl<'a> MakeWriter<'a> for StderrAboveBar {
    type Writer = StderrAboveBar;
    fn make_writer(&'a self) -> StderrAboveBar {
        StderrAboveBar
    }
}

impl Write for StderrAboveBar {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The fmt layer writes each event whole, in one call.
        if let Some(log) = LOG_FILE.lock().as_mut() {
            // O_APPEND: one write(2) per line, never interleaved with
            // another writer of the same file.
            log.file.write_all(buf)?;
            return Ok(buf.len());
        }
        let bar = BAR.lock().clone();
        write_above(bar.as_ref(), &mut io::stderr(), buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Whether logs go to a file (`--log-file`).
pub fn logs_to_file() -> bool {
    LOG_FILE.lock().is_some()
}

/// Opens the log file again at its path (after logrotate moved it away):
/// the next line goes to the new file. On failure the old file is kept.
/// Returns the path, or None when logs go to stderr.
pub fn reopen() -> io::Result<Option<PathBuf>> {
    let mut guard = LOG_FILE.lock();
    let Some(log) = guard.as_mut() else {
        return Ok(None);
    };
    log.file = open_append(&log.path)?;
    Ok(Some(log.path.clone()))
}

/// Writes `buf` to `out`, above `bar` if one is shown.
fn write_above(bar: Option<&ProgressBar>, out: &mut dyn Write, buf: &[u8]) -> io::Result<()> {
    match bar {
        Some(bar) if !bar.is_hidden() => bar.suspend(|| out.write_all(buf)),
        _ => out.write_all(buf),
    }
}

/// `--log-file` cannot be opened (a usage error, before anything is logged).
#[derive(Debug, thiserror::Error)]
#[error("cannot open the log file '{}': {}", path.display(), open_reason(.source))]
pub struct LogFileError {
    /// The file.
    pub path: PathBuf,
    /// The system's error.
    #[source]
    pub source: io::Error,
}

fn open_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "its directory does not exist".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ if e.raw_os_error() == Some(libc::EISDIR) => "it is a directory".to_owned(),
        _ => e.to_string(),
    }
}

/// Installs the subscriber: `RUST_LOG` if set, else `level`; lines go to
/// `file` (appended, created if missing) when given, else to stderr. An
/// unusable file is an error (the caller's usage error), before anything
/// is logged.
pub fn init(level: &str, file: Option<&Path>) -> Result<(), LogFileError> {
    if let Some(path) = file {
        let opened = open_append(path).map_err(|source| LogFileError {
            path: path.to_path_buf(),
            source,
        })?;
        // Reopened at the same place even if the daemon's directory changes.
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        *LOG_FILE.lock() = Some(LogFile { path, file: opened });
    }
    let ansi = file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(format!("warn,fuser=error,musicfs={level}")).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(StderrAboveBar)
        // Colours only on a terminal: journald and log files get plain text.
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
    Ok(())
}

/// Logs every panic through tracing, with the thread's name and a
/// backtrace, so a panic in a background thread is never silent.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!(thread = name, %info, %backtrace, "panic");
        default(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::{ProgressDrawTarget, TermLike};
    use std::sync::Arc;

    /// A terminal screen: lines of text and a cursor row, written by the
    /// bar (through [`TermLike`]) and by the log (through [`Write`]).
    #[derive(Debug, Default)]
    struct Screen {
        lines: Mutex<(Vec<String>, usize)>,
    }

    impl Screen {
        fn put(&self, text: &str) {
            let mut guard = self.lines.lock();
            let (lines, row) = &mut *guard;
            for (i, part) in text.split('\n').enumerate() {
                if i > 0 {
                    *row += 1;
                }
                if lines.len() <= *row {
                    lines.resize(*row + 1, String::new());
                }
                lines[*row].push_str(part);
            }
        }
        /// The lines, without the padding the bar writes to its width.
        fn text(&self) -> Vec<String> {
            let lines = &self.lines.lock().0;
            lines.iter().map(|l| l.trim_end().to_owned()).collect()
        }
    }

    #[derive(Debug, Clone)]
    struct Term(Arc<Screen>);

    impl TermLike for Term {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, n: usize) -> io::Result<()> {
            let mut g = self.0.lines.lock();
            g.1 = g.1.saturating_sub(n);
            Ok(())
        }
        fn move_cursor_down(&self, n: usize) -> io::Result<()> {
            self.0.lines.lock().1 += n;
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> io::Result<()> {
            self.0.put(s);
            self.0.put("\n");
            Ok(())
        }
        fn write_str(&self, s: &str) -> io::Result<()> {
            self.0.put(s);
            Ok(())
        }
        fn clear_line(&self) -> io::Result<()> {
            let mut guard = self.0.lines.lock();
            let (lines, row) = &mut *guard;
            if let Some(line) = lines.get_mut(*row) {
                line.clear();
            }
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Write for Term {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.put(&String::from_utf8_lossy(buf));
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reopen_sends_the_next_line_to_a_new_file_and_loses_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("musicfs.log");
        let file = open_append(&path).unwrap();
        *LOG_FILE.lock() = Some(LogFile {
            path: path.clone(),
            file,
        });
        let mut out = StderrAboveBar;
        out.write_all(b"one\n").unwrap();
        let rotated = dir.path().join("musicfs.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        out.write_all(b"two\n").unwrap(); // before the reopen: still the old file
        assert_eq!(reopen().unwrap(), Some(path.clone()));
        out.write_all(b"three\n").unwrap();
        *LOG_FILE.lock() = None;
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        assert_eq!(reopen().unwrap(), None, "no log file: nothing to reopen");
    }

    #[test]
    fn log_lines_go_above_the_progress_bar() {
        let screen = Arc::new(Screen::default());
        let term = Term(Arc::clone(&screen));
        let bar = ProgressBar::with_draw_target(
            Some(100),
            ProgressDrawTarget::term_like(Box::new(term.clone())),
        );
        bar.set_style(indicatif::ProgressStyle::with_template("scanning {pos}/{len}").unwrap());
        bar.set_position(10);
        bar.tick();
        assert_eq!(screen.text().concat(), "scanning 10/100");

        let mut out = term.clone();
        write_above(Some(&bar), &mut out, b"WARN unreadable audio file a.flac\n").unwrap();
        write_above(Some(&bar), &mut out, b"WARN unreadable audio file b.flac\n").unwrap();
        let lines: Vec<String> = screen
            .text()
            .into_iter()
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            lines,
            [
                "WARN unreadable audio file a.flac",
                "WARN unreadable audio file b.flac",
                "scanning 10/100"
            ],
            "each log line on its own line, the bar below them"
        );
    }
}
