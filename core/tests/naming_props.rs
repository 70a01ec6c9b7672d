//! Property tests for `naming` and `layout`: whatever the tags hold, the tree
//! only ever shows valid, stable names.

use musicfs_core::TrackTags;
use musicfs_core::layout::{Layout, TrackView};
use musicfs_core::naming::{
    NAME_MAX_BYTES, fit_name, is_valid_name, sanitize_component, with_collision_suffix,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use std::collections::BTreeSet;

/// Characters that exercise every rule: separators, controls, trimmed
/// characters, multi-byte text and combining marks.
const TRICKY: &[char] = &[
    '.', ' ', '/', '\0', '\t', '\n', '\r', '\u{7f}', '\u{85}', '\u{a0}', '\u{3000}', '\u{200b}',
    '\u{301}', '\u{feff}', '$', '{', '}', '%', '(', ')', 'a', 'Z', '0', '_', '-', 'é', '½', '日',
    '😀', '\u{fffd}',
];

/// Arbitrary text up to about 2000 bytes, from several generators so that
/// the interesting cases are not left to chance.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        vec(any::<char>(), 0..500).prop_map(|cs| cs.into_iter().collect()),
        vec(select(TRICKY), 0..700).prop_map(|cs| cs.into_iter().collect()),
        vec(any::<u8>(), 0..2000).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        (select(TRICKY), 0..2000usize).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

fn any_ext() -> impl Strategy<Value = String> {
    select(
        &[
            "flac", "mp3", "opus", "m4a", "wv", "", "tar.gz", ".flac", " x ",
        ][..],
    )
    .prop_map(str::to_owned)
    .boxed()
    .prop_union(Just("e".repeat(40)).boxed())
}

fn any_tags() -> impl Strategy<Value = TrackTags> {
    let text = || proptest::option::of(any_text());
    let strings = (text(), text(), text(), text(), text(), text());
    let numbers = (
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<i32>()),
        any::<bool>(),
    );
    (strings, numbers).prop_map(
        |(
            (title, artist, album_artist, album, genre, format),
            (track, track_total, disc, disc_total, year, compilation),
        )| TrackTags {
            title: title.map(Into::into),
            artist: artist.map(Into::into),
            album_artist: album_artist.map(Into::into),
            album: album.map(Into::into),
            track,
            track_total,
            disc,
            disc_total,
            year,
            genre: genre.map(Into::into),
            compilation,
            format: format.map(Into::into),
        },
    )
}

const LAYOUTS: &[&str] = &[
    musicfs_core::layout::DEFAULT_LAYOUT,
    "$genre/$year - $album/$disc.$track $title.$ext",
    "$artist/$title",
    "$year/$format/${albumartist} - ${album}/$track.$ext",
    " . $title . /$$ $ext $track $$",
];

/// The base part of a name produced with `ext`, given what `fit_name` makes
/// of that extension.
fn base_of<'a>(name: &'a str, ext: &str) -> &'a str {
    let ext = sanitize_component(ext);
    if ext.is_empty() || ext.len() > 32 {
        return name;
    }
    name.strip_suffix(&format!(".{ext}")).unwrap_or(name)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sanitized_and_fitted_names_are_valid(raw in any_text(), ext in any_ext()) {
        let clean = sanitize_component(&raw);
        prop_assert!(!clean.contains('/'));
        prop_assert!(!clean.chars().any(char::is_control));
        prop_assert_eq!(sanitize_component(&clean), clean.clone());
        let name = fit_name(&clean, "");
        prop_assert!(is_valid_name(&name), "{:?}", name);
        let name = fit_name(&clean, &ext);
        prop_assert!(is_valid_name(&name), "{:?}", name);
        let name = fit_name(&raw, &ext);
        prop_assert!(is_valid_name(&name), "{:?}", name);
    }

    #[test]
    fn fitting_cuts_only_the_base_on_a_char_boundary(
        raw in any_text(),
        ext in select(&["flac", "mp3", "opus", "", "wv"][..]),
    ) {
        let clean = sanitize_component(&raw);
        let name = fit_name(&raw, ext);
        prop_assert!(name.len() <= NAME_MAX_BYTES);
        if !ext.is_empty() {
            prop_assert!(name.ends_with(&format!(".{ext}")), "{:?}", name);
        }
        let base = base_of(&name, ext);
        if clean.is_empty() {
            prop_assert_eq!(base, "_");
        } else {
            // A prefix of the sanitised base: the cut fell on one of its
            // char boundaries, and nothing was rewritten.
            prop_assert!(clean.starts_with(base), "{:?} / {:?}", base, clean);
            let untruncated = if ext.is_empty() { clean.len() } else { clean.len() + 1 + ext.len() };
            if untruncated <= NAME_MAX_BYTES {
                prop_assert_eq!(base, clean.as_str());
            }
        }
    }

    #[test]
    fn rendered_paths_are_valid_and_deterministic(
        tags in any_tags(),
        stem in prop_oneof![
            select(&["01 Intro", "", "..", " track ", "a/b"][..]).prop_map(str::to_owned),
            any_text(),
        ],
        ext in select(&["flac", "mp3", "opus", "", "m4a"][..]),
        multi_disc in any::<bool>(),
        layout in select(LAYOUTS),
    ) {
        let layout = Layout::parse(layout);
        prop_assert!(layout.is_ok(), "{:?}", layout);
        let Ok(layout) = layout else { return Ok(()) };
        let view = TrackView { tags: &tags, ext, stem: &stem, multi_disc };
        let path = layout.render(&view);
        prop_assert!(!path.is_empty());
        for component in &path {
            prop_assert!(is_valid_name(component), "{:?}", component);
        }
        prop_assert_eq!(&path, &layout.render(&view));
        let copy = tags.clone();
        let again = TrackView { tags: &copy, ext, stem: &stem, multi_disc };
        prop_assert_eq!(&path, &layout.render(&again));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn collision_variants_are_valid_and_distinct(raw in any_text(), ext in any_ext()) {
        let original = fit_name(&raw, &ext);
        let clean_ext = sanitize_component(&ext);
        let keeps_ext = !clean_ext.is_empty() && clean_ext.len() <= 32;
        let mut seen = BTreeSet::new();
        for n in 2..1000 {
            let name = with_collision_suffix(&raw, &ext, n);
            prop_assert!(is_valid_name(&name), "{:?}", name);
            prop_assert_ne!(&name, &original);
            if keeps_ext {
                prop_assert!(name.ends_with(&format!(" ({n}).{clean_ext}")), "{:?}", name);
            } else {
                prop_assert!(name.ends_with(&format!(" ({n})")), "{:?}", name);
            }
            prop_assert!(seen.insert(name));
        }
    }

    #[test]
    fn collision_variants_of_suffixed_names_differ(
        middle in vec(select(&['x', 'é', '😀', ' ', '.'][..]), 0..20),
        target in 236usize..=252,
        n in 2u32..20,
        ext in select(&["flac", ""][..]),
    ) {
        // Bases that already end in the very suffix the variant adds, at byte
        // lengths where the variant's cut lands right before it: the case
        // most likely to reproduce the original name.
        let mut stem: String = std::iter::once('x').chain(middle).collect();
        while stem.len() < target {
            stem.push('x');
        }
        let dot_ext = if ext.is_empty() { 0 } else { ext.len() + 1 };
        let stem: String = stem.chars().take(target.saturating_sub(dot_ext)).collect();
        let base = format!("{stem}x ({n})");
        let variant = with_collision_suffix(&base, ext, n);
        prop_assert!(is_valid_name(&variant));
        prop_assert_ne!(variant, fit_name(&base, ext));
    }
}
