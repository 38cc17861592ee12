//! Length-prefixed bincode frames.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! bincode (2.0.1, `serde` mode, standard config). The length is checked
//! against [`MAX_FRAME_SIZE`] *before* anything is allocated, and the decoder
//! is told the same limit, so no input — truncated, oversized or random — can
//! make it panic or allocate without bound.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame body (bytes) either side will send or accept.
pub const MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_SIZE>()
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes is over the {max}-byte limit (MAX_FRAME_SIZE)", max = MAX_FRAME_SIZE)]
    TooLarge { size: usize },
    #[error("malformed frame: {0}")]
    Decode(String),
    #[error("frame has {0} trailing bytes after the message")]
    Trailing(usize),
    #[error("could not encode message: {0}")]
    Encode(String),
    #[error("stream ended in the middle of a frame")]
    Truncated,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encode a message body (no length prefix).
pub fn encode_body<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = bincode::serde::encode_to_vec(msg, config())
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    if body.len() > MAX_FRAME_SIZE {
        return Err(FrameError::TooLarge { size: body.len() });
    }
    Ok(body)
}

/// Encode a whole frame: length prefix + body.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = encode_body(msg)?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    // Invariant: body.len() <= MAX_FRAME_SIZE < u32::MAX.
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decode a message body that must be consumed exactly.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    if body.len() > MAX_FRAME_SIZE {
        return Err(FrameError::TooLarge { size: body.len() });
    }
    let (msg, used) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| FrameError::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(FrameError::Trailing(body.len() - used));
    }
    Ok(msg)
}

/// Decode one frame from the start of `buf`. Returns the message and the
/// number of bytes used, or `Ok(None)` if `buf` does not hold a whole frame yet.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if size > MAX_FRAME_SIZE {
        return Err(FrameError::TooLarge { size });
    }
    if buf.len() < HEADER_LEN + size {
        return Ok(None);
    }
    let msg = decode_body(&buf[HEADER_LEN..HEADER_LEN + size])?;
    Ok(Some((msg, HEADER_LEN + size)))
}

/// Write one frame.
pub async fn write<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let frame = encode(msg)?;
    w.write_all(&frame).await?;
    Ok(())
}

/// Read one frame. `Ok(None)` on a clean end of stream before any byte of a frame.
pub async fn read<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<Option<T>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let size = u32::from_be_bytes(header) as usize;
    if size > MAX_FRAME_SIZE {
        return Err(FrameError::TooLarge { size });
    }
    let mut body = vec![0u8; size];
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    decode_body(&body).map(Some)
}

/// Read one frame; end of stream is an error.
pub async fn read_required<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<T, FrameError> {
    read(r).await?.ok_or(FrameError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ClientRequest, ClientResponse};
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let req = ClientRequest::ListJobs { limit: 7 };
        let f = encode(&req).expect("encodes");
        let (back, used): (ClientRequest, usize) = decode(&f).expect("decodes").expect("whole");
        assert_eq!(used, f.len());
        assert_eq!(back, req);
        // Any prefix is "not yet whole", never an error or panic.
        for cut in 0..f.len() {
            assert!(decode::<ClientRequest>(&f[..cut])
                .expect("prefix ok")
                .is_none());
        }
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut f = ((MAX_FRAME_SIZE + 1) as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&[0; 8]);
        assert!(matches!(
            decode::<ClientRequest>(&f),
            Err(FrameError::TooLarge { .. })
        ));
        let big = vec![0u8; MAX_FRAME_SIZE + 1];
        assert!(matches!(
            decode_body::<ClientRequest>(&big),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn oversized_message_is_refused_on_encode() {
        let msg = ClientResponse::Error {
            message: "x".repeat(MAX_FRAME_SIZE + 10),
        };
        assert!(matches!(
            encode(&msg),
            Err(FrameError::TooLarge { .. }) | Err(FrameError::Encode(_))
        ));
    }

    #[tokio::test]
    async fn async_read_reports_truncation() {
        let f = encode(&ClientRequest::ListJobs { limit: 1 }).expect("encodes");
        let mut short = &f[..f.len() - 1];
        let r: Result<Option<ClientRequest>, _> = read(&mut short).await;
        assert!(matches!(r, Err(FrameError::Truncated)));
        let mut empty: &[u8] = &[];
        let r: Option<ClientRequest> = read(&mut empty).await.expect("clean eof");
        assert!(r.is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode::<ClientRequest>(&bytes);
            let _ = decode::<ClientResponse>(&bytes);
            let _ = decode::<crate::api::JobEvent>(&bytes);
            let _ = decode::<crate::api::RunnerToNode>(&bytes);
            let _ = decode::<crate::handshake::Hello>(&bytes);
            let _ = decode::<crate::instance::EntrypointToNode>(&bytes);
            let _ = decode::<crate::instance::NodeToEntrypoint>(&bytes);
            let _ = decode::<crate::instance::ExecInput>(&bytes);
            let _ = decode::<crate::instance::ExecOutput>(&bytes);
            let _ = decode::<crate::instance::TunnelReply>(&bytes);
        }

        #[test]
        fn decoder_never_panics_on_valid_header_random_body(body in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut f = (body.len() as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&body);
            let _ = decode::<ClientRequest>(&f);
            let _ = decode::<ClientResponse>(&f);
            let _ = decode::<crate::api::JobEvent>(&f);
            let _ = decode::<crate::instance::EntrypointToNode>(&f);
            let _ = decode::<crate::instance::ExecInput>(&f);
            let _ = decode::<crate::instance::ExecOutput>(&f);
        }

        #[test]
        fn mutated_valid_frames_never_panic(idx in 0usize..64, byte in any::<u8>()) {
            let f = encode(&ClientRequest::QueueJob { spec: crate::types::JobSpec::example() }).expect("encodes");
            let mut g = f.clone();
            let i = idx % g.len();
            g[i] = byte;
            let _ = decode::<ClientRequest>(&g);
        }
    }
}
