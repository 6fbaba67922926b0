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
use crate::store::{Attached, Buf, Column, Store};

/// Format name written in the manifest.
pub const FORMAT_NAME: &str = "metadt-trajectory-store";
/// Current format version.
pub const FORMAT_VERSION: u64 = 1;

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

impl Store {
    /// Save the closed episodes (and attached columns, metadata) to the
    /// directory `path`, atomically. Open episodes (online mode) are not saved.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let name = path.file_name().ok_or_else(|| Error::invalid(format!("{}: not a valid store path", path.display())))?
            .to_string_lossy().to_string();
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let tmp = parent.join(format!(".{name}.{}.{}.tmp", std::process::id(), crate::rng::mix64(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)) & 0xffff_ffff));
        fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let res = self.write_into(&tmp).and_then(|_| {
            fsync_dir(&tmp);
            let old = parent.join(format!(".{name}.old"));
            let had_old = path.exists();
            if had_old {
                if old.exists() {
                    fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
                }
                fs::rename(path, &old).map_err(|e| Error::io(path, e))?;
            }
            fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
            fsync_dir(&parent);
            if had_old {
                let _ = fs::remove_dir_all(&old);
            }
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
        let cols: [(&str, &Column, Vec<usize>); 6] = [
            ("obs", &self.obs, vec![n, od]),
            ("actions", &self.actions, vec![n, ad]),
            ("rewards", &self.rewards, vec![n]),
            ("next_obs", &self.next_obs, vec![n, od]),
            ("terminals", &self.terminals, vec![n]),
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
        let text = serde_json::to_string_pretty(&manifest).expect("manifest serializes") + "\n";
        let mp = dir.join("manifest.json");
        let mut f = File::create(&mp).map_err(|e| Error::io(&mp, e))?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| Error::io(&mp, e))?;
        Ok(())
    }

    /// Load a store saved by [`Store::save`]. With `mmap`, the float32 columns
    /// are memory-mapped (pages are read on demand; the store stays
    /// appendable: a column is copied to memory on its first mutation).
    /// With `verify`, every file's CRC-32 is checked (reads every byte).
    /// Sizes, headers, dtypes and shapes are always checked.
    pub fn load(path: impl AsRef<Path>, mmap: bool, verify: bool) -> Result<Store> {
        let dir = path.as_ref();
        let mp = dir.join("manifest.json");
        if !dir.is_dir() {
            return Err(Error::Format { file: dir.to_path_buf(), msg: "no such store directory".into(), missing: true });
        }
        let text = match fs::read_to_string(&mp) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Format { file: mp, msg: "missing: not a metadt store (no manifest.json)".into(), missing: true })
            }
            Err(e) => return Err(Error::io(&mp, e)),
        };
        let m: Value = serde_json::from_str(&text).map_err(|e| Error::format(&mp, format!("not valid JSON ({e})")))?;
        let fmt = m.get("format").and_then(Value::as_str).unwrap_or("");
        if fmt != FORMAT_NAME {
            return Err(Error::format(&mp, format!("format is {fmt:?}, expected {FORMAT_NAME:?}")));
        }
        let version = m.get("version").and_then(Value::as_u64)
            .ok_or_else(|| Error::format(&mp, "missing or invalid \"version\""))?;
        if version != FORMAT_VERSION {
            return Err(Error::format(&mp, format!(
                "unsupported format version {version} (this metadt reads version {FORMAT_VERSION})")));
        }
        let get_usize = |k: &str| m.get(k).and_then(Value::as_u64).map(|x| x as usize)
            .ok_or_else(|| Error::format(&mp, format!("missing or invalid {k:?}")));
        let (od, ad, n, ne) = (get_usize("obs_dim")?, get_usize("act_dim")?, get_usize("num_steps")?, get_usize("num_episodes")?);
        let capacity = m.get("capacity").and_then(Value::as_u64).map(|x| x as usize);
        let files = m.get("files").and_then(Value::as_array)
            .ok_or_else(|| Error::format(&mp, "missing \"files\""))?;
        let find = |name: &str| -> Result<&Value> {
            files.iter().find(|f| f.get("name").and_then(Value::as_str) == Some(name))
                .ok_or_else(|| Error::format(&mp, format!("no entry for {name:?} in \"files\"")))
        };
        let mut store = Store::new(od, ad, capacity).map_err(|e| Error::format(&mp, e.to_string()))?;
        let load_f32 = |name: &str, shape: &[usize]| -> Result<Column> {
            let (buf, _) = read_npy(dir, find(name)?, "<f4", shape, mmap, verify)?;
            Ok(Column::from_buf(buf, if shape.len() > 1 { shape[1] } else { 1 }))
        };
        store.obs = load_f32("obs", &[n, od])?;
        store.actions = load_f32("actions", &[n, ad])?;
        store.rewards = load_f32("rewards", &[n])?;
        store.next_obs = load_f32("next_obs", &[n, od])?;
        store.terminals = load_f32("terminals", &[n])?;
        store.rtg = load_f32("rtg", &[n])?;
        let small = |name: &str, descr: &str| -> Result<(Vec<u8>, PathBuf)> {
            let entry = find(name)?;
            let (_, bytes) = read_npy(dir, entry, descr, &[ne], false, true)?;
            Ok((bytes.expect("read mode returns bytes"), dir.join(entry.get("file").and_then(Value::as_str).unwrap_or(""))))
        };
        let to_i64 = |b: &[u8]| b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect::<Vec<i64>>();
        let (ob, of) = small("episode_offsets", "<i8")?;
        let (lb, lf) = small("episode_lengths", "<i8")?;
        let (tb, _) = small("episode_tasks", "<i8")?;
        let (rb, rf) = small("episode_returns", "<f8")?;
        let offs = to_i64(&ob);
        let lens = to_i64(&lb);
        let mut acc = 0i64;
        for (i, (&o, &l)) in offs.iter().zip(&lens).enumerate() {
            if l < 1 {
                return Err(Error::format(&lf, format!("episode {i} has length {l} (must be >= 1)")));
            }
            if o != acc {
                return Err(Error::format(&of, format!("episode {i} starts at row {o}, expected {acc} (episodes are contiguous)")));
            }
            acc += l;
        }
        if acc as usize != n {
            return Err(Error::format(&lf, format!("episode lengths sum to {acc}, but num_steps is {n}")));
        }
        let rets: Vec<f64> = rb.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
        if let Some(i) = rets.iter().position(|r| !r.is_finite()) {
            return Err(Error::format(&rf, format!("episode {i} has a non-finite return")));
        }
        store.ep_off = offs.iter().map(|&x| x as usize).collect();
        store.ep_len = lens.iter().map(|&x| x as usize).collect();
        store.ep_task = to_i64(&tb);
        store.ep_ret = rets;
        store.rebuild_task_index();
        if let Some(att) = m.get("attached_columns").and_then(Value::as_array) {
            for a in att {
                let name = a.get("name").and_then(Value::as_str)
                    .ok_or_else(|| Error::format(&mp, "attached column without a name"))?;
                let w = a.get("width").and_then(Value::as_u64)
                    .ok_or_else(|| Error::format(&mp, format!("attached column {name:?} without a width")))? as usize;
                let col = load_f32(name, &[n, w])?;
                let nonneg = match a.get("nonneg").and_then(Value::as_bool) {
                    Some(b) => b,
                    None => col.raw().iter().all(|&x| x >= 0.0),
                };
                store.extra.push(Attached { name: name.to_string(), col, nonneg });
            }
        }
        let meta = m.get("metadata").cloned().unwrap_or_else(|| json!({}));
        store.metadata = if meta.is_object() { meta.to_string() } else { "{}".to_string() };
        Ok(store)
    }
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

/// Open and check one `.npy` file of the manifest. Returns the f32 buffer
/// (mapped or owned) or, for `mmap == false && verify`, also the raw data bytes.
fn read_npy(dir: &Path, entry: &Value, descr: &str, shape: &[usize], mmap: bool, verify: bool)
    -> Result<(Buf, Option<Vec<u8>>)> {
    let rel = entry.get("file").and_then(Value::as_str).unwrap_or("");
    let path = dir.join(rel);
    let mp = dir.join("manifest.json");
    let safe = Path::new(rel).components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if rel.is_empty() || !safe {
        return Err(Error::format(&mp, format!("invalid file name {rel:?}")));
    }
    let m_dtype = entry.get("dtype").and_then(Value::as_str).unwrap_or("");
    if m_dtype != descr {
        return Err(Error::format(&mp, format!("{rel}: dtype {m_dtype:?} in the manifest, expected {descr:?}")));
    }
    let m_shape: Vec<usize> = entry.get("shape").and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).map(|x| x as usize).collect()).unwrap_or_default();
    if m_shape != shape {
        return Err(Error::format(&mp, format!("{rel}: shape {m_shape:?} in the manifest does not match the store's {shape:?}")));
    }
    let m_bytes = entry.get("bytes").and_then(Value::as_u64);
    let m_crc = entry.get("crc32").and_then(Value::as_u64);
    let mut f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Format { file: path, msg: "missing (listed in manifest.json)".into(), missing: true })
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    let size = f.metadata().map_err(|e| Error::io(&path, e))?.len();
    if let Some(b) = m_bytes {
        if size < b {
            return Err(Error::format(&path, format!("truncated: {size} bytes, the manifest says {b}")));
        }
        if size > b {
            return Err(Error::format(&path, format!("{size} bytes, the manifest says {b} (extra data)")));
        }
    }
    let mut head = vec![0u8; (size as usize).min(4096)];
    f.read_exact(&mut head).map_err(|e| Error::io(&path, e))?;
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
    let item = if descr.ends_with('4') { 4 } else { 8 };
    let numel: usize = shape.iter().product();
    let need = data_off as u64 + (numel * item) as u64;
    if size < need {
        return Err(Error::format(&path, format!("truncated: {size} bytes, {need} needed for shape {shape:?}")));
    }
    if size > need {
        return Err(Error::format(&path, format!("{size} bytes, {need} expected for shape {shape:?} (extra data)")));
    }
    let check_crc = |bytes: &[u8]| -> Result<()> {
        if let Some(c) = m_crc {
            let got = crc32fast::hash(bytes) as u64;
            if got != c {
                return Err(Error::format(&path, format!("corrupt: CRC-32 is {got:#010x}, the manifest says {c:#010x}")));
            }
        } else {
            return Err(Error::format(&mp, format!("{rel}: no crc32 in the manifest")));
        }
        Ok(())
    };
    if mmap && descr == "<f4" && data_off % 4 == 0 {
        if numel == 0 {
            return Ok((Buf::Owned(Vec::new()), None));
        }
        // SAFETY: the file is opened read-only; a store on disk must not be
        // modified by other programs while mapped (documented).
        let map = unsafe { Mmap::map(&f) }.map_err(|e| Error::io(&path, e))?;
        if verify {
            check_crc(&map)?;
        }
        return Ok((Buf::Mapped { map: Arc::new(map), off: data_off, len: numel }, None));
    }
    if descr == "<f4" {
        if data_off > head.len() {
            return Err(Error::format(&path, "unsupported .npy header (longer than 4 KiB)"));
        }
        // read the data straight into the column's vector (no second copy)
        let mut v = crate::store::huge_vec(numel);
        let total = numel * 4;
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
        // SAFETY: the initialized vector viewed as bytes (for the checksum).
        let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, total) };
        if verify {
            let mut h = crc32fast::Hasher::new();
            h.update(&head[..data_off]);
            h.update(bytes);
            let got = h.finalize() as u64;
            match m_crc {
                Some(c) if c == got => {}
                Some(c) => return Err(Error::format(&path, format!(
                    "corrupt: CRC-32 is {got:#010x}, the manifest says {c:#010x}"))),
                None => return Err(Error::format(&mp, format!("{rel}: no crc32 in the manifest"))),
            }
        }
        return Ok((Buf::Owned(v), None));
    }
    let mut all = Vec::with_capacity(size as usize);
    all.extend_from_slice(&head);
    f.read_to_end(&mut all).map_err(|e| Error::io(&path, e))?;
    if all.len() as u64 != size {
        return Err(Error::format(&path, "truncated while reading"));
    }
    if verify {
        check_crc(&all)?;
    }
    Ok((Buf::Owned(Vec::new()), Some(all[data_off..].to_vec())))
}
