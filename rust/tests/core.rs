//! The Rust side on its own (no Python): `cargo test -p metadt-core`.
use metadt_core::{Anchor, Error, Per, PromptSpec, Store, Strategy, TransitionSpec, WindowSpec};

/// Episode `i` has T steps; obs[t] = [100*i + t, ...], actions = t, rewards = 1.
fn store(lengths: &[usize]) -> Store {
    let mut s = Store::new(2, 1, None).unwrap();
    for (i, &t) in lengths.iter().enumerate() {
        let obs: Vec<f32> = (0..t).flat_map(|k| [(100 * i + k) as f32, -1.0]).collect();
        let act: Vec<f32> = (0..t).map(|k| k as f32).collect();
        let rew = vec![1.0f32; t];
        s.add_episode(&obs, &act, &rew, None, (i % 2) as i64, None).unwrap();
    }
    s
}

#[test]
fn queries_and_rtg() {
    let s = store(&[3, 5, 1]);
    assert_eq!(s.num_episodes(), 3);
    assert_eq!(s.num_steps(), 9);
    assert_eq!(s.episode_offsets(), &[0, 3, 8]);
    assert_eq!(s.episode_returns(), &[3.0, 5.0, 1.0]);
    assert_eq!(s.episodes_of_task(0), &[0, 2]);
    assert_eq!(s.top_episodes(0, 5), vec![0, 2]);
    assert_eq!(s.tasks(), vec![0, 1]);
    assert_eq!(s.column("rtg").unwrap(), &[3.0, 2.0, 1.0, 5.0, 4.0, 3.0, 2.0, 1.0, 1.0]);
    // next_obs defaults to obs shifted, last step repeats obs[T-1]
    assert_eq!(&s.column("next_obs").unwrap()[..6], &[1.0, -1.0, 2.0, -1.0, 2.0, -1.0]);
}

#[test]
fn rejected_calls_leave_the_store_unchanged() {
    let mut s = store(&[3, 5]);
    let before = (s.num_steps(), s.column("obs").unwrap().to_vec(), s.episode_returns().to_vec());
    let bad = [
        s.add_episode(&[0.0; 6], &[0.0; 3], &[0.0, f32::NAN, 0.0], None, 0, None),
        s.add_episode(&[0.0; 5], &[0.0; 3], &[0.0; 3], None, 0, None),
        s.add_episode(&[], &[], &[], None, 0, None),
        s.add_episode(&[0.0; 6], &[0.0; 3], &[0.0; 3], Some(&[0.0; 4]), 0, None),
    ];
    for r in bad {
        assert!(matches!(r, Err(Error::Invalid(_))), "{r:?}");
    }
    assert!(s.attach_column("x", &[0.0; 7], 1).is_err());
    assert!(s.attach_column("obs", &[0.0; 8], 1).is_err());
    assert!(s.attach_column("x", &[f32::INFINITY; 8], 1).is_err());
    assert_eq!(before, (s.num_steps(), s.column("obs").unwrap().to_vec(), s.episode_returns().to_vec()));
}

#[test]
fn window_layout_with_padding_context_and_columns() {
    let mut s = store(&[3]);
    s.attach_column("z", &[1.0, 2.0, 3.0], 1).unwrap();
    let mut spec = WindowSpec::new(64, 4);
    spec.context = 2;
    spec.return_scale = 2.0;
    spec.columns = vec!["z".into()];
    let b = s.sample_windows(&spec, Some(3)).unwrap();
    let ts = b.i64("timesteps").unwrap();
    let obs = b.f32("obs").unwrap();
    let act = b.f32("actions").unwrap();
    let rtg = b.f32("rtg").unwrap();
    let mask = b.bool("mask").unwrap();
    let z = b.f32("z").unwrap();
    let cobs = b.f32("ctx_obs").unwrap();
    let cmask = b.bool("ctx_mask").unwrap();
    for i in 0..64 {
        let end = ts[i * 4 + 3] as usize;
        for j in 0..4 {
            let t = end as i64 - 3 + j as i64;
            if t < 0 {
                assert!(!mask[i * 4 + j]);
                assert_eq!(act[i * 4 + j], -10.0);
                assert_eq!(obs[(i * 4 + j) * 2], 0.0);
                assert_eq!(rtg[i * 4 + j], 0.0);
                assert_eq!(z[i * 4 + j], 0.0);
            } else {
                assert!(mask[i * 4 + j]);
                assert_eq!(obs[(i * 4 + j) * 2], t as f32);
                assert_eq!(rtg[i * 4 + j], (3 - t) as f32 / 2.0);
                assert_eq!(z[i * 4 + j], (t + 1) as f32);
            }
        }
        for j in 0..6 {
            let t = end as i64 - 5 + j as i64;
            assert_eq!(cmask[i * 6 + j], t >= 0);
            assert_eq!(cobs[(i * 6 + j) * 2], if t >= 0 { t as f32 } else { 0.0 });
        }
    }
}

#[test]
fn start_anchored_windows_start_uniformly_and_clip_at_the_episode_end() {
    // one episode of 6 steps, K = 4, h = 2: a window starting at step s holds
    // min(4, 6 - s) real steps, right-aligned; its context starts at max(0, s - 2)
    let s = store(&[6]);
    let mut spec = WindowSpec::new(3000, 4);
    spec.context = 2;
    spec.anchor = Anchor::Start;
    let b = s.sample_windows(&spec, Some(5)).unwrap();
    let (ts, mask, obs) = (b.i64("timesteps").unwrap(), b.bool("mask").unwrap(), b.f32("obs").unwrap());
    let (cobs, cmask) = (b.f32("ctx_obs").unwrap(), b.bool("ctx_mask").unwrap());
    let mut seen = [0usize; 6];
    for i in 0..3000 {
        let n = (0..4).filter(|&j| mask[i * 4 + j]).count();
        let start = ts[i * 4 + 4 - n] as usize;
        seen[start] += 1;
        assert_eq!(n, 4.min(6 - start));
        for j in 0..4 {
            let real = j >= 4 - n;
            assert_eq!(mask[i * 4 + j], real);
            let want = if real { (start + j - (4 - n)) as f32 } else { 0.0 };
            assert_eq!(obs[(i * 4 + j) * 2], want);
        }
        let c0 = start.saturating_sub(2);
        let cn = start + n - c0;
        for j in 0..6 {
            let real = j >= 6 - cn;
            assert_eq!(cmask[i * 6 + j], real);
            assert_eq!(cobs[(i * 6 + j) * 2], if real { (c0 + j - (6 - cn)) as f32 } else { 0.0 });
        }
    }
    // every start is drawn, about equally often (500 expected each)
    assert!(seen.iter().all(|&c| (380..620).contains(&c)), "{seen:?}");
    assert_eq!(Anchor::parse("start").unwrap(), Anchor::Start);
    assert!(Anchor::parse("middle").is_err());
}

#[test]
fn transitions_context_and_determinism() {
    let s = store(&[10, 20, 30]);
    let spec = TransitionSpec { batch: 5000, context: 3, tasks: Some(vec![1]) };
    let a = s.sample_transitions(&spec, Some(9)).unwrap();
    let b = s.sample_transitions(&spec, Some(9)).unwrap();
    assert_eq!(a.f32("ctx_obs"), b.f32("ctx_obs"));
    let small = s.sample_transitions(&TransitionSpec { batch: 7, ..spec.clone() }, Some(9)).unwrap();
    assert_eq!(&a.f32("obs").unwrap()[..14], small.f32("obs").unwrap());
    let eps = a.i64("episodes").unwrap();
    let ts = a.i64("timesteps").unwrap();
    let obs = a.f32("obs").unwrap();
    let cobs = a.f32("ctx_obs").unwrap();
    let cm = a.bool("ctx_mask").unwrap();
    for i in 0..5000 {
        assert_eq!(eps[i], 1);
        let t = ts[i];
        assert_eq!(obs[i * 2], (100 + t) as f32);
        for j in 0..3 {
            let u = t - 3 + j as i64;
            assert_eq!(cm[i * 3 + j], u >= 0);
            assert_eq!(cobs[(i * 3 + j) * 2], if u >= 0 { (100 + u) as f32 } else { 0.0 });
        }
    }
    assert!(s.sample_transitions(&TransitionSpec { batch: 0, context: 0, tasks: None }, None).is_err());
    assert!(s.sample_transitions(&TransitionSpec { batch: 1, context: 0, tasks: Some(vec![5]) }, None).is_err());
}

#[test]
fn prompts_and_segments() {
    let mut s = store(&[8, 8, 2]);
    let mut err = vec![0.0f32; 18];
    err[5] = 3.0; // episode 0, step 5
    err[8 + 2] = 1.0; // episode 1, step 2
    s.attach_column("err", &err, 1).unwrap();
    let seg = s.segment_scores("err", 2, 1, None).unwrap();
    // episode 2 (T = 2 < start_min + k = 3): the short-episode rule falls back to the starts [0, 0]
    assert_eq!(seg.episodes.len(), 6 + 6 + 1);
    assert_eq!((seg.episodes[12], seg.starts[12]), (2, 0));
    let best = s.best_segments("err", 2, 1, Per::Task, Strategy::Argmax, None, None).unwrap();
    assert_eq!(best.keys, vec![0, 1]);
    assert_eq!((best.episodes[0], best.starts[0], best.scores[0]), (0, 4, 3.0));
    assert_eq!((best.episodes[1], best.starts[1]), (1, 1));
    let per_ep = s.best_segments("err", 2, 1, Per::Episode, Strategy::Proportional, Some(1), None).unwrap();
    assert_eq!(per_ep.keys, vec![0, 1, 2]); // episode 2 (T=2): its one fallback segment, start 0
    assert!(per_ep.scores[..2].iter().all(|&x| x > 0.0));
    assert_eq!((per_ep.starts[2], per_ep.scores[2]), (0, 0.0));
    // an episode shorter than the segment: the whole episode, start 0 (score of its real steps)
    let short = s.segment_scores("rewards", 3, 1, Some(&[2])).unwrap();
    assert_eq!((short.starts.clone(), short.scores.clone()), (vec![0], vec![2.0]));
    assert_eq!(metadt_core::segment_starts(2, 3, 1), None);
    assert_eq!(metadt_core::segment_starts(8, 2, 1), Some((1, 6)));
    assert_eq!(metadt_core::segment_starts(2, 2, 1), Some((0, 0)));
    assert_eq!(metadt_core::segment_starts(8, 2, usize::MAX), Some((0, 6)));
    let mut spec = WindowSpec::new(32, 3);
    spec.prompt = Some(PromptSpec { length: 2, score: Some("err".into()), strategy: Strategy::Argmax, start_min: 1, pool: Some(vec![0, 1]) });
    let b = s.sample_windows(&spec, Some(0)).unwrap();
    let tasks = b.i64("tasks").unwrap();
    let pe = b.i64("prompt_episodes").unwrap();
    let ps = b.i64("prompt_starts").unwrap();
    for i in 0..32 {
        assert_eq!(pe[i], tasks[i]);
        assert_eq!(ps[i], if tasks[i] == 0 { 4 } else { 1 });
    }
    // a negative score column is rejected for prompts
    s.attach_column("neg", &[-1.0; 18], 1).unwrap();
    spec.prompt.as_mut().unwrap().score = Some("neg".into());
    assert!(s.sample_windows(&spec, None).is_err());
}

#[test]
fn online_mode_and_capacity() {
    let mut s = Store::new(1, 1, Some(10)).unwrap();
    for ep in 0..5 {
        for t in 0..4 {
            let done = t == 3;
            let r = s.add_step(&[ep as f32], &[0.0], 1.0, &[0.0], done, 0, None, None, None).unwrap();
            assert_eq!(r.is_some(), done);
            let spec = TransitionSpec { batch: 8, context: 2, tasks: None };
            s.sample_transitions(&spec, Some(1)).unwrap();
        }
    }
    assert!(s.num_steps() <= 10);
    assert_eq!(s.num_episodes(), 2);
    assert_eq!(s.num_evicted(), 3);
    assert_eq!(s.column("obs").unwrap(), &[3.0, 3.0, 3.0, 3.0, 4.0, 4.0, 4.0, 4.0]);
    assert_eq!(s.episode_offsets(), &[0, 4]);
}

#[test]
fn save_load_roundtrip_and_corruption() {
    let mut s = store(&[5, 7, 9]);
    s.attach_column("z", &vec![0.5f32; 21 * 3], 3).unwrap();
    s.set_metadata(r#"{"family": "test"}"#).unwrap();
    let dir = std::env::temp_dir().join(format!("metadt-core-test-{}", std::process::id()));
    s.save(&dir).unwrap();
    for (mmap, verify) in [(true, true), (true, false), (false, true)] {
        let mut t = Store::load(&dir, mmap, verify).unwrap();
        assert_eq!(t.column("obs").unwrap(), s.column("obs").unwrap());
        assert_eq!(t.column("z").unwrap(), s.column("z").unwrap());
        assert_eq!(t.metadata(), r#"{"family":"test"}"#);
        t.add_episode(&[1.0, 2.0], &[0.0], &[1.0], None, 3, None).unwrap(); // appendable
        assert_eq!(t.num_episodes(), 4);
    }
    // flip one byte of obs.npy: detected with verify
    let f = dir.join("obs.npy");
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x55;
    std::fs::write(&f, &bytes).unwrap();
    let e = Store::load(&dir, true, true).err().expect("corruption detected").to_string();
    assert!(e.contains("obs.npy") && e.contains("CRC"), "{e}");
    // truncate
    std::fs::write(&f, &bytes[..n - 4]).unwrap();
    let e = Store::load(&dir, true, false).err().expect("truncation detected").to_string();
    assert!(e.contains("obs.npy") && e.contains("truncated"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(Store::load(&dir, true, true), Err(Error::Format { missing: true, .. })));
}

#[test]
fn batch_key_column_names_and_overflowing_sizes_are_errors() {
    let mut s = store(&[5, 3]);
    for name in ["mask", "timesteps", "tasks", "episodes", "ctx_obs", "prompt_x", "../x", "rtg"] {
        assert!(matches!(s.attach_column(name, &[1.0; 8], 1), Err(Error::Invalid(_))), "{name}");
    }
    let mut spec = WindowSpec::new(2, 20);
    spec.context = usize::MAX - 4; // once: a window of 15 steps
    assert!(matches!(s.sample_windows(&spec, Some(0)), Err(Error::Invalid(_))));
    let mut spec = WindowSpec::new(usize::MAX / 2, 1);
    spec.context = 0;
    assert!(matches!(s.sample_windows(&spec, Some(0)), Err(Error::Memory(_))));
    let t = TransitionSpec { batch: 2, context: 1 << 62, tasks: None };
    assert!(matches!(s.sample_transitions(&t, Some(0)), Err(Error::Memory(_))));
    // start_min + k overflows: no start leaves start_min steps before it, so all starts [0, T-k] are candidates
    let seg = s.segment_scores("rewards", 2, usize::MAX, None).unwrap();
    let expect: usize = s.episode_lengths().iter().map(|&t| if t >= 2 { t - 1 } else { 1 }).sum();
    assert_eq!(seg.starts.len(), expect);
    assert!(matches!(s.attach_column("wide", &[], 1 << 30), Err(Error::Invalid(_))));
    assert!(Store::new(1 << 30, 1, None).is_err());
}

#[test]
fn save_refuses_what_is_not_a_store_and_load_refuses_symlinks() {
    let s = store(&[4, 2]);
    let root = std::env::temp_dir().join(format!("metadt-core-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("notastore")).unwrap();
    std::fs::write(root.join("notastore/keep.txt"), b"mine").unwrap();
    std::fs::write(root.join("file.txt"), b"mine too").unwrap();
    assert!(matches!(s.save(root.join("notastore")), Err(Error::Exists { .. })));
    assert!(matches!(s.save(root.join("file.txt")), Err(Error::Exists { .. })));
    assert_eq!(std::fs::read(root.join("notastore/keep.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read(root.join("file.txt")).unwrap(), b"mine too");
    s.save(root.join("a")).unwrap();
    s.save(root.join("a")).unwrap(); // a store is replaced
    s.save(root.join("b")).unwrap();
    #[cfg(unix)]
    {
        std::fs::remove_file(root.join("a/obs.npy")).unwrap();
        std::os::unix::fs::symlink(root.join("b/obs.npy"), root.join("a/obs.npy")).unwrap();
        match Store::load(root.join("a"), true, false) {
            Err(Error::Format { msg, .. }) => assert!(msg.contains("symbolic link"), "{msg}"),
            other => panic!("expected a format error, got {:?}", other.map(|s| s.num_steps())),
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn terminations_and_truncations_are_distinct() {
    let mut s = Store::new(1, 1, None).unwrap();
    s.add_episode(&[0.0; 3], &[0.0; 3], &[1.0; 3], None, 0, None).unwrap();
    s.add_episode(&[0.0; 2], &[0.0; 2], &[1.0; 2], None, 0, Some(&[0.0, 1.0])).unwrap();
    s.add_episode_with_truncations(&[0.0; 2], &[0.0; 2], &[1.0; 2], None, 0, None, Some(&[0.0, 0.0])).unwrap();
    assert!(s.add_episode_with_truncations(&[0.0; 2], &[0.0; 2], &[1.0; 2], None, 0, None, Some(&[0.0, 0.5])).is_err());
    assert!(s.add_step(&[0.0], &[0.0], 1.0, &[0.0], false, 0, None, Some(true), None).is_err());
    s.add_step(&[0.0], &[0.0], 1.0, &[0.0], true, 0, Some(false), None, None).unwrap();
    assert_eq!(s.column("truncations").unwrap(), &[0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    assert_eq!(s.column("terminals").unwrap(), &[0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
    let dir = std::env::temp_dir().join(format!("metadt-core-trunc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    s.save(&dir).unwrap();
    let t = Store::load(&dir, true, true).unwrap();
    assert_eq!(t.column("truncations").unwrap(), s.column("truncations").unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}


#[test]
fn gather_steps_live_windows_and_prompt_segments() {
    use metadt_core::{LiveSpec, SegmentSpec};
    let s = store(&[3, 5, 1]);
    // every step in order, with its 2-step context from its own episode
    let steps: Vec<usize> = (0..9).collect();
    let b = s.gather_steps(&steps, 2).unwrap();
    assert_eq!(b.i64("timesteps").unwrap(), &[0, 1, 2, 0, 1, 2, 3, 4, 0]);
    assert_eq!(b.i64("episodes").unwrap(), &[0, 0, 0, 1, 1, 1, 1, 1, 2]);
    assert_eq!(b.i64("steps").unwrap(), &[0, 1, 2, 3, 4, 5, 6, 7, 8]);
    let m = b.bool("ctx_mask").unwrap();
    assert_eq!(&m[..6], &[false, false, false, true, true, true]);
    assert_eq!(&b.f32("ctx_obs").unwrap()[4 * 2 * 2..5 * 2 * 2], &[0.0, 0.0, 100.0, -1.0]); // step 1 of episode 1
    assert!(s.gather_steps(&[9], 2).is_err());
    // prompts from given segments equal a sampled prompt's layout; short episodes are padded
    let spec = SegmentSpec { episodes: vec![1, 2], starts: vec![3, 0], length: 2, return_scale: 2.0 };
    let p = s.prompt_segments(&spec).unwrap();
    assert_eq!(p.f32("prompt_rtg").unwrap(), &[1.0, 0.5, 0.0, 0.5]);
    assert_eq!(p.i64("prompt_timesteps").unwrap(), &[3, 4, 0, 0]);
    assert_eq!(p.bool("prompt_mask").unwrap(), &[true, true, false, true]);
    assert_eq!(&p.f32("prompt_actions").unwrap()[2..], &[metadt_core::ACTION_PAD, 0.0]);
    for bad in [SegmentSpec { episodes: vec![1], starts: vec![4], length: 2, return_scale: 1.0 },
                SegmentSpec { episodes: vec![2], starts: vec![1], length: 2, return_scale: 1.0 },
                SegmentSpec { episodes: vec![3], starts: vec![0], length: 2, return_scale: 1.0 },
                SegmentSpec { episodes: vec![0], starts: vec![0, 1], length: 2, return_scale: 1.0 },
                SegmentSpec { episodes: vec![0], starts: vec![0], length: 0, return_scale: 1.0 },
                SegmentSpec { episodes: vec![0], starts: vec![0], length: 1, return_scale: f32::NAN }] {
        assert!(matches!(s.prompt_segments(&bad), Err(Error::Invalid(_))), "{bad:?}");
    }
    // live windows: stream 7 has two recorded steps, stream 8 none
    let mut s = Store::new(1, 1, None).unwrap();
    s.add_step(&[1.0], &[0.5], 2.0, &[2.0], false, 0, None, None, Some(7)).unwrap();
    s.add_step(&[2.0], &[0.25], 3.0, &[3.0], false, 0, None, None, Some(7)).unwrap();
    let spec = LiveSpec { streams: vec![7, 8], tasks: vec![0, 4], obs: vec![3.0, 9.0], targets: vec![10.0, 6.0],
                          length: 4, context: 1, return_scale: 2.0 };
    let b = s.live_windows(&spec).unwrap();
    assert_eq!(b.f32("obs").unwrap(), &[0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 9.0]);
    let pad = metadt_core::ACTION_PAD;
    assert_eq!(b.f32("actions").unwrap(), &[pad, 0.5, 0.25, 0.0, pad, pad, pad, 0.0]);
    assert_eq!(b.f32("rtg").unwrap(), &[0.0, 5.0, 4.0, 2.5, 0.0, 0.0, 0.0, 3.0]);
    assert_eq!(b.i64("timesteps").unwrap(), &[0, 0, 1, 2, 0, 0, 0, 0]);
    assert_eq!(b.i64("tasks").unwrap(), &[0, 4]);
    assert_eq!(b.i64("episodes").unwrap(), &[-1, -1]);
    assert_eq!(b.bool("ctx_mask").unwrap(), &[false, false, true, true, false, false, false, false, false, false]);
    assert_eq!(&b.f32("ctx_rewards").unwrap()[..5], &[0.0, 0.0, 2.0, 3.0, 0.0]);
    let mut bad = spec.clone();
    bad.tasks = vec![1, 4]; // stream 7 is of task 0
    assert!(s.live_windows(&bad).is_err());
    let mut bad = spec.clone();
    bad.streams = vec![7, 7];
    assert!(s.live_windows(&bad).is_err());
    let mut bad = spec.clone();
    bad.obs = vec![1.0];
    assert!(s.live_windows(&bad).is_err());
    let mut bad = spec.clone();
    bad.targets = vec![f64::INFINITY, 0.0];
    assert!(s.live_windows(&bad).is_err());
    let mut bad = spec;
    bad.length = 0;
    assert!(s.live_windows(&bad).is_err());
}
