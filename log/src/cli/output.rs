//! Command output: a table with a header row for people, or one JSON object per row (keyed by
//! the column names) for scripts, from the same rows.

/// Rows under named columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[&'static str]) -> Self {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Aligned columns, the header first.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(cell);
                } else {
                    s.push_str(&format!("{cell:<w$}  "));
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let mut out = line(self.columns.clone());
        for row in &self.rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out
    }

    /// One JSON object per row; numeric cells become numbers.
    pub fn render_json(&self) -> String {
        let mut out = String::new();
        for row in &self.rows {
            let obj: serde_json::Map<String, serde_json::Value> = self
                .columns
                .iter()
                .zip(row)
                .map(|(c, v)| {
                    let value = v
                        .parse::<i64>()
                        .map(serde_json::Value::from)
                        .unwrap_or_else(|_| serde_json::Value::from(v.as_str()));
                    (c.to_string(), value)
                })
                .collect();
            out.push_str(&serde_json::Value::Object(obj).to_string());
            out.push('\n');
        }
        out
    }

    pub fn print(&self, json: bool) {
        if json {
            print!("{}", self.render_json());
        } else {
            print!("{}", self.render());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_json_types_numbers() {
        let mut t = Table::new(&["topic", "partitions"]);
        t.push(vec!["orders".into(), "3".into()]);
        t.push(vec!["a".into(), "12".into()]);
        assert_eq!(t.render(), "topic   partitions\norders  3\na       12\n");
        assert_eq!(
            t.render_json(),
            "{\"partitions\":3,\"topic\":\"orders\"}\n{\"partitions\":12,\"topic\":\"a\"}\n"
        );
    }
}
