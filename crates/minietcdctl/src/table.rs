//! `-w table`: the boxed tables etcdctl draws with github.com/olekukonko/tablewriter (the
//! 2017 revision etcd 3.4 vendors), reproduced byte for byte.
//!
//! comfy-table and tabled were considered; neither reproduces this writer's quirks: cells
//! wrapped at spaces to the column's width (at most 30) with the minimal-raggedness line
//! breaker rather than greedily, headers upper-cased and centred with the odd space on the
//! right, and every cell right-aligned as etcdctl asks. So the writer is this small one.
//!
//! ```text
//! +-----------------+-----------+
//! |    ENDPOINT     |   HASH    |
//! +-----------------+-----------+
//! | 127.0.0.1:23791 | 992787496 |
//! +-----------------+-----------+
//! ```

use unicode_width::UnicodeWidthStr;

/// The widest a column grows for wrappable text (tablewriter's `MAX_ROW_WIDTH`).
const MAX_COLUMN_WIDTH: usize = 30;

/// What the minimal-raggedness breaker adds for a line longer than the limit.
const TOO_LONG_PENALTY: i64 = 100_000;

fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// Renders `header` and `rows` as etcdctl's table writer does, cells right-aligned.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    // Column widths grow as cells are added, and a cell wraps at the width reached so far,
    // as in tablewriter's `parseDimension`.
    let mut widths: Vec<usize> = header
        .iter()
        .map(|h| width(h).min(MAX_COLUMN_WIDTH))
        .collect();
    let mut wrapped: Vec<Vec<Vec<String>>> = Vec::with_capacity(rows.len());
    for row in rows {
        let mut cells = Vec::with_capacity(row.len());
        for (i, cell) in row.iter().enumerate() {
            if i >= widths.len() {
                widths.push(0);
            }
            let w = width(cell).min(MAX_COLUMN_WIDTH);
            widths[i] = widths[i].max(w);
            let lines = wrap(cell, widths[i]);
            let widest = lines.iter().map(|l| width(l)).max().unwrap_or(0);
            widths[i] = widths[i].max(widest);
            cells.push(lines);
        }
        wrapped.push(cells);
    }

    let mut out = String::new();
    let rule = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    out.push_str(&rule);
    out.push('|');
    for (i, w) in widths.iter().enumerate() {
        let title = header.get(i).map(|h| title(h)).unwrap_or_default();
        out.push(' ');
        out.push_str(&center(&title, *w));
        out.push_str(" |");
    }
    out.push('\n');
    out.push_str(&rule);
    for cells in &wrapped {
        let height = cells.iter().map(Vec::len).max().unwrap_or(0);
        for line in 0..height {
            for (i, w) in widths.iter().enumerate().take(cells.len()) {
                let text = cells[i].get(line).map_or("", String::as_str);
                out.push_str("| ");
                out.push_str(&" ".repeat(w.saturating_sub(width(text))));
                out.push_str(text);
                out.push(' ');
            }
            out.push_str("|\n");
        }
    }
    out.push_str(&rule);
    out
}

/// tablewriter's `Title`: `_` and `.` become spaces, trimmed, upper-cased.
fn title(name: &str) -> String {
    name.replace(['_', '.'], " ").trim().to_uppercase()
}

/// Centred, the odd space going to the right.
fn center(s: &str, w: usize) -> String {
    let gap = w.saturating_sub(width(s));
    let left = gap / 2;
    format!("{}{s}{}", " ".repeat(left), " ".repeat(gap - left))
}

/// tablewriter's `WrapString`: newlines count as spaces, the text is split at every space and
/// the words are broken into lines of at most `limit` characters (raised to the longest word)
/// with the least raggedness.
fn wrap(s: &str, limit: usize) -> Vec<String> {
    let text = s.replace('\n', " ");
    let words: Vec<&str> = text.split(' ').collect();
    let longest = words.iter().map(|w| w.len()).max().unwrap_or(0);
    let limit = limit.max(longest);
    break_words(&words, limit)
        .into_iter()
        .map(|line| line.join(" "))
        .collect()
}

/// tablewriter's `WrapWords` with one unit between words: dynamic programming from the last
/// word backwards, each line costing the square of its shortfall from `limit`.
fn break_words<'a>(words: &[&'a str], limit: usize) -> Vec<Vec<&'a str>> {
    let n = words.len();
    let count: Vec<i64> = words
        .iter()
        .map(|w| i64::try_from(w.chars().count()).unwrap_or(i64::MAX / 4))
        .collect();
    // length(i, j): words i..=j joined by single spaces.
    let length = |i: usize, j: usize| -> i64 {
        count[i..=j].iter().sum::<i64>() + i64::try_from(j - i).unwrap_or(0)
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX / 4);
    let mut cost = vec![i64::from(i32::MAX); n];
    let mut next_break = vec![n; n];
    for i in (0..n).rev() {
        if length(i, n - 1) <= limit {
            cost[i] = 0;
            next_break[i] = n;
            continue;
        }
        for j in i + 1..n {
            let len = length(i, j - 1);
            let d = limit - len;
            let mut c = d * d + cost[j];
            if len > limit {
                c += TOO_LONG_PENALTY;
            }
            if c < cost[i] {
                cost[i] = c;
                next_break[i] = j;
            }
        }
    }
    let mut lines = Vec::new();
    let mut i = 0;
    while i < n {
        let j = next_break[i];
        lines.push(words[i..j].to_vec());
        i = j;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_drawn_like_etcdctls() {
        let out = render(
            &["endpoint", "hash"],
            &[vec!["127.0.0.1:23791".into(), "992787496".into()]],
        );
        assert_eq!(
            out,
            "+-----------------+-----------+\n\
             |    ENDPOINT     |   HASH    |\n\
             +-----------------+-----------+\n\
             | 127.0.0.1:23791 | 992787496 |\n\
             +-----------------+-----------+\n"
        );
    }

    #[test]
    fn empty_cells_and_headers_center_with_the_odd_space_right() {
        let out = render(
            &["endpoint", "health", "took", "error"],
            &[vec![
                "127.0.0.1:23791".into(),
                "true".into(),
                "13.56452ms".into(),
                String::new(),
            ]],
        );
        assert_eq!(
            out,
            "+-----------------+--------+------------+-------+\n\
             |    ENDPOINT     | HEALTH |    TOOK    | ERROR |\n\
             +-----------------+--------+------------+-------+\n\
             | 127.0.0.1:23791 |   true | 13.56452ms |       |\n\
             +-----------------+--------+------------+-------+\n"
        );
    }

    #[test]
    fn long_text_wraps_at_spaces_within_thirty_columns() {
        let lines = wrap("memberID:13668033151171901709 alarm:NOSPACE ", 30);
        assert_eq!(
            lines,
            vec!["memberID:13668033151171901709", "alarm:NOSPACE "]
        );
        // A single word longer than the limit stays whole.
        assert_eq!(
            wrap("http://127.0.0.1:23801,http://127.0.0.1:23802", 30).len(),
            1
        );
        assert_eq!(wrap("", 5), vec![""]);
    }
}
