//! CSV: one file, one table per data table of the [model](super::model).
//! Each starts with a row holding only `# <table>`, then its header row and
//! data rows, then an empty row. Rows differ in length between tables, so
//! read it with a flexible reader (spreadsheets open it as is). Times are
//! RFC 3339 UTC, percentages plain numbers, every row listed.

use super::model::{Block, Cell, Document};
use crate::time::rfc3339;

/// Free text (reasons, display names) starting like a formula would be run
/// by a spreadsheet; a leading apostrophe keeps it text.
fn defuse(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

fn cell(c: &Cell) -> String {
    match c {
        Cell::Text(s) | Cell::Hash(s) => defuse(s.clone()),
        Cell::Label { code, .. } => defuse(code.clone()),
        Cell::List(l) => defuse(l.join(" ")),
        Cell::Number(n) => n.to_string(),
        Cell::Percent(p) => format!("{p:.1}"),
        Cell::Time(t) => t.map(rfc3339).unwrap_or_default(),
        Cell::Flag { value, .. } => value.to_string(),
    }
}

struct Out(Vec<u8>);

impl Out {
    fn row<I: IntoIterator<Item = S>, S: AsRef<[u8]>>(&mut self, r: I) {
        let mut w = csv::WriterBuilder::new().from_writer(&mut self.0);
        w.write_record(r).expect("writing to memory");
        w.flush().expect("writing to memory");
    }
}

pub(super) fn render(d: &Document) -> Vec<u8> {
    let mut o = Out(vec![]);
    let tables = d.sections.iter().flat_map(|s| &s.blocks).filter_map(|b| match b {
        Block::Table(t) if t.in_data() => Some(t),
        _ => None,
    });
    for t in tables {
        o.row([format!("# {}", t.name)]);
        o.row(t.columns.iter().map(|c| c.key));
        for r in &t.rows {
            o.row(r.iter().map(cell));
        }
        // An empty line separates tables (an empty record would be `""`).
        o.0.push(b'\n');
    }
    o.0
}
