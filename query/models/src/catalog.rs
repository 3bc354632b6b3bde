//! The `models` table: what a checkpoint directory holds — its architecture, size, hashes and
//! training state — for joining model measurements with each other in SQL.

use std::path::Path;

use crate::error::Result;

use crate::model::config::{Family, ModelConfig};

/// A row of the `models` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[allow(missing_docs)] // the columns are documented in schemas/models.json
pub struct ModelRow {
    pub model: String,
    pub family: String,
    pub parameters: u64,
    pub layers: u64,
    pub hidden: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub intermediate: u64,
    pub vocab_size: u64,
    pub context: u64,
    pub tied_embeddings: bool,
    pub model_hash: String,
    pub tokenizer_hash: Option<String>,
    pub trained_steps: Option<u64>,
    pub trained_tokens: Option<u64>,
    pub final_loss: Option<f64>,
}

impl familiar::table::TableRow for ModelRow {
    const TABLE: &'static str = "models";
}

/// Describes the checkpoint directory `dir` (`config.json`, the safetensors headers — no weight
/// is read —, `tokenizer.json` and `trainer_state.json` where present).
pub fn describe(dir: &Path) -> Result<ModelRow> {
    let config = ModelConfig::read(&dir.join("config.json"))?;
    let weights = crate::model::weights::Weights::open(dir)?;
    let tokenizer = dir.join("tokenizer.json");
    let tokenizer_hash = if tokenizer.exists() {
        Some(familiar::checksum::of_file(&tokenizer)?.0)
    } else {
        None
    };
    let trained = if dir.join("trainer_state.json").exists() {
        Some(crate::train::TrainerState::read(dir)?)
    } else {
        None
    };
    Ok(ModelRow {
        model: dir.display().to_string(),
        family: match config.family {
            Family::Gpt2 => "gpt2",
            Family::GptNeox => "gpt_neox",
            Family::Llama => "llama",
        }
        .to_string(),
        parameters: weights.parameters(),
        layers: config.layers as u64,
        hidden: config.hidden as u64,
        heads: config.heads as u64,
        kv_heads: config.kv_heads as u64,
        intermediate: config.intermediate as u64,
        vocab_size: config.vocab_size as u64,
        context: config.max_positions as u64,
        tied_embeddings: config.tied_embeddings,
        model_hash: crate::grads::store::model_hash(dir)?,
        tokenizer_hash,
        trained_steps: trained.as_ref().map(|t| t.step),
        trained_tokens: trained.as_ref().map(|t| t.tokens),
        final_loss: trained.as_ref().and_then(|t| t.losses.last().copied()),
    })
}
