//! Acceptance tests for issue 4: lazycas run as a service. Quota and eviction, proxies (squid
//! fan-in and failover), offline behaviour, integrity after SIGKILL, the systemd contract
//! (sd_notify READY=1, SIGHUP reload, the shipped unit and configs) and `lazycas demo`.
//!
//! Everything is real and local: nginx as the origin (its access log counts the bytes served),
//! Debian's squid as the site proxy, lazycas daemons as nodes, each with its own store and mount
//! point. The harness (`tests/common/`) stops what it starts by PID and unmounts, also when a
//! test fails. Figures the closing note asks for are printed (`--nocapture` shows them);
//! `bench/squid.sh` prints the N = 1, 4, 8 table.

mod common;
#[path = "service_support/mod.rs"]
mod service_support;

use common::*;
use service_support::*;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// A node using `proxies` (None: direct) with `assets`.
fn node_with(proxies: Option<Vec<String>>, assets: Vec<Asset>) -> Lazycas {
    Lazycas::with_config(Config {
        proxies,
        fetch_chunk_size: Some("1M".into()),
        fetch_parallel: Some(4),
        assets,
        ..Config::default()
    })
}

fn asset_of(origin: &impl Origin, name: &str, blob: &Blob) -> Asset {
    Asset::file(name, &origin.url_of(blob), &blob.sha256)
}

// ---------------------------------------------------------------------------------------------
// Proxies

/// Issue 4: "4 daemons behind one squid reading one 64 MiB blob at once -> origin serves it about
/// once".
#[test]
fn four_nodes_behind_one_squid_cost_the_origin_one_download() {
    require_fuse!();
    let run = fan_in(4, 64 * MIB, Via::Squid);
    eprintln!("FIGURE squid fan-in: {run}");
    assert_eq!(
        run.proxy_requests, 4,
        "every node must go through squid: {run}"
    );
    assert_eq!(
        run.proxy_ranged, 0,
        "through a proxy lazycas must send plain GETs (cacheable): {run}"
    );
    assert!(
        run.origin_bytes as f64 <= 1.5 * run.size as f64,
        "the origin served {:.2}x the blob for 4 nodes; squid should make it about 1x: {run}",
        run.ratio()
    );
}

/// The closing figures: origin bytes for N = 1, 4, 8 nodes behind one squid, and N = 4 nodes
/// without a proxy as the baseline (run by `bench/squid.sh`; ignored in the normal run to keep
/// CI short). `bench/squid.sh` sets `LAZYCAS_TESTS_REQUIRE_FUSE=1`, so where FUSE is missing
/// this fails rather than printing SKIPPED and an empty table.
#[test]
#[ignore]
fn squid_fan_in_figures() {
    require_fuse!();
    let runs: Vec<FanIn> = [1, 4, 8]
        .iter()
        .map(|&n| fan_in(n, 64 * MIB, Via::Squid))
        .collect();
    let baseline = fan_in(4, 64 * MIB, Via::Direct);
    println!("| nodes | via | blob MiB | origin bytes | origin requests | x blob | squid results | seconds |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in runs.iter().chain([&baseline]) {
        println!(
            "| {} | {:?} | {} | {} | {} | {:.2} | {} | {:.1} |",
            r.nodes,
            r.via,
            r.size >> 20,
            r.origin_bytes,
            r.origin_requests,
            r.ratio(),
            r.proxy_results.join(" "),
            r.elapsed.as_secs_f64()
        );
    }
    for r in &runs {
        assert!(r.ratio() <= 1.5, "{r}");
    }
}

/// Issue 4: "one squid of a group stopped -> reads continue through the other". A group of two
/// squids (`a|b`, no DIRECT fallback): a first node learns which squid each blob's URL is
/// routed to; then the busier squid is stopped and a second node, with a fresh store, reads every
/// blob, including the ones routed to the stopped squid.
#[test]
fn a_stopped_squid_of_a_group_fails_over_to_the_other() {
    require_fuse!();
    let nginx = Nginx::start();
    let mut squids = [Squid::start(), Squid::start()];
    let group = format!("{}|{}", squids[0].proxy_url(), squids[1].proxy_url());
    let blobs: Vec<Blob> = (0..8)
        .map(|i| nginx.put_random(&format!("fo/blob{i}.bin"), MIB))
        .collect();
    let assets: Vec<Asset> = blobs
        .iter()
        .enumerate()
        .map(|(i, b)| asset_of(&nginx, &format!("fo/{i}"), b))
        .collect();

    let first = node_with(Some(vec![group.clone()]), assets.clone());
    {
        let mut d = first.mount();
        for (i, b) in blobs.iter().enumerate() {
            assert_reads(d.path(&format!("fo/{i}")), b);
        }
        d.stop();
    }
    let served_by = |s: &Squid| -> Vec<String> {
        s.log()
            .into_iter()
            .map(|r| r.url)
            .filter(|u| u.contains("/fo/"))
            .collect()
    };
    let counts = [served_by(&squids[0]).len(), served_by(&squids[1]).len()];
    assert_eq!(
        counts[0] + counts[1],
        blobs.len(),
        "each blob through one squid: {counts:?}"
    );
    let victim = if counts[0] >= counts[1] { 0 } else { 1 };
    let other = 1 - victim;
    let routed_to_victim = served_by(&squids[victim]);
    eprintln!(
        "failover: squid {victim} served {:?} blob(s) to the first node; stopping it",
        routed_to_victim.len()
    );
    squids[victim].stop();

    let second = node_with(Some(vec![group]), assets);
    let mut d = second.mount();
    let started = Instant::now();
    for (i, b) in blobs.iter().enumerate() {
        assert_reads(d.path(&format!("fo/{i}")), b);
    }
    let took = started.elapsed();
    let through_other = served_by(&squids[other]);
    for url in &routed_to_victim {
        assert!(
            through_other.iter().filter(|u| *u == url).count() >= 1,
            "{url} (routed to the stopped squid) was not fetched through the other one"
        );
    }
    assert!(
        took < Duration::from_secs(30),
        "failover took {took:?} for {} blobs",
        blobs.len()
    );
    d.stop();
}

// ---------------------------------------------------------------------------------------------
// Quota

/// Issue 4: "100 MiB quota holds while 300 MiB of assets are read". Twelve 25 MiB assets read one
/// after the other, each verified; after each, `lazycas status --json` reports at most the quota
/// in use and the blob files on disk agree.
#[test]
fn quota_holds_while_300_mib_are_read() {
    require_fuse!();
    const QUOTA: u64 = 100 << 20;
    const N: usize = 12;
    let nginx = Nginx::start();
    let blobs: Vec<Blob> = (0..N)
        .map(|i| nginx.put_random(&format!("q/blob{i}.bin"), 25 * MIB))
        .collect();
    let assets = blobs
        .iter()
        .enumerate()
        .map(|(i, b)| asset_of(&nginx, &format!("q/{i}"), b))
        .collect();
    let node = Lazycas::with_config(Config {
        quota: Some("100M".into()),
        fetch_chunk_size: Some("4M".into()),
        assets,
        ..Config::default()
    });
    let mut d = node.mount();
    let mut max_used = 0;
    let mut max_on_disk = 0;
    for (i, b) in blobs.iter().enumerate() {
        assert_reads(d.path(&format!("q/{i}")), b);
        let used = used_bytes(&node);
        let on_disk: u64 = node
            .stored_blobs()
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        max_used = max_used.max(used);
        max_on_disk = max_on_disk.max(on_disk);
        assert!(
            used <= QUOTA,
            "after reading asset {i}: status says {used} bytes used > quota {QUOTA}"
        );
        assert!(
            on_disk <= QUOTA,
            "after reading asset {i}: {on_disk} bytes of blobs on disk > quota"
        );
    }
    // The blob just read is the most recently used: it stays, and reading it again is free.
    let before = nginx.log().total_bytes();
    assert_reads(d.path(&format!("q/{}", N - 1)), &blobs[N - 1]);
    assert_eq!(
        nginx.log().total_bytes(),
        before,
        "the last blob was evicted instead of older ones"
    );
    // An evicted asset is fetched again, verified, and reads fine.
    assert_reads(d.path("q/0"), &blobs[0]);
    let status = status_json(&node);
    let log = strip_ansi(&d.log());
    let evictions: u64 = log
        .lines()
        .filter(|l| l.contains("evicted least-recently-used content"))
        .filter_map(|l| field(l, "blobs="))
        .sum();
    let read_total = (N as u64 + 1) * 25 * MIB as u64;
    eprintln!(
        "FIGURE quota run: quota 100 MiB, {} MiB read in {} assets of 25 MiB; max used (status --json) {:.1} MiB, max blob bytes on disk {:.1} MiB; {} blobs evicted; now {} blobs, {} bytes used; origin served {:.1} MiB",
        read_total >> 20,
        N + 1,
        max_used as f64 / MIB as f64,
        max_on_disk as f64 / MIB as f64,
        evictions,
        status["blobs"],
        status["used_bytes"],
        nginx.log().total_bytes() as f64 / MIB as f64
    );
    assert!(
        evictions >= (N as u64) - 4,
        "expected LRU evictions, the log shows {evictions}"
    );
    assert_eq!(status["quota_bytes"].as_u64(), Some(QUOTA));
    d.stop();
}

/// `text` without ANSI colour sequences (the daemon colours its log fields).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `KEY=VALUE` from a log line, as a number.
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// "An open blob is never evicted": a file held open through the mount survives eviction
/// passes that would otherwise remove it first (it is the least recently used).
#[test]
fn an_open_blob_is_never_evicted() {
    require_fuse!();
    let nginx = Nginx::start();
    let blobs: Vec<Blob> = (0..4)
        .map(|i| nginx.put_random(&format!("open/blob{i}.bin"), 15 * MIB))
        .collect();
    let assets = blobs
        .iter()
        .enumerate()
        .map(|(i, b)| asset_of(&nginx, &format!("open/{i}"), b))
        .collect();
    let node = Lazycas::with_config(Config {
        quota: Some("32M".into()),
        assets,
        ..Config::default()
    });
    let mut d = node.mount();
    let held_path = d.path("open/0");
    let mut held = with_deadline(READ_DEADLINE, "opening open/0", move || {
        fs::File::open(held_path)
    })
    .expect("open open/0");
    for (i, b) in blobs.iter().enumerate().skip(1) {
        assert_reads(d.path(&format!("open/{i}")), b);
        assert!(
            node.blob_path(&blobs[0].sha256).exists(),
            "the open blob was evicted after reading asset {i}"
        );
    }
    let mut got = Vec::new();
    held.read_to_end(&mut got).expect("read the held file");
    assert_eq!(sha256_hex(&got), blobs[0].sha256);
    drop(held);
    assert!(used_bytes(&node) <= 32 << 20);
    d.stop();
}

/// `lazycas pull` pins (a pinned blob is never evicted); `lazycas gc --to` evicts the rest now.
#[test]
fn gc_evicts_unpinned_content_and_keeps_pulled_content() {
    require_fuse!();
    let nginx = Nginx::start();
    let pinned = nginx.put_random("gc/pinned.bin", 2 * MIB);
    let loose = nginx.put_random("gc/loose.bin", 3 * MIB);
    let node = node_with(
        None,
        vec![
            asset_of(&nginx, "gc/pinned", &pinned),
            asset_of(&nginx, "gc/loose", &loose),
        ],
    );
    node.cli(&["pull", "gc/pinned"]).assert_success();
    // A read through the mount stores without pinning.
    {
        let mut d = node.mount();
        assert_reads(d.path("gc/loose"), &loose);
        d.stop();
    }
    let before = status_json(&node);
    assert_eq!(before["blobs"].as_u64(), Some(2), "{before}");
    assert_eq!(
        before["pinned_bytes"].as_u64(),
        Some(pinned.len()),
        "{before}"
    );
    let out = node.cli(&["gc", "--to", "0"]);
    out.assert_success();
    let after = status_json(&node);
    assert_eq!(
        after["blobs"].as_u64(),
        Some(1),
        "gc --to 0 must leave only the pinned blob: {after}\n{out}"
    );
    assert!(node.blob_path(&pinned.sha256).exists());
    assert!(!node.blob_path(&loose.sha256).exists());
}

// ---------------------------------------------------------------------------------------------
// Offline

/// "Offline: with no source answering, cached content serves and uncached content fails fast."
/// The node's site proxy is unreachable and the origin is stopped.
#[test]
fn offline_node_serves_its_cache_and_fails_uncached_reads_fast() {
    require_fuse!();
    const TIMEOUT_SECS: u64 = 3;
    let mut nginx = Nginx::start();
    let cached = nginx.put_random("off/cached.bin", 3 * MIB);
    let uncached = nginx.put_random("off/uncached.bin", 3 * MIB);
    let node = Lazycas::with_config(Config {
        timeout_secs: Some(TIMEOUT_SECS),
        proxies: Some(vec![
            closed_port_url("").trim_end_matches('/').to_string(),
            "DIRECT".into(),
        ]),
        assets: vec![
            asset_of(&nginx, "off/cached", &cached),
            asset_of(&nginx, "off/uncached", &uncached),
        ],
        ..Config::default()
    });
    {
        let mut d = node.mount();
        assert_reads(d.path("off/cached"), &cached);
        d.stop();
    }
    nginx.stop();
    // A fresh daemon (no page cache of ours in play): the cached asset serves from the store.
    let mut d = node.mount();
    assert_reads(d.path("off/cached"), &cached);
    let path = d.path("off/uncached");
    let started = Instant::now();
    let result = read(path);
    let took = started.elapsed();
    match result {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
        other => panic!("an uncached read with no source must fail with EIO, got {other:?}"),
    }
    let bound = Duration::from_secs(TIMEOUT_SECS) + Duration::from_secs(5);
    eprintln!("FIGURE offline: uncached read failed with EIO after {took:?} (timeout_secs = {TIMEOUT_SECS})");
    assert!(
        took <= bound,
        "the uncached read took {took:?} to fail (bound {bound:?})"
    );
    // The cached asset still serves after the failure.
    assert_reads(d.path("off/cached"), &cached);
    d.stop();
}

// ---------------------------------------------------------------------------------------------
// Integrity

/// "A daemon killed with SIGKILL mid-download restarts into a consistent store (no partial blob
/// shown as complete, temp files cleaned)". The origin is throttled so the kill lands while the
/// blob is being written to `tmp/`.
#[test]
fn sigkill_mid_download_then_restart_leaves_a_consistent_store() {
    require_fuse!();
    let nginx = Nginx::start_with("location /slow/ { limit_rate 1m; }");
    let blob = nginx.put_random("slow/big.bin", 16 * MIB);
    let node = node_with(None, vec![asset_of(&nginx, "big", &blob)]);
    let mut killed = node.mount();
    let path = killed.path("big");
    let reader = std::thread::spawn(move || fs::read(path));
    let partial = wait_until(Duration::from_secs(30), || {
        node.temp_files()
            .iter()
            .any(|p| fs::metadata(p).is_ok_and(|m| m.len() > 0))
    });
    assert!(
        partial,
        "no download in progress appeared in tmp/:\n{}",
        killed.log()
    );
    let tmp_before: Vec<(PathBuf, u64)> = node
        .temp_files()
        .into_iter()
        .map(|p| {
            let n = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, n)
        })
        .collect();
    killed.signal(libc::SIGKILL);
    assert!(wait_until(Duration::from_secs(10), || !killed.is_running()));
    let outcome = reader.join().expect("reader thread");
    assert!(
        outcome.is_err(),
        "the read cannot have completed: the download was cut off"
    );
    eprintln!(
        "killed mid-download; tmp/ held {tmp_before:?} of {} bytes",
        blob.len()
    );
    assert!(
        tmp_before.iter().all(|(_, n)| *n < blob.len()),
        "the kill came too late: {tmp_before:?}"
    );
    assert!(
        !node.blob_path(&blob.sha256).exists(),
        "a partial blob is in blobs/"
    );
    assert!(
        node.stored_blobs().is_empty(),
        "blobs/ holds {:?}",
        node.stored_blobs()
    );
    // The dead daemon left its mount behind (as a crash does); the restart must clear it.
    let stale = fs::metadata(&node.mountpoint);
    assert_eq!(
        stale.as_ref().err().and_then(|e| e.raw_os_error()),
        Some(libc::ENOTCONN),
        "expected a stale mount after SIGKILL, got {stale:?}"
    );

    let mut notify = NotifySocket::bind();
    let notify_path = notify.path().to_string_lossy().into_owned();
    let mut restarted = node.spawn(&[("NOTIFY_SOCKET", &notify_path)]);
    let mountpoint = node.mountpoint.clone();
    let answered = notify.wait_for("READY=1", Duration::from_secs(30), || {
        fs::metadata(&mountpoint).map(|m| m.ino())
    });
    assert!(
        matches!(answered, Some(Ok(1))),
        "after the restart the mount must answer (root inode 1): {answered:?}\n{}",
        restarted.log()
    );
    assert!(
        node.temp_files().is_empty(),
        "temp files survived the restart: {:?}",
        node.temp_files()
    );
    assert!(!node.blob_path(&blob.sha256).exists());
    let status = status_json(&node);
    assert_eq!(
        status["blobs"].as_u64(),
        Some(0),
        "the database lists a blob: {status}"
    );
    let verify = node.cli(&["verify"]);
    verify.assert_success();
    assert_reads(restarted.path("big"), &blob);
    let verify = node.cli(&["verify"]);
    verify.assert_success();
    assert!(verify.stdout.contains("1 blobs ok"), "{verify}");
    restarted.stop();
    drop(killed);
}

/// `lazycas verify` quarantines a blob whose bytes were damaged on disk, and the asset is then
/// fetched again and reads fine.
#[test]
fn verify_quarantines_a_damaged_blob() {
    require_fuse!();
    let nginx = Nginx::start();
    let blob = nginx.put_random("v/blob.bin", 2 * MIB);
    let node = node_with(None, vec![asset_of(&nginx, "v", &blob)]);
    node.cli(&["pull", "v"]).assert_success();
    let stored = node.blob_path(&blob.sha256);
    let mut perm = fs::metadata(&stored).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o644);
    fs::set_permissions(&stored, perm).unwrap();
    let mut bytes = fs::read(&stored).unwrap();
    bytes[12345] ^= 0xff;
    fs::write(&stored, bytes).unwrap();
    let out = node.cli(&["verify"]);
    out.assert_code(1);
    assert!(out.stdout.contains("1 quarantined"), "{out}");
    assert!(!stored.exists());
    assert!(node.store.join("quarantine").join(&blob.sha256).exists());
    let mut d = node.mount();
    assert_reads(d.path("v"), &blob);
    d.stop();
}

// ---------------------------------------------------------------------------------------------
// systemd

/// "A sd_notify socket in the test receives READY=1 only after the mount answers." The moment
/// READY=1 is read, the mount point must be in /proc/mounts and `stat` must answer from the FUSE
/// root. Then SIGHUP gives RELOADING=1 and READY=1 again, and SIGTERM gives STOPPING=1 and a
/// clean unmount.
#[test]
fn ready_is_sent_only_once_the_mount_answers() {
    require_fuse!();
    let node = Lazycas::new();
    let mut notify = NotifySocket::bind();
    let notify_path = notify.path().to_string_lossy().into_owned();
    let mut d = node.spawn(&[("NOTIFY_SOCKET", &notify_path)]);
    let mountpoint = node.mountpoint.clone();
    let at_ready = notify.wait_for("READY=1", Duration::from_secs(30), || {
        let mounted = is_mounted(&mountpoint);
        let stat = fs::metadata(&mountpoint).map(|m| (m.ino(), m.is_dir()));
        (mounted, stat)
    });
    let Some((mounted, stat)) = at_ready else {
        panic!(
            "no READY=1 within 30 s; got {:?}\n{}",
            notify.received(),
            d.log()
        );
    };
    assert!(
        mounted,
        "READY=1 arrived before the mount was in /proc/mounts"
    );
    assert!(
        matches!(stat, Ok((1, true))),
        "READY=1 arrived before the mount answered stat (root inode 1): {stat:?}"
    );
    assert!(
        notify.received().iter().any(|l| l.starts_with("STATUS=")),
        "no STATUS= line: {:?}",
        notify.received()
    );
    d.signal(libc::SIGHUP);
    assert!(
        notify
            .wait_for("RELOADING=1", Duration::from_secs(10), || ())
            .is_some(),
        "no RELOADING=1 after SIGHUP: {:?}",
        notify.received()
    );
    assert!(
        notify
            .wait_for("READY=1", Duration::from_secs(10), || ())
            .is_some(),
        "no READY=1 after the reload: {:?}",
        notify.received()
    );
    d.signal(libc::SIGTERM);
    assert!(
        notify
            .wait_for("STOPPING=1", Duration::from_secs(10), || ())
            .is_some(),
        "no STOPPING=1 on SIGTERM: {:?}",
        notify.received()
    );
    d.stop();
}

/// "SIGHUP reloads the config and catalog": an `[[asset]]` written into the config file of a
/// running daemon appears after SIGHUP (not before); a broken config file on SIGHUP keeps the
/// old config serving.
#[test]
fn sighup_picks_up_a_new_asset() {
    require_fuse!();
    let nginx = Nginx::start();
    let first = nginx.put_random("hup/first.bin", MIB);
    let second = nginx.put_random("hup/second.bin", 2 * MIB);
    let mut node = node_with(None, vec![asset_of(&nginx, "hup/first", &first)]);
    let mut d = node.mount();
    assert_reads(d.path("hup/first"), &first);
    node.add_asset(asset_of(&nginx, "hup/second", &second));
    assert!(
        !d.path("hup/second").exists(),
        "the new asset showed before SIGHUP: the config file is read on reload"
    );
    d.signal(libc::SIGHUP);
    let path = d.path("hup/second");
    assert!(
        wait_until(Duration::from_secs(10), || path.exists()),
        "hup/second did not appear within 10 s of SIGHUP:\n{}",
        d.log()
    );
    assert_reads(d.path("hup/second"), &second);

    fs::write(&node.config_path, "this is = not [valid toml\n").unwrap();
    d.signal(libc::SIGHUP);
    assert!(
        d.wait_for_log("keeping the old config", Duration::from_secs(10)),
        "a broken config on SIGHUP must be refused with a log line:\n{}",
        d.log()
    );
    assert!(
        d.is_running(),
        "a broken config on SIGHUP killed the daemon"
    );
    assert_reads(d.path("hup/first"), &first);
    assert_reads(d.path("hup/second"), &second);
    node.write_config();
    d.stop();
}

/// The shipped unit passes `systemd-analyze verify` (with ExecStart pointed at the binary under
/// test, since /usr/local/bin/lazycas is not installed here) and keeps the contract.
#[test]
fn shipped_unit_passes_systemd_analyze_verify() {
    let unit_path = shipped_file("lazycas.service");
    let unit = fs::read_to_string(&unit_path).expect("read systemd/lazycas.service");
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/lazycas mount /containers --config /etc/lazycas/lazycas.toml",
        "ExecReload=/usr/local/bin/lazycas reload --pid $MAINPID --config /etc/lazycas/lazycas.toml",
        "KillSignal=SIGTERM",
        "Restart=on-failure",
        "DeviceAllow=/dev/fuse rw",
        "CapabilityBoundingSet=CAP_SYS_ADMIN",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == line),
            "the unit lacks `{line}`"
        );
    }
    // A private mount namespace would hide the FUSE mount from the rest of the node.
    for hidden in [
        "ProtectSystem=",
        "ProtectHome=",
        "PrivateTmp=",
        "PrivateDevices=",
        "PrivateMounts=",
        "ReadWritePaths=",
        "ReadOnlyPaths=",
        "ProtectKernelTunables=",
        "ProtectControlGroups=",
        "TemporaryFileSystem=",
    ] {
        assert!(
            !unit.lines().any(|l| l.trim_start().starts_with(hidden)),
            "`{hidden}` gives the service its own mount namespace: the mount would be invisible"
        );
    }
    let analyze = process::require_program("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("lazycas.service");
    let bin = common::lazycas::lazycas_bin();
    fs::write(
        &copy,
        unit.replace("/usr/local/bin/lazycas", &bin.to_string_lossy()),
    )
    .unwrap();
    let mut cmd = Command::new(analyze);
    cmd.arg("verify").arg(&copy).env("SYSTEMD_LOG_COLOR", "0");
    let out = run(cmd, Duration::from_secs(60));
    assert!(
        out.success() && !out.stderr.contains(&copy.display().to_string()),
        "systemd-analyze verify found problems: {out}"
    );
}

/// The shipped example config is valid (`lazycas ls` loads it).
#[test]
fn shipped_example_config_parses() {
    let store = tempfile::tempdir().unwrap();
    let node = Lazycas::new();
    let config = shipped_file("lazycas.toml");
    let out = node.cli_raw(&[
        "ls",
        "--config",
        &config.to_string_lossy(),
        "--store",
        &store.path().to_string_lossy(),
    ]);
    out.assert_success();
}

/// The shipped squid settings are accepted by Debian's squid (`squid -k parse`), as the drop-in
/// they are meant to be.
#[test]
fn shipped_squid_settings_parse() {
    let squid = process::require_program("squid", "squid");
    let dir = tempfile::tempdir().unwrap();
    let shipped = fs::read_to_string(shipped_file("squid-lazycas.conf")).unwrap();
    let dropin = dir.path().join("lazycas.conf");
    let spool = dir.path().join("spool");
    fs::write(
        &dropin,
        shipped.replace("/var/spool/squid", &spool.to_string_lossy()),
    )
    .unwrap();
    let main = dir.path().join("squid.conf");
    fs::write(
        &main,
        format!(
            "http_port 127.0.0.1:{}\npid_filename {}/squid.pid\ncache_log {}/cache.log\ninclude {}\n",
            process::free_port(),
            dir.path().display(),
            dir.path().display(),
            dropin.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(squid);
    cmd.arg("-k").arg("parse").arg("-f").arg(&main);
    let out = run(cmd, Duration::from_secs(30));
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(out.success(), "squid -k parse failed: {out}");
    for bad in ["FATAL", "ERROR", "UNRECOGNIZED", "Bungled"] {
        assert!(!text.contains(bad), "squid -k parse complained: {text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Unprivileged use

/// Why `lazycas mount` cannot be tried as `nobody` here, or None if it can.
fn unprivileged_mount_unavailable() -> Option<String> {
    let fuse_mode = fs::metadata("/dev/fuse").map_or(0, |m| m.mode() & 0o777);
    let missing: Vec<&str> = ["setpriv", "fusermount3"]
        .into_iter()
        .filter(|p| process::find_program(p).is_none())
        .collect();
    if !is_root() || fuse_mode & 0o006 != 0o006 || !missing.is_empty() {
        return Some(format!(
            "needs root to become nobody (root: {}), setpriv and fusermount3 (missing: {missing:?}) \
             and a world-usable /dev/fuse (mode {fuse_mode:o})",
            is_root()
        ));
    }
    None
}

/// "Non-root `lazycas mount` works where `fusermount3` is available (store under
/// `$XDG_CACHE_HOME`)". The daemon runs as `nobody` with a config that names no store; it mounts
/// through the setuid fusermount3, stores under `$XDG_CACHE_HOME/lazycas`, serves reads to its
/// user, and unmounts on SIGTERM. Needs root (to become `nobody`), `setpriv`, and a /dev/fuse
/// that every user may open, as udev sets it up (mode 0666); skipped otherwise (a failure with
/// `LAZYCAS_TESTS_REQUIRE_FUSE=1`).
#[test]
fn unprivileged_mount_uses_fusermount3_and_the_xdg_cache() {
    require_fuse!(unprivileged_mount_unavailable());
    use std::os::unix::fs::PermissionsExt;
    const NOBODY: u32 = 65534;
    let setpriv = process::require_program("setpriv", "util-linux");
    let as_nobody = |program: &Path| {
        let mut cmd = Command::new(&setpriv);
        cmd.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .arg(program);
        cmd
    };
    let nginx = Nginx::start();
    let blob = nginx.put_random("user/blob.bin", 2 * MIB);
    let node = Lazycas::new();
    // A config without `store`: the default for a non-root user is $XDG_CACHE_HOME/lazycas.
    let config = format!(
        "timeout_secs = 10\n\n[[asset]]\nname = \"user/blob\"\nurl = \"{}\"\nsha256 = \"{}\"\n",
        nginx.url_of(&blob),
        blob.sha256
    );
    fs::write(&node.config_path, config).unwrap();
    let bin = node.root.join("lazycas");
    fs::copy(common::lazycas::lazycas_bin(), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let xdg = node.root.join("xdg-cache");
    let mut chown = Command::new("chown");
    chown
        .arg("-R")
        .arg(format!("{NOBODY}:{NOBODY}"))
        .arg(&node.root);
    run(chown, Duration::from_secs(30)).assert_success();

    let mut cmd = as_nobody(&bin);
    cmd.arg("mount")
        .arg(&node.mountpoint)
        .arg("--config")
        .arg(&node.config_path)
        .current_dir(&node.root)
        .env("XDG_CACHE_HOME", &xdg)
        .env("HOME", &node.root)
        .env("NO_COLOR", "1");
    let mut daemon = process::Proc::spawn(
        "lazycas mount (as nobody)",
        cmd,
        &node.root.join("daemon.log"),
    );
    let mountpoint = node.mountpoint.clone();
    let mounted = wait_until(Duration::from_secs(30), || {
        is_mounted(&mountpoint) || !daemon.is_running()
    });
    assert!(
        mounted && is_mounted(&mountpoint),
        "an unprivileged lazycas mount did not come up:\n{}",
        daemon.log()
    );
    let entry = mounts::mount_entry(&mountpoint).unwrap_or_default();
    assert!(
        entry.contains(&format!("user_id={NOBODY}")),
        "not a user mount: {entry}"
    );

    let mut sum = as_nobody(Path::new("/usr/bin/sha256sum"));
    sum.arg(mountpoint.join("user/blob"));
    let out = run(sum, READ_DEADLINE);
    assert!(
        out.success() && out.stdout.starts_with(&blob.sha256),
        "nobody could not read its mount: {out}\n{}",
        daemon.log()
    );
    let stored = xdg
        .join("lazycas/blobs/sha256")
        .join(&blob.sha256[..2])
        .join(&blob.sha256);
    assert!(
        stored.exists(),
        "the blob is not under $XDG_CACHE_HOME/lazycas:\n{}",
        daemon.log()
    );
    assert_eq!(fs::metadata(&stored).unwrap().uid(), NOBODY);

    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_timeout(process::GRACE);
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after SIGTERM: {status:?}\n{}",
        daemon.log()
    );
    assert!(!is_mounted(&mountpoint), "the user mount was left behind");
    unmount(&mountpoint);
}

// ---------------------------------------------------------------------------------------------
// The demo

/// "`lazycas demo` exits 0": it mounts, shows the lazy fetch and the verified read, and cleans
/// up (no mount left, its temporary directory gone).
#[test]
fn demo_exits_0_and_cleans_up() {
    require_fuse!();
    let node = Lazycas::new();
    let out = node.cli_raw(&["demo"]);
    out.assert_success();
    for needle in [
        "origin so far: 0 requests",
        "= the pinned digest",
        "origin: +0 requests, +0 bytes",
        "user.lazycas.digest = sha256:",
        "a reader never sees unverified bytes",
        "temporary directory removed",
    ] {
        assert!(
            out.stdout.contains(needle),
            "demo output lacks {needle:?}:\n{out}"
        );
    }
    let work = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("working in "))
        .and_then(|l| l.split(' ').next())
        .map(PathBuf::from)
        .expect("the demo names its working directory");
    assert!(!work.exists(), "{} was left behind", work.display());
    assert!(!is_mounted(&work.join("mnt")));
}
