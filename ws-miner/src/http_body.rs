//! Reading an HTTP answer's body without trusting its size: the `Content-Length` is checked
//! first, then the body is read chunk by chunk and refused the moment it passes the bound, so a
//! server that sends hundreds of megabytes costs at most the bound in memory.

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The body is (or says it is) longer than the bound.
    TooLarge {
        /// The bound, in bytes.
        max: usize,
        /// The declared length, when the server sent one.
        declared: Option<u64>,
    },
    /// The transfer failed.
    Transfer(reqwest::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge { max, declared: Some(len) } => write!(
                f,
                "the body is {len} bytes, more than the {} the miner reads; refused",
                bytes_text(*max)
            ),
            BodyError::TooLarge { max, declared: None } => write!(
                f,
                "the body is longer than the {} the miner reads; refused after that much",
                bytes_text(*max)
            ),
            BodyError::Transfer(e) => write!(f, "reading the body failed: {e}"),
        }
    }
}

/// Writes a byte count as the README does: `4 MiB`, `64 KiB`, or plain bytes.
pub(crate) fn bytes_text(n: usize) -> String {
    if n >= 1 << 20 && n & ((1 << 20) - 1) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n & ((1 << 10) - 1) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// Reads `response`'s body, at most `max` bytes of it; a longer body is refused (and the
/// connection dropped, so the rest is never read).
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, BodyError> {
    let declared = response.content_length();
    if declared.is_some_and(|len| len > max as u64) {
        return Err(BodyError::TooLarge { max, declared });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transfer)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge { max, declared: None });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
