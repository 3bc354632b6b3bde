//! Progress bars on stderr.

use familiar::{Error, Result};

/// A progress bar on stderr counting `total` `what`s (hidden unless `show`).
pub fn progress_bar(show: bool, total: u64, what: &str) -> Result<indicatif::ProgressBar> {
    if !show {
        return Ok(indicatif::ProgressBar::hidden());
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {what} ({{per_sec}}, {{eta}})"
        ))
        .map_err(|e| Error::Bug(format!("progress template: {e}")))?,
    );
    Ok(bar)
}
