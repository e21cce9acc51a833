//! Where a format's text comes from: a built-in one or a file, its `base` chain merged.

use super::*;

/// The text of a built-in format or a format file, and the file's directory.
pub(super) fn source(
    name_or_path: &str,
    relative_to: Option<&Path>,
) -> Result<(String, Option<std::path::PathBuf>), FormatError> {
    if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
        return Ok(((*text).to_string(), None));
    }
    let p = match relative_to {
        Some(d) => d.join(name_or_path),
        None => Path::new(name_or_path).to_path_buf(),
    };
    if p.extension().is_some_and(|e| e == "toml") || p.symlink_metadata().is_ok() {
        // A regular file of at most 1 MiB, opened without blocking: `base` may name a FIFO,
        // a device or a /proc file.
        let bytes = imgbuild_blockio::read_input(&p, FORMAT_FILE)?;
        let text = String::from_utf8(bytes).map_err(|e| FormatError::NotText {
            path: p.display().to_string(),
            offset: e.utf8_error().valid_up_to(),
        })?;
        return Ok((text, p.parent().map(Path::to_path_buf)));
    }
    Err(FormatError::Unknown(quote(name_or_path)))
}

/// The format's TOML table with its `base` chain merged in: tables merge key by key, every
/// other value (arrays of partitions included) is replaced by the derived format's. Errors in
/// a `base` file (depth > 0) give the position but quote nothing of it.
pub(super) fn resolve(
    name: &str,
    text: &str,
    dir: Option<&Path>,
    depth: usize,
) -> Result<toml::Table, FormatError> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| FormatError::Parse {
        name: quote(name),
        message: toml_message(&e, text, depth == 0),
    })?;
    let Some(base) = table.remove("base") else {
        return Ok(table);
    };
    let invalid = |reason: String| FormatError::Invalid {
        name: quote(name),
        reason,
    };
    let toml::Value::String(base) = base else {
        return Err(invalid("`base` must be a format name or path".into()));
    };
    if depth >= MAX_BASE_DEPTH {
        return Err(invalid(format!(
            "`base` chains deeper than {MAX_BASE_DEPTH} (a cycle?) at `{}`",
            quote(&base)
        )));
    }
    let (base_text, base_dir) = source(&base, dir)?;
    let mut merged = resolve(&base, &base_text, base_dir.as_deref(), depth + 1)?;
    merge(&mut merged, table);
    Ok(merged)
}

/// A TOML error as `line L, column C: message`, with an escaped excerpt of at most
/// [`QUOTE_MAX`] characters of the line when `excerpt` (the file given by the user; never a
/// `base`, which may be any file on the host). The message alone is bounded too, to
/// [`MESSAGE_MAX`]: it may quote a key or a value.
fn toml_message(e: &toml::de::Error, text: &str, excerpt: bool) -> String {
    let message = quote_long(e.message().trim_end(), MESSAGE_MAX);
    let Some(span) = e.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let before = text.as_bytes().get(..start).unwrap_or_default();
    let line_no = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = start - line_start + 1;
    if !excerpt {
        return format!("line {line_no}, column {column}: {message}");
    }
    // The excerpt starts a little before the error, at a char boundary.
    let mut from = start.saturating_sub(QUOTE_MAX / 2).max(line_start);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let rest = text.get(from..).unwrap_or_default();
    let line = rest.split('\n').next().unwrap_or_default();
    format!(
        "line {line_no}, column {column}: {message}: `{}{}`",
        if from > line_start { "…" } else { "" },
        quote(line)
    )
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}
