//! The query language of `musicfs search` and of the `.search` folder, and
//! its translation into a tantivy query.
//!
//! ```text
//! bjork homogenic                 bare words: every word must match, in any text field
//! artist:bjork album:homogenic    one field (artist albumartist album title genre format)
//! title:"love song"               quotes: an exact phrase, no typo tolerance
//! radio*                          a trailing * matches by prefix
//! year:1997  year:>2000  year:>=2000  year:<1980  year:<=1980
//! year:[1990 TO 1999]  year:{1990 TO 2000}  year:[* TO 1980]  year:1990..1999
//! massive OR portishead           either (OR binds tighter than the implicit AND)
//! -live  NOT live                 exclude
//! ```
//!
//! We parse this ourselves rather than use tantivy's `QueryParser` because
//! the semantics we want do not fit its knobs: a typo budget that depends on
//! the word's length, exact matches ranked above fuzzy ones, a bare number
//! that also means a year, field names with aliases, words like `re:stacks`
//! or `AC/DC`, and one-line errors in our own words. The grammar is small
//! and every input either parses or gets a [`SearchError::BadQuery`]; there
//! is no input that panics (the parser only slices at char boundaries and
//! every loop consumes input).
//!
//! Matching, per word and per field, is a sum of three parts:
//!
//! - the word exactly: BM25 plus a constant [`EXACT_BONUS`];
//! - the word within Levenshtein distance 1 (words of 4 to 7 letters) or 2
//!   (8 and more), transpositions counting 1: a constant [`FUZZY_SCORE`];
//! - with a trailing `*`, any term starting with the word: [`FUZZY_SCORE`].
//!
//! So a document that has the word as typed always outranks one that only
//! has a near miss, and BM25 orders the exact matches among themselves.
//! Words of under 4 letters, and words with a digit in them (years, "mp3",
//! "2pac"), must match exactly: one edit in a short word or a number matches
//! too much that is unrelated.

use super::SearchError;
use super::schema::{Fields, TextField, tokens};
use std::ops::Bound;
use tantivy::Term;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, FuzzyTermQuery, Occur, PhraseQuery, Query,
    RangeQuery, TermQuery,
};
use tantivy::schema::IndexRecordOption;

/// The query syntax in a few lines, for `musicfs search --help`.
pub const QUERY_HELP: &str = "\
Query syntax:
  bjork homogenic              every word must match, in any field
  artist:bjork album:homogenic one field: artist albumartist album title genre format year
  title:\"love song\"            quotes: the exact phrase, no typo tolerance
  radio*                       a trailing * matches by prefix
  year:1997  year:>2000  year:<=1980  year:[1990 TO 1999]  year:1990..1999
  massive OR portishead        either one
  -live  NOT live              leave out
Case and accents do not matter (bjork finds Björk), and small typos are forgiven \
(radiohed finds Radiohead).";

/// A longer query is refused (it is typed by a person or a script, not a file).
pub const MAX_QUERY_BYTES: usize = 1024;

/// More words than this are refused: each costs a few term look-ups per field.
pub const MAX_QUERY_TERMS: usize = 32;

/// Added to the BM25 score of an exact match of a word.
const EXACT_BONUS: f32 = 1.0;

/// The whole score of a typo-tolerant or prefix match of a word.
const FUZZY_SCORE: f32 = 0.5;

/// A query, parsed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Parsed {
    /// Every group must match; a group matches when any of its clauses does.
    pub(crate) must: Vec<Vec<Clause>>,
    /// No clause here may match.
    pub(crate) must_not: Vec<Clause>,
}

/// One condition.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Clause {
    /// Words in one text field, or in any (`field: None`).
    Text {
        field: Option<TextField>,
        tokens: Vec<String>,
        how: Match,
    },
    /// A year range.
    Year { lo: Bound<i64>, hi: Bound<i64> },
}

/// How the words of a [`Clause::Text`] match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Match {
    /// Every word, each with its typo budget; the last one as a prefix too
    /// when it was typed with a trailing `*`.
    Loose { prefix_last: bool },
    /// Every word exactly (a quoted single word).
    Exact,
    /// The words next to each other, in order (a quoted phrase).
    Phrase,
}

/// What a field name in a query refers to.
enum FieldRef {
    Text(TextField),
    Year,
}

fn field_ref(name: &str) -> Option<FieldRef> {
    Some(match name.to_ascii_lowercase().as_str() {
        "artist" => FieldRef::Text(TextField::Artist),
        "albumartist" | "album_artist" => FieldRef::Text(TextField::AlbumArtist),
        "album" => FieldRef::Text(TextField::Album),
        "title" => FieldRef::Text(TextField::Title),
        "genre" => FieldRef::Text(TextField::Genre),
        "format" => FieldRef::Text(TextField::Format),
        "year" => FieldRef::Year,
        _ => return None,
    })
}

const FIELD_LIST: &str = "artist, albumartist, album, title, genre, format, year";

/// A value as written.
#[derive(Debug)]
enum Value {
    Word(String),
    Quoted(String),
    /// `[a TO b]` and friends, year only: (opening bracket, inside, closing bracket).
    Bracketed(char, String, char),
}

/// One item of the query before grouping.
#[derive(Debug)]
struct Item {
    negated: bool,
    field: Option<String>,
    value: Value,
}

enum Lexeme {
    Or,
    Item(Item),
}

fn bad(msg: impl Into<String>) -> SearchError {
    SearchError::BadQuery(msg.into())
}

/// Parses a query (see the module docs for the syntax).
pub(crate) fn parse(query: &str) -> Result<Parsed, SearchError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(bad(format!(
            "the query is too long ({} bytes, at most {MAX_QUERY_BYTES})",
            query.len()
        )));
    }
    if query.trim().is_empty() {
        return Err(bad("the query is empty"));
    }
    let lexemes = lex(query)?;
    let items = lexemes
        .iter()
        .filter(|l| matches!(l, Lexeme::Item(_)))
        .count();
    if items > MAX_QUERY_TERMS {
        return Err(bad(format!(
            "the query has {items} terms, at most {MAX_QUERY_TERMS}"
        )));
    }

    // Group: OR joins its two neighbours, everything else is AND.
    let mut groups: Vec<Vec<Item>> = Vec::new();
    let mut want_operand = false;
    for lexeme in lexemes {
        match lexeme {
            Lexeme::Or => {
                if groups.is_empty() || want_operand {
                    return Err(bad("'OR' needs a term on each side"));
                }
                want_operand = true;
            }
            Lexeme::Item(item) => match groups.last_mut() {
                Some(group) if want_operand => {
                    group.push(item);
                    want_operand = false;
                }
                _ => groups.push(vec![item]),
            },
        }
    }
    if want_operand {
        return Err(bad("'OR' needs a term on each side"));
    }

    let mut parsed = Parsed {
        must: Vec::new(),
        must_not: Vec::new(),
    };
    for group in groups {
        if group.len() > 1 && group.iter().any(|i| i.negated) {
            return Err(bad(
                "an excluded term (-word or NOT word) cannot be part of an OR",
            ));
        }
        let negated = group[0].negated;
        let mut alternatives = Vec::new();
        for item in group {
            alternatives.extend(clauses_of(item)?);
        }
        if alternatives.is_empty() {
            // Only punctuation, like "&" in "simon & garfunkel".
            continue;
        }
        if negated {
            parsed.must_not.extend(alternatives);
        } else {
            parsed.must.push(alternatives);
        }
    }
    if parsed.must.is_empty() && parsed.must_not.is_empty() {
        return Err(bad(format!(
            "nothing to search for in '{}': no letters or digits",
            query.trim()
        )));
    }
    Ok(parsed)
}

/// Splits the query into items and OR operators.
fn lex(query: &str) -> Result<Vec<Lexeme>, SearchError> {
    let s: Vec<char> = query.chars().collect();
    let n = s.len();
    let mut i = 0;
    let mut out = Vec::new();
    let mut pending_not = false;
    let text = |a: usize, b: usize| s[a..b].iter().collect::<String>();
    while i < n {
        if s[i].is_whitespace() {
            i += 1;
            continue;
        }
        let mut negated = false;
        if (s[i] == '-' || s[i] == '+') && i + 1 < n && !s[i + 1].is_whitespace() {
            negated = s[i] == '-';
            i += 1;
        }
        // An optional `field:` prefix.
        let mut j = i;
        while j < n && (s[j].is_ascii_alphabetic() || s[j] == '_') {
            j += 1;
        }
        let mut field = None;
        if j > i && j < n && s[j] == ':' {
            let name = text(i, j);
            if field_ref(&name).is_none() {
                return Err(bad(format!(
                    "unknown field '{name}' (fields: {FIELD_LIST}); put the word in quotes to search for it as text"
                )));
            }
            field = Some(name);
            i = j + 1;
            if i >= n || s[i].is_whitespace() {
                return Err(bad(format!(
                    "'{}:' has no value",
                    field.unwrap_or_default()
                )));
            }
        }
        let is_year = matches!(field.as_deref().and_then(field_ref), Some(FieldRef::Year));
        let value = if s[i] == '"' {
            let start = i + 1;
            let Some(len) = s[start..].iter().position(|&c| c == '"') else {
                return Err(bad("unterminated quote: add the closing \""));
            };
            i = start + len + 1;
            Value::Quoted(text(start, start + len))
        } else if is_year && (s[i] == '[' || s[i] == '{') {
            let open = s[i];
            let start = i + 1;
            let Some(len) = s[start..].iter().position(|&c| c == ']' || c == '}') else {
                return Err(bad(format!(
                    "unterminated range: '{open}' needs a closing ']' or '}}'"
                )));
            };
            let close = s[start + len];
            i = start + len + 1;
            Value::Bracketed(open, text(start, start + len), close)
        } else {
            let start = i;
            while i < n && !s[i].is_whitespace() {
                i += 1;
            }
            Value::Word(text(start, i))
        };
        if field.is_none()
            && !negated
            && let Value::Word(w) = &value
        {
            match w.as_str() {
                "OR" | "||" => {
                    if pending_not {
                        return Err(bad("'NOT' must be followed by a term"));
                    }
                    out.push(Lexeme::Or);
                    continue;
                }
                "AND" | "&&" => continue,
                "NOT" => {
                    pending_not = true;
                    continue;
                }
                _ => {}
            }
        }
        out.push(Lexeme::Item(Item {
            negated: negated || std::mem::take(&mut pending_not),
            field,
            value,
        }));
    }
    if pending_not {
        return Err(bad("'NOT' must be followed by a term"));
    }
    Ok(out)
}

/// The clauses one item stands for: none (only punctuation), one, or two
/// (a bare number is words *or* a year).
fn clauses_of(item: Item) -> Result<Vec<Clause>, SearchError> {
    match item.field.as_deref().map(|f| (f, field_ref(f))) {
        Some((_, Some(FieldRef::Year))) => Ok(vec![year_clause(&item.value)?]),
        Some((_, Some(FieldRef::Text(f)))) => {
            Ok(text_clause(Some(f), &item.value).into_iter().collect())
        }
        Some((name, None)) => Err(bad(format!("unknown field '{name}'"))),
        None => {
            let mut out: Vec<Clause> = text_clause(None, &item.value).into_iter().collect();
            if let Value::Word(w) = &item.value
                && let Some(year) = bare_year(w)
            {
                out.push(Clause::Year {
                    lo: Bound::Included(year),
                    hi: Bound::Included(year),
                });
            }
            Ok(out)
        }
    }
}

/// A bare word that is a plausible year also matches the year field.
fn bare_year(word: &str) -> Option<i64> {
    if word.len() == 4 && word.bytes().all(|b| b.is_ascii_digit()) {
        word.parse().ok()
    } else {
        None
    }
}

fn text_clause(field: Option<TextField>, value: &Value) -> Option<Clause> {
    let (raw, how) = match value {
        Value::Quoted(q) => (q.as_str(), None),
        Value::Word(w) => {
            let trimmed = w.trim_end_matches('*');
            let prefix_last = trimmed.len() != w.len();
            (trimmed, Some(Match::Loose { prefix_last }))
        }
        // Only lexed for the year field.
        Value::Bracketed(..) => return None,
    };
    let tokens = tokens(raw);
    if tokens.is_empty() {
        return None;
    }
    let how = how.unwrap_or(if tokens.len() > 1 {
        Match::Phrase
    } else {
        Match::Exact
    });
    Some(Clause::Text { field, tokens, how })
}

const YEAR_HELP: &str = "a year is a number: year:1997, year:>2000, year:<=1980, year:[1990 TO 1999] or year:1990..1999";

fn year_number(s: &str, whole: &str) -> Result<i64, SearchError> {
    s.trim()
        .parse::<i64>()
        .map_err(|_| bad(format!("bad year '{whole}': {YEAR_HELP}")))
}

fn year_bound(s: &str, whole: &str, inclusive: bool) -> Result<Bound<i64>, SearchError> {
    let s = s.trim();
    if s == "*" {
        return Ok(Bound::Unbounded);
    }
    let v = year_number(s, whole)?;
    Ok(if inclusive {
        Bound::Included(v)
    } else {
        Bound::Excluded(v)
    })
}

fn year_clause(value: &Value) -> Result<Clause, SearchError> {
    let (lo, hi) = match value {
        Value::Bracketed(open, inside, close) => {
            let whole = format!("{open}{inside}{close}");
            let parts: Vec<&str> = inside.split_whitespace().collect();
            let [a, to, b] = parts[..] else {
                return Err(bad(format!("bad year range '{whole}': {YEAR_HELP}")));
            };
            if !to.eq_ignore_ascii_case("TO") {
                return Err(bad(format!("bad year range '{whole}': {YEAR_HELP}")));
            }
            (
                year_bound(a, &whole, *open == '[')?,
                year_bound(b, &whole, *close == ']')?,
            )
        }
        Value::Word(w) | Value::Quoted(w) => {
            let w = w.trim();
            if let Some(rest) = w.strip_prefix(">=") {
                (Bound::Included(year_number(rest, w)?), Bound::Unbounded)
            } else if let Some(rest) = w.strip_prefix("<=") {
                (Bound::Unbounded, Bound::Included(year_number(rest, w)?))
            } else if let Some(rest) = w.strip_prefix('>') {
                (Bound::Excluded(year_number(rest, w)?), Bound::Unbounded)
            } else if let Some(rest) = w.strip_prefix('<') {
                (Bound::Unbounded, Bound::Excluded(year_number(rest, w)?))
            } else if let Some((a, b)) = w.split_once("..").or_else(|| split_dash(w)) {
                (
                    Bound::Included(year_number(a, w)?),
                    Bound::Included(year_number(b, w)?),
                )
            } else {
                let v = year_number(w, w)?;
                (Bound::Included(v), Bound::Included(v))
            }
        }
    };
    if range_is_empty(lo, hi) {
        return Err(bad("the year range is empty (is it backwards?)"));
    }
    Ok(Clause::Year { lo, hi })
}

/// `1990-1999`, but not `-5`.
fn split_dash(w: &str) -> Option<(&str, &str)> {
    let (a, b) = w.split_once('-')?;
    (!a.is_empty()).then_some((a, b))
}

fn range_is_empty(lo: Bound<i64>, hi: Bound<i64>) -> bool {
    let lo = match lo {
        Bound::Included(v) => Some(v as i128),
        Bound::Excluded(v) => Some(v as i128 + 1),
        Bound::Unbounded => None,
    };
    let hi = match hi {
        Bound::Included(v) => Some(v as i128),
        Bound::Excluded(v) => Some(v as i128 - 1),
        Bound::Unbounded => None,
    };
    matches!((lo, hi), (Some(lo), Some(hi)) if lo > hi)
}

/// The typo budget of a word: see the module docs.
pub(crate) fn typo_budget(token: &str) -> u8 {
    if token.bytes().any(|b| b.is_ascii_digit()) {
        return 0;
    }
    match token.chars().count() {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

/// Translates a parsed query for an index with these fields.
pub(crate) fn compile(parsed: &Parsed, fields: &Fields) -> Box<dyn Query> {
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for group in &parsed.must {
        let q = match &group[..] {
            [one] => clause_query(one, fields),
            many => any_of(many.iter().map(|c| clause_query(c, fields))),
        };
        clauses.push((Occur::Must, q));
    }
    if clauses.is_empty() {
        // Only exclusions: "everything but".
        clauses.push((Occur::Must, Box::new(AllQuery)));
    }
    for c in &parsed.must_not {
        clauses.push((Occur::MustNot, clause_query(c, fields)));
    }
    Box::new(BooleanQuery::new(clauses))
}

fn any_of(queries: impl IntoIterator<Item = Box<dyn Query>>) -> Box<dyn Query> {
    let mut qs: Vec<Box<dyn Query>> = queries.into_iter().collect();
    if qs.len() == 1 {
        return qs.pop().expect("one query");
    }
    Box::new(BooleanQuery::new(
        qs.into_iter().map(|q| (Occur::Should, q)).collect(),
    ))
}

fn all_of(queries: impl IntoIterator<Item = Box<dyn Query>>) -> Box<dyn Query> {
    let mut qs: Vec<Box<dyn Query>> = queries.into_iter().collect();
    if qs.len() == 1 {
        return qs.pop().expect("one query");
    }
    Box::new(BooleanQuery::new(
        qs.into_iter().map(|q| (Occur::Must, q)).collect(),
    ))
}

fn clause_query(clause: &Clause, fields: &Fields) -> Box<dyn Query> {
    match clause {
        Clause::Year { lo, hi } => {
            let term = |v: &i64| Term::from_field_i64(fields.year, *v);
            Box::new(RangeQuery::new(
                lo.as_ref().map(term),
                hi.as_ref().map(term),
            ))
        }
        Clause::Text { field, tokens, how } => {
            let targets: Vec<TextField> = match field {
                Some(f) => vec![*f],
                None => TextField::ALL.to_vec(),
            };
            match how {
                Match::Phrase if tokens.len() > 1 => any_of(targets.iter().map(|&f| {
                    let field = fields.text(f);
                    let terms = tokens
                        .iter()
                        .map(|t| Term::from_field_text(field, t))
                        .collect();
                    Box::new(PhraseQuery::new(terms)) as Box<dyn Query>
                })),
                Match::Phrase | Match::Exact => all_of(
                    tokens
                        .iter()
                        .map(|t| any_of(targets.iter().map(|&f| exact(fields, f, t)))),
                ),
                Match::Loose { prefix_last } => {
                    let last = tokens.len() - 1;
                    all_of(tokens.iter().enumerate().map(|(i, t)| {
                        let prefix = *prefix_last && i == last;
                        any_of(targets.iter().map(|&f| loose(fields, f, t, prefix)))
                    }))
                }
            }
        }
    }
}

/// BM25 plus a constant: an exact match always beats a fuzzy-only one, even
/// for a word so common that its BM25 is next to nothing.
fn exact(fields: &Fields, f: TextField, token: &str) -> Box<dyn Query> {
    let term = Term::from_field_text(fields.text(f), token);
    Box::new(BooleanQuery::new(vec![
        (
            Occur::Should,
            Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)),
        ),
        (
            Occur::Should,
            Box::new(ConstScoreQuery::new(
                Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
                EXACT_BONUS,
            )),
        ),
    ]))
}

fn loose(fields: &Fields, f: TextField, token: &str, prefix: bool) -> Box<dyn Query> {
    let distance = typo_budget(token);
    if distance == 0 && !prefix {
        return exact(fields, f, token);
    }
    let term = Term::from_field_text(fields.text(f), token);
    let mut parts: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Should, exact(fields, f, token))];
    if distance > 0 {
        parts.push((
            Occur::Should,
            Box::new(BoostQuery::new(
                Box::new(FuzzyTermQuery::new(term.clone(), distance, true)),
                FUZZY_SCORE,
            )),
        ));
    }
    if prefix {
        parts.push((
            Occur::Should,
            Box::new(BoostQuery::new(
                Box::new(FuzzyTermQuery::new_prefix(term, 0, true)),
                FUZZY_SCORE,
            )),
        ));
    }
    Box::new(BooleanQuery::new(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(field: Option<TextField>, tokens: &[&str], how: Match) -> Clause {
        Clause::Text {
            field,
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            how,
        }
    }

    const LOOSE: Match = Match::Loose { prefix_last: false };

    fn err(q: &str) -> String {
        match parse(q) {
            Err(SearchError::BadQuery(msg)) => msg,
            other => panic!("{q:?} should be a bad query, got {other:?}"),
        }
    }

    #[test]
    fn bare_words_and_fields() {
        let p = parse("Björk artist:SIGUR_ROS Title:\"Love  Song\"").unwrap();
        assert_eq!(
            p.must,
            vec![
                vec![text(None, &["bjork"], LOOSE)],
                vec![text(Some(TextField::Artist), &["sigur", "ros"], LOOSE)],
                vec![text(
                    Some(TextField::Title),
                    &["love", "song"],
                    Match::Phrase
                )],
            ]
        );
        assert!(p.must_not.is_empty());
    }

    #[test]
    fn operators() {
        let p = parse("massive OR portishead -live NOT remix AND trip").unwrap();
        assert_eq!(
            p.must,
            vec![
                vec![
                    text(None, &["massive"], LOOSE),
                    text(None, &["portishead"], LOOSE)
                ],
                vec![text(None, &["trip"], LOOSE)],
            ]
        );
        assert_eq!(
            p.must_not,
            vec![text(None, &["live"], LOOSE), text(None, &["remix"], LOOSE)]
        );
        // "or" in lower case is a word.
        assert_eq!(parse("rock or roll").unwrap().must.len(), 3);
    }

    #[test]
    fn years() {
        use Bound::*;
        let y = |q: &str| match parse(q).unwrap().must.remove(0).remove(0) {
            Clause::Year { lo, hi } => (lo, hi),
            other => panic!("{other:?}"),
        };
        assert_eq!(y("year:1997"), (Included(1997), Included(1997)));
        assert_eq!(y("year:>2000"), (Excluded(2000), Unbounded));
        assert_eq!(y("year:>=2000"), (Included(2000), Unbounded));
        assert_eq!(y("year:<1980"), (Unbounded, Excluded(1980)));
        assert_eq!(y("YEAR:<=1980"), (Unbounded, Included(1980)));
        assert_eq!(y("year:[1990 TO 1999]"), (Included(1990), Included(1999)));
        assert_eq!(y("year:{1990 to 2000}"), (Excluded(1990), Excluded(2000)));
        assert_eq!(y("year:[* TO 1980]"), (Unbounded, Included(1980)));
        assert_eq!(y("year:1990..1999"), (Included(1990), Included(1999)));
        assert_eq!(y("year:1990-1999"), (Included(1990), Included(1999)));
        assert_eq!(y("year:\"2001\""), (Included(2001), Included(2001)));
        // A bare year is words or a year.
        let p = parse("1979").unwrap();
        assert_eq!(p.must[0].len(), 2);
        assert_eq!(
            p.must[0][1],
            Clause::Year {
                lo: Included(1979),
                hi: Included(1979)
            }
        );
    }

    #[test]
    fn prefix_and_punctuation() {
        let p = parse("radio* simon & garfunkel").unwrap();
        assert_eq!(
            p.must[0],
            vec![text(None, &["radio"], Match::Loose { prefix_last: true })]
        );
        assert_eq!(p.must.len(), 3, "'&' alone is dropped");
        let p = parse("AC/DC \"x\"").unwrap();
        assert_eq!(p.must[0], vec![text(None, &["ac", "dc"], LOOSE)]);
        assert_eq!(p.must[1], vec![text(None, &["x"], Match::Exact)]);
        // Only an exclusion: fine, it means "everything but".
        assert_eq!(parse("-live").unwrap().must.len(), 0);
    }

    #[test]
    fn bad_queries_say_why_in_one_line() {
        for (q, want) in [
            ("", "empty"),
            ("   ", "empty"),
            ("& / !", "nothing to search for"),
            ("artst:bjork", "unknown field 'artst'"),
            ("artist:", "has no value"),
            ("artist: bjork", "has no value"),
            ("title:\"love song", "unterminated quote"),
            ("year:[1990 TO 1999", "unterminated range"),
            ("year:abc", "bad year 'abc'"),
            ("year:>", "bad year"),
            ("year:[1990 1999]", "bad year range"),
            ("year:[1990 TO x]", "bad year"),
            ("year:[2000 TO 1990]", "empty"),
            ("OR bjork", "'OR' needs"),
            ("bjork OR", "'OR' needs"),
            ("a OR OR b", "'OR' needs"),
            ("bjork NOT", "'NOT' must"),
            ("a OR -b", "excluded term"),
        ] {
            let msg = err(q);
            assert!(msg.contains(want), "{q:?}: {msg}");
            assert!(!msg.contains('\n'), "{q:?}: {msg}");
        }
        assert!(err(&"a ".repeat(600)).contains("too long"));
        assert!(err(&"ab ".repeat(40)).contains("at most 32"));
    }

    #[test]
    fn odd_input_never_panics() {
        for q in [
            "\"",
            "\"\"",
            "-",
            "--",
            "+",
            "-\"",
            ":",
            "::",
            "a:b:c",
            "year:",
            "year:[",
            "year:{]",
            "year:[]",
            "year:[ TO ]",
            "title:\"\"",
            "-year:1990",
            "ñ:x",
            "é",
            "日本語",
            "*",
            "a*b*",
            "year:-5",
            "year:--",
            "year:..",
            "\u{0}",
            "NOT NOT x",
            "OR",
            "AND",
            "( )",
        ] {
            let _ = parse(q);
        }
    }

    #[test]
    fn typo_budgets() {
        assert_eq!(typo_budget("abc"), 0);
        assert_eq!(typo_budget("bjork"), 1);
        assert_eq!(typo_budget("radiohed"), 2);
        assert_eq!(typo_budget("1997"), 0);
        assert_eq!(typo_budget("2pac"), 0);
    }
}
