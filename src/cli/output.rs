//! Where command output goes: stdout, or a file written atomically.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use cathedral_bundle::Error;

/// Where a command's report goes, and in which form (replay, explain, diff).
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Print JSON instead of text (the command's schema is in schemas/).
    #[arg(long)]
    pub json: bool,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long, requires = "output")]
    pub force: bool,
}

impl ReportArgs {
    /// The destination.
    pub fn open(&self) -> Result<Output, Error> {
        Output::open(self.output.as_deref(), self.force)
    }
}

/// An output destination. A file is written under a temporary name beside
/// it and renamed into place by [`Output::commit`], so a failed command
/// leaves no half-written file and never clobbers one unless forced.
pub enum Output {
    Stdout(BufWriter<io::StdoutLock<'static>>),
    File { path: PathBuf, tmp: BufWriter<tempfile::NamedTempFile>, force: bool },
}

impl Output {
    /// Opens stdout, or a temporary file beside `path`.
    pub fn open(path: Option<&Path>, force: bool) -> Result<Self, Error> {
        let Some(path) = path else {
            return Ok(Output::Stdout(BufWriter::new(io::stdout().lock())));
        };
        match fs::symlink_metadata(path) {
            Ok(_) if !force => return Err(Error::Exists { file: path.display().to_string() }),
            Ok(m) if !m.is_file() => {
                let reason = "it is not a regular file; --force replaces only a file".to_string();
                return Err(Error::NotReplaceable { file: path.display().to_string(), reason });
            }
            _ => {}
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new().prefix(".cathedral-out-").tempfile_in(&dir).map_err(|e| Error::output(&dir, e))?;
        Ok(Output::File { path: path.to_path_buf(), tmp: BufWriter::new(tmp), force })
    }

    fn name(&self) -> PathBuf {
        match self {
            Output::Stdout(_) => PathBuf::from("<stdout>"),
            Output::File { path, .. } => path.clone(),
        }
    }

    /// Writes bytes, naming the destination in errors.
    pub fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let name = self.name();
        self.write_all(bytes).map_err(|e| Error::output(name, e))
    }

    /// Writes `value` as pretty JSON and a newline.
    pub fn write_json(&mut self, value: &impl serde::Serialize) -> Result<(), Error> {
        let mut text = serde_json::to_vec_pretty(value).expect("the value serialises");
        text.push(b'\n');
        self.write_bytes(&text)
    }

    /// Flushes stdout, or syncs the file and renames it into place.
    pub fn commit(self) -> Result<(), Error> {
        match self {
            Output::Stdout(mut out) => out.flush().map_err(|e| Error::output("<stdout>", e)),
            Output::File { path, tmp, force } => {
                let tmp = tmp.into_inner().map_err(|e| Error::output(&path, e.into_error()))?;
                tmp.as_file().sync_all().map_err(|e| Error::output(&path, e))?;
                let persisted = if force { tmp.persist(&path) } else { tmp.persist_noclobber(&path) };
                persisted.map_err(|e| match e.error.kind() {
                    io::ErrorKind::AlreadyExists => Error::Exists { file: path.display().to_string() },
                    _ => Error::output(&path, e.error),
                })?;
                Ok(())
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Stdout(w) => w.write(buf),
            Output::File { tmp, .. } => tmp.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout(w) => w.flush(),
            Output::File { tmp, .. } => tmp.flush(),
        }
    }
}

/// Human-readable byte count.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
