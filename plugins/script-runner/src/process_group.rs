//! A script's process group: the script is its leader (`process_group(0)` at spawn),
//! and everything it starts stays in it unless it deliberately leaves. Killing the
//! group kills the script's children too, which killing the script alone would not.

use rustix::process::{Pid, Signal, kill_process_group};

/// Kills the whole group with SIGKILL when dropped (or on [`kill`](Self::kill)), so
/// that no way out of a run, a dropped future included, leaves processes behind.
#[derive(Debug)]
pub struct ProcessGroup {
    pgid: Option<Pid>,
}

impl ProcessGroup {
    /// The group led by the process `pid` (spawned with `process_group(0)`).
    pub fn led_by(pid: u32) -> Self {
        ProcessGroup { pgid: i32::try_from(pid).ok().and_then(Pid::from_raw) }
    }

    /// Sends SIGKILL to every process in the group; true if any was there.
    pub fn kill(&self) -> bool {
        self.pgid.is_some_and(|pgid| kill_process_group(pgid, Signal::KILL).is_ok())
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}
