//! What opening a cache of many packs costs, for `bench/run`:
//!
//! ```text
//! pack_tables make DIR N     a cache in DIR with N packs (4 chunks of 1 KiB each)
//! pack_tables open DIR       opens it; prints the seconds and how the tables were learnt
//! pack_tables forget DIR     removes the tables a clean exit saved
//! ```
//!
//! `open` saves the tables when it had to read them, as a clean exit does.
//! A real pack holds 1-8 MiB, but the open reads only its table (its last
//! block) and its inode: small packs cost it the same.

use musicfs::store::ChunkStore;
use musicfs_core::ChunkId;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(what), Some(dir)) = (args.first(), args.get(1)) else {
        eprintln!("usage: pack_tables make DIR N | open DIR | forget DIR");
        return ExitCode::FAILURE;
    };
    let dir = Path::new(dir);
    let done = match what.as_str() {
        "make" => match args.get(2).and_then(|n| n.parse().ok()) {
            Some(n) => make(dir, n),
            None => Err("make needs a number of packs".into()),
        },
        "open" => open(dir),
        "forget" => std::fs::remove_file(dir.join("packs.tables")).map_err(|e| e.to_string()),
        _ => Err(format!("unknown command {what}")),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pack_tables: {e}");
            ExitCode::FAILURE
        }
    }
}

fn make(dir: &Path, packs: u64) -> Result<(), String> {
    let store = ChunkStore::open(dir).map_err(|e| e.to_string())?;
    for p in 0..packs {
        let chunks: Vec<Vec<u8>> = (0..4u64)
            .map(|c| {
                let mut bytes = vec![0u8; 1024];
                bytes[..8].copy_from_slice(&p.to_le_bytes());
                bytes[8..16].copy_from_slice(&c.to_le_bytes());
                bytes
            })
            .collect();
        let ids: Vec<(ChunkId, u32)> = chunks
            .iter()
            .map(|c| (ChunkId::of(c), c.len() as u32))
            .collect();
        let pack = store.start_pack().map_err(|e| e.to_string())?;
        let slot = pack.reserve(&ids).ok_or("pack too large")?;
        let data: Vec<(ChunkId, &[u8])> = ids
            .iter()
            .zip(&chunks)
            .map(|(&(id, _), c)| (id, &c[..]))
            .collect();
        slot.write(&data);
        store.put_pack(&pack).map_err(|e| e.to_string())?;
    }
    store.save_pack_tables().map_err(|e| e.to_string())?;
    Ok(())
}

fn open(dir: &Path) -> Result<(), String> {
    let started = Instant::now();
    let store = ChunkStore::open(dir).map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    let loaded = store.packs_loaded();
    println!(
        "{{\"seconds\": {seconds}, \"packs\": {}, \"from_saved\": {}, \"read\": {}}}",
        loaded.packs, loaded.from_saved, loaded.read
    );
    store.save_pack_tables().map_err(|e| e.to_string())?;
    Ok(())
}
