//! `tzero-faultfs MOUNTPOINT BACKINGDIR CONTROL_SOCKET`: mounts the fault-injecting
//! pass-through file system (see the library's header for the control protocol) until SIGINT or
//! SIGTERM, then unmounts.

use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mountpoint, backing, control] = args.as_slice() else {
        eprintln!("usage: tzero-faultfs MOUNTPOINT BACKINGDIR CONTROL_SOCKET");
        std::process::exit(2);
    };
    let mounted = match tzero_faultfs::Mounted::mount(
        Path::new(mountpoint),
        Path::new(backing),
        Path::new(control),
    ) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("tzero-faultfs: cannot mount {mountpoint}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("tzero-faultfs: {mountpoint} → {backing}, control {control}");
    wait_for_signal();
    if let Err(e) = mounted.unmount() {
        eprintln!("tzero-faultfs: unmount: {e}");
        std::process::exit(1);
    }
}

/// Waits for SIGINT or SIGTERM (tokio's handlers: the workspace has them already, and they need
/// no unsafe code here).
fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
}
