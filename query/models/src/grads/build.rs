//! Builds a gradient store ([`crate::grads::store`]): the projected gradient of every document
//! of an index under a model, per shard, resumable and atomic.
//!
//! A document is the model's start token (BOS, else EOS — the end-of-document token a model trained
//! by familiar saw before every document) followed by its tokens, cut into chunks of the model's
//! context that overlap by one token, so that every token after the first is predicted exactly
//! once; the document's row is the sum of its chunks' projected gradients (the gradient of the
//! summed token loss). Documents are computed in parallel (rayon), in blocks written in order, so
//! memory stays bounded by one block of rows.
//!
//! With the optimizer correction, the scales of each layer's inputs and output gradients
//! ([`OptimizerScales`]) are computed from the model's optimizer state and written to
//! `optimizer-scales.bin` before any row.
//!
//! When the projection has the output head, its factor ([`HeadFactor`], which whitens the head's
//! projection) is fitted first, by forward passes over evenly spaced documents, and written to
//! `head-factor.bin` before any row: the rows depend on it.
//!
//! Each shard also keeps the token sums of its projected inputs' and output gradients' outer
//! products (EK-FAC's Kronecker factors, [`KronSums`]); once every shard is done, EK-FAC is fitted
//! over the whole store (the factors' eigenbases, then the corrected eigenvalues from the rows,
//! [`Ekfac`]) and written to `ekfac.bin`, before the manifest that makes the store complete.
//!
//! A non-finite logit (while fitting the factor), loss or gradient row is an error naming the
//! document ([`crate::Error::NonFinite`]); no factor, row file or moments of it are published.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::grads::ekfac::{Ekfac, KronSums};
use crate::grads::fast::FastGradients;
use crate::grads::optimizer::{
    OptimizerCorrection, OptimizerScales, FLOOR, OPTIMIZER_FILE, SCALES_FILE, SCALES_VERSION,
};
use crate::grads::store::{
    keeps_moments, kron_file, model_hash, moments_file, shard_file, Moments, MomentsEntry, RowFile,
    RowWriter, StoreDtype, StoreManifest, StoreSettings, StoreShard, EKFAC, HEAD_FACTOR, MANIFEST,
};
use crate::grads::{
    projected_gradients_factored, Example, Gradients, HeadFactor, Projection, ProjectionSpec,
};
use crate::model::finite;
use crate::model::{LinearGroup, Transformer};
use familiar::index::Index;
use familiar::token::Token;
use familiar::with_view;
use rayon::prelude::*;

/// What to build.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Hugging Face model directory (with the index's tokenizer.json).
    pub model: PathBuf,
    /// The store directory.
    pub out: PathBuf,
    /// Which linear layers.
    pub layers: LinearGroup,
    /// Projection rank (input and output).
    pub rank: usize,
    /// The output head's vocabulary-side rank ([`ProjectionSpec::with_head_rank`]); `None`:
    /// [`ProjectionSpec::default_head_rank`].
    pub head_rank: Option<usize>,
    /// Projection seed.
    pub seed: u64,
    /// Storage type.
    pub dtype: StoreDtype,
    /// Correct every gradient by the optimizer's second moment before projecting it (TrackStar;
    /// [`crate::grads::optimizer`]), from the optimizer state saved beside the model
    /// (`optimizer.safetensors`, as `familiar train` keeps it). The output head is then not
    /// whitened by its own factor: the optimizer's second moment corrects it.
    pub optimizer_correction: bool,
    /// Where the gradients are computed: `None`, the CPU's autograd-free backward pass
    /// ([`FastGradients`]); a device (a GPU: `--device cuda`), candle's autograd on it
    /// ([`crate::grads::projected_gradients_factored`], the output head's factor by
    /// [`HeadFactor::of_examples`]), one document at a time. Both give the same rows and sums to
    /// f32 rounding.
    pub device: Option<candle_core::Device>,
    /// Set from elsewhere (another thread, a progress callback) to stop the build after the
    /// current block of documents with [`familiar::Error::Interrupted`]: shards finished so far
    /// stay, the unfinished shard's temporary file is removed, and a rerun resumes.
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl StoreOptions {
    /// [`StoreOptions::device`] of a device named as `--device` names it (`cpu`, `cuda`,
    /// `cuda:N`): `None` for the CPU, whose own backward pass is the faster one there.
    pub fn device_named(spec: &str) -> Result<Option<candle_core::Device>> {
        Ok(Some(crate::model::device(spec)?).filter(|d| !d.is_cpu()))
    }

    /// [`familiar::Error::Interrupted`] if [`StoreOptions::cancel`] is set.
    fn check_cancel(&self) -> Result<()> {
        match &self.cancel {
            Some(c) if c.load(std::sync::atomic::Ordering::Relaxed) => {
                Err(Error::Core(familiar::Error::Interrupted(format!(
                    "the gradient store {} was stopped; the shards finished so far are kept, and \
                     running it again resumes after them",
                    self.out.display()
                ))))
            }
            _ => Ok(()),
        }
    }
}

/// What a build reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreProgress {
    /// The output head's factor is being fitted on this many documents.
    FactorStart(u64),
    /// This many more documents of the factor fitted.
    Factor(u64),
    /// This many more documents' rows computed (or found done).
    Rows(u64),
    /// EK-FAC's eigenvalues are being corrected over this many documents' rows.
    EkfacStart(u64),
    /// This many more documents' rows of the EK-FAC fit read.
    Ekfac(u64),
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct StoreReport {
    /// Documents in the store.
    pub documents: u64,
    /// Values per row.
    pub dim: usize,
    /// Shards computed now (the others were already done).
    pub computed_shards: usize,
    /// Shards found complete from an earlier run.
    pub resumed_shards: usize,
    /// Predicted tokens the output head's factor was fitted on now, and the seconds it took
    /// (`None`: no head, or the factor was found from an earlier run).
    pub factor: Option<(u64, f64)>,
    /// Documents EK-FAC was fitted over now, and the seconds it took (`None`: found from an
    /// earlier run).
    pub ekfac: Option<(u64, f64)>,
}

/// Documents per block written at once.
const BLOCK: usize = 256;
/// Documents computed in order by one thread, with their own Kronecker sums.
const GROUP: usize = 16;

/// The examples (chunks) of one document.
pub fn document_examples(tokens: &[u32], start: Option<u32>, context: usize) -> Vec<Example> {
    let mut ids = Vec::with_capacity(tokens.len() + 1);
    ids.extend(start);
    ids.extend_from_slice(tokens);
    let context = context.max(2);
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let to = (from + context).min(ids.len());
        out.push(Example {
            ids: ids[from..to].to_vec(),
            first_target: 1,
        });
        if to == ids.len() {
            break;
        }
        from = to - 1;
    }
    out
}

/// Builds (or finishes) the store of `index`, telling `progress` how far it is.
pub fn build_store(
    index: &Index,
    o: &StoreOptions,
    progress: &(dyn Fn(StoreProgress) + Sync),
) -> Result<StoreReport> {
    let model = Transformer::load_with(
        &o.model,
        &crate::model::transformer::LoadOptions {
            device: o.device.clone().unwrap_or(candle_core::Device::Cpu),
            ..Default::default()
        },
    )?;
    let tpath = crate::model::tokenizer_file(&o.model)?;
    let (thash, _) = familiar::checksum::of_file(&tpath)?;
    let ihash = &index.manifest().tokenizer.hash;
    if &thash != ihash {
        return Err(Error::config(format!(
            "{}: the model's tokenizer ({thash}) is not the index's ({ihash})",
            tpath.display()
        )));
    }
    if (index.vocab_size() as usize) > model.config.vocab_size {
        return Err(Error::config(format!(
            "the index has {} token ids, the model's vocabulary only {}",
            index.vocab_size(),
            model.config.vocab_size
        )));
    }
    let mut spec = ProjectionSpec::new(&model, o.layers, o.rank, o.rank, o.seed)?;
    if let Some(rank) = o.head_rank.or_else(|| spec.default_head_rank()) {
        spec = spec.with_head_rank(rank)?;
    }
    let scales = if o.optimizer_correction {
        let path = o.model.join(OPTIMIZER_FILE);
        if !path.exists() {
            return Err(Error::config(format!(
                "{}: no optimizer state beside the model to correct the gradients by (`familiar \
                 train` saves its AdamW moments there; a checkpoint without them is stored \
                 without the correction, and trackstar then corrects by the store's own second \
                 moment)",
                path.display()
            )));
        }
        let (checksum, _) = familiar::checksum::of_file(&path)?;
        spec.head_whitening = None;
        spec.optimizer = Some(OptimizerCorrection {
            file: OPTIMIZER_FILE.to_string(),
            checksum,
            floor: FLOOR,
            version: SCALES_VERSION,
        });
        Some(OptimizerScales::from_state(&path, &spec, FLOOR)?)
    } else {
        None
    };
    let dim = spec.dim();
    let settings = StoreSettings {
        model_hash: model_hash(&o.model)?,
        tokenizer_hash: ihash.clone(),
        projection: spec,
        dtype: o.dtype,
        context: model.config.max_positions,
        start_token: model.config.bos_token_id.or(model.config.eos_token_id),
        documents: index.documents(),
        tokens: index.manifest().tokens,
    };
    // The store's directory is a run directory whose plan is the store manifest without shards.
    let _lock = familiar::rundir::claim(
        &o.out,
        &StoreManifest::new(settings.clone()),
        "a gradient store",
        "model, index, layers, rank, seed or dtype",
    )?;
    let mut manifest = StoreManifest::new(settings.clone());
    let mut fitted = None;
    let head = match &settings.projection.head_whitening {
        Some(w) => {
            let path = o.out.join(HEAD_FACTOR);
            let vocab = model.config.vocab_size;
            let factor = match HeadFactor::read(&path, vocab) {
                Ok(f) => f,
                Err(_) => {
                    let started = std::time::Instant::now();
                    let f = fit_head_factor(index, &model, &settings, w.max_tokens, o, progress)?;
                    f.write(&path)?;
                    fitted = Some((f.tokens, started.elapsed().as_secs_f64()));
                    f
                }
            };
            let (checksum, _) = familiar::checksum::of_file(&path)?;
            manifest.head_factor = Some(MomentsEntry {
                file: HEAD_FACTOR.to_string(),
                checksum,
            });
            Some(factor)
        }
        None => None,
    };
    if let Some(scales) = &scales {
        let path = o.out.join(SCALES_FILE);
        // The scales follow from the plan's optimizer state (its checksum is in the plan).
        if OptimizerScales::read(&path, &settings.projection)
            .ok()
            .as_ref()
            != Some(scales)
        {
            scales.write(&path)?;
        }
        let (checksum, _) = familiar::checksum::of_file(&path)?;
        manifest.optimizer_scales = Some(MomentsEntry {
            file: SCALES_FILE.to_string(),
            checksum,
        });
    }
    let projection = Projection::corrected(
        settings.projection.clone(),
        &model,
        head.as_ref(),
        scales.as_ref(),
    )?;
    let backend = match &o.device {
        None => Backend::Fast(Box::new(FastGradients::new(&model, &projection)?)),
        Some(_) => Backend::Autograd(&model, &projection),
    };
    let (mut computed, mut resumed) = (0, 0);
    for (i, shard) in index.shards().iter().enumerate() {
        let file = shard_file(i);
        let path = o.out.join(&file);
        let mfile = moments_file(i);
        let mpath = o.out.join(&mfile);
        let first = shard.first_doc();
        let docs = shard.manifest.documents;
        let kfile = kron_file(i);
        let kpath = o.out.join(&kfile);
        let spec = &settings.projection;
        let done = path.exists()
            && RowFile::open(&path, dim, o.dtype, first, docs).is_ok()
            && (!keeps_moments(spec) || Moments::read(&mpath, &spec.blocks(), docs).is_ok())
            && KronSums::read(&kpath, &spec.all_ranks()).is_ok();
        if done {
            resumed += 1;
            progress(StoreProgress::Rows(docs));
        } else {
            o.check_cancel()?;
            write_shard(
                index,
                i,
                &backend,
                &settings,
                (&path, &mpath, &kpath),
                o,
                progress,
            )?;
            computed += 1;
        }
        let (checksum, bytes) = familiar::checksum::of_file(&path)?;
        let moments = if keeps_moments(spec) {
            let (mchecksum, _) = familiar::checksum::of_file(&mpath)?;
            Some(MomentsEntry {
                file: mfile,
                checksum: mchecksum,
            })
        } else {
            None
        };
        let (kchecksum, _) = familiar::checksum::of_file(&kpath)?;
        manifest.shards.push(StoreShard {
            file,
            first_doc: first,
            documents: docs,
            checksum,
            bytes,
            moments,
            kron: Some(MomentsEntry {
                file: kfile,
                checksum: kchecksum,
            }),
        });
    }
    let ekfac = fit_ekfac(&manifest, o, progress)?;
    let (echecksum, _) = familiar::checksum::of_file(&o.out.join(EKFAC))?;
    manifest.ekfac = Some(MomentsEntry {
        file: EKFAC.to_string(),
        checksum: echecksum,
    });
    familiar::manifest::write_atomic(
        &o.out.join(MANIFEST),
        &familiar::manifest::to_bytes(&manifest)?,
    )?;
    Ok(StoreReport {
        documents: settings.documents,
        dim,
        computed_shards: computed,
        resumed_shards: resumed,
        factor: fitted,
        ekfac,
    })
}

/// Fits EK-FAC over the finished shards of `manifest` and writes `ekfac.bin`, unless an earlier
/// run left a readable fit of these shards (its file is written only once the fit is complete).
/// Returns the documents fitted over and the seconds it took, `None` when found.
fn fit_ekfac(
    manifest: &StoreManifest,
    o: &StoreOptions,
    progress: &(dyn Fn(StoreProgress) + Sync),
) -> Result<Option<(u64, f64)>> {
    let spec = &manifest.settings.projection;
    let ranks = spec.all_ranks();
    let docs = manifest.settings.documents;
    let path = o.out.join(EKFAC);
    // Rows are deterministic (a recomputed shard is byte-identical), so a complete fit of this
    // run directory is the fit of these shards.
    if Ekfac::read(&path, &ranks, docs).is_ok() {
        progress(StoreProgress::EkfacStart(docs));
        progress(StoreProgress::Ekfac(docs));
        return Ok(None);
    }
    o.check_cancel()?;
    let started = std::time::Instant::now();
    let mut sums = KronSums::zero(&ranks);
    let mut files = Vec::with_capacity(manifest.shards.len());
    for s in &manifest.shards {
        if let Some(k) = &s.kron {
            sums.merge(&KronSums::read(&o.out.join(&k.file), &ranks)?);
        }
        files.push(RowFile::open(
            &o.out.join(&s.file),
            spec.dim(),
            manifest.settings.dtype,
            s.first_doc,
            s.documents,
        )?);
    }
    progress(StoreProgress::EkfacStart(docs));
    let fit = Ekfac::fit_files(&sums, &files, spec.dim(), &|n| {
        progress(StoreProgress::Ekfac(n))
    });
    fit.write(&path)?;
    Ok(Some((docs, started.elapsed().as_secs_f64())))
}

/// The output head's factor over every k-th document, k the smallest stride that keeps the
/// index's tokens within `max_tokens` (all documents when they fit), from the autograd-free
/// forward pass ([`FastGradients::head_factor`]; on a device candle's,
/// [`HeadFactor::of_examples`]); summed per document in parallel and merged in document order, so
/// that the result does not depend on the threads.
fn fit_head_factor(
    index: &Index,
    model: &Transformer,
    settings: &StoreSettings,
    max_tokens: u64,
    o: &StoreOptions,
    progress: &(dyn Fn(StoreProgress) + Sync),
) -> Result<HeadFactor> {
    // The forward pass needs no whitening (that is what it fits) and no projection.
    let mut spec = settings.projection.clone();
    spec.head_whitening = None;
    spec.optimizer = None;
    let fast = match o.device {
        None => Some(FastGradients::new(
            model,
            &Projection::new(spec, model, None)?,
        )?),
        Some(_) => None,
    };
    let stride = settings.tokens.div_ceil(max_tokens.max(1)).max(1) as usize;
    let picked: Vec<u64> = (0..settings.documents).step_by(stride).collect();
    progress(StoreProgress::FactorStart(picked.len() as u64));
    let mut total = HeadFactor::zero(model.config.vocab_size);
    for block in picked.chunks(BLOCK) {
        o.check_cancel()?;
        let one = |&doc: &u64| -> Result<HeadFactor> {
            let tokens = index.doc_tokens(doc, 0, u64::MAX)?;
            let examples = document_examples(&tokens, settings.start_token, settings.context);
            let named = |e| finite::within(e, format!("output-head factor: document {doc}"));
            let Some(fast) = &fast else {
                // On the device: candle's forward pass, which refuses non-finite logits.
                let f = HeadFactor::of_examples(model, &examples, DEVICE_BATCH).map_err(named)?;
                finite::check_values("the factor's sums", &f.sums).map_err(named)?;
                return Ok(f);
            };
            let (f, losses) = fast.head_factor(&examples)?;
            // A non-finite sum would be written to the factor file and refused when read.
            for (k, &l) in losses.iter().enumerate() {
                finite::check_value(format!("the loss of chunk {k}"), l).map_err(named)?;
            }
            finite::check_values("the factor's sums", &f.sums).map_err(named)?;
            Ok(f)
        };
        // Every document's result, then the first error in order (rayon's own short circuit
        // reports whichever thread fails first); on a device one document at a time.
        let parts: Vec<Result<HeadFactor>> = match &fast {
            Some(_) => block.par_iter().map(one).collect(),
            None => block.iter().map(one).collect(),
        };
        let parts = parts.into_iter().collect::<Result<Vec<_>>>()?;
        parts.iter().for_each(|p| total.merge(p));
        progress(StoreProgress::Factor(block.len() as u64));
    }
    Ok(total)
}

/// Where a store's gradients are computed.
enum Backend<'a> {
    /// The CPU's autograd-free backward pass, documents in parallel.
    Fast(Box<FastGradients>),
    /// candle's autograd on the model's device, one document at a time.
    Autograd(&'a Transformer, &'a Projection),
}

impl Backend<'_> {
    /// The projected gradients of `examples`, their Kronecker sums added to `sums`.
    fn compute_factored(&self, examples: &[Example], sums: &mut KronSums) -> Result<Gradients> {
        match self {
            Backend::Fast(fast) => fast.compute_factored(examples, sums),
            Backend::Autograd(model, projection) => {
                let mut g = Gradients::default();
                // Chunks a batch at a time (one forward and backward pass each).
                for batch in examples.chunks(DEVICE_BATCH) {
                    let b = projected_gradients_factored(model, projection, batch, Some(sums))?;
                    g.rows.extend(b.rows);
                    g.losses.extend(b.losses);
                }
                Ok(g)
            }
        }
    }
}

/// Chunks of a document in one forward and backward pass on a device.
const DEVICE_BATCH: usize = 8;

fn write_shard(
    index: &Index,
    i: usize,
    backend: &Backend<'_>,
    settings: &StoreSettings,
    (path, moments_path, kron_path): (&Path, &Path, &Path),
    o: &StoreOptions,
    progress: &(dyn Fn(StoreProgress) + Sync),
) -> Result<()> {
    let shard = &index.shards()[i];
    let docs = shard.manifest.documents;
    let first = shard.first_doc();
    let dim = settings.projection.dim();
    // Kept only for blocks small enough to invert densely ([`keeps_moments`]).
    let mut moments =
        keeps_moments(&settings.projection).then(|| Moments::zero(&settings.projection.blocks()));
    let ranks = settings.projection.all_ranks();
    let mut kron = KronSums::zero(&ranks);
    let mut w = RowWriter::create(path, settings.dtype, dim, docs, shard.first_doc())?;
    let mut from = 0u64;
    while from < docs {
        o.check_cancel()?;
        let to = (from + BLOCK as u64).min(docs);
        // Groups of documents computed in parallel, each group in order with its own Kronecker
        // sums, merged in order: the sums do not depend on the threads.
        let starts: Vec<u64> = (from..to).step_by(GROUP).collect();
        let group = |&start: &u64| -> Result<(Vec<Vec<f32>>, KronSums)> {
            let mut sums = KronSums::zero(&ranks);
            let mut rows = Vec::with_capacity(GROUP);
            for local in start..(start + GROUP as u64).min(to) {
                let tokens: Vec<u32> = with_view!(shard, |v| {
                    let (s, e) = v.doc_span(local)?;
                    v.tokens[s..e].iter().map(|t| t.to_u32()).collect()
                });
                let examples = document_examples(&tokens, settings.start_token, settings.context);
                let g = backend.compute_factored(&examples, &mut sums)?;
                let mut row = vec![0.0f32; dim];
                for chunk in g.rows.chunks_exact(dim) {
                    row.iter_mut().zip(chunk).for_each(|(r, c)| *r += c);
                }
                // A NaN row would be stored, and score NaN against every query.
                let named = |e| finite::within(e, format!("document {}", first + local));
                for (k, &l) in g.losses.iter().enumerate() {
                    finite::check_value(format!("the loss of chunk {k}"), l).map_err(named)?;
                }
                finite::check_values("the projected gradient", &row).map_err(named)?;
                rows.push(row);
            }
            Ok((rows, sums))
        };
        // The first error in document order, whichever thread met it first.
        let groups: Vec<Result<_>> = match backend {
            Backend::Fast(_) => starts.par_iter().map(group).collect(),
            Backend::Autograd(..) => starts.iter().map(group).collect(),
        };
        let groups: Vec<(Vec<Vec<f32>>, KronSums)> = groups.into_iter().collect::<Result<_>>()?;
        let mut rows = Vec::with_capacity((to - from) as usize);
        for (r, k) in groups {
            rows.extend(r);
            kron.merge(&k);
        }
        for r in &rows {
            w.push(r)?;
        }
        if let Some(m) = moments.as_mut() {
            m.add_rows(&rows);
        }
        progress(StoreProgress::Rows(to - from));
        from = to;
    }
    // A non-finite sum (overflow) would be refused when read.
    if let Some(bad) = kron
        .inputs
        .iter()
        .chain(&kron.outputs)
        .find_map(|m| finite::scan(m))
    {
        return Err(finite::within(
            finite::values_error("the Kronecker factors' sums", &bad),
            format!("shard {i}"),
        ));
    }
    // The moments and factors first: a shard counts as done once its row file is in place.
    if let Some(m) = &moments {
        m.write(moments_path)?;
    }
    kron.write(kron_path)?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_predict_every_token_once() {
        let tokens: Vec<u32> = (10..30).collect();
        for context in [2, 3, 7, 21, 22, 100] {
            let ex = document_examples(&tokens, Some(1), context);
            let mut predicted: Vec<u32> = Vec::new();
            for e in &ex {
                assert!(e.ids.len() <= context);
                predicted.extend(&e.ids[e.first_target..]);
            }
            assert_eq!(predicted, tokens, "context {context}");
        }
        let ex = document_examples(&[], Some(1), 8);
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].targets(), 0);
    }
}
