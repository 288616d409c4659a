//! Content codings: the mock compresses its answers with `tower-http`'s `CompressionLayer`
//! (see `server.rs`); tests read a compressed answer back with [`decode`].

use std::io::{self, Read};

/// The codings the mock sends when asked (`Accept-Encoding` or `x-mock-force-encoding`).
pub const CODINGS: [&str; 4] = ["gzip", "br", "zstd", "deflate"];

/// `body` decoded from `coding` (a `content-encoding` value); `identity` or none is `body`.
/// HTTP's `deflate` is the zlib format (RFC 9110 §8.4.1.2), as `tower-http` writes it.
pub fn decode(coding: Option<&str>, body: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match coding.unwrap_or("identity") {
        "identity" | "" => out.extend_from_slice(body),
        "gzip" => {
            flate2::read::GzDecoder::new(body).read_to_end(&mut out)?;
        }
        "deflate" => {
            flate2::read::ZlibDecoder::new(body).read_to_end(&mut out)?;
        }
        "br" => {
            brotli::Decompressor::new(body, 4096).read_to_end(&mut out)?;
        }
        "zstd" => out = zstd::stream::decode_all(body)?,
        other => {
            return Err(io::Error::other(format!("unknown coding {other:?}")));
        }
    }
    Ok(out)
}
