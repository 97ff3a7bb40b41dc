//! Reading an HTTP response body without trusting the size it announces:
//! one flow for component downloads and registry responses.

/// Why a bounded read stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The body is larger than the limit, as announced or as read. Not
    /// retryable: the same source gives the same bytes.
    #[error("larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// The connection failed mid-body. Retryable.
    #[error("the body could not be read")]
    Http(#[source] reqwest::Error),
}

/// Preallocating more than this on the server's word alone is not worth
/// the risk; a larger body grows as it arrives.
const MAX_PREALLOCATION: u64 = 4 << 20;

/// The whole body of `response`, failing as soon as it is larger than
/// `limit` (before reading, when the server announces a larger length).
pub async fn read_bounded(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<Vec<u8>, ReadError> {
    let announced = response.content_length();
    if announced.is_some_and(|length| length > limit) {
        return Err(ReadError::TooLarge { limit });
    }
    let hint = announced.unwrap_or(0).min(MAX_PREALLOCATION);
    let mut body = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Http)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(ReadError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: &'static [u8]) -> reqwest::Response {
        reqwest::Response::from(http::Response::new(body))
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        let body = read_bounded(response(b"0123456789"), 10).await.unwrap();
        assert_eq!(body, b"0123456789");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_with_the_limit() {
        let error = read_bounded(response(b"0123456789"), 9).await.unwrap_err();
        assert!(matches!(error, ReadError::TooLarge { limit: 9 }), "{error}");
    }
}
