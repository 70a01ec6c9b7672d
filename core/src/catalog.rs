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
    /// truncated), or a playlist too big to read. Counted and logged, never
    /// shown.
    Unreadable(String),
    /// A `.lrc` or `.txt` file: shown beside the track of the same stem in
    /// the same folder, under that track's name (`03 - Jóga.lrc`); left out
    /// when no track has its stem.
    Lyrics,
    /// Any other image (back, disc, booklet pages, `artist.jpg`): in the
    /// album folder under its own name, or in the artist's folder when its
    /// stem is `artist` (see [`is_artist_image_name`]).
    Image,
    /// A `.cue` sheet: in the album folder under its own name.
    Cue,
    /// An `.m3u` or `.m3u8` playlist and its bytes (at most
    /// [`PLAYLIST_MAX_BYTES`]), read at scan time: the tree shows it in
    /// `Playlists/` with its entries rewritten to paths of the mount.
    Playlist(#[serde(with = "crate::ids::serde_bytes_compat")] Box<[u8]>),
}

/// The largest playlist the scanner reads; a bigger one is logged and
/// listed as unreadable.
pub const PLAYLIST_MAX_BYTES: u64 = 1 << 20;

/// What a file's name says it is; only these files are read into the
/// catalog, everything else is counted (by extension) and skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NameClass {
    /// An audio extension ([`AUDIO_EXTENSIONS`]).
    Audio,
    /// Cover art ([`is_cover_name`]).
    Cover,
    /// `.lrc` or `.txt`.
    Lyrics,
    /// Another image (jpg, jpeg, png, gif, webp).
    Image,
    /// `.cue`.
    Cue,
    /// `.m3u` or `.m3u8`.
    Playlist,
}

/// Image extensions (lower case, no dot).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "gif", "webp"];

/// Classifies a file name (any case); `None` for files MusicFS does not
/// show.
pub fn classify_name(name: &[u8]) -> Option<NameClass> {
    if is_audio_name(name) {
        return Some(NameClass::Audio);
    }
    if is_cover_name(name) {
        return Some(NameClass::Cover);
    }
    match extension_of(name)?.as_str() {
        "lrc" | "txt" => Some(NameClass::Lyrics),
        "cue" => Some(NameClass::Cue),
        "m3u" | "m3u8" => Some(NameClass::Playlist),
        ext if IMAGE_EXTENSIONS.contains(&ext) => Some(NameClass::Image),
        _ => None,
    }
}

/// The extension a skipped file is counted under in the scan summary
/// (`.nfo`), lower case; `(none)` for a name without one.
pub fn skipped_label(name: &[u8]) -> String {
    match extension_of(name) {
        Some(ext) if !ext.is_empty() && ext.len() <= 16 => format!(".{ext}"),
        Some(_) => "(other)".to_owned(),
        None => "(none)".to_owned(),
    }
}

/// Whether an image is an artist's picture (`artist.jpg`, `Artist.png`):
/// shown in the artist's folder rather than an album's.
pub fn is_artist_image_name(name: &[u8]) -> bool {
    let Ok(name) = std::str::from_utf8(name) else {
        return false;
    };
    let lower = name.to_ascii_lowercase();
    match lower.rsplit_once('.') {
        Some((stem, ext)) => stem == "artist" && IMAGE_EXTENSIONS.contains(&ext),
        None => false,
    }
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
    const EXTS: &[&str] = IMAGE_EXTENSIONS;
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

    #[test]
    fn classifies_sidecars() {
        assert_eq!(classify_name(b"03 Joga.LRC"), Some(NameClass::Lyrics));
        assert_eq!(classify_name(b"notes.txt"), Some(NameClass::Lyrics));
        assert_eq!(classify_name(b"back.jpg"), Some(NameClass::Image));
        assert_eq!(classify_name(b"cover.jpg"), Some(NameClass::Cover));
        assert_eq!(classify_name(b"x.flac"), Some(NameClass::Audio));
        assert_eq!(classify_name(b"album.cue"), Some(NameClass::Cue));
        assert_eq!(classify_name(b"mix.m3u8"), Some(NameClass::Playlist));
        assert_eq!(classify_name(b"mix.M3U"), Some(NameClass::Playlist));
        assert_eq!(classify_name(b"info.nfo"), None);
        assert_eq!(classify_name(b"README"), None);
        assert_eq!(skipped_label(b"info.NFO"), ".nfo");
        assert_eq!(skipped_label(b"README"), "(none)");
        assert!(is_artist_image_name(b"Artist.PNG"));
        assert!(!is_artist_image_name(b"artists.png"));
        assert!(!is_artist_image_name(b"artist.txt"));
    }
}
