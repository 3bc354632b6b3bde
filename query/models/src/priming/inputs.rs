//! The priming experiment's inputs: samples (a text with a keyword, and a theme) and themes
//! (prefixes where the keyword is scored), read with file:line errors, and a sample's own probe.

use super::*;

/// One sample: a text stating something new with a keyword.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Its id.
    pub id: String,
    /// The text learned.
    pub text: String,
    /// The keyword (a word of the text, without the whitespace before it).
    pub keyword: String,
    /// The theme whose prefixes measure priming.
    pub theme: String,
}

/// A theme and its prefixes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Theme {
    /// Its name.
    pub theme: String,
    /// Contexts of the theme where the keyword is scored.
    pub prefixes: Vec<String>,
}

/// Reads samples, one JSON object per line: `{"id", "text", "keyword", "theme"}` (`id` optional:
/// the line number). The keyword must occur in the text as a whole word.
pub fn read_samples(path: &Path) -> Result<Vec<Sample>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        id: Option<Value>,
        text: String,
        keyword: String,
        theme: String,
    }
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    for (line, v) in read_jsonl(path)? {
        let r: Raw = serde_json::from_value(v).map_err(|e| {
            Error::input(
                path,
                line,
                format!("expected {{\"id\", \"text\", \"keyword\", \"theme\"}}: {e}"),
            )
        })?;
        let keyword = r.keyword.trim().to_string();
        if keyword.is_empty() {
            return Err(Error::input(path, line, "empty keyword"));
        }
        if own_probe(&r.text, &keyword).is_none() {
            return Err(Error::input(
                path,
                line,
                format!("the keyword `{keyword}` is not a whole word of the text"),
            ));
        }
        let id = familiar::input::id_or_line(r.id, line);
        if !ids.insert(id.clone()) {
            return Err(Error::input(path, line, format!("duplicate id `{id}`")));
        }
        out.push(Sample {
            id,
            text: r.text,
            keyword,
            theme: r.theme,
        });
    }
    if out.is_empty() {
        return Err(Error::input(path, 0, "no samples"));
    }
    Ok(out)
}

/// Reads themes, one JSON object per line: `{"theme", "prefixes": [...]}`.
pub fn read_themes(path: &Path) -> Result<Vec<Theme>> {
    let mut out: Vec<Theme> = Vec::new();
    for (line, v) in read_jsonl(path)? {
        let t: Theme = serde_json::from_value(v).map_err(|e| {
            Error::input(
                path,
                line,
                format!("expected {{\"theme\", \"prefixes\"}}: {e}"),
            )
        })?;
        if t.prefixes.is_empty() || t.prefixes.iter().any(|p| p.trim().is_empty()) {
            return Err(Error::input(
                path,
                line,
                "`prefixes` must be a non-empty list of non-empty strings",
            ));
        }
        if out.iter().any(|o| o.theme == t.theme) {
            return Err(Error::input(
                path,
                line,
                format!("theme `{}` again", t.theme),
            ));
        }
        out.push(t);
    }
    if out.is_empty() {
        return Err(Error::input(path, 0, "no themes"));
    }
    Ok(out)
}

/// The keyword's own probe in `text`: `(context, completion)`, the text before the keyword's
/// first whole-word occurrence (without trailing whitespace) and the keyword with that whitespace.
pub fn own_probe(text: &str, keyword: &str) -> Option<(String, String)> {
    let mut from = 0;
    while let Some(i) = text[from..].find(keyword) {
        let at = from + i;
        let end = at + keyword.len();
        let starts = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        let ends = text[end..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric());
        if starts && ends {
            let context = text[..at].trim_end();
            return Some((context.to_string(), text[context.len()..end].to_string()));
        }
        from = at + keyword.chars().next().map_or(1, char::len_utf8);
    }
    None
}
