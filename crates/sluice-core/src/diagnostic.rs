//! Where in a SQL text an error is: the line and column DataFusion's diagnostics or the
//! parser report, shown as `file:LINE:COL: message` with the line and a caret under the
//! column (as rustc and DuckDB do), and "did you mean" suggestions for misspelt names.

use datafusion::error::DataFusionError;

/// A 1-based line and column in a SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// The position an error points at: the span of its diagnostic (planning errors, with
/// `datafusion.sql_parser.collect_spans` on), else the parser's "at Line: L, Column: C".
pub fn error_position(e: &DataFusionError) -> Option<Position> {
    let from_diagnostic = e
        .iter()
        .chain(std::iter::once(e))
        .filter_map(|e| e.diagnostic())
        .filter_map(|d| d.span)
        .find(|s| s.start.line > 0 && s.start.column > 0)
        .map(|s| Position {
            line: s.start.line as usize,
            column: s.start.column as usize,
        });
    from_diagnostic.or_else(|| parser_position(&e.to_string()))
}

/// sqlparser's "... at Line: 3, Column: 12" in an error message.
pub fn parser_position(message: &str) -> Option<Position> {
    let at = message.rfind("at Line: ")?;
    let rest = &message[at + "at Line: ".len()..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some(Position {
        line: line.trim().parse().ok()?,
        column: column.parse().ok()?,
    })
}

/// The message without sqlparser's position (it is shown as `file:line:col`), and a parser
/// error said as a syntax error rather than as a Rust value.
pub fn without_parser_position(message: &str) -> String {
    let Some(at) = message.rfind(" at Line: ") else {
        return message.to_string();
    };
    let Some(column) = message[at..].find(", Column: ") else {
        return message.to_string();
    };
    let digits = message[at + column + ", Column: ".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .count();
    let end = at + column + ", Column: ".len() + digits;
    let text = format!("{}{}", &message[..at], &message[end..]);
    match text
        .strip_prefix("SQL error: ParserError(\"")
        .and_then(|t| t.strip_suffix("\")"))
    {
        Some(inner) => format!("syntax error: {inner}"),
        None => text,
    }
}

/// The offending line of `text` and a caret under `column`:
/// ```text
///    4 | SELECT evnt_ts FROM events
///      |        ^
/// ```
pub fn snippet(text: &str, at: Position) -> Option<String> {
    let line = text.lines().nth(at.line.checked_sub(1)?)?;
    let number = at.line.to_string();
    // Columns count characters; tabs stay tabs so the caret lines up under them.
    let pad: String = line
        .chars()
        .take(at.column.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    Some(format!(
        "{number:>4} | {line}\n{blank:>4} | {pad}^",
        blank = ""
    ))
}

/// The first whole-word, case-insensitive occurrence of `word` in `text` outside string
/// literals and comments, e.g. the table a FROM clause names.
pub fn find_word(text: &str, word: &str) -> Option<Position> {
    let lower = text.to_ascii_lowercase();
    let word = word.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' => quote = Some(b'\''),
            None if lower[i..].starts_with("--") => {
                i = lower[i..].find('\n').map(|n| i + n).unwrap_or(bytes.len());
                continue;
            }
            None if lower[i..].starts_with(&word)
                && (i == 0 || !is_ident(bytes[i - 1]))
                && bytes.get(i + word.len()).is_none_or(|&n| !is_ident(n)) =>
            {
                let line = lower[..i].matches('\n').count() + 1;
                let start = lower[..i].rfind('\n').map(|n| n + 1).unwrap_or(0);
                return Some(Position {
                    line,
                    column: text[start..i].chars().count() + 1,
                });
            }
            None => {}
        }
        i += 1;
    }
    None
}

/// The candidate closest to `name` by edit distance, when it is close enough to be a typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (levenshtein(&name, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (name.len().max(c.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edits between two names, a swap of two neighbouring letters counting as one (the
/// commonest typo: `nmae` for `name`).
/// `; did you mean `x`?` after an unknown name, or nothing when no candidate is close.
pub fn did_you_mean_hint<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(name, candidates)
        .map(|n| format!("; did you mean `{n}`?"))
        .unwrap_or_default()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j - 1] + cost)
                .min(d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swapped_pair_of_letters_is_one_edit() {
        assert_eq!(levenshtein("nmae", "name"), 1);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(did_you_mean("nmaed", ["named", "other"]), Some("named"));
    }

    #[test]
    fn parser_positions_are_read_and_stripped() {
        let m = "sql parser error: Expected: end of statement, found: FORM at Line: 3, Column: 10";
        assert_eq!(
            parser_position(m),
            Some(Position {
                line: 3,
                column: 10
            })
        );
        assert_eq!(
            without_parser_position(m),
            "sql parser error: Expected: end of statement, found: FORM"
        );
        assert_eq!(
            without_parser_position(
                "SQL error: ParserError(\"Expected: an expression, found: FROM at Line: 2, Column: 1\")"
            ),
            "syntax error: Expected: an expression, found: FROM"
        );
    }

    #[test]
    fn snippet_puts_the_caret_under_the_column() {
        let text = "SELECT 1\nSELECT evnt_ts FROM t";
        assert_eq!(
            snippet(text, Position { line: 2, column: 8 }).unwrap(),
            "   2 | SELECT evnt_ts FROM t\n     |        ^"
        );
    }

    #[test]
    fn words_are_found_outside_literals_and_comments() {
        let text = "-- from evnts\nSELECT 'evnts' FROM\n  evnts";
        assert_eq!(
            find_word(text, "evnts"),
            Some(Position { line: 3, column: 3 })
        );
    }

    #[test]
    fn close_names_are_suggested() {
        assert_eq!(
            did_you_mean("evnts", ["events", "accounts"]),
            Some("events")
        );
        assert_eq!(did_you_mean("zzz", ["events", "accounts"]), None);
    }
}
