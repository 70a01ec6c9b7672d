//! The index's schema and its one tokenizer.
//!
//! Every text field goes through the same analyzer, at indexing time and at
//! query time, so that what a person types meets what the tags say:
//! [`SimpleTokenizer`] (split on anything that is not a letter or a digit),
//! a guard against absurdly long tokens, [`LowerCaser`], and
//! [`AsciiFoldingFilter`] (`Björk` → `bjork`, `Sigur Rós` → `sigur ros`,
//! `Motörhead` → `motorhead`). No stemming and no stop words: these are
//! names, not prose, and "The The" is a band.
//!
//! The tokenizer's name carries a version. Tokenizer names are recorded in
//! the schema stored with the index, so changing the analysis (and the name
//! with it) makes an old index fail the schema check at open, and it is
//! rebuilt rather than half-matching queries analyzed another way.

use tantivy::Index;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};

/// The registered name of the analyzer (versioned: see the module docs).
pub(crate) const TOKENIZER: &str = "musicfs_fold_v1";

/// Tokens of this many bytes or more are dropped, at indexing and at query
/// time alike. No real word is that long; a tag of 70 KB of letters would
/// otherwise make a term tantivy refuses.
const MAX_TOKEN_BYTES: usize = 100;

/// The name of the virtual-path field: indexed as one raw term (the key of
/// upserts and removes) and a fast column (the tie-breaker of the ordering).
pub(crate) const VPATH: &str = "vpath";

/// The name of the year field (i64, indexed and fast: exact years and ranges).
pub(crate) const YEAR: &str = "year";

/// The analyzer of every text field and of every query word.
pub(crate) fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// Splits `text` into the index's terms.
pub(crate) fn tokens(text: &str) -> Vec<String> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while let Some(token) = stream.next() {
        out.push(token.text.clone());
    }
    out
}

/// Registers [`TOKENIZER`] on an index. Tokenizers are not stored with an
/// index: every `Index` value, opened or created, needs this before it is
/// written or searched.
pub(crate) fn register(index: &Index) {
    index.tokenizers().register(TOKENIZER, analyzer());
}

/// The searchable text fields, by the names the query syntax uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TextField {
    Artist,
    AlbumArtist,
    Album,
    Title,
    Genre,
    Format,
}

impl TextField {
    /// Every text field, in schema order: what a bare word searches.
    pub(crate) const ALL: [TextField; 6] = [
        TextField::Artist,
        TextField::AlbumArtist,
        TextField::Album,
        TextField::Title,
        TextField::Genre,
        TextField::Format,
    ];

    /// The field's name in the schema and in queries.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TextField::Artist => "artist",
            TextField::AlbumArtist => "albumartist",
            TextField::Album => "album",
            TextField::Title => "title",
            TextField::Genre => "genre",
            TextField::Format => "format",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The fields of an index, resolved once.
#[derive(Clone, Debug)]
pub(crate) struct Fields {
    pub(crate) vpath: Field,
    pub(crate) year: Field,
    text: [Field; 6],
}

/// A field the index's schema lacks (a bug: the schema is checked first).
#[derive(Debug, thiserror::Error)]
#[error("the index has no field '{0}'")]
pub(crate) struct MissingField(String);

impl Fields {
    /// The schema field of a text field.
    pub(crate) fn text(&self, f: TextField) -> Field {
        self.text[f.index()]
    }

    /// Resolves the fields by name. Only used on a schema already known to
    /// equal [`schema()`], so a missing field is a bug.
    pub(crate) fn of(schema: &Schema) -> Result<Fields, MissingField> {
        let get = |name: &str| {
            schema
                .get_field(name)
                .map_err(|_| MissingField(name.to_owned()))
        };
        let mut text = [get(VPATH)?; 6];
        for f in TextField::ALL {
            text[f.index()] = get(f.name())?;
        }
        Ok(Fields {
            vpath: get(VPATH)?,
            year: get(YEAR)?,
            text,
        })
    }
}

/// The schema. An index on disk whose stored schema differs (another
/// MusicFS version, another tokenizer) is rebuilt, never migrated.
///
/// Nothing is stored in the document store: the only thing a search returns
/// is the virtual path, and that is read from its fast column, which the
/// ordering needs anyway.
pub(crate) fn schema() -> Schema {
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            // Positions make quoted phrases ("love song") exact; for
            // 20,000 short tag values they cost a few hundred KB.
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let mut builder = Schema::builder();
    builder.add_text_field(VPATH, STRING | FAST);
    for f in TextField::ALL {
        builder.add_text_field(f.name(), text.clone());
    }
    builder.add_i64_field(YEAR, INDEXED | FAST);
    builder.build()
}
