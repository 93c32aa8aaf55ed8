//! CSV output of a batch run: one row per input, streamed to stdout or collected
//! in a file that survives a killed job and resumes where it stopped.
//!
//! Every row starts with the input's id; the header is written once.
//!
//! **Stream (stdout).** Each row is written and flushed as soon as its input is
//! done. When the reader closes the pipe (`| head`), the write fails with
//! `BrokenPipe`. Like ripgrep, the sink then stops writing quietly and reports
//! [`WriteOutcome::Closed`], so the tool can stop early and exit 0.
//!
//! **File (`-o FILE`).**
//! - While running, each finished row is appended to `FILE.partial` with a
//!   single `write_all` of the complete line, followed by a flush. `FILE.partial`
//!   is locked (advisory lock) while a run holds it, so two runs cannot write the
//!   same output; file systems without locks are used unlocked.
//! - On start, rows already in `FILE` (an earlier finished run) and in
//!   `FILE.partial` (a killed run) are loaded, and their ids are reported through
//!   [`RowSink::resumed`] so the tool can skip them. A trailing line of
//!   `FILE.partial` that is not a complete row (the process was killed while
//!   writing it) is cut off. Both files must have exactly the new header;
//!   otherwise opening fails with a message pointing to `--overwrite`.
//! - `--overwrite` ignores the old rows. `FILE` stays as it is until the end.
//! - There is one row per id. A row for an id that is already present replaces
//!   it, and rows from `FILE.partial` replace those from `FILE` (they are newer).
//! - [`RowSink::finish`] writes all rows, old and new, to `FILE.tmp` in the same
//!   directory, in the order of the current input list. Rows whose ids are not in
//!   that list follow in their previous order, so another shard's rows in the
//!   same file are kept, never silently dropped. It then renames
//!   `FILE.tmp` over `FILE` and removes `FILE.partial`. When nothing changed
//!   (every input was already in `FILE`), `FILE` is left untouched, so its
//!   modification time does not trigger `make` rules again.
//!
//! - [`RowSink::abandon`] ends a run in which an input failed: the rows stay in
//!   `FILE.partial` and `FILE` is not written, so the failed inputs are retried
//!   by the next run.
//!
//! So a killed job leaves `FILE` as it was (or absent) plus `FILE.partial`, and
//! a reader such as `make` never finds a half-written `FILE`, because a rename
//! within one POSIX file system replaces the file atomically.
//!
//! NOTE: rows are flushed to the operating system but not synced to disk one by
//! one, so a power loss (unlike a killed process) can lose the last rows of
//! `FILE.partial`. `FILE.tmp` is synced before the rename.
//!
//! Numbers are formatted by the caller; [`format_f32`] gives the shortest text
//! that parses back to the same `f32`.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Formats an `f32` with the fewest digits that parse back to the same value.
///
/// This is Rust's `Display` for `f32`, which is shortest round-trip and never
/// uses exponent notation (`1e-7` prints as `0.0000001`). NaN prints as `NaN`
/// and infinities as `inf` and `-inf`.
pub fn format_f32(value: f32) -> String {
    value.to_string()
}

/// The result of writing one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// The reader of stdout closed the pipe; nothing more will be written.
    Closed,
}

/// Rows found in an existing output on start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resumed {
    /// Ids with a row already; the tool can skip these inputs.
    pub ids: HashSet<String>,
    /// Rows read from `FILE`.
    pub rows_in_output: usize,
    /// Rows read from `FILE.partial`.
    pub rows_in_partial: usize,
    /// Whether an incomplete last line of `FILE.partial` was cut off.
    pub dropped_incomplete_line: bool,
}

/// Destination of the rows of a batch run (see the module documentation).
pub struct RowSink {
    header: Vec<String>,
    resumed: Resumed,
    target: Target,
}

enum Target {
    Stream(StreamTarget),
    File(Box<FileTarget>),
}

struct StreamTarget {
    writer: Box<dyn Write>,
    closed: bool,
}

struct FileTarget {
    path: PathBuf,
    partial_path: PathBuf,
    partial: File,
    /// Rows in first-seen order; a replaced row keeps its slot.
    rows: Vec<Vec<String>>,
    slot_of_id: HashMap<String, usize>,
    /// Positions of the ids in the current input list.
    input_order: HashMap<String, usize>,
    resumed: Resumed,
    /// Whether `FILE` must be rewritten at the end.
    changed: bool,
}

impl RowSink {
    /// Streams rows to stdout; the header is written at once.
    pub fn stdout(header: &[&str]) -> Result<RowSink> {
        RowSink::stream(Box::new(std::io::stdout()), header)
    }

    /// Streams rows to `writer` (stdout in the tools; a pipe in tests).
    pub fn stream(writer: Box<dyn Write>, header: &[&str]) -> Result<RowSink> {
        let header = checked_header(header)?;
        let mut target = StreamTarget {
            writer,
            closed: false,
        };
        target.write_line(&encode_row(&header)?)?;
        Ok(RowSink {
            header,
            resumed: Resumed::default(),
            target: Target::Stream(target),
        })
    }

    /// Opens `path` for a resumable run (see the module documentation).
    ///
    /// `input_ids` lists the ids of the current inputs in order; it sets the row
    /// order of the final file. Fails when `FILE.partial` cannot be created or
    /// locked, or when an existing file's header differs and `overwrite` is false.
    pub fn file<S: AsRef<str>>(
        path: &Path,
        header: &[&str],
        input_ids: &[S],
        overwrite: bool,
    ) -> Result<RowSink> {
        let header = checked_header(header)?;
        let partial_path = with_suffix(path, ".partial");
        let partial = open_locked(path, &partial_path)?;

        let input_order = input_ids
            .iter()
            .enumerate()
            .map(|(position, id)| (id.as_ref().to_string(), position))
            .collect();
        let mut target = FileTarget {
            path: path.to_path_buf(),
            partial_path,
            partial,
            rows: Vec::new(),
            slot_of_id: HashMap::new(),
            input_order,
            resumed: Resumed::default(),
            changed: overwrite,
        };

        if overwrite {
            target.restart_partial(&header)?;
        } else {
            target.load_output(&header)?;
            target.load_partial(&header)?;
        }
        let resumed = std::mem::take(&mut target.resumed);
        Ok(RowSink {
            header,
            resumed,
            target: Target::File(Box::new(target)),
        })
    }

    /// Returns the rows found on start (always empty for a stream).
    pub fn resumed(&self) -> &Resumed {
        &self.resumed
    }

    /// Returns whether a row for `id` was loaded on start.
    pub fn is_resumed(&self, id: &str) -> bool {
        self.resumed.ids.contains(id)
    }

    /// Returns the rows loaded on start (id first), empty for a stream.
    pub fn resumed_rows(&self) -> &[Vec<String>] {
        match &self.target {
            Target::File(file) => &file.rows,
            Target::Stream(_) => &[],
        }
    }

    /// Returns the header given on creation.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// Writes one row; its first field is the input's id.
    pub fn write_row<S: AsRef<str>>(&mut self, row: &[S]) -> Result<WriteOutcome> {
        let row: Vec<String> = row.iter().map(|field| field.as_ref().to_string()).collect();
        if row.len() != self.header.len() {
            return Err(Error::invalid(format!(
                "output row for '{}' has {} fields but the header has {}",
                row.first().map(String::as_str).unwrap_or(""),
                row.len(),
                self.header.len()
            )));
        }
        let line = encode_row(&row)?;

        match &mut self.target {
            Target::Stream(stream) => stream.write_line(&line),
            Target::File(file) => {
                file.append_partial(&line)?;
                file.insert(row);
                file.changed = true;
                Ok(WriteOutcome::Written)
            }
        }
    }

    /// Ends a run that left inputs undone: flushes a stream, or leaves the rows in
    /// `FILE.partial` without writing `FILE`, so a rerun resumes and a Makefile never
    /// finds an incomplete `FILE` up to date. Returns the partial file's path.
    pub fn abandon(self) -> Result<Option<PathBuf>> {
        match self.target {
            Target::Stream(mut stream) => {
                stream.finish()?;
                Ok(None)
            }
            Target::File(file) => {
                let mut partial = &file.partial;
                partial.flush().map_err(|e| Error::io(&file.partial_path, e))?;
                Ok(Some(file.partial_path.clone()))
            }
        }
    }

    /// Ends the output: flushes a stream, or writes and renames the final file.
    /// Returns [`WriteOutcome::Closed`] when the stdout reader had closed the pipe.
    pub fn finish(self) -> Result<WriteOutcome> {
        match self.target {
            Target::Stream(mut stream) => stream.finish(),
            Target::File(file) => {
                file.finish(&self.header)?;
                Ok(WriteOutcome::Written)
            }
        }
    }
}

impl StreamTarget {
    fn write_line(&mut self, line: &[u8]) -> Result<WriteOutcome> {
        if self.closed {
            return Ok(WriteOutcome::Closed);
        }
        let written = self
            .writer
            .write_all(line)
            .and_then(|()| self.writer.flush());
        self.outcome(written)
    }

    fn finish(&mut self) -> Result<WriteOutcome> {
        if self.closed {
            return Ok(WriteOutcome::Closed);
        }
        let flushed = self.writer.flush();
        self.outcome(flushed)
    }

    fn outcome(&mut self, result: std::io::Result<()>) -> Result<WriteOutcome> {
        match result {
            Ok(()) => Ok(WriteOutcome::Written),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(WriteOutcome::Closed)
            }
            Err(e) => Err(Error::io("<stdout>", e)),
        }
    }
}

impl FileTarget {
    fn insert(&mut self, row: Vec<String>) {
        let id = row[0].clone();
        match self.slot_of_id.get(&id) {
            Some(&slot) => self.rows[slot] = row,
            None => {
                self.slot_of_id.insert(id, self.rows.len());
                self.rows.push(row);
            }
        }
    }

    fn restart_partial(&mut self, header: &[String]) -> Result<()> {
        self.partial
            .set_len(0)
            .map_err(|e| Error::io(&self.partial_path, e))?;
        self.append_partial(&encode_row(header)?)
    }

    fn append_partial(&mut self, line: &[u8]) -> Result<()> {
        // One write_all per line: a kill can cut only the last line short.
        self.partial
            .write_all(line)
            .and_then(|()| self.partial.flush())
            .map_err(|e| Error::io(&self.partial_path, e))
    }

    fn load_output(&mut self, header: &[String]) -> Result<()> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        let records = parse_records(&bytes, &self.path)?;
        let Some((_, first)) = records.first() else {
            return Ok(());
        };
        check_header(&self.path, first, header)?;

        for (_, row) in records.into_iter().skip(1) {
            check_row_length(&self.path, &row, header)?;
            self.resumed.ids.insert(row[0].clone());
            self.resumed.rows_in_output += 1;
            self.insert(row);
        }
        Ok(())
    }

    fn load_partial(&mut self, header: &[String]) -> Result<()> {
        let mut bytes = Vec::new();
        (&self.partial)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&self.partial_path, e))?;
        let mut records = parse_records(&bytes, &self.partial_path)?;

        // Cut a last line that a kill left incomplete.
        if let Some((start, last)) = records.last() {
            let is_complete = encode_row(last)? == bytes[*start as usize..];
            if !is_complete {
                self.partial
                    .set_len(*start)
                    .map_err(|e| Error::io(&self.partial_path, e))?;
                self.resumed.dropped_incomplete_line = true;
                records.pop();
            }
        }

        let Some((_, first)) = records.first() else {
            return self.restart_partial(header);
        };
        check_header(&self.partial_path, first, header)?;

        for (_, row) in records.into_iter().skip(1) {
            check_row_length(&self.partial_path, &row, header)?;
            self.resumed.ids.insert(row[0].clone());
            self.resumed.rows_in_partial += 1;
            self.insert(row);
            self.changed = true;
        }
        Ok(())
    }

    fn finish(self, header: &[String]) -> Result<()> {
        if self.changed || !self.path.exists() {
            self.write_final(header)?;
        }

        // Unlock (by closing) before removing, since some systems cannot remove open files.
        let FileTarget {
            partial,
            partial_path,
            ..
        } = self;
        drop(partial);
        match std::fs::remove_file(&partial_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&partial_path, e)),
        }
    }

    fn write_final(&self, header: &[String]) -> Result<()> {
        let rank = |slot: usize, row: &[String]| match self.input_order.get(&row[0]) {
            Some(&position) => (0, position),
            None => (1, slot),
        };
        let mut ordered: Vec<(usize, &Vec<String>)> = self.rows.iter().enumerate().collect();
        ordered.sort_by_key(|(slot, row)| rank(*slot, row));

        let mut text = encode_row(header)?;
        for (_, row) in ordered {
            text.extend(encode_row(row)?);
        }

        let temporary = with_suffix(&self.path, ".tmp");
        write_synced(&temporary, &text)?;
        std::fs::rename(&temporary, &self.path).map_err(|e| Error::io(&self.path, e))
    }
}

fn checked_header(header: &[&str]) -> Result<Vec<String>> {
    if header.is_empty() {
        return Err(Error::invalid(
            "output header is empty; the first column must be the id",
        ));
    }
    Ok(header.iter().map(|name| name.to_string()).collect())
}

/// Returns `path` with `suffix` appended to its file name (`a.csv` -> `a.csv.partial`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Opens (creating if needed) `FILE.partial` for reading and appending, and takes
/// its exclusive lock without waiting.
fn open_locked(path: &Path, partial_path: &Path) -> Result<File> {
    let partial = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(partial_path)
        .map_err(|e| Error::io(partial_path, e))?;

    match partial.try_lock() {
        Ok(()) => Ok(partial),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::file(
            path,
            format!(
                "another run is writing this output ({} is locked); wait for it to end or choose another output file",
                partial_path.display()
            ),
        )),
        // NOTE: file systems without lock support (some network mounts) run unlocked.
        Err(std::fs::TryLockError::Error(_)) => Ok(partial),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).map_err(|e| Error::io(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Encodes one CSV record with its `\n` terminator, quoting as the csv crate does.
fn encode_row<S: AsRef<[u8]>>(row: &[S]) -> Result<Vec<u8>> {
    let mut writer = csv::WriterBuilder::new().from_writer(Vec::new());
    writer
        .write_record(row)
        .map_err(|e| Error::invalid(format!("cannot encode CSV row: {e}")))?;
    writer
        .into_inner()
        .map_err(|e| Error::invalid(format!("cannot encode CSV row: {}", e.error())))
}

/// Parses all records, each with the byte offset where it starts.
fn parse_records(bytes: &[u8], source: &Path) -> Result<Vec<(u64, Vec<String>)>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut records = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| Error::file(source, format!("invalid CSV: {e}")))?;
        let start = record.position().map(|p| p.byte()).unwrap_or(0);
        records.push((start, record.iter().map(str::to_string).collect()));
    }
    Ok(records)
}

fn check_header(source: &Path, found: &[String], expected: &[String]) -> Result<()> {
    if found == expected {
        return Ok(());
    }
    Err(Error::file(
        source,
        format!(
            "existing header does not match this run's columns (found {} columns: {}; expected {}: {}); \
             pass --overwrite to start afresh, or choose another output file",
            found.len(),
            abbreviate(found),
            expected.len(),
            abbreviate(expected)
        ),
    ))
}

/// Lists at most the first six column names, so an error stays one readable line.
fn abbreviate(columns: &[String]) -> String {
    const SHOWN: usize = 6;
    let mut text = columns.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(",");
    if columns.len() > SHOWN {
        text.push_str(&format!(",… ({} more)", columns.len() - SHOWN));
    }
    text
}

fn check_row_length(source: &Path, row: &[String], header: &[String]) -> Result<()> {
    if row.len() == header.len() {
        return Ok(());
    }
    Err(Error::file(
        source,
        format!(
            "row '{}' has {} fields but the header has {}; the file is damaged: pass --overwrite to start afresh",
            row.first().map(String::as_str).unwrap_or(""),
            row.len(),
            header.len()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_f32_round_trips() {
        for value in [
            0.1f32,
            1.0 / 3.0,
            1e-7,
            3.4028235e38,
            -0.0,
            16777217.0,
            1.17549435e-38,
        ] {
            let text = format_f32(value);
            let parsed: f32 = text.parse().unwrap();
            assert_eq!(
                parsed.to_bits(),
                value.to_bits(),
                "{value} printed as {text}"
            );
        }
    }

    #[test]
    fn encode_row_quotes_separators() {
        let line = encode_row(&["a,b", "say \"hi\"", "plain"]).unwrap();
        assert_eq!(line, b"\"a,b\",\"say \"\"hi\"\"\",plain\n");
    }

    #[test]
    fn with_suffix_appends_to_file_name() {
        assert_eq!(
            with_suffix(Path::new("out/emb.csv"), ".partial"),
            PathBuf::from("out/emb.csv.partial")
        );
    }
}
