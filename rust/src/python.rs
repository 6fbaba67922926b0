//! PyO3 bindings: `metadt._core` (feature `python`).
//!
//! Locking rule (no deadlocks with the GIL): a thread holding the store lock
//! never waits for the GIL. Sampling plans under the lock, allocates the NumPy
//! outputs with the GIL, then releases the GIL, re-takes the lock, checks the
//! plan is unchanged and fills the arrays.
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use numpy::ndarray::{ArrayView2, IxDyn};
use numpy::npyffi::{get_type_object, npy_intp, NpyTypes, PY_ARRAY_API};
use numpy::{Element, IntoPyArray, PyArray1, PyArray2, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods,
            PyUntypedArray, PyUntypedArrayMethods};
use std::os::raw::c_int;
use pyo3::exceptions::{PyDeprecationWarning, PyFileExistsError, PyFileNotFoundError, PyMemoryError, PyOSError, PyStopIteration,
                        PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::error::Error;
use crate::rng::derive_seed as derive;
use crate::sample::{Anchor, Batch, DType, FieldData, FieldSpec, LiveSpec, PromptSpec, RawOut, SegmentSpec, StepsSpec,
                    TransitionSpec, WindowSpec};
use crate::segments::{Per, Segments, Strategy};
use crate::store::{Buf, Store};

fn to_py(e: Error) -> PyErr {
    match &e {
        Error::Invalid(_) => PyValueError::new_err(e.to_string()),
        Error::Format { missing: true, .. } => PyFileNotFoundError::new_err(e.to_string()),
        Error::Format { .. } => PyValueError::new_err(e.to_string()),
        Error::Io { err, .. } if err.kind() == std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(e.to_string()),
        Error::Io { .. } => PyOSError::new_err(e.to_string()),
        Error::Memory(_) => PyMemoryError::new_err(e.to_string()),
        Error::Exists { .. } => PyFileExistsError::new_err(e.to_string()),
    }
}

fn verr(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

/// Float values and shape of a NumPy array (float32/float64; with `lenient`,
/// any numeric/bool array or Python sequence/scalar is converted).
fn floats(ob: &Bound<'_, PyAny>, what: &str, lenient: bool) -> PyResult<(Vec<f32>, Vec<usize>)> {
    if let Ok(a) = ob.cast::<PyArrayDyn<f32>>() {
        let r = a.try_readonly().map_err(|e| verr(format!("{what}: {e}")))?;
        let v = r.as_array();
        let data = match v.as_slice() {
            Some(s) => s.to_vec(),
            None => v.iter().copied().collect(),
        };
        return Ok((data, v.shape().to_vec()));
    }
    if let Ok(a) = ob.cast::<PyArrayDyn<f64>>() {
        let r = a.try_readonly().map_err(|e| verr(format!("{what}: {e}")))?;
        let v = r.as_array();
        return Ok((v.iter().map(|&x| x as f32).collect(), v.shape().to_vec()));
    }
    let np = ob.py().import("numpy")?;
    if let Ok(a) = ob.cast::<PyUntypedArray>() {
        let dt = a.dtype();
        let kind = dt.kind();
        if lenient && matches!(kind, b'b' | b'i' | b'u' | b'f') {
            let conv = ob.call_method1("astype", ("float64",))?;
            return floats(&conv, what, false);
        }
        return Err(verr(format!("{what}: expected a float32 or float64 array, got dtype {}", dt.str()?)));
    }
    let conv = np.call_method1("asarray", (ob, "float64")).map_err(|e| {
        verr(format!("{what}: expected a float32 or float64 array, could not convert ({e})"))
    })?;
    floats(&conv, what, false)
}

/// Rows of an array of shape [T, width] (or [T] when width == 1).
fn rows(shape: &[usize], what: &str, width: usize, wname: &str) -> PyResult<usize> {
    match shape {
        [t, w] if *w == width => Ok(*t),
        [t] if width == 1 => Ok(*t),
        _ => Err(verr(format!(
            "{what}: expected shape (T, {wname}={width}){}, got {shape:?}",
            if width == 1 { " or (T,)" } else { "" }))),
    }
}

fn as_strategy(s: &str) -> PyResult<Strategy> {
    Strategy::parse(s).map_err(to_py)
}

/// Parse `prompt=`: a PromptSpec-like object (attributes), a dict, or a tuple
/// (length, score, strategy[, start_min]).
fn parse_prompt(ob: &Bound<'_, PyAny>, default_start: usize) -> PyResult<PromptSpec> {
    let get = |key: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
        if let Ok(d) = ob.cast::<PyDict>() {
            return d.get_item(key);
        }
        if ob.hasattr(key)? {
            return Ok(Some(ob.getattr(key)?));
        }
        Ok(None)
    };
    let (length, score, strategy, start_min, pool): (usize, Option<String>, String, Option<usize>, Option<Vec<usize>>) =
        if let Ok(t) = ob.cast::<PyTuple>() {
            if !(2..=4).contains(&t.len()) {
                return Err(verr("prompt tuple must be (length, score, strategy[, start_min])"));
            }
            let bad = |_| verr("prompt tuple must be (length: int >= 1, score: str | None, strategy: str[, start_min: int >= 0])");
            let strategy = if t.len() > 2 { t.get_item(2)?.extract().map_err(bad)? } else { "argmax".to_string() };
            let sm = if t.len() > 3 { t.get_item(3)?.extract::<Option<Count>>().map_err(bad)?.map(|c| c.0) } else { None };
            (t.get_item(0)?.extract::<Count>().map_err(bad)?.0, t.get_item(1)?.extract().map_err(bad)?, strategy, sm, None)
        } else {
            let length = get("length")?.ok_or_else(|| verr("prompt: missing length"))?.extract::<Count>()
                .map_err(|_| verr("prompt: length must be a positive int"))?.0;
            let score = match get("score")? {
                Some(s) if !s.is_none() => Some(s.extract().map_err(|_| verr("prompt: score must be a column name or None"))?),
                _ => None,
            };
            let strategy = match get("strategy")? {
                Some(s) if !s.is_none() => s.extract().map_err(|_| verr("prompt: strategy must be a string"))?,
                _ => "argmax".to_string(),
            };
            let start_min = match get("start_min")? {
                Some(s) if !s.is_none() => Some(s.extract::<Count>().map_err(|_| verr("prompt: start_min must be an int >= 0"))?.0),
                _ => None,
            };
            let pool = match get("pool")? { Some(s) if !s.is_none() => opt_episodes(Some(&s))?, _ => None };
            (length, score, strategy, start_min, pool)
        };
    Ok(PromptSpec { length, score, strategy: as_strategy(&strategy)?, start_min: start_min.unwrap_or(default_start), pool })
}

/// A non-negative integer argument (a negative value is a `ValueError`, not an `OverflowError`).
#[derive(Clone, Copy, Debug)]
struct Count(usize);

impl<'a, 'py> FromPyObject<'a, 'py> for Count {
    type Error = PyErr;
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let v: i128 = obj.extract()?;
        if v < 0 {
            return Err(verr(format!("expected a non-negative integer, got {v}")));
        }
        usize::try_from(v).map(Count).map_err(|_| verr(format!("integer too large: {v}")))
    }
}

/// A length argument under its name (`new`) or its deprecated alias (`old`, the name before
/// `window_len`/`context_len`; a `DeprecationWarning`); both given is a `TypeError`; neither, `default`.
/// `func` names the method in the messages.
fn renamed(py: Python<'_>, func: &str, new: (&str, Option<Count>), old: (&str, Option<Count>), default: usize)
           -> PyResult<usize> {
    match (new.1, old.1) {
        (Some(_), Some(_)) => Err(PyTypeError::new_err(format!(
            "{func}() got both {}= and its deprecated alias {}=: give only {}=", new.0, old.0, new.0))),
        (Some(v), None) => Ok(v.0),
        (None, Some(v)) => {
            let msg = std::ffi::CString::new(format!("{func}({}=) is deprecated: use {}= (the same value)", old.0, new.0))
                .map_err(|e| verr(e.to_string()))?;
            // stacklevel 1: the warning points at the Python line that called `func`
            PyErr::warn(py, py.get_type::<PyDeprecationWarning>().as_any(), &msg, 1)?;
            Ok(v.0)
        }
        (None, None) => Ok(default),
    }
}

/// Largest `prefetch` depth (batches prepared ahead).
const MAX_PREFETCH_DEPTH: usize = 1024;

/// Owner of a column buffer viewed by NumPy without a copy.
#[pyclass(frozen, module = "metadt._core")]
struct ColumnBuffer {
    _buf: Arc<Buf>,
}

/// The trajectory store (see `docs/store.md`).
#[pyclass(name = "TrajectoryStore", module = "metadt._core", frozen)]
pub struct PyStore {
    inner: Arc<RwLock<Store>>,
}

fn read(l: &RwLock<Store>) -> RwLockReadGuard<'_, Store> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write(l: &RwLock<Store>) -> RwLockWriteGuard<'_, Store> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// A new uninitialized C-contiguous NumPy array (MemoryError/ValueError from NumPy as PyErr, never a panic).
fn new_array<'py, T: Element>(py: Python<'py>, shape: &[usize]) -> PyResult<(Bound<'py, PyAny>, *mut u8)> {
    let mut dims: Vec<npy_intp> = shape.iter().map(|&d| d as npy_intp).collect();
    // SAFETY: the documented NumPy C API call; a NULL result carries a Python error.
    unsafe {
        let ptr = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            get_type_object(py, NpyTypes::PyArray_Type),
            T::get_dtype(py).into_dtype_ptr(),
            dims.len() as c_int,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
        );
        let arr = Bound::from_owned_ptr_or_err(py, ptr)?;
        let data = arr.cast::<PyArrayDyn<T>>()?.data() as *mut u8;
        Ok((arr, data))
    }
}

/// Allocate (uninitialized) NumPy arrays for a plan; returns the dict, the
/// arrays (references held until the fill is done, so every pointer stays
/// valid whatever happens to the dict) and their data pointers.
type Allocated<'py> = (Bound<'py, PyDict>, Vec<Bound<'py, PyAny>>, Vec<RawOut>);

fn alloc_numpy<'py>(py: Python<'py>, plan: &[FieldSpec]) -> PyResult<Allocated<'py>> {
    // unique names and a bounded total size (also checked when planning)
    crate::sample::check_plan(plan).map_err(to_py)?;
    let d = PyDict::new(py);
    let mut arrays = Vec::with_capacity(plan.len());
    let mut outs = Vec::with_capacity(plan.len());
    for f in plan {
        // every element is written by the fill before the arrays are returned
        let (arr, ptr) = match f.dtype {
            DType::F32 => new_array::<f32>(py, &f.shape)?,
            DType::I64 => new_array::<i64>(py, &f.shape)?,
            DType::Bool => new_array::<bool>(py, &f.shape)?,
        };
        d.set_item(&f.name, &arr)?;
        arrays.push(arr);
        outs.push(RawOut(ptr));
    }
    if d.len() != plan.len() {
        return Err(verr("internal: two outputs of one batch share a name"));
    }
    Ok((d, arrays, outs))
}

fn batch_to_dict(py: Python<'_>, b: Batch) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for (spec, data) in b.fields {
        let shape = IxDyn(&spec.shape);
        let arr = match data {
            FieldData::F32(v) => numpy::ndarray::Array::from_shape_vec(shape, v).map_err(|e| verr(e.to_string()))?.into_pyarray(py).into_any(),
            FieldData::I64(v) => numpy::ndarray::Array::from_shape_vec(shape, v).map_err(|e| verr(e.to_string()))?.into_pyarray(py).into_any(),
            FieldData::Bool(v) => numpy::ndarray::Array::from_shape_vec(shape, v).map_err(|e| verr(e.to_string()))?.into_pyarray(py).into_any(),
        };
        d.set_item(&spec.name, arr)?;
    }
    Ok(d)
}

fn segments_dict<'py>(py: Python<'py>, s: Segments, with_keys: bool) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    if with_keys {
        d.set_item("keys", s.keys.into_pyarray(py))?;
    }
    d.set_item("episodes", s.episodes.into_pyarray(py))?;
    d.set_item("starts", s.starts.into_pyarray(py))?;
    d.set_item("scores", s.scores.into_pyarray(py))?;
    Ok(d)
}

fn i64s(py: Python<'_>, v: impl IntoIterator<Item = usize>) -> Bound<'_, PyArray1<i64>> {
    v.into_iter().map(|x| x as i64).collect::<Vec<_>>().into_pyarray(py)
}

/// Every kind of batch the store builds (one plan / fill path each; the
/// deterministic kinds ignore the seed).
enum Kind {
    Windows(WindowSpec),
    Transitions(TransitionSpec),
    Steps(StepsSpec),
    Live(LiveSpec),
    Segments(SegmentSpec),
}

impl Kind {
    fn plan(&self, s: &Store) -> crate::Result<Vec<FieldSpec>> {
        match self {
            Kind::Windows(w) => s.plan_windows(w),
            Kind::Transitions(t) => s.plan_transitions(t),
            Kind::Steps(t) => s.plan_steps(t),
            Kind::Live(l) => s.plan_live(l),
            Kind::Segments(g) => s.plan_segments(g),
        }
    }
    /// # Safety: as `fill_windows` / `fill_transitions`.
    unsafe fn fill(&self, s: &Store, seed: u64, outs: &[RawOut]) {
        match self {
            Kind::Windows(w) => s.fill_windows(w, seed, outs),
            Kind::Transitions(t) => s.fill_transitions(t, seed, outs),
            Kind::Steps(t) => s.fill_steps(t, outs),
            Kind::Live(l) => s.fill_live(l, outs),
            Kind::Segments(g) => s.fill_segments(g, outs),
        }
    }
    fn sample(&self, s: &Store, seed: u64) -> crate::Result<Batch> {
        match self {
            Kind::Windows(w) => s.sample_windows(w, Some(seed)),
            Kind::Transitions(t) => s.sample_transitions(t, Some(seed)),
            Kind::Steps(t) => {
                let plan = s.plan_steps(t)?;
                let (batch, outs) = Batch::alloc(plan)?;
                // SAFETY: outs point into `batch`, allocated from the validated plan.
                unsafe { s.fill_steps(t, &outs) };
                Ok(batch)
            }
            Kind::Live(l) => s.live_windows(l),
            Kind::Segments(g) => s.prompt_segments(g),
        }
    }
}

/// Plan under the read lock, allocate the NumPy outputs with the GIL, then
/// fill them with the GIL released (re-planning under the lock: a store that
/// changed shape meanwhile is an error, never a wrong write).
fn build<'py>(py: Python<'py>, inner: &Arc<RwLock<Store>>, kind: Kind, seed: Option<u64>) -> PyResult<Bound<'py, PyDict>> {
    let (plan, seed) = {
        let s = read(inner);
        let plan = kind.plan(&s).map_err(to_py)?;
        (plan, seed.unwrap_or_else(|| s.next_call_seed()))
    };
    let (dict, arrays, outs) = alloc_numpy(py, &plan)?;
    let inner = inner.clone();
    let ok = py.detach(move || {
        let s = read(&inner);
        match kind.plan(&s) {
            Ok(p) if same_plan(&p, &plan) => {
                // SAFETY: arrays allocated from this same plan, under the same lock now.
                unsafe { kind.fill(&s, seed, &outs) };
                Ok(())
            }
            Ok(_) => Err(Error::invalid("the store changed shape while sampling (concurrent modification); retry")),
            Err(e) => Err(e),
        }
    });
    drop(arrays); // the dict holds every array now that the fill is done
    ok.map_err(to_py)?;
    Ok(dict)
}

fn same_plan(a: &[FieldSpec], b: &[FieldSpec]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.name == y.name && x.dtype == y.dtype && x.shape == y.shape)
}

impl PyStore {
    fn sample<'py>(&self, py: Python<'py>, kind: Kind, seed: Option<u64>) -> PyResult<Bound<'py, PyDict>> {
        build(py, &self.inner, kind, seed)
    }

    #[allow(clippy::too_many_arguments)]
    fn window_kind(&self, batch: usize, length: usize, context: usize, return_scale: f64, columns: Vec<String>,
                   prompt: Option<&Bound<'_, PyAny>>, tasks: Option<Vec<i64>>, anchor: Anchor) -> PyResult<Kind> {
        if !(return_scale.is_finite() && return_scale > 0.0) {
            return Err(verr(format!("return_scale must be a finite number > 0 (got {return_scale:?})")));
        }
        let return_scale32 = return_scale as f32;
        if !(return_scale32.is_finite() && return_scale32 > 0.0) {
            return Err(verr(format!("return_scale {return_scale:?} is outside float32's range (returns-to-go \
                                     are float32)")));
        }
        let return_scale = return_scale32;
        let prompt = match prompt {
            Some(p) if !p.is_none() => Some(parse_prompt(p, context)?),
            _ => None,
        };
        Ok(Kind::Windows(WindowSpec { batch, length, context, return_scale, columns, prompt, tasks, anchor }))
    }
}

fn opt_tasks(ob: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<i64>>> {
    match ob {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => {
            if let Ok(t) = o.extract::<i64>() {
                return Ok(Some(vec![t]));
            }
            let np = o.py().import("numpy")?;
            let arr = np.call_method1("asarray", (o,))?;
            let kind = arr.getattr("dtype")?.getattr("kind")?.extract::<String>()?;
            if kind != "i" && kind != "u" {
                return Err(verr("tasks must be an int or a sequence of ints"));
            }
            let v: Vec<i64> = arr.call_method1("astype", ("int64",))?.call_method0("ravel")?.call_method0("tolist")?.extract()?;
            Ok(Some(v))
        }
    }
}

fn opt_episodes(ob: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<usize>>> {
    match opt_tasks(ob)? {
        None => Ok(None),
        Some(v) => {
            if let Some(x) = v.iter().find(|&&x| x < 0) {
                return Err(verr(format!("episode index {x} is negative")));
            }
            Ok(Some(v.into_iter().map(|x| x as usize).collect()))
        }
    }
}

/// `columns=`: None, a name, or a sequence of names.
fn column_names(ob: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    match ob {
        None => Ok(Vec::new()),
        Some(o) if o.is_none() => Ok(Vec::new()),
        Some(o) => {
            if let Ok(s) = o.extract::<String>() {
                return Ok(vec![s]);
            }
            o.extract::<Vec<String>>().map_err(|_| verr("columns must be a column name or a sequence of names"))
        }
    }
}

fn seed_arg(seed: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    match seed {
        None => Ok(None),
        Some(s) if s.is_none() => Ok(None),
        Some(s) => {
            let v: i128 = s.extract().map_err(|_| verr("seed must be an int in [0, 2**64) or None"))?;
            u64::try_from(v).map(Some).map_err(|_| verr(format!("seed must be in [0, 2**64) (got {v})")))
        }
    }
}

#[pymethods]
impl PyStore {
    #[new]
    #[pyo3(signature = (obs_dim, act_dim, capacity=None))]
    fn new(obs_dim: Count, act_dim: Count, capacity: Option<Count>) -> PyResult<Self> {
        let store = Store::new(obs_dim.0, act_dim.0, capacity.map(|c| c.0)).map_err(to_py)?;
        Ok(PyStore { inner: Arc::new(RwLock::new(store)) })
    }

    /// Append a complete episode; returns its index.
    #[pyo3(signature = (obs, actions, rewards, next_obs=None, task=0, terminals=None, truncations=None))]
    #[allow(clippy::too_many_arguments)]
    fn add_episode(&self, obs: &Bound<'_, PyAny>, actions: &Bound<'_, PyAny>, rewards: &Bound<'_, PyAny>,
                   next_obs: Option<&Bound<'_, PyAny>>, task: i64, terminals: Option<&Bound<'_, PyAny>>,
                   truncations: Option<&Bound<'_, PyAny>>) -> PyResult<usize> {
        let (od, ad) = { let s = read(&self.inner); (s.obs_dim, s.act_dim) };
        let (o, os) = floats(obs, "obs", false)?;
        let (a, ashape) = floats(actions, "actions", false)?;
        let (r, rs) = floats(rewards, "rewards", false)?;
        let t = rows(&rs, "rewards", 1, "1")?;
        let to = rows(&os, "obs", od, "obs_dim")?;
        let ta = rows(&ashape, "actions", ad, "act_dim")?;
        if to != t || ta != t {
            return Err(verr(format!("obs, actions and rewards must have the same number of steps (got {to}, {ta}, {t})")));
        }
        let n = match next_obs {
            Some(x) if !x.is_none() => {
                let (v, s) = floats(x, "next_obs", false)?;
                let tn = rows(&s, "next_obs", od, "obs_dim")?;
                if tn != t {
                    return Err(verr(format!("next_obs has {tn} steps, rewards has {t}")));
                }
                Some(v)
            }
            _ => None,
        };
        let term = match terminals {
            Some(x) if !x.is_none() => {
                let (v, s) = floats(x, "terminals", true)?;
                let tt = rows(&s, "terminals", 1, "1")?;
                if tt != t {
                    return Err(verr(format!("terminals has {tt} steps, rewards has {t}")));
                }
                Some(v)
            }
            _ => None,
        };
        let trunc = match truncations {
            Some(x) if !x.is_none() => {
                let (v, s) = floats(x, "truncations", true)?;
                let tt = rows(&s, "truncations", 1, "1")?;
                if tt != t {
                    return Err(verr(format!("truncations has {tt} steps, rewards has {t}")));
                }
                Some(v)
            }
            _ => None,
        };
        let mut s = write(&self.inner);
        s.add_episode_with_truncations(&o, &a, &r, n.as_deref(), task, term.as_deref(), trunc.as_deref()).map_err(to_py)
    }

    /// Append one transition (online mode); returns the episode index when `done` closes it, else None.
    #[pyo3(signature = (obs, action, reward, next_obs, done, task=0, terminal=None, stream=None, truncated=None))]
    #[allow(clippy::too_many_arguments)]
    fn add_step(&self, obs: &Bound<'_, PyAny>, action: &Bound<'_, PyAny>, reward: &Bound<'_, PyAny>,
                next_obs: &Bound<'_, PyAny>, done: bool, task: i64, terminal: Option<bool>, stream: Option<i64>,
                truncated: Option<bool>)
                -> PyResult<Option<usize>> {
        let reward = match reward.extract::<f64>() {
            Ok(r) => r,
            Err(_) => {
                let (v, _) = floats(reward, "reward", true)?;
                if v.len() != 1 {
                    return Err(verr(format!("reward: expected a scalar, got {} values", v.len())));
                }
                v[0] as f64
            }
        };
        let (o, _) = floats(obs, "obs", true)?;
        let (a, _) = floats(action, "action", true)?;
        let (n, _) = floats(next_obs, "next_obs", true)?;
        let mut s = write(&self.inner);
        s.add_step(&o, &a, reward as f32, &n, done, task, terminal, truncated, stream).map_err(to_py)
    }

    /// Close the open episode of `stream` (default stream = task id); returns its index.
    fn close_episode(&self, stream: i64) -> PyResult<usize> {
        write(&self.inner).close_episode(stream).map_err(to_py)
    }

    /// Attach (or replace) a per-step float32 column: values [num_steps, d] or [num_steps].
    fn attach_column(&self, name: &str, values: &Bound<'_, PyAny>) -> PyResult<()> {
        let (v, shape) = floats(values, &format!("column {name:?}"), false)?;
        let n = read(&self.inner).num_steps();
        let w = match shape.as_slice() {
            [r] if *r == n => 1,
            [r, w] if *r == n => *w,
            _ => return Err(verr(format!("column {name:?}: expected shape ({n}, d) or ({n},) (num_steps = {n}), got {shape:?}"))),
        };
        write(&self.inner).attach_column(name, &v, w).map_err(to_py)
    }

    fn detach_column(&self, name: &str) -> PyResult<()> {
        write(&self.inner).detach_column(name).map_err(to_py)
    }

    /// A read-only zero-copy view of a column: [num_steps, d] (1-D [num_steps]
    /// for rewards, terminals, truncations, rtg). A snapshot: later appends are not visible in it.
    fn column<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let (buf, start, n, w) = {
            let s = read(&self.inner);
            let c = s.column_ref(name).map_err(to_py)?;
            (c.buffer(), s.head * c.width(), s.num_steps(), c.width())
        };
        let one_d = matches!(name, "rewards" | "terminals" | "truncations" | "rtg");
        // SAFETY: [start, start + n*w) is inside the buffer; `owner` keeps it alive and it is never mutated.
        let ptr = unsafe { buf.as_slice().as_ptr().add(start) };
        let owner = Bound::new(py, ColumnBuffer { _buf: buf })?.into_any();
        let view = unsafe { ArrayView2::from_shape_ptr((n, w), ptr) };
        let arr = unsafe { PyArray2::borrow_from_array(&view, owner) };
        arr.getattr("flags")?.setattr("writeable", false)?;
        let out = if one_d { arr.call_method1("reshape", (n,))? } else { arr.into_any() };
        out.getattr("flags")?.setattr("writeable", false)?;
        Ok(out)
    }

    /// Names of the attached columns.
    fn columns(&self) -> Vec<String> {
        read(&self.inner).attached_columns()
    }

    #[getter]
    fn obs_dim(&self) -> usize { read(&self.inner).obs_dim }
    #[getter]
    fn act_dim(&self) -> usize { read(&self.inner).act_dim }
    #[getter]
    fn capacity(&self) -> Option<usize> { read(&self.inner).capacity }
    #[getter]
    fn num_episodes(&self) -> usize { read(&self.inner).num_episodes() }
    #[getter]
    fn num_steps(&self) -> usize { read(&self.inner).num_steps() }
    #[getter]
    fn num_open_steps(&self) -> usize { read(&self.inner).num_open_steps() }
    #[getter]
    fn num_evicted(&self) -> u64 { read(&self.inner).num_evicted() }
    fn __len__(&self) -> usize { read(&self.inner).num_steps() }

    fn episode_task(&self, i: i64) -> PyResult<i64> {
        if i < 0 {
            return Err(verr(format!("episode index {i} is negative")));
        }
        read(&self.inner).episode_task(i as usize).map_err(to_py)
    }
    fn episodes_of_task<'py>(&self, py: Python<'py>, task: i64) -> Bound<'py, PyArray1<i64>> {
        i64s(py, read(&self.inner).episodes_of_task(task).to_vec())
    }
    fn episode_returns<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        read(&self.inner).episode_returns().to_vec().into_pyarray(py)
    }
    fn episode_lengths<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        i64s(py, read(&self.inner).episode_lengths().to_vec())
    }
    fn episode_offsets<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        i64s(py, read(&self.inner).episode_offsets().to_vec())
    }
    fn episode_tasks<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        read(&self.inner).episode_tasks().to_vec().into_pyarray(py)
    }
    fn top_episodes<'py>(&self, py: Python<'py>, task: i64, n: Count) -> Bound<'py, PyArray1<i64>> {
        i64s(py, read(&self.inner).top_episodes(task, n.0))
    }
    fn tasks<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        read(&self.inner).tasks().into_pyarray(py)
    }

    /// The metadata dict (saved in the manifest).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let text = read(&self.inner).metadata().to_string();
        py.import("json")?.call_method1("loads", (text,))
    }
    #[setter(metadata)]
    fn set_metadata_prop(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_metadata(py, value)
    }
    /// Replace the metadata (a JSON-serializable dict).
    fn set_metadata(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if !value.is_instance_of::<PyDict>() {
            return Err(verr("metadata must be a dict"));
        }
        let text: String = py.import("json")?.call_method1("dumps", (value,))
            .map_err(|e| verr(format!("metadata is not JSON-serializable: {e}")))?.extract()?;
        write(&self.inner).set_metadata(&text).map_err(to_py)
    }

    /// Save to the directory `path` (atomically; open episodes are not saved). `path` must be
    /// absent, an empty directory or a store: anything else is a FileExistsError, left untouched.
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        let inner = self.inner.clone();
        py.detach(move || read(&inner).save(&path)).map_err(to_py)
    }

    /// Load a saved store (hostile files are refused, see docs/store.md). `verify` (default: `not mmap`)
    /// also checks every CRC-32, that float columns are finite and that rtg and returns match the rewards.
    #[staticmethod]
    #[pyo3(signature = (path, mmap=true, verify=None))]
    fn load(py: Python<'_>, path: std::path::PathBuf, mmap: bool, verify: Option<bool>) -> PyResult<Self> {
        let verify = verify.unwrap_or(!mmap);
        let s = py.detach(move || Store::load(&path, mmap, verify)).map_err(to_py)?;
        Ok(PyStore { inner: Arc::new(RwLock::new(s)) })
    }

    /// Reseed the generator used when `seed=None`.
    fn reseed(&self, seed: &Bound<'_, PyAny>) -> PyResult<()> {
        let seed = seed_arg(Some(seed))?.ok_or_else(|| verr("seed must be an int in [0, 2**64)"))?;
        read(&self.inner).reseed(seed);
        Ok(())
    }

    /// Heap bytes held (memory-mapped columns count 0).
    fn memory_bytes(&self) -> usize { read(&self.inner).memory_bytes() }
    /// Bytes of the raw columns (built-in and attached).
    fn raw_bytes(&self) -> usize { read(&self.inner).raw_bytes() }
    /// Bytes of the memory-mapped columns.
    fn mapped_bytes(&self) -> usize { read(&self.inner).mapped_bytes() }
    /// Release spare capacity (e.g. after building a dataset).
    fn shrink_to_fit(&self) { write(&self.inner).shrink_to_fit() }

    fn __repr__(&self) -> String {
        let s = read(&self.inner);
        format!("TrajectoryStore(obs_dim={}, act_dim={}, episodes={}, steps={}, open_steps={}, tasks={}, columns={:?})",
            s.obs_dim, s.act_dim, s.num_episodes(), s.num_steps(), s.num_open_steps(), s.task_eps.len(), s.attached_columns())
    }

    /// Transitions uniform over steps (closed and open episodes) of `tasks` (None = all), each with the
    /// `context_len` transitions strictly before it (oldest first, zero left-padding, `ctx_mask`).
    /// Keys: obs, actions, rewards, next_obs, terminals, tasks, episodes (-1 = open), timesteps,
    /// and with context h > 0: ctx_obs [B,h,obs], ctx_actions, ctx_rewards, ctx_mask. See docs/store.md.
    /// `context=` is a deprecated alias of `context_len=`.
    #[pyo3(signature = (batch, context_len=None, tasks=None, seed=None, *, context=None),
           text_signature = "(self, batch, context_len=4, tasks=None, seed=None)")]
    fn sample_transitions<'py>(&self, py: Python<'py>, batch: Count, context_len: Option<Count>,
                               tasks: Option<&Bound<'_, PyAny>>, seed: Option<&Bound<'_, PyAny>>,
                               context: Option<Count>) -> PyResult<Bound<'py, PyDict>> {
        let context = renamed(py, "sample_transitions", ("context_len", context_len), ("context", context), 4)?;
        let kind = Kind::Transitions(TransitionSpec { batch: batch.0, context, tasks: opt_tasks(tasks)? });
        self.sample(py, kind, seed_arg(seed)?)
    }

    /// Decision-Transformer windows of `window_len` K around a step drawn uniformly over all steps:
    /// anchor="end" (default) ends the window at it ([end-K+1, end]), anchor="start" starts it there
    /// ([start, start+K) clipped at the episode end, the official Meta-DT rule); real steps right-aligned,
    /// left padding obs 0, actions -10, rtg 0, timestep 0, mask False. Keys: obs [B,K,obs], actions,
    /// rewards, rtg (/return_scale), timesteps, mask, tasks, episodes, one [B,K,d] array per name in
    /// `columns`; with context h > 0: ctx_obs/ctx_actions/ctx_rewards/ctx_mask covering the h steps
    /// before the first real step and the real steps (right-aligned in K+h slots)
    /// (the context of position j is ctx_*[:, j:j+h]); with `prompt`: prompt_obs, prompt_actions,
    /// prompt_rewards, prompt_rtg, prompt_timesteps, prompt_mask [B,k,...], prompt_episodes, prompt_starts.
    /// See docs/store.md. `length=` and `context=` are deprecated aliases of `window_len=` and `context_len=`.
    #[pyo3(signature = (batch, window_len=None, context_len=None, return_scale=1.0, columns=None, prompt=None, tasks=None, seed=None, anchor="end", *, length=None, context=None),
           text_signature = "(self, batch, window_len=20, context_len=0, return_scale=1.0, columns=None, prompt=None, tasks=None, seed=None, anchor='end')")]
    #[allow(clippy::too_many_arguments)]
    fn sample_windows<'py>(&self, py: Python<'py>, batch: Count, window_len: Option<Count>, context_len: Option<Count>,
                           return_scale: f64, columns: Option<&Bound<'_, PyAny>>, prompt: Option<&Bound<'_, PyAny>>,
                           tasks: Option<&Bound<'_, PyAny>>, seed: Option<&Bound<'_, PyAny>>, anchor: &str,
                           length: Option<Count>, context: Option<Count>) -> PyResult<Bound<'py, PyDict>> {
        let length = renamed(py, "sample_windows", ("window_len", window_len), ("length", length), 20)?;
        let context = renamed(py, "sample_windows", ("context_len", context_len), ("context", context), 0)?;
        let kind = self.window_kind(batch.0, length, context, return_scale, column_names(columns)?, prompt,
                                    opt_tasks(tasks)?, Anchor::parse(anchor).map_err(to_py)?)?;
        self.sample(py, kind, seed_arg(seed)?)
    }

    /// Every length-k segment with start in [start_min, T-k] of each episode, scored by the column
    /// (summed over steps and over the column's width): {"episodes", "starts", "scores"}.
    #[pyo3(signature = (column, length, start_min=Count(0), episodes=None),
           text_signature = "(self, column, length, start_min=0, episodes=None)")]
    fn segment_scores<'py>(&self, py: Python<'py>, column: &str, length: Count, start_min: Count,
                           episodes: Option<&Bound<'_, PyAny>>) -> PyResult<Bound<'py, PyDict>> {
        let eps = opt_episodes(episodes)?;
        let s = read(&self.inner).segment_scores(column, length.0, start_min.0, eps.as_deref()).map_err(to_py)?;
        segments_dict(py, s, false)
    }

    /// One segment of `segment_scores` per task or per episode, by argmax (ties: earliest) or drawn
    /// proportionally to the score: {"keys", "episodes", "starts", "scores"}.
    #[pyo3(signature = (column, length, start_min=Count(0), per="task", mode="argmax", seed=None, episodes=None),
           text_signature = "(self, column, length, start_min=0, per='task', mode='argmax', seed=None, episodes=None)")]
    #[allow(clippy::too_many_arguments)]
    fn best_segments<'py>(&self, py: Python<'py>, column: &str, length: Count, start_min: Count, per: &str, mode: &str,
                          seed: Option<&Bound<'_, PyAny>>, episodes: Option<&Bound<'_, PyAny>>) -> PyResult<Bound<'py, PyDict>> {
        let per = Per::parse(per).map_err(to_py)?;
        let mode = as_strategy(mode)?;
        let eps = opt_episodes(episodes)?;
        let seed = seed_arg(seed)?;
        let s = read(&self.inner).best_segments(column, length.0, start_min.0, per, mode, seed, eps.as_deref()).map_err(to_py)?;
        segments_dict(py, s, true)
    }

    /// The given steps of the complete episodes (global indices: row n of every column), in order, each
    /// with its `context_len` transitions strictly before it in its episode: the `sample_transitions` layout
    /// (obs, actions, rewards, next_obs, terminals, tasks, episodes, timesteps, ctx_* with context h > 0)
    /// plus `steps` (the indices). See docs/store.md. `context=` is a deprecated alias of `context_len=`.
    #[pyo3(signature = (steps, context_len=None, *, context=None), text_signature = "(self, steps, context_len=4)")]
    fn gather_steps<'py>(&self, py: Python<'py>, steps: &Bound<'_, PyAny>, context_len: Option<Count>,
                         context: Option<Count>) -> PyResult<Bound<'py, PyDict>> {
        let context = renamed(py, "gather_steps", ("context_len", context_len), ("context", context), 4)?;
        if steps.is_none() {
            return Err(verr("steps must be step indices (ints >= 0), not None"));
        }
        let steps = opt_episodes(Some(steps))?.unwrap_or_default();
        let n = steps.len();
        build(py, &self.inner, Kind::Steps(StepsSpec { steps: Arc::new(steps), range: (0, n), context }), None)
    }

    /// Every step of the complete episodes in order (or the given `steps`), in batches of `chunk`:
    /// an iterator of `gather_steps` batches (each filled with the GIL released). See docs/store.md.
    /// `context=` is a deprecated alias of `context_len=`.
    #[pyo3(signature = (context_len=None, chunk=Count(4096), steps=None, *, context=None),
           text_signature = "(self, context_len=4, chunk=4096, steps=None)")]
    fn iter_steps(&self, py: Python<'_>, context_len: Option<Count>, chunk: Count, steps: Option<&Bound<'_, PyAny>>,
                  context: Option<Count>) -> PyResult<StepIter> {
        let context = renamed(py, "iter_steps", ("context_len", context_len), ("context", context), 4)?;
        if chunk.0 == 0 {
            return Err(verr("chunk must be >= 1"));
        }
        let steps = match opt_episodes(steps)? {
            Some(v) => {
                let n = read(&self.inner).num_steps();
                if let Some(&bad) = v.iter().find(|&&x| x >= n) {
                    return Err(verr(format!("step {bad} out of range (the store has {n} steps in complete episodes)")));
                }
                v
            }
            None => (0..read(&self.inner).num_steps()).collect(),
        };
        Ok(StepIter { store: self.inner.clone(), steps: Arc::new(steps), context, chunk: chunk.0,
                      next: Mutex::new(0) })
    }

    /// The policy input of live episodes, laid out as `sample_windows` lays out a window ending at the
    /// current step: one row per stream (the `stream` of `add_step`), its window ending at step t = the
    /// number of transitions its open episode holds (0 without one). `obs` [N, obs_dim] is the current
    /// observation; its action and reward are not known yet (0); rtg = (target - rewards received) /
    /// return_scale; `tasks` = `tasks`, `episodes` = -1; with context h: ctx_* of steps [t-K-h+1, t],
    /// step t masked. See docs/store.md. `length=` and `context=` are deprecated aliases of `window_len=`
    /// and `context_len=`.
    #[pyo3(signature = (streams, obs, targets, tasks, window_len=None, context_len=None, return_scale=1.0, *, length=None, context=None),
           text_signature = "(self, streams, obs, targets, tasks, window_len=20, context_len=0, return_scale=1.0)")]
    #[allow(clippy::too_many_arguments)]
    fn live_windows<'py>(&self, py: Python<'py>, streams: &Bound<'_, PyAny>, obs: &Bound<'_, PyAny>,
                         targets: &Bound<'_, PyAny>, tasks: &Bound<'_, PyAny>, window_len: Option<Count>,
                         context_len: Option<Count>, return_scale: f64, length: Option<Count>,
                         context: Option<Count>) -> PyResult<Bound<'py, PyDict>> {
        let length = renamed(py, "live_windows", ("window_len", window_len), ("length", length), 20)?;
        let context = renamed(py, "live_windows", ("context_len", context_len), ("context", context), 0)?;
        if streams.is_none() || tasks.is_none() {
            return Err(verr("streams and tasks must be ints (one per stream), not None"));
        }
        let streams = opt_tasks(Some(streams))?.unwrap_or_default();
        let tasks = opt_tasks(Some(tasks))?.unwrap_or_default();
        let od = read(&self.inner).obs_dim;
        let (o, oshape) = floats(obs, "obs", true)?;
        let n = streams.len();
        let shape_ok = matches!(oshape.as_slice(), [a, b] if *a == n && *b == od)
            || (od == 1 && matches!(oshape.as_slice(), [a] if *a == n));
        if !shape_ok {
            return Err(verr(format!("obs: expected shape ({n}, obs_dim={od}) (one row per stream), got {oshape:?}")));
        }
        let t64 = targets.py().import("numpy")?.call_method1("asarray", (targets, "float64"))
            .map_err(|e| verr(format!("targets: expected numbers ({e})")))?;
        let scalar = t64.getattr("ndim")?.extract::<usize>()? == 0;
        let v: Vec<f64> = t64.call_method0("ravel")?.call_method0("tolist")?.extract()?;
        let targets = if scalar { vec![v[0]; n] } else { v };
        if targets.len() != n {
            return Err(verr(format!("targets: expected {n} values (one per stream) or a scalar, got {}", targets.len())));
        }
        let scale = return_scale as f32;
        if !(return_scale.is_finite() && return_scale > 0.0 && scale.is_finite() && scale > 0.0) {
            return Err(verr(format!("return_scale must be a finite number > 0 that float32 can hold (got {return_scale:?})")));
        }
        let spec = LiveSpec { streams, tasks, obs: o, targets, length, context, return_scale: scale };
        build(py, &self.inner, Kind::Live(spec), None)
    }

    /// Prompts from given segments of complete episodes (`length` steps of `episodes[i]` from
    /// `starts[i]`; an episode shorter than `length` is used whole, start 0, left-padded), in the
    /// `prompt_*` layout of `sample_windows`. See docs/store.md.
    #[pyo3(signature = (episodes, starts, length, return_scale=1.0),
           text_signature = "(self, episodes, starts, length, return_scale=1.0)")]
    fn prompt_segments<'py>(&self, py: Python<'py>, episodes: &Bound<'_, PyAny>, starts: &Bound<'_, PyAny>,
                            length: Count, return_scale: f64) -> PyResult<Bound<'py, PyDict>> {
        if episodes.is_none() || starts.is_none() {
            return Err(verr("episodes and starts must be ints >= 0 (one per segment), not None"));
        }
        let episodes = opt_episodes(Some(episodes))?.unwrap_or_default();
        let starts = opt_episodes(Some(starts)).map_err(|_| verr("starts must be ints >= 0"))?.unwrap_or_default();
        let scale = return_scale as f32;
        if !(return_scale.is_finite() && return_scale > 0.0 && scale.is_finite() && scale > 0.0) {
            return Err(verr(format!("return_scale must be a finite number > 0 that float32 can hold (got {return_scale:?})")));
        }
        let spec = SegmentSpec { episodes, starts, length: length.0, return_scale: scale };
        build(py, &self.inner, Kind::Segments(spec), None)
    }

    /// Iterator of batches prepared on a Rust thread (see docs/store.md). `kwargs` are those of
    /// `sample_windows` / `sample_transitions` (with the same deprecated aliases `length=`, `context=`).
    #[pyo3(signature = (kind="windows", depth=Count(2), num_batches=None, seed=None, **kwargs),
           text_signature = "(self, kind='windows', depth=2, num_batches=None, seed=None, **kwargs)")]
    fn prefetch(&self, py: Python<'_>, kind: &str, depth: Count, num_batches: Option<Count>, seed: Option<&Bound<'_, PyAny>>,
                kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Prefetch> {
        let get = |k: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
            match kwargs { Some(d) => Ok(d.get_item(k)?.filter(|v| !v.is_none())), None => Ok(None) }
        };
        let allowed: &[&str] = match kind {
            "windows" => &["batch", "window_len", "context_len", "return_scale", "columns", "prompt", "tasks", "anchor",
                           "length", "context"],
            "transitions" => &["batch", "context_len", "tasks", "context"],
            _ => return Err(verr(format!("kind must be \"windows\" or \"transitions\", got {kind:?}"))),
        };
        if let Some(d) = kwargs {
            for k in d.keys() {
                let k: String = k.extract()?;
                if !allowed.contains(&k.as_str()) {
                    return Err(verr(format!("prefetch(kind={kind:?}): unexpected argument {k:?} (allowed: {allowed:?})")));
                }
            }
        }
        let batch = get("batch")?.ok_or_else(|| verr("prefetch: batch is required"))?.extract::<Count>()?.0;
        let count = |k: &str| -> PyResult<Option<Count>> { get(k)?.map(|v| v.extract::<Count>()).transpose() };
        let context = renamed(py, "prefetch", ("context_len", count("context_len")?), ("context", count("context")?),
                              if kind == "windows" { 0 } else { 4 })?;
        let tasks = opt_tasks(get("tasks")?.as_ref())?;
        let k = if kind == "windows" {
            let length = renamed(py, "prefetch", ("window_len", count("window_len")?), ("length", count("length")?), 20)?;
            let rs: f64 = match get("return_scale")? { Some(v) => v.extract()?, None => 1.0 };
            let cols = column_names(get("columns")?.as_ref())?;
            let prompt = get("prompt")?;
            let anchor = match get("anchor")? { Some(v) => Anchor::parse(&v.extract::<String>()?).map_err(to_py)?, None => Anchor::End };
            self.window_kind(batch, length, context, rs, cols, prompt.as_ref(), tasks, anchor)?
        } else {
            Kind::Transitions(TransitionSpec { batch, context, tasks })
        };
        let (depth, num_batches) = (depth.0, num_batches.map(|n| n.0 as u64));
        if depth == 0 || depth > MAX_PREFETCH_DEPTH {
            return Err(verr(format!("depth must be in [1, {MAX_PREFETCH_DEPTH}] (got {depth})")));
        }
        let seed = {
            let s = read(&self.inner);
            let bytes = crate::sample::check_plan(&k.plan(&s).map_err(to_py)?).map_err(to_py)?;
            // up to depth + 1 batches are alive at once (queued, being filled)
            let held = bytes.saturating_mul(depth + 1);
            crate::store::check_alloc(held, &format!("prefetch(depth={depth}) of batches of {bytes} bytes"))
                .map_err(to_py)?;
            seed_arg(seed)?.unwrap_or_else(|| s.next_call_seed())
        };
        let p = Prefetch {
            store: self.inner.clone(),
            kind: Arc::new(k),
            seed,
            depth,
            num_batches,
            state: Mutex::new(PrefetchState { next: 0, worker: None, pid: 0, closed: false }),
        };
        Ok(p)
    }
}

struct Worker {
    rx: Receiver<crate::Result<Batch>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

struct PrefetchState {
    /// Index of the next batch handed to Python.
    next: u64,
    worker: Option<Worker>,
    pid: u32,
    closed: bool,
}

/// Batches prepared on a background thread; batch `i` equals the sampler
/// called with `seed=derive_seed(seed, i)`.
#[pyclass(module = "metadt._core", frozen)]
pub struct Prefetch {
    store: Arc<RwLock<Store>>,
    kind: Arc<Kind>,
    seed: u64,
    depth: usize,
    num_batches: Option<u64>,
    state: Mutex<PrefetchState>,
}


impl Prefetch {
    fn spawn(&self, start: u64) -> Worker {
        let (tx, rx) = sync_channel(self.depth);
        let stop = Arc::new(AtomicBool::new(false));
        let (store, kind, seed, total, stop2) = (self.store.clone(), self.kind.clone(), self.seed, self.num_batches, stop.clone());
        let spawned = std::thread::Builder::new().name("metadt-prefetch".into()).spawn(move || {
            let mut i = start;
            while total.is_none_or(|n| i < n) && !stop2.load(Ordering::Relaxed) {
                let b = kind.sample(&read(&store), derive(seed, i));
                if tx.send(b).is_err() {
                    break;
                }
                i += 1;
            }
        });
        // if the thread cannot be created, the channel is closed and __next__ reports it
        Worker { rx, stop, handle: spawned.ok() }
    }

    fn shutdown(st: &mut PrefetchState, join: bool) {
        if st.pid != std::process::id() {
            // a worker of the parent process (we are a forked child): leak it
            if let Some(w) = st.worker.take() {
                std::mem::forget(w);
            }
            return;
        }
        if let Some(mut w) = st.worker.take() {
            w.stop.store(true, Ordering::Relaxed);
            let h = w.handle.take();
            drop(w); // drops the receiver: a blocked send fails and the thread ends
            if let Some(h) = h {
                if join {
                    let _ = h.join();
                }
            }
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        if let Ok(mut st) = self.state.lock() {
            Prefetch::shutdown(&mut st, false);
        }
    }
}

#[pymethods]
impl Prefetch {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let res = py.detach(|| {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.closed || self.num_batches.is_some_and(|n| st.next >= n) {
                return None;
            }
            let me = std::process::id();
            if st.worker.is_none() || st.pid != me {
                if st.pid != me {
                    // forked: the parent's thread does not exist here; leak its channel
                    // (its internal state may have been mid-operation at the fork)
                    if let Some(w) = st.worker.take() {
                        std::mem::forget(w);
                    }
                }
                st.pid = me;
                let w = self.spawn(st.next);
                st.worker = Some(w);
            }
            let r = st.worker.as_ref().map(|w| w.rx.recv());
            match r {
                Some(Ok(b)) => {
                    st.next += 1;
                    Some(b)
                }
                _ => Some(Err(Error::invalid("prefetch thread ended unexpectedly (could it be started?)"))),
            }
        });
        match res {
            None => Err(PyStopIteration::new_err(())),
            Some(Ok(b)) => batch_to_dict(py, b),
            Some(Err(e)) => Err(to_py(e)),
        }
    }

    /// Stop the background thread (idempotent).
    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.closed = true;
            Prefetch::shutdown(&mut st, true);
        });
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }

    /// Index of the next batch to be returned.
    #[getter]
    fn index(&self) -> u64 {
        self.state.lock().map(|s| s.next).unwrap_or(0)
    }
    #[getter]
    fn seed(&self) -> u64 {
        self.seed
    }
}

/// Every step of a store (or given steps), in chunks: see `TrajectoryStore.iter_steps`.
#[pyclass(module = "metadt._core", frozen)]
pub struct StepIter {
    store: Arc<RwLock<Store>>,
    steps: Arc<Vec<usize>>,
    context: usize,
    chunk: usize,
    next: Mutex<usize>,
}

#[pymethods]
impl StepIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let range = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let lo = *next;
            if lo >= self.steps.len() {
                return Err(PyStopIteration::new_err(()));
            }
            let hi = lo.saturating_add(self.chunk).min(self.steps.len());
            *next = hi;
            (lo, hi)
        };
        let spec = StepsSpec { steps: self.steps.clone(), range, context: self.context };
        build(py, &self.store, Kind::Steps(spec), None)
    }

    fn __len__(&self) -> usize {
        self.steps.len().div_ceil(self.chunk)
    }

    /// Number of steps the iteration covers.
    #[getter]
    fn num_steps(&self) -> usize {
        self.steps.len()
    }
}

/// The short-episode rule: candidate starts (lo, hi) of a length-`length` segment of an episode of
/// `steps` steps, or None when steps < length (the segment is then the whole episode, start 0,
/// left-padded). See docs/store.md.
#[pyfunction]
#[pyo3(signature = (steps, length, start_min=Count(0)))]
fn segment_range(steps: Count, length: Count, start_min: Count) -> PyResult<Option<(usize, usize)>> {
    if length.0 == 0 {
        return Err(verr("length must be >= 1"));
    }
    Ok(crate::segments::segment_starts(steps.0, length.0, start_min.0))
}

/// The seed of batch `index` of `prefetch(seed=seed)`.
#[pyfunction]
fn derive_seed(seed: u64, index: u64) -> u64 {
    derive(seed, index)
}

/// Whether rayon parallelism is available in this process (False in a child
/// forked after the parent used it).
#[pyfunction]
fn parallel_available() -> bool {
    crate::sample::parallel_ok()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyStore>()?;
    m.add_class::<Prefetch>()?;
    m.add_function(wrap_pyfunction!(derive_seed, m)?)?;
    m.add_function(wrap_pyfunction!(parallel_available, m)?)?;
    m.add_function(wrap_pyfunction!(segment_range, m)?)?;
    m.add_class::<StepIter>()?;
    m.add("PROMPT_STRATEGIES", PyTuple::new(m.py(), Strategy::NAMES)?)?;
    m.add("ANCHORS", PyTuple::new(m.py(), ["start", "end"])?)?;
    m.add("FORMAT_VERSION", crate::format::FORMAT_VERSION)?;
    m.add("ACTION_PAD", crate::sample::ACTION_PAD)?;
    Ok(())
}
