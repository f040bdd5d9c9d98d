//! `--wait`: polls the daemon until relationships have finished their
//! background copy, with one progress bar over all of them on a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::api_types::{Flash, FlashState};
use crate::client::Client;

/// How often `--wait` polls the daemon.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Waits until every relationship has finished its background copy: it is
/// gone (non-persistent ones end when copied) or in state `copied`. A
/// NOCOPY relationship has nothing to wait for. Shows one progress bar over
/// all of them when stderr is a terminal and the output is not JSON.
pub(super) async fn wait_for_copies(
    client: &Client,
    rels: &[Flash],
    json: bool,
) -> anyhow::Result<()> {
    let total_tracks: u64 = rels.iter().map(|f| f.total_tracks).sum();
    let total_bytes: u64 = rels
        .iter()
        .map(|f| f.total_tracks.saturating_mul(f.track_size))
        .sum();
    let bar = if !json && std::io::stderr().is_terminal() {
        // Position in bytes so indicatif's rate and ETA are in bytes; the
        // message carries the DSCLI unit, tracks.
        let bar = ProgressBar::new(total_bytes);
        let style = ProgressStyle::with_template(
            "{prefix} [{wide_bar}] {msg}  {binary_bytes_per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix("copying");
        Some(bar)
    } else {
        None
    };
    loop {
        let mut left_tracks = 0u64;
        let mut left_bytes = 0u64;
        for f in rels {
            match client.flash(&f.source, &f.target).await {
                Ok(now) => match now.state {
                    FlashState::Copying => {
                        left_tracks += now.out_of_sync_tracks;
                        left_bytes += now.out_of_sync_tracks.saturating_mul(now.track_size);
                    }
                    FlashState::Copied | FlashState::NoCopy => {}
                    FlashState::Failed => {
                        if let Some(bar) = &bar {
                            bar.abandon();
                        }
                        anyhow::bail!(
                            "FlashCopy pair {}:{} failed: {}",
                            f.source,
                            f.target,
                            now.failure.as_deref().unwrap_or("no reason given")
                        );
                    }
                },
                Err(e) if e.code() == Some("relationship_not_found") => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(bar) = &bar {
            bar.set_position(total_bytes.saturating_sub(left_bytes));
            bar.set_message(format!(
                "{}/{total_tracks} tracks",
                total_tracks.saturating_sub(left_tracks)
            ));
        }
        if left_tracks == 0 {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    Ok(())
}
