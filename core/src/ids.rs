//! Small identifiers shared across the core.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Index of an origin in the mount's configuration (`--origin` order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OriginId(pub u16);

impl fmt::Display for OriginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "origin#{}", self.0)
    }
}

/// An inode number of the virtual tree. `Ino::ROOT` is the mount's root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ino(pub u64);

impl Ino {
    /// The root directory, as FUSE requires.
    pub const ROOT: Ino = Ino(1);
}

/// A file's path inside its origin: `/`-separated, relative, raw bytes
/// (local file names need not be UTF-8; S3 keys are).
///
/// Shared, not copied, when cloned: one origin file's path is held by its
/// catalog entry, the tree's node and source index, the syncer's catalog
/// key and the engine's chunk-map key, which on a 200,000-track library
/// was some 70 MB of copies.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OriginPath(#[serde(with = "serde_shared_bytes")] Arc<[u8]>);

impl OriginPath {
    /// Wraps raw path bytes.
    pub fn new(bytes: impl Into<Box<[u8]>>) -> OriginPath {
        OriginPath(Arc::from(bytes.into()))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The directory part (everything before the last `/`), empty at the top.
    pub fn parent(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[..i],
            None => &[],
        }
    }

    /// The last path component.
    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// The file name without its extension, lossily decoded.
    pub fn stem_lossy(&self) -> String {
        let name = self.file_name();
        let stem = match name.iter().rposition(|&b| b == b'.') {
            Some(0) | None => name,
            Some(i) => &name[..i],
        };
        String::from_utf8_lossy(stem).into_owned()
    }

    /// The extension, lower-cased, without the dot; empty if there is none.
    pub fn extension_lower(&self) -> String {
        let name = self.file_name();
        match name.iter().rposition(|&b| b == b'.') {
            Some(0) | None => String::new(),
            Some(i) => String::from_utf8_lossy(&name[i + 1..]).to_lowercase(),
        }
    }
}

impl fmt::Debug for OriginPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for OriginPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// [`serde_bytes_compat`] for a shared `Arc<[u8]>`: the same byte string.
mod serde_shared_bytes {
    use serde::{Deserializer, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(bytes: &Arc<[u8]>, s: S) -> Result<S::Ok, S::Error> {
        super::serde_bytes_compat::serialize(bytes, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[u8]>, D::Error> {
        super::serde_bytes_compat::deserialize_into(d)
    }
}

/// Serialises `Box<[u8]>` as a byte string rather than a sequence of
/// integers, so MessagePack stores paths compactly.
pub(crate) mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};
    use std::marker::PhantomData;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<[u8]>, D::Error> {
        deserialize_into(d)
    }

    /// A byte string (or, as older writers stored it, a string or a
    /// sequence of integers) into any owner of bytes, with one allocation.
    pub(super) fn deserialize_into<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: for<'b> From<&'b [u8]> + From<Vec<u8>>,
    {
        struct Visitor<T>(PhantomData<T>);
        impl<'de, T> serde::de::Visitor<'de> for Visitor<T>
        where
            T: for<'b> From<&'b [u8]> + From<Vec<u8>>,
        {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<T, E> {
                Ok(T::from(v))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<T, E> {
                Ok(T::from(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
                Ok(T::from(v.as_bytes()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(T::from(out))
            }
        }
        d.deserialize_bytes(Visitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_saved_as_the_byte_string_it_always_was_and_clones_share_it() {
        let path = OriginPath::new(b"Artist/Album/01 \xff.flac".to_vec());
        let saved = rmp_serde::to_vec(&path).unwrap();
        // What the Box<[u8]> field wrote: a MessagePack bin of the bytes,
        // inside the newtype.
        #[derive(Serialize)]
        struct Old(#[serde(with = "serde_bytes_compat")] Box<[u8]>);
        let old = Old(path.as_bytes().into());
        assert_eq!(saved, rmp_serde::to_vec(&old).unwrap());
        let back: OriginPath = rmp_serde::from_slice(&saved).unwrap();
        assert_eq!(back, path);
        let copy = path.clone();
        assert!(std::ptr::eq(copy.as_bytes(), path.as_bytes()), "shared");
    }
}
