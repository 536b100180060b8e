//! Match copies: `copy_match` for one copy, `flush` for a round's queued copies in order, and
//! the packing of pending matches and queued copies into one u64 each. Every loop copies
//! through here (the vector round has its own blended flush in `avx512.rs`, which falls back to
//! `copy_match`). A copy may touch only its match's bytes: later literals may already sit past
//! it.

use crate::error::Reason;

/// Bits of an output position in a pending match (`Lanes::pending`): `run_fast` checks the
/// position against the end once per round, so within a round it may pass the end by up to 32
/// lengths (under 2^22 in all). The packed words:
///
/// ```text
/// pending match:   length << 22 | destination                 (length ≤ 65538, 0 = none)
/// queued copy:     length << 42 | destination << 20 | distance  (= pending << 20 | distance)
/// ```
///
/// A distance is at most 65536 and a length at most 65538 (symbol 285, FORMAT.md §2.2),
/// so each fits its 20 or 22 bits, and a queued copy's length ends below bit 63.
pub(super) const DST_BITS: u32 = 22;
pub(super) const DST_MASK: u64 = (1 << DST_BITS) - 1;

/// A queued copy's (destination, distance, length).
#[inline(always)]
pub(super) fn fields(copy: u64) -> (usize, usize, usize) {
    let (len, dst, distance) = (copy >> (DST_BITS + 20), (copy >> 20) & DST_MASK, copy & 0xFFFFF);
    (dst as usize, distance as usize, len as usize)
}

/// Runs queued copies in order: each `length << 42 | destination << 20 | distance` (the
/// destination below 2^22, the others below 2^20).
///
/// A short copy is a 16-byte read-modify-write of its destination (see `copy_match`), and
/// consecutive matches often lie within 16 bytes of each other, so a copy's read would overlap
/// the previous copy's write, which the store cannot forward: the read waits for the write to
/// reach the cache. So each copy's 16 bytes are read one copy ahead, before the previous copy
/// writes. That is safe: a copy changes only its match's bytes, and no later copy's 16 bytes
/// include an earlier match's bytes (destinations ascend, and each lies past the match before
/// it), so the bytes a copy writes back unchanged are the same whether read before or after.
///
/// A copy whose distance reaches before the tile (past its destination) is not run: the flush
/// stops there with `DistanceTooFar`, the copies before it done. This is the branch-free round's
/// check of its distances: in the flush it costs a comparison per copy, where the round spent
/// one per lane visit and a register on the fault flag.
#[inline(never)]
pub(super) fn flush(out: &mut [u8], queue: &[u64]) -> Result<(), Reason> {
    let bytes_at = |out: &[u8], copy: Option<&u64>| {
        let dst = fields(*copy?).0;
        let bytes = out.get(dst..dst + 16)?;
        Some(u128::from_le_bytes(bytes.try_into().expect("16 bytes")))
    };
    let mut next = bytes_at(out, queue.first());
    for (i, &copy) in queue.iter().enumerate() {
        let to = next;
        next = bytes_at(out, queue.get(i + 1));
        let (dst, distance, len) = fields(copy);
        if distance > dst {
            return Err(Reason::DistanceTooFar);
        }
        match to {
            Some(to) if len <= 16 && distance >= len => {
                let src = dst - distance;
                let from = u128::from_le_bytes(out[src..src + 16].try_into().expect("16 bytes"));
                let keep = COPY_MASKS[len];
                out[dst..dst + 16].copy_from_slice(&((from & keep) | (to & !keep)).to_le_bytes());
            }
            _ => copy_apart(out, copy),
        }
    }
    Ok(())
}

/// `copy_match` for a queued copy, out of line: a flush loop that calls `memmove` in line keeps
/// its cursor on the stack across the call, and every copy then waits on a store and a load of
/// it (measured: an eighth of the vector decoder's time). Rare: long or overlapping matches.
#[cold]
#[inline(never)]
pub(super) fn copy_apart(out: &mut [u8], copy: u64) {
    let (dst, distance, len) = fields(copy);
    copy_match(out, dst, distance, len);
}

/// Per match length up to 16, the mask of a 16-byte group's bytes that the match covers.
const COPY_MASKS: [u128; 17] = {
    let mut masks = [0u128; 17];
    let mut len = 1;
    while len <= 16 {
        masks[len] = u128::MAX >> (128 - 8 * len);
        len += 1;
    }
    masks
};

/// `out[dst..dst+len] = out[dst-distance..]`, byte by byte forward (overlap repeats the
/// pattern). Nothing past `dst + len` may be touched: later literals may already sit there.
#[inline(always)]
pub(super) fn copy_match(out: &mut [u8], dst: usize, distance: usize, len: usize) {
    let src = dst - distance;
    if len <= 16 && distance >= len && dst + 16 <= out.len() {
        // Most matches are short: one 16-byte read-modify-write instead of a call to memmove.
        // The bytes past the match are written back unchanged (they may be literals already),
        // and the source bytes that matter lie before `dst`, read before the write.
        let from = u128::from_le_bytes(out[src..src + 16].try_into().expect("16 bytes"));
        let to: &mut [u8; 16] = (&mut out[dst..dst + 16]).try_into().expect("16 bytes");
        let keep = COPY_MASKS[len.min(16)];
        *to = ((from & keep) | (u128::from_le_bytes(*to) & !keep)).to_le_bytes();
        return;
    }
    if distance >= len {
        out.copy_within(src..src + len, dst);
        return;
    }
    let mut done = 0;
    while done < len {
        // The source [src, src + chunk) lies wholly in bytes already written, and `done` stays a
        // multiple of `distance`, so the pattern continues unbroken.
        let chunk = (dst + done - src).min(len - done);
        out.copy_within(src..src + chunk, dst + done);
        done += chunk;
    }
}

/// For the flush tests: `size` random bytes, a queue of copies (as `flush` packs them) whose
/// destinations run through `span` 0–2 bytes apart, each `(length, distance)` from `next` given
/// its destination, and the bytes after running the copies one at a time.
#[cfg(test)]
pub(super) fn queued_copies(
    rng: &mut fastrand::Rng,
    size: usize,
    span: std::ops::Range<usize>,
    mut next: impl FnMut(&mut fastrand::Rng, usize) -> (usize, usize),
) -> (Vec<u8>, Vec<u64>, Vec<u8>) {
    let out: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
    let (mut queue, mut dst) = (Vec::new(), span.start);
    while dst < span.end {
        let (len, distance) = next(rng, dst);
        queue.push((len as u64) << (DST_BITS + 20) | (dst as u64) << 20 | distance as u64);
        dst += len + rng.usize(0..=2);
    }
    let mut expected = out.clone();
    for &copy in &queue {
        let (at, distance, len) = fields(copy);
        copy_match(&mut expected, at, distance, len);
    }
    (out, queue, expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_copies_repeat_the_pattern() {
        let mut out = *b"abc.........";
        copy_match(&mut out, 3, 3, 9);
        assert_eq!(&out, b"abcabcabcabc");
        let mut run = [7u8, 0, 0, 0, 0, 0, 0];
        copy_match(&mut run, 1, 1, 6);
        assert_eq!(run, [7; 7]);
    }

    #[test]
    fn short_copies_leave_the_bytes_after_them() {
        // Literals decoded after a match's reservation may already sit past it.
        for len in 3..=20 {
            let mut out: Vec<u8> = (0..64).collect();
            let mut expected = out.clone();
            for t in 0..len {
                expected[30 + t] = expected[30 - len - 1 + t];
            }
            copy_match(&mut out, 30, len + 1, len);
            assert_eq!(out, expected, "length {len}");
        }
        // Too close to the end for the 16-byte path.
        let mut tail = *b"abcdefgh....";
        copy_match(&mut tail, 8, 8, 4);
        assert_eq!(&tail, b"abcdefghabcd");
    }

    #[test]
    fn flushed_copies_within_16_bytes_of_each_other_match_one_at_a_time() {
        // Matches 3–9 bytes long with 0–2 literals between them, so each copy's 16 bytes cover
        // the next ones; the flush reads them one copy ahead and must still agree with copies
        // run one at a time.
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..200 {
            let (mut out, queue, expected) = queued_copies(&mut rng, 256, 40..200, |rng, dst| {
                let len = rng.usize(3..=9);
                (len, rng.usize(len..=dst.min(60)))
            });
            assert_eq!(flush(&mut out, &queue), Ok(()));
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn a_flush_stops_at_a_distance_before_the_tile() {
        // The third copy reaches one byte before the tile: the two before it run, it and the
        // ones after it do not, and nothing panics (the tests check overflow).
        let mut rng = fastrand::Rng::with_seed(12);
        let (mut out, mut queue, _) = queued_copies(&mut rng, 256, 40..200, |rng, dst| {
            let len = rng.usize(3..=9);
            (len, rng.usize(len..=dst.min(60)))
        });
        let (dst, _, len) = fields(queue[2]);
        queue[2] = (len as u64) << (DST_BITS + 20) | (dst as u64) << 20 | (dst + 1) as u64;
        let mut expected = out.clone();
        for &copy in &queue[..2] {
            let (at, distance, len) = fields(copy);
            copy_match(&mut expected, at, distance, len);
        }
        assert_eq!(flush(&mut out, &queue), Err(Reason::DistanceTooFar));
        assert_eq!(out, expected);
    }
}
