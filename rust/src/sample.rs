//! Batch sampling: transitions (with per-step context), Decision-Transformer
//! windows (with the context of every step, attached columns and prompts).
//!
//! A batch is described by a *plan* (field names, dtypes and shapes, in a
//! fixed order) and filled in place through raw output pointers, so the same
//! code writes into NumPy arrays (Python) or into Rust vectors ([`Batch`]).
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use rayon::prelude::*;

use crate::error::{bail, Error, Result};
use crate::rng::Rng;
use crate::segments::{choose_start, segment_starts, Strategy};
use crate::store::{check_alloc, OpenEpisode, Store, NOT_COMPUTED};

/// Padding value of actions in windows and prompts (the only padding value
/// that is not 0: every other padded entry of every batch is 0 / False).
pub const ACTION_PAD: f32 = -10.0;

/// A return-to-go as the model sees it: divided by the return scale in
/// float32. The one place any batch (training windows, prompts, live
/// windows) divides by the return scale.
#[inline(always)]
pub fn scaled_rtg(rtg: f32, return_scale: f32) -> f32 {
    rtg / return_scale
}

/// Validate a plan before anything is allocated: every field name is unique
/// (each output array is returned under its name, and the fill writes every
/// array of the plan: two fields of one name would leave one array unowned),
/// and the total output size is computed without overflow and fits in this
/// machine's memory. Returns the total output bytes.
pub(crate) fn check_plan(plan: &[FieldSpec]) -> Result<usize> {
    let mut total: usize = 0;
    for (i, f) in plan.iter().enumerate() {
        if plan[..i].iter().any(|g| g.name == f.name) {
            bail!("two outputs of this batch would be named {:?} (a column name must not be a batch key)", f.name);
        }
        let bytes = f.shape.iter().try_fold(f.dtype.size(), |a, &d| a.checked_mul(d));
        match bytes.and_then(|b| total.checked_add(b)) {
            Some(t) if t <= (isize::MAX as usize) / 2 => total = t,
            _ => return Err(Error::Memory(format!(
                "batch too large: the outputs up to {:?} (shape {:?}) overflow the address space", f.name, f.shape))),
        }
    }
    check_alloc(total, "this batch")?;
    Ok(total)
}

/// Element type of a batch field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    I64,
    Bool,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::I64 => 8,
            DType::Bool => 1,
        }
    }
}

/// Name, dtype and shape of one output array.
#[derive(Clone, Debug)]
pub struct FieldSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl FieldSpec {
    fn new(name: &str, dtype: DType, shape: &[usize]) -> Self {
        FieldSpec { name: name.to_string(), dtype, shape: shape.to_vec() }
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The data of one field of a [`Batch`].
#[derive(Clone, Debug)]
pub enum FieldData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

/// A batch as plain Rust vectors (row-major, shapes in the specs).
#[derive(Clone, Debug)]
pub struct Batch {
    pub fields: Vec<(FieldSpec, FieldData)>,
}

impl Batch {
    pub(crate) fn alloc(plan: Vec<FieldSpec>) -> Result<(Batch, Vec<RawOut>)> {
        check_plan(&plan)?;
        fn zeros<T: Clone>(n: usize, z: T, name: &str) -> Result<Vec<T>> {
            crate::store::try_filled(n, z, &format!("the {name:?} output"))
        }
        let mut fields = Vec::with_capacity(plan.len());
        for f in plan {
            let n = f.numel();
            let d = match f.dtype {
                DType::F32 => FieldData::F32(zeros(n, 0.0, &f.name)?),
                DType::I64 => FieldData::I64(zeros(n, 0, &f.name)?),
                DType::Bool => FieldData::Bool(zeros(n, false, &f.name)?),
            };
            fields.push((f, d));
        }
        let mut b = Batch { fields };
        let outs = b.fields.iter_mut().map(|(_, d)| RawOut(match d {
            FieldData::F32(v) => v.as_mut_ptr() as *mut u8,
            FieldData::I64(v) => v.as_mut_ptr() as *mut u8,
            FieldData::Bool(v) => v.as_mut_ptr() as *mut u8,
        })).collect();
        Ok((b, outs))
    }
    /// Allocate a batch for a plan and return the raw output pointers (for benchmarks
    /// that call `fill_*` directly).
    pub fn alloc_for_bench(plan: Vec<FieldSpec>) -> Result<(Batch, Vec<RawOut>)> {
        Self::alloc(plan)
    }
    pub fn spec(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|(s, _)| s.name == name).map(|(s, _)| s)
    }
    pub fn f32(&self, name: &str) -> Option<&[f32]> {
        self.fields.iter().find_map(|(s, d)| match d {
            FieldData::F32(v) if s.name == name => Some(v.as_slice()),
            _ => None,
        })
    }
    pub fn i64(&self, name: &str) -> Option<&[i64]> {
        self.fields.iter().find_map(|(s, d)| match d {
            FieldData::I64(v) if s.name == name => Some(v.as_slice()),
            _ => None,
        })
    }
    pub fn bool(&self, name: &str) -> Option<&[bool]> {
        self.fields.iter().find_map(|(s, d)| match d {
            FieldData::Bool(v) if s.name == name => Some(v.as_slice()),
            _ => None,
        })
    }
    pub fn names(&self) -> Vec<&str> {
        self.fields.iter().map(|(s, _)| s.name.as_str()).collect()
    }
}

/// A raw pointer to the start of an output array (written by one sample
/// each at disjoint offsets).
#[derive(Clone, Copy, Debug)]
pub struct RawOut(pub *mut u8);
// SAFETY: each sample writes a disjoint region of the arrays, which outlive the fill.
unsafe impl Send for RawOut {}
unsafe impl Sync for RawOut {}

impl RawOut {
    #[inline]
    fn f32(self) -> *mut f32 {
        self.0 as *mut f32
    }
    #[inline]
    fn i64(self) -> *mut i64 {
        self.0 as *mut i64
    }
}

#[inline]
unsafe fn put(dst: *mut f32, src: &[f32]) {
    std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len());
}
#[inline]
unsafe fn fill(dst: *mut f32, n: usize, v: f32) {
    for i in 0..n {
        *dst.add(i) = v;
    }
}
#[inline]
unsafe fn mask(dst: *mut u8, pad: usize, n: usize) {
    std::ptr::write_bytes(dst, 0, pad);
    std::ptr::write_bytes(dst.add(pad), 1, n);
}

// ---------------------------------------------------------------- parallelism

static POOL_PID: AtomicU32 = AtomicU32::new(0);

/// Whether rayon may be used in this process: rayon's global pool does not
/// survive `fork`, so a child forked after the parent used it runs serially.
pub fn parallel_ok() -> bool {
    let me = std::process::id();
    match POOL_PID.compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => true,
        Err(p) => p == me,
    }
}

/// Output bytes above which a batch is filled in parallel.
pub const PARALLEL_MIN_BYTES: usize = 512 * 1024;

/// How many samples ahead the source rows are prefetched into L2 (and, `NEAR`
/// samples ahead, into L1): one core can keep more L2 misses in flight.
const PREFETCH_AHEAD: usize = 10;
const NEAR: usize = 2;

/// Hint the CPU to load `[p, p + len)` into the cache.
#[inline(always)]
fn prefetch<T>(s: &[T], near: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
        let p = s.as_ptr() as *const i8;
        let bytes = std::mem::size_of_val(s);
        let mut i = 0;
        while i < bytes {
            // SAFETY: prefetch is a hint; the address is inside `s`.
            unsafe {
                if near { _mm_prefetch::<_MM_HINT_T0>(p.add(i)) } else { _mm_prefetch::<_MM_HINT_T1>(p.add(i)) }
            };
            i += 64;
        }
        if bytes > 0 {
            unsafe {
                if near { _mm_prefetch::<_MM_HINT_T0>(p.add(bytes - 1)) } else { _mm_prefetch::<_MM_HINT_T1>(p.add(bytes - 1)) }
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, near);
}

/// Run `work(b, draw(b))` for every sample b in 0..n, serially or in parallel
/// chunks (by output size), prefetching the rows of the samples a few ahead.
fn run<T, D, P, W>(n: usize, bytes: usize, draw: D, pre: P, work: W)
where
    T: Send,
    D: Fn(usize) -> T + Sync + Send,
    P: Fn(&T, bool) + Sync + Send,
    W: Fn(usize, T) + Sync + Send,
{
    let chunk = |lo: usize, hi: usize| {
        let mut items: std::collections::VecDeque<T> = (lo..(lo + PREFETCH_AHEAD).min(hi)).map(&draw).collect();
        for it in &items {
            pre(it, false);
        }
        for it in items.iter().take(NEAR) {
            pre(it, true);
        }
        let mut next = lo + items.len();
        for b in lo..hi {
            if next < hi {
                let it = draw(next);
                pre(&it, false);
                items.push_back(it);
                next += 1;
            }
            if let Some(it) = items.get(NEAR) {
                pre(it, true);
            }
            let it = items.pop_front().expect("drawn ahead");
            work(b, it);
        }
    };
    // parallel_ok() must run before anything touches rayon's global pool, so that a
    // child forked from a process that initialized the pool never uses it
    if n > 1 && bytes >= PARALLEL_MIN_BYTES && parallel_ok() && rayon::current_num_threads() > 1 {
        let threads = rayon::current_num_threads();
        let per = n.div_ceil(4 * threads).max(16);
        let chunks = n.div_ceil(per);
        (0..chunks).into_par_iter().for_each(|c| chunk(c * per, ((c + 1) * per).min(n)));
    } else {
        chunk(0, n);
    }
}

// ---------------------------------------------------------------- specs

/// How to choose prompt segments (see [`Store::sample_windows`]).
#[derive(Clone, Debug)]
pub struct PromptSpec {
    /// Segment length k (>= 1).
    pub length: usize,
    /// Attached column scoring each step (summed over its width); None = all 0.
    pub score: Option<String>,
    pub strategy: Strategy,
    /// Smallest start (usually the context length h).
    pub start_min: usize,
    /// Restrict prompt episodes to these indices (still of the window's task).
    pub pool: Option<Vec<usize>>,
}

/// Which step of a window is drawn uniformly over the steps of the sampled
/// tasks (see [`Store::sample_windows`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Anchor {
    /// The window's last step `end`: the window is `[end-K+1, end]`, left-padded
    /// where that starts before the episode (it always ends on a real step).
    #[default]
    End,
    /// The window's first step `start` (the official Meta-DT and kzl's
    /// decision-transformer rule): the window is `[start, start+K)` clipped at
    /// the episode end, its real steps right-aligned and left-padded.
    Start,
}

impl Anchor {
    pub fn parse(s: &str) -> Result<Anchor> {
        match s {
            "end" => Ok(Anchor::End),
            "start" => Ok(Anchor::Start),
            _ => bail!("anchor must be \"start\" or \"end\", got {s:?}"),
        }
    }
}

/// A request for Decision-Transformer windows.
#[derive(Clone, Debug)]
pub struct WindowSpec {
    pub batch: usize,
    pub length: usize,
    pub context: usize,
    pub return_scale: f32,
    pub columns: Vec<String>,
    pub prompt: Option<PromptSpec>,
    pub tasks: Option<Vec<i64>>,
    pub anchor: Anchor,
}

impl WindowSpec {
    pub fn new(batch: usize, length: usize) -> Self {
        WindowSpec { batch, length, context: 0, return_scale: 1.0, columns: Vec::new(), prompt: None, tasks: None,
                     anchor: Anchor::End }
    }
}

/// A request for transitions.
#[derive(Clone, Debug)]
pub struct TransitionSpec {
    pub batch: usize,
    pub context: usize,
    pub tasks: Option<Vec<i64>>,
}

// ---------------------------------------------------------------- domain

/// The steps a sample is drawn from: episodes (closed, then open), each a
/// contiguous range of a virtual index.
struct Domain<'a> {
    cum: Cow<'a, [usize]>,
    eps: Option<Vec<usize>>,
    n_closed: usize,
    open: Vec<&'a OpenEpisode>,
    total: usize,
    index: Option<std::sync::Arc<crate::store::StepIndex>>,
}

impl Domain<'_> {
    /// (slot, step within the episode) of virtual index r.
    #[inline]
    fn locate(&self, r: usize) -> (usize, usize) {
        if let Some(ix) = &self.index {
            let mut i = ix.table[r >> ix.shift] as usize;
            while i + 1 < self.cum.len() && self.cum[i + 1] <= r {
                i += 1;
            }
            return (i, r - self.cum[i]);
        }
        let slot = self.cum.partition_point(|&c| c <= r) - 1;
        (slot, r - self.cum[slot])
    }
    #[inline]
    fn closed(&self, slot: usize) -> usize {
        match &self.eps {
            Some(v) => v[slot],
            None => slot,
        }
    }
}

struct EpView<'a> {
    obs: &'a [f32],
    act: &'a [f32],
    rew: &'a [f32],
    next_obs: &'a [f32],
    term: &'a [f32],
}

impl Store {
    fn check_tasks(&self, tasks: &Option<Vec<i64>>) -> Result<()> {
        if let Some(ts) = tasks {
            if ts.is_empty() {
                bail!("tasks is empty (pass None for all tasks)");
            }
            for t in ts {
                let closed = self.task_eps.contains_key(t);
                let open = self.open.values().any(|e| e.task == *t && !e.is_empty());
                if !closed && !open {
                    bail!("unknown task {t} (tasks in the store: {:?})", self.tasks());
                }
            }
        }
        Ok(())
    }

    fn domain(&self, tasks: &Option<Vec<i64>>, with_open: bool) -> Domain<'_> {
        let open: Vec<&OpenEpisode> = if with_open {
            self.open.values().filter(|e| !e.is_empty()
                && tasks.as_ref().is_none_or(|ts| ts.contains(&e.task))).collect()
        } else {
            Vec::new()
        };
        match tasks {
            None if open.is_empty() => Domain {
                cum: Cow::Borrowed(&self.ep_off),
                eps: None,
                n_closed: self.ep_off.len(),
                open,
                total: self.num_steps(),
                index: Some(self.step_index()),
            },
            _ => {
                let eps: Vec<usize> = match tasks {
                    None => (0..self.num_episodes()).collect(),
                    Some(ts) => {
                        let mut v: Vec<usize> = self.task_eps.iter()
                            .filter(|(t, _)| ts.contains(t)).flat_map(|(_, e)| e.iter().copied()).collect();
                        v.sort_unstable();
                        v
                    }
                };
                let mut cum = Vec::with_capacity(eps.len() + open.len());
                let mut acc = 0usize;
                for &e in &eps {
                    cum.push(acc);
                    acc += self.ep_len[e];
                }
                for o in &open {
                    cum.push(acc);
                    acc += o.len();
                }
                Domain { cum: Cow::Owned(cum), n_closed: eps.len(), eps: Some(eps), open, total: acc, index: None }
            }
        }
    }

    #[inline]
    fn closed_view(&self, e: usize) -> EpView<'_> {
        let (od, ad) = (self.obs_dim, self.act_dim);
        let (o, l) = (self.ep_off[e], self.ep_len[e]);
        let h = self.head;
        EpView {
            obs: &self.obs.raw()[(h + o) * od..(h + o + l) * od],
            act: &self.actions.raw()[(h + o) * ad..(h + o + l) * ad],
            rew: &self.rewards.raw()[h + o..h + o + l],
            next_obs: &self.next_obs.raw()[(h + o) * od..(h + o + l) * od],
            term: &self.terminals.raw()[h + o..h + o + l],
        }
    }

    // ------------------------------------------------------------ transitions

    /// Fields of a transition batch, in fill order (validates the request).
    pub fn plan_transitions(&self, spec: &TransitionSpec) -> Result<Vec<FieldSpec>> {
        if spec.batch == 0 {
            bail!("batch must be >= 1");
        }
        if self.num_steps() + self.num_open_steps() == 0 {
            bail!("the store is empty: add episodes before sampling");
        }
        self.check_tasks(&spec.tasks)?;
        let p = self.transition_fields(spec.batch, spec.context);
        check_plan(&p)?;
        Ok(p)
    }

    /// The window layout's keys of `b` rows of `k` steps (what [`Store::write_segment`]
    /// fills, then tasks and episodes): shared by sampled and live windows.
    fn window_fields(&self, b: usize, k: usize) -> Vec<FieldSpec> {
        let (od, ad) = (self.obs_dim, self.act_dim);
        vec![
            FieldSpec::new("obs", DType::F32, &[b, k, od]),
            FieldSpec::new("actions", DType::F32, &[b, k, ad]),
            FieldSpec::new("rewards", DType::F32, &[b, k]),
            FieldSpec::new("rtg", DType::F32, &[b, k]),
            FieldSpec::new("timesteps", DType::I64, &[b, k]),
            FieldSpec::new("mask", DType::Bool, &[b, k]),
            FieldSpec::new("tasks", DType::I64, &[b]),
            FieldSpec::new("episodes", DType::I64, &[b]),
        ]
    }

    /// The `ctx_*` keys of windows whose `kh = k + h` context rows cover the h steps
    /// before the window's first step and its k steps.
    fn push_window_context(&self, p: &mut Vec<FieldSpec>, b: usize, kh: usize) {
        let (od, ad) = (self.obs_dim, self.act_dim);
        p.push(FieldSpec::new("ctx_obs", DType::F32, &[b, kh, od]));
        p.push(FieldSpec::new("ctx_actions", DType::F32, &[b, kh, ad]));
        p.push(FieldSpec::new("ctx_rewards", DType::F32, &[b, kh]));
        p.push(FieldSpec::new("ctx_mask", DType::Bool, &[b, kh]));
    }

    /// The transition layout (what [`write_transition`] fills) of `b` rows with `h`
    /// context steps: shared by sampled transitions and the sequential pass.
    fn transition_fields(&self, b: usize, h: usize) -> Vec<FieldSpec> {
        let (od, ad) = (self.obs_dim, self.act_dim);
        let mut p = vec![
            FieldSpec::new("obs", DType::F32, &[b, od]),
            FieldSpec::new("actions", DType::F32, &[b, ad]),
            FieldSpec::new("rewards", DType::F32, &[b]),
            FieldSpec::new("next_obs", DType::F32, &[b, od]),
            FieldSpec::new("terminals", DType::F32, &[b]),
            FieldSpec::new("tasks", DType::I64, &[b]),
            FieldSpec::new("episodes", DType::I64, &[b]),
            FieldSpec::new("timesteps", DType::I64, &[b]),
        ];
        if h > 0 {
            p.push(FieldSpec::new("ctx_obs", DType::F32, &[b, h, od]));
            p.push(FieldSpec::new("ctx_actions", DType::F32, &[b, h, ad]));
            p.push(FieldSpec::new("ctx_rewards", DType::F32, &[b, h]));
            p.push(FieldSpec::new("ctx_mask", DType::Bool, &[b, h]));
        }
        p
    }

    /// Fill a planned transition batch.
    ///
    /// # Safety
    /// `outs` must point to writable arrays of the plan's sizes, in plan order.
    pub unsafe fn fill_transitions(&self, spec: &TransitionSpec, seed: u64, outs: &[RawOut]) {
        let dom = self.domain(&spec.tasks, true);
        let (h, od, ad) = (spec.context, self.obs_dim, self.act_dim);
        let bytes = spec.batch * (4 * (2 * od + ad + 2) + 24 + h * (4 * (od + ad + 1) + 1));
        let o = outs.to_vec();
        let view = |slot: usize| if slot < dom.n_closed {
            self.closed_view(dom.closed(slot))
        } else {
            let oe = dom.open[slot - dom.n_closed];
            EpView { obs: &oe.obs, act: &oe.actions, rew: &oe.rewards, next_obs: &oe.next_obs, term: &oe.terminals }
        };
        let draw = |b: usize| {
            let mut rng = Rng::for_sample(seed, b);
            let r = rng.below(dom.total as u64) as usize;
            dom.locate(r)
        };
        let pre = |&(slot, t): &(usize, usize), near: bool| {
            let v = view(slot);
            let t0 = t.saturating_sub(h);
            prefetch(&v.obs[t0 * od..(t + 1) * od], near);
            prefetch(&v.act[t0 * ad..(t + 1) * ad], near);
            prefetch(&v.rew[t0..t + 1], near);
            prefetch(&v.next_obs[t * od..(t + 1) * od], near);
            prefetch(&v.term[t..t + 1], near);
        };
        run(spec.batch, bytes, draw, pre, |b, (slot, t)| {
            let (v, task, ep) = if slot < dom.n_closed {
                let e = dom.closed(slot);
                (self.closed_view(e), self.ep_task[e], e as i64)
            } else {
                let oe = dom.open[slot - dom.n_closed];
                (EpView { obs: &oe.obs, act: &oe.actions, rew: &oe.rewards, next_obs: &oe.next_obs,
                    term: &oe.terminals }, oe.task, -1)
            };
            write_transition(&o, b, &v, t, h, od, ad, task, ep);
        });
    }

    /// Sample transitions uniformly over the steps (closed and open episodes)
    /// of `spec.tasks` (all if None); `seed` None draws from the store's own
    /// generator.
    pub fn sample_transitions(&self, spec: &TransitionSpec, seed: Option<u64>) -> Result<Batch> {
        let plan = self.plan_transitions(spec)?;
        let seed = seed.unwrap_or_else(|| self.next_call_seed());
        let (batch, outs) = Batch::alloc(plan)?;
        // SAFETY: outs point into `batch`, allocated from the plan.
        unsafe { self.fill_transitions(spec, seed, &outs) };
        Ok(batch)
    }

    // ------------------------------------------------------------ windows

    fn prompt_pools(&self, spec: &WindowSpec, p: &PromptSpec) -> Result<BTreeMap<i64, Vec<usize>>> {
        if let Some(pool) = &p.pool {
            for &e in pool {
                if e >= self.num_episodes() {
                    bail!("prompt pool: episode {e} out of range (the store has {} episodes)", self.num_episodes());
                }
            }
        }
        let tasks: Vec<i64> = match &spec.tasks {
            Some(t) => t.clone(),
            None => self.tasks(),
        };
        let mut m = BTreeMap::new();
        for t in tasks {
            let eps = self.episodes_of_task(t);
            let v: Vec<usize> = match &p.pool {
                None => eps.to_vec(),
                Some(pool) => {
                    let mut v: Vec<usize> = pool.iter().copied().filter(|e| self.ep_task[*e] == t).collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                }
            };
            if v.is_empty() {
                bail!("prompt: task {t} has no episode in the prompt pool");
            }
            m.insert(t, v);
        }
        Ok(m)
    }

    /// Fields of a window batch, in fill order (validates the request).
    pub fn plan_windows(&self, spec: &WindowSpec) -> Result<Vec<FieldSpec>> {
        if spec.batch == 0 {
            bail!("batch must be >= 1");
        }
        if spec.length == 0 {
            bail!("length (K) must be >= 1");
        }
        let scale = spec.return_scale;
        if !(scale.is_finite() && scale > 0.0) {
            bail!("return_scale must be a finite number > 0 (got {scale:?})");
        }
        if scale < 1.0 {
            // |rtg| <= f32::MAX, so only a scale below 1 can make rtg / scale overflow
            let m = self.max_abs_rtg();
            if !(m / scale).is_finite() {
                let mut least = m / f32::MAX;
                while !(m / least).is_finite() {
                    least = f32::from_bits(least.to_bits() + 1);
                }
                bail!("return_scale {scale:?} is too small: the largest |return-to-go| of this store ({m:?}) \
                       divided by it overflows float32 (use return_scale >= {least:?})");
            }
        }
        if self.num_steps() == 0 {
            bail!("the store has no complete episode: add episodes before sampling windows");
        }
        if let Some(ts) = &spec.tasks {
            if ts.is_empty() {
                bail!("tasks is empty (pass None for all tasks)");
            }
            for t in ts {
                if !self.task_eps.contains_key(t) {
                    bail!("unknown task {t} (tasks with complete episodes: {:?})", self.tasks());
                }
            }
        }
        let (b, k, h, od, ad) = (spec.batch, spec.length, spec.context, self.obs_dim, self.act_dim);
        let kh = k.checked_add(h)
            .ok_or_else(|| Error::invalid(format!("length + context overflows ({k} + {h})")))?;
        let mut p = self.window_fields(b, k);
        for (i, name) in spec.columns.iter().enumerate() {
            if spec.columns[..i].contains(name) {
                bail!("column {name:?} requested twice");
            }
            let a = self.attached(name)?;
            p.push(FieldSpec::new(name, DType::F32, &[b, k, a.col.width()]));
        }
        if h > 0 {
            self.push_window_context(&mut p, b, kh);
        }
        if let Some(pr) = &spec.prompt {
            let kp = pr.length;
            if kp == 0 {
                bail!("prompt length must be >= 1");
            }
            if matches!(pr.strategy, Strategy::Argmax | Strategy::Proportional)
                && self.num_steps().saturating_mul(16) > crate::store::physical_memory() / 4 {
                // choosing a start scores every candidate start of the prompt episode
                let longest = self.ep_len.iter().copied().max().unwrap_or(0);
                check_alloc(longest.saturating_mul(16), "scoring the prompt starts of the longest episode")?;
            }
            if let Some(s) = &pr.score {
                let a = self.attached(s)?;
                if !a.nonneg {
                    bail!("prompt score column {s:?} has negative values (scores must be >= 0 and finite)");
                }
            }
            if pr.pool.is_some() {
                self.prompt_pools(spec, pr)?;
            }
            p.push(FieldSpec::new("prompt_obs", DType::F32, &[b, kp, od]));
            p.push(FieldSpec::new("prompt_actions", DType::F32, &[b, kp, ad]));
            p.push(FieldSpec::new("prompt_rewards", DType::F32, &[b, kp]));
            p.push(FieldSpec::new("prompt_rtg", DType::F32, &[b, kp]));
            p.push(FieldSpec::new("prompt_timesteps", DType::I64, &[b, kp]));
            p.push(FieldSpec::new("prompt_mask", DType::Bool, &[b, kp]));
            p.push(FieldSpec::new("prompt_episodes", DType::I64, &[b]));
            p.push(FieldSpec::new("prompt_starts", DType::I64, &[b]));
        }
        check_plan(&p)?;
        Ok(p)
    }

    /// Fill a planned window batch.
    ///
    /// # Safety
    /// `outs` must point to writable arrays of the plan's sizes, in plan order,
    /// and `spec` must have been validated by [`Store::plan_windows`].
    pub unsafe fn fill_windows(&self, spec: &WindowSpec, seed: u64, outs: &[RawOut]) {
        let dom = self.domain(&spec.tasks, false);
        let (k, h, od, ad) = (spec.length, spec.context, self.obs_dim, self.act_dim);
        let scale = spec.return_scale;
        let hd = self.head;
        let (obs, act, rew, rtg) = (self.obs.raw(), self.actions.raw(), self.rewards.raw(), self.rtg.raw());
        let cols: Vec<(&[f32], usize)> = spec.columns.iter()
            .map(|n| {
                let a = self.attached(n).expect("validated");
                (a.col.raw(), a.col.width())
            }).collect();
        let nc = cols.len();
        let prompt = spec.prompt.as_ref().map(|p| {
            let pools = p.pool.as_ref().map(|_| self.prompt_pools(spec, p).expect("validated"));
            let score = p.score.as_ref().map(|s| {
                let a = self.attached(s).expect("validated");
                (&a.col.raw()[hd * a.col.width()..], a.col.width())
            });
            let cache = match (&p.score, p.strategy) {
                (Some(s), Strategy::Argmax) => Some(self.argmax_starts(s, p.length, p.start_min)),
                _ => None,
            };
            (p, pools, score, cache)
        });
        let per_sample = 4 * k * (od + ad + 2) + 9 * k + 16
            + cols.iter().map(|c| 4 * k * c.1).sum::<usize>()
            + if h > 0 { (k + h) * (4 * (od + ad + 1) + 1) } else { 0 }
            + spec.prompt.as_ref().map_or(0, |p| p.length * (4 * (od + ad + 2) + 9) + 16);
        let o = outs.to_vec();
        let anchor = spec.anchor;
        // a sample's real steps [t0, end] of episode e (1 <= end - t0 + 1 <= k)
        let draw = |b: usize| {
            let mut rng = Rng::for_sample(seed, b);
            let r = rng.below(dom.total as u64) as usize;
            let (slot, step) = dom.locate(r);
            let e = dom.closed(slot);
            let (t0, end) = match anchor {
                Anchor::End => (step + 1 - k.min(step + 1), step),
                Anchor::Start => (step, (step + k).min(self.ep_len[e]) - 1),
            };
            (rng, e, t0, end)
        };
        let pre = |&(_, e, t0, end): &(Rng, usize, usize, usize), near: bool| {
            let off = hd + self.ep_off[e];
            let r0 = off + t0.saturating_sub(h);
            let r1 = off + end + 1;
            prefetch(&obs[r0 * od..r1 * od], near);
            prefetch(&act[r0 * ad..r1 * ad], near);
            prefetch(&rew[r0..r1], near);
            let r0 = off + t0;
            prefetch(&rtg[r0..r1], near);
            for &(data, w) in &cols {
                prefetch(&data[r0 * w..r1 * w], near);
            }
        };
        run(spec.batch, spec.batch * per_sample, draw, pre, |b, (mut rng, e, t0, end)| {
            let off = hd + self.ep_off[e];
            // main window: real steps [t0, end], right-aligned, left-padded
            let n = end + 1 - t0;
            let pad = k - n;
            let (r0, r1) = (off + t0, off + end + 1);
            self.write_segment(&o[..6], b, k, r0, n, t0, scale);
            *o[6].i64().add(b) = self.ep_task[e];
            *o[7].i64().add(b) = e as i64;
            for (c, &(data, w)) in cols.iter().enumerate() {
                let p = o[8 + c].f32().add(b * k * w);
                fill(p, pad * w, 0.0);
                put(p.add(pad * w), &data[r0 * w..r1 * w]);
            }
            let mut next = 8 + nc;
            if h > 0 {
                // the h steps before the window's first real step, then its real steps
                let l = k + h;
                let c0 = t0.saturating_sub(h);
                let n = end + 1 - c0;
                let pad = l - n;
                let r0 = off + c0;
                let p = o[next].f32().add(b * l * od);
                fill(p, pad * od, 0.0);
                put(p.add(pad * od), &obs[r0 * od..r1 * od]);
                let p = o[next + 1].f32().add(b * l * ad);
                fill(p, pad * ad, 0.0);
                put(p.add(pad * ad), &act[r0 * ad..r1 * ad]);
                let p = o[next + 2].f32().add(b * l);
                fill(p, pad, 0.0);
                put(p.add(pad), &rew[r0..r1]);
                mask(o[next + 3].0.add(b * l), pad, n);
                next += 4;
            }
            if let Some((ps, pools, score, cache)) = &prompt {
                let kp = ps.length;
                let pool = match pools {
                    Some(m) => m[&self.ep_task[e]].as_slice(),
                    None => self.episodes_of_task(self.ep_task[e]),
                };
                let pe = pool[rng.below(pool.len() as u64) as usize];
                let tl = self.ep_len[pe];
                let sc = score.map(|(d, w)| (&d[self.ep_off[pe] * w..(self.ep_off[pe] + tl) * w], w));
                let start = if tl < kp {
                    0
                } else if let Some(c) = cache {
                    let v = c[pe].load(Ordering::Relaxed);
                    if v != NOT_COMPUTED {
                        v as usize
                    } else {
                        let s = choose_start(tl, kp, ps.start_min, ps.strategy, sc, &mut rng);
                        // a start beyond u32 (an episode of over 4G steps) is not cached:
                        // recomputed every time rather than truncated
                        if let Ok(v) = u32::try_from(s) {
                            if v != NOT_COMPUTED {
                                c[pe].store(v, Ordering::Relaxed);
                            }
                        }
                        s
                    }
                } else {
                    choose_start(tl, kp, ps.start_min, ps.strategy, sc, &mut rng)
                };
                self.write_prompt(&o[next..next + 8], b, kp, pe, start, scale);
            }
        });
    }

    /// Sample Decision-Transformer windows (see the crate docs for the layout).
    ///
    /// Each sample draws one step uniformly over the steps of the requested
    /// tasks' complete episodes; `spec.anchor` says whether it is the window's
    /// last step ([`Anchor::End`]) or its first ([`Anchor::Start`]). Either way
    /// the window's real steps are right-aligned and the rest is left padding;
    /// the context covers the h steps before the first real step (clipped at
    /// the episode start) and the real steps, right-aligned in `K + h` slots.
    pub fn sample_windows(&self, spec: &WindowSpec, seed: Option<u64>) -> Result<Batch> {
        let plan = self.plan_windows(spec)?;
        let seed = seed.unwrap_or_else(|| self.next_call_seed());
        let (batch, outs) = Batch::alloc(plan)?;
        // SAFETY: outs point into `batch`, allocated from the validated plan.
        unsafe { self.fill_windows(spec, seed, &outs) };
        Ok(batch)
    }
}

/// Row `b` of a transition batch (the layout of [`Store::plan_transitions`]):
/// step `t` of the episode `v`, with its `h` transitions strictly before it,
/// oldest first, zero left-padded (`ctx_mask` False).
///
/// # Safety
/// `o` points to the arrays of a transition plan with more than `b` rows.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn write_transition(o: &[RawOut], b: usize, v: &EpView<'_>, t: usize, h: usize, od: usize, ad: usize,
                           task: i64, ep: i64) {
    put(o[0].f32().add(b * od), &v.obs[t * od..(t + 1) * od]);
    put(o[1].f32().add(b * ad), &v.act[t * ad..(t + 1) * ad]);
    *o[2].f32().add(b) = v.rew[t];
    put(o[3].f32().add(b * od), &v.next_obs[t * od..(t + 1) * od]);
    *o[4].f32().add(b) = v.term[t];
    *o[5].i64().add(b) = task;
    *o[6].i64().add(b) = ep;
    *o[7].i64().add(b) = t as i64;
    if h > 0 {
        let pad = h.saturating_sub(t);
        let n = h - pad;
        let t0 = t - n;
        let co = o[8].f32().add(b * h * od);
        fill(co, pad * od, 0.0);
        put(co.add(pad * od), &v.obs[t0 * od..t * od]);
        let ca = o[9].f32().add(b * h * ad);
        fill(ca, pad * ad, 0.0);
        put(ca.add(pad * ad), &v.act[t0 * ad..t * ad]);
        let cr = o[10].f32().add(b * h);
        fill(cr, pad, 0.0);
        put(cr.add(pad), &v.rew[t0..t]);
        mask(o[11].0.add(b * h), pad, n);
    }
}

// ---------------------------------------------------------------- sequential steps

/// A request for given steps of the closed episodes, in order (the sequential
/// pass over a store: [`Store::gather_steps`]).
#[derive(Clone, Debug)]
pub struct StepsSpec {
    /// Global step indices: row `n` of every column (`episode_offsets()[e] + t`).
    pub steps: std::sync::Arc<Vec<usize>>,
    /// First and end (exclusive) position in `steps` of this batch.
    pub range: (usize, usize),
    pub context: usize,
}

// ---------------------------------------------------------------- live windows

/// A request for the policy input of live episodes (one window per stream,
/// ending at the stream's current step): [`Store::live_windows`].
#[derive(Clone, Debug)]
pub struct LiveSpec {
    /// Stream ids (the `stream` of `add_step`); a stream without an open episode is at step 0.
    pub streams: Vec<i64>,
    /// Task id of every stream.
    pub tasks: Vec<i64>,
    /// The current observation of every stream, [N * obs_dim].
    pub obs: Vec<f32>,
    /// The target return of every stream at step 0 (raw, not scaled).
    pub targets: Vec<f64>,
    pub length: usize,
    pub context: usize,
    pub return_scale: f32,
}

/// A request for given prompt segments of closed episodes: [`Store::prompt_segments`].
#[derive(Clone, Debug)]
pub struct SegmentSpec {
    pub episodes: Vec<usize>,
    pub starts: Vec<usize>,
    pub length: usize,
    pub return_scale: f32,
}

fn check_scale(scale: f32) -> Result<()> {
    if !(scale.is_finite() && scale > 0.0) {
        bail!("return_scale must be a finite number > 0 (got {scale:?})");
    }
    Ok(())
}

fn prompt_fields(p: &mut Vec<FieldSpec>, b: usize, kp: usize, od: usize, ad: usize) {
    p.push(FieldSpec::new("prompt_obs", DType::F32, &[b, kp, od]));
    p.push(FieldSpec::new("prompt_actions", DType::F32, &[b, kp, ad]));
    p.push(FieldSpec::new("prompt_rewards", DType::F32, &[b, kp]));
    p.push(FieldSpec::new("prompt_rtg", DType::F32, &[b, kp]));
    p.push(FieldSpec::new("prompt_timesteps", DType::I64, &[b, kp]));
    p.push(FieldSpec::new("prompt_mask", DType::Bool, &[b, kp]));
    p.push(FieldSpec::new("prompt_episodes", DType::I64, &[b]));
    p.push(FieldSpec::new("prompt_starts", DType::I64, &[b]));
}

impl Store {
    /// Row `b` of the `prompt_*` arrays (`o` = the 8 prompt outputs in plan
    /// order): the length-`kp` segment of closed episode `pe` from `start`,
    /// or, when the episode is shorter than `kp` (then `start` is 0), the whole
    /// episode left-padded (the short-episode rule, [`segment_starts`]).
    ///
    /// # Safety
    /// `o` points to prompt arrays with more than `b` rows; `start` is a valid
    /// start of [`segment_starts`] for episode `pe` (or 0 when it is shorter than `kp`).
    #[inline]
    pub(crate) unsafe fn write_prompt(&self, o: &[RawOut], b: usize, kp: usize, pe: usize, start: usize, scale: f32) {
        let n = kp.min(self.ep_len[pe]);
        self.write_segment(&o[..6], b, kp, self.head + self.ep_off[pe] + start, n, start, scale);
        *o[6].i64().add(b) = pe as i64;
        *o[7].i64().add(b) = start as i64;
    }

    /// Row `b` of a left-padded segment of length `len`: the `n <= len` store rows
    /// `[r0, r0 + n)` (absolute), episode steps `t0..t0 + n`, into `o[0..6]` = obs,
    /// actions (padding [`ACTION_PAD`]), rewards, rtg / `scale` ([`scaled_rtg`]),
    /// timesteps (padding 0) and mask (0 on padding): the one writer of the
    /// window and prompt layouts.
    ///
    /// # Safety
    /// `o[0..6]` point to arrays with more than `b` rows of `len` steps; the rows exist.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn write_segment(&self, o: &[RawOut], b: usize, len: usize, r0: usize, n: usize, t0: usize, scale: f32) {
        let (od, ad) = (self.obs_dim, self.act_dim);
        let (obs, act, rew, rtg) = (self.obs.raw(), self.actions.raw(), self.rewards.raw(), self.rtg.raw());
        let pad = len - n;
        let r1 = r0 + n;
        let p = o[0].f32().add(b * len * od);
        fill(p, pad * od, 0.0);
        put(p.add(pad * od), &obs[r0 * od..r1 * od]);
        let p = o[1].f32().add(b * len * ad);
        fill(p, pad * ad, ACTION_PAD);
        put(p.add(pad * ad), &act[r0 * ad..r1 * ad]);
        let p = o[2].f32().add(b * len);
        fill(p, pad, 0.0);
        put(p.add(pad), &rew[r0..r1]);
        let p = o[3].f32().add(b * len);
        fill(p, pad, 0.0);
        for (i, &x) in rtg[r0..r1].iter().enumerate() {
            *p.add(pad + i) = scaled_rtg(x, scale);
        }
        let p = o[4].i64().add(b * len);
        for i in 0..pad {
            *p.add(i) = 0;
        }
        for i in 0..n {
            *p.add(pad + i) = (t0 + i) as i64;
        }
        mask(o[5].0.add(b * len), pad, n);
    }

    // ------------------------------------------------------------ sequential steps

    /// Fields of a [`StepsSpec`] batch (the transition layout), validating every step index.
    pub fn plan_steps(&self, spec: &StepsSpec) -> Result<Vec<FieldSpec>> {
        let (lo, hi) = spec.range;
        if lo > hi || hi > spec.steps.len() {
            bail!("step range {lo}..{hi} is outside the {} requested steps", spec.steps.len());
        }
        let n = self.num_steps();
        if let Some(&bad) = spec.steps[lo..hi].iter().find(|&&x| x >= n) {
            bail!("step {bad} out of range (the store has {n} steps in complete episodes)");
        }
        let b = hi - lo;
        let mut p = self.transition_fields(b, spec.context);
        p.push(FieldSpec::new("steps", DType::I64, &[b]));
        check_plan(&p)?;
        Ok(p)
    }

    /// Fill a planned [`StepsSpec`] batch.
    ///
    /// # Safety
    /// `outs` must point to writable arrays of the plan's sizes, in plan order,
    /// and `spec` must have been validated by [`Store::plan_steps`].
    pub unsafe fn fill_steps(&self, spec: &StepsSpec, outs: &[RawOut]) {
        let (lo, hi) = spec.range;
        let (h, od, ad) = (spec.context, self.obs_dim, self.act_dim);
        let steps = &spec.steps[lo..hi];
        let bytes = steps.len() * (4 * (2 * od + ad + 2) + 32 + h * (4 * (od + ad + 1) + 1));
        let o = outs.to_vec();
        let last = o.len() - 1;
        let locate = |b: usize| {
            let n = steps[b];
            let e = self.ep_off.partition_point(|&c| c <= n) - 1;
            (e, n - self.ep_off[e])
        };
        let pre = |&(e, t): &(usize, usize), near: bool| {
            let v = self.closed_view(e);
            let t0 = t.saturating_sub(h);
            prefetch(&v.obs[t0 * od..(t + 1) * od], near);
            prefetch(&v.act[t0 * ad..(t + 1) * ad], near);
        };
        run(steps.len(), bytes, locate, pre, |b, (e, t)| {
            write_transition(&o, b, &self.closed_view(e), t, h, od, ad, self.ep_task[e], e as i64);
            *o[last].i64().add(b) = steps[b] as i64;
        });
    }

    /// The given steps of the closed episodes (global indices: row `n` of
    /// every column), in order, each with its `context` transitions strictly
    /// before it in its episode, in the [`Store::sample_transitions`] layout
    /// (plus `steps`, the global indices). The sequential pass over a store
    /// (z and world-model errors of every step) is this, in chunks.
    pub fn gather_steps(&self, steps: &[usize], context: usize) -> Result<Batch> {
        let spec = StepsSpec { steps: std::sync::Arc::new(steps.to_vec()), range: (0, steps.len()), context };
        let plan = self.plan_steps(&spec)?;
        let (batch, outs) = Batch::alloc(plan)?;
        // SAFETY: outs point into `batch`, allocated from the validated plan.
        unsafe { self.fill_steps(&spec, &outs) };
        Ok(batch)
    }

    // ------------------------------------------------------------ prompt segments

    /// Fields of a [`SegmentSpec`] batch (the `prompt_*` keys), validating every segment.
    pub fn plan_segments(&self, spec: &SegmentSpec) -> Result<Vec<FieldSpec>> {
        check_scale(spec.return_scale)?;
        let (b, kp) = (spec.episodes.len(), spec.length);
        if kp == 0 {
            bail!("prompt length must be >= 1");
        }
        if b == 0 {
            bail!("no segment requested (episodes is empty)");
        }
        if spec.starts.len() != b {
            bail!("episodes and starts must have the same length (got {b} and {})", spec.starts.len());
        }
        for (&e, &st) in spec.episodes.iter().zip(&spec.starts) {
            if e >= self.num_episodes() {
                bail!("episode {e} out of range (the store has {} complete episodes)", self.num_episodes());
            }
            let tl = self.ep_len[e];
            match segment_starts(tl, kp, 0) {
                Some((_, hi)) if st > hi => bail!("segment start {st} of episode {e} ({tl} steps) leaves fewer than {kp} steps \
                                                   (largest start: {hi})"),
                None if st != 0 => bail!("episode {e} has {tl} < {kp} steps: its segment is the whole episode, start 0 \
                                          (got {st})"),
                _ => {}
            }
        }
        if spec.return_scale < 1.0 {
            let m = self.max_abs_rtg();
            if !(m / spec.return_scale).is_finite() {
                bail!("return_scale {:?} is too small: the largest |return-to-go| ({m:?}) divided by it overflows float32",
                      spec.return_scale);
            }
        }
        let mut p = Vec::with_capacity(8);
        prompt_fields(&mut p, b, kp, self.obs_dim, self.act_dim);
        check_plan(&p)?;
        Ok(p)
    }

    /// Fill a planned [`SegmentSpec`] batch.
    ///
    /// # Safety
    /// As [`Store::fill_windows`], with a spec validated by [`Store::plan_segments`].
    pub unsafe fn fill_segments(&self, spec: &SegmentSpec, outs: &[RawOut]) {
        for (b, (&e, &st)) in spec.episodes.iter().zip(&spec.starts).enumerate() {
            self.write_prompt(outs, b, spec.length, e, st, spec.return_scale);
        }
    }

    /// Prompts from given segments: segment i is `length` steps of closed
    /// episode `episodes[i]` from `starts[i]` (an episode shorter than
    /// `length` is used whole, start 0, left-padded), in the `prompt_*`
    /// layout of [`Store::sample_windows`] — the same values a sampled prompt
    /// of that segment has.
    pub fn prompt_segments(&self, spec: &SegmentSpec) -> Result<Batch> {
        let plan = self.plan_segments(spec)?;
        let (batch, outs) = Batch::alloc(plan)?;
        // SAFETY: outs point into `batch`, allocated from the validated plan.
        unsafe { self.fill_segments(spec, &outs) };
        Ok(batch)
    }

    // ------------------------------------------------------------ live windows

    /// Running returns-to-go of a live stream at steps `t0 .. t0 + n` (target
    /// minus the rewards of the steps before, subtracted in f64 one by one), as
    /// float32 (the precision of the stored `rtg` column), not yet scaled.
    fn live_rtgs(target: f64, rewards: &[f32], t0: usize, n: usize) -> impl Iterator<Item = f32> + '_ {
        let mut acc = target;
        for &r in &rewards[..t0] {
            acc -= r as f64;
        }
        (t0..t0 + n).map(move |s| {
            let x = acc as f32;
            if let Some(&r) = rewards.get(s) {
                acc -= r as f64;
            }
            x
        })
    }

    /// Fields of a [`LiveSpec`] batch (the [`Store::sample_windows`] layout
    /// without prompt), validating the request.
    pub fn plan_live(&self, spec: &LiveSpec) -> Result<Vec<FieldSpec>> {
        let n = spec.streams.len();
        let (k, h, od) = (spec.length, spec.context, self.obs_dim);
        if n == 0 {
            bail!("streams is empty: ask for at least one live stream");
        }
        if k == 0 {
            bail!("length (K) must be >= 1");
        }
        check_scale(spec.return_scale)?;
        if spec.tasks.len() != n || spec.targets.len() != n {
            bail!("streams, tasks and targets must have one entry per stream (got {n}, {}, {})",
                  spec.tasks.len(), spec.targets.len());
        }
        if n.checked_mul(od) != Some(spec.obs.len()) {
            bail!("obs must be [{n}, {od}] (one observation per stream), got {} values", spec.obs.len());
        }
        if let Some(x) = spec.obs.iter().find(|x| !x.is_finite()) {
            bail!("obs holds a non-finite value ({x})");
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, &st) in spec.streams.iter().enumerate() {
            if !seen.insert(st) {
                bail!("stream {st} is asked for twice");
            }
            let target = spec.targets[i];
            if !target.is_finite() {
                bail!("target return of stream {st} is not finite ({target})");
            }
            if let Some(e) = self.open.get(&st) {
                if e.task != spec.tasks[i] {
                    bail!("stream {st} has an open episode of task {} but tasks[{i}] is {}", e.task, spec.tasks[i]);
                }
                // every rtg of the window must stay finite in float32 once scaled
                let t = e.len();
                let t0 = t.saturating_sub(k - 1);
                for (s, x) in (t0..).zip(Self::live_rtgs(target, &e.rewards, t0, t + 1 - t0)) {
                    if !scaled_rtg(x, spec.return_scale).is_finite() {
                        bail!("the return-to-go of stream {st} at step {s} ({x}) divided by return_scale {:?} \
                               is not finite in float32", spec.return_scale);
                    }
                }
            } else if !scaled_rtg(target as f32, spec.return_scale).is_finite() {
                bail!("target return {target} of stream {st} divided by return_scale {:?} is not finite in float32",
                      spec.return_scale);
            }
        }
        let kh = k.checked_add(h)
            .ok_or_else(|| Error::invalid(format!("length + context overflows ({k} + {h})")))?;
        let mut p = self.window_fields(n, k);
        if h > 0 {
            self.push_window_context(&mut p, n, kh);
        }
        check_plan(&p)?;
        Ok(p)
    }

    /// Fill a planned [`LiveSpec`] batch.
    ///
    /// # Safety
    /// As [`Store::fill_windows`], with a spec validated by [`Store::plan_live`].
    pub unsafe fn fill_live(&self, spec: &LiveSpec, outs: &[RawOut]) {
        let (k, h, od, ad) = (spec.length, spec.context, self.obs_dim, self.act_dim);
        let o = outs;
        let empty = OpenEpisode::default();
        for (b, &st) in spec.streams.iter().enumerate() {
            let e = self.open.get(&st).unwrap_or(&empty);
            let t = e.len(); // the current step: its obs is given, its action and reward are not known yet
            let n = k.min(t + 1);
            let pad = k - n;
            let t0 = t + 1 - n;
            // window: steps [t0, t]; the recorded ones are [t0, t)
            let p = o[0].f32().add(b * k * od);
            fill(p, pad * od, 0.0);
            put(p.add(pad * od), &e.obs[t0 * od..t * od]);
            put(p.add((k - 1) * od), &spec.obs[b * od..(b + 1) * od]);
            let p = o[1].f32().add(b * k * ad);
            fill(p, pad * ad, ACTION_PAD);
            put(p.add(pad * ad), &e.actions[t0 * ad..t * ad]);
            fill(p.add((k - 1) * ad), ad, 0.0);
            let p = o[2].f32().add(b * k);
            fill(p, pad, 0.0);
            put(p.add(pad), &e.rewards[t0..t]);
            *p.add(k - 1) = 0.0;
            let p = o[3].f32().add(b * k);
            fill(p, pad, 0.0);
            for (i, x) in Self::live_rtgs(spec.targets[b], &e.rewards, t0, n).enumerate() {
                *p.add(pad + i) = scaled_rtg(x, spec.return_scale);
            }
            let p = o[4].i64().add(b * k);
            for i in 0..pad {
                *p.add(i) = 0;
            }
            for i in 0..n {
                *p.add(pad + i) = (t0 + i) as i64;
            }
            mask(o[5].0.add(b * k), pad, n);
            *o[6].i64().add(b) = spec.tasks[b];
            *o[7].i64().add(b) = -1;
            if h > 0 {
                // steps [t + 1 - (k + h), t]: the recorded ones right-aligned before step t,
                // which is masked (its action and reward are unknown; no position's context uses it)
                let l = k + h;
                let m = t.min(l - 1);
                let c0 = t - m;
                let pad = l - 1 - m;
                let p = o[8].f32().add(b * l * od);
                fill(p, pad * od, 0.0);
                put(p.add(pad * od), &e.obs[c0 * od..t * od]);
                fill(p.add((l - 1) * od), od, 0.0);
                let p = o[9].f32().add(b * l * ad);
                fill(p, pad * ad, 0.0);
                put(p.add(pad * ad), &e.actions[c0 * ad..t * ad]);
                fill(p.add((l - 1) * ad), ad, 0.0);
                let p = o[10].f32().add(b * l);
                fill(p, pad, 0.0);
                put(p.add(pad), &e.rewards[c0..t]);
                *p.add(l - 1) = 0.0;
                mask(o[11].0.add(b * l), pad, m);
                *o[11].0.add(b * l + l - 1) = 0;
            }
        }
    }

    /// The policy input of live episodes, exactly as [`Store::sample_windows`]
    /// lays out a window ending at the current step (`anchor = End`): for every
    /// stream, the window of `length` K ending at its current step t (the
    /// number of transitions its open episode holds; 0 without one), whose
    /// observation is `spec.obs` and whose action and reward are not known yet
    /// (0, mask True); rtg = (target − the rewards received before each step)
    /// / return_scale; `tasks` = the stream's task, `episodes` = −1; with
    /// context h the `ctx_*` of steps [t−K−h+1, t] (step t itself masked).
    pub fn live_windows(&self, spec: &LiveSpec) -> Result<Batch> {
        let plan = self.plan_live(spec)?;
        let (batch, outs) = Batch::alloc(plan)?;
        // SAFETY: outs point into `batch`, allocated from the validated plan.
        unsafe { self.fill_live(spec, &outs) };
        Ok(batch)
    }
}
