//! Run directories of resumable runs (gradient stores, attribution evaluations, priming runs):
//! `plan.json` is written first and names the settings the directory belongs to; each finished
//! unit of work is a file written atomically, which a rerun reads instead of redoing the work.

use std::path::Path;

use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The file naming the settings a run directory belongs to.
pub const PLAN_FILE: &str = "plan.json";

/// Reads a JSON file; a file that does not parse is reported as corrupt, naming it.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(path, e.to_string()))
}

/// Writes `v` as JSON atomically.
pub fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    crate::manifest::write_atomic(path, &crate::manifest::to_bytes(v)?)
}

/// Claims `out` for `plan`: a directory whose `plan.json` equals `plan` is resumed, one with
/// another plan is refused (`what` names the run, `settings` what the plan holds), and a new or
/// empty directory gets `plan.json`. A non-empty directory without one is refused. The
/// directory is locked ([`crate::lock::DirLock`]) first: a second run into it fails with
/// "in use by process N" until the returned guard is dropped.
pub fn claim<P: Serialize + DeserializeOwned + PartialEq>(
    out: &Path,
    plan: &P,
    what: &str,
    settings: &str,
) -> Result<crate::lock::DirLock> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let lock = crate::lock::DirLock::acquire(out, what)?;
    let plan_path = out.join(PLAN_FILE);
    if plan_path.exists() {
        let old: P = read_json(&plan_path)?;
        if old != *plan {
            return Err(Error::Conflict(format!(
                "{} holds {what} with other settings ({settings}); use another directory",
                out.display()
            )));
        }
        return Ok(lock);
    }
    for entry in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        let entry = entry.map_err(|e| Error::io(out, e))?;
        let name = entry.file_name();
        if crate::lock::is_lock_file(&name) {
            continue;
        }
        if crate::manifest::is_temp_name(&name) {
            // A leftover of an interrupted write of plan.json: ours to remove.
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        return Err(Error::Conflict(format!(
            "{} is not empty and holds no {what} (plan.json); use a new directory",
            out.display()
        )));
    }
    write_json(&plan_path, plan)?;
    Ok(lock)
}
