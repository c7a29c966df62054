//! Ogg Opus files (RFC 7845 on the Ogg framing of RFC 3533).
//!
//! An Ogg stream is a run of pages: a 27-byte header (`OggS`, version 0,
//! flags for continued packet / beginning / end of stream, a 64-bit
//! granule position, serial number, page sequence number, CRC and the
//! number of segments), a segment table of lacing values and the data.
//! A packet is laced as a run of 255s ended by a value under 255 (so a
//! packet of exactly 255·n bytes ends with a 0) and may continue onto the
//! next page. An Ogg Opus stream starts with a page holding only the
//! `OpusHead` packet, then the `OpusTags` packet on pages of its own, then
//! the audio; a page's granule position is the 48 kHz sample count
//! (pre-skip included) at the end of the last packet that ends on it, or
//! −1 when none does.
//!
//! [`OggOpusWriter`] writes such a stream (mono or stereo, channel mapping
//! family 0); [`read_opus_packets`] reads one back, checking CRCs and page
//! order, for tests and for checking derived files.

use std::io::Write;

/// Pages hold at most this many packets ending on them (about a second of 20 ms audio)…
const MAX_PACKETS_PER_PAGE: usize = 50;
/// … and about this many bytes of data.
const MAX_PAGE_DATA: usize = 4096;

const FLAG_CONTINUED: u8 = 0x01;
const FLAG_BOS: u8 = 0x02;
const FLAG_EOS: u8 = 0x04;

/// The granule position of a page on which no packet ends.
const NO_GRANULE: u64 = u64::MAX;

/// The Ogg CRC-32: polynomial 0x04c11db7, most significant bit first, initial
/// value 0, no final XOR; one table entry per value of the top byte.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04c1_1db7
            } else {
                r << 1
            };
            k += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
};

fn crc_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crc = (crc << 8) ^ CRC_TABLE[((crc >> 24) as u8 ^ b) as usize];
    }
    crc
}

/// The Ogg CRC-32 of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc_update(0, bytes)
}

/// One page before it is serialised.
struct Page {
    flags: u8,
    granule: u64,
    sequence: u32,
    lacing: Vec<u8>,
    data: Vec<u8>,
}

impl Page {
    fn write(&self, serial: u32, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(b"OggS");
        out.push(0);
        out.push(self.flags);
        out.extend_from_slice(&self.granule.to_le_bytes());
        out.extend_from_slice(&serial.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.push(self.lacing.len() as u8);
        out.extend_from_slice(&self.lacing);
        out.extend_from_slice(&self.data);
        let crc = crc32(&out[start..]);
        out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Writes an Ogg Opus stream into memory, page by page.
///
/// The finished pages are in [`OggOpusWriter::take_pages`] (or go to any
/// writer through [`OggOpusWriter::write_pages`]) and [`OggOpusWriter::finish`]
/// returns the rest. The last complete page is held back until the next one
/// is complete, so that `finish` can mark it end of stream.
pub struct OggOpusWriter {
    out: Vec<u8>,
    serial: u32,
    sequence: u32,
    /// The page being filled.
    lacing: Vec<u8>,
    data: Vec<u8>,
    packets: usize,
    granule: Option<u64>,
    continued: bool,
    held: Option<Page>,
    last_granule: u64,
}

impl OggOpusWriter {
    /// Starts a stream: the `OpusHead` page (channel mapping family 0, so
    /// `channels` is clamped to 1 or 2; output gain 0) and the `OpusTags`
    /// page (vendor `recvault`, no comments). `input_sample_rate` is
    /// informational (the original rate; 0 if unknown).
    pub fn new(serial: u32, channels: u8, pre_skip: u16, input_sample_rate: u32) -> Self {
        let mut w = Self {
            out: Vec::new(),
            serial,
            sequence: 0,
            lacing: Vec::new(),
            data: Vec::new(),
            packets: 0,
            granule: None,
            continued: false,
            held: None,
            last_granule: 0,
        };
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1);
        head.push(channels.clamp(1, 2));
        head.extend_from_slice(&pre_skip.to_le_bytes());
        head.extend_from_slice(&input_sample_rate.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes());
        head.push(0);
        w.add_packet(&head, 0);
        w.flush_page();
        let vendor = b"recvault";
        let mut tags = Vec::with_capacity(16 + vendor.len() + 4);
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        w.add_packet(&tags, 0);
        w.flush_page();
        w
    }

    /// Adds one Opus packet. `granule_after` is the granule position at its
    /// end: the pre-skip plus the 48 kHz samples of all packets so far, this
    /// one included. Granule positions never go backwards: a smaller value
    /// is raised to the previous one.
    pub fn push(&mut self, packet: &[u8], granule_after: u64) {
        let granule = granule_after.max(self.last_granule).min(NO_GRANULE - 1);
        self.last_granule = granule;
        self.add_packet(packet, granule);
        if self.packets >= MAX_PACKETS_PER_PAGE || self.data.len() >= MAX_PAGE_DATA {
            self.flush_page();
        }
    }

    /// The pages completed so far, removed from the writer.
    pub fn take_pages(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Writes the pages completed so far to `w` and removes them.
    pub fn write_pages<W: Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// Ends the stream: the last page gets the end-of-stream flag. Returns
    /// the pages not yet taken.
    pub fn finish(mut self) -> Vec<u8> {
        self.flush_page();
        if let Some(mut last) = self.held.take() {
            last.flags |= FLAG_EOS;
            last.write(self.serial, &mut self.out);
        }
        self.out
    }

    /// Laces a packet onto the current page, starting new pages as needed.
    fn add_packet(&mut self, packet: &[u8], granule: u64) {
        let mut rest = packet;
        loop {
            let n = rest.len().min(255);
            if self.lacing.len() == 255
                || (!self.lacing.is_empty() && self.data.len() + n > MAX_PAGE_DATA)
            {
                let inside_packet = rest.len() < packet.len();
                self.flush_page();
                self.continued = inside_packet;
            }
            self.lacing.push(n as u8);
            self.data.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if n < 255 {
                break;
            }
        }
        self.packets += 1;
        self.granule = Some(granule);
    }

    /// Closes the current page (if it has anything) and writes the held one.
    fn flush_page(&mut self) {
        if self.lacing.is_empty() {
            return;
        }
        let mut flags = 0;
        if self.continued {
            flags |= FLAG_CONTINUED;
        }
        if self.sequence == 0 {
            flags |= FLAG_BOS;
        }
        let page = Page {
            flags,
            granule: self.granule.take().unwrap_or(NO_GRANULE),
            sequence: self.sequence,
            lacing: std::mem::take(&mut self.lacing),
            data: std::mem::take(&mut self.data),
        };
        self.sequence = self.sequence.wrapping_add(1);
        self.packets = 0;
        self.continued = false;
        if let Some(held) = self.held.replace(page) {
            held.write(self.serial, &mut self.out);
        }
    }
}

/// The audio packets of the first Ogg Opus stream in `bytes`, each with the
/// granule position of the page it ends on.
///
/// Checks each page's capture pattern, version and CRC, that the first page
/// begins the stream and page sequence numbers follow on, that packets are
/// continued exactly where a page says so, and that the first two packets
/// are `OpusHead` and `OpusTags` (which are not returned). Pages of other
/// logical streams are skipped; reading stops at the end-of-stream page.
pub fn read_opus_packets(bytes: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, String> {
    read(bytes, true)
}

fn read(bytes: &[u8], check_crc: bool) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut stream: Option<(u32, u32)> = None; // serial, next page sequence
    let mut partial: Option<Vec<u8>> = None;
    let mut headers = 0;
    while at < bytes.len() {
        let header = bytes
            .get(at..at + 27)
            .ok_or_else(|| format!("truncated page header at byte {at}"))?;
        if &header[..4] != b"OggS" {
            return Err(format!("no Ogg page at byte {at}"));
        }
        if header[4] != 0 {
            return Err(format!("Ogg version {} at byte {at}", header[4]));
        }
        let flags = header[5];
        let u32_at =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let granule = (u32_at(6) as u64) | (u32_at(10) as u64) << 32;
        let (serial, sequence, crc) = (u32_at(14), u32_at(18), u32_at(22));
        let segments = header[26] as usize;
        let lacing = bytes
            .get(at + 27..at + 27 + segments)
            .ok_or_else(|| format!("truncated segment table at byte {at}"))?;
        let data_len: usize = lacing.iter().map(|&l| l as usize).sum();
        let end = at + 27 + segments + data_len;
        let page = bytes
            .get(at..end)
            .ok_or_else(|| format!("truncated page at byte {at}"))?;
        if check_crc {
            let computed = crc_update(crc_update(crc_update(0, &page[..22]), &[0; 4]), &page[26..]);
            if computed != crc {
                return Err(format!(
                    "bad CRC on the page at byte {at}: {crc:#010x}, computed {computed:#010x}"
                ));
            }
        }
        let page_start = at;
        at = end;
        match stream {
            None if flags & FLAG_BOS == 0 => {
                return Err(format!(
                    "the page at byte {page_start} does not begin a stream"
                ))
            }
            None => stream = Some((serial, sequence)),
            Some((s, _)) if s != serial => continue,
            Some(_) => {}
        }
        if let Some((_, expected)) = stream.as_mut() {
            if sequence != *expected {
                return Err(format!(
                    "page sequence {sequence} at byte {page_start}, expected {expected}"
                ));
            }
            *expected = expected.wrapping_add(1);
        }
        match (flags & FLAG_CONTINUED != 0, partial.is_some()) {
            (true, false) => {
                return Err(format!(
                    "the page at byte {page_start} continues a packet that did not start"
                ))
            }
            (false, true) => {
                return Err(format!(
                    "a packet is cut off by the page at byte {page_start}"
                ))
            }
            _ => {}
        }
        let mut data = &page[27 + segments..];
        for &l in lacing {
            let (segment, rest) = data
                .split_at_checked(l as usize)
                .ok_or_else(|| format!("the page at byte {page_start} is short"))?;
            data = rest;
            partial
                .get_or_insert_with(Vec::new)
                .extend_from_slice(segment);
            if l == 255 {
                continue;
            }
            let packet = partial.take().unwrap_or_default();
            match headers {
                0 if packet.starts_with(b"OpusHead") && packet.len() >= 19 => headers += 1,
                0 => return Err("the first packet is not an OpusHead".into()),
                1 if packet.starts_with(b"OpusTags") => headers += 1,
                1 => return Err("the second packet is not OpusTags".into()),
                _ if granule == NO_GRANULE => {
                    return Err(format!(
                        "the page at byte {page_start} ends a packet but has no granule position"
                    ))
                }
                _ => out.push((granule, packet)),
            }
        }
        if flags & FLAG_EOS != 0 {
            break;
        }
    }
    if partial.is_some() {
        return Err("the stream ends inside a packet".into());
    }
    if headers < 2 {
        return Err("no OpusHead and OpusTags".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::media::testkit::Rng;

    /// The CRC by the definition: the message times x^32, modulo the
    /// generator polynomial, one bit at a time.
    fn crc_by_division(bytes: &[u8]) -> u32 {
        let mut r: u64 = 0;
        for bit in bytes
            .iter()
            .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
            .chain(std::iter::repeat_n(0, 32))
        {
            r = (r << 1) | bit as u64;
            if r & (1 << 32) != 0 {
                r ^= 0x1_04c1_1db7;
            }
        }
        r as u32
    }

    /// A page as the reader sees it, for the structure tests.
    #[derive(Debug)]
    struct RawPage {
        flags: u8,
        granule: u64,
        serial: u32,
        sequence: u32,
        lacing: Vec<u8>,
        data: Vec<u8>,
    }

    fn pages(mut bytes: &[u8]) -> Vec<RawPage> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            assert_eq!(&bytes[..4], b"OggS");
            let n = bytes[26] as usize;
            let lacing = bytes[27..27 + n].to_vec();
            let len = 27 + n + lacing.iter().map(|&l| l as usize).sum::<usize>();
            let mut zeroed = bytes[..len].to_vec();
            zeroed[22..26].fill(0);
            assert_eq!(
                crc32(&zeroed),
                u32::from_le_bytes(bytes[22..26].try_into().unwrap())
            );
            out.push(RawPage {
                flags: bytes[5],
                granule: u64::from_le_bytes(bytes[6..14].try_into().unwrap()),
                serial: u32::from_le_bytes(bytes[14..18].try_into().unwrap()),
                sequence: u32::from_le_bytes(bytes[18..22].try_into().unwrap()),
                data: bytes[27 + n..len].to_vec(),
                lacing,
            });
            bytes = &bytes[len..];
        }
        out
    }

    #[test]
    fn crc_known_values() {
        // By hand (polynomial long division of "OggS" · x^32).
        assert_eq!(crc32(b"OggS"), 0x5fb0_a94f);
        assert_eq!(crc_by_division(b"OggS"), 0x5fb0_a94f);
        // The catalogued check value of CRC-32/CKSUM (same polynomial, init
        // 0, no reflection) is 0x765e7680 after its final XOR of all ones.
        assert_eq!(crc32(b"123456789"), 0x765e_7680 ^ 0xffff_ffff);
        assert_eq!(crc32(b""), 0);
        let mut rng = Rng(77);
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            assert_eq!(crc32(&bytes), crc_by_division(&bytes));
        }
    }

    #[test]
    fn headers() {
        let bytes = OggOpusWriter::new(0x1234_5678, 1, 312, 48_000).finish();
        let p = pages(&bytes);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].flags, FLAG_BOS);
        assert_eq!(p[1].flags, FLAG_EOS);
        assert_eq!((p[0].sequence, p[1].sequence), (0, 1));
        assert_eq!((p[0].granule, p[1].granule), (0, 0));
        assert!(p.iter().all(|p| p.serial == 0x1234_5678));
        assert_eq!(
            p[0].data,
            [
                b'O', b'p', b'u', b's', b'H', b'e', b'a', b'd', 1, 1, 0x38, 1, 0x80, 0xbb, 0, 0, 0,
                0, 0
            ]
        );
        assert_eq!(p[0].lacing, [19]);
        assert!(p[1].data.starts_with(b"OpusTags\x08\0\0\0recvault"));
        assert_eq!(read_opus_packets(&bytes), Ok(vec![]));
        // Channel mapping family 0 allows one or two channels.
        assert_eq!(
            pages(&OggOpusWriter::new(1, 6, 0, 0).finish())[0].data[9],
            2
        );
        assert_eq!(
            pages(&OggOpusWriter::new(1, 0, 0, 0).finish())[0].data[9],
            1
        );
    }

    #[test]
    fn round_trip_with_lacing_edge_cases() {
        let sizes = [
            3, 0, 254, 255, 256, 510, 511, 1, 5000, 65_025, 70_000, 3, 3, 765,
        ];
        let mut w = OggOpusWriter::new(7, 2, 312, 0);
        let mut want = Vec::new();
        let mut granule = 312;
        for (i, &n) in sizes.iter().enumerate() {
            let packet: Vec<u8> = (0..n).map(|k| (k * 7 + i) as u8).collect();
            granule += 960;
            w.push(&packet, granule);
            want.push(packet);
        }
        let bytes = w.finish();
        let got = read_opus_packets(&bytes).unwrap();
        let packets: Vec<Vec<u8>> = got.iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(packets, want);
        // Each packet carries the granule of the page it ends on: the
        // granule after the last packet ending there, so never less than its own.
        for (i, (g, _)) in got.iter().enumerate() {
            assert!(*g >= 312 + 960 * (i as u64 + 1));
        }
        assert_eq!(got.last().unwrap().0, 312 + 960 * sizes.len() as u64);

        let p = pages(&bytes);
        for (k, page) in p.iter().enumerate() {
            assert_eq!(page.sequence, k as u32);
            assert_eq!(page.flags & FLAG_BOS != 0, k == 0);
            assert_eq!(page.flags & FLAG_EOS != 0, k == p.len() - 1);
            assert!(page.lacing.len() <= 255);
            assert!(page.data.len() <= MAX_PAGE_DATA);
            // A page that continues a packet follows one ending in a 255.
            if page.flags & FLAG_CONTINUED != 0 {
                assert_eq!(p[k - 1].lacing.last(), Some(&255));
            } else if k > 0 {
                assert_ne!(p[k - 1].lacing.last(), Some(&255));
            }
            // No packet ends on a page with granule −1.
            let ends = page.lacing.iter().filter(|&&l| l < 255).count();
            assert_eq!(page.granule == NO_GRANULE, ends == 0, "page {k}");
        }
        // Lacing of a 255-byte packet: 255 then 0; of 510: 255, 255, 0.
        let all: Vec<u8> = p.iter().skip(2).flat_map(|p| p.lacing.clone()).collect();
        assert_eq!(&all[..9], [3, 0, 254, 255, 0, 255, 1, 255, 255]);
        assert_eq!(&all[9..11], [0, 255]);
    }

    #[test]
    fn page_limits() {
        let mut w = OggOpusWriter::new(1, 1, 0, 48_000);
        for i in 0..1000u64 {
            w.push(&[0xf8, 0xff, 0xfe], 960 * (i + 1));
        }
        let bytes = w.finish();
        let p = pages(&bytes);
        assert_eq!(p.len(), 2 + 20);
        assert!(p[2..]
            .iter()
            .all(|p| p.lacing.len() == MAX_PACKETS_PER_PAGE));
        assert_eq!(p[2].granule, 960 * 50);
        assert_eq!(p.last().unwrap().granule, 960 * 1000);
        // Larger packets fill pages by size.
        let mut w = OggOpusWriter::new(1, 1, 0, 48_000);
        for i in 0..100u64 {
            w.push(&[0xfc; 400], 960 * (i + 1));
        }
        let p = pages(&w.finish());
        assert!(p[2..].iter().all(|p| p.data.len() <= MAX_PAGE_DATA));
        assert!(p[2..p.len() - 1]
            .iter()
            .all(|p| p.data.len() > MAX_PAGE_DATA - 400));
        // Granule positions never go backwards.
        let mut w = OggOpusWriter::new(1, 1, 0, 48_000);
        w.push(&[1], 1000);
        w.push(&[2], 10);
        let got = read_opus_packets(&w.finish()).unwrap();
        assert_eq!(got, vec![(1000, vec![1]), (1000, vec![2])]);
    }

    #[test]
    fn streaming_pages_out() {
        let mut w = OggOpusWriter::new(9, 1, 0, 0);
        let mut file = Vec::new();
        let mut packets = Vec::new();
        for i in 0..333u64 {
            let packet = vec![0xf8; 1 + (i % 300) as usize];
            w.push(&packet, 960 * (i + 1));
            packets.push((0, packet));
            if i % 17 == 0 {
                w.write_pages(&mut file).unwrap();
            }
        }
        file.extend(w.take_pages());
        file.extend(w.finish());
        let got = read_opus_packets(&file).unwrap();
        assert_eq!(got.len(), packets.len());
        assert!(got.iter().zip(&packets).all(|(a, b)| a.1 == b.1));
        assert_eq!(pages(&file).last().unwrap().flags & FLAG_EOS, FLAG_EOS);
    }

    #[test]
    fn reader_refuses_broken_streams() {
        let mut w = OggOpusWriter::new(5, 1, 0, 0);
        for i in 0..120u64 {
            w.push(&[0xf8, i as u8, 0xfe], 960 * (i + 1));
        }
        w.push(&[0xf8; 9000], 960 * 121);
        let good = w.finish();
        assert_eq!(read_opus_packets(&good).unwrap().len(), 121);
        // A flipped bit anywhere fails the CRC (or the capture pattern).
        for at in [0, 5, 30, 100, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(read_opus_packets(&bad).is_err(), "flip at {at}");
        }
        // Truncated anywhere.
        for cut in [1, 26, 27, 40, good.len() / 3, good.len() - 1] {
            // Cut at a page boundary, it reads as a shorter stream.
            if let Ok(p) = read_opus_packets(&good[..cut]) {
                assert!(p.len() < 121, "cut at {cut}");
            }
        }
        assert!(read_opus_packets(&good[..good.len() - 1]).is_err());
        assert!(read_opus_packets(b"").is_err());
        assert!(read_opus_packets(b"RIFF0000WAVE").is_err());
        // A page missing from the middle.
        let p = pages(&good);
        let mut rebuilt = Vec::new();
        for (k, page) in p.iter().enumerate() {
            if k != 3 {
                Page {
                    flags: page.flags,
                    granule: page.granule,
                    sequence: page.sequence,
                    lacing: page.lacing.clone(),
                    data: page.data.clone(),
                }
                .write(page.serial, &mut rebuilt);
            }
        }
        assert!(read_opus_packets(&rebuilt)
            .unwrap_err()
            .contains("sequence"));
        // Pages of another logical stream are skipped.
        let other = OggOpusWriter::new(6, 1, 0, 0).finish();
        let first = &pages(&good)[0];
        let first_len = 27 + first.lacing.len() + first.data.len();
        let mut mixed = good[..first_len].to_vec();
        mixed.extend_from_slice(&other);
        mixed.extend_from_slice(&good[first_len..]);
        assert_eq!(read_opus_packets(&mixed).unwrap().len(), 121);
    }

    #[test]
    fn no_panics_on_random_input() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        let mut w = OggOpusWriter::new(5, 1, 0, 0);
        for i in 0..200u64 {
            let packet: Vec<u8> = (0..rng.below(600)).map(|_| rng.next() as u8).collect();
            w.push(&packet, 960 * (i + 1));
        }
        let good = w.finish();
        for round in 0..3000 {
            let bytes: Vec<u8> = if round % 3 == 0 {
                let mut b: Vec<u8> = (0..rng.below(400)).map(|_| rng.next() as u8).collect();
                if rng.below(2) == 0 && b.len() >= 27 {
                    b[..4].copy_from_slice(b"OggS");
                    b[4] = 0;
                }
                b
            } else {
                let mut b = good.clone();
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(b.len() as u64) as usize;
                    b[at] = rng.next() as u8;
                }
                let cut = rng.below(b.len() as u64 + 1) as usize;
                b.truncate(if rng.below(4) == 0 { cut } else { b.len() });
                b
            };
            // Without the CRC check, to reach the structure checks.
            let _ = read(&bytes, false);
            let _ = read_opus_packets(&bytes);
        }
    }

    #[test]
    fn ffprobe_accepts_the_output() {
        let Ok(out) = std::process::Command::new("ffprobe")
            .arg("-version")
            .output()
        else {
            println!("ffprobe is not installed; skipping");
            return;
        };
        if !out.status.success() {
            println!("ffprobe does not run; skipping");
            return;
        }
        let mut w = OggOpusWriter::new(0x0bad_cafe, 1, 312, 48_000);
        for i in 0..150u64 {
            w.push(&[0xf8, 0xff, 0xfe], 312 + 960 * (i + 1));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silence.opus");
        std::fs::write(&path, w.finish()).unwrap();
        let out = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-count_packets", "-show_streams"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.trim().is_empty(), "{stderr}");
        assert!(stdout.contains("codec_name=opus"), "{stdout}");
        assert!(stdout.contains("channels=1"), "{stdout}");
        assert!(stdout.contains("nb_read_packets=150"), "{stdout}");
        // 150 × 20 ms (ffprobe may add the pre-skip as a start time).
        let duration: f64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("duration="))
            .and_then(|d| d.parse().ok())
            .unwrap_or_default();
        assert!((duration - 3.0).abs() < 0.01, "{stdout}");
    }
}
