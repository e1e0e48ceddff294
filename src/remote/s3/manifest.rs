//! The manifest: what syncease uploaded to a prefix, kept at `PREFIX/.syncease/manifest`, so
//! that a run reads the source mtime of every object with one GET instead of a HEAD each.
//!
//! A listing gives each object's size and ETag but not its user metadata. After a run that
//! uploaded, deleted or had to HEAD anything, the manifest is written (last, after every
//! upload) with one row per object: its path below the prefix, size, ETag and the source mtime
//! it carries. The next run trusts a row only for an object whose listed size and ETag are the
//! row's — the same object version, since an ETag changes with the contents. Anything else (no
//! manifest, a row from before someone else wrote the object, a manifest of an interrupted run)
//! falls back to the HEAD, so a comparison is exactly what it would be without the manifest.
//!
//! Format: gzip of JSON lines; the first line `{"syncease-manifest":1}`, then one array
//! `[path, size, etag, mtime]` per object, mtime in rclone's text form.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use crate::entry::Mtime;

/// The manifest's key below the prefix.
pub const KEY: &str = ".syncease/manifest";

const HEADER: &str = r#"{"syncease-manifest":1}"#;

/// What the manifest says of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub size: u64,
    pub etag: String,
    pub mtime: Mtime,
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
        let line = serde_json::json!([path, row.size, row.etag, super::format_mtime(row.mtime)]);
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
        let row = Row {
            size,
            etag: etag.to_string(),
            mtime,
        };
        rows.insert(path.to_string(), row);
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
            let row = Row {
                size: 7,
                etag: "\"abc-2\"".into(),
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
