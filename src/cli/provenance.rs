//! Provenance sidecars: `FILE.json` next to each output file, recording what made it.
//!
//! The record contains the tool and its version, the command line, the weights file with
//! its SHA-256 and the encoder configuration inferred from it, and the options that
//! change the numbers (preprocessing, pooling, windows). Two output files whose
//! sidecars agree on all of these come from the same computation, so a study can tell
//! whether rows from different runs or shards may be compared.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Returns the sidecar path of an output: `embeddings.csv` → `embeddings.csv.json`.
pub fn sidecar_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

/// Computes the SHA-256 of a file as lowercase hex, reading it in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut block).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Builds the common part of a record: tool, version and command line.
pub fn record(tool: &str, details: Value) -> Value {
    let args: Vec<String> = std::env::args().collect();
    json!({
        "tool": tool,
        "version": env!("CARGO_PKG_VERSION"),
        "command_line": args,
        "details": details,
    })
}

/// Writes `record` as pretty JSON to the sidecar of `output`, atomically.
pub fn write_sidecar(output: &Path, record: &Value) -> Result<()> {
    let path = sidecar_path(output);
    let mut text = serde_json::to_string_pretty(record).map_err(|e| Error::file(&path, e.to_string()))?;
    text.push('\n');

    let mut tmp = crate::io::atomic::temp_file_beside(&path)?;
    tmp.write_all(text.as_bytes())
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io(&path, e))?;
    tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_appends_json_suffix() {
        assert_eq!(sidecar_path(Path::new("out/emb.csv")), PathBuf::from("out/emb.csv.json"));
    }

    #[test]
    fn sha256_of_known_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
