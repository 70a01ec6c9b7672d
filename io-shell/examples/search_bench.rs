//! Indexes a synthetic library into the search index and prints how fast it
//! went, how fast queries are, and what it cost in memory.
//!
//! ```text
//! cargo run --release -p musicfs --example search_bench -- [--docs N] [--runs R]
//! ```
//!
//! Figures: the full build (`replace_all`, commit included) in docs/s; a
//! sync-sized batch of upserts with its commit; the latency of a mix of
//! queries through the daemon's `SearchIndex` (median and worst of `R`
//! runs each) and through `search_offline` (open, search, close); the
//! process's RSS before, after, and at its peak (VmHWM), and the index's
//! size on disk. The documents are generated on the fly, so the RSS growth
//! is the index's own.

use musicfs::search::{SearchIndex, index_dir, search_offline};
use musicfs_tests::search::synthetic_doc;
use std::time::{Duration, Instant};

fn status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn threads() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
        .unwrap_or(0)
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let mut docs = 20_000usize;
    let mut runs = 50usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--docs", Some(v)) => docs = v,
            ("--runs", Some(v)) => runs = v,
            _ => {
                eprintln!("usage: search_bench [--docs N] [--runs R]");
                std::process::exit(2);
            }
        }
    }
    let runs = runs.max(1);
    let cache = tempfile::tempdir().expect("temp dir");
    let dir = index_dir(cache.path());

    let rss0 = status_kb("VmRSS:");
    let t = Instant::now();
    let idx = SearchIndex::open(&dir).expect("open").index;
    let open_ms = ms(t.elapsed());
    let rss_open = status_kb("VmRSS:");
    println!(
        "open (new index): {open_ms:.1} ms, RSS {:.1} -> {:.1} MB, {} threads",
        mb(rss0),
        mb(rss_open),
        threads()
    );

    let t = Instant::now();
    idx.replace_all((0..docs).map(synthetic_doc))
        .expect("index");
    let build = t.elapsed();
    let rss_built = status_kb("VmRSS:");
    println!(
        "build: {docs} docs in {:.0} ms = {:.0} docs/s (commit included); index {:.1} MB on disk",
        ms(build),
        docs as f64 / build.as_secs_f64(),
        dir_size(&dir) as f64 / 1e6
    );
    println!(
        "RSS after build: {:.1} MB (+{:.1} MB; anon {:.1}, file {:.1}), peak so far {:.1} MB",
        mb(rss_built),
        mb(rss_built.saturating_sub(rss0)),
        mb(status_kb("RssAnon:")),
        mb(status_kb("RssFile:")),
        mb(status_kb("VmHWM:"))
    );

    // A sync's worth of changes.
    let batch = 1_000.min(docs);
    let t = Instant::now();
    for i in 0..batch {
        let mut d = synthetic_doc(i);
        d.title = Some(format!("{} (live)", d.title.unwrap_or_default()));
        idx.upsert(&d).expect("upsert");
    }
    let upserts = t.elapsed();
    let t = Instant::now();
    idx.commit().expect("commit");
    let commit = t.elapsed();
    println!(
        "sync: {batch} upserts in {:.1} ms ({:.0}/s), then commit {:.1} ms",
        ms(upserts),
        batch as f64 / upserts.as_secs_f64(),
        ms(commit)
    );

    let queries = [
        "bjork",
        "artist:bjork album:summer",
        "crimsn",
        "sigur ros",
        "telepathe",
        "year:[1990 TO 1999]",
        "genre:jazz year:>1970",
        "format:flac",
        "no12345",
        "midnight river",
        "\"midnight river\"",
        "harb*",
        "-zzzz",
    ];
    println!("queries (limit 100), {runs} runs each: median / worst");
    for q in queries {
        let mut times = Vec::with_capacity(runs);
        let mut n = 0;
        for _ in 0..runs {
            let t = Instant::now();
            n = idx.search(q, 100).expect("search").len();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "  {q:32} {n:4} hits  {:7.3} / {:7.3} ms",
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let n = idx
            .search("-zzzz", musicfs::search::MAX_LIMIT)
            .expect("search")
            .len();
        assert_eq!(n, musicfs::search::MAX_LIMIT.min(docs));
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "  {:32} {:4} hits  {:7.3} / {:7.3} ms",
        "-zzzz (limit MAX_LIMIT)",
        musicfs::search::MAX_LIMIT.min(docs),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );

    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        search_offline(cache.path(), "crimsn", 100).expect("offline");
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "offline (open reader + search + close, writer held): {:.2} / {:.2} ms",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );

    let t = Instant::now();
    drop(idx);
    let close = t.elapsed();
    let t = Instant::now();
    let idx = SearchIndex::open(&dir).expect("reopen").index;
    println!(
        "close {:.1} ms; reopen with checks {:.1} ms ({} docs)",
        ms(close),
        ms(t.elapsed()),
        idx.len()
    );
    println!(
        "RSS now {:.1} MB (anon {:.1}, file {:.1}); peak (VmHWM) {:.1} MB; {} threads",
        mb(status_kb("VmRSS:")),
        mb(status_kb("RssAnon:")),
        mb(status_kb("RssFile:")),
        mb(status_kb("VmHWM:")),
        threads()
    );
}
