//! Compression of stored objects: the setting, a streaming zstd encoder that the
//! object writer feeds chunk by chunk, and the decoder that gives the log back.
//!
//! Memory stays bounded whatever the log size: the encoder keeps only zstd's window
//! and tables (a few MiB at the default level, see [`MAX_ZSTD_LEVEL`]) plus the
//! compressed output of the chunk just written, which the writer hands on at once.
//! Every frame carries zstd's content checksum, so a corrupted object fails to
//! decode instead of yielding wrong text.
//!
//! Compressed objects are plain `.zst` files: no `Content-Encoding`, so every client
//! gets the stored bytes unchanged and `zstd -d` reads them.

use async_compression::Level;
use async_compression::tokio::bufread::ZstdDecoder;
use async_compression::tokio::write::ZstdEncoder;
use async_compression::zstd::CParameter;
use std::io::{self, Read};
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader};

/// Default `zstd_level`: zstd's own default, ~10× on typical training logs at
/// hundreds of MB/s per core.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Lowest accepted `zstd_level`.
pub const MIN_ZSTD_LEVEL: i32 = 1;
/// Highest accepted `zstd_level`. Level 19 needs ~80 MiB per writer; the "ultra"
/// levels 20–22 need up to ~1 GiB each and are refused.
pub const MAX_ZSTD_LEVEL: i32 = 19;

pub use crate::model::Compression;

/// A streaming zstd encoder whose output is collected in memory and taken after
/// each write. Writing to a `Vec` never waits, so the async calls finish at once.
pub(crate) struct Encoder {
    inner: ZstdEncoder<Vec<u8>>,
}

impl Encoder {
    pub fn new(level: i32) -> Encoder {
        let params = [CParameter::checksum_flag(true)];
        Encoder {
            inner: ZstdEncoder::with_quality_and_params(Vec::new(), Level::Precise(level), &params),
        }
    }

    /// Compresses `chunk`; returns whatever compressed output is ready (often none).
    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<Vec<u8>> {
        self.inner.write_all(chunk).await?;
        Ok(std::mem::take(self.inner.get_mut()))
    }

    /// Ends the frame; returns the remaining output.
    pub async fn finish(&mut self) -> io::Result<Vec<u8>> {
        self.inner.shutdown().await?;
        Ok(std::mem::take(self.inner.get_mut()))
    }
}

/// Decodes a stored object back into the log, according to its compression.
pub fn decode<R>(reader: R, compression: Compression) -> Box<dyn AsyncRead + Send + Unpin>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    match compression {
        Compression::None => Box::new(reader),
        Compression::Zstd => {
            // A grown copy is one frame per delta; concatenated frames are one stream.
            let mut decoder = ZstdDecoder::new(BufReader::new(reader));
            decoder.multiple_members(true);
            Box::new(decoder)
        }
    }
}

/// [`decode`] for a blocking reader (a search runs on threads of its own and
/// reads the log synchronously).
pub fn decode_blocking<R>(reader: R, compression: Compression) -> io::Result<Box<dyn Read + Send>>
where
    R: Read + Send + 'static,
{
    Ok(match compression {
        Compression::None => Box::new(reader),
        // Like `decode`: concatenated frames (a grown copy) are one stream;
        // the zstd crate's reader goes on to the next frame by itself.
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn roundtrip(data: &[u8], chunk: usize, level: i32) -> (Vec<u8>, usize) {
        let mut enc = Encoder::new(level);
        let mut stored = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            stored.extend(enc.write(c).await.unwrap());
        }
        stored.extend(enc.finish().await.unwrap());
        let mut out = Vec::new();
        decode(std::io::Cursor::new(stored.clone()), Compression::Zstd)
            .read_to_end(&mut out)
            .await
            .unwrap();
        (out, stored.len())
    }

    #[tokio::test]
    async fn zstd_roundtrips_and_compresses_logs() {
        let log: Vec<u8> = (0..200_000)
            .flat_map(|i| format!("step {i} loss=0.{:04} lr=1e-4\n", i % 9973).into_bytes())
            .collect();
        let (out, stored) = roundtrip(&log, 16 * 1024, DEFAULT_ZSTD_LEVEL).await;
        assert!(out == log);
        assert!(stored * 5 < log.len(), "{stored} of {}", log.len());
        let (out, _) = roundtrip(b"", 1, MAX_ZSTD_LEVEL).await;
        assert!(out.is_empty());
    }

    /// GUARD: a corrupted compressed object fails to decode (frame checksum) rather
    /// than yielding wrong text.
    #[tokio::test]
    async fn corruption_is_detected_on_decode() {
        let log: Vec<u8> = (0..5000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut enc = Encoder::new(DEFAULT_ZSTD_LEVEL);
        let mut stored = enc.write(&log).await.unwrap();
        stored.extend(enc.finish().await.unwrap());
        let mid = stored.len() / 2;
        stored[mid] ^= 0x55;
        let mut out = Vec::new();
        let result = decode(std::io::Cursor::new(stored), Compression::Zstd)
            .read_to_end(&mut out)
            .await;
        assert!(result.is_err() || out != log);
    }

    #[test]
    fn names_and_suffixes() {
        for c in [Compression::None, Compression::Zstd] {
            assert_eq!(Compression::parse(c.as_str()), Some(c));
        }
        assert_eq!(Compression::parse("gzip"), None);
        assert_eq!(Compression::Zstd.suffix(), ".zst");
    }
}
