//! The job file: what a run is (model, options, shard, inputs) and how far it got. While a run
//! is going it is `<out>.partial.json`, rewritten after every batch; when the run ends it becomes
//! `<out>.meta.json`, which `merge` reads.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::LabelError;
use crate::input::{Entry, Primary, Work};

/// `--shard i/n`: the entries whose relative path hashes to `i − 1` modulo `n`. Always valid
/// (1 ≤ i ≤ n): made by [`Shard::new`], parsed from `I/N`, or read from a job file that is
/// refused otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ShardFields", into = "ShardFields")]
pub struct Shard {
    index: u32,
    count: u32,
}

/// A shard as the job file writes it, checked on the way in.
#[derive(Serialize, Deserialize)]
struct ShardFields {
    index: u32,
    count: u32,
}

impl TryFrom<ShardFields> for Shard {
    type Error = String;

    fn try_from(f: ShardFields) -> Result<Self, String> {
        Shard::new(f.index, f.count)
            .ok_or_else(|| format!("shard {}/{} is not a shard", f.index, f.count))
    }
}

impl From<Shard> for ShardFields {
    fn from(s: Shard) -> Self {
        ShardFields {
            index: s.index,
            count: s.count,
        }
    }
}

impl Shard {
    /// Shard `index` of `count` (1-based); `None` unless 1 ≤ index ≤ count.
    pub fn new(index: u32, count: u32) -> Option<Self> {
        (1..=count)
            .contains(&index)
            .then_some(Shard { index, count })
    }

    /// Which shard this is, 1-based.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many shards the job is split into.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether an entry with relative path `rel` belongs to this shard: FNV-1a (64-bit) of the
    /// path's UTF-8 bytes, modulo the count. Stable across machines, runs and versions.
    pub fn contains(&self, rel: &str) -> bool {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in rel.as_bytes() {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h % self.count as u64 == (self.index - 1) as u64
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N`, e.g. `3/8`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: expected I/N with 1 ≤ I ≤ N, e.g. 3/8");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<u32>().map_err(|_| bad())?,
            n.trim().parse::<u32>().map_err(|_| bad())?,
        );
        Shard::new(index, count).ok_or_else(bad)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The model, by the SHA-256 of its ONNX files (as its manifest records and loading verified).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelId {
    /// `primary.onnx`'s SHA-256.
    pub primary_sha256: String,
    /// `label_generator.onnx`'s SHA-256 (empty without a generator).
    pub label_generator_sha256: String,
}

/// Everything that decides the output's bytes. A resumed run must match it exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    /// The input folder or list, absolute.
    pub input: PathBuf,
    /// Where each image's primary class comes from.
    pub primary: Primary,
    /// The backend, and the execution providers each graph actually runs on (with precision
    /// options): outputs of different providers may differ in the last digits.
    pub backend: String,
    /// Images per inference batch.
    pub batch_size: usize,
    /// Whether rows carry `aux_distribution`.
    pub probs: bool,
    /// The `flag` column's threshold, if rows carry one.
    pub min_confidence: Option<f32>,
    /// The errors file, absolute, if the run writes one.
    pub errors: Option<PathBuf>,
}

impl Options {
    /// The first option that differs, as `--flag: was X, now Y`. With `same_errors_file` false
    /// (shards of one job) only whether there is an errors file must agree, not its name.
    pub fn difference(&self, now: &Options, same_errors_file: bool) -> Option<String> {
        let d = |flag: &str, a: String, b: String| {
            (a != b).then(|| format!("{flag}: was {a}, now {b}"))
        };
        d(
            "--input",
            self.input.display().to_string(),
            now.input.display().to_string(),
        )
        .or_else(|| {
            d(
                "--primary",
                format!("{:?}", self.primary),
                format!("{:?}", now.primary),
            )
        })
        .or_else(|| d("--backend", self.backend.clone(), now.backend.clone()))
        .or_else(|| {
            d(
                "--batch-size",
                self.batch_size.to_string(),
                now.batch_size.to_string(),
            )
        })
        .or_else(|| d("--probs", self.probs.to_string(), now.probs.to_string()))
        .or_else(|| {
            d(
                "--min-confidence",
                format!("{:?}", self.min_confidence),
                format!("{:?}", now.min_confidence),
            )
        })
        .or_else(|| {
            if same_errors_file {
                d(
                    "--errors",
                    format!("{:?}", self.errors),
                    format!("{:?}", now.errors),
                )
            } else {
                d(
                    "--errors",
                    self.errors.is_some().to_string(),
                    now.errors.is_some().to_string(),
                )
            }
        })
    }
}

/// Running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Images labelled (rows of the label CSV).
    pub labelled: u64,
    /// Entries that could not be labelled.
    pub skipped: u64,
    /// Files left out because they are not images by name.
    pub ignored: u64,
    /// Rows with a non-empty `flag`.
    pub flagged: u64,
}

/// The job file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job file's format, [`FORMAT`].
    pub format: u32,
    /// The model that labels.
    pub model: ModelId,
    /// Everything that decides the output's bytes.
    pub options: Options,
    /// The shard this run labels, if any.
    pub shard: Option<Shard>,
    /// Entries of this shard.
    pub entries: u64,
    /// SHA-256 over the entries (relative path and what is done with it), in order.
    pub entries_sha256: String,
    /// The same over the whole input, before sharding: shards of one job agree on it.
    pub input_sha256: String,
    /// Entries done (a multiple of the batch size until the last batch).
    pub done: u64,
    /// Bytes of the label CSV that hold exactly the rows of `done`.
    pub csv_bytes: u64,
    /// Bytes of the errors CSV that hold exactly the rows of `done`.
    pub errors_bytes: u64,
    /// Running totals.
    pub counts: Counts,
    /// Whether every entry is done and the outputs are durable.
    pub finished: bool,
}

/// The job file format this version writes and reads.
pub const FORMAT: u32 = 1;

/// SHA-256 over a work list: a resumed run refuses a different one.
pub fn entries_digest(entries: &[&Entry]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for e in entries {
        h.update(e.rel.as_bytes());
        h.update([0]);
        match &e.work {
            Work::Image { class, .. } => {
                h.update(b"image:");
                h.update(class.map_or(u64::MAX, |c| c as u64).to_le_bytes());
            }
            Work::Skip { reason, ignored } => {
                h.update(if *ignored { b"ignore:" } else { b"skip:  " });
                h.update(reason.as_bytes());
            }
        }
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Job {
    /// Reads a job file, refusing another format.
    pub fn read(path: &Path) -> Result<Self, LabelError> {
        let bytes = std::fs::read(path).map_err(|source| LabelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let job: Job = serde_json::from_slice(&bytes).map_err(|e| LabelError::Format {
            path: path.to_path_buf(),
            message: format!("not a maxl-label job file: {e}"),
        })?;
        if job.format != FORMAT {
            return Err(LabelError::Format {
                path: path.to_path_buf(),
                message: format!(
                    "job file format {} (this maxl-label writes {FORMAT})",
                    job.format
                ),
            });
        }
        Ok(job)
    }

    /// The job file's bytes: pretty JSON and a newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a job serialises");
        v.push(b'\n');
        v
    }

    /// Checks that a run with `now` continues this one, naming the first difference.
    pub fn check_continues(&self, now: &Job, file: &Path) -> Result<(), LabelError> {
        let refuse = |why: String| LabelError::Resume {
            path: file.to_path_buf(),
            message: why,
        };
        if self.model != now.model {
            return Err(refuse(format!(
                "the interrupted run used another model (primary.onnx {}…, now {}…)",
                prefix(&self.model.primary_sha256, 12),
                prefix(&now.model.primary_sha256, 12)
            )));
        }
        if let Some(d) = self.options.difference(&now.options, true) {
            return Err(refuse(format!(
                "the interrupted run had other options ({d})"
            )));
        }
        if self.shard != now.shard {
            return Err(refuse(format!(
                "the interrupted run was shard {}, this is {}",
                self.shard.map_or("none".into(), |s| s.to_string()),
                now.shard.map_or("none".into(), |s| s.to_string())
            )));
        }
        if self.entries_sha256 != now.entries_sha256 {
            return Err(refuse(format!(
                "the input changed since the interrupted run ({} entries then, {} now)",
                self.entries, now.entries
            )));
        }
        if self.done > now.entries {
            return Err(refuse(format!(
                "records {} entries done of {}: the job file was damaged, start over",
                self.done, now.entries
            )));
        }
        Ok(())
    }
}

/// The first `n` characters of `s`.
fn prefix(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_and_parse() {
        let rels: Vec<String> = (0..1000).map(|i| format!("c{}/{i}.png", i % 7)).collect();
        let shards: Vec<Shard> = (1..=4).map(|i| format!("{i}/4").parse().unwrap()).collect();
        let mut sizes = [0; 4];
        for r in &rels {
            let owners: Vec<usize> = (0..4).filter(|&i| shards[i].contains(r)).collect();
            assert_eq!(owners.len(), 1, "{r}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&s| s > 200), "{sizes:?}");
        // Stable: a fixed path always lands in the same shard.
        // Stable: FNV-1a of "Coat/0.png" is 7529438794032395600, 0 mod 4 and 3 mod 7.
        assert!(Shard { index: 1, count: 4 }.contains("Coat/0.png"));
        assert!(Shard { index: 4, count: 7 }.contains("Coat/0.png"));
        for bad in ["0/4", "5/4", "1", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!("2/3".parse::<Shard>().unwrap().to_string(), "2/3");
        // The job file's form, and no invalid shard read back from one.
        let json = serde_json::to_string(&Shard::new(2, 3).unwrap()).unwrap();
        assert_eq!(json, r#"{"index":2,"count":3}"#);
        assert_eq!(serde_json::from_str::<Shard>(&json).ok(), Shard::new(2, 3));
        for bad in [
            r#"{"index":0,"count":3}"#,
            r#"{"index":4,"count":3}"#,
            r#"{"index":1,"count":0}"#,
        ] {
            assert!(serde_json::from_str::<Shard>(bad).is_err(), "{bad}");
        }
        assert_eq!(prefix("0123456789abcdef", 12), "0123456789ab");
        assert_eq!(prefix("ééé", 12), "ééé");
        assert_eq!(prefix("éééééééééééééé", 12), "éééééééééééé");
    }
}
