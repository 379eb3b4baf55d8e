//! SHA-256 of many short values at once: several one-block messages compressed side by side.
//!
//! Most values a delivery hashes (emails, phone numbers, account ids) fit in one 64-byte
//! block. One message at a time, the x86 SHA extensions wait on each round's result
//! (`sha256rnds2` has a latency of several cycles and a throughput of one or two per
//! cycle), so the `sha2` crate leaves the unit mostly idle; four independent messages
//! interleaved fill it. Longer values, and CPUs without the extensions, go through `sha2`.

use sha2::{Digest, Sha256};

/// Messages of at most this many bytes fit in one block with their padding and length.
pub const ONE_BLOCK_MAX: usize = 55;

/// How many messages are compressed side by side (two measured 1.55x one here; four no
/// faster than two).
pub const LANES: usize = 2;

/// The SHA-256 digests of `LANES` messages of at most `ONE_BLOCK_MAX` bytes each.
#[cfg(test)]
fn sha256_short_lanes(messages: [&[u8]; LANES]) -> [[u8; 32]; LANES] {
    sha256_block_lanes(&messages.map(|m| padded_block(m).expect("one block")))
}

/// The SHA-256 digests of `LANES` messages given as their one padded block each
/// ([`padded_block`]).
#[inline]
pub fn sha256_block_lanes(blocks: &[[u8; 64]; LANES]) -> [[u8; 32]; LANES] {
    #[cfg(target_arch = "x86_64")]
    if has_sha_extensions() {
        // SAFETY: the CPU has the features `x86::compress_lanes` is compiled for.
        return unsafe { x86::compress_lanes(blocks) };
    }
    blocks.map(|block| {
        let length = u64::from_be_bytes(block[56..].try_into().expect("8 bytes")) / 8;
        Sha256::digest(&block[..length as usize]).into()
    })
}

#[cfg(target_arch = "x86_64")]
fn has_sha_extensions() -> bool {
    std::arch::is_x86_feature_detected!("sha")
        && std::arch::is_x86_feature_detected!("sse4.1")
        && std::arch::is_x86_feature_detected!("ssse3")
}

/// A message with SHA-256's padding (0x80, zeros, its length in bits) when that fits in
/// one block, i.e. the message has at most `ONE_BLOCK_MAX` bytes.
#[inline(always)]
pub fn padded_block(message: &[u8]) -> Option<[u8; 64]> {
    if message.len() > ONE_BLOCK_MAX {
        return None;
    }
    let mut block = [0u8; 64];
    block[..message.len()].copy_from_slice(message);
    block[message.len()] = 0x80;
    block[56..].copy_from_slice(&((message.len() as u64) * 8).to_be_bytes());
    Some(block)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// The initial hash value H(0).
    const H0: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    #[inline(always)]
    unsafe fn round_constants(i: usize) -> __m128i {
        _mm_loadu_si128(K.as_ptr().add(4 * i) as *const __m128i)
    }

    #[inline(always)]
    unsafe fn schedule(v0: __m128i, v1: __m128i, v2: __m128i, v3: __m128i) -> __m128i {
        let t1 = _mm_sha256msg1_epu32(v0, v1);
        let t2 = _mm_alignr_epi8(v3, v2, 4);
        _mm_sha256msg2_epu32(_mm_add_epi32(t1, t2), v3)
    }

    /// One block per lane from H(0), the lanes' rounds interleaved; the digests' bytes.
    /// The register layout (ABEF/CDGH) is Intel's, as in the `sha2` crate's x86 backend.
    // The lanes index several arrays in step, so plain index loops read best.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn compress_lanes<const N: usize>(blocks: &[[u8; 64]; N]) -> [[u8; 32]; N] {
        let byte_swap = _mm_set_epi64x(
            0x0C0D_0E0F_0809_0A0Bu64 as i64,
            0x0405_0607_0001_0203u64 as i64,
        );
        let h0 = H0.as_ptr() as *const __m128i;
        let dcba = _mm_shuffle_epi32(_mm_loadu_si128(h0), 0xB1);
        let efgh = _mm_shuffle_epi32(_mm_loadu_si128(h0.add(1)), 0x1B);
        let abef_start = _mm_alignr_epi8(dcba, efgh, 8);
        let cdgh_start = _mm_blend_epi16(efgh, dcba, 0xF0);
        let mut abef = [abef_start; N];
        let mut cdgh = [cdgh_start; N];
        let mut w = [[_mm_setzero_si128(); 4]; N];
        for lane in 0..N {
            let p = blocks[lane].as_ptr() as *const __m128i;
            for q in 0..4 {
                w[lane][q] = _mm_shuffle_epi8(_mm_loadu_si128(p.add(q)), byte_swap);
            }
        }
        // Four rounds per step; the step number is a literal so every index is constant.
        macro_rules! step {
            ($i:expr) => {
                for lane in 0..N {
                    let words = if $i < 4 {
                        w[lane][$i % 4]
                    } else {
                        let next = schedule(
                            w[lane][$i % 4],
                            w[lane][($i + 1) % 4],
                            w[lane][($i + 2) % 4],
                            w[lane][($i + 3) % 4],
                        );
                        w[lane][$i % 4] = next;
                        next
                    };
                    let t1 = _mm_add_epi32(words, round_constants($i));
                    cdgh[lane] = _mm_sha256rnds2_epu32(cdgh[lane], abef[lane], t1);
                    let t2 = _mm_shuffle_epi32(t1, 0x0E);
                    abef[lane] = _mm_sha256rnds2_epu32(abef[lane], cdgh[lane], t2);
                }
            };
        }
        step!(0);
        step!(1);
        step!(2);
        step!(3);
        step!(4);
        step!(5);
        step!(6);
        step!(7);
        step!(8);
        step!(9);
        step!(10);
        step!(11);
        step!(12);
        step!(13);
        step!(14);
        step!(15);
        let mut out = [[0u8; 32]; N];
        for lane in 0..N {
            let abef = _mm_add_epi32(abef[lane], abef_start);
            let cdgh = _mm_add_epi32(cdgh[lane], cdgh_start);
            let feba = _mm_shuffle_epi32(abef, 0x1B);
            let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
            let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
            let hgef = _mm_alignr_epi8(dchg, feba, 8);
            let o = out[lane].as_mut_ptr() as *mut __m128i;
            _mm_storeu_si128(o, _mm_shuffle_epi8(dcba, byte_swap));
            _mm_storeu_si128(o.add(1), _mm_shuffle_epi8(hgef, byte_swap));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length from 0 to 55 bytes (the one-block limit), in lanes of different
    /// lengths, against the `sha2` crate.
    #[test]
    fn lanes_match_sha2_for_every_one_block_length() {
        let bytes: Vec<u8> = (0..64u32).map(|i| (i * 37 + 11) as u8).collect();
        for len in 0..=ONE_BLOCK_MAX {
            let lens: [usize; LANES] = std::array::from_fn(|lane| match lane % 2 {
                0 => len,
                _ => ONE_BLOCK_MAX - len,
            });
            let messages = lens.map(|l| &bytes[..l]);
            let ours = sha256_short_lanes(messages);
            for (lane, m) in messages.iter().enumerate() {
                let theirs: [u8; 32] = Sha256::digest(m).into();
                assert_eq!(ours[lane], theirs, "length {}", m.len());
            }
        }
    }

    /// FIPS 180-2's one-block vector "abc", and the empty message.
    #[test]
    fn published_vectors() {
        let digests = sha256_short_lanes(std::array::from_fn(|lane| match lane % 2 {
            0 => &b"abc"[..],
            _ => &b""[..],
        }));
        let (abc, empty) = (digests[0], digests[1]);
        assert_eq!(
            hex::encode(abc),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(empty),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
