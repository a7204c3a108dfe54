//! Finding files for the bundled plugins: [`glob`] patterns (`*.db`, `logs/**/*.log`)
//! and a [`walk`] over configured directories that never follows symlinks, so a scan
//! cannot loop or wander outside the directories the operator named; and [`size`]
//! for byte counts in messages.

pub mod glob;
pub mod roots;
pub mod size;
pub mod walk;

pub use glob::{Glob, PatternError, Patterns};
pub use roots::Roots;
pub use size::human_bytes;
pub use walk::{Found, WalkOptions, Walker};
