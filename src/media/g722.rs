//! A small ITU-T G.722 decoder for the 64 kbit/s mode (mode 1).
//!
//! Every input byte carries one 2-bit upper sub-band code (bits 7..6) and one
//! 6-bit lower sub-band code (bits 5..0). Each sub-band is decoded by its own
//! ADPCM decoder at 8 kHz, and the QMF synthesis filter recombines the two
//! sub-band signals into two 16 kHz output samples.
//!
//! All arithmetic follows the fixed-point description of the recommendation:
//! values are kept in `i32` and clamped wherever the spec limits them, so no
//! input can cause an overflow or panic.

/// QMF coefficients h(0)..h(23), shared by the transmit and receive filters.
const QMF_H: [i32; 24] = [
    3, -11, -11, 53, 12, -156, 32, 362, -210, -805, 951, 3876, 3876, 951, -805, -210, 362, 32,
    -156, 12, 53, -11, -11, 3,
];

/// Lower sub-band 6-bit inverse quantizer outputs (QM6), indexed by code.
///
/// Codes 32..=61 are positive and 62, 63, 4..=31 negative levels (largest
/// magnitude first); codes 0..=3 are never sent by an encoder.
#[rustfmt::skip]
const QM6: [i32; 64] = [
      -136,   -136,   -136,   -136, -24808, -21904, -19008, -16704,
    -14984, -13512, -12280, -11192, -10232,  -9360,  -8576,  -7856,
     -7192,  -6576,  -6000,  -5456,  -4944,  -4464,  -4008,  -3576,
     -3168,  -2776,  -2400,  -2032,  -1688,  -1360,  -1040,   -728,
     24808,  21904,  19008,  16704,  14984,  13512,  12280,  11192,
     10232,   9360,   8576,   7856,   7192,   6576,   6000,   5456,
      4944,   4464,   4008,   3576,   3168,   2776,   2400,   2032,
      1688,   1360,   1040,    728,    432,    136,   -432,   -136,
];

/// Lower sub-band 4-bit inverse quantizer outputs (QM4), used for adaptation.
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];

/// Upper sub-band 2-bit inverse quantizer outputs (QM2).
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];

/// Lower sub-band log scale factor increments, indexed by quantizer magnitude.
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];

/// Maps a 4-bit lower sub-band code to its quantizer magnitude (index into `WL`).
const RIL4_MAGNITUDE: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];

/// Upper sub-band log scale factor increments, indexed by quantizer magnitude.
const WH: [i32; 3] = [0, -214, 798];

/// Maps a 2-bit upper sub-band code to its quantizer magnitude (index into `WH`).
const IH2_MAGNITUDE: [usize; 4] = [2, 1, 2, 1];

/// Antilog table: `2048 * 2^(i / 32)`, used to turn the log scale factor into a linear one.
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];

/// Upper limit of the lower sub-band log scale factor (NBL).
const NBL_MAX: i32 = 18432;
/// Upper limit of the upper sub-band log scale factor (NBH).
const NBH_MAX: i32 = 22528;

/// Saturates to the signed 16-bit range, as the spec's 16-bit word arithmetic does.
fn sat16(x: i32) -> i32 {
    x.clamp(-32768, 32767)
}

/// Limits a reconstructed sub-band signal to the 15-bit range of the spec.
fn limit15(x: i32) -> i32 {
    x.clamp(-16384, 16383)
}

/// Converts a log scale factor into the linear quantizer scale factor (SCALEL / SCALEH).
///
/// `exp_bias` is 8 for the lower and 10 for the upper sub-band.
fn linear_scale(log_scale: i32, exp_bias: i32) -> i32 {
    let mantissa = ILB[((log_scale >> 6) & 31) as usize];
    let shift = exp_bias - (log_scale >> 11);
    let scaled = if shift >= 0 {
        mantissa >> shift
    } else {
        mantissa << -shift
    };
    scaled << 2
}

/// ADPCM state of one sub-band: scale factor adaptation plus the
/// two-pole / six-zero adaptive predictor (block 4).
#[derive(Clone, Debug)]
struct SubBand {
    /// Log scale factor (NBL / NBH).
    log_scale: i32,
    /// Linear quantizer scale factor (DETL / DETH).
    scale: i32,
    /// Signal estimate (SL / SH) for the current sample.
    estimate: i32,
    /// Zero-section contribution to the estimate (SZL / SZH).
    zero_estimate: i32,
    /// Pole coefficients a1, a2.
    poles: [i32; 2],
    /// Zero coefficients b1..b6.
    zeros: [i32; 6],
    /// Past quantized differences d(n-1)..d(n-6).
    past_diffs: [i32; 6],
    /// Past partially reconstructed signals p(n-1), p(n-2).
    past_partials: [i32; 2],
    /// Past reconstructed signals r(n-1), r(n-2).
    past_recon: [i32; 2],
}

impl SubBand {
    fn new(initial_scale: i32) -> Self {
        Self {
            log_scale: 0,
            scale: initial_scale,
            estimate: 0,
            zero_estimate: 0,
            poles: [0; 2],
            zeros: [0; 6],
            past_diffs: [0; 6],
            past_partials: [0; 2],
            past_recon: [0; 2],
        }
    }

    /// Decodes one 6-bit lower sub-band code and returns the reconstructed signal RL.
    fn decode_lower(&mut self, code: usize) -> i32 {
        let code4 = code >> 2;
        // INVQBL: full 6-bit reconstruction for the output.
        let diff_out = (self.scale * QM6[code]) >> 15;
        let output = limit15(self.estimate + diff_out);
        // INVQAL: 4-bit truncated difference drives the adaptation.
        let diff = (self.scale * QM4[code4]) >> 15;
        // LOGSCL + SCALEL.
        let decayed = (self.log_scale * 127) >> 7;
        self.log_scale = (decayed + WL[RIL4_MAGNITUDE[code4]]).clamp(0, NBL_MAX);
        self.scale = linear_scale(self.log_scale, 8);
        self.adapt_predictor(diff);
        output
    }

    /// Decodes one 2-bit upper sub-band code and returns the reconstructed signal RH.
    fn decode_upper(&mut self, code: usize) -> i32 {
        // INVQAH.
        let diff = (self.scale * QM2[code]) >> 15;
        let output = limit15(self.estimate + diff);
        // LOGSCH + SCALEH.
        let decayed = (self.log_scale * 127) >> 7;
        self.log_scale = (decayed + WH[IH2_MAGNITUDE[code]]).clamp(0, NBH_MAX);
        self.scale = linear_scale(self.log_scale, 10);
        self.adapt_predictor(diff);
        output
    }

    /// Block 4: updates the predictor with the quantized difference `diff`
    /// and computes the signal estimate for the next sample.
    fn adapt_predictor(&mut self, diff: i32) {
        // RECONS and PARREC.
        let recon = sat16(self.estimate + diff);
        let partial = sat16(self.zero_estimate + diff);

        // Signs (true = negative) of p(n), p(n-1), p(n-2).
        let sg0 = partial < 0;
        let sg1 = self.past_partials[0] < 0;
        let sg2 = self.past_partials[1] < 0;
        let [a1, a2] = self.poles;

        // UPPOL2: second pole coefficient.
        let four_a1 = sat16(a1 * 4);
        let a1_term = if sg0 == sg1 { -four_a1 } else { four_a1 }.min(32767);
        let sign_term = if sg0 == sg2 { 128 } else { -128 };
        let new_a2 = ((a1_term >> 7) + sign_term + ((a2 * 32512) >> 15)).clamp(-12288, 12288);

        // UPPOL1: first pole coefficient, limited by the stability constraint.
        let step = if sg0 == sg1 { 192 } else { -192 };
        let limit = 15360 - new_a2;
        let new_a1 = sat16(step + ((a1 * 32640) >> 15)).clamp(-limit, limit);

        // UPZERO: sign-sign update of the zero coefficients.
        let gain = if diff == 0 { 0 } else { 128 };
        let diff_negative = diff < 0;
        for (b, &past) in self.zeros.iter_mut().zip(&self.past_diffs) {
            let signed_gain = if (past < 0) == diff_negative {
                gain
            } else {
                -gain
            };
            *b = sat16(signed_gain + ((*b * 32640) >> 15));
        }

        // DELAYA: shift the delay lines.
        self.past_diffs.rotate_right(1);
        self.past_diffs[0] = diff;
        self.past_partials = [partial, self.past_partials[0]];
        self.past_recon = [recon, self.past_recon[0]];
        self.poles = [new_a1, new_a2];

        // FILTEP: pole section.
        let pole_estimate = sat16(
            ((new_a1 * sat16(self.past_recon[0] * 2)) >> 15)
                + ((new_a2 * sat16(self.past_recon[1] * 2)) >> 15),
        );

        // FILTEZ: zero section.
        let zero_sum: i32 = self
            .zeros
            .iter()
            .zip(&self.past_diffs)
            .map(|(&b, &d)| (b * sat16(d * 2)) >> 15)
            .sum();
        self.zero_estimate = sat16(zero_sum);

        // PREDIC.
        self.estimate = sat16(pole_estimate + self.zero_estimate);
    }
}

/// Receive QMF: delay lines of the sum and difference signals, newest first.
#[derive(Clone, Debug, Default)]
struct SynthesisQmf {
    sums: [i32; 12],
    diffs: [i32; 12],
}

impl SynthesisQmf {
    /// Combines one pair of sub-band samples into two 16 kHz output samples.
    fn synthesize(&mut self, lower: i32, upper: i32) -> [i16; 2] {
        self.sums.rotate_right(1);
        self.diffs.rotate_right(1);
        self.sums[0] = lower + upper;
        self.diffs[0] = lower - upper;

        let mut first = 0;
        let mut second = 0;
        for (i, pair) in QMF_H.chunks_exact(2).enumerate() {
            first += pair[0] * self.diffs[i];
            second += pair[1] * self.sums[i];
        }
        [to_pcm(first >> 11), to_pcm(second >> 11)]
    }
}

/// Saturates a 32-bit value into a 16-bit PCM sample.
fn to_pcm(x: i32) -> i16 {
    i16::try_from(sat16(x)).unwrap_or_default()
}

/// Decoder state for one G.722 stream (64 kbit/s mode).
#[derive(Clone)]
pub struct G722Decoder {
    lower: SubBand,
    upper: SubBand,
    qmf: SynthesisQmf,
}

impl G722Decoder {
    /// Creates a decoder in the reset state defined by the recommendation.
    pub fn new() -> Self {
        Self {
            lower: SubBand::new(32),
            upper: SubBand::new(8),
            qmf: SynthesisQmf::default(),
        }
    }

    /// Decodes `bytes` (each byte = two 16 kHz samples), appending 2 samples per byte to `out` (16-bit PCM, 16 kHz).
    pub fn decode(&mut self, bytes: &[u8], out: &mut Vec<i16>) {
        out.reserve(bytes.len().saturating_mul(2));
        for &byte in bytes {
            let lower = self.lower.decode_lower(usize::from(byte & 0x3f));
            let upper = self.upper.decode_upper(usize::from(byte >> 6));
            out.extend_from_slice(&self.qmf.synthesize(lower, upper));
        }
    }
}

impl Default for G722Decoder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// A scratch directory removed when dropped.
    struct Scratch(tempfile::TempDir);

    impl Scratch {
        fn new(_name: &str) -> Self {
            Scratch(tempfile::tempdir().expect("create scratch dir"))
        }

        fn path(&self, file: &str) -> PathBuf {
            self.0.path().join(file)
        }
    }

    fn ffmpeg(args: &[&str]) {
        let output = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(args)
            .output()
            .expect("ffmpeg must be installed to run this test");
        assert!(
            output.status.success(),
            "ffmpeg {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn s(path: &Path) -> &str {
        path.to_str().expect("utf-8 temp path")
    }

    fn read_pcm(path: &Path) -> Vec<i16> {
        fs::read(path)
            .expect("read pcm")
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect()
    }

    fn decode_all(bytes: &[u8]) -> Vec<i16> {
        let mut out = Vec::new();
        G722Decoder::new().decode(bytes, &mut out);
        out
    }

    fn random_bytes(seed: u32, len: usize) -> Vec<u8> {
        crate::media::testkit::Rng(seed as u64 | 1 << 40).bytes(len)
    }

    /// Decodes `g722` with ffmpeg and with this crate; returns the max absolute difference.
    fn compare_with_ffmpeg(scratch: &Scratch, g722: &Path) -> u32 {
        let bytes = fs::read(g722).expect("read g722");
        let reference_pcm = scratch.path("ffmpeg.pcm");
        ffmpeg(&[
            "-f",
            "g722",
            "-i",
            s(g722),
            "-f",
            "s16le",
            "-ar",
            "16000",
            "-ac",
            "1",
            s(&reference_pcm),
        ]);
        let reference = read_pcm(&reference_pcm);
        let ours = decode_all(&bytes);
        assert_eq!(ours.len(), bytes.len() * 2);
        assert_eq!(
            reference.len(),
            ours.len(),
            "sample count differs from ffmpeg"
        );
        let max_diff = ours
            .iter()
            .zip(&reference)
            .map(|(&a, &b)| (i32::from(a) - i32::from(b)).unsigned_abs())
            .max()
            .unwrap_or(0);
        let mismatches = ours.iter().zip(&reference).filter(|(a, b)| a != b).count();
        eprintln!(
            "{}: {} bytes, {} samples, max |diff| = {max_diff}, mismatching samples = {mismatches}",
            g722.display(),
            bytes.len(),
            ours.len()
        );
        max_diff
    }

    #[test]
    fn matches_ffmpeg_on_encoded_mixed_signal() {
        let scratch = Scratch::new("mixed");
        let g722 = scratch.path("mixed.g722");
        // Tones, a chirp, high-band tones, noise, a loud square burst and silence.
        let expr = "aevalsrc=exprs='\
            lt(t,2)*(0.25*sin(2*PI*440*t)+0.25*sin(2*PI*(100+1800*t)*t)\
            +0.15*sin(2*PI*5200*t)+0.1*sin(2*PI*6800*t)+0.15*(2*random(0)-1))\
            +between(t,2,2.5)*0.98*(2*gt(sin(2*PI*300*t),0)-1)\
            +gt(t,2.8)*0.6*(2*random(1)-1)':s=16000:d=3.5";
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            expr,
            "-ac",
            "1",
            "-ar",
            "16000",
            "-c:a",
            "g722",
            "-f",
            "g722",
            s(&g722),
        ]);
        assert_eq!(compare_with_ffmpeg(&scratch, &g722), 0);
    }

    #[test]
    fn matches_ffmpeg_on_random_bitstream() {
        let scratch = Scratch::new("random");
        let g722 = scratch.path("random.g722");
        let mut bytes = random_bytes(0x1234_5678, 40_000);
        // Long runs of extreme codes drive the scale factors and predictors to their limits.
        bytes.extend(std::iter::repeat_n(0x04, 3000));
        bytes.extend(std::iter::repeat_n(0xff, 3000));
        bytes.extend(std::iter::repeat_n(0x00, 3000));
        bytes.extend((0..6000).map(|i| if i % 2 == 0 { 0x20 } else { 0x9f }));
        fs::write(&g722, &bytes).expect("write g722");
        assert_eq!(compare_with_ffmpeg(&scratch, &g722), 0);
    }

    /// Normalized cross-correlation of `decoded` delayed by `lag` against `source`.
    fn correlation(source: &[i16], decoded: &[i16], lag: usize) -> f64 {
        let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
        for (&x, &y) in source.iter().zip(decoded.iter().skip(lag)) {
            let (x, y) = (f64::from(x), f64::from(y));
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
        xy / (xx * yy).sqrt().max(1.0)
    }

    /// Power of `signal` at `freq` Hz (Goertzel), sampled at 16 kHz.
    fn tone_power(signal: &[i16], freq: f64) -> f64 {
        let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / 16000.0).cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in signal {
            let s0 = f64::from(x) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        s1 * s1 + s2 * s2 - coeff * s1 * s2
    }

    fn check_sine(freq: u32, min_correlation: f64) {
        let scratch = Scratch::new(&format!("sine{freq}"));
        let source_pcm = scratch.path("source.pcm");
        let g722 = scratch.path("sine.g722");
        let sine = format!("sine=frequency={freq}:sample_rate=16000:duration=2");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &sine,
            "-f",
            "s16le",
            "-ac",
            "1",
            s(&source_pcm),
        ]);
        ffmpeg(&[
            "-f",
            "s16le",
            "-ar",
            "16000",
            "-ac",
            "1",
            "-i",
            s(&source_pcm),
            "-c:a",
            "g722",
            "-f",
            "g722",
            s(&g722),
        ]);
        let source = read_pcm(&source_pcm);
        let decoded = decode_all(&fs::read(&g722).expect("read g722"));
        assert_eq!(decoded.len(), source.len());

        let (best_lag, best) = (0..=32)
            .map(|lag| (lag, correlation(&source, &decoded, lag)))
            .fold(
                (0, f64::MIN),
                |acc, cur| if cur.1 > acc.1 { cur } else { acc },
            );
        let rms = |v: &[i16]| {
            (v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
        };
        let gain = rms(&decoded) / rms(&source);
        let tone = tone_power(&decoded, f64::from(freq));
        let off_tone =
            [f64::from(freq) * 0.5, f64::from(freq) * 1.7, 7000.0].map(|f| tone_power(&decoded, f));
        eprintln!(
            "{freq} Hz sine: best correlation {best:.5} at lag {best_lag}, rms gain {gain:.4}, \
             tone/off-tone power ratios {:?}",
            off_tone.map(|p| tone / p.max(1.0))
        );
        assert!(best > min_correlation, "correlation {best} too low");
        assert!((0.8..1.25).contains(&gain), "rms gain {gain} out of range");
        assert!(
            off_tone.iter().all(|&p| tone > 100.0 * p),
            "tone not dominant"
        );
    }

    #[test]
    fn decoded_low_band_sine_matches_source() {
        check_sine(440, 0.9);
    }

    #[test]
    fn decoded_high_band_sine_matches_source() {
        check_sine(5500, 0.9);
    }

    #[test]
    fn random_bytes_never_panic() {
        for seed in [1_u32, 0xdead_beef, 0x8000_0001] {
            let bytes = random_bytes(seed, 5000);
            let whole = decode_all(&bytes);
            assert_eq!(whole.len(), bytes.len() * 2);
            // Decoding in arbitrary chunks keeps state across calls.
            let mut decoder = G722Decoder::default();
            let mut chunked = Vec::new();
            for chunk in bytes.chunks(37) {
                decoder.decode(chunk, &mut chunked);
            }
            assert_eq!(whole, chunked);
        }
        for byte in 0..=255_u8 {
            assert_eq!(decode_all(&[byte; 4000]).len(), 8000);
        }
    }
}
