//! `maxl-label merge`: the finished outputs of shards 1..n of one job (one model, the same
//! options) combined into one CSV in path order — byte-identical to the unsharded run's output.
//! Each shard's `<csv>.meta.json` says which shard it is; every check happens before anything is
//! written, and the merged file appears by rename.

use std::collections::{BTreeMap, BinaryHeap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use maxl_core::fsio;

use crate::LabelError;
use crate::request::refuse_existing;
use crate::run::meta_path;
use crate::state::{Counts, Job, Shard};

/// One shard's reader: the current row and its path.
struct Cursor {
    reader: BufReader<std::fs::File>,
    file: PathBuf,
    /// The current record (all its lines) and its `path` field.
    record: String,
    key: String,
    line: u64,
}

/// Reads one CSV record (a quoted field may hold line breaks); `None` at the end.
fn read_record(r: &mut impl BufRead, line: &mut u64) -> std::io::Result<Option<String>> {
    let mut rec = String::new();
    loop {
        let n = r.read_line(&mut rec)?;
        if n == 0 {
            return Ok(if rec.is_empty() { None } else { Some(rec) });
        }
        *line += 1;
        if rec.bytes().filter(|&b| b == b'"').count() % 2 == 0 {
            return Ok(Some(rec));
        }
    }
}

/// The first field of a CSV record, unquoted.
fn first_field(rec: &str) -> String {
    if let Some(rest) = rec.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    out.push('"');
                    chars.next();
                } else {
                    break;
                }
            } else {
                out.push(c);
            }
        }
        out
    } else {
        rec.split([',', '\n', '\r'])
            .next()
            .unwrap_or("")
            .to_string()
    }
}

impl Cursor {
    fn advance(&mut self) -> Result<bool, LabelError> {
        let io = |source| LabelError::Io {
            path: self.file.clone(),
            source,
        };
        match read_record(&mut self.reader, &mut self.line).map_err(io)? {
            Some(rec) => {
                let key = first_field(&rec);
                if key < self.key {
                    return Err(LabelError::Format {
                        path: self.file.clone(),
                        message: format!(
                            "line {}: rows are not in path order (`{key}` after `{}`); not a maxl-label output",
                            self.line, self.key
                        ),
                    });
                }
                self.record = rec;
                self.key = key;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Heap entry: the smallest path first, then the lowest shard.
#[derive(PartialEq, Eq)]
struct Head(String, usize);

impl Ord for Head {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.0.cmp(&self.0).then(o.1.cmp(&self.1))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// What merging wrote.
#[derive(Debug, Clone)]
pub struct Merged {
    /// Label rows in the merged CSV.
    pub rows: u64,
    /// How many shards the job was split into (all of them merged).
    pub shards: u32,
    /// The shards' counts, added up.
    pub counts: Counts,
}

/// The shards to merge and where to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRequest {
    /// The merged CSV (with `<out>.meta.json` beside it).
    pub out: PathBuf,
    /// The shards' finished CSVs (each with its `.meta.json`), in any order.
    pub shards: Vec<PathBuf>,
    /// Also merge the shards' errors files (as their runs recorded them) into this file.
    pub errors: Option<PathBuf>,
    /// Replace an existing `out` (and `errors`).
    pub force: bool,
}

/// The most missing shards an error lists by name.
const MISSING_LISTED: usize = 16;

/// One shard's finished run.
struct ShardRun {
    file: PathBuf,
    shard: Shard,
    job: Job,
}

/// Checks that `request.shards` are the finished shards 1..n of one job and merges them into
/// `request.out` (and, with `errors`, their errors files into that file). Every check happens
/// before anything is written.
pub fn merge(request: &MergeRequest) -> Result<Merged, LabelError> {
    let out = &request.out;
    refuse_existing(out, request.force)?;
    if let Some(e) = &request.errors {
        refuse_existing(e, request.force)?;
    }
    let runs = read_shards(&request.shards)?;
    let n = check_one_job(&runs)?;
    let errors_files = match request.errors {
        None => None,
        Some(_) => Some(errors_files(&runs)?),
    };
    let files: Vec<PathBuf> = runs.iter().map(|r| r.file.clone()).collect();
    let rows = merge_sorted(out, &files)?;
    if let (Some(e), Some(files)) = (&request.errors, &errors_files) {
        merge_sorted(e, files)?;
    }
    let merged = merged_job(&runs, out);
    fsio::write_atomic(&meta_path(out), &merged.to_json())?;
    Ok(Merged {
        rows,
        shards: n,
        counts: merged.counts,
    })
}

/// Each shard's job file, which must say it is a finished shard.
fn read_shards(shards: &[PathBuf]) -> Result<Vec<ShardRun>, LabelError> {
    if shards.is_empty() {
        return Err(LabelError::Invalid("merge: no shard files given".into()));
    }
    let mut runs = Vec::new();
    for s in shards {
        let meta = meta_path(s);
        if !meta.exists() {
            return Err(LabelError::Format {
                path: s.clone(),
                message: format!(
                    "no {} next to it: not the finished output of `maxl-label --shard` (an unfinished shard has a .partial.json; resume it first)",
                    meta.file_name().unwrap_or_default().to_string_lossy()
                ),
            });
        }
        let job = Job::read(&meta)?;
        let Some(shard) = job.shard else {
            return Err(LabelError::Format {
                path: s.clone(),
                message: "was not written with --shard".into(),
            });
        };
        if !job.finished {
            return Err(LabelError::Format {
                path: s.clone(),
                message: "the shard's run did not finish".into(),
            });
        }
        runs.push(ShardRun {
            file: s.clone(),
            shard,
            job,
        });
    }
    Ok(runs)
}

/// Checks that the runs are shards of one job (one model, options and input), unchanged since,
/// each once and all there. Returns the number of shards.
fn check_one_job(runs: &[ShardRun]) -> Result<u32, LabelError> {
    let first = &runs[0];
    let n = first.shard.count();
    let mut seen: BTreeMap<u32, &Path> = BTreeMap::new();
    for run in runs {
        check_same_job(first, run)?;
        if let Some(other) = seen.insert(run.shard.index(), &run.file) {
            return Err(LabelError::Format {
                path: run.file.clone(),
                message: format!("is shard {} again (also {})", run.shard, other.display()),
            });
        }
    }
    let missing: Vec<String> = (1..=n)
        .filter(|i| !seen.contains_key(i))
        .take(MISSING_LISTED)
        .map(|i| format!("{i}/{n}"))
        .collect();
    let all_missing = n as usize - seen.len();
    if missing.is_empty() {
        return Ok(n);
    }
    let more = if all_missing > missing.len() {
        format!(", … ({all_missing} in all)")
    } else {
        String::new()
    };
    Err(LabelError::Invalid(format!(
        "merge: shard{} {}{more} of this job {} missing",
        if all_missing > 1 { "s" } else { "" },
        missing.join(", "),
        if all_missing > 1 { "are" } else { "is" }
    )))
}

/// Checks that `run` is a shard of `first`'s job, of the same split, and unchanged since.
fn check_same_job(first: &ShardRun, run: &ShardRun) -> Result<(), LabelError> {
    let differ = |what: String| LabelError::Format {
        path: run.file.clone(),
        message: format!("{what} than {}", first.file.display()),
    };
    let job = &run.job;
    if job.model != first.job.model {
        return Err(differ("comes from another model".into()));
    }
    if let Some(d) = first.job.options.difference(&job.options, false) {
        return Err(differ(format!("was labelled with other options ({d})")));
    }
    if job.input_sha256 != first.job.input_sha256 {
        return Err(differ("saw other input files".into()));
    }
    let len = std::fs::metadata(&run.file).map(|m| m.len()).unwrap_or(0);
    if len != job.csv_bytes {
        return Err(LabelError::Format {
            path: run.file.clone(),
            message: format!(
                "is {len} bytes, its run wrote {}: changed since",
                job.csv_bytes
            ),
        });
    }
    if run.shard.count() != first.shard.count() {
        return Err(differ(format!("is shard {}, of another split", run.shard)));
    }
    Ok(())
}

/// The errors file each shard's run wrote.
fn errors_files(runs: &[ShardRun]) -> Result<Vec<PathBuf>, LabelError> {
    runs.iter()
        .map(|r| {
            r.job
                .options
                .errors
                .clone()
                .ok_or_else(|| LabelError::Format {
                    path: r.file.clone(),
                    message: "its run wrote no errors file (--errors)".into(),
                })
        })
        .collect()
}

/// The merged file's job file: the first shard's, unsharded, with every shard's counts.
fn merged_job(runs: &[ShardRun], out: &Path) -> Job {
    let mut counts = Counts::default();
    for r in runs {
        let c = &r.job.counts;
        counts.labelled += c.labelled;
        counts.skipped += c.skipped;
        counts.ignored += c.ignored;
        counts.flagged += c.flagged;
    }
    let mut merged = runs[0].job.clone();
    merged.shard = None;
    merged.entries = runs.iter().map(|r| r.job.entries).sum();
    merged.done = merged.entries;
    merged.entries_sha256 = String::new();
    merged.csv_bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    merged.errors_bytes = 0;
    merged.counts = counts;
    merged
}

/// Merges CSV files, each sorted by its first field and with the same header, into `out` in
/// that order (a k-way merge: memory does not grow with the files). Returns the rows written.
fn merge_sorted(out: &Path, files: &[PathBuf]) -> Result<u64, LabelError> {
    let mut cursors = Vec::new();
    let mut header: Option<String> = None;
    for file in files {
        let f = std::fs::File::open(file).map_err(|source| LabelError::Io {
            path: file.clone(),
            source,
        })?;
        let mut reader = BufReader::new(f);
        let mut line = 0;
        let h = read_record(&mut reader, &mut line)
            .map_err(|source| LabelError::Io {
                path: file.clone(),
                source,
            })?
            .unwrap_or_default();
        match &header {
            None => header = Some(h),
            Some(first) if *first != h => {
                return Err(LabelError::Format {
                    path: file.clone(),
                    message: "its header differs from the other shards'".into(),
                });
            }
            _ => {}
        }
        cursors.push(Cursor {
            reader,
            file: file.clone(),
            record: String::new(),
            key: String::new(),
            line,
        });
    }
    let mut heap = BinaryHeap::new();
    for (i, c) in cursors.iter_mut().enumerate() {
        if c.advance()? {
            heap.push(Head(c.key.clone(), i));
        }
    }
    let mut rows = 0u64;
    let mut failure = None;
    fsio::write_atomic_with(out, |f| {
        let mut w = std::io::BufWriter::new(f);
        w.write_all(header.as_deref().unwrap_or("").as_bytes())?;
        while let Some(Head(_, i)) = heap.pop() {
            w.write_all(cursors[i].record.as_bytes())?;
            rows += 1;
            match cursors[i].advance() {
                Ok(true) => heap.push(Head(cursors[i].key.clone(), i)),
                Ok(false) => {}
                Err(e) => {
                    failure = Some(e);
                    return Err(std::io::Error::other("a shard is malformed"));
                }
            }
        }
        w.flush()
    })
    .map_err(|e| failure.take().unwrap_or(LabelError::Write(e)))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_first_fields() {
        let text = "a.png,x\n\"b,\"\"c\"\".png\",y\n\"two\nlines.png\",z\n";
        let mut r = BufReader::new(text.as_bytes());
        let mut line = 0;
        let mut keys = Vec::new();
        while let Some(rec) = read_record(&mut r, &mut line).unwrap() {
            keys.push(first_field(&rec));
        }
        assert_eq!(keys, ["a.png", "b,\"c\".png", "two\nlines.png"]);
        assert_eq!(line, 4);
    }
}
