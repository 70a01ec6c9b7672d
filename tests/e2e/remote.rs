//! End to end with remote origins: the real `musicfs` binary mounts an S3
//! bucket (moto's server) and an SFTP server (OpenSSH's sshd) holding
//! mirrors of one generated library, both on loopback, started here.
//!
//! One story, in order, because each step needs the state the one before
//! left: every track appears once (mirrors merge) and reads byte-identical;
//! the SFTP server is killed in the middle of a read and the read carries on
//! from S3; then S3 dies too, and the cached tracks still play while an
//! uncached one fails with EIO within the read timeout, never a hang, and
//! `musicfs status` says both origins are down.

use musicfs_tests::corpus::Library;
use musicfs_tests::fixtures::write_wav;
use musicfs_tests::mount::{MountCommand, Mounted, control_ok};
use musicfs_tests::proxy::{Fault, FaultProxy};
use musicfs_tests::servers::{MotoServer, Sshd};
use musicfs_tests::{files_under, sha256_bytes, sha256_file, wait_for};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");
const BUCKET: &str = "music";
const SECRET: &str = "musicfs-e2e-secret-never-shown";
/// The daemon's read timeout in this test (seconds).
const READ_TIMEOUT: u64 = 8;
/// The big track read while its server dies.
const BIG: &str = "big/Long Take.wav";
const BIG_BYTES: usize = 40 << 20;

/// Cover art, or another file shown beside the tracks (the generated
/// library's playlist in `Playlists/`): not a track.
fn is_cover(p: &Path) -> bool {
    p.starts_with("Playlists")
        || p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "jpg" | "jpeg" | "png" | "lrc" | "txt" | "cue"))
}

/// `musicfs status --json` of the mount.
fn status(mountpoint: &Path) -> serde_json::Value {
    let out = control_ok(Path::new(BIN), &["status", "--json"], mountpoint);
    serde_json::from_str(&out).expect("status is JSON")
}

fn health(doc: &serde_json::Value, id: usize) -> String {
    doc["origins"][id]["health"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn mirrors_on_s3_and_sftp_survive_their_servers_dying() {
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::generate(
        &dir.path().join("gen"),
        &["--tracks", "24", "--seed", "11", "--edge-cases"],
    );
    // One track big enough to be read while its server dies.
    write_wav(
        &lib.root.join(BIG),
        BIG_BYTES,
        77,
        "Long Take",
        "Slow Band",
        "Patience",
    );
    // And one longer than the head and tail the first scan keeps, kept
    // back uncached until every origin is gone.
    write_wav(
        &lib.root.join("big/Held Back.wav"),
        3 << 20,
        78,
        "Held Back",
        "Slow Band",
        "Patience",
    );
    let held_sha = sha256_file(&lib.root.join("big/Held Back.wav")).unwrap();
    let big_sha = sha256_file(&lib.root.join(BIG)).unwrap();
    let big_len = std::fs::metadata(lib.root.join(BIG)).unwrap().len() as usize;

    // The same files on both servers.
    let mut moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    let uploaded = moto.upload_dir(BUCKET, "lib", &lib.root);
    assert_eq!(uploaded, files_under(&lib.root).len());
    let mut sshd = Sshd::start();
    let sftp_root = lib.root.canonicalize().unwrap();
    // The SFTP server is reached through a TCP fault proxy, to slow it
    // down so that it dies in the middle of a read.
    let proxy = FaultProxy::start(sshd.addr());

    let sftp_url = format!(
        "sftp://{}@127.0.0.1:{}{}?key={}&known_hosts={}&ssh_config={},name=nas",
        sshd.user(),
        proxy.port(),
        sftp_root.display(),
        sshd.user_key().display(),
        sshd.known_hosts(&[proxy.port()]).display(),
        sshd.ssh_config().display(),
    );
    let s3_url = format!(
        "s3://{BUCKET}/lib?endpoint={}&region=us-east-1,name=bucket,priority=1",
        moto.endpoint()
    );
    let path = |p: &str| dir.path().join(p);
    // S3 is listed first but priority 1 puts the SFTP server first.
    let command = |log: &str| {
        MountCommand::new(
            Path::new(BIN),
            &[],
            &path("cache"),
            &path("mnt"),
            &path(log),
        )
        .args(["--origin", &s3_url, "--origin", &sftp_url])
        .args(["--read-timeout", &READ_TIMEOUT.to_string()])
        .env("AWS_ACCESS_KEY_ID", "AKIAMUSICFSE2E00001")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
    };
    let m: Mounted = command("log").start(Duration::from_secs(120));
    let mnt = m.mountpoint.clone();

    // Every track once (each is on both servers: mirrors), under
    // Artist/Album/Track.
    let files: Vec<PathBuf> = files_under(&mnt);
    let tracks: Vec<&PathBuf> = files.iter().filter(|p| !is_cover(p)).collect();
    let mut want: HashMap<String, usize> = HashMap::new();
    for t in lib.tracks() {
        *want.entry(t.sha256.clone()).or_default() += 1;
    }
    *want.entry(big_sha.clone()).or_default() += 1;
    *want.entry(held_sha).or_default() += 1;
    assert_eq!(
        tracks.len(),
        want.values().sum::<usize>(),
        "each track once: {tracks:#?}"
    );
    let big = mnt.join("Slow Band/Patience/00 - Long Take.wav");
    assert!(big.is_file(), "the big track is in the tree");
    // What a media server reads to scan each track, its first 128 KiB and
    // last 4 KiB, the first scan read already: neither server is asked.
    for rel in &tracks {
        let mut f = std::fs::File::open(mnt.join(rel)).unwrap();
        let len = f.metadata().unwrap().len();
        let mut head = vec![0; len.min(128 << 10) as usize];
        f.read_exact(&mut head).unwrap();
        let mut tail = vec![0; len.min(4096) as usize];
        f.seek(SeekFrom::End(-(tail.len() as i64))).unwrap();
        f.read_exact(&mut tail).unwrap();
    }
    let st = status(&mnt);
    for origin in 0..2 {
        assert_eq!(st["origins"][origin]["requests"], 0, "{st}");
    }
    assert_eq!(
        st["origins"][0]["origin"]
            .as_str()
            .map(|s| s.starts_with("nas (sftp://")),
        Some(true),
        "{st}"
    );
    assert_eq!(
        st["origins"][1]["origin"]
            .as_str()
            .map(|s| s.starts_with("bucket (s3://")),
        Some(true),
        "{st}"
    );

    // Read every track but two: byte-identical. One is kept uncached for
    // the end, the big one is read while the SFTP server dies.
    let big_rel = big.strip_prefix(&mnt).unwrap().to_path_buf();
    let held_back = PathBuf::from("Slow Band/Patience/00 - Held Back.wav");
    assert!(mnt.join(&held_back).is_file());
    let mut left = want.clone();
    for rel in tracks
        .iter()
        .filter(|p| ***p != big_rel && ***p != held_back)
    {
        let sha = sha256_file(&mnt.join(rel)).unwrap_or_else(|e| panic!("{rel:?}: {e}"));
        match left.get_mut(&sha) {
            Some(n) if *n > 0 => *n -= 1,
            _ => panic!("{rel:?} reads bytes no origin file has (or too often)"),
        }
    }
    assert_eq!(left.values().sum::<usize>(), 2, "all but the two kept back");

    // Kill the SFTP server in the middle of reading the big track (slowed
    // to 4 MiB/s, so that most of it is still to come): the rest of the
    // read comes from S3, byte-identical.
    proxy.set(Fault::Bandwidth(4 << 20));
    let before = proxy.down_bytes();
    let mut file = std::fs::File::open(&big).unwrap();
    let mut head = vec![0u8; 6 << 20];
    file.read_exact(&mut head).unwrap();
    sshd.kill();
    let mut rest = Vec::new();
    file.read_to_end(&mut rest).unwrap();
    head.extend(rest);
    assert_eq!(head.len(), big_len);
    assert_eq!(sha256_bytes(&head), big_sha, "the read carried on from S3");
    // What had already left the server before it died still drains
    // through the proxy; the rest can only have come from S3.
    let via_sftp = proxy.down_bytes() - before;
    println!("big track: {via_sftp} of {big_len} bytes came through the SFTP proxy");
    assert!(
        (via_sftp as usize) < big_len * 2 / 3,
        "a good part of the big track came from S3 ({via_sftp} of {big_len} bytes came through the SFTP proxy)"
    );
    // A seek back into the middle still reads right (cached, or from S3).
    file.seek(SeekFrom::Start(17 << 20)).unwrap();
    let mut mid = vec![0u8; 1 << 20];
    file.read_exact(&mut mid).unwrap();
    assert_eq!(mid, head[17 << 20..18 << 20]);
    drop(file);
    let sftp_down = wait_for(Duration::from_secs(60), || {
        health(&status(&mnt), 0) != "healthy"
    });
    assert!(
        sftp_down,
        "status says the SFTP origin is down: {}",
        status(&mnt)
    );

    // Now S3 dies too: offline mode. Cached tracks play...
    moto.kill();
    let cached = tracks
        .iter()
        .map(|p| mnt.join(p))
        .find(|p| *p != big && !p.ends_with(&held_back))
        .unwrap();
    let before = sha256_file(&cached).unwrap();
    // (drop the kernel's copy, so the bytes come from the chunk cache)
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
    assert_eq!(sha256_file(&cached).unwrap(), before);
    assert_eq!(sha256_file(&big).unwrap(), big_sha);
    // ...and an uncached one fails with EIO within the read timeout.
    let started = Instant::now();
    let err = std::fs::read(mnt.join(&held_back)).expect_err("no origin holds it now");
    let waited = started.elapsed();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        waited < Duration::from_secs(READ_TIMEOUT * 3),
        "an uncached read with every origin down ends in EIO, never a hang: {waited:?}"
    );
    let both_down = wait_for(Duration::from_secs(60), || {
        let st = status(&mnt);
        health(&st, 0) != "healthy" && health(&st, 1) != "healthy"
    });
    let st = status(&mnt);
    assert!(both_down, "status says both origins are down: {st}");
    // The tree keeps every track: an unreachable origin is unhealthy, never empty.
    assert_eq!(
        files_under(&mnt).iter().filter(|p| !is_cover(p)).count(),
        tracks.len()
    );
    let log = m.log_text();
    assert!(!log.contains(SECRET), "the secret key was logged");
    assert!(
        !st.to_string().contains(SECRET),
        "the secret key is in the status"
    );
    assert!(m.stop().success(), "SIGTERM exits 0 with every origin down");

    // Offline at boot: a restart with every origin still down mounts the
    // saved tree at once, shows every track, and plays the cached ones.
    let m = command("log.offline").start(Duration::from_secs(120));
    let shown = files_under(&m.mountpoint)
        .iter()
        .filter(|p| !is_cover(p))
        .count();
    assert_eq!(shown, tracks.len(), "every track is shown offline");
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
    assert_eq!(sha256_file(&cached).unwrap(), before);
    assert_eq!(sha256_file(&big).unwrap(), big_sha);
    let both_down = wait_for(Duration::from_secs(60), || {
        let st = status(&mnt);
        health(&st, 0) != "healthy" && health(&st, 1) != "healthy"
    });
    assert!(
        both_down,
        "status says both origins are down: {}",
        status(&mnt)
    );
    assert!(m.stop().success(), "SIGTERM exits 0 with every origin down");
}

/// An origin that cannot be reached at the first mount does not stop the
/// mount: the other origins' tracks are served, and its own appear once it
/// answers (here on `musicfs rescan`; the poller would get there too).
#[test]
fn an_unreachable_remote_origin_at_first_mount_fills_in_later() {
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p);
    write_wav(
        &path("local/a.wav"),
        60_000,
        1,
        "Here",
        "Local Band",
        "Home",
    );
    write_wav(
        &path("remote/b.wav"),
        60_000,
        2,
        "There",
        "Far Band",
        "Away",
    );
    let moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    moto.upload_dir(BUCKET, "lib", &path("remote"));
    let proxy = FaultProxy::start(moto.addr());
    proxy.set(Fault::Reset);
    let s3_url = format!(
        "s3://{BUCKET}/lib?endpoint=http://127.0.0.1:{}&region=us-east-1&timeout=2&connect_timeout=2",
        proxy.port()
    );
    let m = MountCommand::new(
        Path::new(BIN),
        &[&path("local")],
        &path("cache"),
        &path("mnt"),
        &path("log"),
    )
    .args(["--origin", &s3_url])
    .env("AWS_ACCESS_KEY_ID", "AKIAMUSICFSE2E00001")
    .env("AWS_SECRET_ACCESS_KEY", SECRET)
    .start(Duration::from_secs(120));
    let mnt = m.mountpoint.clone();
    assert!(mnt.join("Local Band/Home/00 - Here.wav").is_file());
    assert!(!mnt.join("Far Band").exists());
    assert!(
        m.log_text().contains("cannot scan this origin now"),
        "{}",
        m.log_text()
    );

    proxy.heal();
    let out = Command::new(BIN).arg("rescan").arg(&mnt).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let far = mnt.join("Far Band/Away/00 - There.wav");
    assert!(
        wait_for(Duration::from_secs(30), || far.is_file()),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        m.log_text()
    );
    assert_eq!(
        sha256_file(&far).unwrap(),
        sha256_file(&path("remote/b.wav")).unwrap()
    );
    assert!(m.stop().success());
}
