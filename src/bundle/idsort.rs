//! The builder's event ids, sorted for the index's id section with bounded
//! memory: ids are kept in runs of at most [`RUN`] entries; a full run is
//! sorted and spilled to an anonymous temporary file, and the runs are
//! merged while the index is written. A duplicate id is found in the merge,
//! where equal ids meet.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::Error;

/// One entry: an event id and its position in the log.
pub(crate) type IdEntry = ([u8; 16], u32);

/// Entries held in memory at once: 2^20 × 20 bytes = 20 MiB.
const RUN: usize = 1 << 20;
const ENTRY_LEN: usize = 20;
/// Read buffer of each run during the merge (a whole number of entries).
const MERGE_BUFFER: usize = 3200 * ENTRY_LEN;

/// Collects ids in log order.
pub(crate) struct IdSorter {
    run: Vec<IdEntry>,
    run_len: usize,
    spill: Option<BufWriter<File>>,
    /// Length in entries of each spilled run, in order.
    spilled: Vec<u64>,
}

impl IdSorter {
    pub fn new() -> Self {
        IdSorter::with_run(RUN)
    }

    fn with_run(run_len: usize) -> Self {
        IdSorter { run: Vec::new(), run_len, spill: None, spilled: Vec::new() }
    }

    /// Adds the id of the event at `position`; spills (into `dir`) when the run is full.
    pub fn push(&mut self, id: [u8; 16], position: u32, dir: &Path) -> Result<(), Error> {
        self.run.push((id, position));
        if self.run.len() >= self.run_len {
            self.spill_run(dir)?;
        }
        Ok(())
    }

    fn spill_run(&mut self, dir: &Path) -> Result<(), Error> {
        self.run.sort_unstable();
        if self.spill.is_none() {
            let file = tempfile::tempfile_in(dir).map_err(|e| Error::output(dir, e))?;
            self.spill = Some(BufWriter::with_capacity(1 << 20, file));
        }
        let out = self.spill.as_mut().expect("created above");
        for (id, position) in &self.run {
            out.write_all(id).and_then(|()| out.write_all(&position.to_be_bytes())).map_err(|e| Error::output(dir, e))?;
        }
        self.spilled.push(self.run.len() as u64);
        self.run.clear();
        Ok(())
    }

    /// The ids in ascending order (then by position), as a merge of the runs.
    pub fn finish(mut self, dir: &Path) -> Result<SortedIds, Error> {
        self.run.sort_unstable();
        let Some(spill) = self.spill.take() else {
            return Ok(SortedIds {
                sources: vec![Source::Memory(std::mem::take(&mut self.run).into_iter())],
                heap: BinaryHeap::new(),
                last: None,
                duplicate: None,
                primed: false,
            });
        };
        let file = std::sync::Arc::new(spill.into_inner().map_err(|e| Error::output(dir, e.into_error()))?);
        let mut sources = Vec::with_capacity(self.spilled.len() + 1);
        let mut start = 0u64;
        for len in &self.spilled {
            let (begin, end) = (start * ENTRY_LEN as u64, (start + len) * ENTRY_LEN as u64);
            sources.push(Source::Spilled(RunReader { file: file.clone(), next: begin, end, buf: Vec::new(), at: 0 }));
            start += len;
        }
        sources.push(Source::Memory(std::mem::take(&mut self.run).into_iter()));
        Ok(SortedIds { sources, heap: BinaryHeap::new(), last: None, duplicate: None, primed: false })
    }
}

enum Source {
    Memory(std::vec::IntoIter<IdEntry>),
    Spilled(RunReader),
}

/// One spilled run, read by position (the runs share one file).
struct RunReader {
    file: std::sync::Arc<File>,
    next: u64,
    end: u64,
    buf: Vec<u8>,
    at: usize,
}

impl RunReader {
    fn next_entry(&mut self) -> std::io::Result<Option<[u8; ENTRY_LEN]>> {
        if self.at == self.buf.len() {
            let n = (self.end - self.next).min(MERGE_BUFFER as u64) as usize;
            if n == 0 {
                return Ok(None);
            }
            self.buf.resize(n, 0);
            self.file.read_exact_at(&mut self.buf, self.next)?;
            self.next += n as u64;
            self.at = 0;
        }
        let entry = self.buf[self.at..self.at + ENTRY_LEN].try_into().expect("runs hold whole entries");
        self.at += ENTRY_LEN;
        Ok(Some(entry))
    }
}

impl Source {
    fn next(&mut self) -> std::io::Result<Option<IdEntry>> {
        match self {
            Source::Memory(entries) => Ok(entries.next()),
            Source::Spilled(reader) => Ok(reader
                .next_entry()?
                .map(|e| (e[..16].try_into().expect("16 bytes"), u32::from_be_bytes(e[16..].try_into().expect("4 bytes"))))),
        }
    }
}

/// The merge. It ends early at the first duplicate id, which
/// [`SortedIds::duplicate`] then names.
pub(crate) struct SortedIds {
    sources: Vec<Source>,
    heap: BinaryHeap<Reverse<(IdEntry, usize)>>,
    last: Option<IdEntry>,
    duplicate: Option<(IdEntry, IdEntry)>,
    primed: bool,
}

impl SortedIds {
    /// The next id in order.
    pub fn next_entry(&mut self) -> std::io::Result<Option<IdEntry>> {
        if !self.primed {
            self.primed = true;
            for i in 0..self.sources.len() {
                if let Some(entry) = self.sources[i].next()? {
                    self.heap.push(Reverse((entry, i)));
                }
            }
        }
        if self.duplicate.is_some() {
            return Ok(None);
        }
        let Some(Reverse((entry, source))) = self.heap.pop() else { return Ok(None) };
        if let Some(next) = self.sources[source].next()? {
            self.heap.push(Reverse((next, source)));
        }
        if let Some(last) = self.last.filter(|last| last.0 == entry.0) {
            self.duplicate = Some((last, entry));
            return Ok(None);
        }
        self.last = Some(entry);
        Ok(Some(entry))
    }

    /// Two entries with the same id, if the merge met them.
    pub fn duplicate(&self) -> Option<(IdEntry, IdEntry)> {
        self.duplicate
    }
}

impl Iterator for SortedIds {
    type Item = std::io::Result<IdEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u32, seed: u64) -> Vec<[u8; 16]> {
        (0..n).map(|i| *blake3::hash(&(u64::from(i) ^ seed).to_le_bytes()).as_bytes()).map(|h| h[..16].try_into().unwrap()).collect()
    }

    fn merged(sorter: IdSorter, dir: &Path) -> (Vec<IdEntry>, Option<(IdEntry, IdEntry)>) {
        let mut sorted = sorter.finish(dir).unwrap();
        let mut out = Vec::new();
        while let Some(e) = sorted.next_entry().unwrap() {
            out.push(e);
        }
        (out, sorted.duplicate())
    }

    #[test]
    fn runs_merge_into_the_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        for (n, run) in [(0, 4), (1, 4), (10, 3), (1000, 7), (1000, 1000), (1000, 2000), (4097, 64)] {
            let mut sorter = IdSorter::with_run(run);
            let input = ids(n, 7);
            for (p, id) in input.iter().enumerate() {
                sorter.push(*id, p as u32, dir.path()).unwrap();
            }
            let mut expected: Vec<IdEntry> = input.iter().enumerate().map(|(p, id)| (*id, p as u32)).collect();
            expected.sort_unstable();
            assert_eq!(merged(sorter, dir.path()), (expected, None), "n {n} run {run}");
        }
    }

    #[test]
    fn a_duplicate_is_found_whichever_runs_hold_it() {
        let dir = tempfile::tempdir().unwrap();
        let input = ids(500, 3);
        for (first, second) in [(0, 1), (0, 499), (17, 18), (100, 400), (498, 499)] {
            for run in [2, 16, 1000] {
                let mut sorter = IdSorter::with_run(run);
                for (p, id) in input.iter().enumerate() {
                    let id = if p == second { input[first] } else { *id };
                    sorter.push(id, p as u32, dir.path()).unwrap();
                }
                let (_, duplicate) = merged(sorter, dir.path());
                let (a, b) = duplicate.expect("found");
                assert_eq!((a.0, a.1, b.1), (input[first], first as u32, second as u32), "{first}/{second} run {run}");
            }
        }
    }
}
