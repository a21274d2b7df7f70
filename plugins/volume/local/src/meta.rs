//! The metadata record of one volume (`volumes/<name>/volume.json`): its format, how it is
//! (de)serialized, and what a record read back must satisfy before the driver trusts it.

use serde::{Deserialize, Serialize};

use crate::layout;

/// The metadata format this driver writes and reads. A record with another format was written
/// by a different driver version; rather than guess, the driver reports it as unusable.
pub const FORMAT: u32 = 1;

/// What the driver knows about a volume, beyond what its directory entries say.
///
/// Written once, before the volume becomes visible, and never modified: mounts are recorded
/// as separate files, so there is no read-modify-write to lose under concurrent instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMeta {
    /// Always [`FORMAT`] when written by this version.
    pub format: u32,
    /// The volume's name; must equal the name of its directory.
    pub name: String,
    /// Creation time, nanoseconds since the Unix epoch (UTC).
    pub created_at: u64,
    /// The options the volume was created with, in the order given.
    pub options: Vec<(String, String)>,
}

impl VolumeMeta {
    /// A record for a new volume.
    pub fn new(name: &str, created_at: u64, options: Vec<(String, String)>) -> Self {
        Self {
            format: FORMAT,
            name: name.to_owned(),
            created_at,
            options,
        }
    }

    /// The record as stored: pretty JSON (the state directory is meant to be inspectable),
    /// newline-terminated.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut json = serde_json::to_vec_pretty(self)?;
        json.push(b'\n');
        Ok(json)
    }

    /// Parses the record stored in the directory of volume `name` and checks it describes that
    /// volume in a format this driver understands. The error is a reason for the operator.
    pub fn from_json(name: &str, json: &[u8]) -> Result<Self, String> {
        let meta: Self = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        if meta.format != FORMAT {
            return Err(format!(
                "format {} (this driver reads format {FORMAT})",
                meta.format
            ));
        }
        if meta.name != name {
            return Err(format!("it names volume {:?}", meta.name));
        }
        // Unreachable through this driver (the directory name was validated), but the record
        // is only trusted once it is known to be consistent.
        layout::validate_name(&meta.name).map_err(|e| e.to_string())?;
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let meta = VolumeMeta::new(
            "data",
            1_700_000_000_123_456_789,
            vec![("k".into(), "v".into())],
        );
        let json = meta.to_json().unwrap();
        assert!(json.ends_with(b"\n"));
        assert_eq!(VolumeMeta::from_json("data", &json).unwrap(), meta);
    }

    #[test]
    fn stored_format_is_stable() {
        // The on-disk shape is a compatibility contract with earlier and later driver versions.
        let json = br#"{"format":1,"name":"db","created_at":42,"options":[["a","1"],["b","2"]]}"#;
        let meta = VolumeMeta::from_json("db", json).unwrap();
        assert_eq!(meta.created_at, 42);
        assert_eq!(
            meta.options,
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        let written: serde_json::Value = serde_json::from_slice(&meta.to_json().unwrap()).unwrap();
        let original: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(written, original);
    }

    #[test]
    fn rejects_other_formats_names_and_garbage() {
        let other = br#"{"format":2,"name":"db","created_at":0,"options":[]}"#;
        assert!(
            VolumeMeta::from_json("db", other)
                .unwrap_err()
                .contains("format 2")
        );
        let moved = br#"{"format":1,"name":"other","created_at":0,"options":[]}"#;
        assert!(
            VolumeMeta::from_json("db", moved)
                .unwrap_err()
                .contains("other")
        );
        assert!(VolumeMeta::from_json("db", b"{").is_err());
        assert!(VolumeMeta::from_json("db", b"").is_err());
        let missing = br#"{"format":1,"name":"db"}"#;
        assert!(VolumeMeta::from_json("db", missing).is_err());
    }
}
