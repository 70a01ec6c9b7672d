//! The manifest's extents against a plain model: a byte-per-byte map of
//! which extent covers which offset. Any sequence of inserts (accepted or
//! refused) leaves `overlapping`, `first_gap`, `next_mapped_start` and
//! `is_complete` answering what the model says.

use musicfs_core::chunk::ChunkId;
use musicfs_core::manifest::{Extent, FileVersion, Manifest};
use proptest::prelude::*;

const SIZE: u64 = 200;

/// Offset of the extent covering each byte, if any.
fn model(inserted: &[(u64, u32)]) -> Vec<Option<u64>> {
    let mut covered = vec![None; SIZE as usize];
    for &(o, l) in inserted {
        for b in o..o + u64::from(l) {
            covered[b as usize] = Some(o);
        }
    }
    covered
}

proptest! {
    #[test]
    fn extents_answer_like_the_model(
        tries in prop::collection::vec((0..SIZE + 10, 0u32..60), 0..40),
        probes in prop::collection::vec((0..SIZE + 5, 0..SIZE + 5), 1..20),
    ) {
        let mut m = Manifest::new(FileVersion { size: SIZE, ..Default::default() });
        let mut accepted: Vec<(u64, u32)> = Vec::new();
        for (o, l) in tries {
            let end = o + u64::from(l);
            let free = l > 0 && end <= SIZE
                && accepted.iter().all(|&(ao, al)| end <= ao || ao + u64::from(al) <= o);
            let got = m.insert(o, Extent { len: l, id: ChunkId(u128::from(o)) });
            prop_assert_eq!(got.is_ok(), free, "insert {}+{}", o, l);
            if free {
                accepted.push((o, l));
            }
        }
        let covered = model(&accepted);
        let offsets: Vec<u64> = m.extents().map(|(o, _)| o).collect();
        let mut want: Vec<u64> = accepted.iter().map(|&(o, _)| o).collect();
        want.sort_unstable();
        prop_assert_eq!(&offsets, &want);
        for (a, b) in probes {
            let (start, end) = (a.min(b), a.max(b).max(a.min(b) + 1));
            // overlapping: the extents covering any byte of start..end.
            let mut want: Vec<u64> = (start..end.min(SIZE))
                .filter_map(|x| covered[x as usize])
                .collect();
            want.dedup();
            let got: Vec<u64> = m.overlapping(start..end).map(|(o, _)| o).collect();
            prop_assert_eq!(got, want, "overlapping {}..{}", start, end);
            // first_gap: the first run of uncovered bytes in start..end.
            let e = end.min(SIZE);
            let gap_start = (start..e).find(|&x| covered[x as usize].is_none());
            let want = gap_start.map(|g| {
                g..(g..e).find(|&x| covered[x as usize].is_some()).unwrap_or(e)
            });
            prop_assert_eq!(m.first_gap(start, end), want, "first_gap {}..{}", start, end);
            // next_mapped_start: the first extent starting at or after start.
            let want = want_next(&accepted, start);
            prop_assert_eq!(m.next_mapped_start(start), want);
        }
        prop_assert_eq!(m.is_complete(), covered.iter().all(Option::is_some));
    }
}

fn want_next(accepted: &[(u64, u32)], offset: u64) -> u64 {
    accepted
        .iter()
        .map(|&(o, _)| o)
        .filter(|&o| o >= offset)
        .min()
        .unwrap_or(SIZE)
}
