//! The per-input loop every tool shares: skip inputs already in the output,
//! process the rest, write one row each, report progress, and stop at the
//! first failure unless `--keep-going` is set.

use crate::cli::inputs::InputItem;
use crate::cli::output::{RowSink, WriteOutcome};
use crate::cli::progress::{Reporter, Summary};
use crate::Result;

/// Processes `items` in order and writes one row per input to `sink`.
///
/// `process` returns the row's fields after the id column, which this function
/// fills with the input's id. Inputs whose id was loaded from an earlier run
/// ([`RowSink::is_resumed`]) are skipped. A failed input is reported; without
/// `keep_going` the run then stops. The output file is written only when every
/// input succeeded; otherwise the finished rows stay in `FILE.partial` for a rerun. When the reader of stdout closes the pipe, the run
/// stops early and counts as a success.
///
/// Returns `Err` only for errors outside single inputs (writing the output file);
/// failed inputs are counted in the [`Summary`].
pub fn run_batch<F>(
    items: &[InputItem],
    mut sink: RowSink,
    reporter: &mut Reporter,
    keep_going: bool,
    mut process: F,
) -> Result<Summary>
where
    F: FnMut(&InputItem, &mut Reporter) -> Result<Vec<String>>,
{
    reporter.start(items.len());
    let looped = process_items(items, &mut sink, reporter, keep_going, &mut process);
    let failed = reporter.failed_so_far();
    let finished = if looped.is_ok() && failed == 0 {
        sink.finish().map(|_| ())
    } else {
        sink.abandon().map(|partial| {
            if let Some(partial) = partial {
                reporter.info(&format!(
                    "{failed} input(s) failed, so the output file was not written; the finished rows \
                     are kept in {} and a rerun retries only the rest",
                    partial.display()
                ));
            }
        })
    };
    let summary = reporter.finish();

    looped?;
    finished?;
    Ok(summary)
}

fn process_items<F>(
    items: &[InputItem],
    sink: &mut RowSink,
    reporter: &mut Reporter,
    keep_going: bool,
    process: &mut F,
) -> Result<()>
where
    F: FnMut(&InputItem, &mut Reporter) -> Result<Vec<String>>,
{
    for item in items {
        if sink.is_resumed(&item.id) {
            reporter.item_skipped(&item.id, "already in the output file");
            continue;
        }

        reporter.item_started(&item.id);
        let fields = match process(item, reporter) {
            Ok(fields) => fields,
            Err(error) => {
                reporter.item_failed(&item.id, &item.path, &error);
                if keep_going {
                    continue;
                }
                reporter.info(
                    "stopped at the first failure; pass --keep-going to process the other inputs",
                );
                return Ok(());
            }
        };

        let mut row = Vec::with_capacity(fields.len() + 1);
        row.push(item.id.clone());
        row.extend(fields);
        if sink.write_row(&row)? == WriteOutcome::Closed {
            reporter.info("standard output was closed by its reader; stopping");
            return Ok(());
        }
        reporter.item_done(&item.id);
    }
    Ok(())
}
