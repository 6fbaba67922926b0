//! The synthetic Cheetah-Vel-shaped store the examples batch from.
use metadt_core::Store;

/// Uniform noise in [-0.5, 0.5) from a counter hashed by `mix64` (the same stream on every machine).
#[derive(Default)]
pub struct Noise(u64);

impl Noise {
    pub fn next(&mut self) -> f32 {
        self.0 = metadt_core::rng::mix64(self.0.wrapping_add(1));
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// `tasks` x `eps` episodes of `t` steps (obs `od`, actions `ad`) of noise.
pub fn synthetic_store(tasks: usize, eps: usize, t: usize, od: usize, ad: usize, noise: &mut Noise) -> Store {
    let mut s = Store::new(od, ad, None).unwrap();
    for task in 0..tasks {
        for _ in 0..eps {
            let obs: Vec<f32> = (0..t * od).map(|_| noise.next()).collect();
            let act: Vec<f32> = (0..t * ad).map(|_| noise.next()).collect();
            let rew: Vec<f32> = (0..t).map(|_| noise.next()).collect();
            s.add_episode(&obs, &act, &rew, None, task as i64, None).unwrap();
        }
    }
    s
}
