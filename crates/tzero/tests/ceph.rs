//! tzero nodes over a real Ceph cluster (`serve --backend ceph`), with real NBD clients.
//!
//! The cluster is the one `scripts/test.sh` starts with `scripts/ceph-cluster.sh` (3 monitors,
//! 3 BlueStore OSDs on sparse files, pool size 3 / min_size 2); its `ceph.conf` arrives in
//! `TZERO_CEPH_CONF` and its directory in `TZERO_CEPH_DIR`. Under `CI=true` a missing cluster
//! fails these tests; elsewhere they are skipped, loudly. Each test uses its own name prefix in
//! the pool, so its nodes form their own tzero cluster beside the other tests'.

mod common;

use common::{free_port, have, tzero_command, Env};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Ceph {
    conf: PathBuf,
    dir: PathBuf,
    pool: String,
}

fn ceph() -> Option<Ceph> {
    let Some(conf) = std::env::var_os("TZERO_CEPH_CONF") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but TZERO_CEPH_CONF is not set: scripts/test.sh starts the Ceph cluster"
        );
        eprintln!("skipped: TZERO_CEPH_CONF is not set (scripts/test.sh starts a Ceph cluster)");
        return None;
    };
    let conf = PathBuf::from(conf);
    let dir = std::env::var_os("TZERO_CEPH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| conf.parent().expect("conf dir").to_path_buf());
    let pool = std::env::var("TZERO_CEPH_POOL").unwrap_or_else(|_| "tzero".into());
    Some(Ceph { conf, dir, pool })
}

impl Ceph {
    fn rados_pool(&self) -> Arc<tzero_rados::Pool> {
        let cluster =
            tzero_rados::Cluster::connect(&self.conf, None, &[("rados_mon_op_timeout", "15")])
                .expect("connect to Ceph");
        cluster.pool(&self.pool).expect("pool")
    }

    /// The node named in `<prefix>owner`.
    fn owner(&self, pool: &tzero_rados::Pool, prefix: &str) -> Option<String> {
        tzero::cluster::lease::read_owner(pool, prefix)
            .ok()
            .flatten()
            .map(|o| o.node)
    }

    fn cluster_script(&self, args: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ceph-cluster.sh");
        let out = Command::new(script)
            .args(&args[..1])
            .arg(&self.dir)
            .args(&args[1..])
            .output()
            .expect("run ceph-cluster.sh");
        assert!(
            out.status.success(),
            "ceph-cluster.sh {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A unique prefix per test and run, so runs never see each other's images.
fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("t-{test}-{}-{nanos}.", std::process::id())
}

/// One `tzero serve --backend ceph` process.
struct Node {
    name: String,
    data: PathBuf,
    nbd_port: u16,
    api_port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts a node whose data directory is `env/<name>`; its tokens are copied from
    /// `tokens_from` (the nodes of a cluster share one token set), then waits until it accepts
    /// API connections, as owner or as standby.
    fn start(env: &Env, ceph: &Ceph, prefix: &str, name: &str, tokens_from: Option<&Node>) -> Node {
        let data = env.path(name);
        std::fs::create_dir_all(data.join("tokens")).unwrap();
        if let Some(from) = tokens_from {
            for f in ["api-token", "security-token"] {
                std::fs::copy(from.data.join(f), data.join(f)).unwrap();
            }
            for entry in std::fs::read_dir(from.data.join("tokens")).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), data.join("tokens").join(entry.file_name())).unwrap();
            }
        }
        let (nbd_port, api_port) = (free_port(), free_port());
        let log = env.path(&format!("{name}.log"));
        let child = tzero_command()
            .args(["serve", "--data"])
            .arg(&data)
            .args(["--nbd", &format!("127.0.0.1:{nbd_port}")])
            .args(["--api", &format!("127.0.0.1:{api_port}")])
            .args(["--backend", "ceph", "--ceph-conf"])
            .arg(&ceph.conf)
            .args([
                "--pool",
                &ceph.pool,
                "--ceph-prefix",
                prefix,
                "--node",
                name,
            ])
            .args(["--lease", "5s", "--cache", "16MiB"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn tzero serve");
        let mut node = Node {
            name: name.into(),
            data,
            nbd_port,
            api_port,
            log,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err() {
            if let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("{name} exited with {status}:\n{}", node.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{name} not listening after 60 s:\n{}",
                node.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.data.join("api-token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn uri(&self, export: &str) -> String {
        format!("nbd://127.0.0.1:{}/{export}", self.nbd_port)
    }

    /// The CLI against this node's TCP API (forwarded to the owner by a standby).
    fn cli(&self, args: &[&str]) -> Output {
        tzero_command()
            .args([
                "--api",
                &format!("http://127.0.0.1:{}", self.api_port),
                "--token",
                &self.token(),
            ])
            .args(args)
            .output()
            .expect("run tzero")
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "tzero {args:?} via {} failed: {}\nlog:\n{}",
            self.name,
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn flash(&self, src: &str, tgt: &str) -> Option<serde_json::Value> {
        let out = self.cli_ok(&["--json", "lsflash"]);
        let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        all.into_iter()
            .find(|f| f["source"] == src && f["target"] == tgt)
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status()
                .unwrap();
            assert!(ok.success(), "kill {sig} {}", self.name);
        }
    }

    fn kill9(&mut self) {
        self.signal("-KILL");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself; its exit code.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {timeout:?}:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs qemu-io commands against `uri`; `Err(output)` if any failed.
fn qemu_io(uri: &str, cmds: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw", uri]);
    for c in cmds {
        cmd.args(["-c", c]);
    }
    let out = cmd.output().expect("run qemu-io");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && !text.contains("verification failed") && !text.contains("failed") {
        Ok(text)
    } else {
        Err(text)
    }
}

fn qemu_io_ok(node: &Node, export: &str, cmds: &[&str]) -> String {
    qemu_io(&node.uri(export), cmds).unwrap_or_else(|out| {
        panic!(
            "qemu-io via {} {export} {cmds:?}:\n{out}\nlog:\n{}",
            node.name,
            node.log_text()
        )
    })
}

/// Waits until `<prefix>owner` names a node other than `not`; that node and how long it took.
fn wait_new_owner(
    ceph: &Ceph,
    pool: &tzero_rados::Pool,
    prefix: &str,
    not: Option<&str>,
    timeout: Duration,
) -> (String, Duration) {
    let start = Instant::now();
    loop {
        if let Some(owner) = ceph.owner(pool, prefix) {
            if Some(owner.as_str()) != not {
                return (owner, start.elapsed());
            }
        }
        assert!(
            start.elapsed() < timeout,
            "no new owner (was {not:?}) after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three nodes on one prefix; the first is the owner.
fn three_nodes(env: &Env, ceph: &Ceph, prefix: &str) -> Vec<Node> {
    let pool = ceph.rados_pool();
    let n1 = Node::start(env, ceph, prefix, "n1", None);
    let (owner, _) = wait_new_owner(ceph, &pool, prefix, None, Duration::from_secs(30));
    assert_eq!(owner, "n1");
    // The owner's unix socket means its engine is open and its tokens are written.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !n1.data.join("tzero.sock").exists() {
        assert!(
            Instant::now() < deadline,
            "n1 never served:\n{}",
            n1.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let n2 = Node::start(env, ceph, prefix, "n2", Some(&n1));
    let n3 = Node::start(env, ceph, prefix, "n3", Some(&n1));
    vec![n1, n2, n3]
}

#[test]
fn seed_rules_hold_through_every_node() {
    let Some(ceph) = ceph() else { return };
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let prefix = prefix("seed");
    let nodes = three_nodes(&env, &ceph, &prefix);
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    // Admin through a standby: forwarded to the owner.
    n2.cli_ok(&["mkfbvol", "--cap", "8MiB", "src", "tgt"]);
    qemu_io_ok(n3, "src", &["write -P 0x11 0 8M", "flush"]);
    n3.cli_ok(&["mkflash", "--nocp", "src:tgt"]);
    // Write source: T0 data is copied first; read target: T0 through every node.
    qemu_io_ok(n1, "src", &["write -P 0x22 64k 64k", "flush"]);
    for n in [n1, n2, n3] {
        qemu_io_ok(n, "tgt", &["read -P 0x11 0 8M"]);
        qemu_io_ok(
            n,
            "src",
            &[
                "read -P 0x22 64k 64k",
                "read -P 0x11 0 64k",
                "read -P 0x11 128k 1M",
            ],
        );
    }
    // Write target, partially: the rest of the track keeps T0; the source is unchanged.
    qemu_io_ok(n2, "tgt", &["write -P 0x33 1M 4k", "flush"]);
    for n in [n1, n2, n3] {
        qemu_io_ok(
            n,
            "tgt",
            &[
                "read -P 0x33 1M 4k",
                "read -P 0x11 1028k 60k",
                "read -P 0x11 0 1M",
            ],
        );
        qemu_io_ok(n, "src", &["read -P 0x11 1M 64k"]);
    }
    // Background copy: NOCOPY → COPY, then it completes and the target still reads T0.
    n1.cli_ok(&["chflash", "--cp", "src:tgt"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while n1
        .flash("src", "tgt")
        .is_some_and(|f| f["state"] != "copied")
    {
        assert!(
            Instant::now() < deadline,
            "copy not done:\n{}",
            n1.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    qemu_io_ok(
        n3,
        "tgt",
        &[
            "read -P 0x11 0 1M",
            "read -P 0x33 1M 4k",
            "read -P 0x11 2M 6M",
        ],
    );
}

/// `kill -9` of the owner during a COPY with host writes: another node takes over within
/// 10 s, the target still reads exactly T0, and every flushed write is there.
#[test]
fn owner_killed_mid_copy_another_node_takes_over() {
    let Some(ceph) = ceph() else { return };
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let prefix = prefix("takeover");
    let pool = ceph.rados_pool();
    let mut nodes = three_nodes(&env, &ceph, &prefix);
    nodes[1].cli_ok(&[
        "mkfbvol",
        "--cap",
        "32MiB",
        "--track-size",
        "64KiB",
        "src",
        "tgt",
    ]);
    qemu_io_ok(&nodes[0], "src", &["write -P 0x41 0 32M", "flush"]);
    // Slow enough that the copy is still running when the owner dies.
    nodes[0].cli_ok(&["mkflash", "--rate", "2MiB", "src:tgt"]);
    // Host writes after T0, flushed: each must survive the owner's death.
    for i in 0..8u64 {
        let off = i * 3 * 1024 * 1024 + 4096;
        qemu_io_ok(
            &nodes[0],
            "src",
            &[&format!("write -P 0x{:x} {off} 8k", 0x50 + i), "flush"],
        );
    }
    // An unflushed write may or may not survive; it must not break anything else.
    let _ = qemu_io(&nodes[0].uri("src"), &["write -P 0x7e 31M 4k"]);
    let before = nodes[0].flash("src", "tgt").expect("relationship");
    assert_ne!(
        before["state"], "copied",
        "copy finished too early: {before}"
    );
    let killed = Instant::now();
    nodes[0].kill9();
    let (owner, took) = wait_new_owner(&ceph, &pool, &prefix, Some("n1"), Duration::from_secs(20));
    // The new owner's API answers once its engine is open.
    let new = nodes
        .iter()
        .find(|n| n.name == owner)
        .expect("owner is a node");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !new.cli(&["lsfbvol"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "{owner} does not serve:\n{}",
            new.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let serving = killed.elapsed();
    eprintln!(
        "takeover by {owner}: owner record after {took:?}, its API serving {serving:?} after the kill"
    );
    assert!(
        serving < Duration::from_secs(10),
        "takeover took {serving:?}:\n{}",
        new.log_text()
    );
    // The relationship survived, the copy goes on, and T0 holds through both survivors.
    assert!(new.flash("src", "tgt").is_some(), "relationship lost");
    let other = nodes
        .iter()
        .find(|n| n.name != owner && n.name != "n1")
        .unwrap();
    for n in [new, other] {
        let mut reads = vec!["read -P 0x41 0 4k".to_string()];
        for i in 0..8u64 {
            let off = i * 3 * 1024 * 1024;
            // Target: T0 (0x41) everywhere, including where the source changed.
            reads.push(format!("read -P 0x41 {off} 3M"));
        }
        let reads: Vec<&str> = reads.iter().map(String::as_str).collect();
        qemu_io_ok(n, "tgt", &reads[..reads.len() - 1]);
        qemu_io_ok(n, "tgt", &["read -P 0x41 21M 11M"]);
        for i in 0..8u64 {
            let off = i * 3 * 1024 * 1024 + 4096;
            qemu_io_ok(n, "src", &[&format!("read -P 0x{:x} {off} 8k", 0x50 + i)]);
        }
    }
}

/// An owner that was paused past its lease and then resumes is fenced: it cannot change a
/// byte (the OSDs refuse its blocklisted session), and it stops itself.
#[test]
fn fenced_old_owner_cannot_write() {
    let Some(ceph) = ceph() else { return };
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let prefix = prefix("fence");
    let pool = ceph.rados_pool();
    let mut nodes = three_nodes(&env, &ceph, &prefix);
    nodes[0].cli_ok(&["mkfbvol", "--cap", "4MiB", "vol"]);
    qemu_io_ok(&nodes[0], "vol", &["write -P 0x10 0 4M", "flush"]);
    // A client of n1 keeps its connection across the pause.
    let mut late = Command::new("qemu-io")
        .args(["-f", "raw", &nodes[0].uri("vol")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    nodes[0].signal("-STOP");
    let (owner, took) = wait_new_owner(&ceph, &pool, &prefix, Some("n1"), Duration::from_secs(20));
    eprintln!("{owner} took over from the paused n1 after {took:?}");
    let (old, rest) = nodes.split_at_mut(1);
    let old = &mut old[0];
    let new = rest.iter().find(|n| n.name == owner).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !new.cli(&["lsfbvol"]).status.success() {
        assert!(Instant::now() < deadline, "{owner} does not serve");
        std::thread::sleep(Duration::from_millis(100));
    }
    // n1 wakes up with a write and a flush already on its way.
    {
        use std::io::Write;
        let stdin = late.stdin.as_mut().unwrap();
        // FUA: through the write cache to the OSDs, which must refuse the fenced session.
        writeln!(stdin, "write -f -P 0x99 0 64k").unwrap();
        writeln!(stdin, "write -P 0x98 64k 64k").unwrap();
        writeln!(stdin, "flush").unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    old.signal("-CONT");
    let code = old.wait_exit(Duration::from_secs(20));
    assert_eq!(
        code,
        Some(tzero::cluster::FENCED_EXIT),
        "n1:\n{}",
        old.log_text()
    );
    drop(late.stdin.take());
    let late_out = late.wait_with_output().unwrap();
    let late_text = String::from_utf8_lossy(&late_out.stdout).into_owned()
        + &String::from_utf8_lossy(&late_out.stderr);
    // Whatever n1 told its client, nothing of its late writes reached the volume.
    qemu_io_ok(new, "vol", &["read -P 0x10 0 4M"]);
    eprintln!("n1's client after the pause: {late_text}");
    // And the new owner writes normally.
    qemu_io_ok(
        new,
        "vol",
        &["write -P 0x20 0 64k", "flush", "read -P 0x20 0 64k"],
    );
}

/// `kill -9` of one OSD during a background copy with host writes: I/O goes on (min_size
/// 2), and nothing is lost once the OSD is back.
#[test]
fn osd_killed_mid_copy_loses_nothing() {
    let Some(ceph) = ceph() else { return };
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let prefix = prefix("osd");
    let pool = ceph.rados_pool();
    let node = Node::start(&env, &ceph, &prefix, "n1", None);
    wait_new_owner(&ceph, &pool, &prefix, None, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.cli(&["lsfbvol"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "n1 does not serve:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    node.cli_ok(&["mkfbvol", "--cap", "32MiB", "src", "tgt"]);
    qemu_io_ok(&node, "src", &["write -P 0x61 0 32M", "flush"]);
    node.cli_ok(&["mkflash", "--rate", "4MiB", "src:tgt"]);
    ceph.cluster_script(&["kill-osd", "2"]);
    let restart = scopeguard(|| ceph.cluster_script(&["start-osd", "2"]));
    // Host writes with one OSD down: acknowledged and flushed.
    for i in 0..16u64 {
        qemu_io_ok(
            &node,
            "src",
            &[
                &format!("write -P 0x{:x} {} 4k", 0x70 + i, i * 2 * 1024 * 1024),
                "flush",
            ],
        );
    }
    drop(restart);
    let deadline = Instant::now() + Duration::from_secs(120);
    while node
        .flash("src", "tgt")
        .is_some_and(|f| f["state"] != "copied")
    {
        assert!(
            Instant::now() < deadline,
            "copy not done:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    qemu_io_ok(&node, "tgt", &["read -P 0x61 0 32M"]);
    for i in 0..16u64 {
        qemu_io_ok(
            &node,
            "src",
            &[&format!(
                "read -P 0x{:x} {} 4k",
                0x70 + i,
                i * 2 * 1024 * 1024
            )],
        );
    }
}

/// Runs `f` when dropped, also when the test panics.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// A node restarted (kill -9, then start) on the same pool finds its volumes and relationships.
#[test]
fn crash_restart_recovers_from_the_pool() {
    let Some(ceph) = ceph() else { return };
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let prefix = prefix("restart");
    let pool = ceph.rados_pool();
    let mut node = Node::start(&env, &ceph, &prefix, "n1", None);
    wait_new_owner(&ceph, &pool, &prefix, None, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.cli(&["lsfbvol"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "n1 does not serve:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    node.cli_ok(&["mkfbvol", "--cap", "8MiB", "a", "b"]);
    qemu_io_ok(&node, "a", &["write -P 0x01 0 8M", "flush"]);
    node.cli_ok(&["mkflash", "--nocp", "--persist", "a:b"]);
    qemu_io_ok(&node, "a", &["write -P 0x02 0 1M", "flush"]);
    node.kill9();
    // The same node name, a new process: it waits out its own old lease, then owns again.
    let node2 = Node::start(&env, &ceph, &prefix, "n1b", Some(&node));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node2.cli(&["lsfbvol"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "restarted node does not serve:\n{}",
            node2.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(node2.flash("a", "b").is_some(), "relationship lost");
    qemu_io_ok(&node2, "b", &["read -P 0x01 0 8M"]);
    qemu_io_ok(&node2, "a", &["read -P 0x02 0 1M", "read -P 0x01 1M 7M"]);
}

/// A cluster that cannot be reached: `serve` stops with one clear error within the
/// connection timeout, instead of hanging.
#[test]
fn unreachable_cluster_is_a_clear_error() {
    let env = Env::new();
    let conf = env.path("nowhere.conf");
    let port = free_port();
    std::fs::write(
        &conf,
        format!("[global]\nmon_host = 127.0.0.1:{port}\nauth_cluster_required = none\nauth_service_required = none\nauth_client_required = none\n"),
    )
    .unwrap();
    let start = Instant::now();
    let out = tzero_command()
        .args(["serve", "--data"])
        .arg(env.data())
        .args(["--nbd", &format!("127.0.0.1:{}", free_port())])
        .args(["--api", &format!("127.0.0.1:{}", free_port())])
        .args(["--backend", "ceph", "--ceph-conf"])
        .arg(&conf)
        .output()
        .unwrap();
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve succeeded without a cluster");
    assert!(took < Duration::from_secs(40), "took {took:?} to give up");
    assert!(
        stderr.contains("cannot connect to the Ceph cluster"),
        "{stderr}"
    );
}

/// The fencing primitive itself, on this cluster: once a session is blocklisted, the OSDs
/// refuse its writes to an image it holds locked (EBLOCKLISTED), and another client breaks the
/// lock and writes.
#[test]
fn blocklisted_session_cannot_write() {
    let Some(ceph) = ceph() else { return };
    let options = tzero_engine::storage::rbd::CLIENT_OPTIONS;
    let old = tzero_rados::Cluster::connect(&ceph.conf, None, options).unwrap();
    let old_pool = old.pool(&ceph.pool).unwrap();
    let name = format!("{}img", prefix("fenceprim"));
    old_pool.create_image(&name, 4 << 20, 22).unwrap();
    let image = old_pool.open_image(&name).unwrap();
    image.lock_exclusive().unwrap();
    image.write_at(&[1u8; 4096], 0).unwrap();
    image.flush().unwrap();
    let new = tzero_rados::Cluster::connect(&ceph.conf, None, options).unwrap();
    new.blocklist_add(&old.addrs().unwrap(), 0).unwrap();
    let err = image
        .write_at(&[2u8; 4096], 0)
        .and_then(|()| image.flush())
        .expect_err("a blocklisted session wrote");
    assert_eq!(err.raw_os_error(), Some(108), "{err}");
    let new_pool = new.pool(&ceph.pool).unwrap();
    let taken = new_pool.open_image(&name).unwrap();
    for owner in taken.lock_owners().unwrap() {
        taken.break_lock(&owner).unwrap();
    }
    taken.lock_exclusive().unwrap();
    let mut buf = [0u8; 4096];
    assert_eq!(taken.read_at(&mut buf, 0).unwrap(), 4096);
    assert_eq!(buf, [1u8; 4096], "the fenced write reached the image");
    taken.write_at(&[3u8; 4096], 0).unwrap();
    drop(taken);
    drop(image);
    new_pool.remove_image(&name).unwrap();
}
