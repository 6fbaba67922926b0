//! Fixed work for instruction counts (not timed): `valgrind --tool=callgrind target/release/examples/count_core MODE`, MODE one of w0 (windows), w4 (windows with h = 4 contexts), wp (windows, contexts and argmax prompts), t4 (transitions with contexts); compare the "Collected" totals of two commits (see docs/store.md).
use metadt_core::{PromptSpec, Store, TransitionSpec, WindowSpec};
use metadt_core::segments::Strategy;

fn main() {
    let (tasks, eps, t, od, ad) = (45usize, 10usize, 200usize, 20usize, 6usize);
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
    let n = s.num_steps();
    let err: Vec<f32> = (0..n).map(|_| rnd().abs()).collect();
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
