//! Valid, stable file names for the virtual tree.
//!
//! Tag values are written by whatever tagger the user ran, years ago: they
//! hold slashes ("AC/DC"), NULs, tabs, newlines, leading dots, kilobytes of
//! text. The kernel rejects a directory entry with a `/` or a NUL in it or
//! one longer than `NAME_MAX`, shells and file managers hide names that start
//! with a dot, and tools choke on trailing spaces. Every name the tree shows
//! therefore goes through this module, which guarantees two things:
//!
//! - **validity**: whatever the input, the output satisfies
//!   [`is_valid_name`], so the io-shell can hand it to FUSE unchecked;
//! - **stability**: the output depends on the input strings alone (no
//!   locale, no clock, no hashing), so the same library always shows the same
//!   names across mounts and machines, and players' playlists keep working.
//!
//! The functions are deliberately total: they never fail and never panic,
//! because a name that cannot be produced would mean a track that cannot be
//! shown.

/// The longest component Linux accepts (`NAME_MAX`), in bytes, not chars:
/// the limit is on the encoded name, so a title in CJK or emoji reaches it
/// with a quarter of the characters an ASCII one needs.
pub const NAME_MAX_BYTES: usize = 255;

/// An "extension" longer than this is not one a player would recognise, so
/// it is not worth keeping at the cost of the base: it is cut like the rest.
const MAX_EXT_BYTES: usize = 32;

/// What a base that sanitises or cuts down to nothing becomes: one visible
/// character that never needs escaping in a shell.
const EMPTY_BASE: &str = "_";

/// Characters that must not start or end a component: a leading dot hides the
/// file (and "." and ".." are not files at all), and leading or trailing
/// whitespace is invisible in listings and usually lost by copy and paste.
fn is_trimmable(c: char) -> bool {
    c == '.' || c.is_whitespace()
}

/// Makes one path component safe out of arbitrary text.
///
/// A `/` becomes `_` rather than disappearing, so "AC/DC" stays readable as
/// "AC_DC" instead of gluing into "ACDC". Control characters (Unicode `Cc`:
/// NUL, tab, newline, DEL, ...) become a space because they usually separate
/// words. Leading and trailing dots and whitespace are then trimmed, so
/// ".hidden" shows as "hidden" and "Trailing Dot." as "Trailing Dot".
///
/// The result may be empty ("...", "  ", ""): callers decide the fallback,
/// because only they know whether "Unknown Album" or the file's stem is the
/// right one. Applying it twice changes nothing.
pub fn sanitize_component(raw: &str) -> String {
    // Most tags need no change: one allocation, not two (a tree build
    // sanitizes several components of every track).
    if !raw.chars().any(|c| c == '/' || c.is_control()) {
        return raw.trim_matches(is_trimmable).to_owned();
    }
    let mapped: String = raw
        .chars()
        .map(|c| match c {
            '/' => '_',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    mapped.trim_matches(is_trimmable).to_owned()
}

/// Builds a file name from a base and an extension that fits in
/// [`NAME_MAX_BYTES`].
///
/// The extension is what makes a player open the file, so when the name is
/// too long the base is cut, never the extension. The cut falls on a `char`
/// boundary so the name stays valid UTF-8, and trailing dots and spaces the
/// cut exposes are trimmed again so the name stays valid. A base that ends up
/// empty becomes `_`. An empty extension gives just the base, with no dot,
/// which is how directory names are fitted.
///
/// Both parts are sanitised first, so any input gives a valid name (a leading
/// dot on `ext` is dropped, so ".flac" works like "flac"). An extension of
/// more than 32 bytes is treated as part of the base: it is not a real
/// extension and keeping it whole could starve the base.
pub fn fit_name(base: &str, ext: &str) -> String {
    let parts = Parts::new(base, ext);
    parts.join(parts.cut(""), "")
}

/// The `n`-th variant of a name already taken in its directory, for `n >= 2`:
/// "Intro.flac" gives "Intro (2).flac", "Greatest Hits" gives
/// "Greatest Hits (2)".
///
/// `ext` is passed separately (empty for directories) because a dot inside a
/// title or an album name ("Vol. 2", "Mr. Blue Sky") must not be mistaken for
/// an extension. The suffix is placed before the extension so the file still
/// plays, and the base is cut rather than the suffix so variants of a long
/// name stay distinct: for one `base` and `ext`, every `n` gives a different
/// name, and none equals [`fit_name`]`(base, ext)`.
///
/// A variant may still equal some other name in the directory (an album
/// really called "Intro (2)"), so callers must check and try the next `n`.
/// `n` below 2 is not meaningful but still gives a valid name.
pub fn with_collision_suffix(base: &str, ext: &str, n: u32) -> String {
    let original = fit_name(base, ext);
    let parts = Parts::new(base, ext);
    let suffix = format!(" ({n})");
    let mut stem = parts.cut(&suffix);
    loop {
        let name = parts.join(stem, &suffix);
        // Equal only when the base itself ends in this very suffix right at
        // the cut; a shorter stem then makes the variant strictly shorter.
        if name != original || stem.is_empty() {
            return name;
        }
        stem = drop_last_char(stem);
    }
}

/// Whether `name` can be shown as one component of the tree.
///
/// Valid means: non-empty, at most [`NAME_MAX_BYTES`] bytes, no `/`, no
/// control character (NUL included), and neither starting nor ending with a
/// dot or whitespace. The last rule also excludes "." and "..". It is exactly
/// the set of names this module produces, so a tree built only from
/// [`fit_name`] and [`with_collision_suffix`] can assert it everywhere.
pub fn is_valid_name(name: &str) -> bool {
    let (Some(first), Some(last)) = (name.chars().next(), name.chars().next_back()) else {
        return false;
    };
    name.len() <= NAME_MAX_BYTES
        && !is_trimmable(first)
        && !is_trimmable(last)
        && !name.chars().any(|c| c == '/' || c.is_control())
}

/// Splits a file name at its last dot into base and extension (without the
/// dot): "01 Song.flac" gives ("01 Song", "flac").
///
/// A name without a dot, with its only dot first (".hidden") or with a dot
/// last ("Vol.") has no extension and comes back whole with an empty `ext`,
/// so `base` is never empty for a non-empty name. Only use this on names
/// known to be files: for directories and titles, a dot is just a character.
pub fn split_ext(name: &str) -> (&str, &str) {
    match name.rsplit_once('.') {
        Some((base, ext)) if !base.is_empty() && !ext.is_empty() => (base, ext),
        _ => (name, ""),
    }
}

/// A base and an extension, sanitised, with an over-long extension folded
/// into the base.
struct Parts {
    base: String,
    ext: String,
}

impl Parts {
    fn new(base: &str, ext: &str) -> Parts {
        let base = sanitize_component(base);
        let ext = sanitize_component(ext);
        if ext.len() > MAX_EXT_BYTES {
            let base = sanitize_component(&format!("{base}.{ext}"));
            return Parts {
                base,
                ext: String::new(),
            };
        }
        Parts { base, ext }
    }

    /// The longest prefix of the base that leaves room for `suffix` and the
    /// extension, with the trailing dots and spaces the cut exposed trimmed.
    fn cut(&self, suffix: &str) -> &str {
        let dot_ext = if self.ext.is_empty() {
            0
        } else {
            self.ext.len() + 1
        };
        let budget = NAME_MAX_BYTES.saturating_sub(suffix.len() + dot_ext);
        prefix_within(&self.base, budget).trim_end_matches(is_trimmable)
    }

    fn join(&self, stem: &str, suffix: &str) -> String {
        let stem = if stem.is_empty() { EMPTY_BASE } else { stem };
        let mut name = String::with_capacity(stem.len() + suffix.len() + self.ext.len() + 1);
        name.push_str(stem);
        name.push_str(suffix);
        if !self.ext.is_empty() {
            name.push('.');
            name.push_str(&self.ext);
        }
        name
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a `char`
/// boundary.
fn prefix_within(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let end = (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    &s[..end]
}

/// `s` without its last char, trimmed again so the result stays a valid base.
fn drop_last_char(s: &str) -> &str {
    let mut chars = s.chars();
    chars.next_back();
    chars.as_str().trim_end_matches(is_trimmable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_replaces_slashes_and_controls() {
        assert_eq!(sanitize_component("AC/DC"), "AC_DC");
        assert_eq!(sanitize_component("Either/Or"), "Either_Or");
        assert_eq!(sanitize_component("Null\u{0}Byte"), "Null Byte");
        assert_eq!(sanitize_component("Control\tChars\n"), "Control Chars");
        assert_eq!(sanitize_component("Del\u{7f}ete"), "Del ete");
        assert_eq!(sanitize_component("/"), "_");
    }

    #[test]
    fn sanitize_trims_dots_and_whitespace() {
        assert_eq!(sanitize_component(".hidden"), "hidden");
        assert_eq!(sanitize_component("Title. "), "Title");
        assert_eq!(sanitize_component("...And Justice"), "And Justice");
        assert_eq!(sanitize_component("  Spaces  "), "Spaces");
        assert_eq!(
            sanitize_component("\u{3000}Ideographic\u{a0}"),
            "Ideographic"
        );
        assert_eq!(sanitize_component(".."), "");
        assert_eq!(sanitize_component(" . \n"), "");
    }

    #[test]
    fn sanitize_keeps_everything_else() {
        for s in [
            "Mr. Blue Sky",
            "🎵 日本語 ½",
            "CON",
            "NUL",
            "Percent %s %n",
            "$x {y}",
        ] {
            assert_eq!(sanitize_component(s), s);
        }
    }

    #[test]
    fn sanitize_is_idempotent() {
        for s in ["a/b\0. ", "..x..", " \t", "plain"] {
            let once = sanitize_component(s);
            assert_eq!(sanitize_component(&once), once);
        }
    }

    #[test]
    fn fit_name_joins_and_handles_empty_parts() {
        assert_eq!(fit_name("Intro", "flac"), "Intro.flac");
        assert_eq!(fit_name("Greatest Hits", ""), "Greatest Hits");
        assert_eq!(fit_name("", "flac"), "_.flac");
        assert_eq!(fit_name("...", ""), "_");
        assert_eq!(fit_name("Song", ".flac"), "Song.flac");
    }

    #[test]
    fn fit_name_cuts_the_base_and_keeps_the_extension() {
        let name = fit_name(&"T".repeat(300), "flac");
        assert_eq!(name.len(), NAME_MAX_BYTES);
        assert!(name.ends_with("T.flac"));
        // 4-byte chars: the cut must land on a boundary below the budget.
        let name = fit_name(&"😀".repeat(100), "flac");
        assert!(name.len() <= NAME_MAX_BYTES);
        assert!(name.ends_with("😀.flac"));
        assert!(is_valid_name(&name));
    }

    #[test]
    fn fit_name_trims_what_the_cut_exposes() {
        let base = format!("{}.  {}", "a".repeat(249), "b".repeat(10));
        assert_eq!(fit_name(&base, "flac"), format!("{}.flac", "a".repeat(249)));
    }

    #[test]
    fn fit_name_folds_a_long_extension_into_the_base() {
        let ext = "e".repeat(40);
        assert_eq!(fit_name("x", &ext), format!("x.{ext}"));
        let name = fit_name(&"b".repeat(300), &ext);
        assert_eq!(name, "b".repeat(NAME_MAX_BYTES));
    }

    #[test]
    fn collision_suffix_goes_before_the_extension() {
        assert_eq!(with_collision_suffix("Intro", "flac", 2), "Intro (2).flac");
        assert_eq!(
            with_collision_suffix("Greatest Hits", "", 2),
            "Greatest Hits (2)"
        );
        assert_eq!(with_collision_suffix("Vol. 2", "", 3), "Vol. 2 (3)");
        assert_eq!(with_collision_suffix("", "mp3", 2), "_ (2).mp3");
    }

    #[test]
    fn collision_suffix_survives_truncation() {
        let name = with_collision_suffix(&"T".repeat(300), "flac", 12);
        assert_eq!(name.len(), NAME_MAX_BYTES);
        assert!(name.ends_with("T (12).flac"));
    }

    #[test]
    fn collision_suffix_never_reproduces_the_original() {
        // A base that already ends in " (2)" exactly where the variant's cut
        // would put it.
        let base = format!("{} (2)", "x".repeat(NAME_MAX_BYTES - 4 - 5));
        let original = fit_name(&base, "flac");
        let variant = with_collision_suffix(&base, "flac", 2);
        assert_ne!(variant, original);
        assert!(is_valid_name(&variant));
    }

    #[test]
    fn validity() {
        for ok in ["a", "Intro (2).flac", "CON", "_", "日本", "a.b"] {
            assert!(is_valid_name(ok), "{ok:?}");
        }
        let too_long = "a".repeat(NAME_MAX_BYTES + 1);
        for bad in [
            "", ".", "..", ".hidden", "a/b", "a\0b", "tab\t", " a", "a ", "a.", &too_long,
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn split_ext_cases() {
        assert_eq!(split_ext("01 Song.flac"), ("01 Song", "flac"));
        assert_eq!(split_ext("a.tar.gz"), ("a.tar", "gz"));
        assert_eq!(split_ext("noext"), ("noext", ""));
        assert_eq!(split_ext(".hidden"), (".hidden", ""));
        assert_eq!(split_ext("Vol."), ("Vol.", ""));
    }
}
