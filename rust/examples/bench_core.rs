//! Times the batcher from plain Rust (no Python): `cargo run --release --example bench_core`.
use std::time::Instant;

use metadt_core::WindowSpec;

mod common;

fn main() {
    let s = common::synthetic_store(45, 100, 200, 20, 6, &mut common::Noise::default());
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
