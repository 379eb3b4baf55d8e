//! Splits SQL text into statements and meta-commands, remembering the line each starts on,
//! so errors can name "file:line". Quotes and comments are respected.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PieceKind {
    Sql,
    Meta,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub kind: PieceKind,
    pub text: String,
    /// 1-based line and column where the piece's text starts.
    pub line: usize,
    pub column: usize,
    /// False when the text ended before the statement's `;`.
    pub terminated: bool,
}

/// Where the line holding `i` ends (a `--` comment, a meta-command): its newline, or the
/// end of the text.
fn line_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i] != b'\n' {
        i += 1;
    }
    i
}

/// Just past the `*/` of the block comment opening at `i` (the end of the text when it is
/// never closed), counting the lines it spans.
fn block_comment_end(bytes: &[u8], mut i: usize, line: &mut usize) -> usize {
    i += 2;
    while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
        if bytes[i] == b'\n' {
            *line += 1;
        }
        i += 1;
    }
    (i + 2).min(bytes.len())
}

/// Split a script. A line whose first non-blank character is `\` (outside a statement) is a
/// meta-command; everything else is SQL up to each `;`.
pub fn split(text: &str) -> Vec<Piece> {
    let bytes = text.as_bytes();
    let mut pieces = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < bytes.len() {
        // Skip blanks and comments between statements.
        match bytes[i] {
            b'\n' => {
                line += 1;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' | b';' => {
                i += 1;
                continue;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = line_end(bytes, i);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = block_comment_end(bytes, i, &mut line);
                continue;
            }
            b'\\' => {
                let start = i;
                i = line_end(bytes, i);
                pieces.push(Piece {
                    kind: PieceKind::Meta,
                    text: text[start..i].trim().to_string(),
                    line,
                    column: 1,
                    terminated: true,
                });
                continue;
            }
            _ => {}
        }
        let start = i;
        let start_line = line;
        let mut terminated = false;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => line += 1,
                q @ (b'\'' | b'"') => {
                    i += 1;
                    while i < bytes.len() {
                        if bytes[i] == b'\n' {
                            line += 1;
                        }
                        if bytes[i] == q {
                            if bytes.get(i + 1) == Some(&q) {
                                i += 1;
                            } else {
                                break;
                            }
                        }
                        i += 1;
                    }
                }
                b'-' if bytes.get(i + 1) == Some(&b'-') => {
                    i = line_end(bytes, i);
                    continue;
                }
                b'/' if bytes.get(i + 1) == Some(&b'*') => {
                    i = block_comment_end(bytes, i, &mut line);
                    continue;
                }
                b';' => {
                    terminated = true;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let end = i.min(bytes.len());
        let sql = text[start..end].trim();
        if !sql.is_empty() {
            // The statement's first character, past the blank lines before it.
            let lead = &text[start..end];
            let first = start + (lead.len() - lead.trim_start().len());
            let line_start = text[..first].rfind('\n').map(|n| n + 1).unwrap_or(0);
            pieces.push(Piece {
                kind: PieceKind::Sql,
                text: sql.to_string(),
                line: start_line + text[start..first].matches('\n').count(),
                column: text[line_start..first].chars().count() + 1,
                terminated,
            });
        }
        i = end + 1;
    }
    pieces
}

/// True when the text holds a complete input for the interactive shell: every statement
/// ends with `;`, or it is a meta-command.
pub fn is_complete(text: &str) -> bool {
    let pieces = split(text);
    pieces.is_empty() && text.trim().is_empty()
        || pieces.last().map(|p| p.terminated).unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_lines_and_meta() {
        let p = split("SELECT 1;\n\n-- c;\nSELECT ';'\n , 2;\n\\dt\nSELECT /* ; */ 3");
        assert_eq!(p.len(), 4);
        assert_eq!((p[0].text.as_str(), p[0].line), ("SELECT 1", 1));
        assert_eq!((p[1].text.as_str(), p[1].line), ("SELECT ';'\n , 2", 4));
        assert_eq!(
            (p[2].kind.clone(), p[2].text.as_str(), p[2].line),
            (PieceKind::Meta, "\\dt", 6)
        );
        assert_eq!(
            (p[3].text.as_str(), p[3].line, p[3].terminated),
            ("SELECT /* ; */ 3", 7, false)
        );
    }

    #[test]
    fn completeness() {
        assert!(is_complete("SELECT 1;"));
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("SELECT ';"));
        assert!(is_complete("\\dt"));
        assert!(is_complete("  "));
        assert!(is_complete("select 'it''s';"));
    }
}
