//! Parsers of the marker segments the walk needs: DHT (Huffman tables), DQT (quantization
//! tables), SOF0/SOF1 (the frame header), DRI (the restart interval) and SOS (a scan
//! header). Each checks its segment's content and returns what the entropy walk uses; the
//! error is the reason, which the caller turns into a `JpegError::BadSegment`.

use super::entropy::Huffman;
use super::markers::{SOF0, SOF1};

/// Parses a DHT segment (one or more tables) into `huff[class][id]`.
pub(super) fn parse_dht(mut seg: &[u8], huff: &mut [[Huffman; 4]; 2]) -> Result<(), &'static str> {
    while let Some((&tc_th, rest)) = seg.split_first() {
        let (class, id) = (usize::from(tc_th >> 4), usize::from(tc_th & 15));
        if class > 1 || id > 3 {
            return Err("table class must be 0 or 1 and id 0..=3");
        }
        let Some((counts, rest)) = rest.split_at_checked(16) else {
            return Err("code counts run past the segment");
        };
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total > 256 {
            return Err("more than 256 codes in a table");
        }
        let Some((symbols, rest)) = rest.split_at_checked(total) else {
            return Err("symbols run past the segment");
        };
        huff[class][id].build(counts, symbols, class == 1)?;
        seg = rest;
    }
    Ok(())
}

/// Parses a DQT segment (one or more tables, 8- or 16-bit values) into `quant[id]`.
pub(super) fn parse_dqt(
    mut seg: &[u8],
    quant: &mut [Option<[u16; 64]>; 4],
) -> Result<(), &'static str> {
    while let Some((&pq_tq, rest)) = seg.split_first() {
        let (wide, id) = (pq_tq >> 4, usize::from(pq_tq & 15));
        if wide > 1 || id > 3 {
            return Err("table precision must be 0 or 1 and id 0..=3");
        }
        let Some((values, rest)) = rest.split_at_checked(64 << wide) else {
            return Err("table runs past the segment");
        };
        let mut table = [0u16; 64];
        for (q, v) in table.iter_mut().zip(values.chunks_exact(1 << wide)) {
            *q = if wide == 1 {
                u16::from_be_bytes([v[0], v[1]])
            } else {
                u16::from(v[0])
            };
        }
        quant[id] = Some(table);
        seg = rest;
    }
    Ok(())
}

/// Parses a DRI segment: the restart interval in MCUs (0: no restart markers).
pub(super) fn parse_dri(seg: &[u8]) -> Result<u16, &'static str> {
    if seg.len() != 2 {
        return Err("length must be 4");
    }
    Ok(u16::from_be_bytes([seg[0], seg[1]]))
}

/// One component of the frame header.
#[derive(Clone, Copy, Default)]
pub(super) struct Component {
    pub(super) id: u8,
    pub(super) h: u8,
    pub(super) v: u8,
    pub(super) tq: u8,
}

/// The frame header (SOF0 or SOF1).
#[derive(Clone)]
pub(super) struct Frame {
    pub(super) precision: u8,
    pub(super) width: u16,
    pub(super) height: u16,
    pub(super) count: usize,
    pub(super) comps: [Component; 4],
    pub(super) hmax: u8,
    pub(super) vmax: u8,
}

/// Why a frame header was refused: invalid, or valid but not walked here.
pub(super) enum FrameError {
    Bad(&'static str),
    Unsupported(&'static str),
}

impl Frame {
    /// Parses the frame header of marker `marker` (SOF0 or SOF1).
    pub(super) fn parse(seg: &[u8], marker: u8) -> Result<Frame, FrameError> {
        use FrameError::{Bad, Unsupported};
        if seg.len() < 6 {
            return Err(Bad("shorter than its fixed fields"));
        }
        let precision = seg[0];
        let height = u16::from_be_bytes([seg[1], seg[2]]);
        let width = u16::from_be_bytes([seg[3], seg[4]]);
        let count = usize::from(seg[5]);
        match (marker, precision) {
            (_, 8) | (SOF1, 12) => {}
            (SOF0, _) => return Err(Bad("baseline sample precision must be 8")),
            _ => return Err(Bad("sample precision must be 8 or 12")),
        }
        if height == 0 {
            return Err(Unsupported("height 0 (given by a DNL marker)"));
        }
        if width == 0 {
            return Err(Bad("width 0"));
        }
        if !(1..=4).contains(&count) {
            return Err(Bad("number of components must be 1..=4"));
        }
        if seg.len() != 6 + 3 * count {
            return Err(Bad("length does not match the number of components"));
        }
        let mut comps = [Component::default(); 4];
        for (i, c) in seg[6..].chunks_exact(3).enumerate() {
            let comp = Component {
                id: c[0],
                h: c[1] >> 4,
                v: c[1] & 15,
                tq: c[2],
            };
            if !(1..=4).contains(&comp.h) || !(1..=4).contains(&comp.v) {
                return Err(Bad("sampling factors must be 1..=4"));
            }
            if comp.tq > 3 {
                return Err(Bad("quantization table id must be 0..=3"));
            }
            if comps[..i].iter().any(|o| o.id == comp.id) {
                return Err(Bad("two components with the same id"));
            }
            comps[i] = comp;
        }
        let comps_used = &comps[..count];
        Ok(Frame {
            precision,
            width,
            height,
            count,
            hmax: comps_used.iter().map(|c| c.h).max().unwrap_or(1),
            vmax: comps_used.iter().map(|c| c.v).max().unwrap_or(1),
            comps,
        })
    }
}

/// One component of a scan, with what walking its blocks needs.
#[derive(Clone)]
pub(super) struct ScanComp<'t> {
    pub(super) id: u8,
    /// Index into the frame's components.
    pub(super) index: usize,
    pub(super) dc: &'t Huffman,
    pub(super) ac: &'t Huffman,
    /// DC predictor (quantized units).
    pub(super) pred: i32,
    /// Largest DC magnitude allowed (quantized units).
    pub(super) dc_max: u32,
    /// Largest DC difference category allowed.
    pub(super) dc_cat_max: u32,
    /// Largest AC size the sample precision allows (10 for 8 bits).
    pub(super) ac_size_max: u8,
    /// Largest AC size allowed at each zigzag position (at most `ac_size_max`).
    pub(super) ac_max: [u8; 64],
    /// The walk's hot-loop limit, indexed by the position after a coefficient: at `k + 1`
    /// (`k` 1..=63) `ac_max[k] + 1`, so that a size at or above it is a fault; 0 from 65
    /// on, so that a coefficient (or a ZRL's last zero) past 63 is one too. 128 entries:
    /// any `k & 127` is in bounds.
    pub(super) lim: [u8; 128],
}

/// A scan header (SOS), with its components ready for the walk.
#[derive(Clone)]
pub(super) struct Scan<'t> {
    /// The first `count` are used; the others are placeholders.
    pub(super) comps: [ScanComp<'t>; 4],
    pub(super) count: usize,
}

impl<'t> Scan<'t> {
    /// Parses an SOS segment of `frame`, marking its components in `coded` (each may be
    /// coded in one scan only).
    pub(super) fn parse(
        seg: &[u8],
        frame: &Frame,
        coded: &mut [bool; 4],
        huff: &'t [[Huffman; 4]; 2],
        quant: &[Option<[u16; 64]>; 4],
        range_checks: bool,
    ) -> Result<Scan<'t>, &'static str> {
        let count = usize::from(*seg.first().unwrap_or(&0));
        if !(1..=4).contains(&count) {
            return Err("number of components must be 1..=4");
        }
        if seg.len() != 4 + 2 * count {
            return Err("length does not match the number of components");
        }
        let (ss, se, ah_al) = (seg[1 + 2 * count], seg[2 + 2 * count], seg[3 + 2 * count]);
        if (ss, se, ah_al) != (0, 63, 0) {
            return Err("a sequential scan needs Ss=0, Se=63, Ah=Al=0");
        }
        // What the DCT of in-range samples can produce: |coefficient| <= 8 * 2^(P-1)
        // (1024 for 8-bit samples). For DC (8 times the block's mean) that holds for any
        // encoder, whatever its colour handling; AC coefficients get twice the limit, for
        // encoders that let them overshoot (mozjpeg's deringing).
        let limit = 1u32 << (frame.precision + 2);
        let dc_cat_max = u32::from(frame.precision) + 3;
        let ac_size_max = frame.precision + 2;
        let placeholder = ScanComp {
            id: 0,
            index: 0,
            dc: &huff[0][0],
            ac: &huff[1][0],
            pred: 0,
            dc_max: 0,
            dc_cat_max: 0,
            ac_size_max: 0,
            ac_max: [0; 64],
            lim: [0; 128],
        };
        let mut comps = [(); 4].map(|_| placeholder.clone());
        let mut blocks_per_mcu = 0;
        for (slot, c) in comps.iter_mut().zip(seg[1..1 + 2 * count].chunks_exact(2)) {
            let Some(index) = frame.comps[..frame.count].iter().position(|f| f.id == c[0]) else {
                return Err("scan component not in the frame");
            };
            if coded[index] {
                return Err("component coded twice");
            }
            coded[index] = true;
            let (td, ta) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
            if td > 3 || ta > 3 {
                return Err("Huffman table id must be 0..=3");
            }
            let (dc, ac) = (&huff[0][td], &huff[1][ta]);
            if !dc.defined || !ac.defined {
                return Err("scan uses an undefined Huffman table");
            }
            let fc = frame.comps[index];
            let Some(q) = quant[usize::from(fc.tq)] else {
                return Err("component uses an undefined quantization table");
            };
            blocks_per_mcu += usize::from(fc.h) * usize::from(fc.v);
            let mut ac_max = [ac_size_max; 64];
            let mut dc_max = u32::MAX;
            if range_checks {
                // The largest quantized magnitude, allowing a quantizer step of rounding.
                let allowed = |limit: u32, q: u16| (limit + u32::from(q)) / u32::from(q).max(1);
                dc_max = allowed(limit, q[0]);
                for (m, &q) in ac_max.iter_mut().zip(&q).skip(1) {
                    // A coefficient of size s has magnitude >= 2^(s-1).
                    let a = allowed(2 * limit, q);
                    // The largest s with 2^(s-1) <= a.
                    *m = (*m).min((32 - a.leading_zeros()) as u8);
                }
            }
            let lim = hot_limits(&ac_max);
            *slot = ScanComp {
                id: fc.id,
                index,
                dc,
                ac,
                pred: 0,
                dc_max,
                dc_cat_max,
                ac_size_max,
                ac_max,
                lim,
            };
        }
        if count > 1 && blocks_per_mcu > 10 {
            return Err("more than 10 blocks per MCU");
        }
        Ok(Scan { comps, count })
    }
}

/// [`ScanComp::lim`] for the largest AC sizes `ac_max` (by zigzag position).
pub(super) fn hot_limits(ac_max: &[u8; 64]) -> [u8; 128] {
    let mut lim = [0u8; 128];
    for (l, &m) in lim.iter_mut().skip(1).zip(ac_max) {
        *l = m + 1;
    }
    lim
}
