//! Every `familiar` command line of README.md parses: the README's spellings are a contract.
//!
//! Command lines of code blocks (`$ familiar …`, with `\` continuations and quoted strings that run
//! over several lines, and the demo's `try:` hints) must parse completely; inline ``familiar …``
//! spans name a command and some of its options without the required arguments, so for them only
//! an unknown subcommand, option or value is an error.

use clap::error::ErrorKind;
use clap::Parser;

use super::Cli;

const README: &str = include_str!("../../../../README.md");

/// Splits a shell command line into words: whitespace separates, single and double quotes
/// group (a backslash escapes the next character in double quotes), `#` outside quotes starts a
/// comment. `None` while a quote is still open.
fn shell_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => w.push(chars.next()?),
                        c => w.push(c),
                    }
                }
            }
            '#' if word.is_none() => break,
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Some(words)
}

/// The `familiar` command lines of the README's code blocks, as words (without `familiar`).
fn code_block_commands() -> Vec<(String, Vec<String>)> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending: Option<String> = None;
    for line in README.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            pending = None;
            continue;
        }
        if !in_block {
            continue;
        }
        let text = match pending.take() {
            Some(p) => format!("{p}\n{line}"),
            None => {
                let t = line.trim_start();
                let t = t.strip_prefix("try:").unwrap_or(t).trim_start();
                let t = t.strip_prefix("$ ").unwrap_or(t);
                if !t.starts_with("familiar ") {
                    continue;
                }
                t.to_string()
            }
        };
        if let Some(head) = text.strip_suffix('\\') {
            pending = Some(head.to_string());
            continue;
        }
        match shell_words(&text) {
            Some(words) => commands.push((text.clone(), words[1..].to_vec())),
            None => pending = Some(text),
        }
    }
    commands
}

/// The README's inline ``familiar …`` spans (which may run over a line break), as words
/// (without `familiar`).
fn inline_commands() -> Vec<(String, Vec<String>)> {
    let mut prose = String::new();
    let mut in_block = false;
    for line in README.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            // A code block ends any span.
            prose.push_str(" `` ");
            continue;
        }
        if !in_block {
            prose.push_str(line);
            prose.push(' ');
        }
    }
    prose
        .split('`')
        .enumerate()
        .filter(|(i, part)| i % 2 == 1 && part.starts_with("familiar "))
        .filter_map(|(_, part)| Some((part.to_string(), shell_words(part)?[1..].to_vec())))
        .collect()
}

fn parse(words: &[String]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("familiar".to_string()).chain(words.iter().cloned()))
}

#[test]
fn every_command_line_of_the_readme_parses() {
    let commands = code_block_commands();
    // The README shows every command; far fewer found means the scan broke.
    assert!(commands.len() >= 35, "found only {commands:?}");
    for (text, words) in &commands {
        if let Err(e) = parse(words) {
            panic!("README command does not parse: {text}\n{e}");
        }
    }
}

#[test]
fn every_inline_command_of_the_readme_names_real_commands_and_options() {
    let spans = inline_commands();
    assert!(spans.len() >= 10, "found only {spans:?}");
    for (text, words) in &spans {
        if let Err(e) = parse(words) {
            // A span may end with an option it names, without its value.
            let named_option = e.kind() == ErrorKind::InvalidValue
                && words.last().is_some_and(|w| w.starts_with("--"));
            let incomplete = named_option
                || matches!(
                    e.kind(),
                    ErrorKind::MissingRequiredArgument
                        | ErrorKind::MissingSubcommand
                        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                );
            assert!(
                incomplete,
                "README's `{text}` is not a familiar command:\n{e}"
            );
        }
    }
}

#[test]
fn shell_words_split_as_a_shell_does() {
    assert_eq!(
        shell_words(r#"count idx " Zelxir Exoexo" --json # a comment"#),
        Some(vec![
            "count".into(),
            "idx".into(),
            " Zelxir Exoexo".into(),
            "--json".into()
        ])
    );
    assert_eq!(
        shell_words("a 'b c'd \"e\\\"f\""),
        Some(vec!["a".into(), "b cd".into(), "e\"f".into()])
    );
    assert_eq!(shell_words("sql \"SELECT 1"), None);
}
