//! A short way to declare a job type's capability:
//! `capability("sqlite_vacuum", "SQLite vacuum").detect(1).execute(2)`.

use crate::pb;

/// A capability for `job_type` that neither detects nor executes yet; chain
/// [`CapabilityExt::detect`] and/or [`CapabilityExt::execute`].
pub fn capability(job_type: impl Into<String>, display_name: impl Into<String>) -> pb::JobTypeCapability {
    pb::JobTypeCapability {
        job_type: job_type.into(),
        display_name: display_name.into(),
        weight: 1,
        ..Default::default()
    }
}

/// Builder methods on `pb::JobTypeCapability`.
pub trait CapabilityExt: Sized {
    /// Detects, at most `max_concurrent` detections at once (0 counts as 1).
    fn detect(self, max_concurrent: u32) -> Self;
    /// Executes, at most `max_concurrent` jobs at once (0 counts as 1).
    fn execute(self, max_concurrent: u32) -> Self;
    /// A sentence for the admin's pages.
    fn description(self, text: impl Into<String>) -> Self;
    /// The relative share of dispatch this worker asks for (default 1).
    fn weight(self, weight: u32) -> Self;
}

impl CapabilityExt for pb::JobTypeCapability {
    fn detect(mut self, max_concurrent: u32) -> Self {
        self.can_detect = true;
        self.max_detection_concurrency = clamp(max_concurrent);
        self
    }

    fn execute(mut self, max_concurrent: u32) -> Self {
        self.can_execute = true;
        self.max_execution_concurrency = clamp(max_concurrent);
        self
    }

    fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    fn weight(mut self, weight: u32) -> Self {
        self.weight = clamp(weight);
        self
    }
}

fn clamp(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_fills_the_capability() {
        let c = capability("t", "T").detect(1).execute(3).description("d");
        assert_eq!(
            c,
            pb::JobTypeCapability {
                job_type: "t".into(),
                can_detect: true,
                can_execute: true,
                max_detection_concurrency: 1,
                max_execution_concurrency: 3,
                display_name: "T".into(),
                description: "d".into(),
                weight: 1,
            }
        );
    }
}
