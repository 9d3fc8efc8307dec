//! `mediflow reindex`: rebuilds the search-index rows of every current resource from the
//! SearchParameter registry (after definitions change, after `import --defer-index`, or
//! after the migration that introduced the typed index tables).
//!
//! Resumable: progress (the `seq` of the last version done) is kept in
//! `search_index_state.reindex_after_seq` after every batch, so an interrupted run continues
//! where it stopped; `--restart` starts over. Each batch replaces the rows of its resources
//! in one transaction, so a resource never has half of its rows. Resources written while a
//! reindex runs are indexed by their own write as usual.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::indexing;
use crate::search::SearchQuery;
use crate::server::StartResult;
use crate::storage::{self, IndexRow, ResourceKey};

/// `search_index_state` key: the seq of the last version reindexed (resume point).
pub const RESUME_KEY: &str = "reindex_after_seq";
/// `search_index_state` key: present while the indexes do not cover every resource.
pub const STALE_KEY: &str = "stale";

/// What a reindex did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Resources whose rows were rebuilt in this run.
    pub resources: usize,
    /// Index rows written.
    pub rows: usize,
    pub elapsed: Duration,
}

/// Rebuilds the indexes of the database at `database_url`, `batch` resources per
/// transaction, with a progress bar when `progress`. `restart` ignores a saved position.
pub async fn run(
    database_url: &str,
    batch: usize,
    restart: bool,
    progress: bool,
) -> StartResult<Summary> {
    let store = storage::connect(database_url).await?;
    let start = Instant::now();
    let mut after: i64 = if restart {
        0
    } else {
        match store.index_state(RESUME_KEY).await? {
            Some(v) => v.parse().unwrap_or(0),
            None => 0,
        }
    };
    let total = store.count(&SearchQuery::new("")).await?;
    let bar = if progress {
        ProgressBar::new(total.max(0) as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} resources {msg} [{elapsed_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if after > 0 {
        bar.println(format!("resuming after version seq {after}"));
    }
    store.set_index_state(STALE_KEY, Some("1")).await?;
    let mut summary = Summary::default();
    loop {
        let versions = store.current_after(after, batch.max(1)).await?;
        let Some(last) = versions.last() else {
            break;
        };
        let next_after = last.seq;
        let rows = tokio::task::spawn_blocking(move || {
            versions
                .iter()
                .map(|v| {
                    let index: Vec<IndexRow> = v
                        .content
                        .as_deref()
                        .and_then(|c| serde_json::from_str(c).ok())
                        .map(|value| indexing::extract(&value))
                        .unwrap_or_default();
                    ((v.res_type.clone(), v.id.clone()) as ResourceKey, index)
                })
                .collect::<Vec<_>>()
        })
        .await?;
        summary.resources += rows.len();
        summary.rows += rows.iter().map(|(_, r)| r.len()).sum::<usize>();
        store.replace_index(&rows).await?;
        after = next_after;
        store
            .set_index_state(RESUME_KEY, Some(&after.to_string()))
            .await?;
        bar.inc(rows.len() as u64);
        let rate = summary.resources as f64 / start.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!("{rate:.0}/s"));
    }
    store.set_index_state(RESUME_KEY, None).await?;
    store.set_index_state(STALE_KEY, None).await?;
    bar.finish_and_clear();
    summary.elapsed = start.elapsed();
    println!(
        "reindexed {} resources ({} index rows) in {:.1} s",
        summary.resources,
        summary.rows,
        summary.elapsed.as_secs_f64()
    );
    Ok(summary)
}
