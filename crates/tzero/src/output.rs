//! What the CLI prints: aligned tables for people, JSON for programs.
//!
//! Tables follow DSCLI's column names so that people who know `lsflash -l`
//! on a DS8000 can read them; `--json` prints the API's own objects, so
//! scripts see exactly the documented wire format.

use std::io::{self, Write};

use serde::Serialize;

use crate::api_types::{Flash, FlashState, Pool, Volume};
use crate::units::format_size;

/// A table printed with every column as wide as its widest cell.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: Vec<&'static str>) -> Self {
        Table {
            headers,
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        let separator: Vec<String> = widths.iter().map(|w| "=".repeat(*w)).collect();
        for line in std::iter::once(&headers)
            .chain(std::iter::once(&separator))
            .chain(self.rows.iter())
        {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                let width = widths.get(i).copied().unwrap_or(0);
                if i + 1 == line.len() {
                    text.push_str(cell);
                } else {
                    text.push_str(&format!("{cell:<width$}  "));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)
}

/// The `lsfbvol` table. `DataState` is always shown: a target left
/// "contents undefined" by an incomplete withdrawal must not look normal.
pub fn volume_table(vols: &[Volume], long: bool) -> Table {
    let mut headers = vec!["Name", "Capacity", "Cap(bytes)", "TrackSize"];
    if long {
        headers.extend([
            "Pool",
            "SAM",
            "Allocated",
            "Alloc(bytes)",
            "Frozen",
            "WriteInhibited",
            "Role",
        ]);
    }
    headers.push("DataState");
    let mut t = Table::new(headers);
    for v in vols {
        let mut row = vec![
            v.name.clone(),
            format_size(v.capacity_bytes),
            v.capacity_bytes.to_string(),
            format_size(v.track_size),
        ];
        if long {
            row.push(v.pool.clone().unwrap_or_else(|| "-".to_owned()));
            row.push(v.provisioning.sam().to_owned());
            row.push(format_size(v.allocated_bytes));
            row.push(v.allocated_bytes.to_string());
            row.push(yes_no(v.frozen));
            row.push(yes_no(v.write_inhibited));
            row.push(role(v));
        }
        row.push(if v.contents_undefined {
            "contents undefined".to_owned()
        } else {
            "normal".to_owned()
        });
        t.row(row);
    }
    t
}

/// "source of b,c; target of a", or "-".
fn role(v: &Volume) -> String {
    let mut parts = Vec::new();
    if !v.source_of.is_empty() {
        parts.push(format!("source of {}", v.source_of.join(",")));
    }
    if let Some(s) = &v.target_of {
        parts.push(format!("target of {s}"));
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join("; ")
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// The `lsextpool` table.
pub fn pool_table(pools: &[Pool]) -> Table {
    let mut t = Table::new(vec![
        "Name",
        "Capacity",
        "Used",
        "Free",
        "Used(bytes)",
        "Free(bytes)",
        "Volumes",
    ]);
    for p in pools {
        t.row(vec![
            p.name.clone(),
            format_size(p.capacity_bytes),
            format_size(p.used_bytes),
            format_size(p.free_bytes),
            p.used_bytes.to_string(),
            p.free_bytes.to_string(),
            p.volumes.to_string(),
        ]);
    }
    t
}

fn enabled(b: bool) -> String {
    if b { "Enabled" } else { "Disabled" }.to_owned()
}

/// DSCLI's state names, for the `State` column; a relationship that
/// `rmflash --cp` will end when copied says so.
fn state_name(s: FlashState, withdraw_pending: bool) -> &'static str {
    match (s, withdraw_pending) {
        (FlashState::Copying, true) => "Copying(WithdrawPending)",
        (FlashState::Copying, false) => "Copying",
        (FlashState::NoCopy, _) => "Valid",
        (FlashState::Copied, _) => "Copied",
        (FlashState::Failed, _) => "Failed",
    }
}

fn rate(r: u64) -> String {
    if r == 0 {
        "unlimited".to_owned()
    } else {
        format!("{}/s", format_size(r))
    }
}

/// The `lsflash` table; `long` shows DSCLI's `lsflash -l` columns.
pub fn flash_table(rels: &[Flash], long: bool) -> Table {
    if !long {
        let mut t = Table::new(vec![
            "ID",
            "State",
            "BackgroundCopy",
            "Persistent",
            "OutOfSyncTracks",
            "CopyRate",
        ]);
        for f in rels {
            t.row(vec![
                format!("{}:{}", f.source, f.target),
                state_name(f.state, f.withdraw_pending).to_owned(),
                enabled(f.background_copy),
                enabled(f.persistent),
                f.out_of_sync_tracks.to_string(),
                rate(f.copy_rate),
            ]);
        }
        return t;
    }
    let mut t = Table::new(vec![
        "ID",
        "SequenceNum",
        "ActiveCopy",
        "Recording",
        "Persistent",
        "Revertible",
        "SourceWriteEnabled",
        "TargetWriteEnabled",
        "BackgroundCopy",
        "OutOfSyncTracks",
        "ChangedTracks",
        "DateCreated",
        "DateSynced",
        "State",
        "Reason",
    ]);
    for f in rels {
        t.row(vec![
            format!("{}:{}", f.source, f.target),
            f.seqnum.to_string(),
            enabled(f.state == FlashState::Copying),
            enabled(f.recording),
            enabled(f.persistent),
            // Set by setflashrevertible, and until commitflash/revertflash.
            enabled(f.revertible || f.revert_pending),
            enabled(true),
            enabled(!f.target_write_inhibit),
            enabled(f.background_copy),
            f.out_of_sync_tracks.to_string(),
            // What a resyncflash would copy again; "-" without recording.
            if f.recording {
                f.changed_tracks.to_string()
            } else {
                "-".to_owned()
            },
            format_date(f.created_ms),
            format_date(f.synced_ms),
            state_name(f.state, f.withdraw_pending).to_owned(),
            f.failure.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    t
}

/// DSCLI's date format, in UTC: `Tue Nov 25 09:36:00 UTC 2025`; "-" for 0.
pub fn format_date(ms: u64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let weekday = WEEKDAYS
        .get(usize::try_from(days % 7).unwrap_or(0))
        .unwrap_or(&"?");
    let month = MONTHS
        .get(usize::try_from(m.saturating_sub(1)).unwrap_or(0))
        .unwrap_or(&"?");
    format!(
        "{weekday} {month} {d:02} {:02}:{:02}:{:02} UTC {y}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic
/// Gregorian; Howard Hinnant's `civil_from_days`, unsigned since we never
/// see dates before the epoch.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(format_date(0), "-");
        assert_eq!(format_date(1000), "Thu Jan 01 00:00:01 UTC 1970");
        // 2025-11-25 09:36:00 UTC
        assert_eq!(
            format_date(1_764_063_360_000),
            "Tue Nov 25 09:36:00 UTC 2025"
        );
        // 2024-02-29 23:59:59 UTC (leap day)
        assert_eq!(
            format_date(1_709_251_199_000),
            "Thu Feb 29 23:59:59 UTC 2024"
        );
    }

    #[test]
    fn table_aligns() {
        let mut t = Table::new(vec!["A", "Long"]);
        t.row(vec!["xyz".into(), "1".into()]);
        assert_eq!(t.render(), "A    Long\n===  ====\nxyz  1\n");
    }
}
