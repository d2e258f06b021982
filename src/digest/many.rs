//! BLAKE3 of many short, independent inputs at once: one input per SIMD
//! lane. Event payloads are a few hundred bytes, so hashing them one by one
//! runs BLAKE3's compression on a single lane: the `blake3` crate spreads
//! only the chunks of *one* input across lanes, and does not expose a way to
//! hash independent inputs together (BLAKE3-team/BLAKE3 issues 386 and 478;
//! its `platform::hash_many` is hidden, unstable, and limited to equal
//! whole-block lengths). That is why this module exists.
//!
//! An input of at most one chunk (1,024 bytes) is a single BLAKE3 chunk: a
//! chain of compressions of its 64-byte blocks (the last zero-padded to 64,
//! with its true length as the block length), counter 0, `CHUNK_START` on the
//! first block, `CHUNK_END | ROOT` on the last, and its hash is the first 32
//! bytes of the last compression's output. This module runs such chains for
//! `LANES` jobs side by side, each lane with its own block count, length,
//! counter and flags; a lane whose job has ended keeps its chaining value.
//! An input of up to 16 chunks (a blob of a few KiB) is one job per chunk,
//! then its tree of parent nodes, merged level by level with the parents of
//! the other inputs in the lanes (see [`hash_each`]); longer inputs go to
//! `blake3::hash`, which spreads their chunks across lanes itself. With
//! AVX-512 (F and BW) the chain is written with intrinsics, state and
//! message in vector registers; with AVX2 only, it is plain arrays of `u32`
//! lanes that the compiler turns into vector instructions (chosen at run
//! time); without either, every input goes to `blake3::hash`. The unit
//! tests compare lengths around every chunk boundary up to 17 chunks, and
//! random mixes, with `blake3::hash`, and each instruction set the CPU has
//! with the others.

use super::Digest;

/// Inputs hashed side by side.
const LANES: usize = 16;
const BLOCK_LEN: usize = 64;
const CHUNK_LEN: usize = 1024;
const CHUNK_START: u32 = 1;
const CHUNK_END: u32 = 2;
const PARENT: u32 = 4;
const ROOT: u32 = 8;
const IV: [u32; 8] = [0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A, 0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19];
/// The message word order of each of the seven rounds (BLAKE3's permutation
/// applied round after round).
const SCHEDULE: [[usize; 16]; 7] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8],
    [3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1],
    [10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6],
    [12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4],
    [9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7],
    [11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13],
];

/// Inputs of at most this many chunks are hashed in lanes; longer ones by
/// `blake3::hash`, which spreads their chunks across lanes itself.
const LANE_CHUNKS: usize = 16;

/// One lane's work: the chain of compressions of `data` (at most one chunk,
/// at least one block, the last zero-padded), with `counter`, the flags
/// `first` on its first block and `last` on its last (both on a single one).
#[derive(Clone, Copy)]
struct Job<'a> {
    data: &'a [u8],
    counter: u64,
    first: u32,
    last: u32,
}

impl Job<'_> {
    const IDLE: Job<'static> = Job { data: &[], counter: 0, first: 0, last: 0 };

    fn blocks(&self) -> usize {
        self.data.len().div_ceil(BLOCK_LEN).max(1)
    }
}

/// Where a job's output goes: an input's hash, or a chaining value of the
/// next tree level.
#[derive(Clone, Copy)]
enum Put {
    Hash(u32),
    Cv(u32),
}

/// An input of several chunks whose tree is being merged: its input, where
/// its chaining values of the current level start, and how many there are.
struct Tree {
    input: u32,
    at: u32,
    count: u32,
}

/// The BLAKE3 of each input, in order, appended to `out`.
///
/// An input of one chunk is one lane's chain, with `ROOT` on its last
/// block. An input of 2 to [`LANE_CHUNKS`] chunks gives one lane per chunk
/// (counter = the chunk's index, no `ROOT`); then, level by level, its
/// chaining values are paired left to right into parent nodes (message =
/// left ‖ right, `PARENT`, counter 0, `ROOT` on the last merge), an odd last
/// one carried up: BLAKE3's left-complete tree. Parents of all inputs at a
/// level share the lanes.
pub(crate) fn hash_each(inputs: &[&[u8]], out: &mut Vec<Digest>) {
    let first = out.len();
    out.resize(first + inputs.len(), Digest::default());
    let out = &mut out[first..];
    if !lanes_available() {
        for (input, digest) in inputs.iter().zip(out.iter_mut()) {
            *digest = Digest::of(input);
        }
        return;
    }
    let mut jobs = Vec::with_capacity(inputs.len());
    let mut puts = Vec::with_capacity(inputs.len());
    let mut trees = Vec::new();
    let mut cvs = 0u32;
    for (i, input) in inputs.iter().enumerate() {
        let chunks = input.len().div_ceil(CHUNK_LEN).max(1);
        if chunks == 1 {
            jobs.push(Job { data: input, counter: 0, first: CHUNK_START, last: CHUNK_END | ROOT });
            puts.push(Put::Hash(i as u32));
        } else if chunks <= LANE_CHUNKS {
            for (c, chunk) in input.chunks(CHUNK_LEN).enumerate() {
                jobs.push(Job { data: chunk, counter: c as u64, first: CHUNK_START, last: CHUNK_END });
                puts.push(Put::Cv(cvs + c as u32));
            }
            trees.push(Tree { input: i as u32, at: cvs, count: chunks as u32 });
            cvs += chunks as u32;
        } else {
            out[i] = Digest::of(input);
        }
    }
    let mut level = vec![0u8; cvs as usize * 32];
    run(&jobs, &puts, out, &mut level);
    let mut next = Vec::new();
    while !trees.is_empty() {
        // One level up: the parents of every tree side by side.
        let (mut jobs, mut puts) = (Vec::new(), Vec::new());
        next.clear();
        next.resize(level.len(), 0);
        let mut cvs = 0u32;
        for tree in &mut trees {
            let pairs = tree.count / 2;
            for k in 0..pairs {
                let at = (tree.at + 2 * k) as usize * 32;
                let root = if tree.count == 2 { ROOT } else { 0 };
                jobs.push(Job { data: &level[at..at + 64], counter: 0, first: PARENT, last: PARENT | root });
                puts.push(if root != 0 { Put::Hash(tree.input) } else { Put::Cv(cvs + k) });
            }
            if tree.count % 2 == 1 {
                let last = (tree.at + tree.count - 1) as usize * 32;
                let to = (cvs + pairs) as usize * 32;
                next[to..to + 32].copy_from_slice(&level[last..last + 32]);
            }
            tree.at = cvs;
            tree.count = tree.count.div_ceil(2);
            cvs += tree.count;
        }
        run(&jobs, &puts, out, &mut next);
        trees.retain(|t| t.count > 1);
        std::mem::swap(&mut level, &mut next);
    }
}

/// Runs `jobs` sixteen at a time, those with the same block count together
/// (a counting sort), so that few lanes idle; each output goes where its
/// `puts` entry says (`cvs`: 32 bytes per chaining value).
fn run(jobs: &[Job<'_>], puts: &[Put], out: &mut [Digest], cvs: &mut [u8]) {
    // Index = block count (1 ..= 16); after the sums, where that class starts.
    let mut start = [0usize; CHUNK_LEN / BLOCK_LEN + 1];
    for job in jobs {
        start[job.blocks()] += 1;
    }
    let mut sum = 0;
    for slot in &mut start {
        (*slot, sum) = (sum, sum + *slot);
    }
    let mut order = vec![0u32; jobs.len()];
    for (j, job) in jobs.iter().enumerate() {
        let at = &mut start[job.blocks()];
        order[*at] = j as u32;
        *at += 1;
    }
    for group in order.chunks(LANES) {
        let mut lanes = [Job::IDLE; LANES];
        for (lane, &j) in lanes.iter_mut().zip(group) {
            *lane = jobs[j as usize];
        }
        let words = hash_group(&lanes, group.len());
        for (lane, &j) in group.iter().enumerate() {
            let to = match puts[j as usize] {
                Put::Hash(i) => &mut out[i as usize].0[..],
                Put::Cv(c) => &mut cvs[c as usize * 32..c as usize * 32 + 32],
            };
            for (w, word) in words.iter().enumerate() {
                to[4 * w..4 * w + 4].copy_from_slice(&word[lane].to_le_bytes());
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn lanes_available() -> bool {
    avx512::available() || std::arch::is_x86_feature_detected!("avx2")
}

#[cfg(not(target_arch = "x86_64"))]
fn lanes_available() -> bool {
    false
}

/// The output chaining values of the first `used` lanes' jobs.
#[cfg(target_arch = "x86_64")]
fn hash_group(jobs: &[Job<'_>; LANES], used: usize) -> [[u32; LANES]; 8] {
    if avx512::available() {
        // SAFETY: the CPU has AVX-512F and AVX-512BW (checked just above).
        unsafe { avx512::hash_group(jobs, used) }
    } else {
        // SAFETY: only called when `lanes_available`, so the CPU has AVX2.
        unsafe { hash_group_avx2(jobs, used) }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn hash_group(_: &[Job<'_>; LANES], _: usize) -> [[u32; LANES]; 8] {
    unreachable!("lanes_available is false on this architecture")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn hash_group_avx2(jobs: &[Job<'_>; LANES], used: usize) -> [[u32; LANES]; 8] {
    chain(jobs, used, |words| std::array::from_fn(|w| std::array::from_fn(|l| words[l][w])))
}

type Lanes = [u32; LANES];

/// Runs each lane's chain of block compressions; `transpose` turns each
/// lane's block words into word `w` of every lane.
#[inline(always)]
fn chain(jobs: &[Job<'_>; LANES], used: usize, transpose: impl Fn(&[[u32; 16]; LANES]) -> [Lanes; 16]) -> [Lanes; 8] {
    let blocks: [usize; LANES] = std::array::from_fn(|l| if l < used { jobs[l].blocks() } else { 0 });
    let most = blocks.iter().copied().max().unwrap_or(0);
    let counter: [Lanes; 2] = [std::array::from_fn(|l| jobs[l].counter as u32), std::array::from_fn(|l| (jobs[l].counter >> 32) as u32)];
    let mut cv: [Lanes; 8] = std::array::from_fn(|w| [IV[w]; LANES]);
    for b in 0..most {
        // Each lane's block as words, then transposed: word w of every lane.
        let mut words = [[0u32; 16]; LANES];
        let mut len = [0u32; LANES];
        let mut flags = [0u32; LANES];
        let mut active = [false; LANES];
        for l in 0..LANES {
            if b >= blocks[l] {
                continue;
            }
            active[l] = true;
            let data = jobs[l].data;
            let block = &data[(b * BLOCK_LEN).min(data.len())..];
            let block = &block[..block.len().min(BLOCK_LEN)];
            let mut padded = [0u8; BLOCK_LEN];
            padded[..block.len()].copy_from_slice(block);
            words[l] =
                std::array::from_fn(|w| u32::from_le_bytes([padded[4 * w], padded[4 * w + 1], padded[4 * w + 2], padded[4 * w + 3]]));
            len[l] = block.len() as u32;
            flags[l] = if b == 0 { jobs[l].first } else { 0 } | if b + 1 == blocks[l] { jobs[l].last } else { 0 };
        }
        let m = transpose(&words);
        let next = compress(&cv, &m, &counter, &len, &flags);
        for (w, lanes) in cv.iter_mut().enumerate() {
            for l in 0..LANES {
                if active[l] {
                    lanes[l] = next[w][l];
                }
            }
        }
    }
    cv
}

/// One BLAKE3 compression per lane: the new chaining values.
#[inline(always)]
fn compress(cv: &[Lanes; 8], m: &[Lanes; 16], counter: &[Lanes; 2], len: &Lanes, flags: &Lanes) -> [Lanes; 8] {
    let mut v: [Lanes; 16] = [
        cv[0],
        cv[1],
        cv[2],
        cv[3],
        cv[4],
        cv[5],
        cv[6],
        cv[7],
        [IV[0]; LANES],
        [IV[1]; LANES],
        [IV[2]; LANES],
        [IV[3]; LANES],
        counter[0],
        counter[1],
        *len,
        *flags,
    ];
    for s in &SCHEDULE {
        g(&mut v, [0, 4, 8, 12], &m[s[0]], &m[s[1]]);
        g(&mut v, [1, 5, 9, 13], &m[s[2]], &m[s[3]]);
        g(&mut v, [2, 6, 10, 14], &m[s[4]], &m[s[5]]);
        g(&mut v, [3, 7, 11, 15], &m[s[6]], &m[s[7]]);
        g(&mut v, [0, 5, 10, 15], &m[s[8]], &m[s[9]]);
        g(&mut v, [1, 6, 11, 12], &m[s[10]], &m[s[11]]);
        g(&mut v, [2, 7, 8, 13], &m[s[12]], &m[s[13]]);
        g(&mut v, [3, 4, 9, 14], &m[s[14]], &m[s[15]]);
    }
    std::array::from_fn(|w| std::array::from_fn(|l| v[w][l] ^ v[w + 8][l]))
}

/// BLAKE3's quarter-round G on state words `[a, b, c, d]`, every lane.
#[inline(always)]
fn g(v: &mut [Lanes; 16], [a, b, c, d]: [usize; 4], x: &Lanes, y: &Lanes) {
    for l in 0..LANES {
        v[a][l] = v[a][l].wrapping_add(v[b][l]).wrapping_add(x[l]);
        v[d][l] = (v[d][l] ^ v[a][l]).rotate_right(16);
        v[c][l] = v[c][l].wrapping_add(v[d][l]);
        v[b][l] = (v[b][l] ^ v[c][l]).rotate_right(12);
        v[a][l] = v[a][l].wrapping_add(v[b][l]).wrapping_add(y[l]);
        v[d][l] = (v[d][l] ^ v[a][l]).rotate_right(8);
        v[c][l] = v[c][l].wrapping_add(v[d][l]);
        v[b][l] = (v[b][l] ^ v[c][l]).rotate_right(7);
    }
}

/// The AVX-512 chain, written with intrinsics: the state and message words
/// of all sixteen lanes stay in the 32 vector registers. Each lane's block
/// is one 64-byte load (a masked load for a last, short block: the bytes
/// past the input read as zero and are never touched), and the sixteen
/// blocks are transposed in registers into word `w` of every lane, as the
/// `blake3` crate does for its many-chunk hashing.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Job, Lanes, BLOCK_LEN, IV, LANES, SCHEDULE};

    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")
    }

    /// The output chaining values of the first `used` lanes' jobs.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn hash_group(jobs: &[Job<'_>; LANES], used: usize) -> [Lanes; 8] {
        let lens: [usize; LANES] = std::array::from_fn(|l| if l < used { jobs[l].data.len() } else { 0 });
        let blocks: [usize; LANES] = std::array::from_fn(|l| if l < used { jobs[l].blocks() } else { 0 });
        let most = blocks.iter().copied().max().unwrap_or(0);
        let lo: [u32; LANES] = std::array::from_fn(|l| jobs[l].counter as u32);
        let hi: [u32; LANES] = std::array::from_fn(|l| (jobs[l].counter >> 32) as u32);
        // SAFETY: each array is 16 × 4 bytes, one vector.
        let counter = unsafe { [_mm512_loadu_si512(lo.as_ptr().cast()), _mm512_loadu_si512(hi.as_ptr().cast())] };
        let mut cv: [__m512i; 8] = std::array::from_fn(|w| _mm512_set1_epi32(IV[w] as i32));
        for b in 0..most {
            let mut rows = [_mm512_setzero_si512(); LANES];
            let mut len = [0u32; LANES];
            let mut flags = [0u32; LANES];
            let mut active: __mmask16 = 0;
            for l in 0..LANES {
                if b >= blocks[l] {
                    continue;
                }
                active |= 1 << l;
                let start = b * BLOCK_LEN;
                // `start <= lens[l]`: block b of the lane's blocks.
                let n = (lens[l] - start).min(BLOCK_LEN);
                let at = jobs[l].data[start..].as_ptr();
                rows[l] = if n == BLOCK_LEN {
                    // SAFETY: `at .. at + 64` lies within the input.
                    unsafe { _mm512_loadu_si512(at.cast()) }
                } else {
                    // SAFETY: only the first `n` bytes, which lie within
                    // the input, are read; masked-off bytes are not
                    // accessed (and cannot fault).
                    unsafe { _mm512_maskz_loadu_epi8((1u64 << n) - 1, at.cast()) }
                };
                len[l] = n as u32;
                flags[l] = if b == 0 { jobs[l].first } else { 0 } | if b + 1 == blocks[l] { jobs[l].last } else { 0 };
            }
            let m = transpose(rows);
            // SAFETY: each array is 16 × 4 bytes, one vector.
            let (len, flags) = unsafe { (_mm512_loadu_si512(len.as_ptr().cast()), _mm512_loadu_si512(flags.as_ptr().cast())) };
            let next = compress(&cv, &m, &counter, len, flags);
            for (cv, next) in cv.iter_mut().zip(next) {
                *cv = _mm512_mask_mov_epi32(*cv, active, next);
            }
        }
        let mut out = [[0u32; LANES]; 8];
        for (out, cv) in out.iter_mut().zip(cv) {
            // SAFETY: `out` is 16 × 4 bytes, one vector.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), cv) };
        }
        out
    }

    /// Row `l` (lane l's block words) into column `l`: word `w` of every
    /// lane in vector `w` (32-bit, then 64-bit, then twice 128-bit
    /// interleaves).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose(r: [__m512i; 16]) -> [__m512i; 16] {
        let lo32 = |a, b| _mm512_unpacklo_epi32(a, b);
        let hi32 = |a, b| _mm512_unpackhi_epi32(a, b);
        let (ab0, ab2, cd0, cd2) = (lo32(r[0], r[1]), hi32(r[0], r[1]), lo32(r[2], r[3]), hi32(r[2], r[3]));
        let (ef0, ef2, gh0, gh2) = (lo32(r[4], r[5]), hi32(r[4], r[5]), lo32(r[6], r[7]), hi32(r[6], r[7]));
        let (ij0, ij2, kl0, kl2) = (lo32(r[8], r[9]), hi32(r[8], r[9]), lo32(r[10], r[11]), hi32(r[10], r[11]));
        let (mn0, mn2, op0, op2) = (lo32(r[12], r[13]), hi32(r[12], r[13]), lo32(r[14], r[15]), hi32(r[14], r[15]));
        let lo64 = |a, b| _mm512_unpacklo_epi64(a, b);
        let hi64 = |a, b| _mm512_unpackhi_epi64(a, b);
        let abcd = [lo64(ab0, cd0), hi64(ab0, cd0), lo64(ab2, cd2), hi64(ab2, cd2)];
        let efgh = [lo64(ef0, gh0), hi64(ef0, gh0), lo64(ef2, gh2), hi64(ef2, gh2)];
        let ijkl = [lo64(ij0, kl0), hi64(ij0, kl0), lo64(ij2, kl2), hi64(ij2, kl2)];
        let mnop = [lo64(mn0, op0), hi64(mn0, op0), lo64(mn2, op2), hi64(mn2, op2)];
        // 128-bit lanes 0 and 2 of a, then of b; and lanes 1 and 3.
        let lo128 = |a, b| _mm512_shuffle_i32x4::<0x88>(a, b);
        let hi128 = |a, b| _mm512_shuffle_i32x4::<0xdd>(a, b);
        let ae: [__m512i; 8] = std::array::from_fn(|i| if i < 4 { lo128(abcd[i], efgh[i]) } else { hi128(abcd[i - 4], efgh[i - 4]) });
        let im: [__m512i; 8] = std::array::from_fn(|i| if i < 4 { lo128(ijkl[i], mnop[i]) } else { hi128(ijkl[i - 4], mnop[i - 4]) });
        std::array::from_fn(|w| if w < 8 { lo128(ae[w], im[w]) } else { hi128(ae[w - 8], im[w - 8]) })
    }

    /// One BLAKE3 compression per lane: the new chaining values.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn compress(cv: &[__m512i; 8], m: &[__m512i; 16], counter: &[__m512i; 2], len: __m512i, flags: __m512i) -> [__m512i; 8] {
        let iv = |w: usize| _mm512_set1_epi32(IV[w] as i32);
        let mut v =
            [cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7], iv(0), iv(1), iv(2), iv(3), counter[0], counter[1], len, flags];
        for s in &SCHEDULE {
            g(&mut v, [0, 4, 8, 12], m[s[0]], m[s[1]]);
            g(&mut v, [1, 5, 9, 13], m[s[2]], m[s[3]]);
            g(&mut v, [2, 6, 10, 14], m[s[4]], m[s[5]]);
            g(&mut v, [3, 7, 11, 15], m[s[6]], m[s[7]]);
            g(&mut v, [0, 5, 10, 15], m[s[8]], m[s[9]]);
            g(&mut v, [1, 6, 11, 12], m[s[10]], m[s[11]]);
            g(&mut v, [2, 7, 8, 13], m[s[12]], m[s[13]]);
            g(&mut v, [3, 4, 9, 14], m[s[14]], m[s[15]]);
        }
        std::array::from_fn(|w| _mm512_xor_si512(v[w], v[w + 8]))
    }

    /// BLAKE3's quarter-round G on state words `[a, b, c, d]`, every lane.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn g(v: &mut [__m512i; 16], [a, b, c, d]: [usize; 4], x: __m512i, y: __m512i) {
        v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), x);
        v[d] = _mm512_ror_epi32::<16>(_mm512_xor_si512(v[d], v[a]));
        v[c] = _mm512_add_epi32(v[c], v[d]);
        v[b] = _mm512_ror_epi32::<12>(_mm512_xor_si512(v[b], v[c]));
        v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), y);
        v[d] = _mm512_ror_epi32::<8>(_mm512_xor_si512(v[d], v[a]));
        v[c] = _mm512_add_epi32(v[c], v[d]);
        v[b] = _mm512_ror_epi32::<7>(_mm512_xor_si512(v[b], v[c]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(len: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut out);
        out
    }

    fn check(inputs: &[Vec<u8>]) {
        let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        let mut got = vec![Digest::of(b"kept")];
        hash_each(&refs, &mut got);
        assert_eq!(got.len(), inputs.len() + 1);
        assert_eq!(got[0], Digest::of(b"kept"), "what out held is kept");
        for (i, (input, digest)) in inputs.iter().zip(&got[1..]).enumerate() {
            assert_eq!(*digest, Digest::of(input), "input {i} of {} bytes", input.len());
        }
        // The chunks of an input of several, with their counters: every
        // instruction set this CPU has gives the same chaining values (the
        // one `hash_each` chose gave the right hash above).
        for input in inputs.iter().filter(|i| i.len() > CHUNK_LEN && i.len() <= LANE_CHUNKS * CHUNK_LEN) {
            let mut lanes = [Job::IDLE; LANES];
            for (c, (lane, chunk)) in lanes.iter_mut().zip(input.chunks(CHUNK_LEN)).enumerate() {
                *lane = Job { data: chunk, counter: c as u64, first: CHUNK_START, last: CHUNK_END };
            }
            let outputs = backends(&lanes, input.len().div_ceil(CHUNK_LEN));
            for (name, cvs) in &outputs {
                assert_eq!(*cvs, outputs[0].1, "{name} and {}: {} bytes", outputs[0].0, input.len());
            }
        }
        // Each instruction set this CPU has, whichever `hash_each` chose.
        for group in inputs.iter().filter(|i| i.len() <= CHUNK_LEN).collect::<Vec<_>>().chunks(LANES) {
            let mut lanes = [Job::IDLE; LANES];
            for (lane, input) in lanes.iter_mut().zip(group) {
                *lane = Job { data: input, counter: 0, first: CHUNK_START, last: CHUNK_END | ROOT };
            }
            for (name, cvs) in backends(&lanes, group.len()) {
                for (l, input) in group.iter().enumerate() {
                    let words: Vec<u32> = Digest::of(input).0.chunks(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
                    assert_eq!((0..8).map(|w| cvs[w][l]).collect::<Vec<_>>(), words, "{name}, lane {l}, {} bytes", input.len());
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn backends(lanes: &[Job<'_>; LANES], used: usize) -> Vec<(&'static str, [Lanes; 8])> {
        let mut out = Vec::new();
        if avx512::available() {
            // SAFETY: the CPU has AVX-512F and AVX-512BW.
            out.push(("avx512", unsafe { avx512::hash_group(lanes, used) }));
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            out.push(("avx2", unsafe { hash_group_avx2(lanes, used) }));
        }
        out
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn backends(_: &[Job<'_>; LANES], _: usize) -> Vec<(&'static str, [Lanes; 8])> {
        Vec::new()
    }

    #[test]
    fn every_length_up_to_two_chunks_matches_blake3() {
        // Each length in a group of its own and in groups of every size.
        let all: Vec<Vec<u8>> = (0..=2 * CHUNK_LEN + 1).map(|n| input(n, n as u64)).collect();
        check(&all);
        for n in 0..=CHUNK_LEN + 1 {
            check(&[input(n, 7)]);
        }
        for group in [1, 2, 15, 16, 17, 31, 33] {
            check(&all[..group]);
        }
    }

    #[test]
    fn inputs_of_many_chunks_match_blake3_at_every_chunk_boundary() {
        // Each chunk count up to one past the lanes' limit, at a whole
        // number of chunks and one byte either side, alone and together
        // (trees of different heights merged side by side).
        let mut all = Vec::new();
        for chunks in 1..=LANE_CHUNKS + 1 {
            for n in [chunks * CHUNK_LEN - 1, chunks * CHUNK_LEN, chunks * CHUNK_LEN + 1] {
                check(&[input(n, n as u64)]);
                all.push(input(n, n as u64 + 1));
            }
        }
        check(&all);
        all.reverse();
        check(&all);
        // Many trees of the same shape share every level's lanes.
        for chunks in [2, 3, 5, 16] {
            check(&(0..40).map(|i| input(chunks * CHUNK_LEN - 7, i)).collect::<Vec<_>>());
        }
    }

    #[test]
    fn mixed_lengths_in_any_order_match_blake3() {
        for seed in 0..64u64 {
            let count = (seed * 7 % 70) as usize;
            let inputs: Vec<Vec<u8>> = (0..count)
                .map(|i| {
                    let len = blake3::hash(&(seed * 1000 + i as u64).to_le_bytes()).as_bytes()[0] as usize * 5;
                    input(len, seed ^ i as u64)
                })
                .collect();
            check(&inputs);
        }
        check(&[]);
        for count in [16, 17, 32, 256] {
            check(&(0..count).map(|i| input(200, i)).collect::<Vec<_>>());
        }
    }

    proptest::proptest! {
        #[test]
        fn any_inputs_hash_as_blake3_does(inputs in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..1300), 0..40)) {
            check(&inputs);
        }

        #[test]
        fn any_inputs_of_many_chunks_hash_as_blake3_does(lens in proptest::collection::vec(0..20_000usize, 0..24), seed in 0..u64::MAX) {
            check(&lens.iter().enumerate().map(|(i, &n)| input(n, seed ^ i as u64)).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_changed_byte_changes_only_its_own_hash() {
        let inputs: Vec<Vec<u8>> = (0..16).map(|i| input(200, i)).collect();
        let mut changed = inputs.clone();
        changed[5][133] ^= 1;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        hash_each(&inputs.iter().map(Vec::as_slice).collect::<Vec<_>>(), &mut a);
        hash_each(&changed.iter().map(Vec::as_slice).collect::<Vec<_>>(), &mut b);
        for i in 0..16 {
            assert_eq!(a[i] == b[i], i != 5, "input {i}");
        }
    }
}
