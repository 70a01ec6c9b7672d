//! Paths inside an origin: which are valid, which are hidden, and the
//! version of a local file. Shared by every origin and every scanner, so
//! that a local walk, an S3 listing and an SFTP listing keep the same files.

use musicfs_core::FileVersion;
use std::io;
use std::os::unix::fs::MetadataExt;

/// Whether a path component is hidden: a leading `.` not followed by
/// another `.`. Tool state is `.git`, `._x.flac`, `.Trash-1000`; album
/// titles that open with an ellipsis (`...And Justice for All`, `...Baby
/// One More Time`) are music and must not vanish with them.
pub fn is_hidden(name: &[u8]) -> bool {
    name.first() == Some(&b'.') && name.get(1) != Some(&b'.')
}

/// Checks an origin-relative path: not empty, not absolute, no `.`, `..`
/// or empty components, no NUL (it would escape or alias the origin).
pub fn validate_rel(rel: &[u8]) -> io::Result<()> {
    let bad = rel.is_empty()
        || rel
            .split(|&b| b == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..")
        || rel.contains(&0);
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "invalid origin-relative path {:?}",
                String::from_utf8_lossy(rel)
            ),
        ));
    }
    Ok(())
}

/// The version of a local file as the catalog records it.
///
/// Size and mtime are what a person changes; the token adds device, inode
/// and ctime so that a file replaced by another of equal size and equal
/// mtime (`cp -p`, `rsync -t`, a tagger restoring mtimes) still reads as
/// changed, and cached chunks of the old bytes are not served for it.
pub fn file_version(meta: &std::fs::Metadata) -> FileVersion {
    let ns = |secs: i64, nanos: i64| secs.saturating_mul(1_000_000_000).saturating_add(nanos);
    FileVersion {
        size: meta.len(),
        mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        token: Some(
            format!(
                "{}:{}:{}",
                meta.dev(),
                meta.ino(),
                ns(meta.ctime(), meta.ctime_nsec())
            )
            .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths_are_checked() {
        for bad in [
            &b""[..],
            b"/abs.flac",
            b"a/../b.flac",
            b"./a.flac",
            b"a//b.flac",
            b"a/",
        ] {
            assert!(
                validate_rel(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for good in [
            &b"a.flac"[..],
            b"A/B/01 x.mp3",
            b"\xff\xfe/x.ogg",
            b"a/..b/c.flac",
        ] {
            assert!(validate_rel(good).is_ok());
        }
    }

    #[test]
    fn hidden_names() {
        assert!(is_hidden(b".git"));
        assert!(is_hidden(b"._01.flac"));
        assert!(is_hidden(b".hidden.flac"));
        assert!(is_hidden(b"."));
        assert!(!is_hidden(b"...And Justice for All"));
        assert!(!is_hidden(b"..."));
        assert!(!is_hidden(b"Album."));
        assert!(!is_hidden(b""));
    }

    #[test]
    fn versions_change_with_the_inode() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"same").unwrap();
        let v1 = file_version(&std::fs::metadata(&a).unwrap());
        let b = dir.path().join("b");
        std::fs::write(&b, b"same").unwrap();
        std::fs::rename(&b, &a).unwrap();
        let v2 = file_version(&std::fs::metadata(&a).unwrap());
        assert_eq!(v1.size, v2.size);
        assert_ne!(v1.token, v2.token);
    }
}
