//! RTP depacketizing: from one stream's packets, in order, to the codec's
//! frames. Each codec lives in its own file and follows the same rules:
//! never hand the decoder a frame with a hole in it; after a loss, video
//! waits for the next keyframe; audio losses become silence of the right
//! length.

pub mod audio;
pub mod h264;
pub mod vp8;
pub mod vp9;

/// One RTP packet of a stream, after ordering (see `media::order`):
/// `seq` and `ts` are unwrapped (they never wrap around) and continue across
/// SSRC changes, so a gap in `seq` is a loss and `ts` only moves forward
/// within a frame sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Extended sequence number.
    pub seq: u64,
    /// Extended RTP timestamp, in the codec's clock.
    pub ts: u64,
    pub marker: bool,
    /// The RTP payload (header, extensions and padding removed).
    pub payload: Vec<u8>,
}

/// One frame for a decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Extended RTP timestamp of the frame, in the codec's clock.
    pub ts: u64,
    /// A video frame that decodes on its own (always true for audio).
    pub keyframe: bool,
    /// The frame: a VP8/VP9 frame, an H.264 access unit in Annex B form
    /// (start codes), one Opus packet, or G.711 bytes.
    pub data: Vec<u8>,
}

/// What a depacketizer kept and dropped, for the logs and the tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed out.
    pub frames: u64,
    /// Frames dropped because a packet of theirs was lost or malformed.
    pub incomplete: u64,
    /// Complete frames dropped while waiting for a keyframe after a loss.
    pub waiting_for_keyframe: u64,
    /// Audio frames made up (silence) for lost packets.
    pub concealed: u64,
}

/// The packets in order, each sequence number once (the input is ordered,
/// so a repeat is a duplicate), with how many sequence numbers are missing
/// right before each: the one place gaps are detected.
pub(crate) fn fresh(packets: &[Packet]) -> impl Iterator<Item = (&Packet, u64)> {
    let mut last: Option<u64> = None;
    packets.iter().filter_map(move |p| {
        let missing = match last {
            Some(l) if p.seq <= l => return None,
            Some(l) => p.seq - l - 1,
            None => 0,
        };
        last = Some(p.seq);
        Some((p, missing))
    })
}
