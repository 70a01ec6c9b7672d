//! Reading a track's tags with lofty into a [`TrackTags`].
//!
//! This is the only place MusicFS parses audio files. Everything here is
//! written against hostile input: a library is full of files that are empty,
//! truncated, mislabelled or plain garbage, and a scan of 100,000 files must
//! neither stop nor crash because of one of them. So:
//!
//! - lofty runs inside [`std::panic::catch_unwind`], and behind a reader that
//!   refuses to go on once a parser has read several times the file's size,
//!   which turns a parser stuck re-reading the same bytes into an error
//!   instead of a hung scan;
//! - lofty is told not to read audio properties nor decode cover art (both
//!   cost time and neither is needed to name a file), except where the
//!   properties are the only proof the file is audio at all (MPEG, ADTS) or
//!   the only way to tell AAC from ALAC (MP4), see [`read_tags_from`];
//! - per-item allocations are capped ([`TAG_ALLOCATION_LIMIT`]), so a length
//!   field of garbage cannot make a worker allocate gigabytes.
//!
//! Values are kept raw (not trimmed, not sanitised): turning tags into valid
//! file names is the core's job (`musicfs_core::naming`), and it needs to see
//! what the file really says. Only empty and whitespace-only values become
//! `None`, because to every consumer they mean "not set".

use crate::library::keep::{Recording, Touched};
use crate::origin::ranged::seek_target;
use lofty::aac::AacFile;
use lofty::config::{GlobalOptions, ParseOptions, ParsingMode, apply_global_options};
use lofty::error::{AllocationError, FileParseError, UnknownFormatError};
use lofty::file::{AudioFile, FileType, TaggedFile, TaggedFileExt};
use lofty::mp4::{Mp4Codec, Mp4File};
use lofty::mpeg::{Layer, MpegFile};
use lofty::probe::Probe;
use lofty::tag::{ItemKey, Tag, TagType};
use musicfs_core::TrackTags;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// The largest single allocation lofty may make for one tag item or tag
/// block.
///
/// Whole ID3v2 tags and FLAC metadata blocks are read into one buffer before
/// they are parsed, and tags with embedded high-resolution artwork reach
/// 10-20 MiB in real libraries, so this must stay well above that. Above it
/// is only garbage: a corrupt length field asking for gigabytes.
pub const TAG_ALLOCATION_LIMIT: usize = 32 * 1024 * 1024;

/// How far into a file the content sniffer looks for an MPEG/ADTS frame sync
/// behind leading junk. lofty's default (1 KiB) misses MP3s with a few KiB
/// of padding after a broken tag; more than this only slows down garbage.
const MAX_JUNK_BYTES: usize = 4096;

/// Bytes of a local file read up front in one `pread`. The tags of FLAC,
/// Ogg, Opus and ID3v2-tagged MP3 almost always sit in the first few KiB
/// (cover art, which is bigger, is skipped by seeking over it), and lofty's
/// many small reads and seeks there are then answered from memory. Measured
/// on the generated library: 8 KiB beat 4 KiB (more second reads) and
/// 16-32 KiB (more copying of audio bytes nobody looks at).
const HEAD_BYTES: usize = 8 * 1024;

/// Size of the movable read window used beyond the head (MP4 `moov` atoms
/// at the end of the file, ID3v1/APE tags at the end of MP3s).
const WINDOW_BYTES: usize = 8 * 1024;

/// What kind of failure a [`TagError`] is: lets callers count or retry
/// without parsing messages (e.g. an I/O error on a network origin may be
/// worth retrying; a corrupt file is not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TagErrorKind {
    /// The file has no bytes.
    Empty,
    /// The content is not a recognised audio format (or not a regular file).
    NotAudio,
    /// The file ends in the middle of its headers or tags.
    Truncated,
    /// The file is recognised but its structure is invalid.
    Corrupt,
    /// A tag claims a size beyond [`TAG_ALLOCATION_LIMIT`].
    TooLarge,
    /// Reading the file failed (permissions, I/O error).
    Io,
    /// The parser panicked or looped; a lofty bug met a strange file.
    ParserFailure,
}

/// Why a file's tags could not be read.
///
/// The message is one line meant for a person looking at a log: what is
/// wrong with the file in terms they can act on ("truncated FLAC stream",
/// "not an audio file"), followed by lofty's own detail when it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagError {
    kind: TagErrorKind,
    message: String,
}

impl TagError {
    fn new(kind: TagErrorKind, message: impl Into<String>) -> TagError {
        TagError {
            kind,
            message: message.into(),
        }
    }

    /// The class of failure, for counting and retry decisions.
    pub fn kind(&self) -> TagErrorKind {
        self.kind
    }
}

impl fmt::Display for TagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TagError {}

/// Reads the tags of the audio file at `path`.
///
/// Opens the file without blocking (a FIFO named `x.mp3` must not stall a
/// scan) and refuses anything that is not a regular file. The extension is
/// only a hint: content decides the format, so an MP3 named `.flac` is read
/// as the MP3 it is.
pub fn read_tags(path: &Path) -> Result<TrackTags, TagError> {
    let file = open_nonblocking(path)
        .map_err(|e| TagError::new(TagErrorKind::Io, format!("cannot open: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| TagError::new(TagErrorKind::Io, format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(TagError::new(TagErrorKind::NotAudio, "not a regular file"));
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    read_tags_file(&file, meta.len(), &ext)
}

/// Opens a file for reading without blocking on FIFOs or devices, without
/// making a terminal our controlling one, and without leaking the fd into
/// child processes.
pub(crate) fn open_nonblocking(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
}

/// Reads the tags of an already opened regular file of `size` bytes.
///
/// The scanner opens and stats each file once and uses the same descriptor
/// here, so the [`musicfs_core::FileVersion`] it records describes exactly
/// the bytes the tags were read from.
pub(crate) fn read_tags_file(file: &File, size: u64, ext: &str) -> Result<TrackTags, TagError> {
    if size == 0 {
        return Err(TagError::new(TagErrorKind::Empty, "empty file"));
    }
    let reader = CachedFileReader::new(file, size, HEAD_BYTES)
        .map_err(|e| TagError::new(TagErrorKind::Io, format!("read error: {e}")))?;
    guarded_parse(reader, size, ext)
}

/// What [`read_tags_file_touched`] read besides the tags.
pub(crate) struct ReadTrace {
    /// What the parser asked for.
    pub touched: Touched,
    /// The first bytes of the file, read up front.
    pub head: Vec<u8>,
}

/// [`read_tags_file`], reading the first `head` bytes up front (one
/// `pread`) and recording what the parser touched, so a scan can keep
/// those bytes in the cache (see `library::keep`).
pub(crate) fn read_tags_file_touched(
    file: &File,
    size: u64,
    ext: &str,
    head: usize,
) -> (Result<TrackTags, TagError>, ReadTrace) {
    let mut trace = ReadTrace {
        touched: Touched::default(),
        head: Vec::new(),
    };
    if size == 0 {
        return (Err(TagError::new(TagErrorKind::Empty, "empty file")), trace);
    }
    let reader = match CachedFileReader::new(file, size, head.max(HEAD_BYTES)) {
        Ok(reader) => reader,
        Err(e) => {
            let err = TagError::new(TagErrorKind::Io, format!("read error: {e}"));
            return (Err(err), trace);
        }
    };
    let mut recording = Recording::new(reader);
    let result = guarded_parse(&mut recording, size, ext);
    trace.touched = std::mem::take(&mut recording.touched);
    trace.head = recording.into_inner().head;
    (result, trace)
}

/// Reads tags from any seekable byte stream, e.g. a remote object fetched
/// by ranges, or the head of a file held in memory.
///
/// `ext` is the lower-case file extension without the dot (may be empty);
/// it is used only when the content does not identify the format. The
/// stream is read from its start (offset 0) whatever its current position,
/// because lofty's parsers address some structures absolutely. Buffer the
/// reader if its reads are expensive: lofty issues many small ones.
///
/// Audio properties are skipped except for MPEG and ADTS, where lofty's
/// tag reader accepts random bytes as a tagless MP3 and only the frame
/// headers read with the properties show the file is audio, and for MP4,
/// whose properties are the only place AAC and ALAC differ. WavPack and
/// Musepack files must start with their stream magic or carry a tag, for
/// the same reason as MPEG.
pub fn read_tags_from<R: Read + Seek>(mut reader: R, ext: &str) -> Result<TrackTags, TagError> {
    let size = reader
        .seek(SeekFrom::End(0))
        .and_then(|end| reader.seek(SeekFrom::Start(0)).map(|_| end))
        .map_err(|e| TagError::new(TagErrorKind::Io, format!("read error: {e}")))?;
    if size == 0 {
        return Err(TagError::new(TagErrorKind::Empty, "empty file"));
    }
    guarded_parse(reader, size, ext)
}

/// Runs [`parse`] behind the read budget and `catch_unwind`.
fn guarded_parse<R: Read + Seek>(reader: R, size: u64, ext: &str) -> Result<TrackTags, TagError> {
    // A well-behaved parser reads each header byte once or twice; MPEG sync
    // searches read garbage files byte by byte, once. Eight passes over the
    // file plus slack is far beyond any legitimate pattern.
    let budget = size.saturating_mul(8).saturating_add(16 * 1024 * 1024);
    let mut reader = Budgeted {
        inner: reader,
        remaining: budget,
        exhausted: false,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| parse(&mut reader, ext)));
    match outcome {
        // Whatever the parser made of a budget error, its result is not to
        // be trusted.
        Ok(_) if reader.exhausted => Err(TagError::new(
            TagErrorKind::ParserFailure,
            "tag parser kept re-reading the file; gave up",
        )),
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(TagError::new(
                TagErrorKind::ParserFailure,
                format!("tag parser crashed on this file: {what}"),
            ))
        }
    }
}

fn parse_options(read_properties: bool) -> ParseOptions {
    ParseOptions::new()
        .read_properties(read_properties)
        .read_cover_art(false)
        .parsing_mode(ParsingMode::Relaxed)
        .max_junk_bytes(MAX_JUNK_BYTES)
}

/// Identifies the format, reads the file with lofty and maps its tags.
fn parse<R: Read + Seek>(reader: &mut R, ext: &str) -> Result<TrackTags, TagError> {
    // lofty's global options are thread-local: setting them on every call is
    // a thread-local store, and keeps them right on whatever thread calls us.
    apply_global_options(
        GlobalOptions::new()
            .allocation_limit(TAG_ALLOCATION_LIMIT)
            .preserve_format_specific_items(false)
            .use_custom_resolvers(false),
    );

    let hint = FileType::from_ext(ext);
    let mut probe = match hint {
        Some(ft) => Probe::with_file_type(&mut *reader, ft),
        None => Probe::new(&mut *reader),
    };
    probe = probe
        .options(parse_options(false))
        .guess_file_type()
        .map_err(|e| classify_io(&e, None))?;
    let Some(guessed) = probe.file_type() else {
        return Err(TagError::new(
            TagErrorKind::NotAudio,
            "not an audio file (no known audio format signature)",
        ));
    };

    // Content beats the extension, except when all the content offered was
    // an MPEG/ADTS frame sync: two bytes that random data contains every few
    // KiB. Then the extension is tried first, so a damaged `x.m4a` is
    // reported as a damaged MP4, not as a "corrupt MP3", and a real MP3
    // misnamed `.m4a` is still read as the MP3 it is.
    let candidates: &[FileType] = match hint {
        Some(h) if h != guessed && matches!(guessed, FileType::Mpeg | FileType::Aac) => {
            &[h, guessed]
        }
        _ => &[guessed],
    };
    let mut first_error = None;
    for &file_type in candidates {
        match read_as(reader, file_type) {
            Ok((tagged, label)) => {
                let mut tags = map_tags(&tagged);
                tags.format = Some(label.into());
                return Ok(tags);
            }
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| TagError::new(TagErrorKind::NotAudio, "not an audio file")))
}

/// Reads the file as `file_type`, returning lofty's view and the format
/// label for [`TrackTags::format`].
fn read_as<R: Read + Seek>(
    reader: &mut R,
    file_type: FileType,
) -> Result<(TaggedFile, String), TagError> {
    let rewind = |r: &mut R| {
        r.seek(SeekFrom::Start(0))
            .map(|_| ())
            .map_err(|e| classify_io(&e, Some(file_type)))
    };
    rewind(reader)?;
    match file_type {
        FileType::Mpeg => match MpegFile::read_from(reader, parse_options(true)) {
            Ok(file) => {
                let label = match file.properties().layer() {
                    Layer::Layer1 => "MP1",
                    Layer::Layer2 => "MP2",
                    Layer::Layer3 => "MP3",
                };
                Ok((file.into(), label.to_owned()))
            }
            Err(first) => {
                // No confirmed frame: accept it only if it carries a tag, the
                // way a player would still list an MP3 whose audio is damaged.
                rewind(reader)?;
                match MpegFile::read_from(reader, parse_options(false)) {
                    Ok(file) => {
                        let tagged: TaggedFile = file.into();
                        if has_any_text(&tagged) {
                            Ok((tagged, "MP3".to_owned()))
                        } else {
                            Err(no_frames(classify(&first, file_type), "MPEG audio"))
                        }
                    }
                    Err(_) => Err(no_frames(classify(&first, file_type), "MPEG audio")),
                }
            }
        },
        FileType::Aac => match AacFile::read_from(reader, parse_options(true)) {
            Ok(file) => Ok((file.into(), "AAC".to_owned())),
            Err(first) => {
                rewind(reader)?;
                match AacFile::read_from(reader, parse_options(false)) {
                    Ok(file) => {
                        let tagged: TaggedFile = file.into();
                        if has_any_text(&tagged) {
                            Ok((tagged, "AAC".to_owned()))
                        } else {
                            Err(no_frames(classify(&first, file_type), "ADTS"))
                        }
                    }
                    Err(_) => Err(no_frames(classify(&first, file_type), "ADTS")),
                }
            }
        },
        FileType::Mp4 => match Mp4File::read_from(reader, parse_options(true)) {
            Ok(file) => {
                let label = match file.properties().codec() {
                    Some(Mp4Codec::AAC) => "AAC",
                    Some(Mp4Codec::ALAC) => "ALAC",
                    Some(Mp4Codec::MP3) => "MP3",
                    Some(Mp4Codec::FLAC) => "FLAC",
                    _ => "MP4",
                };
                Ok((file.into(), label.to_owned()))
            }
            Err(_) => {
                // Odd sample descriptions break the properties, not the tags.
                rewind(reader)?;
                let file = Mp4File::read_from(reader, parse_options(false))
                    .map_err(|e| classify(&e, file_type))?;
                Ok((file.into(), "MP4".to_owned()))
            }
        },
        other => {
            let tagged = Probe::with_file_type(&mut *reader, other)
                .options(parse_options(false))
                .read()
                .map_err(|e| classify(&e, other))?;
            // lofty's WavPack and Musepack readers only look for tags at the
            // end when properties are off (and with them on, relaxed mode
            // zeroes what it cannot parse), so any bytes "parse". Ask for the
            // stream's magic, or at least a tag.
            let magic: &[&[u8]] = match other {
                FileType::WavPack => &[b"wvpk"],
                FileType::Mpc => &[b"MPCK", b"MP+"],
                _ => &[],
            };
            if !magic.is_empty() && !has_any_text(&tagged) && !starts_with_any(reader, magic)? {
                return Err(TagError::new(
                    TagErrorKind::NotAudio,
                    format!("not an audio file (content is not {})", format_label(other)),
                ));
            }
            Ok((tagged, format_label(other)))
        }
    }
}

/// Whether the stream starts with one of `magics`.
fn starts_with_any<R: Read + Seek>(reader: &mut R, magics: &[&[u8]]) -> Result<bool, TagError> {
    let mut head = [0u8; 4];
    let io = |e: io::Error| classify_io(&e, None);
    reader.seek(SeekFrom::Start(0)).map_err(io)?;
    match reader.read_exact(&mut head) {
        Ok(()) => Ok(magics.iter().any(|m| head.starts_with(m))),
        // Shorter than any magic, so it starts with none.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io(e)),
    }
}

/// An MPEG/ADTS file with neither a valid frame nor any tag is not audio:
/// lofty calls it corrupt, but the person reading the log should hear that
/// the file is not what its name says.
fn no_frames(err: TagError, what: &str) -> TagError {
    if err.kind == TagErrorKind::Corrupt {
        TagError::new(
            TagErrorKind::NotAudio,
            format!("not an audio file (no valid {what} frame found)"),
        )
    } else {
        err
    }
}

/// A short, conventional name for a container/codec, as players show it.
fn format_label(file_type: FileType) -> String {
    match file_type {
        FileType::Aac => "AAC",
        FileType::Aiff => "AIFF",
        FileType::Ape => "APE",
        FileType::Flac => "FLAC",
        FileType::Mpeg => "MP3",
        FileType::Mp4 => "MP4",
        FileType::Mpc => "Musepack",
        FileType::Opus => "Opus",
        FileType::Vorbis => "Vorbis",
        FileType::Speex => "Speex",
        FileType::Wav => "WAV",
        FileType::WavPack => "WavPack",
        FileType::Custom(name) => name,
        _ => "audio",
    }
    .to_owned()
}

/// Turns a lofty error into a message naming what is wrong with the file.
fn classify(err: &FileParseError, file_type: FileType) -> TagError {
    let label = format_label(file_type);
    let mut detail: Vec<String> = Vec::new();
    let mut kind = TagErrorKind::Corrupt;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            kind = io_kind(io);
        } else if e.is::<UnknownFormatError>() {
            kind = TagErrorKind::NotAudio;
        } else if e.is::<AllocationError>() {
            kind = TagErrorKind::TooLarge;
        }
        let text = e.to_string();
        if !text.is_empty() && !detail.contains(&text) {
            detail.push(text);
        }
        source = e.source();
    }
    // The outermost message is lofty's "failed to parse X file"; the inner
    // ones say why.
    let why = if detail.len() > 1 {
        detail[1..].join(": ")
    } else {
        detail.join(": ")
    };
    let message = match kind {
        // lofty's inner text ("failed to fill whole buffer", "no format
        // could be determined") adds nothing a person can act on here.
        TagErrorKind::Truncated => {
            format!("truncated {label} stream (ends inside its headers or tags)")
        }
        TagErrorKind::NotAudio => format!("not an audio file (content is not {label})"),
        TagErrorKind::TooLarge => format!("{label} tag too large ({})", one_line(&why)),
        TagErrorKind::Io => format!("read error in {label} file ({})", one_line(&why)),
        _ if why.is_empty() => format!("corrupt {label} file"),
        _ => format!("corrupt {label} file ({})", one_line(&why)),
    };
    TagError::new(kind, message)
}

fn classify_io(err: &io::Error, file_type: Option<FileType>) -> TagError {
    let kind = io_kind(err);
    let message = match (kind, file_type) {
        (TagErrorKind::Truncated, Some(ft)) => format!(
            "truncated {} stream (ends inside its headers or tags)",
            format_label(ft)
        ),
        (TagErrorKind::Truncated, None) => "truncated file".to_owned(),
        (TagErrorKind::ParserFailure, _) => {
            "tag parser kept re-reading the file; gave up".to_owned()
        }
        _ => format!("read error: {}", one_line(&err.to_string())),
    };
    TagError::new(kind, message)
}

fn io_kind(err: &io::Error) -> TagErrorKind {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        TagErrorKind::Truncated
    } else if err
        .get_ref()
        .is_some_and(|inner| inner.is::<BudgetExceeded>())
    {
        TagErrorKind::ParserFailure
    } else {
        TagErrorKind::Io
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The order tags are consulted in after the file's primary tag: richest
/// first, ID3v1 (30-byte fields, no album artist) last.
const FALLBACK_ORDER: &[TagType] = &[
    TagType::Id3v2,
    TagType::Mp4Ilst,
    TagType::VorbisComments,
    TagType::Ape,
    TagType::RiffInfo,
    TagType::AiffText,
    TagType::Id3v1,
];

/// The file's tags, primary first, then the others by [`FALLBACK_ORDER`].
fn ordered_tags(file: &TaggedFile) -> Vec<&Tag> {
    let mut out: Vec<&Tag> = Vec::with_capacity(file.tags().len());
    if let Some(primary) = file.primary_tag() {
        out.push(primary);
    }
    for ty in FALLBACK_ORDER {
        for tag in file.tags() {
            if tag.tag_type() == *ty && !out.iter().any(|t| std::ptr::eq(*t, tag)) {
                out.push(tag);
            }
        }
    }
    for tag in file.tags() {
        if !out.iter().any(|t| std::ptr::eq(*t, tag)) {
            out.push(tag);
        }
    }
    out
}

fn has_any_text(file: &TaggedFile) -> bool {
    file.tags().iter().any(|t| {
        t.items()
            .any(|i| i.value().text().is_some_and(|s| !s.trim().is_empty()))
    })
}

/// The first non-blank value for `key` across `tags`, in order: a field the
/// primary tag lacks is taken from the next tag that has it (an MP3 with a
/// sparse ID3v2 tag and a complete APE tag shows the APE album).
fn first_text<'a>(tags: &[&'a Tag], key: ItemKey) -> Option<&'a str> {
    tags.iter()
        .flat_map(|t| t.get_strings(key))
        .find(|s| !s.trim().is_empty())
}

/// Maps lofty's generic tags into the core's [`TrackTags`] (without format).
fn map_tags(file: &TaggedFile) -> TrackTags {
    let tags = ordered_tags(file);
    let text = |key| first_text(&tags, key).map(str::to_owned);

    let (track, track_total_inline) = first_text(&tags, ItemKey::TrackNumber)
        .map(parse_number_pair)
        .unwrap_or((None, None));
    let track_total = first_text(&tags, ItemKey::TrackTotal)
        .and_then(parse_total)
        .or(track_total_inline);
    let (disc, disc_total_inline) = first_text(&tags, ItemKey::DiscNumber)
        .map(parse_number_pair)
        .unwrap_or((None, None));
    let disc_total = first_text(&tags, ItemKey::DiscTotal)
        .and_then(parse_total)
        .or(disc_total_inline);

    let year = [
        ItemKey::RecordingDate,
        ItemKey::Year,
        ItemKey::ReleaseDate,
        ItemKey::OriginalReleaseDate,
    ]
    .into_iter()
    .find_map(|key| {
        tags.iter()
            .flat_map(|t| t.get_strings(key))
            .find_map(parse_year)
    });

    let genre = first_text(&tags, ItemKey::Genre).map(resolve_genre);
    let compilation = first_text(&tags, ItemKey::FlagCompilation).is_some_and(is_truthy);

    TrackTags {
        title: text(ItemKey::TrackTitle).map(Into::into),
        artist: text(ItemKey::TrackArtist).map(Into::into),
        album_artist: text(ItemKey::AlbumArtist).map(Into::into),
        album: text(ItemKey::AlbumTitle).map(Into::into),
        track,
        track_total,
        disc,
        disc_total,
        year,
        genre: genre.map(Into::into),
        compilation,
        format: None,
    }
}

/// Parses a track or disc count: plain ASCII digits, surrounding blanks
/// allowed. Signs, letters ("A1": vinyl side notation) and overflow give
/// `None` rather than a guess; 0 means "unset" in every tagger, so it is
/// `None` too.
fn parse_number(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|&n| n > 0)
}

/// Parses "3", "3/12" or "/12" into (number, total).
fn parse_number_pair(s: &str) -> (Option<u32>, Option<u32>) {
    match s.split_once('/') {
        Some((n, total)) => (parse_number(n), parse_number(total)),
        None => (parse_number(s), None),
    }
}

/// Parses a total field. lofty files an ID3 `TRCK`/`TPOS` it cannot split
/// (e.g. "-3/12", "A1") whole under the *total* key, so a "/" here means the
/// total is the part after it.
fn parse_total(s: &str) -> Option<u32> {
    match s.split_once('/') {
        Some((_, total)) => parse_number(total),
        None => parse_number(s),
    }
}

/// The year of a date string: its leading four digits ("2001",
/// "2001-05-03", "2001-05-03T10:00:00"), or failing that the first
/// standalone run of four digits ("03.05.2001", "May 2001").
fn parse_year(s: &str) -> Option<i32> {
    let bytes = s.trim().as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == 4 {
                let year: i32 = std::str::from_utf8(&bytes[start..i]).ok()?.parse().ok()?;
                return (year > 0).then_some(year);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// Resolves ID3v1-style genre references written in parentheses ("(17)",
/// "(17)Hard Rock"). lofty already resolves them, bare numbers included, in
/// ID3 tags; this catches the ones taggers copied verbatim into APE or
/// Vorbis tags. Bare numbers outside ID3 are kept: there "90" may mean the
/// nineties rather than genre 90.
fn resolve_genre(raw: &str) -> String {
    let Some((digits, rest)) = raw.trim().strip_prefix('(').and_then(|r| r.split_once(')')) else {
        return raw.to_owned();
    };
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return raw.to_owned();
    }
    // "(17)Hard Rock": the text refinement wins, as ID3v2.3 intends.
    if !rest.trim().is_empty() {
        return rest.trim().to_owned();
    }
    match digits
        .parse::<usize>()
        .ok()
        .and_then(|n| lofty::id3::v1::GENRES.get(n))
    {
        Some(name) => (*name).to_owned(),
        None => raw.to_owned(),
    }
}

/// Whether a compilation flag value means "yes": "1" (TCMP, COMPILATION,
/// lofty's rendering of MP4 `cpil`), any other non-zero number, "true",
/// "yes".
fn is_truthy(s: &str) -> bool {
    let t = s.trim();
    t.eq_ignore_ascii_case("true")
        || t.eq_ignore_ascii_case("yes")
        || (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) && t.bytes().any(|b| b != b'0'))
}

/// The error a [`Budgeted`] reader returns once its budget is spent.
#[derive(Debug)]
struct BudgetExceeded;

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("read budget exceeded")
    }
}

impl std::error::Error for BudgetExceeded {}

/// Charges every read against a byte budget (at least one unit per call, so
/// a loop of empty reads at EOF is caught too) and fails once it is spent.
struct Budgeted<R> {
    inner: R,
    remaining: u64,
    exhausted: bool,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            self.exhausted = true;
            return Err(io::Error::other(BudgetExceeded));
        }
        let n = self.inner.read(buf)?;
        self.remaining = self.remaining.saturating_sub((n as u64).max(1));
        Ok(n)
    }
}

impl<R: Seek> Seek for Budgeted<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        if self.remaining == 0 {
            self.exhausted = true;
            return Err(io::Error::other(BudgetExceeded));
        }
        self.remaining -= 1;
        self.inner.seek(pos)
    }
}

/// Positioned reads over a local file: the head is read once, and other
/// reads go through one movable window.
///
/// `BufReader` would drop its buffer on every `seek`, and lofty seeks
/// constantly (skip a block, step back four bytes, jump to the end for
/// ID3v1), so each of its small reads would become a system call. Here a
/// typical file costs one or two `pread`s.
struct CachedFileReader<'a> {
    file: &'a File,
    size: u64,
    pos: u64,
    head: Vec<u8>,
    window: Vec<u8>,
    window_start: u64,
}

impl<'a> CachedFileReader<'a> {
    fn new(file: &'a File, size: u64, head: usize) -> io::Result<CachedFileReader<'a>> {
        let want = usize::try_from(size).map_or(head, |s| s.min(head));
        let mut head = vec![0; want];
        let got = read_full_at(file, &mut head, 0)?;
        head.truncate(got);
        Ok(CachedFileReader {
            file,
            size,
            pos: 0,
            head,
            window: Vec::new(),
            window_start: 0,
        })
    }

    /// Refills the window around `pos`: near the end of the file it holds
    /// the file's tail (lofty reads ID3v1, Lyrics3, APE footers backwards
    /// from the end), elsewhere it starts at `pos` rounded down to 4 KiB.
    fn refill(&mut self, pos: u64) -> io::Result<()> {
        let win = WINDOW_BYTES as u64;
        let start = if self.size.saturating_sub(pos) <= win {
            self.size.saturating_sub(win)
        } else {
            pos & !4095
        };
        self.window.resize(WINDOW_BYTES, 0);
        let got = read_full_at(self.file, &mut self.window, start)?;
        self.window.truncate(got);
        self.window_start = start;
        Ok(())
    }
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn copy_from(src: &[u8], src_start: u64, pos: u64, buf: &mut [u8]) -> Option<usize> {
    let off = usize::try_from(pos.checked_sub(src_start)?).ok()?;
    let avail = src.get(off..).filter(|rest| !rest.is_empty())?;
    let n = avail.len().min(buf.len());
    buf[..n].copy_from_slice(&avail[..n]);
    Some(n)
}

impl Read for CachedFileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        let n = if let Some(n) = copy_from(&self.head, 0, self.pos, buf) {
            n
        } else if let Some(n) = copy_from(&self.window, self.window_start, self.pos, buf) {
            n
        } else if buf.len() >= WINDOW_BYTES {
            read_full_at(self.file, buf, self.pos)?
        } else {
            self.refill(self.pos)?;
            // Nothing there: the file shrank under us; report EOF.
            copy_from(&self.window, self.window_start, self.pos, buf).unwrap_or_default()
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for CachedFileReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = seek_target(self.pos, self.size, to)?;
        Ok(self.pos)
    }

    fn stream_position(&mut self) -> io::Result<u64> {
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn numbers() {
        assert_eq!(parse_number_pair("3"), (Some(3), None));
        assert_eq!(parse_number_pair("3/12"), (Some(3), Some(12)));
        assert_eq!(parse_number_pair(" 3 / 12 "), (Some(3), Some(12)));
        assert_eq!(parse_number_pair("/12"), (None, Some(12)));
        assert_eq!(parse_number_pair("-3"), (None, None));
        assert_eq!(parse_number_pair("A1"), (None, None));
        assert_eq!(parse_number_pair("99999"), (Some(99999), None));
        assert_eq!(parse_number_pair("99999999999"), (None, None));
        assert_eq!(parse_number_pair("0/0"), (None, None));
        assert_eq!(parse_number_pair(""), (None, None));
        assert_eq!(parse_number_pair("+4"), (None, None));
    }

    #[test]
    fn totals() {
        assert_eq!(parse_total("12"), Some(12));
        assert_eq!(parse_total("-3/12"), Some(12));
        assert_eq!(parse_total("A1"), None);
        assert_eq!(parse_total("3/"), None);
    }

    #[test]
    fn years() {
        assert_eq!(parse_year("2001"), Some(2001));
        assert_eq!(parse_year("2001-05-03"), Some(2001));
        assert_eq!(parse_year("2001-05-03T10:11:12"), Some(2001));
        assert_eq!(parse_year(" 1999 "), Some(1999));
        assert_eq!(parse_year("03.05.2001"), Some(2001));
        assert_eq!(parse_year("20011"), None);
        assert_eq!(parse_year("01"), None);
        assert_eq!(parse_year("0000"), None);
        assert_eq!(parse_year("unknown"), None);
        assert_eq!(parse_year(""), None);
    }

    #[test]
    fn genres() {
        assert_eq!(resolve_genre("(17)"), "Rock");
        assert_eq!(resolve_genre("17"), "17");
        assert_eq!(resolve_genre("(17)Hard Rock"), "Hard Rock");
        assert_eq!(resolve_genre("(999)"), "(999)");
        assert_eq!(resolve_genre("(RX)"), "(RX)");
        assert_eq!(resolve_genre("Jazz"), "Jazz");
        assert_eq!(resolve_genre("(17"), "(17");
        assert_eq!(resolve_genre("1984"), "1984");
    }

    #[test]
    fn truthiness() {
        for yes in ["1", "true", "TRUE", " yes ", "01"] {
            assert!(is_truthy(yes), "{yes}");
        }
        for no in ["0", "", "false", "no", "00", "-1"] {
            assert!(!is_truthy(no), "{no}");
        }
    }

    #[test]
    fn garbage_and_empty_are_errors() {
        assert_eq!(
            read_tags_from(Cursor::new(Vec::<u8>::new()), "flac").map_err(|e| e.kind()),
            Err(TagErrorKind::Empty)
        );
        // A FLAC marker and a STREAMINFO header promising 34 bytes, then 10.
        let truncated = b"fLaC\x00\x00\x00\x22\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
        let err = read_tags_from(Cursor::new(truncated), "flac").unwrap_err();
        assert_eq!(err.kind(), TagErrorKind::Truncated, "{err}");
        assert!(
            err.to_string().starts_with("truncated FLAC stream"),
            "{err}"
        );

        let text = b"just some liner notes, not audio at all\n".repeat(50);
        let err = read_tags_from(Cursor::new(text), "").unwrap_err();
        assert_eq!(err.kind(), TagErrorKind::NotAudio, "{err}");

        // Deterministic pseudo-random bytes under several audio extensions.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise: Vec<u8> = (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        for ext in [
            "mp3", "flac", "m4a", "ogg", "opus", "wav", "aiff", "wv", "ape", "mpc", "aac", "",
        ] {
            let r = read_tags_from(Cursor::new(noise.clone()), ext);
            assert!(r.is_err(), "{ext}: {r:?}");
        }
    }

    /// A stream whose reads panic: stands in for a lofty bug.
    struct Panicky;
    impl Read for Panicky {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            panic!("boom")
        }
    }
    impl Seek for Panicky {
        fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
            Ok(100)
        }
    }

    #[test]
    fn a_panicking_parser_is_an_error() {
        let err = read_tags_from(Panicky, "mp3").unwrap_err();
        assert_eq!(err.kind(), TagErrorKind::ParserFailure);
        assert!(err.to_string().contains("boom"), "{err}");
    }

    /// A stream that claims 64 bytes but never runs out: a parser that keeps
    /// searching it must be stopped by the read budget.
    struct Endless;
    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            buf.fill(0x55);
            Ok(buf.len())
        }
    }
    impl Seek for Endless {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            Ok(match to {
                SeekFrom::End(d) => 64u64.saturating_add_signed(d),
                _ => 0,
            })
        }
    }

    #[test]
    fn an_endless_stream_does_not_hang() {
        let started = std::time::Instant::now();
        let err = read_tags_from(Endless, "mp3").unwrap_err();
        assert_eq!(err.kind(), TagErrorKind::ParserFailure, "{err}");
        assert!(err.to_string().contains("gave up"), "{err}");
        assert!(started.elapsed().as_secs() < 20);
    }

    #[test]
    fn cached_reader_matches_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 256) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let mut r = CachedFileReader::new(&file, data.len() as u64, HEAD_BYTES).unwrap();
        let mut cur = Cursor::new(&data);
        let steps: &[(SeekFrom, usize)] = &[
            (SeekFrom::Start(0), 10),
            (SeekFrom::Current(5), 40_000),
            (SeekFrom::End(-128), 128),
            (SeekFrom::Current(-32), 3),
            (SeekFrom::Start(50_000), 7),
            (SeekFrom::Start(HEAD_BYTES as u64 - 3), 10),
            (SeekFrom::End(10), 10),
            (SeekFrom::Start(99_990), 100),
        ];
        crate::origin::ranged::assert_reads_like(&mut r, &mut cur, steps);
        assert!(r.seek(SeekFrom::End(-200_000)).is_err());
    }
}
