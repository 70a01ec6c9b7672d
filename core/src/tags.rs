//! What the core knows of a track's tags.
//!
//! The io-shell reads tags with lofty and fills a [`TrackTags`]; the core
//! never parses audio. Every field is optional because real libraries are
//! messy: the layout decides the fallbacks.

use serde::{Deserialize, Serialize};

/// The tags of one audio file, as read from its origin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TrackTags {
    /// Track title.
    pub title: Option<Box<str>>,
    /// Track artist.
    pub artist: Option<Box<str>>,
    /// Album artist (`ALBUMARTIST`, `TPE2`, `aART`).
    pub album_artist: Option<Box<str>>,
    /// Album title.
    pub album: Option<Box<str>>,
    /// Track number within its disc.
    pub track: Option<u32>,
    /// Number of tracks on the disc.
    pub track_total: Option<u32>,
    /// Disc number.
    pub disc: Option<u32>,
    /// Number of discs in the release.
    pub disc_total: Option<u32>,
    /// Release year.
    pub year: Option<i32>,
    /// Genre.
    pub genre: Option<Box<str>>,
    /// The compilation flag (`TCMP`, `cpil`, `COMPILATION=1`).
    pub compilation: bool,
    /// Audio format as a short label: "FLAC", "MP3", "Vorbis", "Opus", "AAC", ...
    pub format: Option<Box<str>>,
}

impl TrackTags {
    /// True when the album artist says this is a various-artists release.
    pub fn is_compilation(&self) -> bool {
        self.compilation
            || self
                .album_artist
                .as_deref()
                .is_some_and(|a| a.trim().eq_ignore_ascii_case("various artists"))
    }
}
