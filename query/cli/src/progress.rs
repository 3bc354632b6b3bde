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

/// A progress bar for a training run (hidden unless `show`), fed by [`show_step`].
pub fn training_bar(show: bool) -> Result<indicatif::ProgressBar> {
    if !show {
        return Ok(indicatif::ProgressBar::hidden());
    }
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} step {pos}/{len} {msg}",
        )
        .map_err(|e| Error::Bug(format!("progress template: {e}")))?,
    );
    Ok(bar)
}

/// Shows a training step on `bar`.
pub fn show_step(bar: &indicatif::ProgressBar, p: familiar_models::train::StepProgress) {
    bar.set_length(p.steps);
    bar.set_position(p.step);
    if let (Some(loss), Some(lr)) = (p.loss, p.lr) {
        bar.set_message(format!(
            "loss {loss:.4} · lr {lr:.2e} · {:.0} tokens/s",
            p.tokens_per_second
        ));
    }
}

/// Progress bars for the stages of a concept count (hidden unless `show`), one per stage.
pub fn count_bars(show: bool) -> impl Fn(familiar_query::concepts::count::CountEvent) + Sync {
    use familiar_query::concepts::count::CountEvent;
    let bar = std::sync::Mutex::new(indicatif::ProgressBar::hidden());
    move |e| {
        let Ok(mut bar) = bar.lock() else { return };
        match e {
            CountEvent::Start { stage, total } => {
                *bar = progress_bar(show && total > 0, total, stage)
                    .unwrap_or_else(|_| indicatif::ProgressBar::hidden());
            }
            CountEvent::Done => bar.inc(1),
            CountEvent::Finish => bar.finish_and_clear(),
        }
    }
}
