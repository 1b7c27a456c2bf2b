//! The body of the `frames` fuzz target (`fuzz/`), as a plain function so that a
//! stable `cargo test` replays the committed seed corpus (`fuzz/corpus/frames/`)
//! through exactly the code the fuzzer runs.
//!
//! The relay reads its virtio-serial port in pieces of whatever size a read
//! returns and splits the bytes into [`Frame`]s with a [`FrameReader`]; the first
//! error ends the relay (the stream cannot be trusted after it). [`frames`] does
//! two things with its input:
//!
//! - raw: the input (after a header that says where to cut it) as port bytes, fed
//!   to one reader in input-chosen pieces (empty ones too), each result checked
//!   against a model of the format read from the start of everything fed so far
//!   (kind (1), connection (4, LE), payload length (4, LE), payload): the frames
//!   returned are exactly the model's new complete frames, every payload at most
//!   [`MAX_FRAME`] bytes; an error comes exactly when the model meets a header
//!   that is not a frame's (a payload over [`MAX_FRAME`], a payload on a kind
//!   other than `Data`, an unknown kind), and every feed after it is an error too;
//! - round trip: frames described by the input (any kind and connection number,
//!   payloads from empty to [`MAX_FRAME`] bytes) encoded with [`Frame::encode`],
//!   fed in input-chosen pieces, decode to the same frames with no error and
//!   nothing left over.

use crate::forward::{Frame, FrameReader, MAX_FRAME};

/// kind (1), connection (4, LE), payload length (4, LE).
const HEADER: usize = 9;
/// Largest synthetic stream of the round trip (keeps an exec fast).
const MAX_STREAM: usize = MAX_FRAME + HEADER + 8192;

/// The fuzz target. Input: `[n][n bytes of cuts][stream]`; the round trip reads
/// its frames and cuts from the whole input.
pub fn frames(data: &[u8]) {
    let (cuts, stream) = match data.split_first() {
        Some((&n, rest)) => rest.split_at(usize::from(n).min(rest.len())),
        None => (&[][..], &[][..]),
    };
    raw(stream, cuts);
    round_trip(data);
}

/// Piece sizes from `cuts`: a byte below 0x80 is that many bytes, else
/// `(b & 0x7f) * 1024`; after the last cut, the rest at once.
fn pieces<'a>(stream: &'a [u8], cuts: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts {
        let n = if c < 0x80 {
            usize::from(c)
        } else {
            usize::from(c & 0x7f) << 10
        };
        let end = (at + n).min(stream.len());
        out.push(&stream[at..end]);
        at = end;
    }
    out.push(&stream[at..]);
    out
}

/// What a stream holds from `at` (a frame boundary) on, by the format: its
/// complete frames, where they end, and whether a header that is not a frame's
/// follows them.
fn model(stream: &[u8], mut at: usize) -> (Vec<Frame>, usize, bool) {
    let mut frames = Vec::new();
    while stream.len() - at >= HEADER {
        let h = &stream[at..at + HEADER];
        let conn = u32::from_le_bytes([h[1], h[2], h[3], h[4]]);
        let len = u32::from_le_bytes([h[5], h[6], h[7], h[8]]) as usize;
        if len > MAX_FRAME || (h[0] != 2 && len != 0) || !(1..=4).contains(&h[0]) {
            return (frames, at, true);
        }
        if stream.len() - at - HEADER < len {
            break;
        }
        frames.push(match h[0] {
            1 => Frame::Open(conn),
            2 => Frame::Data(conn, stream[at + HEADER..at + HEADER + len].to_vec()),
            3 => Frame::Shut(conn),
            _ => Frame::Close(conn),
        });
        at += HEADER + len;
    }
    (frames, at, false)
}

fn check_payloads(frames: &[Frame]) {
    for f in frames {
        if let Frame::Data(_, d) = f {
            assert!(d.len() <= MAX_FRAME, "a {} byte payload", d.len());
        }
    }
}

/// Arbitrary bytes in arbitrary pieces, against the model.
fn raw(stream: &[u8], cuts: &[u8]) {
    let mut reader = FrameReader::default();
    // Where the frames the reader returned end.
    let mut done = 0;
    let mut fed = 0;
    let mut failed = false;
    for piece in pieces(stream, cuts) {
        fed += piece.len();
        let (want, end, bad) = model(&stream[..fed], done);
        match reader.feed(piece) {
            Ok(frames) => {
                assert!(!failed, "a feed after an error succeeded");
                assert!(!bad, "no error at a bad header (byte {end})");
                check_payloads(&frames);
                assert_eq!(frames, want, "the frames of bytes {done}..{end}");
                done = end;
            }
            Err(e) => {
                // The frames of the failing feed before the bad header are not
                // returned: the relay stops at the error anyway.
                assert!(bad, "an error on a good stream after {fed} bytes: {e}");
                failed = true;
            }
        }
    }
    // Whatever comes after an error is an error too.
    if failed {
        assert!(reader.feed(&[]).is_err());
        assert!(reader.feed(&Frame::Open(1).encode()).is_err());
    }
}

/// Frames described by `data`, encoded, fed in pieces chosen by `data`.
fn round_trip(data: &[u8]) {
    let mut bytes = data.iter().copied();
    let mut next = || bytes.next();
    let mut frames = Vec::new();
    let mut len = 0;
    while let (Some(kind), Some(conn)) = (next(), next()) {
        // Few connection numbers, so frames of one connection follow each other,
        // and the extremes.
        let conn = match conn {
            0xff => u32::MAX,
            0xfe => u32::from_le_bytes([kind, conn, 0x5a, 0xa5]),
            c => u32::from(c & 0x0f),
        };
        let f = match kind % 4 {
            0 => Frame::Open(conn),
            1 => Frame::Shut(conn),
            2 => Frame::Close(conn),
            _ => {
                let n = match next().unwrap_or(0) {
                    0xff => MAX_FRAME,
                    0xfe => MAX_FRAME - 1,
                    n if n >= 0xc0 => usize::from(n - 0xc0) * 1021 + 1,
                    n => usize::from(n),
                };
                // Both ends marked, so a payload read off by a byte shows.
                let fill = next().unwrap_or(0);
                let mut payload = vec![fill; n];
                if let Some(b) = payload.first_mut() {
                    *b = !fill;
                }
                if let Some(b) = payload.last_mut() {
                    *b ^= 0x55;
                }
                Frame::Data(conn, payload)
            }
        };
        len += HEADER
            + match &f {
                Frame::Data(_, d) => d.len(),
                _ => 0,
            };
        if len > MAX_STREAM {
            break;
        }
        frames.push(f);
    }
    let stream = frames
        .iter()
        .map(Frame::encode)
        .collect::<Vec<_>>()
        .concat();
    // Cuts from the input read backwards, so they differ from the frames' bytes.
    let cuts: Vec<u8> = data.iter().rev().copied().collect();
    let mut reader = FrameReader::default();
    let mut got = Vec::new();
    for piece in pieces(&stream, &cuts) {
        let frames = reader
            .feed(piece)
            .unwrap_or_else(|e| panic!("encoded frames rejected: {e}"));
        check_payloads(&frames);
        got.extend(frames);
    }
    assert_eq!(got, frames, "encoded frames decode differently");
    assert_eq!(reader.feed(&[]).expect("nothing left"), Vec::new());
    // And nothing is left half-read: a frame after them comes out whole.
    assert_eq!(
        reader.feed(&Frame::Close(9).encode()).expect("a frame"),
        vec![Frame::Close(9)]
    );
}

/// The seed inputs: encoded frame streams (a relay session, frames at the
/// payload bound, cut short) with and without bad headers, and round-trip
/// descriptions.
pub fn seeds() -> Vec<Vec<u8>> {
    let session = [
        Frame::Open(1),
        Frame::Data(1, b"{\"cmd\":\"status\"}\n".to_vec()),
        Frame::Open(2),
        Frame::Data(2, b"{\"cmd\":\"balloon\",\"target_mb\":64}\n".to_vec()),
        Frame::Data(1, b"{\"ok\":true}\n".to_vec()),
        Frame::Shut(1),
        Frame::Data(2, Vec::new()),
        Frame::Close(2),
        Frame::Close(1),
    ];
    let session: Vec<u8> = session.iter().flat_map(Frame::encode).collect();
    // A payload at the bound, cut short (the fuzzer's inputs stay small; the
    // round trip makes whole ones), and one past it.
    let mut big = Frame::Data(u32::MAX, vec![0xa5; MAX_FRAME]).encode();
    big.truncate(HEADER + 64);
    let with = |cuts: &[u8], stream: &[u8]| {
        let mut s = vec![cuts.len() as u8];
        s.extend_from_slice(cuts);
        s.extend_from_slice(stream);
        s
    };
    let mut too_big = Frame::Open(3).encode();
    too_big.extend_from_slice(&[2, 0xff, 0xff, 0xff, 0xff]);
    too_big.extend_from_slice(&(MAX_FRAME as u32 + 1).to_le_bytes());
    let mut payload_on_open = session.clone();
    payload_on_open.extend_from_slice(&[1, 5, 0, 0, 0, 1, 0, 0, 0, b'x']);
    let mut unknown = Frame::Shut(4).encode();
    unknown.extend_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0, 0]);
    unknown.extend_from_slice(&session);
    vec![
        with(&[], &session),
        with(&[1, 2, 3, 5, 8, 13, 21, 34, 0, 0, 9], &session),
        with(&[4, 5, 0, 60], &big),
        with(&[10, 0], &too_big),
        with(&[7; 20], &payload_on_open),
        with(&[9, 9, 1], &unknown),
        // Round-trip descriptions: every kind, the payload bounds, extreme numbers.
        vec![
            0, 1, 1, 1, 2, 1, 3, 1, 17, 0x40, 3, 0xff, 0xff, 0, 3, 0xfe, 0xfe, 7,
        ],
        vec![3, 2, 0xc5, 1, 3, 2, 0, 9, 2, 2, 0, 0xfe],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_corpus() {
        base::corpus::replay("frames", frames);
        for s in seeds() {
            frames(&s);
        }
        for tiny in [&[][..], &[0xff], &[0; 64], &[0xff; 64]] {
            frames(tiny);
        }
    }

    #[test]
    fn the_model_sees_what_the_seeds_hold() {
        let s = seeds();
        let stream = |s: &[u8]| s[1 + usize::from(s[0])..].to_vec();
        let session = stream(&s[0]);
        let (frames, end, bad) = model(&session, 0);
        assert_eq!((frames.len(), end, bad), (9, session.len(), false));
        let big = stream(&s[2]);
        assert_eq!(model(&big, 0), (vec![], 0, false));
        for bad in &s[3..6] {
            assert!(model(&stream(bad), 0).2);
        }
    }

    /// `cargo test -p sandbox --lib -- --ignored write_seeds` regenerates the seeds
    /// (`seed-NN`); other files in the corpus (crash reproducers) are kept.
    #[test]
    #[ignore]
    fn write_seeds() {
        base::corpus::write_seeds("frames", &seeds()).expect("write seeds");
    }
}
