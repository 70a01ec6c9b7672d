//! The catalog: what the scanner found in the origins.
//!
//! A [`CatalogEntry`] is one file of one origin with what the io-shell learned
//! from it. The catalog is persisted by the io-shell and is the only input the
//! virtual tree is built from, so the same catalog always gives the same tree.

use crate::ids::{OriginId, OriginPath};
use crate::manifest::FileVersion;
use crate::tags::TrackTags;
use serde::{Deserialize, Serialize};

/// A file in an origin, at one version.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceFile {
    /// Which origin holds it.
    pub origin: OriginId,
    /// Where in the origin.
    pub path: OriginPath,
    /// Size, mtime and change token when it was scanned.
    pub version: FileVersion,
}

/// What a scanned file turned out to be.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileKind {
    /// Audio whose tags were read.
    Track(TrackTags),
    /// Cover art (cover.jpg, folder.png, ...), shown beside the album's tracks.
    Cover,
    /// Looked like audio but its tags could not be read (corrupt, empty,
    /// truncated). Counted and logged, never shown.
    Unreadable(String),
}

/// One scanned file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// Where the file is.
    pub source: SourceFile,
    /// What it is.
    pub kind: FileKind,
}

/// File extensions the scanner treats as audio (lower case, no dot).
pub const AUDIO_EXTENSIONS: &[&str] = &[
    "flac", "mp3", "ogg", "oga", "opus", "m4a", "m4b", "mp4", "aac", "alac", "wav", "wave", "aif",
    "aiff", "aifc", "wv", "ape", "mpc", "spx",
];

/// Whether a file name (any case) has an audio extension.
pub fn is_audio_name(name: &[u8]) -> bool {
    extension_of(name).is_some_and(|ext| AUDIO_EXTENSIONS.contains(&ext.as_str()))
}

/// Whether a file name is cover art that belongs beside an album's tracks:
/// `cover`, `folder`, `front`, `album`, `albumart` or `albumartsmall`, as
/// jpg, jpeg, png, gif or webp, in any case.
pub fn is_cover_name(name: &[u8]) -> bool {
    const STEMS: &[&str] = &[
        "cover",
        "folder",
        "front",
        "album",
        "albumart",
        "albumartsmall",
    ];
    const EXTS: &[&str] = &["jpg", "jpeg", "png", "gif", "webp"];
    let Ok(name) = std::str::from_utf8(name) else {
        return false;
    };
    let lower = name.to_ascii_lowercase();
    match lower.rsplit_once('.') {
        Some((stem, ext)) => STEMS.contains(&stem) && EXTS.contains(&ext),
        None => false,
    }
}

fn extension_of(name: &[u8]) -> Option<String> {
    let dot = name.iter().rposition(|&b| b == b'.')?;
    if dot == 0 {
        return None;
    }
    Some(String::from_utf8_lossy(&name[dot + 1..]).to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_audio_and_covers() {
        assert!(is_audio_name(b"01 Song.FLAC"));
        assert!(is_audio_name(b"x.opus"));
        assert!(!is_audio_name(b".flac"));
        assert!(!is_audio_name(b"notes.txt"));
        assert!(is_cover_name(b"Cover.png"));
        assert!(is_cover_name(b"folder.jpg"));
        assert!(!is_cover_name(b"scan-01.jpg"));
        assert!(!is_cover_name(b"cover"));
    }
}
