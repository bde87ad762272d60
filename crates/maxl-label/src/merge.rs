//! `maxl-label merge`: the finished outputs of shards 1..n of one job (one model, the same
//! options) combined into one CSV in path order — byte-identical to the unsharded run's output.
//! Each shard's `<csv>.meta.json` says which shard it is; every check happens before anything is
//! written, and the merged file appears by rename.

use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use maxl_core::fsio;

use crate::LabelError;
use crate::run::meta_path;
use crate::state::{Counts, Job};

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
    pub rows: u64,
    pub shards: u32,
    pub counts: Counts,
}

/// Checks that `shards` are the finished shards 1..n of one job and merges them into `out`
/// (and, with `errors`, their errors files into that file).
pub fn merge(out: &Path, shards: &[PathBuf], errors: Option<&Path>) -> Result<Merged, LabelError> {
    if shards.is_empty() {
        return Err(LabelError::Invalid("merge: no shard files given".into()));
    }
    let mut jobs = Vec::new();
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
        jobs.push((s.clone(), shard, job));
    }
    let (first_file, first_shard, first) = &jobs[0];
    let n = first_shard.count;
    let mut seen = vec![None::<PathBuf>; n as usize];
    for (file, shard, job) in &jobs {
        let differ = |what: String| LabelError::Format {
            path: file.clone(),
            message: format!("{what} than {}", first_file.display()),
        };
        if job.model != first.model {
            return Err(differ("comes from another model".into()));
        }
        if let Some(d) = first.options.difference(&job.options, false) {
            return Err(differ(format!("was labelled with other options ({d})")));
        }
        if job.input_sha256 != first.input_sha256 {
            return Err(differ("saw other input files".into()));
        }
        let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        if len != job.csv_bytes {
            return Err(LabelError::Format {
                path: file.clone(),
                message: format!(
                    "is {len} bytes, its run wrote {}: changed since",
                    job.csv_bytes
                ),
            });
        }
        if shard.count != n {
            return Err(differ(format!("is shard {shard}, of another split")));
        }
        if let Some(other) = &seen[shard.index as usize - 1] {
            return Err(LabelError::Format {
                path: file.clone(),
                message: format!("is shard {shard} again (also {})", other.display()),
            });
        }
        seen[shard.index as usize - 1] = Some(file.clone());
    }
    let missing: Vec<String> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_none())
        .map(|(i, _)| format!("{}/{n}", i + 1))
        .collect();
    if !missing.is_empty() {
        return Err(LabelError::Invalid(format!(
            "merge: shard{} {} of this job {} missing",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", "),
            if missing.len() > 1 { "are" } else { "is" }
        )));
    }

    let errors_files: Option<Vec<PathBuf>> = match errors {
        None => None,
        Some(_) => Some(
            jobs.iter()
                .map(|(file, _, job)| {
                    job.options
                        .errors
                        .clone()
                        .ok_or_else(|| LabelError::Format {
                            path: file.clone(),
                            message: "its run wrote no errors file (--errors)".into(),
                        })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let files: Vec<PathBuf> = jobs.iter().map(|(f, _, _)| f.clone()).collect();
    let rows = merge_sorted(out, &files)?;
    if let (Some(e), Some(files)) = (errors, &errors_files) {
        merge_sorted(e, files)?;
    }
    let mut counts = Counts::default();
    for (_, _, j) in &jobs {
        counts.labelled += j.counts.labelled;
        counts.skipped += j.counts.skipped;
        counts.ignored += j.counts.ignored;
        counts.flagged += j.counts.flagged;
    }
    let mut merged = first.clone();
    merged.shard = None;
    merged.entries = jobs.iter().map(|(_, _, j)| j.entries).sum();
    merged.done = merged.entries;
    merged.entries_sha256 = String::new();
    merged.csv_bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    merged.errors_bytes = 0;
    merged.counts = counts;
    fsio::write_atomic(&meta_path(out), &merged.to_json())?;
    Ok(Merged {
        rows,
        shards: n,
        counts,
    })
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
