//! How errors are shown. Errors are typed in each layer and keep their
//! causes (`source()`); these turn them into text for a person: the chain
//! of causes on one line for logs and status answers, or one cause a line
//! for the `musicfs` command's final message.

use std::fmt;
use std::io;

/// An error and every cause under it (`std::error::Error::source`), joined
/// with ": ". A cause whose text is already shown (many errors repeat their
/// source in their own message) is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// `error` and its causes as the command prints it when it fails:
///
/// ```text
/// cannot mount at '/mnt/music'
///   caused by: Permission denied (os error 13)
/// ```
///
/// A cause whose text its error already shows is left out.
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !text.is_empty() && !shown.contains(&text) {
                write!(f, "\n  caused by: {text}")?;
                shown.push_str(&text);
            }
            next = cause.source();
        }
        Ok(())
    }
}

/// An I/O error in plain words: "no such file or directory" and
/// "permission denied" without the errno, others as the system says them.
pub fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chains_show_every_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("send http request")]
        struct Top(#[source] Middle);
        #[derive(Debug, thiserror::Error)]
        #[error("tcp connect error: {0}")]
        struct Middle(#[source] io::Error);
        let e = Top(Middle(io::Error::from_raw_os_error(libc::ECONNREFUSED)));
        let text = error_chain(&e);
        assert!(
            text.starts_with("send http request: tcp connect error: Connection refused"),
            "{text}"
        );
        assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
    }

    #[test]
    fn reports_show_each_cause_on_its_own_line() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot mount at '/mnt'")]
        struct Top(#[source] Middle);
        #[derive(Debug, thiserror::Error)]
        #[error("mount(2) failed: {0}")]
        struct Middle(#[source] io::Error);
        let e = Top(Middle(io::Error::from_raw_os_error(libc::EPERM)));
        let text = Report(&e).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "cannot mount at '/mnt'",
                "  caused by: mount(2) failed: Operation not permitted (os error 1)"
            ],
            "the io::Error is in its wrapper's text already"
        );
    }
}
