//! On-disk format: a directory with `manifest.json` and one `.npy` per column.
//!
//! ```text
//! store/
//!   manifest.json          format, version, dims, counts, per-file dtype/shape/bytes/crc32, metadata
//!   obs.npy                float32 [num_steps, obs_dim]
//!   actions.npy            float32 [num_steps, act_dim]
//!   rewards.npy            float32 [num_steps]
//!   next_obs.npy           float32 [num_steps, obs_dim]
//!   terminals.npy          float32 [num_steps]
//!   truncations.npy        float32 [num_steps]   (0/1; version >= 2)
//!   rtg.npy                float32 [num_steps]   (undiscounted reward-to-go)
//!   episode_offsets.npy    int64   [num_episodes] (first row of each episode)
//!   episode_lengths.npy    int64   [num_episodes]
//!   episode_tasks.npy      int64   [num_episodes]
//!   episode_returns.npy    float64 [num_episodes]
//!   columns/<name>.npy     float32 [num_steps, d] (attached columns)
//! ```
//! `crc32` is the zlib/IEEE CRC-32 of the whole `.npy` file (`zlib.crc32`).
//! The `.npy` headers are padded so the data starts at a multiple of 64 bytes.
//! Saving writes a temporary sibling directory, fsyncs every file and the
//! directory, then renames it into place (an existing store at the path is
//! replaced only after the new one is complete).
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::store::{check_column_name, Attached, Buf, Column, Store, BUILTIN, MAX_WIDTH, RESERVED};

/// Format name written in the manifest.
pub const FORMAT_NAME: &str = "metadt-trajectory-store";
/// Current format version.
pub const FORMAT_VERSION: u64 = 2;

/// Oldest format version `load` reads (version 1 has no `truncations.npy`:
/// the last step of every episode that is not terminal is a truncation).
pub const MIN_FORMAT_VERSION: u64 = 1;

#[cfg(not(target_endian = "little"))]
compile_error!("metadt-core's on-disk format assumes a little-endian machine");

fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape_s = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
    let total = 10 + dict.len() + 1;
    let padded = total.div_ceil(64) * 64;
    dict.push_str(&" ".repeat(padded - total));
    dict.push('\n');
    let mut h = Vec::with_capacity(padded);
    h.extend_from_slice(b"\x93NUMPY\x01\x00");
    h.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h
}

fn as_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: plain-old-data numeric slices viewed as bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

struct Written {
    name: String,
    file: String,
    descr: &'static str,
    shape: Vec<usize>,
    bytes: u64,
    crc: u32,
}

fn write_npy(dir: &Path, rel: &str, name: &str, descr: &'static str, shape: &[usize], data: &[u8]) -> Result<Written> {
    let path = dir.join(rel);
    let h = npy_header(descr, shape);
    let mut f = File::create(&path).map_err(|e| Error::io(&path, e))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h);
    crc.update(data);
    f.write_all(&h).and_then(|_| f.write_all(data)).and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&path, e))?;
    Ok(Written {
        name: name.to_string(),
        file: rel.to_string(),
        descr,
        shape: shape.to_vec(),
        bytes: (h.len() + data.len()) as u64,
        crc: crc.finalize(),
    })
}

fn fsync_dir(p: &Path) {
    if let Ok(f) = File::open(p) {
        let _ = f.sync_all();
    }
}

/// Largest `manifest.json` that `load` (and `save`'s is-a-store check) reads.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// What `save` may replace at `path`: nothing (absent), an empty directory,
/// or a metadt store (a directory whose `manifest.json` is a regular file
/// with our format name). Anything else is refused, so `save` never deletes
/// what it does not own. Returns whether something is there.
fn check_save_target(path: &Path) -> Result<bool> {
    let md = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(path, e)),
    };
    let refuse = |msg: String| Err(Error::Exists { path: path.to_path_buf(), msg });
    if md.file_type().is_symlink() {
        return refuse("is a symbolic link; save does not replace it (save to the path it points to)".into());
    }
    if !md.is_dir() {
        return refuse(format!("exists and is {}; save only replaces a metadt store or an empty directory",
                              describe(&md.file_type())));
    }
    let mut entries = fs::read_dir(path).map_err(|e| Error::io(path, e))?;
    if entries.next().is_none() {
        return Ok(true);
    }
    match open_in(path, "manifest.json").and_then(|f| read_manifest(&path.join("manifest.json"), f)) {
        Ok(m) if m.get("format").and_then(Value::as_str) == Some(FORMAT_NAME) => Ok(true),
        _ => refuse(format!("is a non-empty directory that is not a metadt store (no manifest.json with format \
                             {FORMAT_NAME:?}); save does not delete its contents")),
    }
}

/// A short random suffix for sibling temporary names.
fn unique_suffix() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    format!("{}.{:08x}", std::process::id(), crate::rng::mix64(t ^ (&t as *const u64 as u64)) & 0xffff_ffff)
}

/// Whether process `pid` may still be running (unknown counts as running).
fn pid_alive(pid: u64) -> bool {
    if pid == u64::from(std::process::id()) {
        return true;
    }
    #[cfg(unix)]
    {
        match libc::pid_t::try_from(pid) {
            Ok(p) if p > 0 => {
                // SAFETY: signal 0 only checks that the process exists; p > 0 names one process
                if unsafe { libc::kill(p, 0) } == 0 {
                    return true;
                }
                std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
            }
            _ => true,
        }
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// Remove what killed saves of `parent/name` left behind: our sibling
/// directories `.{name}.{pid}.{8 hex}.tmp` (a store being written) and
/// `.{name}.{pid}.{8 hex}.old` (the replaced store being deleted) whose
/// process is gone. Entries of a live process (another save in progress, or
/// this process) and any other name are left alone; a symbolic link of such a
/// name is removed itself, never followed. Returns the removed paths.
pub fn clean_stale_save_siblings(parent: &Path, name: &str) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let prefix = format!(".{name}.");
    let entries = match fs::read_dir(parent) {
        Ok(e) => e,
        Err(_) => return removed,
    };
    for e in entries.flatten() {
        let fname = e.file_name();
        let Some(fname) = fname.to_str() else { continue };
        let Some(rest) = fname.strip_prefix(&prefix) else { continue };
        let Some(rest) = rest.strip_suffix(".tmp").or_else(|| rest.strip_suffix(".old")) else { continue };
        let Some((pid, hex)) = rest.split_once('.') else { continue };
        if pid.is_empty() || pid.len() > 19 || !pid.bytes().all(|b| b.is_ascii_digit())
            || hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let Ok(pid) = pid.parse::<u64>() else { continue };
        if pid_alive(pid) {
            continue;
        }
        let p = e.path();
        let ok = match fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => fs::remove_dir_all(&p).is_ok(),
            Ok(_) => fs::remove_file(&p).is_ok(),
            Err(_) => false,
        };
        if ok {
            removed.push(p);
        }
    }
    removed
}

impl Store {
    /// Save the closed episodes (and attached columns, metadata) to the
    /// directory `path`, atomically. Open episodes (online mode) are not saved.
    ///
    /// `path` must be absent, an empty directory or a metadt store (which is
    /// replaced); a regular file, a symbolic link or any other directory is
    /// refused with [`Error::Exists`] and left untouched. After a successful
    /// save, the temporary siblings of killed saves of the same target are
    /// removed ([`clean_stale_save_siblings`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let name = path.file_name().ok_or_else(|| Error::invalid(format!("{}: not a valid store path", path.display())))?
            .to_string_lossy().to_string();
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        for a in &self.extra {
            check_column_name(&a.name)?;
        }
        check_save_target(path)?;
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let tmp = parent.join(format!(".{name}.{}.tmp", unique_suffix()));
        fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let res = self.write_into(&tmp).and_then(|_| {
            fsync_dir(&tmp);
            // checked again right before replacing (the target may have changed meanwhile);
            // the old store is moved to a fresh name of our own, never over an existing path
            let had_old = check_save_target(path)?;
            let old = parent.join(format!(".{name}.{}.old", unique_suffix()));
            if had_old {
                fs::rename(path, &old).map_err(|e| Error::io(path, e))?;
            }
            fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
            fsync_dir(&parent);
            if had_old {
                let _ = fs::remove_dir_all(&old);
            }
            // only now that the new store is in place: what killed saves of this target left
            // (an `.old` may hold the only copy of a store until a save replaces it)
            clean_stale_save_siblings(&parent, &name);
            Ok(())
        });
        if res.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        res
    }

    fn write_into(&self, dir: &Path) -> Result<()> {
        let n = self.num_steps();
        let e = self.num_episodes();
        let (od, ad) = (self.obs_dim, self.act_dim);
        let mut files = Vec::new();
        let cols: [(&str, &Column, Vec<usize>); 7] = [
            ("obs", &self.obs, vec![n, od]),
            ("actions", &self.actions, vec![n, ad]),
            ("rewards", &self.rewards, vec![n]),
            ("next_obs", &self.next_obs, vec![n, od]),
            ("terminals", &self.terminals, vec![n]),
            ("truncations", &self.truncations, vec![n]),
            ("rtg", &self.rtg, vec![n]),
        ];
        for (name, c, shape) in cols.iter() {
            files.push(write_npy(dir, &format!("{name}.npy"), name, "<f4", shape, as_bytes(self.live(c)))?);
        }
        let offs: Vec<i64> = self.ep_off.iter().map(|&x| x as i64).collect();
        let lens: Vec<i64> = self.ep_len.iter().map(|&x| x as i64).collect();
        files.push(write_npy(dir, "episode_offsets.npy", "episode_offsets", "<i8", &[e], as_bytes(&offs))?);
        files.push(write_npy(dir, "episode_lengths.npy", "episode_lengths", "<i8", &[e], as_bytes(&lens))?);
        files.push(write_npy(dir, "episode_tasks.npy", "episode_tasks", "<i8", &[e], as_bytes(&self.ep_task))?);
        files.push(write_npy(dir, "episode_returns.npy", "episode_returns", "<f8", &[e], as_bytes(&self.ep_ret))?);
        let mut attached = Vec::new();
        if !self.extra.is_empty() {
            let cdir = dir.join("columns");
            fs::create_dir(&cdir).map_err(|e| Error::io(&cdir, e))?;
            for a in &self.extra {
                check_column_name(&a.name)?;
                let w = a.col.width();
                files.push(write_npy(dir, &format!("columns/{}.npy", a.name), &a.name, "<f4", &[n, w],
                    as_bytes(self.live(&a.col)))?);
                attached.push(json!({"name": a.name, "width": w, "nonneg": a.nonneg}));
            }
            fsync_dir(&cdir);
        }
        let metadata: Value = serde_json::from_str(&self.metadata).unwrap_or_else(|_| json!({}));
        let manifest = json!({
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "obs_dim": od,
            "act_dim": ad,
            "capacity": self.capacity,
            "num_episodes": e,
            "num_steps": n,
            "checksum": "crc32 (zlib) of each whole file",
            "files": files.iter().map(|w| json!({
                "name": w.name, "file": w.file, "dtype": w.descr, "shape": w.shape,
                "bytes": w.bytes, "crc32": w.crc,
            })).collect::<Vec<_>>(),
            "attached_columns": attached,
            "metadata": metadata,
        });
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| Error::invalid(format!("the manifest does not serialize: {e}")))? + "\n";
        let mp = dir.join("manifest.json");
        let mut f = File::create(&mp).map_err(|e| Error::io(&mp, e))?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| Error::io(&mp, e))?;
        Ok(())
    }

    /// Load a store saved by [`Store::save`]. With `mmap`, the float32 columns
    /// are memory-mapped (pages are read on demand; the store stays
    /// appendable: a column is copied to memory on its first mutation).
    ///
    /// Always checked (the file-trust model, see docs/store.md): the manifest
    /// (every field, with overflow-checked sizes; the same column-name rule
    /// as `attach_column`); every file is a regular file inside the directory
    /// (no symbolic link at any component, no FIFO or device: checked before
    /// opening); sizes, `.npy` headers, dtypes and shapes; the episode tables
    /// (CRC-32, contiguous, lengths >= 1 summing to `num_steps`, finite returns).
    /// With `verify`, also every file's CRC-32 (reads every byte), that every
    /// float column is finite, that the returns-to-go and returns match the
    /// rewards, and that a column flagged non-negative is.
    pub fn load(path: impl AsRef<Path>, mmap: bool, verify: bool) -> Result<Store> {
        let dir = path.as_ref();
        let mp = dir.join("manifest.json");
        match fs::metadata(dir) {
            Ok(md) if md.is_dir() => {}
            Ok(md) => return Err(Error::format(dir, format!("is {}, not a store directory", describe(&md.file_type())))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Format { file: dir.to_path_buf(), msg: "no such store directory".into(), missing: true })
            }
            Err(e) => return Err(Error::io(dir, e)),
        }
        let mf = match open_in(dir, "manifest.json") {
            Ok(f) => f,
            Err(Error::Format { missing: true, .. }) => {
                return Err(Error::Format { file: mp, msg: "missing: not a metadt store (no manifest.json)".into(), missing: true })
            }
            Err(e) => return Err(e),
        };
        let m = read_manifest(&mp, mf)?;
        let bad = |msg: String| Error::format(&mp, msg);
        let fmt = m.get("format").and_then(Value::as_str).unwrap_or("");
        if fmt != FORMAT_NAME {
            return Err(bad(format!("format is {fmt:?}, expected {FORMAT_NAME:?}")));
        }
        let version = m.get("version").and_then(Value::as_u64)
            .ok_or_else(|| bad("missing or invalid \"version\"".into()))?;
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(bad(format!("unsupported format version {version} \
                (this metadt reads versions {MIN_FORMAT_VERSION} to {FORMAT_VERSION})")));
        }
        let get_count = |k: &str| m.get(k).and_then(Value::as_u64).and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| bad(format!("missing or invalid {k:?} (expected a non-negative integer, got {})",
                                       m.get(k).map_or("nothing".to_string(), |v| v.to_string()))));
        let (od, ad, n, ne) = (get_count("obs_dim")?, get_count("act_dim")?, get_count("num_steps")?, get_count("num_episodes")?);
        if ne > n || (n > 0 && ne == 0) {
            return Err(bad(format!("{ne} episodes cannot hold {n} steps (every episode has >= 1 step)")));
        }
        let capacity = match m.get("capacity") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64().and_then(|x| usize::try_from(x).ok()) {
                Some(c) if c >= 1 => Some(c),
                _ => return Err(bad(format!("invalid \"capacity\" {v} (expected null or an integer >= 1)"))),
            },
        };
        let metadata = match m.get("metadata") {
            None => "{}".to_string(),
            Some(v @ Value::Object(_)) => v.to_string(),
            Some(v) => return Err(bad(format!("\"metadata\" must be a JSON object, got {}", json_kind(v)))),
        };
        // attached columns: the API's name rule, widths in range, no duplicates
        let mut attached: Vec<(String, usize, Option<bool>)> = Vec::new();
        match m.get("attached_columns") {
            None | Some(Value::Null) => {}
            Some(Value::Array(att)) => {
                for a in att {
                    let name = a.get("name").and_then(Value::as_str)
                        .ok_or_else(|| bad("attached column without a name".into()))?;
                    check_column_name(name).map_err(|e| bad(format!("attached column: {e}")))?;
                    if attached.iter().any(|(x, _, _)| x.eq_ignore_ascii_case(name)) {
                        return Err(bad(format!("attached column {name:?} is listed twice (names are compared ignoring case)")));
                    }
                    let w = a.get("width").and_then(Value::as_u64).and_then(|x| usize::try_from(x).ok())
                        .filter(|&w| (1..=MAX_WIDTH).contains(&w))
                        .ok_or_else(|| bad(format!("attached column {name:?}: width must be an integer in [1, {MAX_WIDTH}]")))?;
                    let nonneg = match a.get("nonneg") {
                        None | Some(Value::Null) => None,
                        Some(Value::Bool(b)) => Some(*b),
                        Some(v) => return Err(bad(format!("attached column {name:?}: nonneg must be a boolean, got {v}"))),
                    };
                    attached.push((name.to_string(), w, nonneg));
                }
            }
            Some(v) => return Err(bad(format!("\"attached_columns\" must be a list, got {}", json_kind(v)))),
        }
        // files: exactly the expected entries, each once
        let files = m.get("files").and_then(Value::as_array).ok_or_else(|| bad("missing \"files\" (a list)".into()))?;
        let has_truncations = version >= 2;
        let mut expected: Vec<String> = BUILTIN.iter().chain(RESERVED.iter())
            .filter(|s| has_truncations || **s != "truncations").map(|s| s.to_string()).collect();
        expected.extend(attached.iter().map(|a| a.0.clone()));
        let mut seen: Vec<&str> = Vec::new();
        for f in files {
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| bad("a \"files\" entry without a name".into()))?;
            if !expected.iter().any(|e| e == name) {
                return Err(bad(format!("unexpected \"files\" entry {name:?} (not a column or episode table of this store)")));
            }
            if seen.contains(&name) {
                return Err(bad(format!("\"files\" lists {name:?} twice")));
            }
            seen.push(name);
        }
        let find = |name: &str| -> Result<&Value> {
            files.iter().find(|f| f.get("name").and_then(Value::as_str) == Some(name))
                .ok_or_else(|| bad(format!("no entry for {name:?} in \"files\"")))
        };
        let mut store = Store::new(od, ad, capacity).map_err(|e| bad(e.to_string()))?;
        if !mmap {
            // everything is read into memory: refuse a store larger than the machine before allocating
            let width = attached.iter().try_fold(2 * od + ad + 4, |a, c| a.checked_add(c.1));
            let bytes = width.and_then(|w| w.checked_mul(n)).and_then(|x| x.checked_mul(4)).unwrap_or(usize::MAX);
            crate::store::check_alloc(bytes, "reading this store into memory (mmap=False)")
                .map_err(|e| Error::Memory(format!("{}: {e}; load it with mmap=True", dir.display())))?;
        }
        let load_f32 = |name: &str, rel: &str, shape: &[usize]| -> Result<Column> {
            let (buf, _) = read_npy(dir, rel, find(name)?, "<f4", shape, mmap, verify)?;
            Ok(Column::from_buf(buf, if shape.len() > 1 { shape[1] } else { 1 }))
        };
        store.obs = load_f32("obs", "obs.npy", &[n, od])?;
        store.actions = load_f32("actions", "actions.npy", &[n, ad])?;
        store.rewards = load_f32("rewards", "rewards.npy", &[n])?;
        store.next_obs = load_f32("next_obs", "next_obs.npy", &[n, od])?;
        store.terminals = load_f32("terminals", "terminals.npy", &[n])?;
        if has_truncations {
            store.truncations = load_f32("truncations", "truncations.npy", &[n])?;
        }
        store.rtg = load_f32("rtg", "rtg.npy", &[n])?;
        let small = |name: &str, descr: &str| -> Result<(Vec<u8>, PathBuf)> {
            let rel = format!("{name}.npy");
            let (_, bytes) = read_npy(dir, &rel, find(name)?, descr, &[ne], false, true)?;
            let bytes = bytes.ok_or_else(|| Error::format(dir.join(&rel), "internal: table not read"))?;
            Ok((bytes, dir.join(rel)))
        };
        let to_i64 = |b: &[u8]| b.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect::<Vec<i64>>();
        let (ob, of) = small("episode_offsets", "<i8")?;
        let (lb, lf) = small("episode_lengths", "<i8")?;
        let (tb, _) = small("episode_tasks", "<i8")?;
        let (rb, rf) = small("episode_returns", "<f8")?;
        let offs = to_i64(&ob);
        let lens = to_i64(&lb);
        let mut acc = 0usize;
        for (i, (&o, &l)) in offs.iter().zip(&lens).enumerate() {
            if l < 1 {
                return Err(Error::format(&lf, format!("episode {i} has length {l} (must be >= 1)")));
            }
            if usize::try_from(o).ok() != Some(acc) {
                return Err(Error::format(&of, format!("episode {i} starts at row {o}, expected {acc} (episodes are contiguous)")));
            }
            acc = match usize::try_from(l).ok().and_then(|l| acc.checked_add(l)) {
                Some(a) if a <= n => a,
                _ => return Err(Error::format(&lf, format!(
                    "episode lengths up to episode {i} sum to more than num_steps ({n})"))),
            };
        }
        if acc != n {
            return Err(Error::format(&lf, format!("episode lengths sum to {acc}, but num_steps is {n}")));
        }
        let rets: Vec<f64> = rb.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        if let Some(i) = rets.iter().position(|r| !r.is_finite()) {
            return Err(Error::format(&rf, format!("episode {i} has a non-finite return")));
        }
        store.ep_off = offs.iter().map(|&x| x as usize).collect();
        store.ep_len = lens.iter().map(|&x| x as usize).collect();
        store.ep_task = to_i64(&tb);
        store.ep_ret = rets;
        store.rebuild_task_index();
        if !has_truncations {
            // version 1: truncation was implicit at the end of an episode that is not terminal
            crate::store::check_alloc(n.saturating_mul(4), "the truncations column of a version-1 store")?;
            let term = store.terminals.raw();
            let mut tr = vec![0f32; n];
            for (&o, &l) in store.ep_off.iter().zip(&store.ep_len) {
                if term[o + l - 1] == 0.0 {
                    tr[o + l - 1] = 1.0;
                }
            }
            store.truncations = Column::from_vec(tr, 1);
        }
        for (name, w, nonneg) in attached {
            let rel = format!("columns/{name}.npy");
            let col = load_f32(&name, &rel, &[n, w])?;
            let nonneg = match nonneg {
                Some(b) => b,
                None => col.raw().iter().all(|&x| x >= 0.0),
            };
            store.extra.push(Attached { name, col, nonneg });
        }
        store.metadata = metadata;
        if verify {
            verify_content(&store, dir)?;
        }
        Ok(store)
    }
}

/// Index of the first non-finite value (vectorizable scan).
fn first_non_finite(v: &[f32]) -> Option<usize> {
    const CHUNK: usize = 4096;
    for (c, chunk) in v.chunks(CHUNK).enumerate() {
        let bad = chunk.iter().fold(0u32, |a, x| a | ((x.to_bits() & 0x7f80_0000 == 0x7f80_0000) as u32));
        if bad != 0 {
            return chunk.iter().position(|x| !x.is_finite()).map(|i| c * CHUNK + i);
        }
    }
    None
}

/// The content checks of `load(verify=true)` (after the CRCs): finite float
/// columns, returns-to-go and returns recomputed from the rewards, and the
/// non-negative flag of attached columns.
fn verify_content(s: &Store, dir: &Path) -> Result<()> {
    let mut cols: Vec<(String, &Column)> = vec![
        ("obs.npy".into(), &s.obs), ("actions.npy".into(), &s.actions), ("rewards.npy".into(), &s.rewards),
        ("next_obs.npy".into(), &s.next_obs), ("terminals.npy".into(), &s.terminals),
        ("truncations.npy".into(), &s.truncations), ("rtg.npy".into(), &s.rtg),
    ];
    cols.extend(s.extra.iter().map(|a| (format!("columns/{}.npy", a.name), &a.col)));
    for (rel, c) in &cols {
        let v = s.live(c);
        if let Some(i) = first_non_finite(v) {
            let w = c.width();
            return Err(Error::format(dir.join(rel), format!(
                "non-finite value {} at row {}, column {} (verify rejects NaN and infinity)", v[i], i / w, i % w)));
        }
    }
    if let Some(i) = s.live(&s.truncations).iter().position(|&x| x != 0.0 && x != 1.0) {
        return Err(Error::format(dir.join("truncations.npy"), format!(
            "value {} at row {i} (truncations are 0 or 1)", s.live(&s.truncations)[i])));
    }
    let (rew, rtg) = (s.live(&s.rewards), s.live(&s.rtg));
    for (e, (&o, &l)) in s.ep_off.iter().zip(&s.ep_len).enumerate() {
        let mut acc = 0f64;
        for t in (o..o + l).rev() {
            acc += rew[t] as f64;
            if rtg[t] != acc as f32 {
                return Err(Error::format(dir.join("rtg.npy"), format!(
                    "episode {e}, step {}: return-to-go {} does not match the rewards ({})", t - o, rtg[t], acc as f32)));
            }
        }
        if s.ep_ret[e] != acc {
            return Err(Error::format(dir.join("episode_returns.npy"), format!(
                "episode {e}: return {} does not match the rewards ({acc})", s.ep_ret[e])));
        }
    }
    for a in &s.extra {
        if a.nonneg {
            if let Some(i) = s.live(&a.col).iter().position(|&x| x < 0.0) {
                return Err(Error::format(dir.join(format!("columns/{}.npy", a.name)), format!(
                    "the manifest flags the column non-negative, but value {i} is negative")));
            }
        }
    }
    Ok(())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// "a FIFO", "a directory", ... for messages.
fn describe(ft: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_block_device() || ft.is_char_device() {
            return "a device";
        }
    }
    if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Read and parse `manifest.json` (at most [`MAX_MANIFEST_BYTES`]; a JSON object).
fn read_manifest(mp: &Path, f: File) -> Result<Value> {
    let size = f.metadata().map_err(|e| Error::io(mp, e))?.len();
    if size > MAX_MANIFEST_BYTES {
        return Err(Error::format(mp, format!("{size} bytes: larger than the {MAX_MANIFEST_BYTES}-byte limit of a manifest")));
    }
    let mut text = String::new();
    f.take(MAX_MANIFEST_BYTES + 1).read_to_string(&mut text).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => Error::format(mp, "not valid UTF-8 text"),
        _ => Error::io(mp, e),
    })?;
    let m: Value = serde_json::from_str(&text).map_err(|e| Error::format(mp, format!("not valid JSON ({e})")))?;
    if !m.is_object() {
        return Err(Error::format(mp, format!("expected a JSON object, got {}", json_kind(&m))));
    }
    Ok(m)
}

/// Open the file `rel` ('/'-separated plain components) inside `dir` without
/// following a symbolic link at any component (`dir` itself may be one), and
/// only if every component is what it should be (directories, then a regular
/// file): the type is checked before opening, so a FIFO or device is never
/// opened (a FIFO would block), and again on the opened file (no race).
fn open_in(dir: &Path, rel: &str) -> Result<File> {
    let path = dir.join(rel);
    let comps: Vec<&str> = rel.split('/').collect();
    if comps.iter().any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains('\\')) {
        return Err(Error::format(&path, "invalid file name in a store"));
    }
    let f = open_nofollow(dir, &comps, &path)?;
    let md = f.metadata().map_err(|e| Error::io(&path, e))?;
    if !md.is_file() {
        return Err(Error::format(&path, format!("is {}, not a regular file", describe(&md.file_type()))));
    }
    Ok(f)
}

#[cfg(unix)]
fn open_nofollow(dir: &Path, comps: &[&str], path: &Path) -> Result<File> {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let cstr = |b: &[u8]| CString::new(b).map_err(|_| Error::format(path, "a NUL byte in the path"));
    let os = |p: &Path| {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Format { file: p.to_path_buf(), msg: "missing".into(), missing: true }
        } else {
            Error::io(p, e)
        }
    };
    let d = cstr(dir.as_os_str().as_bytes())?;
    // SAFETY: libc calls on NUL-terminated strings and a zeroed stat buffer; each fd
    // returned is wrapped in an OwnedFd exactly once.
    let fd = unsafe { libc::open(d.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(os(dir));
    }
    let mut cur = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut here = dir.to_path_buf();
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        here.push(c);
        let name = cstr(c.as_bytes())?;
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstatat(cur.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } < 0 {
            return Err(os(&here));
        }
        let fmt = st.st_mode & libc::S_IFMT;
        let want = if last { libc::S_IFREG } else { libc::S_IFDIR };
        if fmt != want {
            let what = match fmt {
                libc::S_IFLNK => "a symbolic link (a store's files must be inside its directory)",
                libc::S_IFIFO => "a FIFO",
                libc::S_IFSOCK => "a socket",
                libc::S_IFCHR | libc::S_IFBLK => "a device",
                libc::S_IFDIR => "a directory",
                libc::S_IFREG => "a regular file",
                _ => "of an unknown file type",
            };
            let expect = if last { "a regular file" } else { "a directory" };
            return Err(Error::format(&here, format!("is {what}, expected {expect}")));
        }
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC
            | if last { libc::O_NONBLOCK } else { libc::O_DIRECTORY };
        let nfd = unsafe { libc::openat(cur.as_raw_fd(), name.as_ptr(), flags) };
        if nfd < 0 {
            return Err(os(&here));
        }
        cur = unsafe { OwnedFd::from_raw_fd(nfd) };
    }
    Ok(File::from(cur))
}

#[cfg(not(unix))]
fn open_nofollow(dir: &Path, comps: &[&str], path: &Path) -> Result<File> {
    let mut here = dir.to_path_buf();
    for (i, c) in comps.iter().enumerate() {
        here.push(c);
        let md = fs::symlink_metadata(&here).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Format { file: here.clone(), msg: "missing".into(), missing: true },
            _ => Error::io(&here, e),
        })?;
        let ok = if i + 1 == comps.len() { md.is_file() } else { md.is_dir() };
        if !ok || md.file_type().is_symlink() {
            return Err(Error::format(&here, format!("is {}", describe(&md.file_type()))));
        }
    }
    File::open(path).map_err(|e| Error::io(path, e))
}
/// Fill `dst[done..total]` from the file at `offset` onwards (positional reads
/// straight into not-yet-initialized memory, so nothing is zeroed first).
fn read_into(f: &File, dst: *mut u8, mut done: usize, total: usize, mut offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        while done < total {
            let want = (total - done).min(1 << 30);
            // SAFETY: writes at most `want` bytes into our allocation at `dst + done`.
            let n = unsafe { libc::pread(f.as_raw_fd(), dst.add(done) as *mut libc::c_void, want, offset as libc::off_t) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            done += n as usize;
            offset += n as u64;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        use std::io::{Seek, SeekFrom};
        let mut f = f;
        f.seek(SeekFrom::Start(offset))?;
        // SAFETY: zero the rest first so the slice is initialized, then read into it.
        unsafe { std::ptr::write_bytes(dst.add(done), 0, total - done) };
        let buf = unsafe { std::slice::from_raw_parts_mut(dst.add(done), total - done) };
        f.read_exact(buf)
    }
}

/// Parse a `.npy` header; returns (descr, fortran_order, shape, data offset).
fn parse_header(file: &Path, head: &[u8]) -> Result<(String, bool, Vec<usize>, usize)> {
    let bad = |msg: &str| Error::format(file, msg.to_string());
    if head.len() < 10 || &head[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file (bad magic)"));
    }
    let (hlen, start) = match head[6] {
        1 => (u16::from_le_bytes([head[8], head[9]]) as usize, 10),
        2 | 3 => {
            if head.len() < 12 {
                return Err(bad("truncated .npy header"));
            }
            (u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize, 12)
        }
        v => return Err(bad(&format!("unsupported .npy version {v}"))),
    };
    if head.len() < start + hlen {
        return Err(bad("truncated .npy header"));
    }
    let dict = std::str::from_utf8(&head[start..start + hlen]).map_err(|_| bad("corrupt .npy header (not text)"))?;
    let field = |key: &str| -> Option<&str> {
        let i = dict.find(&format!("'{key}'"))?;
        let rest = dict[i + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr").and_then(|r| r.strip_prefix('\'')).and_then(|r| r.split('\'').next())
        .ok_or_else(|| bad("corrupt .npy header (no descr)"))?.to_string();
    let fortran = field("fortran_order").map(|r| r.starts_with("True"))
        .ok_or_else(|| bad("corrupt .npy header (no fortran_order)"))?;
    let shape_s = field("shape").and_then(|r| r.strip_prefix('(')).and_then(|r| r.split(')').next())
        .ok_or_else(|| bad("corrupt .npy header (no shape)"))?;
    let mut shape = Vec::new();
    for p in shape_s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        shape.push(p.parse::<usize>().map_err(|_| bad("corrupt .npy header (bad shape)"))?);
    }
    Ok((descr, fortran, shape, start + hlen))
}
/// Open and check one `.npy` file of the manifest (`rel` is the only file
/// name the entry may give). Returns the f32 buffer (mapped or owned) or, for
/// a non-f32 table, the raw data bytes.
fn read_npy(dir: &Path, rel: &str, entry: &Value, descr: &str, shape: &[usize], mmap: bool, verify: bool)
    -> Result<(Buf, Option<Vec<u8>>)> {
    let path = dir.join(rel);
    let mp = dir.join("manifest.json");
    let bad = |msg: String| Error::format(&mp, msg);
    let m_file = entry.get("file").and_then(Value::as_str).unwrap_or("");
    if m_file != rel {
        return Err(bad(format!("file {m_file:?} in the manifest, expected {rel:?}")));
    }
    let m_dtype = entry.get("dtype").and_then(Value::as_str).unwrap_or("");
    if m_dtype != descr {
        return Err(bad(format!("{rel}: dtype {m_dtype:?} in the manifest, expected {descr:?}")));
    }
    let m_shape: Option<Vec<usize>> = entry.get("shape").and_then(Value::as_array)
        .and_then(|a| a.iter().map(|x| x.as_u64().and_then(|x| usize::try_from(x).ok())).collect());
    if m_shape.as_deref() != Some(shape) {
        return Err(bad(format!("{rel}: shape {} in the manifest does not match the store's {shape:?}",
            entry.get("shape").map_or("(none)".to_string(), |v| v.to_string()))));
    }
    let m_bytes = entry.get("bytes").and_then(Value::as_u64)
        .ok_or_else(|| bad(format!("{rel}: missing or invalid \"bytes\"")))?;
    let m_crc = entry.get("crc32").and_then(Value::as_u64).filter(|&c| c <= u32::MAX as u64)
        .ok_or_else(|| bad(format!("{rel}: missing or invalid \"crc32\"")))?;
    let item = if descr.ends_with('4') { 4 } else { 8 };
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let data_bytes = numel.and_then(|x| x.checked_mul(item)).and_then(|x| u64::try_from(x).ok());
    // a shape whose data cannot fit in the declared file size is refused before anything is opened
    let (numel, data_bytes) = match (numel, data_bytes) {
        (Some(a), Some(b)) if b <= m_bytes => (a, b),
        _ => return Err(bad(format!("{rel}: shape {shape:?} needs more bytes than the file has ({m_bytes})"))),
    };
    let mut f = open_in(dir, rel).map_err(|e| match e {
        Error::Format { missing: true, file, .. } => Error::Format { file, msg: "missing (listed in manifest.json)".into(), missing: true },
        e => e,
    })?;
    let size = f.metadata().map_err(|e| Error::io(&path, e))?.len();
    if size < m_bytes {
        return Err(Error::format(&path, format!("truncated: {size} bytes, the manifest says {m_bytes}")));
    }
    if size > m_bytes {
        return Err(Error::format(&path, format!("{size} bytes, the manifest says {m_bytes} (extra data)")));
    }
    let head_len = size.min(4096) as usize;
    let mut head = vec![0u8; head_len];
    f.read_exact(&mut head).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::format(&path, "truncated while reading"),
        _ => Error::io(&path, e),
    })?;
    let (d, fortran, sh, data_off) = parse_header(&path, &head)?;
    if d != descr {
        return Err(Error::format(&path, format!("dtype {d:?}, expected {descr:?}")));
    }
    if fortran {
        return Err(Error::format(&path, "Fortran order is not supported"));
    }
    if sh != shape {
        return Err(Error::format(&path, format!("shape {sh:?}, expected {shape:?}")));
    }
    let need = (data_off as u64).checked_add(data_bytes)
        .ok_or_else(|| Error::format(&path, "header and data sizes overflow"))?;
    if size < need {
        return Err(Error::format(&path, format!("truncated: {size} bytes, {need} needed for shape {shape:?}")));
    }
    if size > need {
        return Err(Error::format(&path, format!("{size} bytes, {need} expected for shape {shape:?} (extra data)")));
    }
    let crc_err = |got: u64| Error::format(&path, format!("corrupt: CRC-32 is {got:#010x}, the manifest says {m_crc:#010x}"));
    if mmap && descr == "<f4" && data_off % 4 == 0 {
        if numel == 0 {
            return Ok((Buf::Owned(Vec::new()), None));
        }
        // SAFETY: a regular file opened read-only; a store on disk must not be
        // modified by other programs while mapped (documented).
        let map = unsafe { Mmap::map(&f) }.map_err(|e| Error::io(&path, e))?;
        if verify {
            let got = crc32fast::hash(&map) as u64;
            if got != m_crc {
                return Err(crc_err(got));
            }
        }
        return Ok((Buf::Mapped { map: Arc::new(map), off: data_off, len: numel }, None));
    }
    if descr == "<f4" {
        if data_off > head.len() {
            return Err(Error::format(&path, "unsupported .npy header (longer than 4 KiB)"));
        }
        // read the data straight into the column's vector (no second copy)
        let total = numel * 4;
        let mut v = crate::store::huge_vec(numel).map_err(|e| Error::format(&path, e.to_string()))?;
        let first = (head.len() - data_off).min(total);
        let dst = v.as_mut_ptr() as *mut u8;
        // SAFETY: `dst` has capacity for `total` bytes; the first `first` come from the header read.
        unsafe { std::ptr::copy_nonoverlapping(head[data_off..].as_ptr(), dst, first) };
        read_into(&f, dst, first, total, (data_off + first) as u64).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Error::format(&path, "truncated while reading"),
            _ => Error::io(&path, e),
        })?;
        // SAFETY: all `numel` elements were written above (any bit pattern is a valid f32).
        unsafe { v.set_len(numel) };
        if verify {
            // SAFETY: the initialized vector viewed as bytes (for the checksum).
            let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, total) };
            let mut h = crc32fast::Hasher::new();
            h.update(&head[..data_off]);
            h.update(bytes);
            let got = h.finalize() as u64;
            if got != m_crc {
                return Err(crc_err(got));
            }
        }
        return Ok((Buf::Owned(v), None));
    }
    // a small table: read whole (bounded by the machine's memory before allocating)
    let size_us = usize::try_from(size).map_err(|_| Error::format(&path, "too large"))?;
    crate::store::check_alloc(size_us, "an episode table").map_err(|e| Error::format(&path, e.to_string()))?;
    let mut all = Vec::new();
    all.try_reserve_exact(size_us).map_err(|_| Error::format(&path, format!("out of memory reading {size} bytes")))?;
    all.extend_from_slice(&head);
    (&mut f).take(size - head.len() as u64).read_to_end(&mut all).map_err(|e| Error::io(&path, e))?;
    if all.len() as u64 != size {
        return Err(Error::format(&path, "truncated while reading"));
    }
    if verify {
        let got = crc32fast::hash(&all) as u64;
        if got != m_crc {
            return Err(crc_err(got));
        }
    }
    Ok((Buf::Owned(Vec::new()), Some(all[data_off..].to_vec())))
}
