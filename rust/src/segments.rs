//! Segment enumeration and prompt-segment choice.
//!
//! Score of a step = the sum of its column values (over the column's width,
//! in f64, left to right); score of a segment = the sum of its steps' scores
//! (in f64, earliest step first).
use crate::error::{bail, Error, Result};
use crate::rng::Rng;
use crate::store::{check_alloc, Store};

/// How a segment is chosen among the candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Highest score (ties: earliest).
    Argmax,
    /// Probability proportional to the score (uniform if all are 0).
    Proportional,
    /// Uniform.
    Random,
    /// The last segment (start T - k).
    Last,
}

impl Strategy {
    /// Every strategy, in the order of [`Strategy::NAMES`].
    pub const ALL: [Strategy; 4] = [Strategy::Argmax, Strategy::Proportional, Strategy::Random, Strategy::Last];
    /// The strategy names: the one definition (Python reads it as `metadt._core.PROMPT_STRATEGIES`).
    pub const NAMES: [&'static str; 4] = ["argmax", "proportional", "random", "last"];

    /// Its name (one of [`Strategy::NAMES`]).
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Argmax => "argmax",
            Strategy::Proportional => "proportional",
            Strategy::Random => "random",
            Strategy::Last => "last",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "argmax" => Strategy::Argmax,
            "proportional" => Strategy::Proportional,
            "random" => Strategy::Random,
            "last" => Strategy::Last,
            _ => bail!("unknown strategy {s:?} (expected argmax, proportional, random or last)"),
        })
    }
}

/// Group segments per task or per episode in [`Store::best_segments`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Per {
    Task,
    Episode,
}

impl Per {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "task" => Per::Task,
            "episode" => Per::Episode,
            _ => bail!("unknown per {s:?} (expected task or episode)"),
        })
    }
}

#[inline]
fn step_score(d: &[f32], w: usize, t: usize) -> f64 {
    let mut s = 0f64;
    for &x in &d[t * w..(t + 1) * w] {
        s += x as f64;
    }
    s
}

/// Scores of the segments of length k starting at lo..=hi of one episode's
/// score rows `d` (width w).
pub(crate) fn segment_sums(d: &[f32], w: usize, k: usize, lo: usize, hi: usize, out: &mut Vec<f64>) {
    out.clear();
    if w == 1 {
        for s in lo..=hi {
            let mut acc = 0f64;
            for &x in &d[s..s + k] {
                acc += x as f64;
            }
            out.push(acc);
        }
        return;
    }
    let steps: Vec<f64> = (lo..hi + k).map(|t| step_score(d, w, t)).collect();
    for s in 0..=(hi - lo) {
        let mut acc = 0f64;
        for &x in &steps[s..s + k] {
            acc += x;
        }
        out.push(acc);
    }
}

/// Index of the first maximum.
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Index drawn with probability proportional to `v` (all >= 0; uniform if they sum to 0).
fn proportional(v: &[f64], rng: &mut Rng) -> usize {
    let total: f64 = v.iter().sum();
    if total <= 0.0 || !total.is_finite() {
        return rng.below(v.len() as u64) as usize;
    }
    let u = rng.unit_f64() * total;
    let mut acc = 0f64;
    for (i, &x) in v.iter().enumerate() {
        acc += x;
        if u < acc {
            return i;
        }
    }
    v.iter().rposition(|&x| x > 0.0).unwrap_or(v.len() - 1)
}

/// The short-episode rule, the one place it is written: the candidate starts
/// `(lo, hi)` of a length-`k` segment of an episode of `tl` steps.
///
/// - `tl >= start_min + k`: the starts `[start_min, tl - k]`;
/// - `k <= tl < start_min + k`: the starts `[0, tl - k]` (no start leaves
///   `start_min` steps before the segment, so every start is a candidate);
/// - `tl < k`: `None`: the segment is the whole episode, start 0, left-padded
///   to `k` steps (prompts: obs 0, actions [`crate::ACTION_PAD`], rewards 0,
///   rtg 0, timestep 0, mask False; segment scores: the sum of its `tl` steps).
///
/// The prompt sampler, `segment_scores`/`best_segments`, `prompt_segments`
/// and Python (`metadt._core.segment_range`) all use it.
pub fn segment_starts(tl: usize, k: usize, start_min: usize) -> Option<(usize, usize)> {
    if tl < k {
        return None;
    }
    // start_min + k may overflow for a huge start_min: then no start fits and the fallback applies
    let lo = match start_min.checked_add(k) {
        Some(need) if tl >= need => start_min,
        _ => 0,
    };
    Some((lo, tl - k))
}

/// Start of a length-k segment of an episode of `tl >= k` steps among the
/// candidates of [`segment_starts`].
pub(crate) fn choose_start(
    tl: usize,
    k: usize,
    start_min: usize,
    strategy: Strategy,
    score: Option<(&[f32], usize)>,
    rng: &mut Rng,
) -> usize {
    let (lo, hi) = segment_starts(tl, k, start_min).unwrap_or((0, 0));
    match strategy {
        Strategy::Last => hi,
        Strategy::Random => lo + rng.below((hi - lo + 1) as u64) as usize,
        Strategy::Argmax | Strategy::Proportional => {
            let mut sums = Vec::with_capacity(hi - lo + 1);
            match score {
                Some((d, w)) if strategy == Strategy::Argmax => segment_sums(d, w, k, lo, hi, &mut sums),
                // proportional: a running sum (O(T) instead of O(T k)); exactness does not matter here
                Some((d, w)) => {
                    let mut acc = 0f64;
                    let mut nonzero = 0usize;
                    let mut window = std::collections::VecDeque::with_capacity(k + 1);
                    for t in lo..hi + k {
                        let x = step_score(d, w, t);
                        acc += x;
                        nonzero += (x != 0.0) as usize;
                        window.push_back(x);
                        if window.len() > k {
                            let old = window.pop_front().unwrap_or(0.0);
                            acc -= old;
                            nonzero -= (old != 0.0) as usize;
                        }
                        if window.len() == k {
                            // exact 0 for all-zero segments (no rounding residue)
                            sums.push(if nonzero == 0 { 0.0 } else { acc.max(0.0) });
                        }
                    }
                }
                None => sums.resize(hi - lo + 1, 0.0),
            }
            lo + if strategy == Strategy::Argmax { argmax(&sums) } else { proportional(&sums, rng) }
        }
    }
}

/// Segments as parallel vectors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Segments {
    /// Task id or episode index (best_segments only; empty for segment_scores).
    pub keys: Vec<i64>,
    pub episodes: Vec<i64>,
    pub starts: Vec<i64>,
    pub scores: Vec<f64>,
}

impl Store {
    fn check_episode_list(&self, episodes: Option<&[usize]>) -> Result<Vec<usize>> {
        match episodes {
            None => Ok((0..self.num_episodes()).collect()),
            Some(v) => {
                for &e in v {
                    if e >= self.num_episodes() {
                        bail!("episode index {e} out of range (the store has {} episodes)", self.num_episodes());
                    }
                }
                Ok(v.to_vec())
            }
        }
    }

    /// Every length-`length` segment of each episode (all if None) whose start
    /// is a candidate of [`segment_starts`] (the short-episode rule: starts in
    /// [start_min, T - length], [0, T - length] when T < start_min + length,
    /// and the whole episode at start 0 when T < length), scored by `column`
    /// (summed over its width and over the segment's real steps). Every
    /// episode has at least one segment.
    pub fn segment_scores(&self, column: &str, length: usize, start_min: usize,
                          episodes: Option<&[usize]>) -> Result<Segments> {
        if length == 0 {
            bail!("length must be >= 1");
        }
        let col = self.column_ref(column)?;
        let w = col.width();
        let d = self.live(col);
        let eps = self.check_episode_list(episodes)?;
        // the output size, counted (checked) and bounded before anything is allocated
        let mut count = 0usize;
        let mut longest = 0usize;
        for &e in &eps {
            let tl = self.ep_len[e];
            let (lo, hi) = segment_starts(tl, length, start_min).unwrap_or((0, 0));
            count = count.saturating_add(hi - lo + 1);
            longest = longest.max(tl);
        }
        // episodes, starts, scores (+ the index and scores of best_segments), and per-episode scratch
        check_alloc(count.saturating_mul(48).saturating_add(longest.saturating_mul(16)), "these segments")?;
        let mut out = Segments::default();
        let reserve = |v: &mut Vec<i64>| v.try_reserve_exact(count).map_err(|_| Error::Memory("out of memory for the segments".into()));
        reserve(&mut out.episodes)?;
        reserve(&mut out.starts)?;
        out.scores.try_reserve_exact(count).map_err(|_| Error::Memory("out of memory for the segments".into()))?;
        let mut sums = Vec::new();
        for e in eps {
            let tl = self.ep_len[e];
            let off = self.ep_off[e];
            let rows = &d[off * w..(off + tl) * w];
            let lo = match segment_starts(tl, length, start_min) {
                Some((lo, hi)) => {
                    segment_sums(rows, w, length, lo, hi, &mut sums);
                    lo
                }
                None => {
                    segment_sums(rows, w, tl, 0, 0, &mut sums); // the whole (short) episode
                    0
                }
            };
            for (i, &s) in sums.iter().enumerate() {
                out.episodes.push(e as i64);
                out.starts.push((lo + i) as i64);
                out.scores.push(s);
            }
        }
        Ok(out)
    }

    /// One segment per task (ascending task id) or per episode (ascending
    /// index) among those of [`Store::segment_scores`]: the highest score
    /// (ties: earliest episode, then earliest start) or one drawn with
    /// probability proportional to the score (scores must be >= 0; uniform if
    /// all are 0). Every group has a segment (see [`segment_starts`]).
    #[allow(clippy::too_many_arguments)]
    pub fn best_segments(&self, column: &str, length: usize, start_min: usize, per: Per, mode: Strategy,
                         seed: Option<u64>, episodes: Option<&[usize]>) -> Result<Segments> {
        if !matches!(mode, Strategy::Argmax | Strategy::Proportional) {
            bail!("mode must be argmax or proportional");
        }
        let all = self.segment_scores(column, length, start_min, episodes)?;
        if mode == Strategy::Proportional {
            if let Some(s) = all.scores.iter().find(|s| **s < 0.0) {
                bail!("column {column:?} gives a negative segment score ({s}); proportional needs scores >= 0");
            }
        }
        let seed = seed.unwrap_or_else(|| self.next_call_seed());
        let key_of = |e: i64| match per {
            Per::Task => self.ep_task[e as usize],
            Per::Episode => e,
        };
        let mut idx: Vec<usize> = (0..all.episodes.len()).collect();
        // stable: keeps (episode, start) order inside a group
        idx.sort_by_key(|&i| key_of(all.episodes[i]));
        let mut out = Segments::default();
        let mut g = 0;
        let mut i = 0;
        while i < idx.len() {
            let key = key_of(all.episodes[idx[i]]);
            let mut j = i;
            while j < idx.len() && key_of(all.episodes[idx[j]]) == key {
                j += 1;
            }
            let scores: Vec<f64> = idx[i..j].iter().map(|&x| all.scores[x]).collect();
            let pick = if mode == Strategy::Argmax {
                argmax(&scores)
            } else {
                proportional(&scores, &mut Rng::for_sample(seed, g))
            };
            let x = idx[i + pick];
            out.keys.push(key);
            out.episodes.push(all.episodes[x]);
            out.starts.push(all.starts[x]);
            out.scores.push(all.scores[x]);
            g += 1;
            i = j;
        }
        Ok(out)
    }
}
