//! Playlists: an origin's `.m3u` / `.m3u8` rewritten to paths of the mount.
//!
//! The tree shows each playlist in the top-level `Playlists/` folder with
//! every entry that names a track of the library replaced by that track's
//! path in the mount, relative to the playlist (`../Björk/Homogenic/03 -
//! Jóga.flac`), so players resolve it whatever the mountpoint. An entry that
//! matches no track is kept as a comment (`# not in the library: x.mp3`),
//! together with the `#EXTINF` lines that described it, so no player
//! attaches them to the next track. Other comment lines and URLs (streams)
//! are kept as they are.
//!
//! The bytes are a pure function of the playlist's bytes and the tree, so
//! they are computed when the tree is built and served from memory.
//!
//! Entries are understood the way players write them: relative to the
//! playlist's folder, absolute (`/home/me/Music/Björk/...`, `C:\Music\...`:
//! matched by their longest tail that is a path in an origin), `file://`
//! URLs (percent-decoded), with `\` or `/` separators. The text is UTF-8
//! (a BOM is dropped) or, when it is not valid UTF-8, Windows-1252's Latin-1
//! part, as old `.m3u` files are; the result is always UTF-8.

use std::borrow::Cow;

/// What an entry that matches no track becomes (followed by the entry).
pub const NOT_IN_LIBRARY: &str = "# not in the library: ";

/// Decodes a playlist's bytes: UTF-8 without its BOM, else Latin-1.
pub fn decode(bytes: &[u8]) -> Cow<'_, str> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

/// The origin paths an entry may name, best first: for a relative entry,
/// the path it has from `playlist_dir` (the playlist's folder in its
/// origin); for an absolute one (or a relative one climbing out of the
/// origin), each of its tails from the longest down to the file name.
/// Empty for URLs other than `file://` and for blank entries.
pub fn candidates(entry: &str, playlist_dir: &[u8]) -> Vec<Vec<u8>> {
    let entry = entry.trim();
    let (path, absolute) = if let Some(rest) = strip_prefix_ignore_case(entry, "file://") {
        // file:///x or file://host/x: the path starts at the next '/'.
        let path = match rest.find('/') {
            Some(i) => &rest[i..],
            None => return Vec::new(),
        };
        (percent_decode(path), true)
    } else if is_url(entry) {
        return Vec::new();
    } else {
        let path = entry.replace('\\', "/");
        let absolute = path.starts_with('/') || has_drive_letter(&path);
        (path.into_bytes(), absolute)
    };
    let components: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    let tails = |comps: &[&[u8]]| -> Vec<Vec<u8>> {
        let comps: Vec<&[u8]> = comps
            .iter()
            .copied()
            .filter(|c| *c != b".." && !is_drive(c))
            .collect();
        (0..comps.len()).map(|i| comps[i..].join(&b'/')).collect()
    };
    if absolute {
        return tails(&components);
    }
    let mut out: Vec<&[u8]> = playlist_dir
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    for (i, c) in components.iter().enumerate() {
        if *c == b".." {
            if out.pop().is_none() {
                // Climbs out of the origin: the rest may still be a path in it.
                return tails(&components[i..]);
            }
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Vec::new();
    }
    vec![out.join(&b'/')]
}

/// A rewritten playlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// The new bytes (UTF-8).
    pub bytes: Vec<u8>,
    /// Entries that matched no track (now comments).
    pub missing: usize,
}

/// Rewrites a playlist: `resolve` gives the mount path (relative to the
/// mount's root, `/`-separated) of the track at an origin path, if there is
/// one; `to_root` leads from the playlist's folder to the root (`../`).
/// Lines end in `\n`; the output is UTF-8.
pub fn rewrite(
    bytes: &[u8],
    playlist_dir: &[u8],
    to_root: &str,
    mut resolve: impl FnMut(&[u8]) -> Option<String>,
) -> Rewritten {
    let mut missing = 0;
    let text = decode(bytes);
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    // `#EXTINF` (and the `#EXT` lines after it) describe the next entry:
    // held back until it is known whether that entry is in the library.
    let mut held: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let trimmed = line.trim();
        if trimmed.is_empty() {
            flush(&mut out, &mut held, "");
            out.push('\n');
            continue;
        }
        if trimmed.starts_with('#') {
            if trimmed.starts_with("#EXTINF") || (!held.is_empty() && trimmed.starts_with("#EXT")) {
                held.push(line);
            } else {
                flush(&mut out, &mut held, "");
                push_line(&mut out, line);
            }
            continue;
        }
        if is_url(trimmed) && strip_prefix_ignore_case(trimmed, "file://").is_none() {
            flush(&mut out, &mut held, "");
            push_line(&mut out, line);
            continue;
        }
        match candidates(trimmed, playlist_dir)
            .iter()
            .find_map(|c| resolve(c))
        {
            Some(mount_path) => {
                flush(&mut out, &mut held, "");
                out.push_str(to_root);
                push_line(&mut out, &mount_path);
            }
            None => {
                missing += 1;
                flush(&mut out, &mut held, "# ");
                out.push_str(NOT_IN_LIBRARY);
                push_line(&mut out, trimmed);
            }
        }
    }
    flush(&mut out, &mut held, "");
    Rewritten {
        bytes: out.into_bytes(),
        missing,
    }
}

fn flush(out: &mut String, held: &mut Vec<&str>, prefix: &str) {
    for line in held.drain(..) {
        out.push_str(prefix);
        push_line(out, line);
    }
}

/// Adds a line; control characters (a stray NUL, a lone CR) become spaces
/// so the output stays one entry per line.
fn push_line(out: &mut String, line: &str) {
    out.extend(line.chars().map(|c| if c.is_control() { ' ' } else { c }));
    out.push('\n');
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `scheme://...` with an ASCII scheme of two letters or more (so `C://x`
/// stays a drive).
fn is_url(s: &str) -> bool {
    match s.find("://") {
        Some(i) if i >= 2 => s[..i]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')),
        _ => false,
    }
}

fn has_drive_letter(path: &str) -> bool {
    let b = path.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

fn is_drive(component: &[u8]) -> bool {
    component.len() == 2 && component[0].is_ascii_alphabetic() && component[1] == b':'
}

/// `%XX` to bytes; anything malformed is kept as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(hex) = b.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(entry: &str, dir: &str) -> Vec<String> {
        candidates(entry, dir.as_bytes())
            .into_iter()
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .collect()
    }

    #[test]
    fn relative_entries_resolve_from_the_playlist_folder() {
        assert_eq!(cands("a/b.flac", "lists"), ["lists/a/b.flac"]);
        assert_eq!(cands("../Björk/x.flac", "lists"), ["Björk/x.flac"]);
        assert_eq!(cands("./x.flac", ""), ["x.flac"]);
        assert_eq!(cands("..\\A\\x.mp3", "p"), ["A/x.mp3"]);
        // Climbing out of the origin: tails of what is left.
        assert_eq!(
            cands("../../M/A/x.mp3", "p"),
            ["M/A/x.mp3", "A/x.mp3", "x.mp3"]
        );
        assert!(cands("..", "p").is_empty());
        assert!(cands("   ", "").is_empty());
    }

    #[test]
    fn absolute_entries_and_urls() {
        assert_eq!(
            cands("/home/me/Music/A/x.flac", "p"),
            [
                "home/me/Music/A/x.flac",
                "me/Music/A/x.flac",
                "Music/A/x.flac",
                "A/x.flac",
                "x.flac"
            ]
        );
        assert_eq!(
            cands("C:\\Music\\A\\x.mp3", ""),
            ["Music/A/x.mp3", "A/x.mp3", "x.mp3"]
        );
        assert_eq!(
            cands("file:///m/J%C3%B3ga%20x.flac", ""),
            ["m/Jóga x.flac", "Jóga x.flac"]
        );
        assert_eq!(cands("FILE://host/m/x.flac", ""), ["m/x.flac", "x.flac"]);
        assert!(cands("http://radio/stream.mp3", "").is_empty());
        assert_eq!(percent_decode("%zz%4"), b"%zz%4");
    }

    #[test]
    fn decoding_falls_back_to_latin1() {
        assert_eq!(decode(b"\xEF\xBB\xBFabc"), "abc");
        assert_eq!(decode(b"Bj\xF6rk"), "Björk");
        assert_eq!(decode("Björk".as_bytes()), "Björk");
    }

    #[test]
    fn rewrites_entries_and_comments_the_rest() {
        let playlist = b"#EXTM3U\r\n#EXTINF:123,Bj\xF6rk - J\xF3ga\r\n03 J\xF3ga.flac\r\n#EXTINF:1,Gone\r\ngone.mp3\r\nhttp://radio/x\r\n\r\n# my comment\r\n";
        let out = rewrite(playlist, b"Bjork", "../", |p| {
            (p == "Bjork/03 Jóga.flac".as_bytes()).then(|| "Björk/Homogenic/03 - Jóga.flac".into())
        });
        assert_eq!(out.missing, 1);
        let out = String::from_utf8(out.bytes).unwrap_or_default();
        assert_eq!(
            out,
            "#EXTM3U\n#EXTINF:123,Björk - Jóga\n../Björk/Homogenic/03 - Jóga.flac\n\
             # #EXTINF:1,Gone\n# not in the library: gone.mp3\nhttp://radio/x\n\n# my comment\n"
        );
    }

    #[test]
    fn odd_bytes_never_panic() {
        let nasty: Vec<u8> = (0u8..=255).cycle().take(4096).collect();
        let out = rewrite(&nasty, b"", "../", |_| None).bytes;
        assert!(std::str::from_utf8(&out).is_ok());
        for line in String::from_utf8_lossy(&out).lines() {
            assert!(!line.chars().any(char::is_control), "{line:?}");
        }
        let _ = rewrite(b"%\n%%\nfile://\n\\\\\n:/\n..\n", b"a/b", "../", |_| None);
    }
}
