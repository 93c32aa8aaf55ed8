//! The per-step CSV log of a training run (`train_log.csv` in the run's directory).
//!
//! Columns: `step` (completed steps), `elapsed_s` (seconds in the training loop over all
//! sessions), `lr.NAME` for each optimizer, `loss.NAME` for each loss term and `val.NAME` for
//! each validation metric, empty where a row has no value. Every row is flushed when written,
//! so the file is current when the job is killed. On resume, rows after the checkpoint's step
//! are dropped, because the resumed run computes those steps again.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::atomic::temp_file_beside;

/// File name of the log in the run's directory.
pub const LOG_FILE: &str = "train_log.csv";

/// The names that make up the log's columns, fixed for the whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogColumns {
    pub optimizers: Vec<String>,
    pub losses: Vec<String>,
    pub metrics: Vec<String>,
}

impl LogColumns {
    /// Returns the header row.
    pub fn header(&self) -> Vec<String> {
        let mut header = vec!["step".to_string(), "elapsed_s".to_string()];
        header.extend(self.optimizers.iter().map(|n| format!("lr.{n}")));
        header.extend(self.losses.iter().map(|n| format!("loss.{n}")));
        header.extend(self.metrics.iter().map(|n| format!("val.{n}")));
        header
    }
}

/// One row of the log.
#[derive(Debug, Clone, Copy)]
pub struct LogRow<'a> {
    pub step: u64,
    pub elapsed_s: f64,
    pub learning_rates: &'a BTreeMap<String, f64>,
    pub losses: &'a BTreeMap<String, f64>,
    /// Validation results, when validation ran after this step.
    pub metrics: Option<&'a BTreeMap<String, f64>>,
}

/// An open log, appending one flushed row per step.
pub struct TrainLog {
    path: PathBuf,
    columns: LogColumns,
    writer: csv::Writer<File>,
}

impl TrainLog {
    /// Starts a new log at `path` with a header row, replacing any file there.
    pub fn create(path: &Path, columns: LogColumns) -> Result<TrainLog> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut log = TrainLog::with_file(path, columns, file);
        let header = log.columns.header();
        log.write_record(&header)?;
        Ok(log)
    }

    /// Continues the log at `path` after a resume from `step`: keeps the rows up to `step`
    /// and drops later ones. The header must equal the one `columns` gives. A missing file
    /// starts a new log.
    pub fn resume(path: &Path, columns: LogColumns, step: u64) -> Result<TrainLog> {
        if !path.exists() {
            return TrainLog::create(path, columns);
        }
        let kept = rows_up_to(path, &columns.header(), step)?;
        rewrite(path, &columns.header(), &kept)?;

        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(TrainLog::with_file(path, columns, file))
    }

    fn with_file(path: &Path, columns: LogColumns, file: File) -> TrainLog {
        TrainLog {
            path: path.to_path_buf(),
            columns,
            writer: csv::Writer::from_writer(file),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `row` and flushes it. A value whose name has no column is an error, so a
    /// misspelled loss name does not vanish from the log.
    pub fn append(&mut self, row: &LogRow) -> Result<()> {
        self.reject_unknown("optimizer", row.learning_rates, &self.columns.optimizers)?;
        self.reject_unknown("loss", row.losses, &self.columns.losses)?;
        if let Some(metrics) = row.metrics {
            self.reject_unknown("validation metric", metrics, &self.columns.metrics)?;
        }

        let mut record = vec![row.step.to_string(), format!("{:.3}", row.elapsed_s)];
        record.extend(cells(&self.columns.optimizers, Some(row.learning_rates)));
        record.extend(cells(&self.columns.losses, Some(row.losses)));
        record.extend(cells(&self.columns.metrics, row.metrics));
        self.write_record(&record)
    }

    fn reject_unknown(
        &self,
        what: &str,
        values: &BTreeMap<String, f64>,
        columns: &[String],
    ) -> Result<()> {
        match values.keys().find(|name| !columns.contains(name)) {
            Some(name) => Err(Error::file(
                &self.path,
                format!("{what} {name} has no column in the log (columns: {}); declare it when the run starts", columns.join(", ")),
            )),
            None => Ok(()),
        }
    }

    fn write_record(&mut self, record: &[String]) -> Result<()> {
        self.writer
            .write_record(record)
            .map_err(|e| Error::file(&self.path, format!("failed to write the log: {e}")))?;
        self.writer.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// Formats the values of `names`, empty where absent. `{}` on f64 prints the shortest text
/// that parses back to the same value.
fn cells(names: &[String], values: Option<&BTreeMap<String, f64>>) -> Vec<String> {
    names
        .iter()
        .map(|name| {
            values
                .and_then(|v| v.get(name))
                .map(|value| value.to_string())
                .unwrap_or_default()
        })
        .collect()
}

/// Reads the rows of the log at `path` whose step is at most `step`.
fn rows_up_to(path: &Path, header: &[String], step: u64) -> Result<Vec<csv::StringRecord>> {
    let mut reader = csv::Reader::from_path(path)
        .map_err(|e| Error::file(path, format!("failed to read the log: {e}")))?;
    let found = reader
        .headers()
        .map_err(|e| Error::file(path, format!("failed to read the log header: {e}")))?;
    if found.iter().ne(header.iter().map(String::as_str)) {
        return Err(Error::file(
            path,
            format!(
                "log columns differ from this run's ({}); move the old log away to start a new one",
                header.join(",")
            ),
        ));
    }

    let mut kept = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| Error::file(path, format!("invalid log row: {e}")))?;
        let row_step: u64 = record.get(0).and_then(|s| s.parse().ok()).ok_or_else(|| {
            Error::file(
                path,
                format!("invalid step in log row {:?}", record.as_slice()),
            )
        })?;
        if row_step <= step {
            kept.push(record);
        }
    }
    Ok(kept)
}

fn rewrite(path: &Path, header: &[String], rows: &[csv::StringRecord]) -> Result<()> {
    let temp = temp_file_beside(path)?;
    let mut writer = csv::Writer::from_writer(temp.as_file());
    let written = writer
        .write_record(header)
        .and_then(|()| rows.iter().try_for_each(|row| writer.write_record(row)));
    written.map_err(|e| Error::file(path, format!("failed to rewrite the log: {e}")))?;
    writer.flush().map_err(|e| Error::io(path, e))?;
    drop(writer);

    temp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    temp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}
