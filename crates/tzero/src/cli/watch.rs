//! `lsflash --watch [SECS]`: the relationships, listed again every SECS
//! seconds until Ctrl-C (or `--count N` redraws).
//!
//! Three outputs, chosen once:
//! - a terminal gets a live table drawn in place, with one progress bar
//!   per relationship, its measured copy rate and ETA. Each frame moves the
//!   cursor back up over the previous one and overwrites it line by line,
//!   clearing only what is left of each line and below the last: the
//!   screen is never cleared, so nothing flickers. Lines are cut to the
//!   terminal's width and the frame to its height, since a wrapped or
//!   scrolled line would break the cursor arithmetic;
//! - `--json` prints one JSON document (the `lsflash --json` array) per
//!   interval, one line each, for scripts;
//! - anything else (a pipe, a file) gets the plain `lsflash` table per
//!   interval after a timestamp line, with no escape codes.
//!
//! Ctrl-C ends the watch with exit 0 and the cursor shown again; the
//! terminal is never put in raw mode, so there is nothing else to restore.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::api_types::{Flash, FlashState};
use crate::client::Client;
use crate::output::{copied_permille, flash_columns, percent_copied, Table};
use crate::units::format_size;

use super::common::Pair;

/// Cells of the progress bar between its brackets.
const BAR_CELLS: u64 = 20;

/// What to list and how often.
pub(super) struct Watch<'a> {
    pub long: bool,
    pub seqnum: Option<u32>,
    pub pairs: &'a [Pair],
    pub interval: Duration,
    /// Stop after this many redraws (`--count`); forever when `None`.
    pub count: Option<u64>,
}

/// clap's value parser for `--watch`: seconds, fractions allowed.
pub(super) fn interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of seconds, got {s:?}"))?;
    // Below 0.1 s the daemon would spend its time listing for us.
    if !secs.is_finite() || !(0.1..=86_400.0).contains(&secs) {
        return Err(format!(
            "the interval must be 0.1 to 86400 seconds, got {s}"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(super) async fn watch(client: &Client, w: Watch<'_>, json: bool) -> anyhow::Result<()> {
    let mut out = if json {
        Output::Json
    } else if std::io::stdout().is_terminal() {
        Output::Live(Screen::new())
    } else {
        Output::Plain
    };
    let mut rates = Rates::default();
    let mut ticker = tokio::time::interval(w.interval);
    // A slow daemon delays the next frame rather than bunching frames.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut drawn = 0u64;
    let ended = loop {
        tokio::select! {
            _ = &mut ctrl_c => break Ok(()),
            _ = ticker.tick() => {}
        }
        let rels = tokio::select! {
            _ = &mut ctrl_c => break Ok(()),
            r = list(client, &w) => match r {
                Ok(rels) => rels,
                Err(e) => break Err(e),
            },
        };
        let now = Instant::now();
        rates.update(&rels, now);
        if let Err(e) = out.frame(&rels, &rates, &w) {
            break Err(e);
        }
        drawn += 1;
        if w.count.is_some_and(|n| drawn >= n) {
            break Ok(());
        }
    };
    out.finish()?;
    ended
}

/// One request per frame whatever the pairs: the whole list (or one
/// sequence number), filtered here, so a pair that ends (a non-persistent
/// relationship, once copied) simply leaves the table.
async fn list(client: &Client, w: &Watch<'_>) -> anyhow::Result<Vec<Flash>> {
    let mut rels = match w.seqnum {
        Some(n) => client.flashes_with_seqnum(n).await?,
        None => client.flashes().await?,
    };
    if !w.pairs.is_empty() {
        rels.retain(|f| {
            w.pairs
                .iter()
                .any(|p| p.source == f.source && p.target == f.target)
        });
    }
    Ok(rels)
}

enum Output {
    Json,
    Plain,
    Live(Screen),
}

impl Output {
    fn frame(&mut self, rels: &[Flash], rates: &Rates, w: &Watch<'_>) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        match self {
            Output::Json => {
                serde_json::to_writer(&mut stdout, rels)?;
                writeln!(stdout)?;
            }
            Output::Plain => {
                writeln!(stdout, "--- {} ---", now_utc())?;
                write!(stdout, "{}", crate::output::flash_table(rels, w.long))?;
            }
            Output::Live(screen) => {
                let title = format!(
                    "Every {}s: tzero lsflash{}   {}   (Ctrl-C to quit)",
                    w.interval.as_secs_f64(),
                    if w.long { " -l" } else { "" },
                    now_utc()
                );
                let table = live_table(rels, rates, w.long).to_string();
                let lines = std::iter::once(title)
                    .chain(std::iter::once(String::new()))
                    .chain(table.lines().map(str::to_owned))
                    .collect::<Vec<_>>();
                screen.draw(&mut stdout, &lines)?;
            }
        }
        stdout.flush()?;
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if let Output::Live(screen) = self {
            screen.restore();
        }
        Ok(())
    }
}

fn now_utc() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

/// ID, State, a bar, `%Copied`, the measured rate and the ETA first (a
/// narrow terminal cuts lines on the right), then the rest of the `lsflash`
/// (or `-l`) columns.
fn live_table(rels: &[Flash], rates: &Rates, long: bool) -> Table {
    let (headers, rows) = flash_columns(rels, long);
    let first = ["ID", "State"];
    let rest: Vec<usize> = (0..headers.len())
        .filter(|&i| !first.contains(&headers[i]) && headers[i] != "%Copied")
        .collect();
    let at = |name: &str| headers.iter().position(|h| *h == name);
    let (id, state) = (at("ID"), at("State"));
    let mut live = vec!["ID", "State", "Progress", "%Copied", "Rate", "ETA"];
    live.extend(rest.iter().map(|&i| headers[i]));
    let mut t = Table::new(live);
    for (f, row) in rels.iter().zip(rows) {
        let cell = |i: Option<usize>| i.and_then(|i| row.get(i)).cloned().unwrap_or_default();
        let (rate, eta) = rates.show(f);
        let mut cells = vec![
            cell(id),
            cell(state),
            bar(copied_permille(f)),
            percent_copied(f),
            rate,
            eta,
        ];
        cells.extend(rest.iter().map(|&i| row[i].clone()));
        t.row(cells);
    }
    t
}

/// `[#########-----------]` for a share in tenths of a percent.
fn bar(permille: u64) -> String {
    let cells = usize::try_from(BAR_CELLS).unwrap_or(20);
    let full = usize::try_from(permille.min(1000) * BAR_CELLS / 1000).unwrap_or(cells);
    format!("[{}{}]", "#".repeat(full), "-".repeat(cells - full))
}

/// Copy rates measured from the drop of out-of-sync tracks between
/// frames, per relationship id, smoothed so one slow frame does not make
/// the ETA jump.
#[derive(Default)]
struct Rates {
    by_id: HashMap<u64, Seen>,
}

struct Seen {
    at: Instant,
    out_of_sync: u64,
    /// Bytes per second; `None` until two frames were seen.
    rate: Option<f64>,
}

impl Rates {
    fn update(&mut self, rels: &[Flash], now: Instant) {
        let mut next = HashMap::with_capacity(rels.len());
        for f in rels {
            let rate = self.by_id.get(&f.id).and_then(|s| {
                let dt = now.duration_since(s.at).as_secs_f64();
                // More to copy than before: a resync or reverse began a new
                // copy, so the old rate says nothing.
                if dt <= 0.0 || f.out_of_sync_tracks > s.out_of_sync {
                    return None;
                }
                let bytes = (s.out_of_sync - f.out_of_sync_tracks) as f64 * f.track_size as f64;
                let now_rate = bytes / dt;
                Some(s.rate.map_or(now_rate, |r| 0.5 * r + 0.5 * now_rate))
            });
            next.insert(
                f.id,
                Seen {
                    at: now,
                    out_of_sync: f.out_of_sync_tracks,
                    rate,
                },
            );
        }
        self.by_id = next;
    }

    /// The rate and ETA cells of `f`.
    fn show(&self, f: &Flash) -> (String, String) {
        let rate = self.by_id.get(&f.id).and_then(|s| s.rate);
        let left = f.out_of_sync_tracks.saturating_mul(f.track_size);
        match (f.state, rate) {
            (FlashState::Copying, Some(r)) if r >= 1.0 => {
                let eta = Duration::from_secs_f64((left as f64 / r).min(1e9));
                (format!("{}/s", format_size(whole(r))), format_eta(eta))
            }
            // Copying, but nothing moved between the last two frames (or
            // only one frame yet).
            (FlashState::Copying, _) => ("-".to_owned(), "-".to_owned()),
            (FlashState::Copied, _) => ("-".to_owned(), "done".to_owned()),
            // NOCOPY copies only what hosts write: no ETA to give.
            (FlashState::NoCopy | FlashState::Failed, _) => ("-".to_owned(), "-".to_owned()),
        }
    }
}

/// A rate known to be finite and at least 1, in whole bytes.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn whole(r: f64) -> u64 {
    // `as` saturates; the caller checked the sign and finiteness.
    r as u64
}

/// `42s`, `3m05s`, `2h07m`.
fn format_eta(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// The live frame on a terminal: how many lines the last frame left, so the
/// next one can go back over them.
struct Screen {
    lines: usize,
    cursor_hidden: bool,
}

/// Escape sequences (ECMA-48 / VT100).
const HIDE_CURSOR: &str = "\x1b[?25l";
const SHOW_CURSOR: &str = "\x1b[?25h";
/// Erase from the cursor to the end of the line.
const CLEAR_EOL: &str = "\x1b[K";
/// Erase from the cursor to the end of the screen.
const CLEAR_EOS: &str = "\x1b[J";

impl Screen {
    fn new() -> Screen {
        Screen {
            lines: 0,
            cursor_hidden: false,
        }
    }

    fn draw(&mut self, out: &mut impl Write, lines: &[String]) -> std::io::Result<()> {
        let (rows, cols) = console::Term::stdout().size();
        let (rows, cols) = (usize::from(rows.max(2)), usize::from(cols.max(10)));
        let mut frame = String::new();
        if !self.cursor_hidden {
            frame.push_str(HIDE_CURSOR);
            self.cursor_hidden = true;
        }
        if self.lines > 0 {
            // Back to the start of the previous frame's first line.
            frame.push_str(&format!("\r\x1b[{}A", self.lines));
        }
        // One row stays free: the cursor sits there after the last line,
        // and a frame as tall as the screen would scroll it.
        let room = rows - 1;
        let shown = if lines.len() > room {
            let hidden = lines.len() - (room - 1);
            let mut l: Vec<String> = lines[..room - 1].to_vec();
            l.push(format!(
                "... {hidden} more lines (a taller terminal shows them)"
            ));
            l
        } else {
            lines.to_vec()
        };
        for line in &shown {
            frame.push_str(&console::truncate_str(line, cols - 1, ""));
            frame.push_str(CLEAR_EOL);
            frame.push('\n');
        }
        frame.push_str(CLEAR_EOS);
        self.lines = shown.len();
        out.write_all(frame.as_bytes())
    }

    fn restore(&mut self) {
        if self.cursor_hidden {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(SHOW_CURSOR.as_bytes());
            let _ = out.flush();
            self.cursor_hidden = false;
        }
    }
}

impl Drop for Screen {
    /// An error or a panic between frames still gives the cursor back.
    fn drop(&mut self) {
        self.restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(interval("2"), Ok(Duration::from_secs(2)));
        assert_eq!(interval("0.5"), Ok(Duration::from_millis(500)));
        assert!(interval("0").is_err());
        assert!(interval("-1").is_err());
        assert!(interval("nan").is_err());
        assert!(interval("soon").is_err());
    }

    #[test]
    fn bars_and_etas() {
        assert_eq!(bar(0), "[--------------------]");
        assert_eq!(bar(500), "[##########----------]");
        assert_eq!(bar(1000), "[####################]");
        assert_eq!(format_eta(Duration::from_secs(42)), "42s");
        assert_eq!(format_eta(Duration::from_secs(185)), "3m05s");
        assert_eq!(format_eta(Duration::from_secs(7620)), "2h07m");
    }

    #[test]
    fn frames_overwrite_in_place() {
        let mut s = Screen::new();
        let mut out = Vec::new();
        s.draw(&mut out, &["a".into(), "b".into()]).expect("draw");
        s.draw(&mut out, &["c".into()]).expect("draw");
        let text = String::from_utf8(out).expect("utf8");
        // The second frame goes up over the two lines of the first, and
        // clears what is left below instead of the whole screen.
        assert!(text.contains("\r\x1b[2Ac\x1b[K\n\x1b[J"), "{text:?}");
        assert!(!text.contains("\x1b[2J"), "{text:?}");
        std::mem::forget(s); // no SHOW_CURSOR on the test's stdout
    }
}
