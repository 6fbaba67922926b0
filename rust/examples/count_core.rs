//! Fixed work for instruction counts (not timed): `valgrind --tool=callgrind target/release/examples/count_core MODE`, MODE one of w0 (windows), w4 (windows with h = 4 contexts), wp (windows, contexts and argmax prompts), t4 (transitions with contexts); compare the "Collected" totals of two commits (see docs/store.md).
use metadt_core::{PromptSpec, TransitionSpec, WindowSpec};
use metadt_core::segments::Strategy;

mod common;

fn main() {
    let mut noise = common::Noise::default();
    let mut s = common::synthetic_store(45, 10, 200, 20, 6, &mut noise);
    let n = s.num_steps();
    let err: Vec<f32> = (0..n).map(|_| noise.next().abs()).collect();
    s.attach_column("err", &err, 1).unwrap();
    let mode = std::env::args().nth(1).unwrap_or_default();
    let mut sink = 0f64;
    for i in 0..40u64 {
        let b = match mode.as_str() {
            "w0" => { let spec = WindowSpec::new(256, 20); s.sample_windows(&spec, Some(i)).unwrap() }
            "w4" => { let mut spec = WindowSpec::new(256, 20); spec.context = 4; s.sample_windows(&spec, Some(i)).unwrap() }
            "wp" => {
                let mut spec = WindowSpec::new(256, 20);
                spec.context = 4;
                spec.return_scale = 500.0;
                spec.prompt = Some(PromptSpec { length: 5, score: Some("err".into()), strategy: Strategy::Argmax, start_min: 4, pool: None });
                s.sample_windows(&spec, Some(i)).unwrap()
            }
            "t4" => { let spec = TransitionSpec { batch: 256, context: 4, tasks: None }; s.sample_transitions(&spec, Some(i)).unwrap() }
            _ => return,
        };
        sink += b.f32("obs").map(|v| v[0] as f64).unwrap_or(0.0);
    }
    println!("{mode} {sink}");
}
