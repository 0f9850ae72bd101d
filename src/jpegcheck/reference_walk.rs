//! The walk as it was before the fast walk of [`super::entropy`] (9-bit fast tables, a
//! branch per code to refill the bit buffer, two checks per coefficient), kept for the tests
//! only: with `cfg(test)`, [`super::validate`] runs both walks on every input and asserts
//! that they agree exactly (the same `Ok`, or the same error with the same offsets), so
//! every test that validates a frame is also a lockstep test of the fast walk against this
//! one, and `tests.rs` adds mutated, truncated, bit-flipped and chunk-swapped frames.
//! Selected by [`validate_reference`] through a thread-local switch read in
//! [`super::markers::walk_segments`].

use super::markers::{walk_segments, Depth};
use super::markers::{PREFIX, RST0};
use super::segments::{Frame, Scan, ScanComp};
use super::{JpegError, JpegInfo};
use std::cell::Cell;

thread_local! {
    /// Set while [`validate_reference`] runs: the segment walk calls this module's
    /// [`walk_scan`] instead of the fast one.
    pub(super) static ACTIVE: Cell<bool> = const { Cell::new(false) };
}

/// [`super::validate`] with the reference walk.
pub(super) fn validate_reference(bytes: &[u8]) -> Result<JpegInfo, JpegError> {
    ACTIVE.with(|a| a.set(true));
    let result = walk_segments(bytes, Depth::Entropy { range_checks: true });
    ACTIVE.with(|a| a.set(false));
    result
}

/// A Huffman table ready for decoding (the reference walk's own form of it, built beside
/// the fast walk's by [`super::entropy::Huffman::build`]).
#[derive(Clone)]
pub(super) struct Huffman {
    /// An AC table: decoding returns the code length plus the size of the coefficient
    /// that follows (its low 4 bits), the bits to skip in one go.
    ac: bool,
    /// Indexed by the next 9 bits: `(symbol << 8) | length` for codes of up to 9 bits
    /// (length plus coefficient size for an AC table), 0 when the code is longer (or
    /// undefined). The length in the low byte feeds the shift directly.
    fast: [u16; 1 << FAST_BITS],
    /// Largest code of each length (index 1..=16), -1 when there is none.
    maxcode: [i32; 17],
    /// Index into `symbols` of a code of each length, minus that code.
    valoffset: [i32; 17],
    symbols: [u8; 256],
}

const FAST_BITS: u32 = 9;

impl Huffman {
    pub(super) const EMPTY: Huffman = Huffman {
        ac: false,
        fast: [0; 1 << FAST_BITS],
        maxcode: [-1; 17],
        valoffset: [0; 17],
        symbols: [0; 256],
    };

    /// Builds the canonical code from the 16 code counts and the symbols (JPEG Annex C).
    pub(super) fn build(
        &mut self,
        counts: &[u8],
        symbols: &[u8],
        ac: bool,
    ) -> Result<(), &'static str> {
        *self = Huffman::EMPTY;
        self.ac = ac;
        self.symbols[..symbols.len()].copy_from_slice(symbols);
        let mut code: u32 = 0;
        let mut k: usize = 0;
        for len in 1..=16u32 {
            let n = usize::from(counts[len as usize - 1]);
            if n > 0 {
                self.valoffset[len as usize] = k as i32 - code as i32;
                for &sym in &symbols[k..k + n] {
                    // Codes must fit their length, and the all-1s code is reserved
                    // (libjpeg rejects such tables too).
                    if code + 1 >= 1 << len {
                        return Err("Huffman code lengths overflow the code space");
                    }
                    if len <= FAST_BITS {
                        let shift = FAST_BITS - len;
                        let first = (code << shift) as usize;
                        let skip = len as u16 + if ac { u16::from(sym & 15) } else { 0 };
                        let entry = (u16::from(sym) << 8) | skip;
                        self.fast[first..first + (1 << shift)].fill(entry);
                    }
                    code += 1;
                }
                k += n;
                self.maxcode[len as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        Ok(())
    }

    /// The code of more than 9 bits at the top of `bits`: `(length, symbol)`, with the
    /// coefficient size added to the length for an AC table (as in `fast`).
    #[cold]
    #[inline(never)]
    fn decode_slow(&self, bits: u64) -> Option<(u32, u8)> {
        (FAST_BITS + 1..=16).find_map(|len| {
            let code = (bits >> (64 - len)) as i32;
            (code <= self.maxcode[len as usize]).then(|| {
                let sym = self.symbols[(code + self.valoffset[len as usize]) as usize];
                (len + if self.ac { u32::from(sym & 15) } else { 0 }, sym)
            })
        })
    }
}

/// Why a block could not be walked (completed into a [`JpegError`] by the caller).
enum Fault {
    UndefinedCode,
    DcCategory(u8),
    AcSymbol(u8),
    Past63,
    DcRange,
    AcRange,
}

/// Reads the entropy-coded data of one scan, MSB first.
struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte to load.
    pos: usize,
    /// Bits not yet consumed, left-aligned.
    buf: u64,
    /// Number of valid bits in `buf`; negative once more bits were consumed than the data
    /// held (zeros are read past a marker or the end).
    nbits: i32,
    /// A marker (or the end of the data) is at `pos`: nothing more is loaded.
    marker: bool,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        BitReader {
            data,
            pos,
            buf: 0,
            nbits: 0,
            marker: false,
        }
    }

    /// Loads bytes until more than 56 bits are buffered or a marker is reached.
    #[inline(always)]
    fn refill(&mut self) {
        if self.marker {
            return; // zeros from here on
        }
        // Fast path: the next 8 bytes hold no FF (so no stuffing and no marker); take as
        // many whole bytes as fit. Only called with 0 <= nbits < 32.
        if let Some(chunk) = self.data.get(self.pos..self.pos + 8) {
            let word = u64::from_be_bytes(chunk.try_into().unwrap_or([PREFIX; 8]));
            let inv = !word; // a zero byte in `inv` is an FF in `word`
            if inv.wrapping_sub(0x0101_0101_0101_0101) & !inv & 0x8080_8080_8080_8080 == 0 {
                let take = (64 - self.nbits as u32) / 8; // 4..=8
                let bits = 8 * take;
                self.buf |= (word >> (64 - bits)) << (64 - self.nbits as u32 - bits);
                self.pos += take as usize;
                self.nbits += bits as i32;
                return;
            }
        }
        self.refill_slow();
    }

    fn refill_slow(&mut self) {
        while self.nbits <= 56 && !self.marker {
            let Some(&b) = self.data.get(self.pos) else {
                self.marker = true;
                return;
            };
            if b == PREFIX {
                if self.data.get(self.pos + 1) != Some(&0) {
                    self.marker = true;
                    return;
                }
                self.pos += 2;
            } else {
                self.pos += 1;
            }
            self.buf |= u64::from(b) << (56 - self.nbits);
            self.nbits += 8;
        }
    }

    #[inline(always)]
    fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.nbits -= n as i32;
    }

    /// The next Huffman code, not consumed: `(length, symbol)`, or for an AC table
    /// `(length + coefficient size, symbol)`.
    #[inline(always)]
    fn decode(&mut self, table: &Huffman) -> Result<(u32, u8), Fault> {
        if self.nbits < 32 {
            self.refill();
        }
        let entry = table.fast[(self.buf >> (64 - FAST_BITS)) as usize];
        if entry != 0 {
            Ok((u32::from(entry & 0xFF), (entry >> 8) as u8))
        } else {
            table.decode_slow(self.buf).ok_or(Fault::UndefinedCode)
        }
    }

    /// Walks one block: the DC difference, then the AC coefficients up to EOB or 63.
    #[inline(always)]
    fn block(&mut self, c: &mut ScanComp) -> Result<(), Fault> {
        let (len, s) = self.decode(&c.dc.reference)?;
        let cat = u32::from(s);
        if cat > c.dc_cat_max {
            return Err(Fault::DcCategory(s));
        }
        if cat > 0 {
            let bits = ((self.buf << len) >> (64 - cat)) as i32;
            let diff = if bits < 1 << (cat - 1) {
                bits - (1 << cat) + 1
            } else {
                bits
            };
            c.pred += diff;
            if c.pred.unsigned_abs() > c.dc_max {
                return Err(Fault::DcRange);
            }
        }
        self.consume(len + cat);
        let mut k: u32 = 1;
        while k < 64 {
            let (skip, rs) = self.decode(&c.ac.reference)?;
            let (r, s) = (u32::from(rs >> 4), rs & 15);
            if s == 0 {
                self.consume(skip);
                match r {
                    0 => return Ok(()), // EOB
                    15 => k += 16,      // ZRL: 16 zeros
                    _ => return Err(Fault::AcSymbol(rs)),
                }
                if k > 64 {
                    return Err(Fault::Past63);
                }
            } else {
                k += r;
                if k > 63 {
                    return Err(Fault::Past63);
                }
                if s > c.ac_max[k as usize] {
                    return Err(if s > c.ac_size_max {
                        Fault::AcSymbol(rs)
                    } else {
                        Fault::AcRange
                    });
                }
                self.consume(skip);
                k += 1;
            }
        }
        Ok(())
    }

    /// Approximate byte offset of the next unread bit.
    fn offset(&self) -> usize {
        self.pos.saturating_sub((self.nbits.max(0) as usize) / 8)
    }

    /// True when the bits just looked at may lie past the end of the data (a code and
    /// the bits that follow it span at most 31 bits): a fault there means the data ended
    /// early, whatever the zeros read past the end decoded to.
    fn overran(&self) -> bool {
        self.marker && self.nbits < 32
    }

    fn data_ends(&self, mcu: u32, mcus: u32) -> JpegError {
        JpegError::DataEndsEarly {
            mcu: mcu + 1,
            mcus,
            offset: self.pos,
            marker: self
                .data
                .get(self.pos + 1)
                .copied()
                .filter(|_| self.pos < self.data.len()),
        }
    }

    /// After the last MCU of a scan or restart interval: checks the padding and that a
    /// marker follows at once. Returns the marker's position and code.
    fn end_of_segment(&mut self) -> Result<(usize, u8), JpegError> {
        let offset = self.offset();
        let partial = (self.nbits & 7) as u32;
        if partial > 0 && self.buf >> (64 - partial) != (1 << partial) - 1 {
            return Err(JpegError::BadPadding { offset });
        }
        let mut extra = (self.nbits >> 3) as usize;
        let mut pos = self.pos;
        if !self.marker {
            while let Some(&b) = self.data.get(pos) {
                if b == PREFIX && self.data.get(pos + 1) != Some(&0) {
                    break;
                }
                pos += if b == PREFIX { 2 } else { 1 };
                extra += 1;
            }
        }
        let Some(&marker) = self.data.get(pos + 1) else {
            return Err(JpegError::MissingEoi);
        };
        if extra > 0 {
            return Err(JpegError::ExtraData {
                bytes: extra,
                marker,
                offset: pos,
            });
        }
        Ok((pos, marker))
    }
}

/// Walks the entropy-coded data of `scan`, starting at `start`; returns the position of
/// the marker that follows it.
pub(super) fn walk_scan(
    data: &[u8],
    start: usize,
    frame: &Frame,
    mut scan: Scan,
    restart_interval: u16,
) -> Result<usize, JpegError> {
    // The MCU layout: which scan component each block belongs to.
    let mut layout = [0u8; 10];
    let mut blocks = 0;
    let (w, h) = (u32::from(frame.width), u32::from(frame.height));
    let (hmax, vmax) = (u32::from(frame.hmax), u32::from(frame.vmax));
    let (mcus_x, mcus_y) = if scan.count == 1 {
        // Non-interleaved: one block per MCU, over the component's own size.
        let c = frame.comps[scan.comps[0].index];
        blocks = 1;
        (
            (w * u32::from(c.h)).div_ceil(hmax).div_ceil(8),
            (h * u32::from(c.v)).div_ceil(vmax).div_ceil(8),
        )
    } else {
        for (i, sc) in scan.comps[..scan.count].iter().enumerate() {
            let c = frame.comps[sc.index];
            for _ in 0..c.h * c.v {
                layout[blocks] = i as u8;
                blocks += 1;
            }
        }
        (w.div_ceil(8 * hmax), h.div_ceil(8 * vmax))
    };
    let layout = &layout[..blocks];
    let mcus = mcus_x * mcus_y;
    let mut reader = BitReader::new(data, start);
    let mut left = restart_interval;
    let mut next_rst = 0u8;
    for mcu in 0..mcus {
        if restart_interval != 0 {
            if left == 0 {
                let (pos, marker) = reader.end_of_segment()?;
                if marker != RST0 + next_rst {
                    return Err(JpegError::BadRestart {
                        expected: next_rst,
                        found: marker,
                        offset: pos,
                    });
                }
                reader = BitReader::new(data, pos + 2);
                for c in &mut scan.comps {
                    c.pred = 0;
                }
                next_rst = (next_rst + 1) & 7;
                left = restart_interval;
            }
            left -= 1;
        }
        for &b in layout {
            let comp = &mut scan.comps[usize::from(b)];
            if let Err(fault) = reader.block(comp) {
                let offset = reader.offset();
                if reader.overran() {
                    return Err(reader.data_ends(mcu, mcus));
                }
                let component = comp.id;
                return Err(match fault {
                    Fault::UndefinedCode => JpegError::UndefinedHuffmanCode { offset },
                    Fault::DcCategory(category) => JpegError::DcCategory { category, offset },
                    Fault::AcSymbol(symbol) => JpegError::AcSymbol { symbol, offset },
                    Fault::Past63 => JpegError::CoefficientPast63 { offset },
                    Fault::DcRange => JpegError::DcOutOfRange { component, offset },
                    Fault::AcRange => JpegError::AcOutOfRange { component, offset },
                });
            }
        }
        if reader.nbits < 0 {
            return Err(reader.data_ends(mcu, mcus));
        }
    }
    Ok(reader.end_of_segment()?.0)
}
