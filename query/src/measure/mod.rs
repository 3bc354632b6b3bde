//! What a model does: zero-shot scores and keyword probabilities ([`score`], over [`items`]).

pub mod density;
pub mod items;
pub mod score;
