//! Progress bars on stderr, only when it is a terminal (and never with --json).

use imgbuild_blockio::Progress;
use imgbuild_plan::Reporter;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

pub struct Bars {
    bar: Option<ProgressBar>,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{msg:>22} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            b
        });
        Bars { bar }
    }

    pub fn phase_msg(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
            b.set_length(0);
            b.set_position(0);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
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

impl Reporter for Bars {
    fn phase(&self, name: &str, total: u64) {
        if let Some(b) = &self.bar {
            b.set_message(name.to_string());
            b.set_length(total);
            b.set_position(0);
        }
    }
}
