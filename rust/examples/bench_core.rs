//! Times the batcher from plain Rust (no Python): `cargo run --release --example bench_core`.
use std::time::Instant;

use metadt_core::{Store, WindowSpec};

fn main() {
    let (tasks, eps, t, od, ad) = (45usize, 100usize, 200usize, 20usize, 6usize);
    let mut s = Store::new(od, ad, None).unwrap();
    let mut x = 0u64;
    let mut rnd = || {
        x = metadt_core::rng::mix64(x.wrapping_add(1));
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    for task in 0..tasks {
        for _ in 0..eps {
            let obs: Vec<f32> = (0..t * od).map(|_| rnd()).collect();
            let act: Vec<f32> = (0..t * ad).map(|_| rnd()).collect();
            let rew: Vec<f32> = (0..t).map(|_| rnd()).collect();
            s.add_episode(&obs, &act, &rew, None, task as i64, None).unwrap();
        }
    }
    if let Ok(t) = std::fs::read_to_string("/proc/self/smaps_rollup") {
        for l in t.lines().filter(|l| l.starts_with("AnonHugePages") || l.starts_with("Rss")) {
            println!("{l}");
        }
    }
    for (b, h) in [(128usize, 0usize), (128, 4), (1024, 0), (1024, 4)] {
        let mut spec = WindowSpec::new(b, 20);
        spec.context = h;
        let plan = s.plan_windows(&spec).unwrap();
        let (_batch, outs) = metadt_core::sample::Batch::alloc_for_bench(plan).unwrap();
        let n = if b == 128 { 2000 } else { 300 };
        for i in 0..10 {
            unsafe { s.fill_windows(&spec, i, &outs) };
        }
        // best of 20 rounds (the machine may be shared)
        let mut dt = f64::MAX;
        for r in 0..20 {
            let t0 = Instant::now();
            for i in 0..n / 10 {
                unsafe { s.fill_windows(&spec, (r * n + i) as u64, &outs) };
            }
            dt = dt.min(t0.elapsed().as_secs_f64() / (n / 10) as f64);
        }
        println!("B={b} h={h}: {:.1} us per batch (fill only)", dt * 1e6);
    }
}
