//! `--layout FORMAT`: how a track's tags become its path in the tree.
//!
//! A layout is a template such as [`DEFAULT_LAYOUT`],
//! `$albumartist/$album/$track - $title.$ext`: `/` separates path
//! components, `$name` or `${name}` inserts a [`Field`] (names are
//! case-insensitive), and `$$` is a literal `$`. Braces are for a field
//! followed by a letter or digit: `${disc}a`.
//!
//! The template is parsed once, at mount time, so a typo is reported before
//! anything is mounted instead of showing up as a tree of "Unknown" folders.
//! Rendering then cannot fail: every field has a fallback and every component
//! goes through [`crate::naming`], so any tags give valid names.
//!
//! Tag values are sanitised *before* they are substituted, so a `/` in a tag
//! ("AC/DC") never creates a directory, and they are never parsed as a
//! template, so a title containing `$album` shows literally.

use crate::naming::{fit_name, sanitize_component};
use crate::tags::TrackTags;
use std::fmt;
use std::str::FromStr;

/// The layout used when `--layout` is not given: one folder per album artist,
/// one per album, tracks in play order.
pub const DEFAULT_LAYOUT: &str = "$albumartist/$album/$track - $title.$ext";

const UNKNOWN_ARTIST: &str = "Unknown Artist";
const UNKNOWN_ALBUM: &str = "Unknown Album";
const UNKNOWN_GENRE: &str = "Unknown Genre";
const UNTITLED: &str = "Untitled";
const VARIOUS_ARTISTS: &str = "Various Artists";

/// A value a layout can insert. Each has a fallback, so a track with no tags
/// at all still renders to a full path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// `$albumartist`: "Various Artists" for compilations, otherwise the
    /// album artist, the artist, or "Unknown Artist". It is the default top
    /// level because it keeps an album's tracks together even when each has
    /// a different featured artist.
    AlbumArtist,
    /// `$artist`: the track artist, the album artist, or "Unknown Artist".
    Artist,
    /// `$album`: the album title or "Unknown Album".
    Album,
    /// `$track`: the track number padded to two digits so names sort in play
    /// order ("03"), "00" when missing, prefixed by the disc ("2-03") when
    /// the caller says the album has several discs.
    Track,
    /// `$title`: the title, else the origin file's stem (often the title
    /// anyway), else "Untitled".
    Title,
    /// `$ext`: the origin's extension, lower case. Keeping it is what lets
    /// players recognise the file.
    Ext,
    /// `$year`: the release year, empty when missing (no sensible default).
    Year,
    /// `$genre`: the genre or "Unknown Genre".
    Genre,
    /// `$disc`: the disc number, "1" when missing.
    Disc,
    /// `$format`: the audio format ("FLAC", "Opus"), else the extension in
    /// upper case.
    Format,
}

impl Field {
    /// Every field, in the order error messages list them.
    pub const ALL: [Field; 10] = [
        Field::AlbumArtist,
        Field::Artist,
        Field::Album,
        Field::Track,
        Field::Title,
        Field::Ext,
        Field::Year,
        Field::Genre,
        Field::Disc,
        Field::Format,
    ];

    /// The name written after `$` in a template.
    pub fn name(self) -> &'static str {
        match self {
            Field::AlbumArtist => "albumartist",
            Field::Artist => "artist",
            Field::Album => "album",
            Field::Track => "track",
            Field::Title => "title",
            Field::Ext => "ext",
            Field::Year => "year",
            Field::Genre => "genre",
            Field::Disc => "disc",
            Field::Format => "format",
        }
    }

    /// The field called `name`, ignoring ASCII case so `$Title` and `$TITLE`
    /// work as users expect.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.name())
    }
}

/// Why a `--layout` string was rejected. Positions are byte offsets of the
/// offending `$` in the format string, so the CLI can point at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// `$name` or `${name}` with a name that is not a [`Field`].
    UnknownField {
        /// The name as written, without `$` or braces.
        name: String,
        /// Byte offset of its `$`.
        position: usize,
    },
    /// The format string is empty: there would be no file name.
    Empty,
    /// A component is empty (`a//b`, a leading or trailing `/`) or only
    /// literal dots and spaces (`./x`), which would name no directory.
    EmptyComponent,
    /// A `$` at the end or followed by something that starts no field name;
    /// `$$` is the way to write a literal `$`.
    DanglingDollar {
        /// Byte offset of the `$`.
        position: usize,
    },
    /// `${` without a closing `}`.
    UnclosedBrace {
        /// Byte offset of the `$`.
        position: usize,
    },
    /// The file name (the part after the last `/`) has neither `$title`
    /// nor `$track`, so all the tracks of a folder would render to one name
    /// and become "name (2)", "name (3)", ...
    NoTrackField {
        /// The file-name part as written.
        file: String,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::UnknownField { name, position } => {
                write!(f, "unknown layout field \"${name}\" at byte {position}")?;
                if let Some(near) = closest_field(name) {
                    write!(f, " (did you mean {near}?)")?;
                }
                write!(f, "; valid fields: {}", FieldList)
            }
            LayoutError::Empty => f.write_str("the layout is empty; try \"$title.$ext\""),
            LayoutError::EmptyComponent => f.write_str(
                "the layout has an empty path component (\"//\", a leading or trailing \"/\", \
                 or one of only dots and spaces)",
            ),
            LayoutError::DanglingDollar { position } => write!(
                f,
                "\"$\" at byte {position} starts no field (write \"$$\" for a literal \"$\"); \
                 valid fields: {FieldList}"
            ),
            LayoutError::UnclosedBrace { position } => {
                write!(f, "\"${{\" at byte {position} has no closing \"}}\"")
            }
            LayoutError::NoTrackField { file } => write!(
                f,
                "the file name \"{file}\" has neither $title nor $track, so every track in \
                 a folder would get the same name (numbered \" (2)\", \" (3)\", ...); \
                 put one in the part after the last \"/\", e.g. \"{DEFAULT_LAYOUT}\""
            ),
        }
    }
}

impl std::error::Error for LayoutError {}

/// Lists the valid fields as "$albumartist, $artist, ...".
struct FieldList;

impl fmt::Display for FieldList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, field) in Field::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{field}")?;
        }
        Ok(())
    }
}

/// The field a misspelt name most likely meant, if one is close enough for
/// the suggestion to help rather than confuse.
fn closest_field(name: &str) -> Option<Field> {
    let name = name.to_ascii_lowercase();
    Field::ALL
        .into_iter()
        .map(|f| (edit_distance(&name, f.name()), f))
        .filter(|&(d, _)| d <= 2)
        .min()
        .map(|(_, f)| f)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = Vec::with_capacity(b.len() + 1);
        row.push(i + 1);
        for (j, &cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            row.push(substitute.min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

/// One piece of a component: literal text or a field.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Text(String),
    Field(Field),
}

/// A parsed `--layout`.
///
/// The file name's trailing `.$ext` is kept apart from the rest so that a
/// name cut to fit [`crate::naming::NAME_MAX_BYTES`] loses the end of its
/// title, never its extension. A file name always has it: a layout whose
/// file name does not end in `.$ext` gets it appended, as beets does,
/// because players recognise files by their extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    source: String,
    dirs: Vec<Vec<Token>>,
    /// The file name without its `.$ext`.
    file: Vec<Token>,
}

/// What one track contributes to rendering: its tags plus what only the
/// caller knows.
#[derive(Clone, Copy, Debug)]
pub struct TrackView<'a> {
    /// The track's tags.
    pub tags: &'a TrackTags,
    /// The origin file's extension, lower case, without the dot ("flac").
    pub ext: &'a str,
    /// The origin file's name without its extension, lossily decoded: the
    /// best title there is when the tags have none.
    pub stem: &'a str,
    /// Whether the track's album has more than one disc. The caller decides
    /// it per album, because a single track cannot tell, and it must be the
    /// same for all of the album's tracks or their names would not sort.
    pub multi_disc: bool,
}

impl Layout {
    /// Parses a `--layout` format string. A file name that does not end in
    /// `.$ext` gets `.$ext` appended (and [`Layout::source`] shows it).
    ///
    /// # Errors
    ///
    /// An unknown field name, an empty string, an empty component, a `$`
    /// that starts no field, an unclosed `${`, or a file name with neither
    /// `$title` nor `$track`: see [`LayoutError`].
    pub fn parse(format: &str) -> Result<Layout, LayoutError> {
        if format.is_empty() {
            return Err(LayoutError::Empty);
        }
        let mut components = Parser::new(format).components()?;
        if components.iter().any(|c| is_blank(c)) {
            return Err(LayoutError::EmptyComponent);
        }
        let mut file = components.pop().ok_or(LayoutError::Empty)?;
        if !file
            .iter()
            .any(|t| matches!(t, Token::Field(Field::Title | Field::Track)))
        {
            let name = format.rsplit('/').next().unwrap_or(format);
            return Err(LayoutError::NoTrackField {
                file: name.to_owned(),
            });
        }
        let source = if strip_dot_ext(&mut file) {
            format.to_owned()
        } else {
            format!("{format}.$ext")
        };
        Ok(Layout {
            source,
            dirs: components,
            file,
        })
    }

    /// The layout of [`DEFAULT_LAYOUT`].
    pub fn default_layout() -> Layout {
        Layout {
            source: DEFAULT_LAYOUT.to_owned(),
            dirs: vec![
                vec![Token::Field(Field::AlbumArtist)],
                vec![Token::Field(Field::Album)],
            ],
            file: vec![
                Token::Field(Field::Track),
                Token::Text(" - ".to_owned()),
                Token::Field(Field::Title),
            ],
        }
    }

    /// The format string this layout was parsed from (with the `.$ext`
    /// that parsing appended, if it did), for logs and for noticing that a
    /// persisted tree was built with another layout.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Which directory level of the layout is the artist's folder: the
    /// deepest directory component that inserts `$albumartist` or `$artist`
    /// (0 for the default layout's `$albumartist`). `None` when no
    /// directory names an artist (`$album/$title`): artist images then have
    /// no folder to go to.
    pub fn artist_depth(&self) -> Option<usize> {
        self.dirs.iter().rposition(|dir| {
            dir.iter()
                .any(|t| matches!(t, Token::Field(Field::AlbumArtist | Field::Artist)))
        })
    }

    /// Whether a track's top folder follows from its own tags alone: the
    /// layout has folders, and the first does not show the track number
    /// (the one field that depends on the album's other tracks, through
    /// its disc count). Then tracks under different top folders never
    /// change each other's names, which lets a sync patch the tree
    /// ([`crate::tree::update`]) instead of building it whole.
    pub fn top_folder_is_per_track(&self) -> bool {
        self.dirs
            .first()
            .is_some_and(|top| !top.iter().any(|t| matches!(t, Token::Field(Field::Track))))
    }

    /// Renders one track to its path components: the directories, then the
    /// file name.
    ///
    /// Never empty, and every component satisfies
    /// [`crate::naming::is_valid_name`]. Two tracks may render to the same
    /// path; resolving that is the tree's job
    /// ([`crate::naming::with_collision_suffix`]).
    pub fn render(&self, track: &TrackView<'_>) -> Vec<String> {
        // Sized for the file name too: a tree build holds one per track.
        let mut path = Vec::with_capacity(self.dirs.len() + 1);
        path.extend(
            self.dirs
                .iter()
                .map(|dir| fit_name(&render_tokens(dir, track), "")),
        );
        path.push(self.render_file(track));
        path
    }

    fn render_file(&self, track: &TrackView<'_>) -> String {
        let base = sanitize_component(&render_tokens(&self.file, track));
        let base = if base.is_empty() { UNTITLED } else { &base };
        fit_name(base, track.ext)
    }
}

impl Default for Layout {
    fn default() -> Layout {
        Layout::default_layout()
    }
}

impl FromStr for Layout {
    type Err = LayoutError;

    fn from_str(format: &str) -> Result<Layout, LayoutError> {
        Layout::parse(format)
    }
}

/// Splits a format string into components of tokens.
struct Parser<'a> {
    format: &'a str,
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    components: Vec<Vec<Token>>,
    current: Vec<Token>,
    text: String,
}

impl<'a> Parser<'a> {
    fn new(format: &'a str) -> Parser<'a> {
        Parser {
            format,
            chars: format.char_indices().peekable(),
            components: Vec::new(),
            current: Vec::new(),
            text: String::new(),
        }
    }

    fn components(mut self) -> Result<Vec<Vec<Token>>, LayoutError> {
        while let Some((position, c)) = self.chars.next() {
            match c {
                '/' => self.end_component(),
                '$' => self.dollar(position)?,
                c => self.text.push(c),
            }
        }
        self.end_component();
        Ok(self.components)
    }

    fn end_component(&mut self) {
        self.flush_text();
        self.components.push(std::mem::take(&mut self.current));
    }

    fn flush_text(&mut self) {
        if !self.text.is_empty() {
            self.current
                .push(Token::Text(std::mem::take(&mut self.text)));
        }
    }

    /// Handles what follows a `$` at `position`.
    fn dollar(&mut self, position: usize) -> Result<(), LayoutError> {
        let name = match self.chars.peek().map(|&(_, c)| c) {
            Some('$') => {
                self.chars.next();
                self.text.push('$');
                return Ok(());
            }
            Some('{') => {
                self.chars.next();
                self.braced_name(position)?
            }
            Some(c) if is_name_char(c) => self.bare_name(),
            _ => return Err(LayoutError::DanglingDollar { position }),
        };
        let field = Field::from_name(name).ok_or_else(|| LayoutError::UnknownField {
            name: name.to_owned(),
            position,
        })?;
        self.flush_text();
        self.current.push(Token::Field(field));
        Ok(())
    }

    /// The name inside `${...}`, the `{` already consumed.
    fn braced_name(&mut self, position: usize) -> Result<&'a str, LayoutError> {
        let start = self.chars.peek().map_or(self.format.len(), |&(i, _)| i);
        for (i, c) in self.chars.by_ref() {
            if c == '}' {
                return Ok(&self.format[start..i]);
            }
        }
        Err(LayoutError::UnclosedBrace { position })
    }

    /// The longest run of name characters, as in a shell: `$tracks` is the
    /// unknown field "tracks", not `$track` then "s".
    fn bare_name(&mut self) -> &'a str {
        let start = self.chars.peek().map_or(self.format.len(), |&(i, _)| i);
        let mut end = start;
        while let Some(&(i, c)) = self.chars.peek() {
            if !is_name_char(c) {
                break;
            }
            end = i + c.len_utf8();
            self.chars.next();
        }
        &self.format[start..end]
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether a component could only ever render to nothing: no field and
/// literal text that sanitises away.
fn is_blank(component: &[Token]) -> bool {
    component.iter().all(|token| match token {
        Token::Text(text) => sanitize_component(text).is_empty(),
        Token::Field(_) => false,
    })
}

/// Removes a trailing `.$ext` from the file name's tokens, reporting whether
/// there was one, so that rendering can keep the extension whole.
fn strip_dot_ext(file: &mut Vec<Token>) -> bool {
    let [.., Token::Text(text), Token::Field(Field::Ext)] = file.as_mut_slice() else {
        return false;
    };
    let Some(rest) = text.strip_suffix('.') else {
        return false;
    };
    let rest = rest.to_owned();
    file.pop();
    file.pop();
    if !rest.is_empty() {
        file.push(Token::Text(rest));
    }
    true
}

/// Concatenates a component's literal text and field values.
fn render_tokens(tokens: &[Token], track: &TrackView<'_>) -> String {
    let mut out = String::new();
    for token in tokens {
        match token {
            Token::Text(text) => out.push_str(text),
            Token::Field(field) => out.push_str(&field_value(*field, track)),
        }
    }
    out
}

/// A field's value for one track, sanitised, with its fallback applied.
fn field_value(field: Field, track: &TrackView<'_>) -> String {
    let tags = track.tags;
    match field {
        Field::AlbumArtist => album_artist(tags),
        Field::Artist => first_present(&[&tags.artist, &tags.album_artist])
            .unwrap_or_else(|| UNKNOWN_ARTIST.to_owned()),
        Field::Album => first_present(&[&tags.album]).unwrap_or_else(|| UNKNOWN_ALBUM.to_owned()),
        Field::Title => title(tags, track.stem),
        Field::Track => track_number(tags, track.multi_disc),
        Field::Ext => sanitize_component(track.ext),
        Field::Year => tags.year.map(|y| y.to_string()).unwrap_or_default(),
        Field::Genre => first_present(&[&tags.genre]).unwrap_or_else(|| UNKNOWN_GENRE.to_owned()),
        Field::Disc => tags.disc.unwrap_or(1).to_string(),
        Field::Format => first_present(&[&tags.format])
            .unwrap_or_else(|| sanitize_component(&track.ext.to_uppercase())),
    }
}

fn album_artist(tags: &TrackTags) -> String {
    if tags.is_compilation() {
        return VARIOUS_ARTISTS.to_owned();
    }
    first_present(&[&tags.album_artist, &tags.artist]).unwrap_or_else(|| UNKNOWN_ARTIST.to_owned())
}

fn title(tags: &TrackTags, stem: &str) -> String {
    first_present(&[&tags.title])
        .or_else(|| Some(sanitize_component(stem)).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| UNTITLED.to_owned())
}

fn track_number(tags: &TrackTags, multi_disc: bool) -> String {
    let track = tags.track.unwrap_or(0);
    if multi_disc {
        format!("{}-{track:02}", tags.disc.unwrap_or(1))
    } else {
        format!("{track:02}")
    }
}

/// The first value that is still something once sanitised: a tag of only
/// dots or spaces is as good as missing.
fn first_present(values: &[&Option<Box<str>>]) -> Option<String> {
    values
        .iter()
        .filter_map(|v| v.as_deref())
        .map(sanitize_component)
        .find(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::{NAME_MAX_BYTES, is_valid_name};

    fn tags() -> TrackTags {
        TrackTags {
            title: Some("Jóga".into()),
            artist: Some("Björk".into()),
            album_artist: Some("Björk".into()),
            album: Some("Homogenic".into()),
            track: Some(3),
            disc: Some(1),
            year: Some(1997),
            genre: Some("Electronic".into()),
            format: Some("FLAC".into()),
            ..TrackTags::default()
        }
    }

    fn render_with(
        layout: &Layout,
        tags: &TrackTags,
        stem: &str,
        ext: &str,
        multi: bool,
    ) -> String {
        let view = TrackView {
            tags,
            ext,
            stem,
            multi_disc: multi,
        };
        let path = layout.render(&view);
        assert!(!path.is_empty());
        for component in &path {
            assert!(is_valid_name(component), "{component:?}");
        }
        path.join("/")
    }

    fn render(tags: &TrackTags) -> String {
        render_with(&Layout::default_layout(), tags, "03 joga", "flac", false)
    }

    #[test]
    fn default_layout_parses_to_itself() {
        assert_eq!(Layout::parse(DEFAULT_LAYOUT), Ok(Layout::default_layout()));
        assert_eq!(Layout::default().source(), DEFAULT_LAYOUT);
    }

    #[test]
    fn default_layout_on_normal_tags() {
        assert_eq!(render(&tags()), "Björk/Homogenic/03 - Jóga.flac");
    }

    #[test]
    fn compilations_go_under_various_artists() {
        let t = TrackTags {
            compilation: true,
            ..tags()
        };
        assert_eq!(render(&t), "Various Artists/Homogenic/03 - Jóga.flac");
        let t = TrackTags {
            album_artist: Some("various artists".into()),
            ..tags()
        };
        assert_eq!(render(&t), "Various Artists/Homogenic/03 - Jóga.flac");
    }

    #[test]
    fn album_artist_falls_back_to_artist() {
        let t = TrackTags {
            album_artist: Some(" . ".into()),
            ..tags()
        };
        assert_eq!(render(&t), "Björk/Homogenic/03 - Jóga.flac");
    }

    #[test]
    fn multi_disc_prefixes_the_track() {
        let layout = Layout::default_layout();
        let t = TrackTags {
            title: Some("Title".into()),
            ..tags()
        };
        assert!(render_with(&layout, &t, "s", "flac", true).ends_with("/1-03 - Title.flac"));
        let t = TrackTags {
            disc: Some(2),
            track: Some(11),
            ..t
        };
        assert!(render_with(&layout, &t, "s", "flac", true).ends_with("/2-11 - Title.flac"));
        let t = TrackTags { disc: None, ..t };
        assert!(render_with(&layout, &t, "s", "flac", true).ends_with("/1-11 - Title.flac"));
    }

    #[test]
    fn track_numbers_are_padded() {
        let t = TrackTags {
            track: Some(123),
            ..tags()
        };
        assert!(render(&t).ends_with("/123 - Jóga.flac"));
    }

    #[test]
    fn missing_everything_uses_fallbacks() {
        let layout = Layout::default_layout();
        let path = render_with(&layout, &TrackTags::default(), "track01", "mp3", false);
        assert_eq!(path, "Unknown Artist/Unknown Album/00 - track01.mp3");
        let path = render_with(&layout, &TrackTags::default(), "..", "mp3", false);
        assert_eq!(path, "Unknown Artist/Unknown Album/00 - Untitled.mp3");
    }

    #[test]
    fn slashes_in_tags_never_make_directories() {
        let t = TrackTags {
            artist: Some("AC/DC".into()),
            album_artist: None,
            album: Some("Either/Or".into()),
            ..tags()
        };
        assert_eq!(render(&t), "AC_DC/Either_Or/03 - Jóga.flac");
    }

    #[test]
    fn dots_and_spaces_are_trimmed() {
        let t = TrackTags {
            album_artist: Some("  Spaces  ".into()),
            album: Some("...And Justice for All".into()),
            title: Some("Trailing Dot.".into()),
            ..tags()
        };
        assert_eq!(
            render(&t),
            "Spaces/And Justice for All/03 - Trailing Dot.flac"
        );
    }

    #[test]
    fn long_names_are_cut_but_keep_the_extension() {
        let t = TrackTags {
            album: Some("L".repeat(180).into()),
            title: Some("T".repeat(300).into()),
            ..tags()
        };
        let path = Layout::default_layout().render(&TrackView {
            tags: &t,
            ext: "flac",
            stem: "x",
            multi_disc: false,
        });
        assert_eq!(path[1], "L".repeat(180));
        assert!(path[2].len() <= NAME_MAX_BYTES);
        assert!(path[2].starts_with("03 - TTT"));
        assert!(path[2].ends_with("T.flac"));
        let huge_dir = Layout::parse("$album/$title").map(|l| {
            let t = TrackTags {
                album: Some("😀".repeat(100).into()),
                ..tags()
            };
            render_with(&l, &t, "x", "flac", false)
        });
        assert!(huge_dir.is_ok_and(|p| p.starts_with(&"😀".repeat(63))));
    }

    #[test]
    fn unicode_is_kept() {
        let t = TrackTags {
            album: Some("🎵 日本語の歌 ½".into()),
            title: Some("Ünïcödé ½ 🎸".into()),
            ..tags()
        };
        assert_eq!(render(&t), "Björk/🎵 日本語の歌 ½/03 - Ünïcödé ½ 🎸.flac");
    }

    #[test]
    fn control_characters_become_spaces() {
        let t = TrackTags {
            album: Some("Null\u{0}Byte".into()),
            title: Some("Control\tChars\n".into()),
            ..tags()
        };
        assert_eq!(render(&t), "Björk/Null Byte/03 - Control Chars.flac");
    }

    #[test]
    fn dot_names_fall_back() {
        let t = TrackTags {
            album: Some("..".into()),
            title: Some(".".into()),
            ..tags()
        };
        assert_eq!(render(&t), "Björk/Unknown Album/03 - 03 joga.flac");
    }

    #[test]
    fn tag_values_are_literal() {
        let t = TrackTags {
            album: Some("Percent %s %n".into()),
            title: Some("$albumartist {x}".into()),
            ..tags()
        };
        assert_eq!(render(&t), "Björk/Percent %s %n/03 - $albumartist {x}.flac");
    }

    #[test]
    fn reserved_windows_names_are_kept() {
        for name in ["CON", "NUL", "PRN"] {
            let t = TrackTags {
                album_artist: Some(name.into()),
                album: Some(name.into()),
                title: Some(name.into()),
                ..tags()
            };
            assert_eq!(render(&t), format!("{name}/{name}/03 - {name}.flac"));
        }
    }

    #[test]
    fn missing_extension_leaves_no_dot() {
        let path = render_with(&Layout::default_layout(), &tags(), "x", "", false);
        assert_eq!(path, "Björk/Homogenic/03 - Jóga");
    }

    #[test]
    fn custom_layout() {
        let layout = Layout::parse("$genre/$year - $album/$disc.$track $title.$ext");
        let layout = layout.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            render_with(&layout, &tags(), "x", "flac", false),
            "Electronic/1997 - Homogenic/1.03 Jóga.flac"
        );
        let t = TrackTags {
            year: None,
            genre: None,
            disc: None,
            ..tags()
        };
        assert_eq!(
            render_with(&layout, &t, "x", "flac", false),
            "Unknown Genre/- Homogenic/1.03 Jóga.flac"
        );
    }

    #[test]
    fn braces_case_and_dollars() {
        let layout = Layout::parse("${ARTIST}s/$$ $Format/${title}.${ext}");
        let layout = layout.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            render_with(&layout, &tags(), "x", "flac", false),
            "Björks/$ FLAC/Jóga.flac"
        );
        let t = TrackTags {
            format: None,
            ..tags()
        };
        assert!(render_with(&layout, &t, "x", "opus", false).contains("/$ OPUS/"));
    }

    #[test]
    fn a_file_name_without_ext_gets_it_appended() {
        for (format, source, want) in [
            ("$album/$title", "$album/$title.$ext", "Homogenic/Jóga.flac"),
            (
                "$album/$track $title ($ext)",
                "$album/$track $title ($ext).$ext",
                "Homogenic/03 Jóga (flac).flac",
            ),
            (
                "$album/${title}.${ext}",
                "$album/${title}.${ext}",
                "Homogenic/Jóga.flac",
            ),
        ] {
            let layout = Layout::parse(format).unwrap_or_else(|e| panic!("{format}: {e}"));
            assert_eq!(layout.source(), source);
            assert_eq!(render_with(&layout, &tags(), "x", "flac", false), want);
            // Parsing what it shows gives the same layout.
            assert_eq!(Layout::parse(source), Ok(layout.clone()));
        }
        let layout = Layout::parse("$album/$track").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            render_with(&layout, &tags(), "x", "opus", false),
            "Homogenic/03.opus"
        );
        // No extension on the origin file: no dot either.
        assert_eq!(
            render_with(&layout, &tags(), "x", "", false),
            "Homogenic/03"
        );
    }

    #[test]
    fn a_file_name_with_no_track_field_is_refused() {
        for (format, file) in [
            ("$album/$year", "$year"),
            ("$albumartist/$album.$ext", "$album.$ext"),
            ("static", "static"),
            (".$ext", ".$ext"),
            ("$title/$track/$disc - $album.$ext", "$disc - $album.$ext"),
        ] {
            assert_eq!(
                Layout::parse(format),
                Err(LayoutError::NoTrackField { file: file.into() }),
                "{format}"
            );
        }
        let message = Layout::parse("$artist/$album").err().map(|e| e.to_string());
        let message = message.unwrap_or_default();
        assert!(
            message.contains("\"$album\" has neither $title nor $track"),
            "{message}"
        );
        assert!(
            message.contains(DEFAULT_LAYOUT),
            "gives an example: {message}"
        );
        assert!(!message.contains('\n'));
        for good in ["$title", "$track", "$album/$disc-${track}x", "$Title.$ext"] {
            assert!(Layout::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn empty_directory_values_become_underscore() {
        let layout = Layout::parse("$year/$title.$ext").unwrap_or_else(|e| panic!("{e}"));
        let t = TrackTags {
            year: None,
            ..tags()
        };
        assert_eq!(render_with(&layout, &t, "x", "flac", false), "_/Jóga.flac");
    }

    #[test]
    fn rendering_is_deterministic() {
        let layout = Layout::default_layout();
        let view = TrackView {
            tags: &tags(),
            ext: "flac",
            stem: "x",
            multi_disc: true,
        };
        assert_eq!(layout.render(&view), layout.render(&view));
    }

    #[test]
    fn unknown_field_is_named() {
        let err = Layout::parse("$artst/x");
        assert_eq!(
            err,
            Err(LayoutError::UnknownField {
                name: "artst".into(),
                position: 0
            })
        );
        let message = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("artst"), "{message}");
        assert!(message.contains("did you mean $artist?"), "{message}");
        assert!(message.contains("$albumartist"), "{message}");
        assert!(!message.contains('\n'));
        let err = Layout::parse("a/${nope}");
        assert!(matches!(
            err,
            Err(LayoutError::UnknownField { position: 2, .. })
        ));
        assert!(matches!(
            Layout::parse("$tracks"),
            Err(LayoutError::UnknownField { ref name, .. }) if name == "tracks"
        ));
    }

    #[test]
    fn malformed_layouts_are_rejected() {
        assert_eq!(Layout::parse(""), Err(LayoutError::Empty));
        for bad in ["a//b", "/a", "a/", "/", "./$title", "$album/ . /$title"] {
            assert_eq!(
                Layout::parse(bad),
                Err(LayoutError::EmptyComponent),
                "{bad}"
            );
        }
        assert_eq!(
            Layout::parse("a $"),
            Err(LayoutError::DanglingDollar { position: 2 })
        );
        assert_eq!(
            Layout::parse("$-x"),
            Err(LayoutError::DanglingDollar { position: 0 })
        );
        assert_eq!(
            Layout::parse("x${title"),
            Err(LayoutError::UnclosedBrace { position: 1 })
        );
        for bad in ["a//b", "$", "${x", "$zz"] {
            let message = Layout::parse(bad).err().map(|e| e.to_string());
            assert!(message.is_some_and(|m| !m.is_empty() && !m.contains('\n')));
        }
    }

    #[test]
    fn artist_depth_is_the_deepest_artist_folder() {
        let depth = |f: &str| Layout::parse(f).map(|l| l.artist_depth());
        assert_eq!(Layout::default_layout().artist_depth(), Some(0));
        assert_eq!(
            depth("$genre/$albumartist/$year - $album/$title"),
            Ok(Some(1))
        );
        assert_eq!(depth("$artist/$title"), Ok(Some(0)));
        assert_eq!(depth("$album/$title"), Ok(None));
        assert_eq!(depth("$title"), Ok(None));
        assert_eq!(depth("$title/$artist - $title"), Ok(None));
    }

    #[test]
    fn from_str_matches_parse() {
        assert_eq!(
            DEFAULT_LAYOUT.parse::<Layout>(),
            Layout::parse(DEFAULT_LAYOUT)
        );
    }
}
