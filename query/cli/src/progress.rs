//! Progress bars on stderr.

use familiar::{Error, Result};

/// A bar on stderr of `len` steps (unknown: `None`) drawn with `template` (hidden unless `show`).
fn styled_bar(show: bool, len: Option<u64>, template: &str) -> Result<indicatif::ProgressBar> {
    if !show {
        return Ok(indicatif::ProgressBar::hidden());
    }
    let bar =
        indicatif::ProgressBar::with_draw_target(len, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .map_err(|e| Error::Bug(format!("progress template: {e}")))?,
    );
    Ok(bar)
}

/// A progress bar on stderr counting `total` `what`s (hidden unless `show`).
pub fn progress_bar(show: bool, total: u64, what: &str) -> Result<indicatif::ProgressBar> {
    styled_bar(
        show,
        Some(total),
        &format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {what} ({{per_sec}}, {{eta}})"
        ),
    )
}

/// A progress bar for a training run (hidden unless `show`), fed by [`show_step`].
pub fn training_bar(show: bool) -> Result<indicatif::ProgressBar> {
    styled_bar(
        show,
        None,
        "{spinner} [{elapsed_precise}] {bar:30} step {pos}/{len} {msg}",
    )
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

/// Progress of an index build on stderr: a bar over the input bytes (hidden unless `show`), and
/// a warning for each document the build reports as longer than the shard size (always).
pub fn build_bar(show: bool) -> Result<impl Fn(familiar_index_builder::build::BuildEvent) + Sync> {
    use familiar_index_builder::build::{shard_dir_name, BuildEvent};
    let bar = styled_bar(
        show,
        None,
        "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} ({eta}) {msg}",
    )?;
    Ok(move |e: BuildEvent| match e {
        BuildEvent::Read {
            bytes,
            total_bytes,
            shard,
            tokens,
            tokens_per_second,
        } => {
            bar.set_length(total_bytes);
            bar.set_position(bytes);
            bar.set_message(format!(
                "shard {shard} · {tokens} tokens · {:.2} M tokens/s",
                tokens_per_second / 1e6
            ));
        }
        BuildEvent::Sorting {
            shard,
            tokens,
            text_index,
        } => bar.set_message(format!(
            "shard {shard}: sorting the suffixes of {tokens} tokens{}",
            if text_index {
                ", merging the text index"
            } else {
                ""
            }
        )),
        BuildEvent::Oversized {
            document,
            shard_tokens,
            bytes,
            last,
        } => bar.suspend(|| {
            eprintln!(
                "warning: {document}, more than the shard size of {shard_tokens} tokens: it \
                 makes {} on its own, {} tokens (about {} while its suffix array is sorted, past \
                 the shard size's memory budget){}",
                shard_dir_name(document.shard),
                document.tokens + 1,
                familiar::memory::format_bytes(bytes),
                if last {
                    " (further ones are counted and summed up at the end)"
                } else {
                    ""
                }
            )
        }),
        BuildEvent::Done => bar.finish_and_clear(),
    })
}
