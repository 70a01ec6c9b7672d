//! Small identifiers shared across the core.

use serde::{Deserialize, Serialize};
use std::fmt;

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
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OriginPath(#[serde(with = "serde_bytes_compat")] Box<[u8]>);

impl OriginPath {
    /// Wraps raw path bytes.
    pub fn new(bytes: impl Into<Box<[u8]>>) -> OriginPath {
        OriginPath(bytes.into())
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

/// Serialises `Box<[u8]>` as a byte string rather than a sequence of
/// integers, so MessagePack stores paths compactly.
pub(crate) mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<[u8]>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Box<[u8]>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(v.into())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(v.into_boxed_slice())
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(v.as_bytes().into())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out.into_boxed_slice())
            }
        }
        d.deserialize_bytes(Visitor)
    }
}
