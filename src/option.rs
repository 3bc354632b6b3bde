//! Naming a caller's options in messages, in the caller's own spelling.
//!
//! A library message that tells the user which option to change ("rerun with `restart` to start
//! over") names the option by its name in the library's API — the field of the options struct,
//! such as `BuildOptions::shard_tokens` — through [`name`]. How a user types that option depends on
//! the front end: `--shard-tokens` on the command line, `shard_tokens=` as a Python keyword
//! argument. Each front end says so once, at start-up, with [`set_spelling`]; libraries never write
//! a front end's spelling themselves. The default, [`Spelling::Api`], is the Rust API's.
//!
//! ```
//! use familiar::option::{name, set_spelling, Spelling};
//! assert_eq!(name("shard_tokens"), "`shard_tokens`");
//! set_spelling(Spelling::Flag);
//! assert_eq!(name("shard_tokens"), "--shard-tokens");
//! set_spelling(Spelling::Api);
//! ```

use std::sync::atomic::{AtomicU8, Ordering};

/// How options are named in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// The library's field name in backquotes: `` `shard_tokens` `` (the default).
    Api,
    /// A command-line flag: `--shard-tokens`.
    Flag,
    /// A keyword argument: `shard_tokens=`.
    Keyword,
}

static SPELLING: AtomicU8 = AtomicU8::new(0);

/// Sets how every later message of this process names options.
pub fn set_spelling(spelling: Spelling) {
    let v = match spelling {
        Spelling::Api => 0,
        Spelling::Flag => 1,
        Spelling::Keyword => 2,
    };
    SPELLING.store(v, Ordering::Relaxed);
}

/// How messages name options now.
pub fn spelling() -> Spelling {
    match SPELLING.load(Ordering::Relaxed) {
        1 => Spelling::Flag,
        2 => Spelling::Keyword,
        _ => Spelling::Api,
    }
}

/// The option `field` (its name in the library's API, in snake case) as the user types it.
pub fn name(field: &str) -> String {
    match spelling() {
        Spelling::Api => format!("`{field}`"),
        Spelling::Flag => format!("--{}", field.replace('_', "-")),
        Spelling::Keyword => format!("{field}="),
    }
}

/// Several options: "`a`, `b` and `c`" in the current spelling.
pub fn names(fields: &[&str]) -> String {
    listed(fields, "and")
}

/// Alternative options: "`a`, `b` or `c`" in the current spelling.
pub fn names_or(fields: &[&str]) -> String {
    listed(fields, "or")
}

fn listed(fields: &[&str], conjunction: &str) -> String {
    let named: Vec<String> = fields.iter().map(|f| name(f)).collect();
    match named.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} {conjunction} {last}", rest.join(", ")),
    }
}

/// The boolean option `field` turned off, as the user types that: `--no-text-index`,
/// `text_index=False`, `` `text_index: false` ``.
pub fn off(field: &str) -> String {
    match spelling() {
        Spelling::Api => format!("`{field}: false`"),
        Spelling::Flag => format!("--no-{}", field.replace('_', "-")),
        Spelling::Keyword => format!("{field}=False"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the spelling is process-wide, and tests run in parallel.
    #[test]
    fn each_spelling_names_options_as_its_users_type_them() {
        let cases = [
            (Spelling::Api, "`allow_empty`", "`text_index: false`"),
            (Spelling::Flag, "--allow-empty", "--no-text-index"),
            (Spelling::Keyword, "allow_empty=", "text_index=False"),
        ];
        for (s, on, no) in cases {
            set_spelling(s);
            assert_eq!(spelling(), s);
            assert_eq!(name("allow_empty"), on);
            assert_eq!(off("text_index"), no);
            assert_eq!(names(&["allow_empty"]), on);
            assert_eq!(
                names(&["allow_empty", "allow_empty", "allow_empty"]),
                format!("{on}, {on} and {on}")
            );
            assert_eq!(
                names_or(&["allow_empty", "allow_empty"]),
                format!("{on} or {on}")
            );
        }
        set_spelling(Spelling::Api);
        assert_eq!(names(&[]), "");
    }
}
