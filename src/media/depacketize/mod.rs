//! RTP depacketizing: from one stream's packets, in order, to the codec's
//! frames. Each codec lives in its own file and follows the same rules:
//! never hand the decoder a frame with a hole in it; video keeps every
//! complete frame after a loss ([`Gate`], the one loss policy of all video
//! codecs); audio losses become silence of the right length.

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
    /// Complete frames dropped because no keyframe came before them (the
    /// start of the stream: they reference pictures the decoder never had).
    pub waiting_for_keyframe: u64,
    /// Complete frames kept after a loss and before the next keyframe: they
    /// decode, possibly with smearing where they reference what was lost.
    pub after_loss: u64,
    /// Complete frames dropped after a loss because the probabilities they
    /// start from may be a lost frame's (see [`Gate`]).
    pub stale_contexts: u64,
    /// Audio frames made up (silence) for lost packets.
    pub concealed: u64,
}

/// The packets in order, each sequence number once (the input is ordered,
/// so a repeat is a duplicate), with how many sequence numbers are missing
/// right before each: the one place gaps are detected.
pub(crate) fn fresh(packets: &[Packet]) -> impl Iterator<Item = (&Packet, u64)> {
    let mut f = Fresh::default();
    packets
        .iter()
        .filter_map(move |p| Some((p, f.missing_before(p.seq)?)))
}

/// The depacketizer of a video stream, a packet at a time.
pub(crate) enum Video {
    Vp(vp8::Assembler),
    H264(h264::Depacketizer),
}

impl Video {
    /// The depacketizer for `codec` and the IVF FourCC of its frames.
    pub(crate) fn of(codec: &str) -> Option<(Video, &'static [u8; 4])> {
        Some(match codec {
            "vp8" => (Video::Vp(vp8::assembler()), b"VP80"),
            "vp9" => (Video::Vp(vp9::assembler()), b"VP90"),
            "h264" => (Video::H264(h264::Depacketizer::default()), b"H264"),
            _ => return None,
        })
    }

    /// The next packet in sequence order.
    pub(crate) fn push(&mut self, p: &Packet) {
        match self {
            Video::Vp(a) => a.push(p),
            Video::H264(d) => d.push(p),
        }
    }

    /// The frames completed so far (taken out).
    pub(crate) fn take(&mut self) -> Vec<Frame> {
        match self {
            Video::Vp(a) => a.take(),
            Video::H264(d) => d.take(),
        }
    }

    /// After the last packet: the frames not yet taken, and the counts.
    pub(crate) fn end(self) -> (Vec<Frame>, Stats) {
        match self {
            Video::Vp(a) => a.end(),
            Video::H264(d) => d.end(),
        }
    }
}

/// [`fresh`] a packet at a time.
#[derive(Default)]
pub(crate) struct Fresh {
    last: Option<u64>,
}

impl Fresh {
    /// How many sequence numbers are missing right before `seq`; `None`
    /// for a repeat.
    pub(crate) fn missing_before(&mut self, seq: u64) -> Option<u64> {
        let missing = match self.last {
            Some(l) if seq <= l => return None,
            Some(l) => seq - l - 1,
            None => 0,
        };
        self.last = Some(seq);
        Some(missing)
    }
}

/// Whether a frame's entropy decoding depends on probabilities that earlier
/// frames saved (VP8's `refresh_entropy_probs`, VP9's probability
/// contexts), for [`Gate::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entropy {
    /// Decodes with what the frame itself carries (H.264; a VP9
    /// `show_existing_frame`, which decodes nothing).
    Own,
    /// Starts from the saved probabilities; `saves` when it replaces them
    /// with its own for the frames after it.
    Carried { saves: bool },
    /// Starts from the default probabilities and resets what is saved (a
    /// key frame; a VP9 error-resilient frame or intra-only frame with
    /// `reset_frame_context = 3`).
    Resets,
}

/// The loss policy of every video depacketizer (VP8, VP9, H.264), in one
/// place.
///
/// - A frame with a hole is never handed out (the depacketizer counts it as
///   `incomplete` and calls [`Gate::lost`]).
/// - Until the stream's first keyframe, complete frames are dropped: they
///   reference pictures the decoder never had.
/// - From then on every complete frame is kept, also after a loss, as
///   `janus-pp-rec` does: the decoder shows it with some smearing where it
///   references a lost picture, until the next keyframe repairs the
///   picture. Waiting for that keyframe instead froze the party (27 % of
///   one party's frames in a one-minute call with keyframes 8 s apart), and
///   WebRTC senders send a keyframe only when asked, which can take much
///   longer.
/// - Except a frame that starts from saved probabilities a lost frame may
///   have replaced ([`Entropy::Carried`]): its symbols would be read with
///   the wrong probabilities, which is not smearing but garbage (VP8) or a
///   frame the decoder rejects (VP9, "Invalid data"). It is dropped until a
///   frame that resets them. A lost frame is presumed to have saved its
///   probabilities when the frame before or after it did (the encoder's
///   habit: libvpx saves them on every frame unless error-resilient), so
///   error-resilient streams (what WebRTC sends with temporal layers or
///   SVC) lose only the frames with a hole, and others freeze on the last
///   good picture until the next keyframe instead of showing garbage.
///
/// Measured against janus-pp-rec and the encoder's own frames in
/// `tests/it/media.rs` (keyframes 10 s apart, two loss bursts).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// A keyframe has been handed out.
    started: bool,
    /// A frame was lost since the last keyframe.
    damaged: bool,
    /// A frame was lost and no frame has been judged since.
    loss_pending: bool,
    /// The last frame that started from saved probabilities replaced them.
    stream_saves: bool,
    /// The saved probabilities may be a lost frame's.
    stale: bool,
}

impl Gate {
    /// A packet or a frame was lost (or dropped as malformed).
    pub(crate) fn lost(&mut self) {
        self.damaged = true;
        self.loss_pending = true;
    }

    /// Whether a complete frame is handed out; counts it in `stats`.
    pub(crate) fn admit(&mut self, keyframe: bool, entropy: Entropy, stats: &mut Stats) -> bool {
        if std::mem::take(&mut self.loss_pending)
            && (self.stream_saves || entropy == (Entropy::Carried { saves: true }))
        {
            self.stale = true;
        }
        let carried = match entropy {
            Entropy::Carried { saves } => {
                self.stream_saves = saves;
                true
            }
            Entropy::Resets => {
                self.stale = false;
                false
            }
            Entropy::Own => false,
        };
        if keyframe {
            self.started = true;
            self.damaged = false;
            self.stale = false;
        }
        if !self.started {
            stats.waiting_for_keyframe += 1;
            return false;
        }
        if carried && self.stale {
            stats.stale_contexts += 1;
            return false;
        }
        if self.damaged {
            stats.after_loss += 1;
        }
        stats.frames += 1;
        true
    }
}
