//! A minimal synthetic baseline JPEG encoder for the tests: it writes the sampling layouts
//! (4:2:2, 4:2:0, 4:1:1...), restart intervals and one-scan-per-component files that
//! OpenCV 4.6 cannot (it has no IMWRITE_JPEG_SAMPLING_FACTOR), so the walk is tested on
//! them too, and checks with OpenCV that what it wrote decodes to what it meant.

use super::markers::{DHT, DQT, DRI, PREFIX, RST0, SOF0, SOS};
use super::{EOI, SOI};
use crate::media::jpeg::decode;
use opencv::core::Vec3b;
use opencv::prelude::*;

/// A minimal baseline encoder, for sampling layouts and scan structures OpenCV 4.6
/// does not write. Component 0 (Y) gets varied DC values and a few small AC
/// coefficients, the chroma components are flat 128, so the decoded image is gray
/// and the mean of each 8x8 block of Y is `128 + dc` (quantizers are all 8).
pub(super) struct Synth<'a> {
    pub(super) width: u16,
    pub(super) height: u16,
    pub(super) sampling: &'a [(u8, u8)],
    pub(super) restart_interval: u16,
    pub(super) interleaved: bool,
}

struct BitWriter {
    out: Vec<u8>,
    acc: u32,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, bits: u32, len: u32) {
        for i in (0..len).rev() {
            self.acc = (self.acc << 1) | ((bits >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                self.out.push(self.acc as u8);
                if self.acc == u32::from(PREFIX) {
                    self.out.push(0);
                }
                (self.acc, self.n) = (0, 0);
            }
        }
    }

    fn flush(&mut self) {
        while self.n != 0 {
            self.put(1, 1);
        }
    }
}

const AC_SYMBOLS: usize = 162;

fn ac_symbols() -> Vec<u8> {
    let mut s = vec![0x00, 0xF0];
    for r in 0..16u8 {
        for size in 1..=10u8 {
            s.push((r << 4) | size);
        }
    }
    assert_eq!(s.len(), AC_SYMBOLS);
    s
}

/// The quantized coefficients (zigzag order) of block (bx, by) of component `c`.
fn synth_block(c: usize, bx: u32, by: u32) -> [i32; 64] {
    let mut z = [0; 64];
    if c == 0 {
        z[0] = ((bx * 7 + by * 13) % 81) as i32 - 40;
        let mut seed = bx.wrapping_mul(2654435761) ^ by.wrapping_mul(40503);
        for _ in 0..(seed % 6) {
            seed = seed.wrapping_mul(1103515245).wrapping_add(12345);
            let k = 1 + (seed >> 8) as usize % 63;
            z[k] = ((seed >> 20) % 7) as i32 - 3;
        }
    }
    z
}

fn bit_len(v: i32) -> u32 {
    32 - v.unsigned_abs().leading_zeros()
}

fn put_value(w: &mut BitWriter, v: i32, size: u32) {
    let bits = if v < 0 { v + (1 << size) - 1 } else { v };
    w.put(bits as u32, size);
}

fn synth_encode_block(w: &mut BitWriter, z: &[i32; 64], pred: &mut i32, ac: &[u8]) {
    let diff = z[0] - *pred;
    *pred = z[0];
    let cat = bit_len(diff);
    w.put(cat, 4);
    put_value(w, diff, cat);
    let mut run = 0;
    for &v in &z[1..] {
        if v == 0 {
            run += 1;
            continue;
        }
        while run >= 16 {
            w.put(1, 8); // ZRL is the second AC symbol
            run -= 16;
        }
        let size = bit_len(v);
        let rs = ((run as u8) << 4) | size as u8;
        w.put(ac.iter().position(|&s| s == rs).unwrap() as u32, 8);
        put_value(w, v, size);
        run = 0;
    }
    if run > 0 {
        w.put(0, 8); // EOB
    }
}

impl Synth<'_> {
    pub(super) fn encode(&self) -> Vec<u8> {
        let n = self.sampling.len();
        let ac = ac_symbols();
        let mut out = SOI.to_vec();
        let seg = |out: &mut Vec<u8>, marker: u8, body: &[u8]| {
            out.extend_from_slice(&[PREFIX, marker]);
            out.extend_from_slice(&(body.len() as u16 + 2).to_be_bytes());
            out.extend_from_slice(body);
        };
        let mut dqt = vec![0u8];
        dqt.extend_from_slice(&[8; 64]);
        seg(&mut out, DQT, &dqt);
        let mut sof = vec![8];
        sof.extend_from_slice(&self.height.to_be_bytes());
        sof.extend_from_slice(&self.width.to_be_bytes());
        sof.push(n as u8);
        for (i, &(h, v)) in self.sampling.iter().enumerate() {
            sof.extend_from_slice(&[i as u8 + 1, (h << 4) | v, 0]);
        }
        seg(&mut out, SOF0, &sof);
        let mut dht = vec![0x00];
        let mut counts = [0u8; 16];
        counts[3] = 12;
        dht.extend_from_slice(&counts);
        dht.extend(0..12u8);
        dht.push(0x10);
        let mut counts = [0u8; 16];
        counts[7] = AC_SYMBOLS as u8;
        dht.extend_from_slice(&counts);
        dht.extend_from_slice(&ac);
        seg(&mut out, DHT, &dht);
        if self.restart_interval > 0 {
            seg(&mut out, DRI, &self.restart_interval.to_be_bytes());
        }
        let scans: Vec<Vec<usize>> = if self.interleaved {
            vec![(0..n).collect()]
        } else {
            (0..n).map(|c| vec![c]).collect()
        };
        let hmax = u32::from(self.sampling.iter().map(|s| s.0).max().unwrap());
        let vmax = u32::from(self.sampling.iter().map(|s| s.1).max().unwrap());
        let (w, h) = (u32::from(self.width), u32::from(self.height));
        for scan in scans {
            let mut sos = vec![scan.len() as u8];
            for &c in &scan {
                sos.extend_from_slice(&[c as u8 + 1, 0x00]);
            }
            sos.extend_from_slice(&[0, 63, 0]);
            seg(&mut out, SOS, &sos);
            // The MCUs, each a list of (component, block x, block y).
            let mut mcus: Vec<Vec<(usize, u32, u32)>> = Vec::new();
            if scan.len() == 1 {
                let (ch, cv) = self.sampling[scan[0]];
                let bw = (w * u32::from(ch)).div_ceil(hmax).div_ceil(8);
                let bh = (h * u32::from(cv)).div_ceil(vmax).div_ceil(8);
                for by in 0..bh {
                    for bx in 0..bw {
                        mcus.push(vec![(scan[0], bx, by)]);
                    }
                }
            } else {
                for my in 0..h.div_ceil(8 * vmax) {
                    for mx in 0..w.div_ceil(8 * hmax) {
                        let mut mcu = Vec::new();
                        for &c in &scan {
                            let (ch, cv) = self.sampling[c];
                            let (ch, cv) = (u32::from(ch), u32::from(cv));
                            for v in 0..cv {
                                for u in 0..ch {
                                    mcu.push((c, mx * ch + u, my * cv + v));
                                }
                            }
                        }
                        mcus.push(mcu);
                    }
                }
            }
            let mut bw = BitWriter {
                out: Vec::new(),
                acc: 0,
                n: 0,
            };
            let mut pred = [0; 4];
            let ri = usize::from(self.restart_interval);
            for (i, mcu) in mcus.iter().enumerate() {
                if ri > 0 && i > 0 && i % ri == 0 {
                    bw.flush();
                    bw.out
                        .extend_from_slice(&[PREFIX, RST0 + ((i / ri - 1) % 8) as u8]);
                    pred = [0; 4];
                }
                for &(c, bx, by) in mcu {
                    synth_encode_block(&mut bw, &synth_block(c, bx, by), &mut pred[c], &ac);
                }
            }
            bw.flush();
            out.extend_from_slice(&bw.out);
        }
        out.extend_from_slice(&EOI);
        out
    }

    /// Checks with OpenCV that the file decodes to what was encoded (so the encoder,
    /// and hence the layout `validate` accepted, is right).
    pub(super) fn check_decoded(&self, jpeg: &[u8]) {
        let img = decode(jpeg).unwrap();
        assert_eq!(
            (img.cols(), img.rows()),
            (i32::from(self.width), i32::from(self.height))
        );
        let (hmax, vmax) = (
            self.sampling.iter().map(|s| s.0).max().unwrap(),
            self.sampling.iter().map(|s| s.1).max().unwrap(),
        );
        // Y is full resolution only when it has the largest sampling factors.
        assert_eq!(self.sampling[0], (hmax, vmax));
        for by in 0..u32::from(self.height) / 8 {
            for bx in 0..u32::from(self.width) / 8 {
                let mut sum = 0;
                for y in 0..8 {
                    for x in 0..8 {
                        let px = img
                            .at_2d::<Vec3b>((by * 8 + y) as i32, (bx * 8 + x) as i32)
                            .unwrap();
                        sum += i32::from(px[1]);
                    }
                }
                let mean = f64::from(sum) / 64.0;
                let want = f64::from(128 + synth_block(0, bx, by)[0]);
                assert!(
                    (mean - want).abs() < 1.5,
                    "block ({bx}, {by}): mean {mean}, want {want}"
                );
            }
        }
    }
}
