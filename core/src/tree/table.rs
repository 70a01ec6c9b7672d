//! The tree's maps: sorted tables, built once and never changed.
//!
//! A tree is rebuilt, never edited, so its maps need no room to grow. A
//! [`Table`] holds its keys and its values in two boxed slices: it costs
//! what its entries cost, and a lookup's binary search reads only the keys.
//! A `BTreeMap` costs more, up to twice as much when it is decoded: filled
//! in ascending order, each full node splits into a left half that is
//! never filled again (measured on a 200,000-track tree loaded from disk:
//! 45 MB of nodes map where its entries take 25 MB).

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;

/// A map sorted by key, built once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table<K, V> {
    keys: Box<[K]>,
    values: Box<[V]>,
}

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            keys: Box::new([]),
            values: Box::new([]),
        }
    }
}

impl<K: Ord, V> Table<K, V> {
    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let i = self.keys.binary_search_by(|k| k.borrow().cmp(key)).ok()?;
        self.values.get(i)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + ExactSizeIterator {
        self.keys.iter().zip(self.values.iter())
    }

    /// The entries whose keys come after `key`, in key order.
    pub fn after<Q>(&self, key: &Q) -> impl Iterator<Item = (&K, &V)>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let from = self.keys.partition_point(|k| k.borrow() <= key);
        self.iter().skip(from)
    }

    /// The keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator {
        self.keys.iter()
    }

    /// The values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.values.iter()
    }

    /// The keys and the values, in key order.
    pub(crate) fn into_parts(self) -> (Vec<K>, Vec<V>) {
        (self.keys.into_vec(), self.values.into_vec())
    }

    /// A table of entries already in strictly ascending key order.
    pub(crate) fn from_sorted(keys: Vec<K>, values: Vec<V>) -> Table<K, V> {
        debug_assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys out of order");
        debug_assert_eq!(keys.len(), values.len());
        Table {
            keys: keys.into_boxed_slice(),
            values: values.into_boxed_slice(),
        }
    }
}

/// Sorts the entries; of equal keys the last one stays (as when they are
/// inserted one by one into a map).
impl<K: Ord, V> Table<K, V> {
    /// The table of `entries` given in key order (equal keys side by
    /// side: the last of them stays), built as they come instead of
    /// sorted: on 200,000 tracks, sorting tables whose entries were in
    /// order already was a sixth of a tree's build. Entries out of order
    /// after all are sorted, as [`FromIterator`] does.
    pub(crate) fn from_ordered(entries: impl IntoIterator<Item = (K, V)>) -> Table<K, V> {
        let mut entries = entries.into_iter();
        let mut keys: Vec<K> = Vec::with_capacity(entries.size_hint().0);
        let mut values: Vec<V> = Vec::with_capacity(keys.capacity());
        while let Some((k, v)) = entries.next() {
            match keys.last() {
                Some(last) if *last == k => {
                    if let Some(value) = values.last_mut() {
                        *value = v;
                    }
                }
                Some(last) if *last > k => {
                    return keys
                        .into_iter()
                        .zip(values)
                        .chain(std::iter::once((k, v)))
                        .chain(entries)
                        .collect();
                }
                _ => {
                    keys.push(k);
                    values.push(v);
                }
            }
        }
        Table::from_sorted(keys, values)
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for Table<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let mut entries: Vec<(K, V)> = entries.into_iter().collect();
        // Stable: equal keys keep their order, and the last one is kept.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut keys: Vec<K> = Vec::with_capacity(entries.len());
        let mut values: Vec<V> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            if keys.last() == Some(&k) {
                if let Some(last) = values.last_mut() {
                    *last = v;
                }
                continue;
            }
            keys.push(k);
            values.push(v);
        }
        Table::from_sorted(keys, values)
    }
}

impl<'t, K: Ord, V> IntoIterator for &'t Table<K, V> {
    type Item = (&'t K, &'t V);
    type IntoIter = std::iter::Zip<std::slice::Iter<'t, K>, std::slice::Iter<'t, V>>;

    fn into_iter(self) -> Self::IntoIter {
        self.keys.iter().zip(self.values.iter())
    }
}

/// Saved as a map, as the `BTreeMap` it replaces was.
impl<K: Serialize, V: Serialize> Serialize for Table<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.keys.iter().zip(self.values.iter()))
    }
}

impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Table<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TableVisitor<K, V>(PhantomData<(K, V)>);

        impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for TableVisitor<K, V> {
            type Value = Table<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Table<K, V>, A::Error> {
                // The hint is the input's word: trusted only so far.
                let capacity = map.size_hint().unwrap_or(0).min(1 << 16);
                let mut keys: Vec<K> = Vec::with_capacity(capacity);
                let mut values: Vec<V> = Vec::with_capacity(capacity);
                let mut sorted = true;
                while let Some((k, v)) = map.next_entry::<K, V>()? {
                    sorted &= keys.last().is_none_or(|last| *last < k);
                    keys.push(k);
                    values.push(v);
                }
                if sorted {
                    // What a saved table always is: no second copy.
                    Ok(Table::from_sorted(keys, values))
                } else {
                    Ok(keys.into_iter().zip(values).collect())
                }
            }
        }

        d.deserialize_map(TableVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_table_answers_as_the_map_of_the_same_entries() {
        let entries = [
            (5u32, "e"),
            (1, "a"),
            (3, "c"),
            (1, "z"),
            (9, "i"),
            (3, "y"),
        ];
        let table: Table<u32, &str> = entries.iter().copied().collect();
        let map: BTreeMap<u32, &str> = entries.iter().copied().collect();
        assert_eq!(table.len(), map.len());
        assert!(table.iter().eq(map.iter()));
        assert!(table.keys().rev().eq(map.keys().rev()));
        for k in 0..11 {
            assert_eq!(table.get(&k), map.get(&k), "key {k}");
        }
        for k in 0..11 {
            let after: Vec<_> = table.after(&k).collect();
            let want: Vec<_> = map.range(k + 1..).collect();
            assert_eq!(after, want, "after {k}");
        }
        assert!(Table::<u32, u32>::default().is_empty());
    }

    #[test]
    fn a_table_of_ordered_entries_is_the_table_of_the_same_entries_sorted() {
        let ordered = [
            (1u32, "a"),
            (1, "b"),
            (3, "c"),
            (4, "d"),
            (4, "e"),
            (9, "f"),
        ];
        // Out of order: first at the second entry, then late, then at the end.
        let unordered = [
            (3u32, "c"),
            (1, "a"),
            (4, "d"),
            (1, "b"),
            (9, "f"),
            (4, "e"),
        ];
        let late = [
            (1u32, "a"),
            (3, "c"),
            (4, "d"),
            (9, "f"),
            (1, "b"),
            (4, "e"),
        ];
        for entries in [
            &ordered[..],
            &unordered[..],
            &late[..],
            &ordered[..1],
            &[][..],
        ] {
            let want: Table<u32, &str> = entries.iter().copied().collect();
            let got = Table::from_ordered(entries.iter().copied());
            assert_eq!(got, want, "{entries:?}");
        }
        let kept = Table::from_ordered(ordered.iter().copied());
        assert_eq!(
            (kept.get(&1), kept.get(&4), kept.len()),
            (Some(&"b"), Some(&"e"), 4)
        );
    }

    #[test]
    fn a_table_reads_back_what_it_saved_and_reads_a_saved_map() {
        let map: BTreeMap<String, u64> = (0..300).map(|i| (format!("name {i}"), i)).collect();
        let table: Table<String, u64> = map.clone().into_iter().collect();
        let bytes = rmp_serde::to_vec(&table).expect("encode");
        assert_eq!(
            bytes,
            rmp_serde::to_vec(&map).expect("encode"),
            "same format as the map"
        );
        let back: Table<String, u64> = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back, table);
        assert_eq!(back.get("name 42"), Some(&42));
        assert_eq!(back.get("name 300"), None);
    }

    #[test]
    fn a_saved_map_out_of_order_or_with_repeats_reads_sorted() {
        // Keys 3, 1, 3: a map written by something else.
        struct Unsorted;
        impl Serialize for Unsorted {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map([(3u8, 30u8), (1, 10), (3, 31)])
            }
        }
        let bytes = rmp_serde::to_vec(&Unsorted).expect("encode");
        let table: Table<u8, u8> = rmp_serde::from_slice(&bytes).expect("decode");
        assert!(table.iter().eq([(&1, &10), (&3, &31)]));
    }
}
