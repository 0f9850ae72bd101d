//! Partial-frame memory, charged for what arrived and shared fairly between sources.
//!
//! Both UDP receivers ([`super::framed_receiver`], [`super::seed_reassembly`]) keep frames
//! that are still arriving. A header only *claims* a size; what costs memory is the bytes
//! that came. So the receivers grow their buffers with [`grow_for`] as bytes arrive and
//! charge each change to a [`PartialMemory`], which answers one question when the budget is
//! exceeded: *whose* partial frame goes. The policy, deterministic and the same for both:
//!
//! 1. sources that have never completed a frame lose their state before any source that
//!    has ([`PartialMemory::mark_completed`]; the last [`MAX_REMEMBERED_SOURCES`] such
//!    sources are remembered);
//! 2. within that class, the address range holding the most bytes pays (IPv4 /24, IPv6
//!    /64: a host that can pick many source addresses usually picks them in one range);
//! 3. within the range, the source holding the most bytes pays;
//! 4. ties go to the source that has held memory longest, then the lower address.
//!
//! So one source, or thousands of new ones, fill only their own share: they evict each
//! other long before they touch a camera that has delivered frames.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Sources remembered as having completed a frame (the one with the oldest completion is
/// forgotten first past this).
pub const MAX_REMEMBERED_SOURCES: usize = 1024;

/// The address range a source is grouped in for fair shares: its IPv4 /24 or IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressRange {
    V4([u8; 3]),
    V6([u8; 8]),
}

impl AddressRange {
    pub fn of(addr: SocketAddr) -> AddressRange {
        match addr.ip() {
            IpAddr::V4(ip) => {
                let o = ip.octets();
                AddressRange::V4([o[0], o[1], o[2]])
            }
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => AddressRange::of(SocketAddr::new(IpAddr::V4(v4), addr.port())),
                None => {
                    let o = ip.octets();
                    AddressRange::V6(o[..8].try_into().expect("8 bytes"))
                }
            },
        }
    }
}

#[derive(Debug)]
struct Share {
    bytes: usize,
    /// When this source last went from holding nothing to holding something.
    since: Instant,
    completed: bool,
}

/// Bytes held by partial frames, per source, per address range and in total, with the
/// eviction policy of the module documentation. It stores no frames: the receiver charges
/// and releases, and asks [`PartialMemory::victim`] whom to evict while
/// [`PartialMemory::over_budget`].
#[derive(Debug)]
pub struct PartialMemory {
    max_bytes: usize,
    total: usize,
    /// Only sources holding bytes.
    shares: HashMap<SocketAddr, Share>,
    /// Bytes per (completed-before class, range), only ranges holding bytes.
    ranges: HashMap<(bool, AddressRange), usize>,
    /// Sources that have completed a frame, with the sequence number of their last one.
    completed: HashMap<SocketAddr, u64>,
    completions: u64,
}

impl PartialMemory {
    pub fn new(max_bytes: usize) -> Self {
        PartialMemory {
            max_bytes,
            total: 0,
            shares: HashMap::new(),
            ranges: HashMap::new(),
            completed: HashMap::new(),
            completions: 0,
        }
    }

    /// Bytes charged, over all sources.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes charged to `from`.
    pub fn held_by(&self, from: SocketAddr) -> usize {
        self.shares.get(&from).map_or(0, |s| s.bytes)
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    pub fn over_budget(&self) -> bool {
        self.total > self.max_bytes
    }

    /// Whether `from` has completed a frame (and is still remembered).
    pub fn has_completed(&self, from: SocketAddr) -> bool {
        self.completed.contains_key(&from)
    }

    /// `from` completed a frame: from now on its state goes after that of sources that
    /// never did.
    pub fn mark_completed(&mut self, from: SocketAddr) {
        self.completions += 1;
        if self.completed.insert(from, self.completions).is_none() {
            if self.completed.len() > MAX_REMEMBERED_SOURCES {
                let oldest = self
                    .completed
                    .iter()
                    .min_by_key(|(_, seq)| **seq)
                    .map(|(a, _)| *a)
                    .expect("not empty");
                self.completed.remove(&oldest);
                self.set_class(oldest, false);
            }
            self.set_class(from, true);
        }
    }

    fn set_class(&mut self, from: SocketAddr, completed: bool) {
        let Some(share) = self.shares.get_mut(&from) else {
            return;
        };
        if share.completed == completed {
            return;
        }
        let bytes = share.bytes;
        share.completed = completed;
        let range = AddressRange::of(from);
        Self::sub_range(&mut self.ranges, (!completed, range), bytes);
        *self.ranges.entry((completed, range)).or_default() += bytes;
    }

    fn sub_range(
        ranges: &mut HashMap<(bool, AddressRange), usize>,
        key: (bool, AddressRange),
        bytes: usize,
    ) {
        if let Some(r) = ranges.get_mut(&key) {
            *r -= bytes;
            if *r == 0 {
                ranges.remove(&key);
            }
        }
    }

    /// Charge `bytes` more to `from` at `now`.
    pub fn charge(&mut self, from: SocketAddr, bytes: usize, now: Instant) {
        if bytes == 0 {
            return;
        }
        let completed = self.completed.contains_key(&from);
        let share = self.shares.entry(from).or_insert(Share {
            bytes: 0,
            since: now,
            completed,
        });
        share.bytes += bytes;
        *self
            .ranges
            .entry((share.completed, AddressRange::of(from)))
            .or_default() += bytes;
        self.total += bytes;
    }

    /// Give back `bytes` charged to `from` (a partial frame finished, shrank or was dropped).
    pub fn release(&mut self, from: SocketAddr, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let share = self
            .shares
            .get_mut(&from)
            .expect("released what was charged");
        debug_assert!(share.bytes >= bytes, "released more than was charged");
        share.bytes -= bytes;
        let class = share.completed;
        if share.bytes == 0 {
            self.shares.remove(&from);
        }
        Self::sub_range(&mut self.ranges, (class, AddressRange::of(from)), bytes);
        self.total -= bytes;
    }

    /// Move `from`'s charge from `before` to `after` bytes.
    pub fn recharge(&mut self, from: SocketAddr, before: usize, after: usize, now: Instant) {
        if after > before {
            self.charge(from, after - before, now);
        } else {
            self.release(from, before - after);
        }
    }

    /// The source whose oldest partial frame should go next, by the policy of the module
    /// documentation; `None` when nothing is charged. O(sources + ranges).
    pub fn victim(&self) -> Option<SocketAddr> {
        let class = !self.ranges.keys().any(|(completed, _)| !completed);
        let (_, range) = self
            .ranges
            .iter()
            .filter(|((c, _), _)| *c == class)
            // most bytes; among equals, the lowest range (a fixed order, not the map's)
            .max_by(|((_, ra), ba), ((_, rb), bb)| ba.cmp(bb).then(rb.cmp(ra)))
            .map(|(k, _)| *k)?;
        self.shares
            .iter()
            .filter(|(a, s)| s.completed == class && AddressRange::of(**a) == range)
            .max_by(|(aa, sa), (ab, sb)| {
                sa.bytes
                    .cmp(&sb.bytes)
                    .then(sb.since.cmp(&sa.since))
                    .then(ab.cmp(aa))
            })
            .map(|(a, _)| *a)
    }
}

/// Make room for `incoming` more bytes in a frame buffer that will end at `expected` bytes:
/// allocate only as bytes arrive (the first allocation exactly what came, then doubling,
/// so the capacity stays under twice what arrived), never past `expected`. O(1) amortised
/// per byte.
pub fn grow_for(buf: &mut Vec<u8>, incoming: usize, expected: usize) {
    let needed = buf.len() + incoming;
    if needed <= buf.capacity() {
        return;
    }
    let target = buf
        .capacity()
        .saturating_mul(2)
        .max(needed)
        .min(expected.max(needed));
    buf.reserve_exact(target - buf.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    #[test]
    fn ranges_are_v4_24_and_v6_64() {
        assert_eq!(
            AddressRange::of(a([127, 0, 3, 9], 1)),
            AddressRange::of(a([127, 0, 3, 200], 2))
        );
        assert_ne!(
            AddressRange::of(a([127, 0, 3, 9], 1)),
            AddressRange::of(a([127, 0, 4, 9], 1))
        );
        let v6 = |s: &str| AddressRange::of(s.parse().unwrap());
        assert_eq!(v6("[2001:db8:1:2::1]:5"), v6("[2001:db8:1:2:ffff::9]:6"));
        assert_ne!(v6("[2001:db8:1:2::1]:5"), v6("[2001:db8:1:3::1]:5"));
        assert_eq!(
            v6("[::ffff:10.1.2.3]:5"),
            AddressRange::of(a([10, 1, 2, 99], 7))
        );
    }

    #[test]
    fn the_heaviest_range_of_never_completed_sources_pays_first() {
        let now = Instant::now();
        let mut m = PartialMemory::new(10_000);
        let camera = a([127, 0, 0, 1], 5000);
        let flood: Vec<SocketAddr> = (0..50).map(|i| a([127, 0, 9, i], 1000)).collect();
        let other = a([127, 0, 7, 1], 1);
        m.charge(camera, 6000, now);
        m.charge(other, 500, now);
        for f in &flood {
            m.charge(*f, 100, now);
        }
        assert!(m.over_budget());
        // the camera holds the most of any one source, but has never completed a frame:
        // still the flood's range (5000 bytes) is lighter than the camera's (6000)
        assert_eq!(m.victim(), Some(camera));
        m.mark_completed(camera);
        // now every never-completed source goes first, the heaviest range (the flood) first
        let v = m.victim().unwrap();
        assert!(flood.contains(&v), "{v}");
        assert_eq!(v, flood[0], "ties: longest held, then lowest address");
        for f in &flood {
            m.release(*f, 100);
        }
        assert_eq!(m.victim(), Some(other));
        m.release(other, 500);
        assert_eq!(m.victim(), Some(camera), "only then a completed source");
        m.release(camera, 6000);
        assert_eq!((m.total(), m.victim()), (0, None));
        assert!(m.ranges.is_empty() && m.shares.is_empty());
    }

    #[test]
    fn completion_moves_a_sources_bytes_between_classes() {
        let now = Instant::now();
        let mut m = PartialMemory::new(100);
        let s = a([10, 0, 0, 1], 1);
        m.charge(s, 50, now);
        m.mark_completed(s);
        assert_eq!(m.ranges.get(&(true, AddressRange::of(s))), Some(&50));
        assert_eq!(m.ranges.get(&(false, AddressRange::of(s))), None);
        m.release(s, 50);
        assert!(m.ranges.is_empty());
        assert!(m.has_completed(s));
    }

    #[test]
    fn remembered_sources_are_bounded() {
        let mut m = PartialMemory::new(100);
        let first = a([10, 0, 0, 0], 1);
        for i in 0..(MAX_REMEMBERED_SOURCES as u32 + 10) {
            let [_, b, c, d] = i.to_be_bytes();
            m.mark_completed(a([10, b, c, d], 1));
        }
        assert_eq!(m.completed.len(), MAX_REMEMBERED_SOURCES);
        assert!(
            !m.has_completed(first),
            "the oldest completion is forgotten first"
        );
    }

    #[test]
    fn buffers_grow_with_what_arrived_never_past_the_frame() {
        let mut buf = Vec::new();
        grow_for(&mut buf, 1024, 16 << 20);
        assert_eq!(buf.capacity(), 1024, "the first allocation is what came");
        buf.extend_from_slice(&[0; 1024]);
        grow_for(&mut buf, 1024, 16 << 20);
        assert_eq!(buf.capacity(), 2048);
        let mut buf = vec![0; 1000];
        buf.shrink_to_fit();
        grow_for(&mut buf, 1000, 1500);
        assert_eq!(buf.capacity(), 2000, "past the claim only by what came");
        let mut buf = Vec::with_capacity(1000);
        buf.extend_from_slice(&[0; 1000]);
        grow_for(&mut buf, 100, 1500);
        assert!(buf.capacity() >= 1100 && buf.capacity() <= 1500);
    }
}
