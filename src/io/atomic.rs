//! Atomic output: every file the toolkit writes goes to a hidden temporary file in
//! the target's directory first and is renamed over the target when complete, so a
//! killed run never leaves a half-written output under the final name.

use std::fs;
use std::path::Path;

use tempfile::NamedTempFile;

use crate::error::{Error, Result};

/// Creates a hidden temporary file (`.NAME.XXXXXX.tmp`) beside `path`, for the
/// caller to fill, sync and `persist` over `path`. It is removed if dropped first.
pub fn temp_file_beside(path: &Path) -> Result<NamedTempFile> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::file(
            dir,
            format!(
                "output directory does not exist (needed for {})",
                path.display()
            ),
        ));
    }

    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{file_name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // A plain 0666 request (narrowed by the umask) so that the renamed output gets
    // the permissions of any newly created file; tempfile defaults to 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir).map_err(|e| Error::io(dir, e))
}

/// Fails when `output` is one of `inputs` (the same file, through any path), so a
/// mistyped `-o` can never replace a scan or a checkpoint with the tool's output.
pub fn reject_output_over_input(output: &Path, inputs: &[&Path]) -> Result<()> {
    let Ok(target) = fs::canonicalize(output) else {
        return Ok(()); // the output does not exist yet, so it is no input
    };
    for input in inputs {
        if fs::canonicalize(input).is_ok_and(|p| p == target) {
            return Err(Error::invalid(format!(
                "the output {} is also an input; choose another output path",
                output.display()
            )));
        }
    }
    Ok(())
}

/// Writes `text` to `path` atomically: a temporary file beside it, synced, then renamed.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut tmp = temp_file_beside(path)?;
    tmp.write_all(text.as_bytes()).and_then(|_| tmp.as_file().sync_all()).map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}
