//! What the CLI prints: aligned tables for people, JSON for programs.
//!
//! Tables follow DSCLI's column names so that people who know `lsflash -l`
//! on a DS8000 can read them; `--json` prints the API's own objects, so
//! scripts see exactly the documented wire format.

use std::fmt;
use std::io::{self, Write};

use serde::Serialize;

use crate::api_types::{Flash, FlashState, Pool, Volume};
use crate::units::format_size;

/// A DSCLI-style table, laid out by `comfy-table`: a header line, a line of
/// `=` under it, then one line per row; columns left-aligned, two spaces
/// apart, no borders and no colour, so scripts (and the integration tests)
/// can split it where the header's words start.
pub struct Table(comfy_table::Table);

/// The gap between columns.
const COLUMN_GAP: u16 = 2;

impl Table {
    pub fn new(headers: Vec<&'static str>) -> Self {
        let mut t = comfy_table::Table::new();
        // No borders or lines but the header's separator.
        t.load_preset(comfy_table::presets::NOTHING);
        t.set_style(comfy_table::TableComponent::HeaderLines, '=');
        let columns = headers.len();
        t.set_header(headers);
        for (i, column) in t.column_iter_mut().enumerate() {
            // The gap is right padding, none after the last column, so the
            // `=` line ends where the widest line does.
            let right = if i + 1 == columns { 0 } else { COLUMN_GAP };
            column.set_padding((0, right));
        }
        Table(t)
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.0.add_row(cells);
    }
}

impl fmt::Display for Table {
    /// Every line ends in a newline and no trailing spaces (the last
    /// column's cells are padded to its width otherwise).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.0.lines() {
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
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
            "SGCap",
            "SGUsed",
            "SGFree",
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
            match &v.safeguarded {
                Some(s) => {
                    row.push(format!("{} in {}", format_size(s.capacity_bytes), s.pool));
                    row.push(format!(
                        "{} ({} backups)",
                        format_size(s.used_bytes),
                        s.backups
                    ));
                    row.push(format_size(s.free_bytes));
                }
                None => row.extend(["-".to_owned(), "-".to_owned(), "-".to_owned()]),
            }
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
    let (headers, rows) = flash_columns(rels, long);
    let mut t = Table::new(headers);
    for row in rows {
        t.row(row);
    }
    t
}

/// The headers and cells of [`flash_table`], so `lsflash --watch` can add
/// its own columns to the same rows.
pub fn flash_columns(rels: &[Flash], long: bool) -> (Vec<&'static str>, Vec<Vec<String>>) {
    if !long {
        let headers = vec![
            "ID",
            "State",
            "BackgroundCopy",
            "Persistent",
            "OutOfSyncTracks",
            "CopyRate",
        ];
        let rows = rels
            .iter()
            .map(|f| {
                vec![
                    pair_id(f),
                    state_name(f.state, f.withdraw_pending).to_owned(),
                    enabled(f.background_copy),
                    enabled(f.persistent),
                    f.out_of_sync_tracks.to_string(),
                    rate(f.copy_rate),
                ]
            })
            .collect();
        return (headers, rows);
    }
    let headers = vec![
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
        "%Copied",
        "ChangedTracks",
        "DateCreated",
        "DateSynced",
        "State",
        "Reason",
    ];
    let rows = rels
        .iter()
        .map(|f| {
            vec![
                pair_id(f),
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
                percent_copied(f),
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
            ]
        })
        .collect();
    (headers, rows)
}

fn pair_id(f: &Flash) -> String {
    format!("{}:{}", f.source, f.target)
}

/// The share of the target's tracks already copied, in tenths of a
/// percent: 100 × (total − out of sync) / total. A NOCOPY relationship
/// shows what host writes have copied so far; an empty volume is all
/// copied.
pub fn copied_permille(f: &Flash) -> u64 {
    if f.total_tracks == 0 {
        return 1000;
    }
    let copied = f.total_tracks.saturating_sub(f.out_of_sync_tracks);
    // u128: no overflow whatever the track count. Rounded down, so 100.0
    // means every track, never 99.96 %.
    let permille = u128::from(copied) * 1000 / u128::from(f.total_tracks);
    u64::try_from(permille).unwrap_or(1000)
}

/// `%Copied` with one decimal, e.g. `45.3`.
pub fn percent_copied(f: &Flash) -> String {
    let p = copied_permille(f);
    format!("{}.{}", p / 10, p % 10)
}

/// DSCLI's date format, in UTC: `Tue Nov 25 09:36:00 UTC 2025`; "-" for 0.
pub fn format_date(ms: u64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    // Past jiff's range (year 9999) only a corrupt record could be; show
    // its raw number rather than a wrong date.
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || format!("{ms} ms since 1970"),
            |t| t.strftime("%a %b %d %H:%M:%S UTC %Y").to_string(),
        )
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
        assert_eq!(format_date(u64::MAX), "18446744073709551615 ms since 1970");
    }

    fn flash(total: u64, out_of_sync: u64) -> Flash {
        serde_json::from_value(serde_json::json!({
            "id": 1, "source": "a", "target": "b", "background_copy": false,
            "persistent": true, "copy_rate": 0, "state": "no_copy",
            "out_of_sync_tracks": out_of_sync, "total_tracks": total,
            "track_size": 65536, "created_ms": 0, "synced_ms": 0,
        }))
        .expect("a Flash")
    }

    #[test]
    fn percent_copied_has_one_decimal_rounded_down() {
        assert_eq!(percent_copied(&flash(16, 16)), "0.0");
        assert_eq!(percent_copied(&flash(16, 0)), "100.0");
        assert_eq!(percent_copied(&flash(3, 2)), "33.3");
        // 9999 of 10000 copied is not yet 100 %.
        assert_eq!(percent_copied(&flash(10_000, 1)), "99.9");
        assert_eq!(percent_copied(&flash(u64::MAX, u64::MAX / 2)), "50.0");
        assert_eq!(percent_copied(&flash(0, 0)), "100.0");
    }

    #[test]
    fn table_aligns() {
        let mut t = Table::new(vec!["A", "Long"]);
        t.row(vec!["xyz".into(), "1".into()]);
        assert_eq!(t.to_string(), "A    Long\n=========\nxyz  1\n");
        // A header alone still gets its separator line.
        assert_eq!(
            Table::new(vec!["Name", "ID"]).to_string(),
            "Name  ID\n========\n"
        );
    }
}
