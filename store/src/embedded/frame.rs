//! Record framing: `[u32 length][u32 payload CRC][u32 header CRC][payload]`,
//! little-endian, CRC32 (IEEE). The header CRC covers the length and the
//! payload CRC, so a damaged length is recognised as damage; without it, a
//! flipped bit in a length in the middle of the log could make the rest of
//! the log look like one frame cut short, that is, like a torn write.
//!
//! [`scan`] reads frames until the end of a log and decides what a bad end
//! means: a *torn tail* (the log ends in a frame that is not whole: most
//! often the last write, whose fsync never completed and which was never
//! acknowledged; but a file truncated by something else ends the same way,
//! and the two cannot be told apart) or *corruption* (damage to data that
//! was written whole, which must be neither cut off silently nor loaded).

/// Bytes before a frame's payload.
pub(crate) const HEADER_LEN: usize = 12;

/// Sector size used to recognise a write that reached the disk only in
/// part: on a power cut, whole sectors of the last write may stay zero.
const SECTOR: usize = 512;

fn crc(parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

/// Appends one frame to `out`.
pub(crate) fn encode(payload: &[u8], out: &mut Vec<u8>) {
    // Payloads are bounded by the store's limits (one group commit, or one
    // snapshot chunk), far below 4 GiB; a payload too large for the length
    // field would fail its checksum on reading, never be misread.
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    let payload_crc = crc(&[payload]).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&payload_crc);
    out.extend_from_slice(&crc(&[&len, &payload_crc]).to_le_bytes());
    out.extend_from_slice(payload);
}

/// How a scan of frames ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// Every byte belongs to a good frame.
    Clean,
    /// The frames end with a torn write from `offset` on.
    Torn { offset: usize, reason: String },
    /// The frame at `offset` is damaged.
    Corrupt { offset: usize, reason: String },
}

/// A good frame: where it starts and its payload.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub(crate) offset: usize,
    pub(crate) payload: &'a [u8],
}

/// Reads the frames of `data` from `start`.
///
/// Frames are only ever appended, each group commit as one frame in one
/// write followed by an fsync, so only the last frame can be torn. The first
/// bad frame, at offset V, is a torn tail when:
/// - fewer bytes than a header are left, or its (checksummed) length runs
///   past the end of the file: the last write stopped short;
/// - every byte from V to the end is zero: the file was extended but the
///   data never written;
/// - its header fails its checksum, straddles a sector boundary, and the
///   sector after the boundary is zero: the header's second half was never
///   written;
/// - it is the last frame (ends exactly at the end of the file), its payload
///   fails its checksum and it has a whole sector of zeros: part of the last
///   write never reached the disk.
///
/// Anything else is corruption.
pub(crate) fn scan(data: &[u8], start: usize) -> (Vec<Frame<'_>>, End) {
    let mut frames = Vec::new();
    let mut offset = start;
    let end = loop {
        let rest = &data[offset..];
        if rest.is_empty() {
            break End::Clean;
        }
        if rest.iter().all(|&b| b == 0) {
            break End::Torn {
                offset,
                reason: "zeros where a frame should be (space allocated but never written)"
                    .to_owned(),
            };
        }
        if rest.len() < HEADER_LEN {
            break End::Torn {
                offset,
                reason: format!("{} bytes of a frame header", rest.len()),
            };
        }
        let field = |at: usize| [rest[at], rest[at + 1], rest[at + 2], rest[at + 3]];
        let (len_bytes, payload_crc_bytes) = (field(0), field(4));
        if crc(&[&len_bytes, &payload_crc_bytes]) != u32::from_le_bytes(field(8)) {
            break if header_half_written(data, offset) {
                End::Torn {
                    offset,
                    reason: "frame header only partly written".to_owned(),
                }
            } else {
                End::Corrupt {
                    offset,
                    reason: "frame header checksum mismatch".to_owned(),
                }
            };
        }
        let len = u32::from_le_bytes(len_bytes) as usize;
        if HEADER_LEN + len > rest.len() {
            break End::Torn {
                offset,
                reason: format!(
                    "frame of {len} bytes but only {} bytes left in the file",
                    rest.len() - HEADER_LEN
                ),
            };
        }
        let payload = &rest[HEADER_LEN..HEADER_LEN + len];
        if crc(&[payload]) != u32::from_le_bytes(payload_crc_bytes) {
            let is_last = HEADER_LEN + len == rest.len();
            break if is_last && has_zero_sector(data, offset, data.len()) {
                End::Torn {
                    offset,
                    reason: "last frame has a sector that was never written".to_owned(),
                }
            } else {
                End::Corrupt {
                    offset,
                    reason: "frame checksum mismatch".to_owned(),
                }
            };
        }
        frames.push(Frame { offset, payload });
        offset += HEADER_LEN + len;
    };
    (frames, end)
}

/// Whether the header at `offset` crosses a sector boundary after which the
/// sector (up to the end of the file) is all zeros.
fn header_half_written(data: &[u8], offset: usize) -> bool {
    let boundary = (offset / SECTOR + 1) * SECTOR;
    boundary < offset + HEADER_LEN
        && data[boundary..data.len().min(boundary + SECTOR)]
            .iter()
            .all(|&b| b == 0)
}

/// Whether `data[from..to]` contains a whole, sector-aligned run of zeros.
fn has_zero_sector(data: &[u8], from: usize, to: usize) -> bool {
    let first = from.div_ceil(SECTOR) * SECTOR;
    (first..to)
        .step_by(SECTOR)
        .filter(|&s| s + SECTOR <= to)
        .any(|s| data[s..s + SECTOR].iter().all(|&b| b == 0))
}

/// Length of a log file's header: [`log_header`].
pub(crate) const LOG_HEADER_LEN: usize = 20;

/// The header of a log file (the embedded store's and the raft log's): its
/// magic, its generation and a CRC of both.
pub(crate) fn log_header(magic: &[u8; 8], generation: u64) -> [u8; LOG_HEADER_LEN] {
    let mut header = [0; LOG_HEADER_LEN];
    header[..8].copy_from_slice(magic);
    header[8..16].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&header[..16]);
    header[16..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The generation in a file name `<prefix><16 hex digits>` (the embedded
/// store's and the raft log's files are named so).
pub(crate) fn parse_generation(name: &str, prefix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?;
    if digits.len() != 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Makes a directory's entries (a file created, renamed or removed)
/// durable.
pub(crate) fn sync_dir(dir: &std::path::Path) -> crate::StoreResult<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| crate::StoreError::io("syncing directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode(p, &mut out);
        }
        out
    }

    #[test]
    fn good_frames_scan_clean() {
        let data = log(&[b"one", b"", b"three"]);
        let (frames, end) = scan(&data, 0);
        assert_eq!(end, End::Clean);
        let payloads: Vec<&[u8]> = frames.iter().map(|f| f.payload).collect();
        assert_eq!(payloads, [&b"one"[..], b"", b"three"]);
        assert_eq!(frames[1].offset, HEADER_LEN + 3);
    }

    #[test]
    fn a_cut_anywhere_in_the_last_frame_is_torn_at_its_start() {
        let data = log(&[b"first", b"second frame"]);
        let last = HEADER_LEN + 5;
        for cut in last + 1..data.len() {
            let (frames, end) = scan(&data[..cut], 0);
            assert_eq!(frames.len(), 1, "cut at {cut}");
            assert!(
                matches!(end, End::Torn { offset, .. } if offset == last),
                "cut at {cut}: {end:?}"
            );
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_corruption_at_its_frame() {
        let data = log(&[b"first", b"second", b"third"]);
        let second = HEADER_LEN + 5;
        for at in second..second + HEADER_LEN + 6 {
            for bit in 0..8 {
                let mut bad = data.clone();
                bad[at] ^= 1 << bit;
                let (frames, end) = scan(&bad, 0);
                assert_eq!(frames.len(), 1, "flip at {at}");
                assert!(
                    matches!(end, End::Corrupt { offset, .. } if offset == second),
                    "flip of bit {bit} at {at}: {end:?}"
                );
            }
        }
        // Even in the last frame, a flipped bit without a zero sector is
        // corruption, not a torn write.
        let mut bad = data.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(matches!(scan(&bad, 0).1, End::Corrupt { .. }));
    }

    #[test]
    fn zero_filled_tails_and_zero_sectors_in_the_last_frame_are_torn() {
        let mut data = log(&[b"first"]);
        let good = data.len();
        data.extend_from_slice(&[0; 700]);
        assert!(matches!(scan(&data, 0).1, End::Torn { offset, .. } if offset == good));

        let big = vec![7u8; 3000];
        let mut data = log(&[b"first", &big]);
        let last = HEADER_LEN + 5;
        data[1024..1536].fill(0);
        let (frames, end) = scan(&data, 0);
        assert_eq!(frames.len(), 1);
        assert!(
            matches!(end, End::Torn { offset, .. } if offset == last),
            "{end:?}"
        );

        // The same damage in a frame that is not the last is corruption.
        let mut data = log(&[b"first", &big, b"after"]);
        data[1024..1536].fill(0);
        assert!(matches!(scan(&data, 0).1, End::Corrupt { .. }));
    }

    #[test]
    fn a_header_cut_by_an_unwritten_sector_is_torn() {
        // A first frame that puts the second frame's header across the
        // 512-byte boundary.
        let first = vec![1u8; 512 - 2 * HEADER_LEN + 4];
        let mut data = log(&[&first, &[9u8; 600]]);
        let second = HEADER_LEN + first.len();
        assert!(second < 512 && second + HEADER_LEN > 512);
        data[512..].fill(0);
        let (frames, end) = scan(&data, 0);
        assert_eq!(frames.len(), 1);
        assert!(
            matches!(end, End::Torn { offset, .. } if offset == second),
            "{end:?}"
        );
    }
}
