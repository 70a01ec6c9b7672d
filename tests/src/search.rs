//! A synthetic, deterministic library of search documents, for the search
//! index's tests and its benchmark (`io-shell/examples/search_bench.rs`).
//!
//! Track `i` is on album `i / 10` (ten tracks each) by artist `album / 4`
//! (four albums each), so 20,000 tracks make 2,000 albums by 500 artists.
//! Names mix plain and accented words; every title ends in a unique word
//! `no<i>` that finds exactly that track.

use musicfs::search::SearchDoc;

const ADJECTIVES: [&str; 25] = [
    "Velvet",
    "Björk",
    "Crimson",
    "Sigur",
    "Electric",
    "Motörhead",
    "Silent",
    "Golden",
    "Hollow",
    "Neon",
    "Beyoncé",
    "Radiant",
    "Frozen",
    "Wandering",
    "Broken",
    "Sunlit",
    "Café",
    "Iron",
    "Paper",
    "Distant",
    "Mötley",
    "Quiet",
    "Savage",
    "Lunar",
    "Échoes",
];

const NOUNS: [&str; 20] = [
    "Ravens",
    "Rós",
    "Orchestra",
    "Collective",
    "Machines",
    "Harbor",
    "Tigers",
    "Lanterns",
    "Crüe",
    "Engines",
    "Garden",
    "Satellites",
    "Wolves",
    "Tempest",
    "Mirrors",
    "Pilots",
    "Canyon",
    "Fountain",
    "Glaciers",
    "Society",
];

const TITLE_WORDS: [&str; 30] = [
    "Midnight",
    "River",
    "Dancing",
    "Shadows",
    "Télépathe",
    "Summer",
    "Highway",
    "Whisper",
    "Thunder",
    "Memory",
    "Ocean",
    "Blue",
    "Fire",
    "Wildflower",
    "Stranger",
    "Heartbeat",
    "Echo",
    "Morning",
    "Desert",
    "Crystal",
    "Hurricane",
    "Paradise",
    "Gravity",
    "Starlight",
    "Rain",
    "Señorita",
    "Forever",
    "Daydream",
    "Lullaby",
    "Voyage",
];

/// The genres, far apart enough that typo tolerance never mixes them up.
pub const GENRES: [&str; 8] = [
    "Rock",
    "Jazz",
    "Electronic",
    "Hip-Hop",
    "Classical",
    "Folk",
    "Metal",
    "Ambient",
];

/// The formats, by album.
pub const FORMATS: [(&str, &str); 4] = [
    ("FLAC", "flac"),
    ("MP3", "mp3"),
    ("Opus", "opus"),
    ("AAC", "m4a"),
];

/// The artist of artist number `a`.
pub fn artist_name(a: usize) -> String {
    format!(
        "{} {}",
        ADJECTIVES[a % ADJECTIVES.len()],
        NOUNS[(a / ADJECTIVES.len()) % NOUNS.len()]
    )
}

/// The year of album number `album`.
pub fn album_year(album: usize) -> i32 {
    1960 + (album % 60) as i32
}

/// Track `i` of the synthetic library.
pub fn synthetic_doc(i: usize) -> SearchDoc {
    let album = i / 10;
    let artist = album / 4;
    let track = i % 10 + 1;
    let artist_name = artist_name(artist);
    let album_name = format!(
        "{} {}",
        TITLE_WORDS[(album * 7) % TITLE_WORDS.len()],
        NOUNS[(album * 3) % NOUNS.len()]
    );
    let title = format!(
        "{} {} no{i}",
        TITLE_WORDS[i % TITLE_WORDS.len()],
        TITLE_WORDS[(i / TITLE_WORDS.len() + 11) % TITLE_WORDS.len()]
    );
    let year = album_year(album);
    let (format, ext) = FORMATS[album % FORMATS.len()];
    SearchDoc {
        vpath: format!("{artist_name}/{year} - {album_name}/{track:02} - {title}.{ext}"),
        artist: Some(artist_name.clone()),
        album_artist: Some(artist_name),
        album: Some(album_name),
        title: Some(title),
        genre: Some(GENRES[artist % GENRES.len()].to_owned()),
        year: Some(year),
        format: Some(format.to_owned()),
    }
}

/// The first `n` tracks of the synthetic library.
pub fn synthetic_docs(n: usize) -> Vec<SearchDoc> {
    (0..n).map(synthetic_doc).collect()
}
