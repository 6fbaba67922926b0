//! metadt-core: trajectory storage and batching for offline meta-RL.
//!
//! Episodes of transitions live in float32 columns (`obs`, `actions`,
//! `rewards`, `next_obs`, `terminals`, `truncations`, `rtg`, plus attached per-step columns);
//! per-episode metadata (offset, length, task, return) lives in small vectors.
//! Batches (transitions with per-step contexts, Decision-Transformer windows
//! with contexts, columns and prompts) are gathered in parallel straight into
//! the output buffers, reproducibly from a seed. The Python bindings
//! (`metadt._core`, feature `python`) are a thin layer over this crate.
//!
//! # Embedding the store in a Rust program
//!
//! ```
//! use metadt_core::{Store, WindowSpec, PromptSpec, Strategy};
//!
//! let (obs_dim, act_dim) = (3, 2);
//! let mut store = Store::new(obs_dim, act_dim, None).unwrap();
//! for ep in 0..4 {
//!     let t = 10 + ep;                       // ragged episodes
//!     let obs = vec![0.5f32; t * obs_dim];
//!     let actions = vec![0.1f32; t * act_dim];
//!     let rewards = vec![1.0f32; t];
//!     store.add_episode(&obs, &actions, &rewards, None, (ep % 2) as i64, None).unwrap();
//! }
//! assert_eq!(store.num_episodes(), 4);
//! assert_eq!(store.episode_returns()[0], 10.0);
//!
//! // a per-step score column, then windows of K = 5 with the h = 2 context
//! // of every step and a k = 3 prompt segment chosen by argmax
//! let n = store.num_steps();
//! store.attach_column("error", &vec![1.0f32; n], 1).unwrap();
//! let mut spec = WindowSpec::new(8, 5);
//! spec.context = 2;
//! spec.return_scale = 10.0;
//! spec.prompt = Some(PromptSpec { length: 3, score: Some("error".into()),
//!     strategy: Strategy::Argmax, start_min: 2, pool: None });
//! let batch = store.sample_windows(&spec, Some(42)).unwrap();
//! assert_eq!(batch.spec("obs").unwrap().shape, vec![8, 5, obs_dim]);
//! assert_eq!(batch.spec("ctx_obs").unwrap().shape, vec![8, 7, obs_dim]);
//! assert_eq!(batch.f32("prompt_rtg").unwrap().len(), 8 * 3);
//!
//! // save and load back (memory-mapped)
//! let dir = std::env::temp_dir().join(format!("metadt-doc-{}", std::process::id()));
//! store.save(&dir).unwrap();
//! let loaded = Store::load(&dir, true, true).unwrap();
//! assert_eq!(loaded.num_steps(), n);
//! let again = loaded.sample_windows(&spec, Some(42)).unwrap();
//! assert_eq!(again.f32("obs"), batch.f32("obs"));
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```
pub mod error;
pub mod format;
pub mod rng;
pub mod sample;
pub mod segments;
pub mod store;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
pub use rng::derive_seed;
pub use sample::{scaled_rtg, Anchor, Batch, DType, FieldData, FieldSpec, LiveSpec, PromptSpec, SegmentSpec, StepsSpec, TransitionSpec, WindowSpec, ACTION_PAD};
pub use segments::segment_starts;
pub use segments::{Per, Segments, Strategy};
pub use store::Store;
