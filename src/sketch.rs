//! A mergeable latency sketch with bounded relative error (the DDSketch construction): a value
//! `x` falls in bucket `ceil(log_γ x)`, with `γ = (1 + α) / (1 − α)`, and every quantile is
//! returned within relative error `α` of the true value at that rank. Two sketches merge by
//! adding their bucket counts, so per-thread or per-batch sketches combine exactly.
//!
//! The wire form, carried in a batch's `performance[].sketch`, is
//! `dd1:<α>:<zeros>:<first index>:<counts>`, counts as comma-separated integers from the first
//! non-empty bucket on (runs of empty buckets written `~n`). No I/O.

use std::fmt::Write as _;

/// The relative accuracy of the sketches licensor writes: 1%.
pub const ALPHA: f64 = 0.01;
/// Values at or below this (in milliseconds) count as zero: one microsecond.
pub const MIN_VALUE: f64 = 0.001;
/// Bucket indices are kept within ±`MAX_INDEX`: covers 1 µs to beyond a day at 1%.
const MAX_INDEX: i32 = 2_000;

/// 1 / ln γ for [`ALPHA`], so that a value's bucket is a multiplication away from its logarithm
/// (a test checks every bucket against the formula).
const DEFAULT_INV_LN_GAMMA: f64 = 49.99833328888678;

/// The bucket a value (above [`MIN_VALUE`]) falls in at relative accuracy [`ALPHA`]: what
/// `Sketch::default().index(value)` gives, up to rounding on a bucket's very edge (within about
/// 1e-13 of it, where either bucket is within the accuracy). The request tracker runs this once
/// per request, so from 1/1024 ms to 2^22 ms (70 minutes) it reads two small tables instead of
/// calling libm's logarithm: a quarter of the instructions. Outside that range it computes the
/// logarithm, without a division or a call to libm's `ceil`.
#[inline]
pub fn default_index(value: f64) -> i32 {
    let bits = value.to_bits();
    // The sign bit is clear for the values this is meant for, so the shift leaves the
    // exponent alone; negative values and NaN land outside the table and take the formula.
    let exponent = (bits >> 52) as i32 - 1023;
    if (TABLE_LOW_EXPONENT..TABLE_HIGH_EXPONENT).contains(&exponent) {
        let slice = ((exponent - TABLE_LOW_EXPONENT) as usize) << SLICE_BITS
            | ((bits >> (52 - SLICE_BITS)) as usize & (SLICES_PER_OCTAVE - 1));
        let index = i32::from(TABLES.0[slice]);
        // A slice is narrower than a bucket: the value is in the slice's first bucket or the
        // next one.
        return index + i32::from(value > TABLES.1[(index - EDGE_LOW) as usize]);
    }
    ceil_i32(value.ln() * DEFAULT_INV_LN_GAMMA).clamp(-MAX_INDEX, MAX_INDEX)
}

/// The table covers values from 2^`TABLE_LOW_EXPONENT` to 2^`TABLE_HIGH_EXPONENT` ms.
const TABLE_LOW_EXPONENT: i32 = -10;
const TABLE_HIGH_EXPONENT: i32 = 22;
/// Each octave is cut into 2^`SLICE_BITS` slices by the mantissa's top bits; a slice spans a
/// ratio of at most 1 + 1/64, less than a bucket's γ ≈ 1.0202, so it meets at most two buckets.
const SLICE_BITS: u32 = 6;
const SLICES_PER_OCTAVE: usize = 1 << SLICE_BITS;
const SLICES: usize = (TABLE_HIGH_EXPONENT - TABLE_LOW_EXPONENT) as usize * SLICES_PER_OCTAVE;
/// The buckets whose upper edges are kept: every bucket a table value can fall in.
const EDGE_LOW: i32 = -347;
const EDGE_HIGH: i32 = 764;
const EDGES: usize = (EDGE_HIGH - EDGE_LOW + 1) as usize;

/// The bucket of each slice's lowest value, and each bucket's upper edge γ^i, built at compile
/// time.
static TABLES: ([i16; SLICES], [f64; EDGES]) = build_tables();

const fn build_tables() -> ([i16; SLICES], [f64; EDGES]) {
    let gamma = (1.0 + ALPHA) / (1.0 - ALPHA);
    // γ^i by repeated multiplication outwards from γ^0 = 1: some hundreds of roundings, a
    // relative error near 1e-13 at the far ends.
    let mut edges = [0.0; EDGES];
    let zero = (-EDGE_LOW) as usize;
    edges[zero] = 1.0;
    let mut i = zero;
    while i + 1 < EDGES {
        edges[i + 1] = edges[i] * gamma;
        i += 1;
    }
    i = zero;
    while i > 0 {
        edges[i - 1] = edges[i] / gamma;
        i -= 1;
    }
    // Each slice's lowest value is an exact float; its bucket is the first whose upper edge
    // reaches it. Both only grow, so one pass over the edges serves every slice.
    let mut slices = [0i16; SLICES];
    let mut edge = 0;
    let mut slice = 0;
    while slice < SLICES {
        let exponent = (slice >> SLICE_BITS) as i64 + TABLE_LOW_EXPONENT as i64 + 1023;
        let mantissa = (slice & (SLICES_PER_OCTAVE - 1)) as u64;
        let lowest = f64::from_bits((exponent as u64) << 52 | mantissa << (52 - SLICE_BITS));
        while edges[edge] < lowest {
            edge += 1;
        }
        slices[slice] = (edge as i32 + EDGE_LOW) as i16;
        slice += 1;
    }
    // The last slice's second bucket must have its edge in the table too.
    assert!(edge + 1 < EDGES, "the edge table is too short for the slice table");
    (slices, edges)
}

/// `x.ceil() as i32` (saturating): truncation is the ceiling of negative numbers and integers,
/// and one less than it for the rest.
#[inline]
fn ceil_i32(x: f64) -> i32 {
    let t = x as i32;
    if f64::from(t) < x {
        t.saturating_add(1)
    } else {
        t
    }
}

/// A latency sketch.
#[derive(Debug, Clone, PartialEq)]
pub struct Sketch {
    alpha: f64,
    ln_gamma: f64,
    /// Values at or below `MIN_VALUE`.
    zeros: u64,
    /// Bucket counts from index `offset` on.
    offset: i32,
    counts: Vec<u64>,
    count: u64,
}

/// Why a sketch's wire form could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a dd1 sketch: {0}")]
pub struct SketchError(String);

impl Default for Sketch {
    fn default() -> Self {
        Sketch::with_alpha(ALPHA)
    }
}

impl Sketch {
    /// An empty sketch with relative accuracy `alpha` (0 < alpha < 1).
    pub fn with_alpha(alpha: f64) -> Sketch {
        let gamma = (1.0 + alpha) / (1.0 - alpha);
        Sketch { alpha, ln_gamma: gamma.ln(), zeros: 0, offset: 0, counts: Vec::new(), count: 0 }
    }

    /// The bucket a value falls in (for values above `MIN_VALUE`).
    #[inline]
    pub fn index(&self, value: f64) -> i32 {
        ((value.ln() / self.ln_gamma).ceil() as i32).clamp(-MAX_INDEX, MAX_INDEX)
    }

    /// Adds one value (milliseconds). Negative, zero and non-finite values count as zero.
    pub fn add(&mut self, value: f64) {
        self.add_n(value, 1);
    }

    /// Adds `n` occurrences of a value.
    pub fn add_n(&mut self, value: f64, n: u64) {
        if n == 0 {
            return;
        }
        self.count += n;
        // NaN fails every comparison, so it is named explicitly.
        if value.is_nan() || value <= MIN_VALUE || !value.is_finite() {
            self.zeros += n;
            return;
        }
        let index = self.index(value);
        self.bump(index, n);
    }

    /// Adds `n` values to a bucket by index (for collectors that count buckets themselves).
    pub fn add_to_bucket(&mut self, index: i32, n: u64) {
        self.count += n;
        self.bump(index.clamp(-MAX_INDEX, MAX_INDEX), n);
    }

    /// Adds `n` to a bucket's count, leaving the total to the caller.
    fn bump(&mut self, index: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = index;
        }
        if index < self.offset {
            let grow = (self.offset - index) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = index;
        }
        let at = (index - self.offset) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += n;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds another sketch of the same accuracy into this one.
    pub fn merge(&mut self, other: &Sketch) -> Result<(), SketchError> {
        if (other.alpha - self.alpha).abs() > f64::EPSILON {
            return Err(SketchError(format!("accuracy {} differs from {}", other.alpha, self.alpha)));
        }
        self.zeros += other.zeros;
        self.count += other.zeros;
        for (i, &n) in other.counts.iter().enumerate() {
            if n > 0 {
                self.count += n;
                self.bump(other.offset + i as i32, n);
            }
        }
        Ok(())
    }

    /// The value at quantile `q` (0 to 1) by nearest rank (the `ceil(q·n)`-th smallest value:
    /// the p99 of two requests is the slower one), within relative error α; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count) - 1;
        if rank < self.zeros {
            return Some(0.0);
        }
        let mut seen = self.zeros;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen > rank {
                let index = self.offset + i as i32;
                // The bucket (γ^(i−1), γ^i] is represented by the point equally far, in
                // relative terms, from both ends.
                let gamma = self.ln_gamma.exp();
                return Some(2.0 * (index as f64 * self.ln_gamma).exp() / (gamma + 1.0));
            }
        }
        None
    }

    /// The wire form.
    pub fn encode(&self) -> String {
        let mut out = format!("dd1:{}:{}:{}:", self.alpha, self.zeros, self.offset);
        let mut empty_run = 0u64;
        let mut first = true;
        let mut push = |out: &mut String, item: &dyn std::fmt::Display| {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{item}");
        };
        for &n in &self.counts {
            if n == 0 {
                empty_run += 1;
                continue;
            }
            if empty_run > 0 {
                push(&mut out, &format_args!("~{empty_run}"));
                empty_run = 0;
            }
            push(&mut out, &n);
        }
        out
    }

    /// Reads the wire form.
    pub fn decode(text: &str) -> Result<Sketch, SketchError> {
        let bad =
            |what: &str| SketchError(format!("{what} in {:?}", text.chars().take(60).collect::<String>()));
        let mut parts = text.splitn(5, ':');
        if parts.next() != Some("dd1") {
            return Err(bad("no dd1 prefix"));
        }
        let alpha: f64 = parts.next().and_then(|a| a.parse().ok()).ok_or_else(|| bad("bad accuracy"))?;
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(bad("accuracy out of range"));
        }
        let zeros: u64 = parts.next().and_then(|z| z.parse().ok()).ok_or_else(|| bad("bad zero count"))?;
        let offset: i32 = parts.next().and_then(|o| o.parse().ok()).ok_or_else(|| bad("bad first index"))?;
        if offset.abs() > MAX_INDEX {
            return Err(bad("first index out of range"));
        }
        let mut sketch = Sketch::with_alpha(alpha);
        sketch.zeros = zeros;
        sketch.count = zeros;
        let mut index = offset;
        for item in parts.next().unwrap_or("").split(',').filter(|i| !i.is_empty()) {
            if let Some(run) = item.strip_prefix('~') {
                // A run skips forward over empty buckets: at least one, never backwards (a
                // negative run would count buckets twice).
                let run: u32 = run.parse().map_err(|_| bad("bad run of empty buckets"))?;
                if run == 0 {
                    return Err(bad("empty run of empty buckets"));
                }
                let run = i32::try_from(run).map_err(|_| bad("index overflow"))?;
                index = index.checked_add(run).ok_or_else(|| bad("index overflow"))?;
            } else {
                let n: u64 = item.parse().map_err(|_| bad("bad count"))?;
                if index.abs() > MAX_INDEX {
                    return Err(bad("index out of range"));
                }
                sketch.count = sketch.count.checked_add(n).ok_or_else(|| bad("count overflow"))?;
                sketch.bump(index, n);
                index += 1;
            }
        }
        Ok(sketch)
    }
}
