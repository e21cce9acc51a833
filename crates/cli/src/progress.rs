//! Progress on stderr, only when it is a terminal (and never with --json): a spinner for
//! phases whose size is unknown (reading the closure, planning), a bar with bytes, rate and
//! ETA for the others (writing, which hashes and compresses as it goes); with `--timings`,
//! the time each phase took.

use imgbuild_plan::{Progress, Reporter};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

pub struct Bars {
    bar: Option<ProgressBar>,
    /// Phases seen so far and when each began (with `--timings`).
    timings: Option<Mutex<Vec<(String, Instant)>>>,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            spin(&b);
            b
        });
        Bars { bar, timings: None }
    }

    /// Also record how long each phase takes; [`Bars::finish`] prints it.
    pub fn with_timings(mut self, on: bool) -> Self {
        if on {
            self.timings = Some(Mutex::new(Vec::new()));
        }
        self
    }

    fn mark(&self, name: &str) {
        if let Some(t) = &self.timings {
            t.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((name.to_string(), Instant::now()));
        }
    }

    pub fn phase_msg(&self, msg: &str) {
        self.phase(msg, 0);
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if let Some(t) = &self.timings {
            let t = t.lock().unwrap_or_else(|p| p.into_inner());
            let end = Instant::now();
            for (i, (name, start)) in t.iter().enumerate() {
                let next = t.get(i + 1).map_or(end, |n| n.1);
                eprintln!("{:>8.3} s  {name}", (next - *start).as_secs_f64());
            }
        }
    }
}

impl Progress for Bars {
    fn add(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }
}

/// A phase of unknown size: a spinner and its name, no byte counts.
fn spin(b: &ProgressBar) {
    b.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("the template is valid"),
    );
    b.enable_steady_tick(std::time::Duration::from_millis(120));
}

impl Reporter for Bars {
    fn phase(&self, name: &str, total: u64) {
        self.mark(name);
        if let Some(b) = &self.bar {
            b.set_message(name.to_string());
            b.set_position(0);
            if total == 0 {
                b.set_length(0);
                spin(b);
            } else {
                b.disable_steady_tick();
                b.set_style(
                    ProgressStyle::with_template(
                        "{msg:>22} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                    )
                    .expect("the template is valid")
                    .progress_chars("=> "),
                );
                b.set_length(total);
            }
        }
    }
}
