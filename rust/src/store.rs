//! Columns, episodes, online mode (open episodes, capacity eviction).
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use memmap2::Mmap;

use crate::error::{bail, Error, Result};

/// The memory behind one column: owned, or a window of a memory-mapped file.
pub enum Buf {
    Owned(Vec<f32>),
    Mapped { map: Arc<Mmap>, off: usize, len: usize },
}

impl Buf {
    /// The elements (row-major, every row of the column including evicted ones
    /// not yet compacted away).
    #[inline]
    pub fn as_slice(&self) -> &[f32] {
        match self {
            Buf::Owned(v) => v,
            // SAFETY: `off` is 4-byte aligned and `off + 4*len <= map.len()`,
            // both checked when the file was mapped (format.rs); the map is
            // read-only and lives as long as this Buf.
            Buf::Mapped { map, off, len } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().add(*off) as *const f32, *len)
            },
        }
    }
}

/// A per-step float32 column of `width` values per step.
///
/// The buffer is reference counted: zero-copy views handed out (e.g. to NumPy)
/// keep the buffer they were taken from alive; a later mutation of the store
/// copies the column first if a view is still alive (copy-on-write), so views
/// are immutable snapshots. Memory-mapped columns are copied into owned memory
/// on their first mutation.
#[derive(Clone)]
pub struct Column {
    buf: Arc<Buf>,
    width: usize,
}

impl Column {
    pub fn new(width: usize) -> Self {
        Column { buf: Arc::new(Buf::Owned(Vec::new())), width }
    }
    pub(crate) fn from_vec(v: Vec<f32>, width: usize) -> Self {
        Column { buf: Arc::new(Buf::Owned(v)), width }
    }
    pub(crate) fn from_buf(buf: Buf, width: usize) -> Self {
        Column { buf: Arc::new(buf), width }
    }
    #[inline]
    pub fn width(&self) -> usize {
        self.width
    }
    /// All physical elements.
    #[inline]
    pub fn raw(&self) -> &[f32] {
        self.buf.as_slice()
    }
    /// The shared buffer (for zero-copy views).
    pub fn buffer(&self) -> Arc<Buf> {
        self.buf.clone()
    }
    pub fn is_mapped(&self) -> bool {
        matches!(*self.buf, Buf::Mapped { .. })
    }
    /// Heap bytes this column holds (0 for a memory-mapped one).
    pub fn owned_bytes(&self) -> usize {
        match &*self.buf {
            Buf::Owned(v) => v.capacity() * 4,
            Buf::Mapped { .. } => 0,
        }
    }
    /// Make the buffer owned and unique (copy-on-write; a failed allocation
    /// is an error and leaves the column as it was).
    fn make_owned(&mut self) -> Result<()> {
        let owned_unique = matches!(Arc::get_mut(&mut self.buf), Some(Buf::Owned(_)));
        if !owned_unique {
            let v = huge_copy(self.buf.as_slice())?;
            self.buf = Arc::new(Buf::Owned(v));
        }
        Ok(())
    }
    fn vec_mut(&mut self) -> Result<&mut Vec<f32>> {
        self.make_owned()?;
        match Arc::get_mut(&mut self.buf) {
            Some(Buf::Owned(v)) => Ok(v),
            _ => Err(Error::invalid("internal: column buffer is not unique after copy-on-write")),
        }
    }
    /// Make room for `extra` more elements (fallible: a failed allocation is
    /// an error and changes nothing), growing by at most 1/8 beyond what is
    /// needed (keeps memory close to the raw bytes). Large buffers are moved
    /// into fresh allocations backed by transparent huge pages where the OS
    /// allows it (random window gathers are TLB-bound otherwise).
    pub(crate) fn try_reserve(&mut self, extra: usize) -> Result<()> {
        let v = self.vec_mut()?;
        if v.capacity() - v.len() < extra {
            let grow = extra.max(v.len() / 8).max(1024);
            let cap = v.len().checked_add(grow).filter(|c| c.checked_mul(4).is_some())
                .ok_or_else(|| Error::Memory(format!("a column of {} + {extra} floats is too large", v.len())))?;
            check_alloc(cap.saturating_mul(4), "a column")?;
            if cap * 4 >= HUGE_MIN_BYTES {
                let mut nv = Vec::new();
                nv.try_reserve_exact(cap).map_err(|_| oom(cap * 4, "a column"))?;
                advise_huge(&nv);
                nv.extend_from_slice(v);
                *v = nv; // frees the old buffer
                release_freed_memory();
            } else {
                v.try_reserve_exact(grow).map_err(|_| oom(cap * 4, "a column"))?;
            }
        }
        Ok(())
    }
    pub(crate) fn extend(&mut self, src: &[f32]) -> Result<()> {
        self.try_reserve(src.len())?;
        self.vec_mut()?.extend_from_slice(src);
        Ok(())
    }
    pub(crate) fn extend_fill(&mut self, n: usize, val: f32) -> Result<()> {
        self.try_reserve(n)?;
        let v = self.vec_mut()?;
        v.resize(v.len() + n, val);
        Ok(())
    }
    /// Drop the first `elems` elements (the column must be owned, see `make_owned`).
    fn drain_front(&mut self, elems: usize) {
        if elems > 0 {
            if let Some(Buf::Owned(v)) = Arc::get_mut(&mut self.buf) {
                v.drain(..elems);
            }
        }
    }
    fn shrink(&mut self) {
        if let Some(Buf::Owned(v)) = Arc::get_mut(&mut self.buf) {
            if v.capacity() != v.len() {
                // keep the spare capacity if the smaller copy cannot be allocated
                if let Ok(nv) = huge_copy(v) {
                    *v = nv;
                }
            }
        }
    }
}

/// Total physical memory of this machine in bytes (`usize::MAX` if unknown).
pub fn physical_memory() -> usize {
    static PHYS: AtomicU64 = AtomicU64::new(0);
    let cached = PHYS.load(Ordering::Relaxed);
    if cached != 0 {
        return cached as usize;
    }
    let v = physical_memory_now();
    PHYS.store(v as u64, Ordering::Relaxed);
    v
}

fn physical_memory_now() -> usize {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads system configuration.
        let (pages, size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
        if pages > 0 && size > 0 {
            return (pages as usize).saturating_mul(size as usize);
        }
    }
    usize::MAX
}

fn oom(bytes: usize, what: &str) -> Error {
    Error::Memory(format!("out of memory allocating {what} of {bytes} bytes"))
}

/// Memory available to new allocations now (Linux `MemAvailable`), if known.
pub fn available_memory() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb.saturating_mul(1024))
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// Allocations above this size are also checked against the memory available now.
const CHECK_AVAILABLE_ABOVE: usize = 256 << 20;

/// Refuse an allocation of `bytes` larger than this machine's physical memory,
/// or (above 256 MiB) than the memory available now: it could only fail, or
/// succeed through overcommit and get the process killed when touched.
pub(crate) fn check_alloc(bytes: usize, what: &str) -> Result<()> {
    let phys = physical_memory();
    if bytes > phys {
        return Err(Error::Memory(format!(
            "{what} would need {bytes} bytes, more than this machine's memory ({phys} bytes)")));
    }
    if bytes > CHECK_AVAILABLE_ABOVE {
        if let Some(avail) = available_memory() {
            if bytes > avail {
                return Err(Error::Memory(format!(
                    "{what} would need {bytes} bytes, more than the memory available now ({avail} bytes)")));
            }
        }
    }
    Ok(())
}

/// A vector of `n` elements of `val`, or an error if it cannot be allocated.
pub(crate) fn try_filled<T: Clone>(n: usize, val: T, what: &str) -> Result<Vec<T>> {
    let bytes = n.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| oom(usize::MAX, what))?;
    check_alloc(bytes, what)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| oom(bytes, what))?;
    v.resize(n, val);
    Ok(v)
}

/// Buffers at least this large ask for transparent huge pages.
const HUGE_MIN_BYTES: usize = 8 << 20;

/// Ask the OS to back the (not yet touched) capacity of `v` with huge pages.
pub(crate) fn advise_huge(v: &Vec<f32>) {
    #[cfg(target_os = "linux")]
    {
        let start = v.as_ptr() as usize;
        let end = start + v.capacity() * 4;
        let huge = 2usize << 20;
        let a = start.div_ceil(huge) * huge;
        let b = end / huge * huge;
        if b > a {
            // SAFETY: advisory only, on pages of our own allocation.
            unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// Return freed heap pages to the OS (glibc keeps freed buffers of a few MB
/// resident otherwise, which would show as memory well above the raw columns).
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// An empty vector with capacity `n`, huge-page backed when large (an error
/// if it is larger than the machine's memory or cannot be allocated).
pub(crate) fn huge_vec(n: usize) -> Result<Vec<f32>> {
    let bytes = n.checked_mul(4).ok_or_else(|| oom(usize::MAX, "a column"))?;
    check_alloc(bytes, "a column")?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| oom(bytes, "a column"))?;
    if bytes >= HUGE_MIN_BYTES {
        advise_huge(&v);
    }
    Ok(v)
}

/// A vector holding a copy of `src`, huge-page backed when large.
pub(crate) fn huge_copy(src: &[f32]) -> Result<Vec<f32>> {
    let mut v = huge_vec(src.len())?;
    v.extend_from_slice(src);
    Ok(v)
}

/// An attached (user) column.
#[derive(Clone)]
pub struct Attached {
    pub name: String,
    pub col: Column,
    /// Every value is >= 0 (so the column can score prompt segments).
    pub nonneg: bool,
}

/// An episode still being written by `add_step`.
#[derive(Clone, Default)]
pub struct OpenEpisode {
    pub task: i64,
    pub obs: Vec<f32>,
    pub actions: Vec<f32>,
    pub rewards: Vec<f32>,
    pub next_obs: Vec<f32>,
    pub terminals: Vec<f32>,
    pub truncations: Vec<f32>,
}

impl OpenEpisode {
    pub fn len(&self) -> usize {
        self.rewards.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }
}

/// Names used by the on-disk format for the episode tables (not usable as column names).
pub const RESERVED: [&str; 4] = ["episode_offsets", "episode_lengths", "episode_tasks", "episode_returns"];

/// Keys of sampled batches other than the built-in columns (not usable as column names:
/// `sample_windows(columns=[name])` returns each column under its own name).
pub const BATCH_KEYS: [&str; 4] = ["tasks", "episodes", "timesteps", "mask"];

/// Prefixes of batch keys (`ctx_obs`, `prompt_mask`, ...; not usable as column names).
pub const BATCH_PREFIXES: [&str; 2] = ["ctx_", "prompt_"];

/// Largest `obs_dim`, `act_dim` and attached-column width (floats per step).
pub const MAX_WIDTH: usize = 1 << 24;

/// Longest column name (bytes; the file `columns/<name>.npy` must fit a file name).
pub const MAX_NAME_LEN: usize = 200;

/// The rule for attached-column names, applied by `attach_column` and to
/// every name read from a manifest: 1 to 200 ASCII letters, digits, `_ - .`,
/// not starting with `_` or `.`, no `..`, not a built-in column, episode
/// table or batch key, not starting with `ctx_` or `prompt_`.
pub fn check_column_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
        bail!("invalid column name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, '_', '-', '.'");
    }
    if name.starts_with('_') || name.starts_with('.') || name.contains("..") {
        bail!("invalid column name {name:?}: must not start with '_' or '.' nor contain '..'");
    }
    if BUILTIN.contains(&name) || RESERVED.contains(&name) || BATCH_KEYS.contains(&name)
        || BATCH_PREFIXES.iter().any(|p| name.starts_with(p)) {
        bail!("invalid column name {name:?}: reserved (built-in columns {BUILTIN:?}, episode tables {RESERVED:?}, \
               batch keys {BATCH_KEYS:?} and names starting with {BATCH_PREFIXES:?} are taken)");
    }
    Ok(())
}

/// Names of the built-in columns, in on-disk order.
pub const BUILTIN: [&str; 7] = ["obs", "actions", "rewards", "next_obs", "terminals", "truncations", "rtg"];

/// Episodes of transitions in columns: the trajectory store.
///
/// Steps of an episode are contiguous rows of every column; episode `i`
/// covers rows `episode_offsets()[i] .. + episode_lengths()[i]`.
pub struct Store {
    pub(crate) obs_dim: usize,
    pub(crate) act_dim: usize,
    pub(crate) capacity: Option<usize>,
    pub(crate) obs: Column,
    pub(crate) actions: Column,
    pub(crate) rewards: Column,
    pub(crate) next_obs: Column,
    pub(crate) terminals: Column,
    /// 1 where an episode was cut by a time limit (or closed without a
    /// terminal step), else 0: never the same as a termination.
    pub(crate) truncations: Column,
    pub(crate) rtg: Column,
    pub(crate) extra: Vec<Attached>,
    /// Evicted rows still at the front of every column (compacted lazily).
    pub(crate) head: usize,
    pub(crate) ep_off: Vec<usize>,
    pub(crate) ep_len: Vec<usize>,
    pub(crate) ep_task: Vec<i64>,
    pub(crate) ep_ret: Vec<f64>,
    pub(crate) task_eps: BTreeMap<i64, Vec<usize>>,
    pub(crate) open: BTreeMap<i64, OpenEpisode>,
    pub(crate) num_evicted: u64,
    pub(crate) metadata: String,
    rng: AtomicU64,
    /// Bumped by every mutation (invalidates `argmax_cache`).
    pub(crate) version: u64,
    /// Per-episode argmax prompt starts, filled lazily: (score column, k, start_min, version, starts).
    pub(crate) argmax_cache: Mutex<Vec<ArgmaxEntry>>,
    /// Step -> episode lookup table (rebuilt lazily when `version` changes).
    pub(crate) step_index: Mutex<Option<Arc<StepIndex>>>,
    /// Largest |rtg| of the closed episodes at a store version (computed lazily).
    pub(crate) max_abs_rtg: Mutex<Option<(u64, f32)>>,
}

/// Maps a step row to its episode in O(1): `table[row >> shift]` is the
/// episode holding row `row & !(2^shift - 1)`; a short forward scan finishes.
pub(crate) struct StepIndex {
    pub version: u64,
    pub shift: u32,
    pub table: Vec<u32>,
}

/// Cached argmax prompt starts of one (score column, k, start_min) at one store version.
pub(crate) struct ArgmaxEntry {
    pub key: (String, usize, usize, u64),
    pub starts: Arc<Vec<AtomicU32>>,
}

/// Marks an uncomputed entry of the argmax cache.
pub(crate) const NOT_COMPUTED: u32 = u32::MAX;

fn check_finite(name: &str, v: &[f32]) -> Result<()> {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        bail!("{name} contains a non-finite value ({}) at flat index {i}", v[i]);
    }
    Ok(())
}

impl Store {
    /// An empty store for observations of `obs_dim` and actions of `act_dim`
    /// floats. With `capacity`, the oldest whole episodes are evicted when
    /// the number of steps (closed plus open) exceeds it.
    pub fn new(obs_dim: usize, act_dim: usize, capacity: Option<usize>) -> Result<Self> {
        if obs_dim == 0 || act_dim == 0 || obs_dim > MAX_WIDTH || act_dim > MAX_WIDTH {
            bail!("obs_dim and act_dim must be in [1, {MAX_WIDTH}] (got {obs_dim}, {act_dim})");
        }
        if capacity == Some(0) {
            bail!("capacity must be >= 1 (or None for unbounded)");
        }
        Ok(Store {
            obs_dim,
            act_dim,
            capacity,
            obs: Column::new(obs_dim),
            actions: Column::new(act_dim),
            rewards: Column::new(1),
            next_obs: Column::new(obs_dim),
            terminals: Column::new(1),
            truncations: Column::new(1),
            rtg: Column::new(1),
            extra: Vec::new(),
            head: 0,
            ep_off: Vec::new(),
            ep_len: Vec::new(),
            ep_task: Vec::new(),
            ep_ret: Vec::new(),
            task_eps: BTreeMap::new(),
            open: BTreeMap::new(),
            num_evicted: 0,
            metadata: "{}".to_string(),
            rng: AtomicU64::new(0x853C_49E6_748F_EA9B),
            version: 0,
            argmax_cache: Mutex::new(Vec::new()),
            step_index: Mutex::new(None),
            max_abs_rtg: Mutex::new(None),
        })
    }

    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }
    pub fn act_dim(&self) -> usize {
        self.act_dim
    }
    pub fn capacity(&self) -> Option<usize> {
        self.capacity
    }
    /// Number of closed (complete) episodes.
    pub fn num_episodes(&self) -> usize {
        self.ep_len.len()
    }
    /// Number of steps in closed episodes (rows of every column).
    pub fn num_steps(&self) -> usize {
        match (self.ep_off.last(), self.ep_len.last()) {
            (Some(o), Some(l)) => o + l,
            _ => 0,
        }
    }
    /// Number of steps in episodes still open (`add_step` without `done`).
    pub fn num_open_steps(&self) -> usize {
        self.open.values().map(|e| e.len()).sum()
    }
    /// Number of episodes evicted so far (capacity): the episode now at index
    /// `i` was added as the `i + num_evicted()`-th episode.
    pub fn num_evicted(&self) -> u64 {
        self.num_evicted
    }
    /// The metadata JSON text saved in the manifest.
    pub fn metadata(&self) -> &str {
        &self.metadata
    }
    /// Set the metadata (must be a JSON object).
    pub fn set_metadata(&mut self, json: &str) -> Result<()> {
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(serde_json::Value::Object(_)) => {
                self.metadata = json.to_string();
                Ok(())
            }
            Ok(_) => bail!("metadata must be a JSON object (a dict)"),
            Err(e) => bail!("metadata is not valid JSON: {e}"),
        }
    }

    pub(crate) fn next_call_seed(&self) -> u64 {
        let s = self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        crate::rng::mix64(s)
    }
    /// Reseed the internal generator used when no seed is given.
    pub fn reseed(&self, seed: u64) {
        self.rng.store(crate::rng::mix64(seed), Ordering::Relaxed);
    }

    fn check_episode(&self, i: usize) -> Result<()> {
        if i >= self.num_episodes() {
            bail!("episode index {i} out of range (the store has {} episodes)", self.num_episodes());
        }
        Ok(())
    }
    pub fn episode_task(&self, i: usize) -> Result<i64> {
        self.check_episode(i)?;
        Ok(self.ep_task[i])
    }
    /// Episodes of task `t`, ascending (empty if the task has none).
    pub fn episodes_of_task(&self, t: i64) -> &[usize] {
        self.task_eps.get(&t).map(|v| v.as_slice()).unwrap_or(&[])
    }
    pub fn episode_returns(&self) -> &[f64] {
        &self.ep_ret
    }
    pub fn episode_lengths(&self) -> &[usize] {
        &self.ep_len
    }
    pub fn episode_offsets(&self) -> &[usize] {
        &self.ep_off
    }
    pub fn episode_tasks(&self) -> &[i64] {
        &self.ep_task
    }
    /// Sorted unique task ids of the closed episodes.
    pub fn tasks(&self) -> Vec<i64> {
        self.task_eps.keys().copied().collect()
    }
    /// Up to `n` episodes of `task`, by return descending (ties: lower index first).
    pub fn top_episodes(&self, task: i64, n: usize) -> Vec<usize> {
        let mut v = self.episodes_of_task(task).to_vec();
        v.sort_by(|&a, &b| self.ep_ret[b].total_cmp(&self.ep_ret[a]).then(a.cmp(&b)));
        v.truncate(n);
        v
    }

    /// A built-in or attached column by name: (column, rows are live from `head`).
    pub fn column_ref(&self, name: &str) -> Result<&Column> {
        Ok(match name {
            "obs" => &self.obs,
            "actions" => &self.actions,
            "rewards" => &self.rewards,
            "next_obs" => &self.next_obs,
            "terminals" => &self.terminals,
            "truncations" => &self.truncations,
            "rtg" => &self.rtg,
            _ => match self.extra.iter().find(|a| a.name == name) {
                Some(a) => &a.col,
                None => {
                    let names: Vec<&str> = BUILTIN.iter().copied()
                        .chain(self.extra.iter().map(|a| a.name.as_str())).collect();
                    bail!("unknown column {name:?} (columns: {})", names.join(", "))
                }
            },
        })
    }
    /// The live rows of a column (`num_steps * width` floats).
    pub fn column(&self, name: &str) -> Result<&[f32]> {
        let c = self.column_ref(name)?;
        Ok(self.live(c))
    }
    #[inline]
    pub(crate) fn live<'a>(&self, c: &'a Column) -> &'a [f32] {
        &c.raw()[self.head * c.width()..]
    }
    /// Names of the attached columns, in attach order.
    pub fn attached_columns(&self) -> Vec<String> {
        self.extra.iter().map(|a| a.name.clone()).collect()
    }
    pub(crate) fn attached(&self, name: &str) -> Result<&Attached> {
        match self.extra.iter().find(|a| a.name == name) {
            Some(a) => Ok(a),
            None => {
                if BUILTIN.contains(&name) {
                    bail!("column {name:?} is built in; only attached columns can be used here")
                }
                let names: Vec<&str> = self.extra.iter().map(|a| a.name.as_str()).collect();
                bail!("unknown column {name:?} (attached columns: [{}])", names.join(", "))
            }
        }
    }

    /// Attach (or replace) a per-step column of `width` floats per step:
    /// `values.len() == num_steps * width`, all finite. Rows of episodes added
    /// later are filled with 0 until the column is attached again.
    pub fn attach_column(&mut self, name: &str, values: &[f32], width: usize) -> Result<()> {
        check_column_name(name)?;
        if let Some(other) = self.extra.iter().find(|a| a.name != name && a.name.eq_ignore_ascii_case(name)) {
            bail!("invalid column name {name:?}: differs from the attached column {:?} only in case \
                   (their files would clash on a case-insensitive file system)", other.name);
        }
        if width == 0 || width > MAX_WIDTH {
            bail!("column {name:?}: width must be in [1, {MAX_WIDTH}] (got {width})");
        }
        let n = self.num_steps();
        match n.checked_mul(width) {
            Some(want) if want == values.len() => {}
            _ => bail!("column {name:?}: expected {n} rows of {width} values, got {} floats", values.len()),
        }
        check_finite(&format!("column {name:?}"), values)?;
        let nonneg = values.iter().all(|&x| x >= 0.0);
        // evicted-but-not-compacted rows: keep the physical layout aligned
        let pad = self.head.checked_mul(width).and_then(|p| p.checked_add(values.len()))
            .ok_or_else(|| Error::Memory(format!("column {name:?} is too large")))?;
        let mut v = try_filled(self.head * width, 0.0f32, "an attached column")?;
        v.try_reserve_exact(values.len()).map_err(|_| oom(pad * 4, "an attached column"))?;
        v.extend_from_slice(values);
        let col = Column::from_vec(v, width);
        self.version += 1;
        let a = Attached { name: name.to_string(), col, nonneg };
        match self.extra.iter_mut().find(|x| x.name == name) {
            Some(x) => *x = a,
            None => self.extra.push(a),
        }
        Ok(())
    }

    /// Remove an attached column.
    pub fn detach_column(&mut self, name: &str) -> Result<()> {
        self.attached(name)?;
        self.version += 1;
        self.extra.retain(|a| a.name != name);
        Ok(())
    }

    /// Append a complete episode of `T = rewards.len()` steps; returns its index.
    ///
    /// `obs`, `actions`: `T*obs_dim`, `T*act_dim` floats (row-major).
    /// `next_obs`: `T*obs_dim` or `None` (then `next_obs[t] = obs[t+1]` and the
    /// last step's `next_obs` is `obs[T-1]`). `terminals`: `T` values or `None`
    /// (all 0). Everything is validated before anything is stored. The
    /// truncations are the default of [`Store::add_episode_with_truncations`].
    pub fn add_episode(
        &mut self,
        obs: &[f32],
        actions: &[f32],
        rewards: &[f32],
        next_obs: Option<&[f32]>,
        task: i64,
        terminals: Option<&[f32]>,
    ) -> Result<usize> {
        self.add_episode_with_truncations(obs, actions, rewards, next_obs, task, terminals, None)
    }

    /// [`Store::add_episode`] with explicit time-limit truncations: `T`
    /// values, each 0 or 1. `None`: the last step is a truncation unless it is
    /// terminal (an episode ends either way), every other step is not.
    #[allow(clippy::too_many_arguments)]
    pub fn add_episode_with_truncations(
        &mut self,
        obs: &[f32],
        actions: &[f32],
        rewards: &[f32],
        next_obs: Option<&[f32]>,
        task: i64,
        terminals: Option<&[f32]>,
        truncations: Option<&[f32]>,
    ) -> Result<usize> {
        let t = rewards.len();
        let (od, ad) = (self.obs_dim, self.act_dim);
        if t == 0 {
            bail!("an episode needs at least one step (rewards is empty)");
        }
        // every slice length is a real allocation, so t * dim cannot overflow when it matches;
        // checked anyway so a mismatch is reported instead of wrapping
        let (tod, tad) = (t.checked_mul(od), t.checked_mul(ad));
        if tod != Some(obs.len()) {
            bail!("obs: expected {t} steps of {od} values to match rewards, got {} floats", obs.len());
        }
        if tad != Some(actions.len()) {
            bail!("actions: expected {t} steps of {ad} values to match rewards, got {} floats", actions.len());
        }
        if let Some(n) = next_obs {
            if tod != Some(n.len()) {
                bail!("next_obs: expected {t} steps of {od} values, got {} floats", n.len());
            }
            check_finite("next_obs", n)?;
        }
        if let Some(term) = terminals {
            if term.len() != t {
                bail!("terminals: expected {t} values, got {}", term.len());
            }
            check_finite("terminals", term)?;
        }
        if let Some(tr) = truncations {
            if tr.len() != t {
                bail!("truncations: expected {t} values, got {}", tr.len());
            }
            if let Some(i) = tr.iter().position(|&x| x != 0.0 && x != 1.0) {
                bail!("truncations: every value must be 0 or 1 (got {} at step {i})", tr[i]);
            }
        }
        check_finite("obs", obs)?;
        check_finite("actions", actions)?;
        check_finite("rewards", rewards)?;
        // rtg and return, in f64
        let mut rtg = vec![0f32; t];
        let mut acc = 0f64;
        for i in (0..t).rev() {
            acc += rewards[i] as f64;
            rtg[i] = acc as f32;
        }
        if !acc.is_finite() || rtg.iter().any(|x| !x.is_finite()) {
            bail!("rewards: the return-to-go overflows float32");
        }
        // ---- validated: reserve everything (a failed allocation changes nothing), then mutate ----
        let off = self.num_steps();
        let t_od = t * od;
        for (c, extra) in [(&mut self.obs, t_od), (&mut self.actions, t * ad), (&mut self.rewards, t),
                           (&mut self.next_obs, t_od), (&mut self.terminals, t), (&mut self.truncations, t),
                           (&mut self.rtg, t)] {
            c.try_reserve(extra)?;
        }
        for a in &mut self.extra {
            let tw = t.checked_mul(a.col.width()).ok_or_else(|| oom(usize::MAX, "an attached column"))?;
            a.col.try_reserve(tw)?;
        }
        let fail = |_| oom(8, "the episode tables");
        self.ep_off.try_reserve(1).map_err(fail)?;
        self.ep_len.try_reserve(1).map_err(fail)?;
        self.ep_task.try_reserve(1).map_err(fail)?;
        self.ep_ret.try_reserve(1).map_err(fail)?;
        // reserved above: none of these allocates
        self.obs.extend(obs)?;
        self.actions.extend(actions)?;
        self.rewards.extend(rewards)?;
        match next_obs {
            Some(n) => self.next_obs.extend(n)?,
            None => {
                self.next_obs.extend(&obs[od..])?;
                self.next_obs.extend(&obs[(t - 1) * od..])?;
            }
        }
        match terminals {
            Some(term) => self.terminals.extend(term)?,
            None => self.terminals.extend_fill(t, 0.0)?,
        }
        match truncations {
            Some(tr) => self.truncations.extend(tr)?,
            None => {
                let last_terminal = terminals.is_some_and(|term| term[t - 1] != 0.0);
                self.truncations.extend_fill(t - 1, 0.0)?;
                self.truncations.extend_fill(1, if last_terminal { 0.0 } else { 1.0 })?;
            }
        }
        self.rtg.extend(&rtg)?;
        for a in &mut self.extra {
            let w = a.col.width();
            a.col.extend_fill(t * w, 0.0)?;
        }
        let idx = self.ep_len.len();
        self.ep_off.push(off);
        self.ep_len.push(t);
        self.ep_task.push(task);
        self.ep_ret.push(acc);
        self.task_eps.entry(task).or_default().push(idx);
        self.version += 1;
        let evicted = self.evict_to_capacity();
        Ok(idx - evicted)
    }

    /// Append one transition to the open episode of `stream` (default: the
    /// task id). The episode closes when `done`; then its index is returned.
    /// `terminal` (stored in the terminals column) defaults to `done`;
    /// `truncated` (the truncations column) defaults to `done` and not
    /// terminal, and requires `done`.
    #[allow(clippy::too_many_arguments)]
    pub fn add_step(
        &mut self,
        obs: &[f32],
        action: &[f32],
        reward: f32,
        next_obs: &[f32],
        done: bool,
        task: i64,
        terminal: Option<bool>,
        truncated: Option<bool>,
        stream: Option<i64>,
    ) -> Result<Option<usize>> {
        let (od, ad) = (self.obs_dim, self.act_dim);
        if obs.len() != od {
            bail!("obs: expected {od} values, got {}", obs.len());
        }
        if next_obs.len() != od {
            bail!("next_obs: expected {od} values, got {}", next_obs.len());
        }
        if action.len() != ad {
            bail!("action: expected {ad} values, got {}", action.len());
        }
        check_finite("obs", obs)?;
        check_finite("next_obs", next_obs)?;
        check_finite("action", action)?;
        check_finite("reward", &[reward])?;
        let key = stream.unwrap_or(task);
        if let Some(e) = self.open.get(&key) {
            if e.task != task {
                bail!("stream {key} has an open episode of task {} but this step is for task {task}", e.task);
            }
        }
        let is_term = terminal.unwrap_or(done);
        let is_trunc = truncated.unwrap_or(done && !is_term);
        if is_trunc && !done {
            bail!("truncated=True ends the episode: pass done=True with it");
        }
        let term = if is_term { 1.0 } else { 0.0 };
        let e = self.open.entry(key).or_insert_with(|| OpenEpisode { task, ..Default::default() });
        e.obs.extend_from_slice(obs);
        e.actions.extend_from_slice(action);
        e.rewards.push(reward);
        e.next_obs.extend_from_slice(next_obs);
        e.terminals.push(term);
        e.truncations.push(if is_trunc { 1.0 } else { 0.0 });
        if done {
            return self.close_open(key, false).map(Some);
        }
        self.evict_to_capacity();
        Ok(None)
    }

    /// Close the open episode of `stream` (e.g. at a time limit when
    /// `add_step` was never called with `done`); returns its index.
    /// Its last step is then a truncation unless it is terminal.
    pub fn close_episode(&mut self, stream: i64) -> Result<usize> {
        self.close_open(stream, true)
    }

    fn close_open(&mut self, stream: i64, cut: bool) -> Result<usize> {
        let e = match self.open.remove(&stream) {
            Some(e) => e,
            None => bail!("no open episode on stream {stream}"),
        };
        let mut trunc = std::borrow::Cow::Borrowed(&e.truncations);
        if cut {
            if let (Some(&term), Some(_)) = (e.terminals.last(), e.truncations.last()) {
                if term == 0.0 {
                    let v = trunc.to_mut();
                    let last = v.len() - 1;
                    v[last] = 1.0;
                }
            }
        }
        match self.add_episode_with_truncations(&e.obs, &e.actions, &e.rewards, Some(&e.next_obs), e.task,
                                                Some(&e.terminals), Some(&trunc[..])) {
            Ok(i) => Ok(i),
            Err(err) => {
                self.open.insert(stream, e);
                Err(err)
            }
        }
    }

    /// The open episodes: (stream, episode).
    pub fn open_episodes(&self) -> impl Iterator<Item = (&i64, &OpenEpisode)> {
        self.open.iter()
    }

    /// Evict the oldest closed episodes (never the newest) while the number
    /// of steps exceeds the capacity; returns how many were evicted.
    fn evict_to_capacity(&mut self) -> usize {
        let cap = match self.capacity {
            Some(c) => c,
            None => return 0,
        };
        let total = self.num_steps() + self.num_open_steps();
        let (mut n, mut rows) = (0usize, 0usize);
        while total - rows > cap && n + 1 < self.ep_len.len() {
            rows += self.ep_len[n];
            n += 1;
        }
        if n == 0 {
            return 0;
        }
        self.ep_off.drain(..n);
        self.ep_len.drain(..n);
        self.ep_task.drain(..n);
        self.ep_ret.drain(..n);
        for o in &mut self.ep_off {
            *o -= rows;
        }
        self.head += rows;
        self.num_evicted += n as u64;
        self.version += 1;
        self.rebuild_task_index();
        if self.head * 8 >= self.num_steps().max(1) {
            self.compact();
        }
        n
    }

    /// Drop evicted rows physically and release unused capacity (skipped,
    /// changing nothing, if a column that is shared or mapped cannot be copied).
    pub fn compact(&mut self) {
        let h = self.head;
        if h == 0 {
            return;
        }
        let owned = [&mut self.obs, &mut self.actions, &mut self.rewards, &mut self.next_obs,
                     &mut self.terminals, &mut self.truncations, &mut self.rtg].into_iter().chain(self.extra.iter_mut().map(|a| &mut a.col))
            .all(|c| c.make_owned().is_ok());
        if !owned {
            return;
        }
        for c in [&mut self.obs, &mut self.actions, &mut self.rewards, &mut self.next_obs,
                  &mut self.terminals, &mut self.truncations, &mut self.rtg] {
            let w = c.width();
            c.drain_front(h * w);
        }
        for a in &mut self.extra {
            let w = a.col.width();
            a.col.drain_front(h * w);
        }
        self.head = 0;
    }

    /// Release spare capacity of every column (after bulk loading).
    pub fn shrink_to_fit(&mut self) {
        self.compact();
        for c in [&mut self.obs, &mut self.actions, &mut self.rewards, &mut self.next_obs,
                  &mut self.terminals, &mut self.truncations, &mut self.rtg] {
            c.shrink();
        }
        for a in &mut self.extra {
            a.col.shrink();
        }
        release_freed_memory();
    }

    pub(crate) fn rebuild_task_index(&mut self) {
        self.task_eps.clear();
        for (i, &t) in self.ep_task.iter().enumerate() {
            self.task_eps.entry(t).or_default().push(i);
        }
    }

    /// Bytes of the raw columns (built-in and attached, live rows).
    pub fn raw_bytes(&self) -> usize {
        let n = self.num_steps();
        let w: usize = 2 * self.obs_dim + self.act_dim + 4 + self.extra.iter().map(|a| a.col.width()).sum::<usize>();
        n.saturating_mul(w).saturating_mul(4)
    }
    /// Heap bytes held by the store (columns' allocations and episode tables;
    /// memory-mapped columns count 0).
    pub fn memory_bytes(&self) -> usize {
        let cols: usize = [&self.obs, &self.actions, &self.rewards, &self.next_obs, &self.terminals, &self.truncations, &self.rtg]
            .iter().map(|c| c.owned_bytes()).sum::<usize>()
            + self.extra.iter().map(|a| a.col.owned_bytes()).sum::<usize>();
        let eps = self.ep_off.capacity() * 8 + self.ep_len.capacity() * 8 + self.ep_task.capacity() * 8
            + self.ep_ret.capacity() * 8 + self.ep_len.len() * 8;
        let open: usize = self.open.values()
            .map(|e| 4 * (e.obs.capacity() + e.actions.capacity() + e.rewards.capacity()
                + e.next_obs.capacity() + e.terminals.capacity() + e.truncations.capacity())).sum();
        cols + eps + open
    }
    /// Bytes of the columns that are memory-mapped.
    pub fn mapped_bytes(&self) -> usize {
        let mut b = 0;
        for c in [&self.obs, &self.actions, &self.rewards, &self.next_obs, &self.terminals, &self.truncations, &self.rtg] {
            if c.is_mapped() {
                b += c.raw().len() * 4;
            }
        }
        for a in &self.extra {
            if a.col.is_mapped() {
                b += a.col.raw().len() * 4;
            }
        }
        b
    }
}

impl Store {
    /// The largest |return-to-go| of the closed episodes (0 for an empty store),
    /// cached per store version.
    pub fn max_abs_rtg(&self) -> f32 {
        let mut guard = match self.max_abs_rtg.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(Some((v, m))) = guard.as_deref() {
            if *v == self.version {
                return *m;
            }
        }
        let n = self.num_steps();
        let m = self.live(&self.rtg)[..n].iter().fold(0f32, |a, &x| a.max(x.abs()));
        if let Some(g) = guard.as_deref_mut() {
            *g = Some((self.version, m));
        }
        m
    }

    /// The step -> episode table of the current version (built on first use).
    pub(crate) fn step_index(&self) -> Arc<StepIndex> {
        // try_lock: never block here (a lock orphaned by fork, or a concurrent
        // builder, just means this call builds its own table)
        let mut guard = match self.step_index.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(Some(ix)) = guard.as_deref() {
            if ix.version == self.version {
                return ix.clone();
            }
        }
        let n = self.num_steps();
        let ne = self.num_episodes().max(1);
        let avg = (n / ne).max(1);
        let shift = usize::BITS - 1 - avg.leading_zeros();
        let buckets = (n >> shift) + 1;
        let mut table = Vec::with_capacity(buckets);
        let mut e = 0usize;
        for j in 0..buckets {
            let row = j << shift;
            while e + 1 < self.ep_off.len() && self.ep_off[e + 1] <= row {
                e += 1;
            }
            table.push(e as u32);
        }
        let ix = Arc::new(StepIndex { version: self.version, shift, table });
        if let Some(g) = guard.as_deref_mut() {
            *g = Some(ix.clone());
        }
        ix
    }

    /// The lazily filled per-episode argmax starts for (column, k, start_min).
    pub(crate) fn argmax_starts(&self, column: &str, k: usize, start_min: usize) -> Arc<Vec<AtomicU32>> {
        let key = (column.to_string(), k, start_min, self.version);
        let fresh = || Arc::new((0..self.num_episodes()).map(|_| AtomicU32::new(NOT_COMPUTED)).collect::<Vec<_>>());
        let mut c = match self.argmax_cache.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return fresh(),
        };
        c.retain(|e| e.key.3 == self.version);
        if let Some(e) = c.iter().find(|e| e.key == key) {
            return e.starts.clone();
        }
        let starts: Arc<Vec<AtomicU32>> = fresh();
        if c.len() >= 8 {
            c.remove(0);
        }
        c.push(ArgmaxEntry { key, starts: starts.clone() });
        starts
    }
}
