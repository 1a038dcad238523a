//! Rows as an aligned table, for the commands that print one (`status`, `history`).

/// Rows as a table: columns padded to their widest cell, two spaces apart, the last column
/// unpadded. Cells are printable (controls and bidi escaped, secrets scrubbed) and at most
/// [`MAX_CELL`] characters.
pub fn aligned(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| cell_text(cell)).collect())
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i != last {
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The longest cell [`aligned`] prints, in characters.
const MAX_CELL: usize = 300;

fn cell_text(cell: &str) -> String {
    let cell = crate::output::printable(cell);
    let count = cell.chars().count();
    if count <= MAX_CELL {
        return cell;
    }
    let head: String = cell.chars().take(MAX_CELL).collect();
    format!("{head}...({} more characters)", count - MAX_CELL)
}
