//! A progress bar on stderr for work that takes longer than about a second,
//! shown only when stderr is a terminal and `--quiet` was not given.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const DELAY: Duration = Duration::from_secs(1);

pub struct Bar {
    bar: ProgressBar,
    started: Instant,
    enabled: bool,
    shown: AtomicBool,
}

impl Bar {
    pub fn new(message: &str, quiet: bool) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(message.to_string());
        Bar { bar, started: Instant::now(), enabled: !quiet && std::io::stderr().is_terminal(), shown: AtomicBool::new(false) }
    }

    pub fn set_total(&self, total: u64) {
        self.bar.set_length(total);
    }

    pub fn add(&self, n: u64) {
        self.bar.inc(n);
        if self.enabled
            && !self.shown.load(Ordering::Relaxed)
            && self.started.elapsed() >= DELAY
            && !self.shown.swap(true, Ordering::Relaxed)
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl cathedral_bundle::Progress for Bar {
    fn start(&self, total_bytes: u64) {
        self.set_total(total_bytes);
    }
    fn advance(&self, bytes: u64) {
        self.add(bytes);
    }
}
