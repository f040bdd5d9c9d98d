//! `--wait`: polls the daemon until relationships have finished their
//! background copy, with one progress bar per pair (percent, rate, ETA) on
//! a terminal, so a slow pair stands out from the ones already done.
//!
//! A pair that fails stops the wait with an error naming it (exit 1); its
//! bar is left showing where it stopped.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::api_types::{Flash, FlashState};
use crate::client::Client;

/// How often `--wait` polls the daemon.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Where one pair stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Still copying, with this many tracks to go.
    Copying(u64),
    /// Nothing left to wait for: copied, gone (a non-persistent
    /// relationship ends when copied), or NOCOPY.
    Done,
}

/// Waits until every relationship has finished its background copy: it is
/// gone (non-persistent ones end when copied) or in state `copied`. A
/// NOCOPY relationship has nothing to wait for. Shows one bar per pair
/// when stderr is a terminal and the output is not JSON.
pub(super) async fn wait_for_copies(
    client: &Client,
    rels: &[Flash],
    json: bool,
) -> anyhow::Result<()> {
    let bars = Bars::new(rels, !json && std::io::stderr().is_terminal());
    let mut left: Vec<Progress> = vec![Progress::Copying(u64::MAX); rels.len()];
    loop {
        for (i, f) in rels.iter().enumerate() {
            if left[i] == Progress::Done {
                continue;
            }
            let now = match client.flash(&f.source, &f.target).await {
                Ok(now) => now,
                Err(e) if e.code() == Some("relationship_not_found") => {
                    left[i] = Progress::Done;
                    bars.done(i, "copied");
                    continue;
                }
                Err(e) => {
                    bars.abandon_all();
                    return Err(e.into());
                }
            };
            match now.state {
                FlashState::Copying => {
                    left[i] = Progress::Copying(now.out_of_sync_tracks);
                    bars.update(i, &now);
                }
                FlashState::Copied | FlashState::NoCopy => {
                    left[i] = Progress::Done;
                    let how = if now.state == FlashState::NoCopy {
                        "NOCOPY: nothing to wait for"
                    } else {
                        "copied"
                    };
                    bars.done(i, how);
                }
                FlashState::Failed => {
                    let reason = now.failure.as_deref().unwrap_or("no reason given");
                    bars.failed(i, reason);
                    bars.abandon_all();
                    anyhow::bail!("FlashCopy pair {}:{} failed: {reason}", f.source, f.target);
                }
            }
        }
        if left.iter().all(|p| *p == Progress::Done) {
            return Ok(());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// One indicatif bar per pair (positions in bytes, so its rate and ETA
/// are in bytes; the message carries DSCLI's unit, tracks), or nothing when
/// there is no terminal to draw on.
struct Bars {
    /// Owns the drawing of the bars; kept so they stay on its target.
    _multi: MultiProgress,
    bars: Vec<ProgressBar>,
    /// Width of the widest `SRC:TGT`, so the bars line up.
    width: usize,
}

impl Bars {
    fn new(rels: &[Flash], draw: bool) -> Bars {
        let target = if draw {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let width = rels
            .iter()
            .map(|f| f.source.len() + f.target.len() + 1)
            .max()
            .unwrap_or(0);
        let style = ProgressStyle::with_template(&format!(
            "{{prefix:<{width}}} [{{bar:30}}] {{percent:>3}}%  {{msg}}  {{binary_bytes_per_sec}}  ETA {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("#>-");
        let bars = rels
            .iter()
            .map(|f| {
                let bar = multi.add(ProgressBar::new(bytes(f, f.total_tracks)));
                bar.set_style(style.clone());
                bar.set_prefix(format!("{}:{}", f.source, f.target));
                bar.set_message(format!("?/{} tracks", f.total_tracks));
                bar
            })
            .collect();
        Bars {
            _multi: multi,
            bars,
            width,
        }
    }

    fn update(&self, i: usize, now: &Flash) {
        let copied = now.total_tracks.saturating_sub(now.out_of_sync_tracks);
        let bar = &self.bars[i];
        bar.set_length(bytes(now, now.total_tracks));
        bar.set_position(bytes(now, copied));
        bar.set_message(format!("{copied}/{} tracks", now.total_tracks));
    }

    fn done(&self, i: usize, how: &str) {
        let bar = &self.bars[i];
        if let Some(len) = bar.length() {
            bar.set_position(len);
        }
        // The rate and ETA no longer mean anything: say how it ended.
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{prefix:<{}}} [{{bar:30}}] {{percent:>3}}%  {{msg}}",
                self.width
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("#>-"),
        );
        bar.finish_with_message(how.to_owned());
    }

    fn failed(&self, i: usize, reason: &str) {
        self.bars[i].abandon_with_message(format!("FAILED: {reason}"));
    }

    /// Leaves every bar where it is (an error follows on stderr).
    fn abandon_all(&self) {
        for bar in &self.bars {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

/// `tracks` of `f`, in bytes.
fn bytes(f: &Flash, tracks: u64) -> u64 {
    tracks.saturating_mul(f.track_size)
}
