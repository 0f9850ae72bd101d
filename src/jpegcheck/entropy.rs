//! The entropy-coded data of a scan: the Huffman tables in decoding form, the bit reader
//! (byte stuffing, restart markers) and the walk of every block of every MCU, with the DC
//! and AC range checks. This is the part of the check that finds data out of place: a
//! datagram swapped, lost or duplicated shows up here as a code, a run or a value no
//! encoder writes. No pixel is decoded.
//!
//! Built for speed, since the hub runs it on every chunked seed frame before the ack: an
//! AC coefficient's value is never needed (only its size, for the range check), so one
//! lookup in an 11-bit fast table gives the bits to skip (code plus value), the step to
//! the next coefficient and the size, and one comparison with a per-component limit
//! table covers both "past coefficient 63" and "too large for its quantizer" (see
//! [`AcEntry`] and [`ScanComp::lim`]). The entry is itself the shift that skips the bits
//! (its low 6 bits), so nothing stands between the table load and the shift on the
//! walk's critical path (one code after the other); on CPUs with BMI2 (detected at run
//! time) the walk is compiled with it, whose shifts take the count from any register.
//! EOB leaves the hot loop at once; codes of 12 to 16 bits (a second lookup,
//! `Huffman::long`) and every fault go to a cold path that takes the symbol exactly as
//! the original walk did. The bit reader keeps the original walk's refill schedule (so
//! offsets and the "data ends early" verdicts are unchanged) and its fast path of 8
//! bytes without `FF`. After a block that reached coefficient 56 (noise-like data), the
//! next block's AC symbols go to [`BitReader::ac_run`] while the data ahead holds no FF:
//! it tops the buffer up every second symbol without testing the bit count, follows the
//! original schedule on the side (a bit count only) and puts the reader into the
//! original walk's state where it stops. The original walk is kept for the tests
//! (`reference_walk`), which run both in lockstep on every frame they validate (and
//! every scan's walk also without `ac_run`, and, where the CPU has BMI2, in both
//! compiled forms, comparing verdicts and pause states).
//!
//! Stack: the eight Huffman tables of a validation (5 KiB each: 2048 + 256 two-byte
//! entries, the canonical code, 256 symbols) live on the caller's stack in
//! [`super::markers::walk_segments`], about 41 KiB in all with the quantization tables
//! and the scan's components; the walk itself adds a few hundred bytes and no recursion.

use super::markers::{PREFIX, RST0};
use super::segments::{Frame, Scan, ScanComp};
use super::JpegError;

/// A Huffman table ready for decoding.
#[derive(Clone)]
pub(super) struct Huffman {
    pub(super) defined: bool,
    /// An AC table: `fast` holds [`AcEntry`] values, and decoding returns the code length
    /// plus the size of the coefficient that follows, the bits to skip in one go.
    ac: bool,
    /// Indexed by the next `FAST_BITS` bits. A DC table: `(symbol << 8) | length` for
    /// codes of up to `FAST_BITS` bits, 0 when the code is longer (or undefined). An AC
    /// table: an [`AcEntry`] (skip, run and size in one `u16`, or a mark that sends the
    /// walk to its cold path).
    fast: [u16; 1 << FAST_BITS],
    /// The codes longer than `FAST_BITS`, in the form of `fast`, indexed by the next 16
    /// bits minus `long_base` (where they start, left-aligned to 16 bits): 192 entries
    /// for the standard tables; a code past `LONG_LEN` is decoded by [`Self::decode_from`].
    long: [u16; LONG_LEN],
    long_base: u32,
    /// Largest code of each length (index 1..=16), -1 when there is none.
    maxcode: [i32; 17],
    /// Index into `symbols` of a code of each length, minus that code.
    valoffset: [i32; 17],
    symbols: [u8; 256],
    /// The same table for the reference walk the tests run in lockstep with this one.
    #[cfg(test)]
    pub(super) reference: super::reference_walk::Huffman,
}

/// Bits that index the fast tables: 2048 entries of 2 bytes, 4 KiB per table.
const FAST_BITS: u32 = 11;
/// Entries of the table of longer codes (the standard tables need 192).
const LONG_LEN: usize = 256;

/// The AC fast table's entries, one `u16`: bits 0..6 the bits to skip (code length plus
/// coefficient size, at most 31, so bit 5 is clear and the entry itself can be the shift
/// count), bits 6..11 the zero run plus one (the step to the next coefficient), bits
/// 11..16 the size `s` (0 only for ZRL, 16 zeros), compared with the component's limit at
/// the position after the coefficient (see [`ScanComp::lim`]: reaching it means a fault or
/// coefficient 63 passed). EOB and everything the hot loop does not handle carry size
/// [`AcEntry::COLD`], above every limit, so one comparison sends them to
/// [`BitReader::ac_cold`]; EOB is the cold entry with a step of 0.
struct AcEntry;

impl AcEntry {
    /// The size field of an entry the hot loop does not handle.
    const COLD: u16 = 31;
    /// What an unfilled slot holds: a code longer than `FAST_BITS` or none.
    const LONG: u16 = Self::COLD << 11 | 1 << 6;
    /// A short EOB: size [`Self::COLD`] and a step of 0 (under this mask).
    const EOB_MASK: u16 = !63;
    const EOB: u16 = Self::COLD << 11;
    /// A short end-of-band run: cold, decoded again from the first code length.
    const RUN: u16 = Self::LONG | 1;

    fn pack(skip: u32, run: u8, size: u16) -> u16 {
        debug_assert!(skip < 32 && run < 16 && size < 32);
        skip as u16 | u16::from(run + 1) << 6 | size << 11
    }

    /// The size field (no mask needed: it is the top of the entry).
    #[inline(always)]
    fn size(e: u16) -> u16 {
        e >> 11
    }

    /// The zero run plus one; 0 for EOB.
    #[inline(always)]
    fn step(e: u16) -> u32 {
        u32::from(e >> 6) & 31
    }

    /// The bits to skip.
    #[inline(always)]
    fn skip(e: u16) -> u32 {
        u32::from(e) & 63
    }
}

impl Huffman {
    pub(super) const EMPTY: Huffman = Huffman {
        defined: false,
        ac: false,
        fast: [0; 1 << FAST_BITS],
        long: [0; LONG_LEN],
        long_base: 1 << 16,
        maxcode: [-1; 17],
        valoffset: [0; 17],
        symbols: [0; 256],
        #[cfg(test)]
        reference: super::reference_walk::Huffman::EMPTY,
    };

    /// Builds the canonical code from the 16 code counts and the symbols (JPEG Annex C).
    pub(super) fn build(
        &mut self,
        counts: &[u8],
        symbols: &[u8],
        ac: bool,
    ) -> Result<(), &'static str> {
        *self = Huffman::EMPTY;
        #[cfg(test)]
        self.reference.build(counts, symbols, ac)?;
        self.ac = ac;
        if ac {
            self.fast.fill(AcEntry::LONG);
            self.long.fill(AcEntry::LONG);
        }
        self.symbols[..symbols.len()].copy_from_slice(symbols);
        let mut code: u32 = 0;
        let mut k: usize = 0;
        for len in 1..=16u32 {
            if len == FAST_BITS + 1 {
                self.long_base = code << (16 - len);
            }
            let n = usize::from(counts[len as usize - 1]);
            if n > 0 {
                self.valoffset[len as usize] = k as i32 - code as i32;
                for &sym in &symbols[k..k + n] {
                    // Codes must fit their length, and the all-1s code is reserved
                    // (libjpeg rejects such tables too).
                    if code + 1 >= 1 << len {
                        return Err("Huffman code lengths overflow the code space");
                    }
                    let entry = if !ac {
                        (u16::from(sym) << 8) | len as u16
                    } else {
                        let (run, size) = (sym >> 4, u16::from(sym & 15));
                        match (run, size) {
                            (0, 0) => AcEntry::EOB | len as u16,  // EOB
                            (15, 0) => AcEntry::pack(len, 15, 0), // ZRL
                            (_, 0) => AcEntry::RUN,               // an end-of-band run: cold
                            _ => AcEntry::pack(len + u32::from(size), run, size),
                        }
                    };
                    if len <= FAST_BITS {
                        let shift = FAST_BITS - len;
                        let first = (code << shift) as usize;
                        self.fast[first..first + (1 << shift)].fill(entry);
                    } else {
                        let first = ((code << (16 - len)) - self.long_base) as usize;
                        if let Some(slots) = self.long.get_mut(first..first + (1 << (16 - len))) {
                            slots.fill(entry);
                        }
                    }
                    code += 1;
                }
                k += n;
                self.maxcode[len as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        self.defined = true;
        Ok(())
    }

    /// The entry of `long` for the code at the top of `bits` (a code longer than
    /// `FAST_BITS`), or what `fast` holds for a code not found there.
    #[inline(always)]
    fn long_entry(&self, bits: u64) -> u16 {
        let i = ((bits >> 48) as u32).wrapping_sub(self.long_base) as usize;
        let none = if self.ac { AcEntry::LONG } else { 0 };
        self.long.get(i).copied().unwrap_or(none)
    }

    /// The code at the top of `bits`, of lengths `from..=16`: `(length, symbol)`, with
    /// the coefficient size added to the length for an AC table (as in `fast`).
    #[cold]
    #[inline(never)]
    fn decode_from(&self, bits: u64, from: u32) -> Option<(u32, u8)> {
        (from..=16).find_map(|len| {
            let code = (bits >> (64 - len)) as i32;
            (code <= self.maxcode[len as usize]).then(|| {
                let sym = self.symbols[(code + self.valoffset[len as usize]) as usize];
                (len + if self.ac { u32::from(sym & 15) } else { 0 }, sym)
            })
        })
    }
}

/// Why a block could not be walked (completed into a [`JpegError`] by the caller).
#[cfg_attr(test, derive(Debug, PartialEq))]
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
    /// No FF lies in `clear_lo..clear` (where [`BitReader::ac_run`] last looked from,
    /// and the first FF it found, or the end); both 0 until it looks.
    clear_lo: usize,
    clear: usize,
    /// The last block walked reached coefficient 56: the next one goes to
    /// [`Self::ac_run`] (which pays off on long blocks only).
    long: bool,
}

/// The position of the first `FF` in `data` at or after `from`, or `data.len()`, looked
/// for 8 bytes at a time.
fn first_ff(data: &[u8], from: usize) -> usize {
    let mut at = from.min(data.len());
    while let Some(chunk) = data.get(at..).and_then(|rest| rest.first_chunk::<8>()) {
        let inv = !u64::from_le_bytes(*chunk);
        // A zero byte of `inv` (an FF of the data) sets its top bit here; the lowest one
        // set is exact (only bits above a zero byte can be set falsely).
        let found = inv.wrapping_sub(0x0101_0101_0101_0101) & !inv & 0x8080_8080_8080_8080;
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    data[at..]
        .iter()
        .position(|&b| b == PREFIX)
        .map_or(data.len(), |i| at + i)
}

#[cfg(test)]
thread_local! {
    /// Whether [`BitReader::ac_run`] is used (the tests walk with and without it).
    static AC_RUN: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
    /// How [`BitReader::ac_run`] ended, counted: EOB, coefficient 63, a cold symbol, an FF
    /// or the end within reach (after a symbol or more).
    pub(super) static AC_RUN_ENDS: std::cell::Cell<[usize; 4]> =
        const { std::cell::Cell::new([0; 4]) };
}

/// Counts an end of [`BitReader::ac_run`] (in the tests).
#[inline(always)]
fn count_end(_kind: usize) {
    #[cfg(test)]
    AC_RUN_ENDS.with(|c| {
        let mut n = c.get();
        n[_kind] += 1;
        c.set(n);
    });
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        BitReader {
            data,
            pos,
            buf: 0,
            nbits: 0,
            marker: false,
            clear_lo: 0,
            clear: 0,
            long: false,
        }
    }

    /// Loads bytes until more than 56 bits are buffered or a marker is reached. The
    /// original walk's schedule, kept exactly (called when fewer than 32 bits are left),
    /// so that the buffer, `pos` and `marker` are what that walk had at every step, and
    /// with them the offsets and the ends-early verdicts. (Refilling before every code
    /// without the branch, ORing the next 8 bytes in whether needed or not, measured
    /// slower: more instructions per code than the mispredictions it saves.)
    #[inline(always)]
    fn refill(&mut self) {
        // Fast path: the next 8 bytes hold no FF (so no stuffing and no marker); take as
        // many whole bytes as fit. Only called with 0 <= nbits < 32 when it is taken:
        // after a marker (or the end) `pos` stays there, so the test fails and the slow
        // path, which tests `marker` first, reads nothing more.
        if let Some(chunk) = self
            .data
            .get(self.pos..)
            .and_then(|rest| rest.first_chunk())
        {
            let word = u64::from_be_bytes(*chunk);
            let inv = !word; // a zero byte in `inv` is an FF in `word`
            if inv.wrapping_sub(0x0101_0101_0101_0101) & !inv & 0x8080_8080_8080_8080 == 0 {
                // Whole bytes up to 57..=64 bits: `take` of them leave `partial` bits of
                // the 64 free, which the word's bits placed below the valid ones are
                // cleared of. (Written so, it needs no shift by 64 - bits.)
                let n = self.nbits as u32; // 0..32
                let partial = n.wrapping_neg() & 7;
                self.buf |= (word >> n >> partial) << partial;
                self.pos += ((64 - n) / 8) as usize; // 4..=8
                self.nbits = (64 - partial) as i32;
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

    /// Consumes the bits an [`AcEntry`] says to skip. The shift takes the entry as it is
    /// (x86 shifts mask their count to 6 bits, so no instruction stands between the table
    /// load and the shift, the walk's critical path); the count takes the skip masked
    /// differently (it is below 32), so that the two masks are not merged into one.
    #[inline(always)]
    fn consume_ac(&mut self, e: u32) {
        self.buf <<= e & 63;
        self.nbits -= (e & 31) as i32;
    }

    /// The next DC Huffman code, not consumed: `(length, symbol)`.
    #[inline(always)]
    fn decode_dc(&mut self, table: &Huffman) -> Result<(u32, u8), Fault> {
        if self.nbits < 32 {
            self.refill();
        }
        let mut entry = table.fast[(self.buf >> (64 - FAST_BITS)) as usize];
        if entry == 0 {
            entry = table.long_entry(self.buf);
        }
        if entry != 0 {
            Ok((u32::from(entry & 0xFF), (entry >> 8) as u8))
        } else {
            table
                .decode_from(self.buf, FAST_BITS + 1)
                .ok_or(Fault::UndefinedCode)
        }
    }

    /// Walks one block: the DC difference, then the AC coefficients up to EOB or 63.
    #[inline(always)]
    fn block(&mut self, c: &mut ScanComp) -> Result<(), Fault> {
        let (len, s) = self.decode_dc(c.dc)?;
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
        let ac = c.ac;
        let lim = &c.lim;
        let mut k: u32 = 1;
        #[cfg(test)]
        let run = self.long && AC_RUN.with(|r| r.get());
        #[cfg(not(test))]
        let run = self.long;
        if run && self.ac_run(c, &mut k) {
            self.long = k >= 56;
            return Ok(());
        }
        loop {
            // Here k < 64.
            if self.nbits < 32 {
                self.refill();
            }
            // All in u32, so that the entry loaded is the shift count as it is.
            let e = u32::from(ac.fast[(self.buf >> (64 - FAST_BITS)) as usize]);
            let next = k + ((e >> 6) & 31); // <= 79
            if e >> 11 >= u32::from(lim[(next & 127) as usize]) {
                if e & u32::from(AcEntry::EOB_MASK) == u32::from(AcEntry::EOB) {
                    self.consume_ac(e);
                    self.long = k >= 56;
                    return Ok(());
                }
                let (used, next) = Self::ac_cold(self.buf, c, k, e as u16);
                self.consume(used);
                match next? {
                    Some(next) => k = next,
                    None => {
                        self.long = k >= 56;
                        return Ok(());
                    }
                }
            } else {
                self.consume_ac(e);
                k = next;
            }
            if k >= 64 {
                self.long = true;
                return Ok(());
            }
        }
    }

    /// The AC hot loop where the data ahead holds no FF for a while (noise-like data,
    /// long blocks), from coefficient `k`: the same symbols and checks, with the buffer
    /// topped up every second symbol without a test on the bit count (it keeps 56..=63
    /// bits after a top-up, a hot symbol takes at most 11 + 14 bits, so two always fit),
    /// which saves the refill branch the original schedule needs at each symbol, and its
    /// mispredictions. The original schedule is followed on the side, in `nv` (its bit
    /// count: it refills to 64 minus the partial byte when below 32, always by its fast
    /// path here, since the 24 bytes from the read position hold no FF); where the run
    /// stops, [`Self::sync`] puts the reader into the state the original walk has there,
    /// so that the slow path, the offsets, and the ends-early verdicts are unchanged.
    /// Returns true when the block ended (EOB or coefficient 63), false to go on in the
    /// hot loop at `k` (a cold symbol, or an FF or the end within reach).
    #[inline(always)]
    fn ac_run(&mut self, c: &ScanComp, k: &mut u32) -> bool {
        if self.marker || self.nbits < 0 {
            return false;
        }
        // The bytes in the buffer hold no FF (so no stuffing: `pos * 8 - nbits` is the
        // next bit's position), nor the 24 bytes from the next bit on.
        let clean = |r: &Self| {
            let byte = (r.pos * 8 - r.nbits as usize) / 8;
            r.clear_lo + 10 <= r.pos && r.pos <= r.clear && byte + 24 <= r.clear
        };
        if !clean(self) {
            if self.clear < self.pos {
                self.clear_lo = self.pos.saturating_sub(10);
                self.clear = first_ff(self.data, self.clear_lo);
            }
            if !clean(self) {
                return false;
            }
        }
        let (ac, lim) = (c.ac, &c.lim);
        let mut nv = self.nbits as u32; // the original walk's bit count
        if self.nbits == 64 {
            // Keep at most 63 counted (the bits after the count are the data's own).
            self.pos -= 1;
            self.nbits = 56;
        }
        let mut turn = false;
        loop {
            // Here k < 64.
            turn = !turn;
            if turn {
                let byte = (self.pos * 8 - self.nbits as usize) / 8; // of the next bit
                if byte + 24 > self.clear {
                    count_end(3);
                    self.sync(nv);
                    return false;
                }
                // No FF in these 8 bytes (byte + 24 <= clear): count 56..=63 bits.
                let Some(chunk) = self.data.get(self.pos..).and_then(|r| r.first_chunk()) else {
                    self.sync(nv);
                    return false;
                };
                let n = self.nbits as u32; // 0..=63
                self.buf |= u64::from_be_bytes(*chunk) >> n;
                self.pos += ((63 - n) >> 3) as usize;
                self.nbits = (n | 56) as i32;
            }
            if nv < 32 {
                nv = 64 - (nv.wrapping_neg() & 7); // the original's refill
            }
            let e = u32::from(ac.fast[(self.buf >> (64 - FAST_BITS)) as usize]);
            let next = *k + ((e >> 6) & 31);
            if e >> 11 >= u32::from(lim[(next & 127) as usize]) {
                if e & u32::from(AcEntry::EOB_MASK) == u32::from(AcEntry::EOB) {
                    count_end(0);
                    self.consume_ac(e);
                    self.sync(nv - (e & 31));
                    return true;
                }
                count_end(2);
                self.sync(nv);
                return false;
            }
            self.consume_ac(e);
            nv -= e & 31;
            *k = next;
            if next >= 64 {
                count_end(1);
                self.sync(nv);
                return true;
            }
        }
    }

    /// The reader as the original walk has it at this point, given its bit count `nv`:
    /// the `nv` bits from the next one, zeros after them, and `pos` past them (no FF
    /// among these bytes, [`Self::ac_run`] made sure).
    #[inline(always)]
    fn sync(&mut self, nv: u32) {
        let at = self.pos * 8 - self.nbits as usize; // the next bit
        let (byte, shift) = (at / 8, (at % 8) as u32);
        let mut bytes = [0u8; 16];
        let avail = self.data.len().saturating_sub(byte).min(16);
        bytes[..avail].copy_from_slice(&self.data[byte..byte + avail]);
        let bits = (u128::from_be_bytes(bytes) << shift >> 64) as u64;
        self.buf = bits & u64::MAX.checked_shl(64 - nv).unwrap_or(0);
        self.pos = (at + nv as usize) / 8;
        self.nbits = nv as i32;
    }

    /// What the AC hot loop does not handle, at coefficient `k` with fast entry `e` and
    /// the buffer `bits`: a code longer than `FAST_BITS` (looked up in `long`, then taken
    /// as the hot loop takes it when it is a plain coefficient in range), an end-of-band
    /// run, and every fault. The symbol is taken as the original walk took it, with the
    /// same checks in the same order. Returns the bits to consume (before the fault, if
    /// any, is reported, as the original walk did) and `Some(k)` to go on at `k`, `None`
    /// when the block ended (EOB). Takes the buffer by value so that the reader stays in
    /// registers.
    #[cold]
    #[inline(never)]
    fn ac_cold(
        bits: u64,
        c: &ScanComp,
        mut k: u32,
        mut e: u16,
    ) -> (u32, Result<Option<u32>, Fault>) {
        if e == AcEntry::LONG {
            e = c.ac.long_entry(bits);
            let next = k + AcEntry::step(e);
            if AcEntry::size(e) < u16::from(c.lim[(next & 127) as usize]) {
                return (AcEntry::skip(e), Ok(Some(next))); // as the hot loop would
            }
        }
        let size = AcEntry::size(e);
        let (skip, rs) = if size != AcEntry::COLD {
            let run = (AcEntry::step(e) - 1) as u8;
            (AcEntry::skip(e), run << 4 | size as u8)
        } else if e & AcEntry::EOB_MASK == AcEntry::EOB {
            (AcEntry::skip(e), 0) // a long EOB
        } else {
            let from = if e == AcEntry::RUN { 1 } else { FAST_BITS + 1 };
            match c.ac.decode_from(bits, from) {
                Some(code) => code,
                None => return (0, Err(Fault::UndefinedCode)),
            }
        };
        let (r, s) = (u32::from(rs >> 4), rs & 15);
        if s == 0 {
            match r {
                0 => return (skip, Ok(None)), // EOB
                15 => k += 16,                // ZRL: 16 zeros
                _ => return (skip, Err(Fault::AcSymbol(rs))),
            }
            if k > 64 {
                return (skip, Err(Fault::Past63));
            }
            (skip, Ok(Some(k)))
        } else {
            k += r;
            if k > 63 {
                return (0, Err(Fault::Past63));
            }
            if s > c.ac_max[k as usize] {
                return (
                    0,
                    Err(if s > c.ac_size_max {
                        Fault::AcSymbol(rs)
                    } else {
                        Fault::AcRange
                    }),
                );
            }
            (skip, Ok(Some(k + 1)))
        }
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

/// Where a walk of a scan paused: at the start of an MCU, with the bit reader's state
/// and the DC predictors, so that walking on from here with more of the frame does
/// exactly what a walk from the start would (see [`walk_scan_from`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ScanProgress {
    /// Where the scan's coded data starts (a progress belongs to that scan only).
    pub(super) start: usize,
    /// The next MCU to walk.
    mcu: u32,
    pos: usize,
    buf: u64,
    nbits: i32,
    preds: [i32; 4],
}

impl ScanProgress {
    /// The next MCU to walk.
    #[cfg(test)]
    pub(super) fn mcu(&self) -> u32 {
        self.mcu
    }
}

/// How [`walk_scan_from`] ended.
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(super) enum Walked {
    /// The scan was walked to its end (the position of the marker after it) or a fault.
    Done(Result<usize, JpegError>),
    /// The data given may end before the next MCU does: walk on from here with more.
    Paused(ScanProgress),
}

/// Walks the entropy-coded data of `scan`, starting at `start`; returns the position of
/// the marker that follows it.
pub(super) fn walk_scan(
    data: &[u8],
    start: usize,
    frame: &Frame,
    scan: Scan,
    restart_interval: u16,
) -> Result<usize, JpegError> {
    match walk_scan_from(data, start, frame, scan, restart_interval, None, None) {
        Walked::Done(result) => result,
        Walked::Paused(_) => unreachable!("a walk without a limit never pauses"),
    }
}

/// [`walk_scan`], resumable: from `from` (a pause of this scan) or from the start, and,
/// with a `limit` (`data` is then the first bytes of the frame, all there are so far),
/// pausing at the start of the first MCU that reads up to the end of `data`: such an MCU
/// may read differently once more bytes are there (the reader takes the end for a
/// marker), so its walk is undone (the reader's state and the DC predictors are taken
/// before each MCU) and the pause is at its start. Every MCU walked before a pause read
/// only bytes of the frame as it is: a fault found then is the whole frame's fault, and
/// walking on from the pause gives the whole walk's verdict. A scan with restart
/// intervals never pauses (the walk goes on to its end; the caller ignores the verdict on
/// part of a frame).
pub(super) fn walk_scan_from(
    data: &[u8],
    start: usize,
    frame: &Frame,
    scan: Scan,
    restart_interval: u16,
    from: Option<ScanProgress>,
    limit: Option<usize>,
) -> Walked {
    // The tests walk every scan without `ac_run` too, and compare (the verdict, and the
    // reader's state at a pause).
    #[cfg(test)]
    {
        let walked = walk_dispatch(
            data,
            start,
            frame,
            scan.clone(),
            restart_interval,
            from,
            limit,
        );
        AC_RUN.with(|r| r.set(false));
        let without = walk_generic(data, start, frame, scan, restart_interval, from, limit);
        AC_RUN.with(|r| r.set(true));
        assert_eq!(walked, without, "the walk with and without ac_run disagree");
        walked
    }
    #[cfg(not(test))]
    walk_dispatch(data, start, frame, scan, restart_interval, from, limit)
}

/// [`walk_scan_from`] in the form compiled for this CPU.
fn walk_dispatch(
    data: &[u8],
    start: usize,
    frame: &Frame,
    scan: Scan,
    restart_interval: u16,
    from: Option<ScanProgress>,
    limit: Option<usize>,
) -> Walked {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("bmi2") {
        // The tests walk every scan in both compiled forms and compare.
        #[cfg(test)]
        let generic = walk_generic(
            data,
            start,
            frame,
            scan.clone(),
            restart_interval,
            from,
            limit,
        );
        // SAFETY: the CPU has BMI2 (detected just above), all `walk_bmi2` asks for.
        let walked = unsafe { walk_bmi2(data, start, frame, scan, restart_interval, from, limit) };
        #[cfg(test)]
        assert_eq!(walked, generic, "the BMI2 and the generic walk disagree");
        return walked;
    }
    walk_generic(data, start, frame, scan, restart_interval, from, limit)
}

/// [`walk_generic`] compiled for CPUs with BMI2, whose shifts take their count from any
/// register and set no flags: the shift by an entry's skip then follows the table load
/// with nothing between (the walk's critical path, one code after the other).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi2")]
fn walk_bmi2(
    data: &[u8],
    start: usize,
    frame: &Frame,
    scan: Scan,
    restart_interval: u16,
    from: Option<ScanProgress>,
    limit: Option<usize>,
) -> Walked {
    walk_generic(data, start, frame, scan, restart_interval, from, limit)
}

/// [`walk_scan_from`]'s body, inlined into each compiled form.
#[inline(always)]
fn walk_generic(
    data: &[u8],
    start: usize,
    frame: &Frame,
    mut scan: Scan,
    restart_interval: u16,
    from: Option<ScanProgress>,
    limit: Option<usize>,
) -> Walked {
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
    // Undo and pause an MCU that reached the end of a part (never with restart intervals).
    let resumable = limit.is_some() && restart_interval == 0;
    let mut reader = BitReader::new(data, start);
    let mut first = 0;
    if let Some(p) = from.filter(|p| p.start == start) {
        reader.pos = p.pos;
        reader.buf = p.buf;
        reader.nbits = p.nbits;
        for (c, &pred) in scan.comps.iter_mut().zip(&p.preds) {
            c.pred = pred;
        }
        first = p.mcu;
    }
    let progress = |reader: &BitReader, scan: &Scan, mcu| {
        let mut preds = [0; 4];
        for (p, c) in preds.iter_mut().zip(&scan.comps) {
            *p = c.pred;
        }
        ScanProgress {
            start,
            mcu,
            pos: reader.pos,
            buf: reader.buf,
            nbits: reader.nbits,
            preds,
        }
    };
    let mut left = restart_interval;
    let mut next_rst = 0u8;
    for mcu in first..mcus {
        let before = resumable.then(|| progress(&reader, &scan, mcu));
        let walked: Result<(), JpegError> = 'mcu: {
            if restart_interval != 0 {
                if left == 0 {
                    let (pos, marker) = match reader.end_of_segment() {
                        Ok(found) => found,
                        Err(e) => break 'mcu Err(e),
                    };
                    if marker != RST0 + next_rst {
                        break 'mcu Err(JpegError::BadRestart {
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
                        break 'mcu Err(reader.data_ends(mcu, mcus));
                    }
                    let component = comp.id;
                    break 'mcu Err(match fault {
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
                break 'mcu Err(reader.data_ends(mcu, mcus));
            }
            Ok(())
        };
        // The end of a part, as the reader saw it: it took the end for a marker (no byte
        // after an FF, or none at all). What this MCU did may change with more bytes.
        if let Some(p) = before.filter(|_| reader.marker && reader.pos + 2 > data.len()) {
            return Walked::Paused(p);
        }
        if let Err(e) = walked {
            return Walked::Done(Err(e));
        }
    }
    Walked::Done(reader.end_of_segment().map(|(pos, _)| pos))
}

#[cfg(test)]
mod tests {
    //! The fast and long tables against the canonical decoding they shortcut, for every
    //! 16-bit prefix.
    use super::{AcEntry, BitReader, Fault, Huffman, ScanComp, FAST_BITS};

    /// What the tables say about the code at the top of `bits`, as `decode_from` says it.
    fn from_tables(t: &Huffman, bits: u64) -> Option<(u32, u8)> {
        let mut e = t.fast[(bits >> (64 - FAST_BITS)) as usize];
        if !t.ac {
            if e == 0 {
                e = t.long_entry(bits);
            }
            return if e != 0 {
                Some((u32::from(e & 0xFF), (e >> 8) as u8))
            } else {
                t.decode_from(bits, FAST_BITS + 1)
            };
        }
        if e == AcEntry::LONG {
            e = t.long_entry(bits);
        }
        let size = AcEntry::size(e);
        if size != AcEntry::COLD {
            let run = (AcEntry::step(e) - 1) as u8;
            Some((AcEntry::skip(e), run << 4 | size as u8))
        } else if e & AcEntry::EOB_MASK == AcEntry::EOB {
            Some((AcEntry::skip(e), 0)) // EOB
        } else if e == AcEntry::RUN {
            t.decode_from(bits, 1)
        } else {
            t.decode_from(bits, FAST_BITS + 1)
        }
    }

    /// The standard luminance AC table's code counts per length.
    const STANDARD_AC: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 125];
    /// A skewed code whose 16-bit codes need more long slots than the table has.
    const SKEWED_AC: [u8; 16] = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 250];

    /// Symbols for those tables: EOB, ZRL, an end-of-band run, then every run/size in
    /// turn, and again, 256 in all.
    fn test_symbols() -> Vec<u8> {
        [0x00, 0xF0, 0x10]
            .into_iter()
            .chain((0..=255u8).filter(|s| s & 15 != 0))
            .cycle()
            .take(256)
            .collect()
    }

    #[test]
    fn fast_and_long_tables_agree_with_canonical_decoding() {
        // The standard luminance AC code lengths (192 long slots), and a skewed code
        // whose 16-bit codes need more long slots than the table has (the fallback).
        let (standard, skewed, symbols) = (STANDARD_AC, SKEWED_AC, test_symbols());
        let mut found = [0usize; 2];
        for counts in [standard, skewed] {
            let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
            for ac in [false, true] {
                let mut t = Huffman::EMPTY;
                t.build(&counts, &symbols[..n], ac).unwrap();
                for top in 0..1u64 << 16 {
                    let bits = top << 48 | 0x5A5A_5A5A_5A5A;
                    let expected = t.decode_from(bits, 1);
                    assert_eq!(from_tables(&t, bits), expected, "prefix {top:#06x}");
                    found[usize::from(expected.is_some())] += 1;
                }
            }
        }
        assert!(found[0] > 0 && found[1] > 0); // undefined codes met, and defined ones
    }

    /// One AC step as the original walk took it: the symbol decoded canonically, then its
    /// checks. The bits consumed, and the next position (`None` at EOB) or the fault.
    fn reference_step(c: &ScanComp, bits: u64, k: u32) -> (u32, Result<Option<u32>, Fault>) {
        let Some((skip, rs)) = c.ac.decode_from(bits, 1) else {
            return (0, Err(Fault::UndefinedCode));
        };
        let (r, s) = (u32::from(rs >> 4), rs & 15);
        if s == 0 {
            match r {
                0 => (skip, Ok(None)),
                15 if k + 16 > 64 => (skip, Err(Fault::Past63)),
                15 => (skip, Ok(Some(k + 16))),
                _ => (skip, Err(Fault::AcSymbol(rs))),
            }
        } else if k + r > 63 {
            (0, Err(Fault::Past63))
        } else if s > c.ac_max[(k + r) as usize] {
            let fault = if s > c.ac_size_max {
                Fault::AcSymbol(rs)
            } else {
                Fault::AcRange
            };
            (0, Err(fault))
        } else {
            (skip, Ok(Some(k + r + 1)))
        }
    }

    /// One AC step as [`BitReader::block`] takes it: the hot test on the fast entry, EOB,
    /// then [`BitReader::ac_cold`] (codes longer than `FAST_BITS`, faults).
    fn walk_step(c: &ScanComp, bits: u64, k: u32) -> (u32, Result<Option<u32>, Fault>) {
        let e = u32::from(c.ac.fast[(bits >> (64 - FAST_BITS)) as usize]);
        // The shift takes the entry whole (6 bits), the count its skip (5 bits): the same.
        assert_eq!(e & 63, e & 31);
        let next = k + ((e >> 6) & 31);
        if e >> 11 >= u32::from(c.lim[(next & 127) as usize]) {
            if e & u32::from(AcEntry::EOB_MASK) == u32::from(AcEntry::EOB) {
                return (e & 31, Ok(None));
            }
            BitReader::ac_cold(bits, c, k, e as u16)
        } else {
            (e & 31, Ok(Some(next)))
        }
    }

    #[test]
    fn ac_steps_agree_with_the_original_walk_at_every_prefix_and_boundary() {
        // The standard luminance AC code lengths (codes of 12 to 16 bits in `long`) and a
        // skewed code (16-bit codes past `long`); every run/size, sizes above the 8-bit
        // limit (10) among them.
        let (standard, skewed, symbols) = (STANDARD_AC, SKEWED_AC, test_symbols());
        // Limits that vary with the position, 0 (no coefficient allowed) among them.
        let mut ac_max = [0u8; 64];
        for (k, m) in ac_max.iter_mut().enumerate() {
            *m = ((k * 7) % 12).min(10) as u8;
        }
        let mut outcomes = [0usize; 4]; // go on, EOB, fault with bits used, fault without
        for counts in [standard, skewed] {
            let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
            let mut t = Huffman::EMPTY;
            t.build(&counts, &symbols[..n], true).unwrap();
            let c = ScanComp {
                id: 1,
                index: 0,
                dc: &t,
                ac: &t,
                pred: 0,
                dc_max: 0,
                dc_cat_max: 0,
                ac_size_max: 10,
                ac_max,
                lim: super::super::segments::hot_limits(&ac_max),
            };
            // Both ends, and either side of where a ZRL reaches 64.
            for k in [1, 2, 17, 47, 48, 49, 62, 63] {
                for top in 0..1u64 << 16 {
                    let bits = top << 48 | 0x5A5A_5A5A_5A5A;
                    let expected = reference_step(&c, bits, k);
                    assert_eq!(walk_step(&c, bits, k), expected, "k {k} prefix {top:#06x}");
                    outcomes[match expected {
                        (_, Ok(Some(_))) => 0,
                        (_, Ok(None)) => 1,
                        (0, Err(_)) => 3,
                        (_, Err(_)) => 2,
                    }] += 1;
                }
            }
        }
        assert!(outcomes.iter().all(|&n| n > 0), "{outcomes:?}");
    }

    #[test]
    fn ac_run_ends_every_way_on_noise_and_agrees_with_the_plain_loop() {
        // Noise (long blocks, FF bytes and stuffing everywhere), whole, cut at every
        // length of its last 3 kB, and with bytes changed; every walk of a scan is also
        // done without ac_run and compared (verdict, pause state), and every validation
        // against the reference walk (see `walk_scan_from`, `validate`).
        let jpeg = crate::media::testjpeg::noise_jpeg(20_000).unwrap().0;
        super::AC_RUN_ENDS.with(|c| c.set([0; 4]));
        assert!(crate::jpegcheck::validate(&jpeg).is_ok());
        for len in jpeg.len() - 3000..jpeg.len() {
            let _ = crate::jpegcheck::validate(&jpeg[..len]);
        }
        for i in (1000..jpeg.len() - 2).step_by(97) {
            let mut v = jpeg.clone();
            v[i] ^= 1 << (i % 8);
            let _ = crate::jpegcheck::validate(&v);
        }
        let ends = super::AC_RUN_ENDS.with(|c| c.get());
        assert!(
            ends.iter().all(|&n| n > 0),
            "EOB, 63, cold, FF or end: {ends:?}"
        );
    }
}
