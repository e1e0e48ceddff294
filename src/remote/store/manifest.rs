//! The manifest: what syncease uploaded to a prefix, kept at `PREFIX/.syncease/manifest`, so
//! that a run reads the source mtime of every object with one GET instead of a HEAD each.
//!
//! A listing gives each object's size, ETag and LastModified but not its user metadata. After
//! a run that uploaded, deleted or had to HEAD anything, the manifest is written (last, after
//! every upload) with one row per object: its path below the prefix, size, ETag, LastModified
//! and the source mtime it carries. The next run trusts a row only for an object whose listed
//! size, ETag and LastModified are the row's — the same object version: the ETag changes with
//! the contents, LastModified with the metadata too (a copy onto itself that sets another
//! `mtime`, as rclone does to change a time, keeps the ETag). Anything else (no manifest, a row
//! from before someone else wrote the object, a manifest of an interrupted run) falls back to
//! the HEAD, so a comparison is exactly what it would be without the manifest.
//!
//! Format: gzip of JSON lines; the first line `{"syncease-manifest":1}`, then one array
//! `[path, size, etag, mtime, modified]` per object, mtime in rclone's text form, modified the
//! LastModified in whole Unix seconds (what a HEAD gives; a row without it is not trusted).

use std::collections::HashMap;
use std::io::{self, Read, Write};

use crate::entry::Mtime;

/// The manifest's key below the prefix.
pub const KEY: &str = ".syncease/manifest";
/// The folder it is in, as a WebDAV listing names it (object stores list no folders).
pub const FOLDER: &str = ".syncease/";

const HEADER: &str = r#"{"syncease-manifest":1}"#;

/// One version of an object, as a listing (or a HEAD) shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub size: u64,
    pub etag: String,
    /// LastModified in whole seconds; `None` until known (an upload's answer does not say).
    pub modified: Option<i64>,
}

/// What the manifest says of one object: the version it describes, and the source mtime
/// that version carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub version: Version,
    pub mtime: Mtime,
}

impl Row {
    /// Whether the row describes the object `listed` (see the module documentation).
    pub fn holds_for(&self, listed: &Version) -> bool {
        self.version.modified.is_some() && self.version == *listed
    }
}

/// Rows by path below the prefix.
pub type Rows = HashMap<String, Row>;

/// The manifest's bytes for `rows`.
pub fn encode(rows: &Rows) -> io::Result<Vec<u8>> {
    let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    writeln!(out, "{HEADER}")?;
    let mut paths: Vec<&String> = rows.keys().collect();
    paths.sort();
    for path in paths {
        let row = &rows[path];
        let v = &row.version;
        let line = serde_json::json!([
            path,
            v.size,
            v.etag,
            super::format_mtime(row.mtime),
            v.modified
        ]);
        writeln!(out, "{line}")?;
    }
    out.finish()
}

/// The rows of a manifest's bytes; an error for anything that is not one (then none is used).
pub fn decode(bytes: &[u8]) -> io::Result<Rows> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes).read_to_string(&mut text)?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a syncease manifest (or a newer version)",
        ));
    }
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed manifest row");
    let mut rows = Rows::new();
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|_| bad())?;
        let (Some(path), Some(size), Some(etag), Some(mtime)) = (
            value[0].as_str(),
            value[1].as_u64(),
            value[2].as_str(),
            value[3].as_str().and_then(super::parse_mtime),
        ) else {
            return Err(bad());
        };
        let version = Version {
            size,
            etag: etag.to_string(),
            modified: value[4].as_i64(),
        };
        rows.insert(path.to_string(), Row { version, mtime });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_anything_else_is_refused() {
        let mut rows = Rows::new();
        for (path, nsec) in [("a.txt", 1), ("dir/with\nnewline", 2), ("ü/\"q\"", 3)] {
            let version = Version {
                size: 7,
                etag: "\"abc-2\"".into(),
                modified: (nsec != 2).then_some(1_700_000_000),
            };
            let row = Row {
                version,
                mtime: Mtime {
                    sec: -5,
                    nsec: nsec * 100_000_000,
                },
            };
            rows.insert(path.to_string(), row);
        }
        assert_eq!(decode(&encode(&rows).unwrap()).unwrap(), rows);
        assert_eq!(decode(&encode(&Rows::new()).unwrap()).unwrap(), Rows::new());
        assert!(decode(b"plain text").is_err());
        let mut other = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        other.write_all(b"{\"syncease-manifest\":2}\n").unwrap();
        assert!(decode(&other.finish().unwrap()).is_err());
    }
}
