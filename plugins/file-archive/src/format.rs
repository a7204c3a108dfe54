//! The archive formats: Zstandard (pure-Rust `ruzstd`, its fast level, written as a
//! sequence of independent frames so that memory stays bounded and a cancel is noticed
//! between frames) and gzip (`flate2` on `miniz_oxide`). Both are read by the standard
//! `zstd` and `gzip` tools.

use std::io::{self, BufRead, BufReader, Read, Write};

use flate2::{Compression, read::MultiGzDecoder, write::GzEncoder};
use ruzstd::{
    decoding::{FrameDecoder, StreamingDecoder},
    encoding::{CompressionLevel, compress_to_vec},
};

/// Input bytes per zstd frame.
pub const ZSTD_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// How an archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Zstd,
    /// `level` 1 (fast) to 9 (small).
    Gzip {
        level: u32,
    },
}

impl Format {
    /// `"zst"` or `"gz"`.
    pub fn extension(&self) -> &'static str {
        match self {
            Format::Zstd => "zst",
            Format::Gzip { .. } => "gz",
        }
    }

    /// The format of an archive file name, if it is one.
    pub fn of_archive_name(name: &str) -> Option<Format> {
        if name.ends_with(".zst") {
            Some(Format::Zstd)
        } else if name.ends_with(".gz") {
            Some(Format::Gzip { level: 6 })
        } else {
            None
        }
    }

    /// An encoder writing to `out`; feed it with `write_all`, then call `finish`.
    pub fn encoder<W: Write>(&self, out: W) -> Encoder<W> {
        match *self {
            Format::Zstd => Encoder::Zstd { out, pending: Vec::with_capacity(ZSTD_FRAME_BYTES), frames: 0 },
            Format::Gzip { level } => Encoder::Gzip(GzEncoder::new(out, Compression::new(level.clamp(1, 9)))),
        }
    }

    /// A reader of the original bytes out of an archive.
    pub fn decoder<'a, R: Read + 'a>(&self, archive: R) -> Box<dyn Read + 'a> {
        match self {
            Format::Zstd => Box::new(ZstdFrames { source: Some(BufReader::new(archive)), frame: None }),
            Format::Gzip { .. } => Box::new(MultiGzDecoder::new(archive)),
        }
    }
}

/// A streaming compressor.
pub enum Encoder<W: Write> {
    Zstd { out: W, pending: Vec<u8>, frames: u64 },
    Gzip(GzEncoder<W>),
}

impl<W: Write> Encoder<W> {
    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Zstd { out, pending, frames } => {
                while !data.is_empty() {
                    let take = (ZSTD_FRAME_BYTES - pending.len()).min(data.len());
                    pending.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if pending.len() == ZSTD_FRAME_BYTES {
                        out.write_all(&compress_to_vec(&pending[..], CompressionLevel::Fastest))?;
                        pending.clear();
                        *frames += 1;
                    }
                }
                Ok(())
            }
        }
    }

    /// Writes what is buffered and the format's trailer; returns the writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd { mut out, pending, frames } => {
                // An empty input still gets one (empty) frame: a valid .zst file.
                if !pending.is_empty() || frames == 0 {
                    out.write_all(&compress_to_vec(&pending[..], CompressionLevel::Fastest))?;
                }
                Ok(out)
            }
        }
    }
}

/// Reads a sequence of zstd frames as one stream.
struct ZstdFrames<R: Read> {
    /// The archive between frames.
    source: Option<BufReader<R>>,
    /// The frame being read.
    frame: Option<StreamingDecoder<BufReader<R>, FrameDecoder>>,
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(frame) = &mut self.frame {
                let n = frame.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.source = self.frame.take().map(StreamingDecoder::into_inner);
            }
            let Some(mut source) = self.source.take() else {
                return Err(io::Error::other("the zstd stream broke off after an earlier error"));
            };
            if source.fill_buf()?.is_empty() {
                self.source = Some(source);
                return Ok(0);
            }
            self.frame = Some(StreamingDecoder::new(source).map_err(io::Error::other)?);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| b"the quick brown fox jumps over the lazy dog\n"[i % 44] ^ ((i / 5000) as u8 & 3)).collect()
    }

    fn round_trip(format: Format, data: &[u8]) -> Vec<u8> {
        let mut encoder = format.encoder(Vec::new());
        for chunk in data.chunks(100_000) {
            encoder.write_all(chunk).unwrap();
        }
        let archive = encoder.finish().unwrap();
        if data.len() > 1000 {
            assert!(archive.len() < data.len() / 4, "{format:?} compresses: {} of {}", archive.len(), data.len());
        }
        let mut back = Vec::new();
        format.decoder(&archive[..]).read_to_end(&mut back).unwrap();
        back
    }

    #[test]
    fn both_formats_round_trip_across_several_zstd_frames() {
        let data = sample(2 * ZSTD_FRAME_BYTES + 12_345);
        assert_eq!(round_trip(Format::Zstd, &data), data);
        assert_eq!(round_trip(Format::Gzip { level: 6 }, &data), data);
    }

    #[test]
    fn empty_input_makes_a_valid_archive() {
        assert_eq!(round_trip(Format::Zstd, &[]), Vec::<u8>::new());
        assert_eq!(round_trip(Format::Gzip { level: 1 }, &[]), Vec::<u8>::new());
    }

    #[test]
    fn a_damaged_archive_fails_to_read_or_reads_differently() {
        let data = sample(50_000);
        let mut archive = Format::Zstd.encoder(Vec::new());
        archive.write_all(&data).unwrap();
        let mut archive = archive.finish().unwrap();
        let n = archive.len();
        archive.truncate(n - 10);
        let mut back = Vec::new();
        let result = Format::Zstd.decoder(&archive[..]).read_to_end(&mut back);
        assert!(result.is_err() || back != data);
    }
}
