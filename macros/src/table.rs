//! The policy table: which class each op belongs to. Its single source is `policy.md` at the crate root,
//! which the attribute's documentation also includes, so the table the macro uses is the one users read.

use std::sync::OnceLock;

/// An op class (a row of the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Low precision with f32 accumulation.
    Low,
    /// Runs in f32.
    F32,
    /// Runs in the widest input type.
    Promote,
    /// Runs in the input's type.
    Same,
    /// Rejected under f16, f32 under bf16.
    BannedUnderF16,
    /// An `amp::nn` layer's forward, run under the region's policy.
    Layer,
}

/// The source of the table.
pub const SOURCE: &str = include_str!("../policy.md");

/// The parsed table: method name to class.
pub struct Table {
    entries: Vec<(String, Class)>,
}

impl Table {
    /// Parses the markdown table: one row per class, the op names in backticks in the second column.
    /// Rows that are not table rows are ignored.
    pub fn parse(source: &str) -> Table {
        let mut entries = Vec::new();
        for line in source.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() < 4 || !line.trim_start().starts_with('|') {
                continue;
            }
            let class = match cells[1] {
                "low" => Class::Low,
                "f32" => Class::F32,
                "promote" => Class::Promote,
                "same" => Class::Same,
                "banned under f16" => Class::BannedUnderF16,
                "layer" => Class::Layer,
                _ => continue,
            };
            for (i, piece) in cells[2].split('`').enumerate() {
                let is_name = !piece.is_empty()
                    && piece.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if i % 2 == 1 && is_name {
                    entries.push((piece.to_string(), class));
                }
            }
        }
        Table { entries }
    }

    /// The table compiled into the macro.
    pub fn get() -> &'static Table {
        static TABLE: OnceLock<Table> = OnceLock::new();
        TABLE.get_or_init(|| Table::parse(SOURCE))
    }

    /// The class of a method name, if the table lists it.
    pub fn class_of(&self, name: &str) -> Option<Class> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, c)| c)
    }

    /// Every (name, class) pair, in table order.
    #[cfg(test)]
    pub fn entries(&self) -> &[(String, Class)] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_every_class_and_the_known_ops() {
        let t = Table::get();
        assert_eq!(t.class_of("matmul"), Some(Class::Low));
        assert_eq!(t.class_of("attention"), Some(Class::Low));
        assert_eq!(t.class_of("softmax"), Some(Class::F32));
        assert_eq!(t.class_of("sum_keepdim"), Some(Class::F32));
        assert_eq!(t.class_of("index_add"), Some(Class::F32));
        assert_eq!(t.class_of("where_"), Some(Class::Promote));
        assert_eq!(t.class_of("cat"), Some(Class::Promote));
        assert_eq!(t.class_of("embedding"), Some(Class::Same));
        assert_eq!(
            t.class_of("binary_cross_entropy"),
            Some(Class::BannedUnderF16)
        );
        assert_eq!(t.class_of("len"), None);
        assert_eq!(
            t.entries().iter().filter(|(_, c)| *c == Class::Low).count(),
            6
        );
        // Operators are described in prose, not listed as method names.
        assert_eq!(t.class_of("+"), None);
        let mut names: Vec<&str> = t.entries().iter().map(|(n, _)| n.as_str()).collect();
        let total = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), total, "an op is listed twice");
    }
}
