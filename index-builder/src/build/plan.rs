//! The build plan (`build.json`) and resuming: settling a rerun's plan against the recorded one,
//! checking inputs before the resume cursor, verifying and keeping published shards, `--restart`.

use super::*;
use familiar::option::{name, off};

/// The identity of a file, to tell whether it may have changed: modification and change times,
/// device and inode (an edit changes the times; a copy, the inode). Recorded in an unfinished
/// build's plan only (see the module documentation).
pub(super) fn file_stamp(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(format!(
            "mtime {}.{:09} ctime {}.{:09} dev {} ino {}",
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.dev(),
            m.ino()
        ))
    }
    #[cfg(not(unix))]
    {
        let t = m
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some(format!("mtime {}.{:09}", t.as_secs(), t.subsec_nanos()))
    }
}

/// Before resuming: every input wholly before the resume cursor (which this run will not read)
/// whose stamp changed since the plan was written is read again and must have the whole-file
/// fingerprint the shard that finished it recorded. (The file at the cursor is checked as it is
/// re-read, by the corpus reader; files after it have not been read yet.)
pub(super) fn check_inputs_before_cursor(
    plan: &BuildPlan,
    files: &[InputFile],
    done: &[ShardManifest],
) -> Result<()> {
    let Some(last) = done.last() else {
        return Ok(());
    };
    let recorded: std::collections::BTreeMap<usize, &str> = done
        .iter()
        .filter_map(|m| m.input_fingerprints.as_ref())
        .flat_map(|f| f.finished.iter().map(|i| (i.file, i.xxh3.as_str())))
        .collect();
    for (i, (file, planned)) in files.iter().zip(&plan.inputs).enumerate() {
        if i >= last.input_end.file {
            break;
        }
        let Some(then) = planned.stamp.as_deref() else {
            continue;
        };
        if file_stamp(&file.path).as_deref() == Some(then) {
            continue;
        }
        // Shards written before fingerprints existed recorded none: nothing to compare with.
        let Some(want) = recorded.get(&i) else {
            continue;
        };
        let (now, _) = manifest::checksum_regular(&file.path, Some(file.bytes))?;
        if now != *want {
            return Err(corpus::changed_since(
                &file.path,
                format!("{want} recorded, {now} now"),
            ));
        }
    }
    Ok(())
}

/// Rewrites `build.json` for a complete build: every input's whole-file fingerprint (from the
/// shards that finished it, or from this run's reading), no stamps. The same bytes whether or not
/// the build was interrupted.
pub(super) fn finish_plan(
    out: &Path,
    plan: &BuildPlan,
    shards: &[ShardManifest],
    read_now: &Fingerprints,
) -> Result<()> {
    let mut known: Vec<Option<String>> = vec![None; plan.inputs.len()];
    for f in shards
        .iter()
        .filter_map(|m| m.input_fingerprints.as_ref())
        .flat_map(|f| f.finished.iter())
    {
        if let Some(slot) = known.get_mut(f.file) {
            *slot = Some(f.xxh3.clone());
        }
    }
    let mut plan = plan.clone();
    for (i, input) in plan.inputs.iter_mut().enumerate() {
        input.stamp = None;
        input.xxh3 = read_now
            .get(i)
            .map(manifest::fingerprint)
            .or_else(|| known[i].take())
            .or_else(|| input.xxh3.take());
    }
    manifest::write_atomic(
        &out.join(manifest::BUILD_PLAN_FILE),
        &manifest::to_bytes(&plan)?,
    )
}

/// Whether `path` holds a JSON object whose `format` is `tag` (a familiar manifest of that kind,
/// whatever its version or state).
pub(super) fn has_format_tag(path: &Path, tag: &str) -> bool {
    manifest::read_regular(path, manifest::MAX_MANIFEST_BYTES)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.get("format").and_then(|f| f.as_str()) == Some(tag))
}

/// Whether a name is a shard directory's (`shard-NNNNN`).
pub(super) fn is_shard_name(name: &str) -> bool {
    name.strip_prefix("shard-")
        .is_some_and(|n| n.len() >= 5 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `--restart`: removes the previous build in `out` (its manifest, shards, tokenizer copy,
/// temporaries and plan, the plan last). Returns the number of shards discarded, or `None` when
/// `out` held no build. Refuses a directory that is not a familiar build, or that holds anything
/// else besides one.
pub(super) fn discard_previous_build(out: &Path) -> Result<Option<usize>> {
    let mut ours = Vec::new();
    let mut foreign = Vec::new();
    let mut shards = 0;
    for entry in std::fs::read_dir(out).at(out)? {
        let entry = entry.at(out)?;
        let name = entry.file_name();
        if familiar::lock::is_lock_file(&name) {
            continue;
        }
        let text = name.to_string_lossy();
        if manifest::is_temp_name(&name)
            || text == manifest::BUILD_PLAN_FILE
            || text == manifest::MANIFEST_FILE
            || text == manifest::TOKENIZER_FILE
        {
            ours.push(entry.path());
        } else if is_shard_name(&text) && entry.path().is_dir() {
            shards += 1;
            ours.push(entry.path());
        } else {
            foreign.push(text.into_owned());
        }
    }
    if ours.is_empty() && foreign.is_empty() {
        return Ok(None);
    }
    let only_temporaries = foreign.is_empty()
        && ours
            .iter()
            .all(|p| p.file_name().is_some_and(manifest::is_temp_name));
    let is_build = has_format_tag(&out.join(manifest::BUILD_PLAN_FILE), BuildPlan::FORMAT)
        || has_format_tag(&out.join(manifest::MANIFEST_FILE), IndexManifest::FORMAT)
        || ours.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| is_shard_name(&n.to_string_lossy()))
                && has_format_tag(&p.join(manifest::MANIFEST_FILE), ShardManifest::FORMAT)
        });
    if !is_build && !only_temporaries {
        return Err(Error::Conflict(format!(
            "{} holds no familiar build (no build.json, manifest.json or shard of one), so \
             {} will not empty it; choose a new or empty {} directory",
            out.display(),
            name("restart"),
            name("out")
        )));
    }
    if !foreign.is_empty() {
        foreign.sort();
        return Err(Error::Conflict(format!(
            "{} holds a familiar build but also {}, which are not part of it; {} removes \
             only a build: move them elsewhere first",
            out.display(),
            foreign.join(", "),
            name("restart")
        )));
    }
    // The manifest first (the directory stops looking complete), the plan last (until then it
    // still looks like a build, should this be interrupted).
    let rank = |p: &Path| match p.file_name().map(|n| n.to_string_lossy().into_owned()) {
        Some(n) if n == manifest::MANIFEST_FILE => 0,
        Some(n) if n == manifest::BUILD_PLAN_FILE => 2,
        _ => 1,
    };
    ours.sort_by_key(|p| rank(p));
    for p in ours {
        if p.is_dir() {
            std::fs::remove_dir_all(&p).at(&p)?;
        } else {
            std::fs::remove_file(&p).at(&p)?;
        }
    }
    sync_dir(out)?;
    Ok(Some(shards))
}

/// Writes the tokenizer copy and `manifest.json` over `all`, every shard of the index (those
/// verified at the start and those this run published): the index is complete.
pub(super) fn finish_index(
    out: &Path,
    all: &[ShardManifest],
    tokenizer: &Tokenizer,
    tokenizer_bytes: &[u8],
    report: &mut BuildReport,
) -> Result<()> {
    manifest::write_atomic(&out.join(manifest::TOKENIZER_FILE), tokenizer_bytes)?;
    let mut shards = Vec::with_capacity(all.len());
    for s in all {
        let bytes = manifest::to_bytes(s)?;
        shards.push(ShardEntry {
            dir: shard_dir_name(s.shard),
            tokens: s.tokens,
            documents: s.documents,
            first_doc: s.first_doc,
            manifest_checksum: familiar::checksum::of_bytes(&bytes),
        });
    }
    if shards.is_empty() {
        return Err(Error::Config("the inputs hold no documents".into()));
    }
    let index_manifest = IndexManifest {
        format: IndexManifest::FORMAT.into(),
        format_version: format::FORMAT_VERSION,
        tokenizer: TokenizerEntry {
            file: manifest::TOKENIZER_FILE.into(),
            hash: tokenizer.hash().into(),
            vocab_size: tokenizer.vocab_size(),
        },
        token_width: tokenizer.token_width(),
        separator: tokenizer.vocab_size(),
        tokens: shards.iter().map(|s| s.tokens).sum(),
        documents: shards.iter().map(|s| s.documents).sum(),
        shards,
    };
    report.documents = index_manifest.documents;
    report.tokens = index_manifest.tokens;
    manifest::write_atomic(
        &out.join(manifest::MANIFEST_FILE),
        &manifest::to_bytes(&index_manifest)?,
    )?;
    sync_dir(out)
}

/// The plan a build runs by.
#[derive(Debug)]
pub(super) struct Settled {
    /// A new build's plan, or a resumed build's own (with its input stamps).
    pub(super) plan: BuildPlan,
    /// When the plan of an earlier attempt that published no shard was replaced: what differed.
    pub(super) replaced: Option<String>,
    /// Inputs whose size differs from the resumed plan's (everything else being the same):
    /// accepted or refused once the resume cursor is known ([`accept_resized_inputs`]).
    pub(super) resized: Vec<usize>,
}

/// Writes `build.json` for a new build, or checks that a resumed build is the same build.
pub(super) fn settle_plan(
    options: &BuildOptions,
    tokenizer: &Tokenizer,
    files: &[InputFile],
) -> Result<Settled> {
    let out = &options.out;
    if let Some(n) = options.shard_tokens {
        if !(2..=MAX_SHARD_TOKENS).contains(&n) {
            return Err(Error::Config(format!(
                "{} must be between 2 and {MAX_SHARD_TOKENS}, got {n}",
                name("shard_tokens")
            )));
        }
    }
    let plan_path = out.join(manifest::BUILD_PLAN_FILE);
    let mut plan = BuildPlan {
        format: BuildPlan::FORMAT.into(),
        format_version: format::FORMAT_VERSION,
        tokenizer_hash: tokenizer.hash().into(),
        text_field: options.fields.text.clone(),
        id_field: options.fields.id.clone(),
        source_field: options.fields.source.clone(),
        metadata_field: options.fields.metadata.clone(),
        shard_tokens: options.shard_tokens.unwrap_or(0),
        skip_invalid: options.skip_invalid,
        text_index: options.text_index,
        inputs: files
            .iter()
            .map(|f| PlannedInput {
                path: f.path.display().to_string(),
                bytes: f.bytes,
                xxh3: None,
                stamp: file_stamp(&f.path),
            })
            .collect(),
    };
    let mut replaced = None;
    if plan_path.exists() {
        let existing: BuildPlan = manifest::read(&plan_path, BuildPlan::FORMAT).map_err(|e| {
            Error::Conflict(format!(
                "{} holds a build whose plan cannot be read ({e}); rerun with {} to \
                 discard it and start over, or use another {} directory",
                out.display(),
                name("restart"),
                name("out")
            ))
        })?;
        if options.shard_tokens.is_none() {
            plan.shard_tokens = existing.shard_tokens;
        }
        let Some(what) = plan_difference(&existing, &plan) else {
            return Ok(Settled {
                plan: existing,
                replaced: None,
                resized: Vec::new(),
            });
        };
        if !out.join(manifest::MANIFEST_FILE).exists() {
            if let Some(resized) = resized_inputs(&existing, &plan) {
                return Ok(Settled {
                    plan: existing,
                    replaced: None,
                    resized,
                });
            }
        }
        if published_anything(out)? {
            return Err(Error::Conflict(format!(
                "{} holds a build with {what}; rerun with {} to discard it and start \
                 over, or use another {} directory",
                out.display(),
                name("restart"),
                name("out")
            )));
        }
        // An earlier attempt that published nothing (e.g. it failed on a bad input line, since
        // fixed): nothing is lost by starting over with this plan.
        replaced = Some(what);
        std::fs::remove_file(&plan_path).at(&plan_path)?;
    }
    // Leftovers of an interrupted start (e.g. `.tmp-build.json.…`) are ours to remove; the
    // directory's lock file is this run's.
    let mut foreign = false;
    for entry in std::fs::read_dir(out).at(out)? {
        let entry = entry.at(out)?;
        if familiar::lock::is_lock_file(&entry.file_name()) {
            continue;
        }
        if !remove_if_temporary(&entry)? {
            foreign = true;
        }
    }
    if foreign {
        return Err(Error::Conflict(format!(
            "{} is not empty and holds no familiar build; choose a new or empty {} directory",
            out.display(),
            name("out")
        )));
    }
    if plan.shard_tokens == 0 {
        plan.shard_tokens = crate::memory::auto_shard_tokens(tokenizer.token_width());
    }
    manifest::write_atomic(&plan_path, &manifest::to_bytes(&plan)?)?;
    Ok(Settled {
        plan,
        replaced,
        resized: Vec::new(),
    })
}

/// When two plans differ only in the sizes of some inputs (same paths, tokenizer and options):
/// those inputs.
pub(super) fn resized_inputs(existing: &BuildPlan, given: &BuildPlan) -> Option<Vec<usize>> {
    let strip = |p: &BuildPlan| {
        let mut p = p.clone();
        for i in &mut p.inputs {
            (i.bytes, i.xxh3, i.stamp) = (0, None, None);
        }
        p
    };
    if strip(existing) != strip(given) {
        return None;
    }
    Some(
        existing
            .inputs
            .iter()
            .zip(&given.inputs)
            .enumerate()
            .filter(|(_, (a, b))| a.bytes != b.bytes)
            .map(|(i, _)| i)
            .collect(),
    )
}

/// Inputs that changed size since an unfinished build started are fine if the build had not
/// read them yet (after the resume cursor), or read only a part that the resume re-reads and
/// checks (the file at the cursor, when the last kept shard recorded its fingerprint; e.g. a bad
/// line after the cursor, fixed). Their new sizes (and stamps) go into the plan. Any other is
/// refused: the kept shards hold its old contents. Returns the inputs accepted.
pub(super) fn accept_resized_inputs(
    out: &Path,
    plan: &mut BuildPlan,
    files: &[InputFile],
    resized: &[usize],
    done: &[ShardManifest],
) -> Result<Vec<PathBuf>> {
    let cursor = done
        .last()
        .map(|m| (m.input_end.file, m.input_fingerprints.is_some()));
    let mut accepted = Vec::new();
    for &i in resized {
        let unread = match cursor {
            None => true,
            Some((at, checked)) => i > at || (i == at && checked),
        };
        if !unread {
            return Err(corpus::changed_since(
                &files[i].path,
                format!(
                    "{} bytes when it started, {} now",
                    plan.inputs[i].bytes, files[i].bytes
                ),
            ));
        }
        plan.inputs[i].bytes = files[i].bytes;
        plan.inputs[i].stamp = file_stamp(&files[i].path);
        accepted.push(files[i].path.clone());
    }
    manifest::write_atomic(
        &out.join(manifest::BUILD_PLAN_FILE),
        &manifest::to_bytes(plan)?,
    )?;
    Ok(accepted)
}

/// Whether `out` holds a published shard or an index manifest.
pub(super) fn published_anything(out: &Path) -> Result<bool> {
    for entry in std::fs::read_dir(out).at(out)? {
        let name = entry.at(out)?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("shard-") || name == manifest::MANIFEST_FILE {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What differs between the plan in a directory and this run's (input fingerprints and stamps
/// aside), in words; `None` when it is the same build.
pub(super) fn plan_difference(existing: &BuildPlan, given: &BuildPlan) -> Option<String> {
    let strip = |p: &BuildPlan| {
        let mut p = p.clone();
        for i in &mut p.inputs {
            i.xxh3 = None;
            i.stamp = None;
        }
        p
    };
    let (a, b) = (strip(existing), strip(given));
    if a == b {
        return None;
    }
    if a.tokenizer_hash != b.tokenizer_hash {
        return Some(format!(
            "a different tokenizer (hash {} there, {} given)",
            a.tokenizer_hash, b.tokenizer_hash
        ));
    }
    if a.inputs != b.inputs {
        let paths_a: Vec<&str> = a.inputs.iter().map(|i| i.path.as_str()).collect();
        let paths_b: Vec<&str> = b.inputs.iter().map(|i| i.path.as_str()).collect();
        if paths_a != paths_b {
            let i = paths_a
                .iter()
                .zip(&paths_b)
                .position(|(x, y)| x != y)
                .unwrap_or(paths_a.len().min(paths_b.len()));
            let name = |p: Option<&&str>| p.map_or("none".to_string(), |p| p.to_string());
            return Some(format!(
                "different input files ({} there, {} given; input {} is {} there, {} given)",
                paths_a.len(),
                paths_b.len(),
                i + 1,
                name(paths_a.get(i)),
                name(paths_b.get(i))
            ));
        }
        let changed: Vec<(&PlannedInput, &PlannedInput)> = a
            .inputs
            .iter()
            .zip(&b.inputs)
            .filter(|(x, y)| x.bytes != y.bytes)
            .collect();
        if let Some((x, y)) = changed.first() {
            let more = match changed.len() {
                1 => String::new(),
                n => format!(", and {} more", n - 1),
            };
            return Some(format!(
                "input {} that changed size since ({} bytes when the build started, {} now{more})",
                x.path, x.bytes, y.bytes
            ));
        }
    }
    if a.text_index != b.text_index {
        let has = |b: bool| if b { "a text index" } else { "no text index" };
        return Some(format!(
            "{} per shard, but this run asks for {} ({})",
            has(a.text_index),
            has(b.text_index),
            off("text_index")
        ));
    }
    if a.shard_tokens != b.shard_tokens {
        return Some(format!(
            "a shard size of {} tokens, not {}",
            a.shard_tokens, b.shard_tokens
        ));
    }
    let mut details = Vec::new();
    for (option, x, y) in [
        ("text_field", &a.text_field, &b.text_field),
        ("id_field", &a.id_field, &b.id_field),
        ("source_field", &a.source_field, &b.source_field),
        ("metadata_field", &a.metadata_field, &b.metadata_field),
    ] {
        if x != y {
            details.push(format!("{} {x:?} there, {y:?} given", name(option)));
        }
    }
    if a.skip_invalid != b.skip_invalid {
        let on = |b: bool| if b { "on" } else { "off" };
        details.push(format!(
            "{} {} there, {} given",
            name("skip_invalid"),
            on(a.skip_invalid),
            on(b.skip_invalid)
        ));
    }
    if a.format_version != b.format_version {
        details.push(format!(
            "format version {} there, {} here",
            a.format_version, b.format_version
        ));
    }
    Some(format!(
        "different field names or options ({})",
        details.join("; ")
    ))
}

/// Removes `entry` if it is a leftover of an interrupted write (`.tmp-*`, a file or a shard
/// directory being built); returns whether it was one.
pub(super) fn remove_if_temporary(entry: &std::fs::DirEntry) -> Result<bool> {
    if !manifest::is_temp_name(&entry.file_name()) {
        return Ok(false);
    }
    let p = entry.path();
    if p.is_dir() {
        std::fs::remove_dir_all(&p).at(&p)?;
    } else {
        std::fs::remove_file(&p).at(&p)?;
    }
    Ok(true)
}

/// The published shards that verify, in order; removes temporary directories and any shard after
/// the first one that does not verify (a later build rewrites them).
pub(super) fn reusable_shards(out: &Path, plan: &BuildPlan) -> Result<Vec<ShardManifest>> {
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(out).at(out)? {
        let entry = entry.at(out)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if remove_if_temporary(&entry)? {
            continue;
        }
        if name.starts_with("shard-") {
            names.push(name);
        }
    }
    names.sort();
    let mut good = Vec::new();
    let mut broken = false;
    for (i, name) in names.iter().enumerate() {
        let dir = out.join(name);
        if !broken {
            match manifest::verify_shard_files(&dir) {
                Ok(m)
                    if name == &shard_dir_name(i as u32)
                        && m.shard as usize == i
                        && m.tokenizer_hash == plan.tokenizer_hash
                        && m.first_doc
                            == good
                                .last()
                                .map_or(0, |p: &ShardManifest| p.first_doc + p.documents)
                        && good
                            .last()
                            .map_or(InputCursor::default(), |p: &ShardManifest| p.input_end)
                            == m.input_start =>
                {
                    good.push(m);
                    continue;
                }
                _ => broken = true,
            }
        }
        std::fs::remove_dir_all(&dir).at(&dir)?;
    }
    Ok(good)
}
