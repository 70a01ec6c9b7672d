//! Remote origins beside a local one, on loopback: S3 (moto) and SFTP
//! (OpenSSH's sshd), started here.
//!
//! Prints, for one generated library (`make-library.py --tracks N --seed 11
//! --big 1 --big-mb M`, cached in the work directory):
//!
//! - first scan: files/s for `scan_local`, and for `scan_remote` over S3 and
//!   SFTP with the bytes and requests fetched per audio file for tags;
//! - first-read throughput of the largest file (about 179 MB with the
//!   default 256 MiB of FLAC input) through each origin's `read_at` in
//!   1 MiB pieces, one after the other, as the daemon's fetches do (the
//!   local one after dropping the page cache, when allowed).
//!
//! Loopback figures: they measure the clients' overhead (moto, a Python
//! server, is the slowest part of the S3 path), not a network.
//!
//!   cargo run --release -p musicfs --example remote_bench -- [--tracks N]
//!       [--big-mb M] [--seconds S] [--work DIR]

use musicfs::library::remote_scan::{RemoteScanOptions, scan_remote};
use musicfs::library::scan::{NoProgress, ScanOptions, ScanReport, scan_local};
use musicfs::origin::{LocalOrigin, Origin, RemoteOrigin, S3Origin, SftpOrigin};
use musicfs_core::{FileVersion, OriginId, OriginPath};
use musicfs_tests::corpus::Library;
use musicfs_tests::servers::{MotoServer, Sshd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

struct Args {
    tracks: usize,
    big_mb: usize,
    seconds: String,
    work: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        tracks: 2000,
        big_mb: 256,
        seconds: "1.5".into(),
        work: std::env::temp_dir().join("musicfs-remote-bench"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--tracks" => a.tracks = value.parse().expect("--tracks N"),
            "--big-mb" => a.big_mb = value.parse().expect("--big-mb M"),
            "--seconds" => a.seconds = value,
            "--work" => a.work = PathBuf::from(value),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn library(a: &Args) -> Library {
    let dir = a
        .work
        .join(format!("lib-{}-{}-{}", a.tracks, a.big_mb, a.seconds));
    let manifest = dir.join("lib.manifest.jsonl");
    if manifest.exists() {
        return Library::open(&dir.join("lib"), &manifest);
    }
    std::fs::create_dir_all(&dir).expect("work dir");
    eprintln!("generating the library in {} ...", dir.display());
    Library::generate(
        &dir,
        &[
            "--tracks",
            &a.tracks.to_string(),
            "--seed",
            "11",
            "--big",
            "1",
            "--big-mb",
            &a.big_mb.to_string(),
            "--seconds",
            &a.seconds,
        ],
    )
}

fn scan_line(what: &str, r: &ScanReport) {
    let files = r.tracks + r.covers + r.unreadable + r.skipped_other;
    let secs = r.elapsed.as_secs_f64();
    let audio = (r.tracks + r.unreadable).max(1) as f64;
    let fetched = if r.fetch_requests > 0 {
        format!(
            "  {:>6.1} KiB/file for tags, {:.2} requests/file",
            r.bytes_fetched as f64 / 1024.0 / audio,
            r.fetch_requests as f64 / audio
        )
    } else {
        String::new()
    };
    println!(
        "{what:<24} {files:>6} files in {secs:>6.2} s  {:>7.0} files/s{fetched}",
        files as f64 / secs
    );
}

fn drop_caches() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// Reads the whole file through `origin` in 1 MiB pieces; MB/s.
fn first_read(
    rt: &tokio::runtime::Runtime,
    origin: &dyn Origin,
    path: &OriginPath,
    v: &FileVersion,
) -> f64 {
    let started = Instant::now();
    let mut pos = 0u64;
    while pos < v.size {
        let data = rt
            .block_on(origin.read_at(path, v, pos, 1 << 20))
            .unwrap_or_else(|e| panic!("{}: read at {pos}: {e}", origin.describe()));
        assert!(!data.is_empty());
        pos += data.len() as u64;
    }
    v.size as f64 / 1e6 / started.elapsed().as_secs_f64()
}

fn main() {
    let a = args();
    let lib = library(&a);
    let root = lib.root.clone();
    let files = musicfs_tests::files_under(&root);
    let total: u64 = lib.manifest.iter().map(|m| m.size).sum();
    let audio_files = lib.tracks().count();
    let (big_rel, big_size) = lib
        .manifest
        .iter()
        .max_by_key(|m| m.size)
        .map(|m| (m.path.clone(), m.size))
        .expect("a non-empty library");
    println!(
        "library: {} files ({audio_files} tracks), {:.1} MB, {:.1} KiB per track on average; largest {big_rel} ({:.1} MB)",
        files.len(),
        total as f64 / 1e6,
        (total - big_size) as f64 / 1024.0 / (audio_files.max(2) - 1) as f64,
        big_size as f64 / 1e6
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    eprintln!("starting moto and uploading ...");
    let moto = MotoServer::start();
    moto.create_bucket("music");
    let t = Instant::now();
    moto.upload_dir("music", "lib", &root);
    eprintln!("uploaded in {:.1} s", t.elapsed().as_secs_f64());
    let sshd = Sshd::start();

    println!("\nfirst scan (tags of every file):");
    drop_caches();
    let local =
        scan_local(OriginId(0), &root, &ScanOptions::default(), &NoProgress).expect("local scan");
    scan_line("local (scan_local)", &local);
    let s3: Arc<dyn RemoteOrigin> =
        Arc::new(S3Origin::new(OriginId(1), moto.s3_config("music", "lib", None)).expect("s3"));
    let report = rt
        .block_on(scan_remote(
            OriginId(1),
            Arc::clone(&s3),
            &RemoteScanOptions::default(),
            &NoProgress,
        ))
        .expect("s3 scan");
    assert_eq!(report.tracks, local.tracks, "s3 scan found other tracks");
    scan_line("s3 (moto, loopback)", &report);
    drop_caches();
    let sftp: Arc<dyn RemoteOrigin> =
        Arc::new(SftpOrigin::new(OriginId(2), sshd.sftp_config(&root, None)));
    let report = rt
        .block_on(scan_remote(
            OriginId(2),
            Arc::clone(&sftp),
            &RemoteScanOptions::default(),
            &NoProgress,
        ))
        .expect("sftp scan");
    assert_eq!(report.tracks, local.tracks, "sftp scan found other tracks");
    scan_line("sftp (sshd, loopback)", &report);

    println!(
        "\nfirst read of {big_rel} ({:.1} MB), 1 MiB pieces in sequence:",
        big_size as f64 / 1e6
    );
    let path = OriginPath::new(big_rel.as_bytes());
    let local_origin = LocalOrigin::new(OriginId(0), root.clone());
    let meta = std::fs::metadata(root.join(Path::new(&big_rel))).expect("big file");
    let local_version = musicfs::origin::path::file_version(&meta);
    let cold = drop_caches();
    let mbps = first_read(&rt, &local_origin, &path, &local_version);
    println!(
        "{:<24} {mbps:>8.0} MB/s{}",
        "local",
        if cold {
            " (page cache dropped)"
        } else {
            " (page cache NOT dropped: not root?)"
        }
    );
    let v = rt.block_on(s3.stat(&path)).expect("s3 stat");
    println!(
        "{:<24} {:>8.0} MB/s (moto copies the whole object for every GET)",
        "s3 (moto, loopback)",
        first_read(&rt, s3.as_ref(), &path, &v)
    );
    // moto copies the whole object for every GET, ranged or not (its
    // FakeKey.value), so a big object's 1 MiB reads measure moto. The same
    // reads of an 8 MiB object show what the client itself costs.
    moto.put("music", "lib/probe/8mib.bin", vec![7u8; 8 << 20]);
    let probe = OriginPath::new(&b"probe/8mib.bin"[..]);
    let pv = rt.block_on(s3.stat(&probe)).expect("s3 stat");
    let started = Instant::now();
    for i in 0..64u64 {
        let data = rt
            .block_on(s3.read_at(&probe, &pv, (i % 8) << 20, 1 << 20))
            .expect("probe read");
        assert_eq!(data.len(), 1 << 20);
    }
    println!(
        "{:<24} {:>8.0} MB/s (1 MiB reads of an 8 MiB object: moto's per-GET copy is small)",
        "s3 (moto, loopback)",
        64.0 * 1.048_576 / started.elapsed().as_secs_f64()
    );
    drop_caches();
    let v = rt.block_on(sftp.stat(&path)).expect("sftp stat");
    println!(
        "{:<24} {:>8.0} MB/s",
        "sftp (sshd, loopback)",
        first_read(&rt, sftp.as_ref(), &path, &v)
    );
}
