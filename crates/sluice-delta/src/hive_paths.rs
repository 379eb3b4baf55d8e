//! Hive-style partition paths as Delta's files and object stores spell them.

use std::collections::HashMap;

/// `%XX` escapes decoded (object store paths and URLs escape some characters).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Partition values from a hive-style path (`country=US/day=1/part.parquet`).
pub fn partition_values(path: &str, columns: &[String]) -> HashMap<String, Option<String>> {
    let mut values: HashMap<String, Option<String>> =
        columns.iter().map(|c| (c.clone(), None)).collect();
    for segment in path.split('/') {
        if let Some((key, value)) = segment.split_once('=') {
            let key = percent_decode(key);
            if let Some(slot) = values.get_mut(&key) {
                let value = percent_decode(value);
                *slot = (value != "__HIVE_DEFAULT_PARTITION__").then_some(value);
            }
        }
    }
    values
}
