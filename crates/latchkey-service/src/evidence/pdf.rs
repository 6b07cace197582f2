//! PDF: an A4 document an auditor can file. A title page with the key
//! figures, then one section per topic with tables and vector charts; every
//! page carries a header (period) and a footer ("Latchkey evidence report —
//! page N of M", generation time, audit head hash).
//!
//! Written with `pdf-writer` in the builtin Helvetica (no embedded font), so
//! text is measured with Helvetica's published metrics (below) to wrap and
//! truncate it. Layout happens first into per-page drawing lists, so the
//! footer can name the page count. Content streams are left uncompressed:
//! the figures stay searchable in the raw file.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use super::model::{Bar, Block, Cell, Chart, Document, Figure, LinePoint, Plot, Span, Table, WhenEmpty};
use super::{fmt_opt, fmt_pct, fmt_time};

const W: f32 = 595.0;
const H: f32 = 842.0;
const LEFT: f32 = 50.0;
const RIGHT: f32 = W - 50.0;
const CONTENT_W: f32 = RIGHT - LEFT;
const TOP: f32 = 790.0;
const BOTTOM: f32 = 72.0;

type Rgb = (f32, f32, f32);
const INK: Rgb = (0.10, 0.12, 0.17);
const MUTED: Rgb = (0.29, 0.33, 0.41);
const ACCENT: Rgb = (0.12, 0.31, 0.55);
const RULE: Rgb = (0.79, 0.82, 0.88);
const SHADE: Rgb = (0.93, 0.95, 0.97);
const GOOD: Rgb = (0.11, 0.42, 0.21);
const BAD: Rgb = (0.64, 0.13, 0.17);

/// Helvetica and Helvetica-Bold advance widths (1/1000 em) for ASCII 32–126,
/// from the Adobe Core 14 AFM files.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556, 556,
    556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833,
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556,
    556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334,
    260, 334, 584,
];
const HELVETICA_BOLD: [u16; 95] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556, 556,
    556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833,
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556, 333, 556, 611, 556, 611,
    556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389,
    280, 389, 584,
];

/// Text in the builtin fonts' WinAnsiEncoding; what it cannot show becomes '?'.
fn win_ansi(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '–' => 0x96,
            '—' => 0x97,
            '·' => 0xB7,
            '…' => 0x85,
            _ => b'?',
        })
        .collect()
}

fn width(s: &str, size: f32, bold: bool) -> f32 {
    let table = if bold { &HELVETICA_BOLD } else { &HELVETICA };
    let units: u32 = win_ansi(s)
        .iter()
        .map(|b| match b {
            32..=126 => table[(*b - 32) as usize] as u32,
            0x97 | 0x85 => 1000,
            0xB7 => 278,
            _ => 556,
        })
        .sum();
    units as f32 * size / 1000.0
}

/// Cut `s` to fit `max` points, ending in "..." when cut.
fn fit(s: &str, size: f32, bold: bool, max: f32) -> String {
    if width(s, size, bold) <= max {
        return s.to_owned();
    }
    let mut out: String = s.to_owned();
    while !out.is_empty() && width(&format!("{out}..."), size, bold) > max {
        out.pop();
    }
    format!("{out}...")
}

/// Greedy word wrap to `max` points.
fn wrap(s: &str, size: f32, bold: bool, max: f32) -> Vec<String> {
    let mut lines = vec![];
    let mut line = String::new();
    for word in s.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_owned()
        } else {
            format!("{line} {word}")
        };
        if width(&candidate, size, bold) <= max || line.is_empty() {
            line = candidate;
        } else {
            lines.push(std::mem::take(&mut line));
            line = word.to_owned();
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines.into_iter().map(|l| fit(&l, size, bold, max)).collect()
}

enum Op {
    Text {
        x: f32,
        y: f32,
        size: f32,
        bold: bool,
        color: Rgb,
        s: String,
    },
    Rect {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        color: Rgb,
    },
    Line {
        pts: Vec<(f32, f32)>,
        w: f32,
        color: Rgb,
    },
}

struct Doc {
    pages: Vec<Vec<Op>>,
    y: f32,
}

impl Doc {
    fn new() -> Self {
        Doc {
            pages: vec![vec![]],
            y: TOP,
        }
    }
    fn ops(&mut self) -> &mut Vec<Op> {
        self.pages.last_mut().expect("a page")
    }
    fn new_page(&mut self) {
        self.pages.push(vec![]);
        self.y = TOP;
    }
    fn ensure(&mut self, h: f32) {
        if self.y - h < BOTTOM {
            self.new_page();
        }
    }
    fn text(&mut self, x: f32, y: f32, size: f32, bold: bool, color: Rgb, s: &str) {
        self.ops().push(Op::Text {
            x,
            y,
            size,
            bold,
            color,
            s: s.to_owned(),
        });
    }
    fn text_right(&mut self, right: f32, y: f32, size: f32, bold: bool, color: Rgb, s: &str) {
        let x = right - width(s, size, bold);
        self.text(x, y, size, bold, color, s);
    }
    fn rect(&mut self, x: f32, y: f32, w: f32, h: f32, color: Rgb) {
        self.ops().push(Op::Rect { x, y, w, h, color });
    }
    fn line(&mut self, pts: Vec<(f32, f32)>, w: f32, color: Rgb) {
        self.ops().push(Op::Line { pts, w, color });
    }

    /// A section heading; never left alone at the bottom of a page.
    fn heading(&mut self, s: &str) {
        // Room for the heading, a note and the start of a table.
        self.ensure(120.0);
        if self.y < TOP {
            self.y -= 14.0;
        }
        self.text(LEFT, self.y - 15.0, 15.0, true, ACCENT, s);
        self.line(vec![(LEFT, self.y - 21.0), (RIGHT, self.y - 21.0)], 1.2, ACCENT);
        self.y -= 34.0;
    }
    fn subheading(&mut self, s: &str) {
        self.ensure(90.0);
        self.text(LEFT, self.y - 11.0, 11.0, true, INK, s);
        self.y -= 18.0;
    }
    fn para(&mut self, s: &str, size: f32, color: Rgb) {
        for l in wrap(s, size, false, CONTENT_W) {
            self.ensure(size + 4.0);
            self.text(LEFT, self.y - size, size, false, color, &l);
            self.y -= size + 4.0;
        }
        self.y -= 6.0;
    }
    fn empty(&mut self, s: &str) {
        self.para(s, 9.5, MUTED);
    }

    /// A paragraph of styled runs, wrapped by words across them.
    fn rich(&mut self, spans: &[Span], size: f32) {
        // Words as (style, text) pieces: "verified," is two styles, one word.
        let mut words: Vec<Vec<(Style, String)>> = vec![vec![]];
        for span in spans {
            let (style, s) = match span {
                Span::Text(t) => (Style::Plain, t),
                Span::Strong(t) => (Style::Strong, t),
                Span::Hash(t) => (Style::Hash, t),
                Span::Verdict { text, good } => (Style::Verdict(*good), text),
            };
            for (i, part) in s.split(' ').enumerate() {
                if i > 0 && !words.last().expect("a word").is_empty() {
                    words.push(vec![]);
                }
                if part.is_empty() {
                    continue;
                }
                let w = words.last_mut().expect("a word");
                match w.last_mut() {
                    Some((st, t)) if *st == style => t.push_str(part),
                    _ => w.push((style, part.to_owned())),
                }
            }
        }
        words.retain(|w| !w.is_empty());
        let word_w = |w: &[(Style, String)]| w.iter().map(|(st, t)| width(t, st.size(size), st.bold())).sum::<f32>();
        let space = width(" ", size, false);
        let mut lines: Vec<Vec<(Style, String)>> = vec![];
        let mut line: Vec<(Style, String)> = vec![];
        let mut line_w = 0.0;
        for w in words {
            let ww = word_w(&w);
            if !line.is_empty() && line_w + space + ww > CONTENT_W {
                lines.push(std::mem::take(&mut line));
                line_w = 0.0;
            }
            // Pieces of one style run on across words as one text: searchable.
            for (i, (st, t)) in w.into_iter().enumerate() {
                match line.last_mut() {
                    Some((last, text)) if *last == st => {
                        if i == 0 {
                            text.push(' ');
                        }
                        text.push_str(&t);
                    }
                    Some(_) if i == 0 => {
                        if let Some((_, text)) = line.last_mut() {
                            text.push(' ');
                        }
                        line.push((st, t));
                    }
                    _ => line.push((st, t)),
                }
            }
            line_w += if line_w > 0.0 { space } else { 0.0 } + ww;
        }
        if !line.is_empty() {
            lines.push(line);
        }
        for l in lines {
            self.ensure(size + 4.0);
            let mut x = LEFT;
            for (st, t) in l {
                let s = st.size(size);
                self.text(x, self.y - size, s, st.bold(), st.color(), &t);
                x += width(&t, s, st.bold());
            }
            self.y -= size + 4.0;
        }
        self.y -= 6.0;
    }

    /// A table of the model: the documents' columns, widths by their
    /// weights, a cell shown beneath another on a second line. Cells that do
    /// not fit are cut with "..." (a time falls back to its date first);
    /// the header repeats after a page break.
    fn table(&mut self, t: &Table) {
        const SIZE: f32 = 8.5;
        const SMALL: f32 = 7.5;
        if t.rows.is_empty() {
            match t.when_empty {
                WhenEmpty::Omit => return,
                WhenEmpty::Say(s) => return self.empty(s),
                WhenEmpty::Header => {}
            }
        }
        let cols = t.doc_columns();
        let total: f32 = cols.iter().map(|c| c.column.weight).sum();
        let widths: Vec<f32> = cols.iter().map(|c| c.column.weight / total * CONTENT_W).collect();
        let titles: Vec<Vec<String>> = cols
            .iter()
            .zip(&widths)
            .map(|(c, w)| {
                let mut l = wrap(c.column.title, SIZE, true, w - 8.0);
                l.truncate(2);
                l
            })
            .collect();
        let head_h = if titles.iter().any(|l| l.len() > 1) { 26.0 } else { 16.0 };
        let row_h = if t.has_beneath() { 25.0 } else { 16.0 };
        let header = |d: &mut Doc| {
            d.rect(LEFT, d.y - head_h, CONTENT_W, head_h, SHADE);
            let mut x = LEFT;
            for ((c, w), lines) in cols.iter().zip(&widths).zip(&titles) {
                for (i, l) in lines.iter().enumerate() {
                    let y = d.y - 11.5 - i as f32 * 10.0;
                    match c.column.numeric() {
                        false => d.text(x + 4.0, y, SIZE, true, INK, l),
                        true => d.text_right(x + w - 4.0, y, SIZE, true, INK, l),
                    }
                }
                x += w;
            }
            d.line(vec![(LEFT, d.y - head_h), (RIGHT, d.y - head_h)], 0.8, MUTED);
            d.y -= head_h;
        };
        // Small tables stay on one page; long ones break with the header repeated.
        self.ensure(head_h + row_h * t.rows.len().min(8) as f32 + 4.0);
        header(self);
        for row in t.doc_rows() {
            if self.y - row_h < BOTTOM {
                self.new_page();
                header(self);
            }
            let mut x = LEFT;
            for (c, w) in cols.iter().zip(&widths) {
                let (s, color) = cell(&row[c.index], SIZE, w - 8.0);
                match c.column.numeric() {
                    false => self.text(x + 4.0, self.y - 11.5, SIZE, false, color, &s),
                    true => self.text_right(x + w - 4.0, self.y - 11.5, SIZE, false, color, &s),
                }
                if let Some(b) = c.beneath.filter(|b| !row[*b].is_empty()) {
                    let (s, _) = cell(&row[b], SMALL, w - 8.0);
                    self.text(x + 4.0, self.y - 21.0, SMALL, false, MUTED, &s);
                }
                x += w;
            }
            self.line(vec![(LEFT, self.y - row_h), (RIGHT, self.y - row_h)], 0.4, RULE);
            self.y -= row_h;
        }
        self.y -= 12.0;
        if let Some(n) = t.cut_note() {
            self.para(&n, 9.0, MUTED);
        }
    }

    fn chart(&mut self, c: &Chart) {
        if c.plot.is_empty() {
            return self.empty(c.empty);
        }
        match &c.plot {
            Plot::Line { points, .. } => self.line_chart(points),
            Plot::Bars(b) => self.bars(b),
        }
    }

    /// A share over time: a line on a 0–100% grid.
    fn line_chart(&mut self, points: &[LinePoint]) {
        let (first, last) = (&points[0], &points[points.len() - 1]);
        let (h, left) = (150.0, LEFT + 34.0);
        self.ensure(h + 30.0);
        let (bottom, top) = (self.y - h, self.y - 8.0);
        let pw = RIGHT - left - 10.0;
        let x = |t: i64| {
            left + if last.at > first.at {
                (t - first.at) as f32 / (last.at - first.at) as f32 * pw
            } else {
                pw
            }
        };
        let y = |p: f64| bottom + (p as f32) / 100.0 * (top - bottom);
        for g in [0.0, 25.0, 50.0, 75.0, 100.0] {
            self.line(vec![(left, y(g)), (left + pw, y(g))], 0.5, RULE);
            self.text_right(left - 5.0, y(g) - 3.0, 8.0, false, MUTED, &format!("{g}%"));
        }
        self.line(
            points
                .iter()
                .filter(|p| p.counted)
                .map(|p| (x(p.at), y(p.pct)))
                .collect(),
            2.0,
            ACCENT,
        );
        let (lx, ly) = (x(last.at), y(last.pct));
        self.rect(lx - 2.5, ly - 2.5, 5.0, 5.0, ACCENT);
        self.text_right(lx - 6.0, (ly + 6.0).min(top - 2.0), 9.0, true, INK, &fmt_pct(last.pct));
        let mid = &points[points.len() / 2];
        self.text(left, bottom - 12.0, 8.0, false, MUTED, &fmt_time(first.at, true));
        let m = fmt_time(mid.at, true);
        self.text(
            x(mid.at) - width(&m, 8.0, false) / 2.0,
            bottom - 12.0,
            8.0,
            false,
            MUTED,
            &m,
        );
        self.text_right(left + pw, bottom - 12.0, 8.0, false, MUTED, &fmt_time(last.at, true));
        self.y = bottom - 26.0;
    }

    /// Horizontal bars scaled to the largest value.
    fn bars(&mut self, bars: &[Bar]) {
        const ROW: f32 = 18.0;
        let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1) as f32;
        let (label_w, value_w) = (150.0, 90.0);
        let bw = CONTENT_W - label_w - value_w;
        for b in bars {
            self.ensure(ROW);
            let y = self.y - ROW;
            self.text_right(
                LEFT + label_w - 8.0,
                y + 5.0,
                9.0,
                false,
                INK,
                &fit(&b.label, 9.0, false, label_w - 10.0),
            );
            self.rect(LEFT + label_w, y + 2.0, bw, 12.0, SHADE);
            self.rect(LEFT + label_w, y + 2.0, b.value as f32 / max * bw, 12.0, ACCENT);
            self.text(LEFT + label_w + bw + 8.0, y + 5.0, 9.0, false, INK, &b.text);
            self.y -= ROW;
        }
        self.y -= 10.0;
    }

    fn block(&mut self, b: &Block) {
        match b {
            Block::Heading(s) => self.subheading(s),
            Block::Note(s) => self.para(s, 9.0, MUTED),
            Block::Para(spans) => self.rich(spans, 9.5),
            Block::Figures(f) => self.cards(f),
            Block::Table(t) if t.in_documents() => self.table(t),
            Block::Table(_) => {}
            Block::Chart(c) => self.chart(c),
        }
    }

    /// Key figures as cards, two to a row.
    fn cards(&mut self, figures: &[Figure]) {
        let (cw, ch, gap) = ((CONTENT_W - 12.0) / 2.0, 64.0, 12.0);
        for pair in figures.chunks(2) {
            self.ensure(ch + gap);
            let y = self.y - ch;
            for (i, f) in pair.iter().enumerate() {
                let x = LEFT + i as f32 * (cw + gap);
                self.rect(x, y, cw, ch, SHADE);
                self.rect(x, y, 3.0, ch, ACCENT);
                self.text(
                    x + 12.0,
                    y + ch - 16.0,
                    9.0,
                    false,
                    MUTED,
                    &fit(f.label, 9.0, false, cw - 20.0),
                );
                self.text(x + 12.0, y + ch - 40.0, 20.0, true, INK, &f.value);
                self.text(
                    x + 12.0,
                    y + 10.0,
                    8.5,
                    false,
                    MUTED,
                    &fit(&f.detail, 8.5, false, cw - 20.0),
                );
            }
            self.y -= ch + gap;
        }
        self.y -= 6.0;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Plain,
    Strong,
    Hash,
    Verdict(bool),
}

impl Style {
    fn bold(self) -> bool {
        matches!(self, Style::Strong | Style::Verdict(_))
    }
    fn size(self, size: f32) -> f32 {
        if self == Style::Hash {
            size - 1.0
        } else {
            size
        }
    }
    fn color(self) -> Rgb {
        match self {
            Style::Verdict(true) => GOOD,
            Style::Verdict(false) => BAD,
            _ => INK,
        }
    }
}

/// A cell's text in `max` points, and its colour.
fn cell(c: &Cell, size: f32, max: f32) -> (String, Rgb) {
    let s = match c {
        Cell::Text(s) | Cell::Hash(s) => s.clone(),
        Cell::Label { shown, .. } => shown.clone(),
        Cell::List(l) => l.join(", "),
        Cell::Number(n) => n.to_string(),
        Cell::Percent(p) => fmt_pct(*p),
        // The date alone when the time does not fit.
        Cell::Time(Some(t)) if width(&fmt_time(*t, false), size, false) > max => fmt_time(*t, true),
        Cell::Time(t) => fmt_opt(*t),
        Cell::Flag { shown, .. } => (*shown).into(),
    };
    let color = match c {
        Cell::Flag { good: true, .. } => GOOD,
        Cell::Flag { good: false, .. } => BAD,
        _ => INK,
    };
    (fit(&s, size, false, max), color)
}

/// The title page: the report's name, period, the summary section's
/// figures and findings, and the contents.
fn title_page(d: &mut Doc, doc: &Document) {
    d.rect(LEFT, 748.0, 6.0, 50.0, ACCENT);
    d.text(LEFT + 16.0, 772.0, 26.0, true, INK, doc.title);
    d.text(LEFT + 16.0, 752.0, 11.0, false, MUTED, doc.subtitle);
    d.text(LEFT, 716.0, 10.0, true, INK, "Period");
    d.text(
        LEFT + 80.0,
        716.0,
        10.0,
        false,
        INK,
        &format!(
            "{} to {}",
            fmt_time(doc.period.from, false),
            fmt_time(doc.period.to, false)
        ),
    );
    d.text(LEFT, 700.0, 10.0, true, INK, "Generated");
    d.text(LEFT + 80.0, 700.0, 10.0, false, INK, &fmt_time(doc.generated_at, false));
    d.y = 670.0;
    if let Some(summary) = doc.sections.first() {
        for b in &summary.blocks {
            d.block(b);
        }
    }
    d.y -= 22.0;
    d.text(LEFT, d.y, 11.0, true, INK, "Contents");
    d.y -= 6.0;
    for (i, s) in doc.sections.iter().skip(1).enumerate() {
        d.y -= 14.0;
        d.text(LEFT + 10.0, d.y, 9.5, false, INK, &format!("{}. {}", i + 1, s.title));
    }
    d.y -= 20.0;
    d.para(doc.scope_note, 8.5, MUTED);
}

/// The other sections, numbered as in the contents.
fn sections(d: &mut Doc, doc: &Document) {
    d.new_page();
    for (i, s) in doc.sections.iter().enumerate().skip(1) {
        d.heading(&format!("{i}. {}", s.title));
        for b in &s.blocks {
            d.block(b);
        }
    }
}

fn page_frame(d: &mut Vec<Op>, r: &Document, n: usize, total: usize) {
    let period = format!(
        "Period {} to {}",
        fmt_time(r.period.from, true),
        fmt_time(r.period.to, true)
    );
    let mut ops = vec![
        Op::Text {
            x: LEFT,
            y: 815.0,
            size: 8.0,
            bold: true,
            color: MUTED,
            s: "Latchkey evidence report".into(),
        },
        Op::Text {
            x: RIGHT - width(&period, 8.0, false),
            y: 815.0,
            size: 8.0,
            bold: false,
            color: MUTED,
            s: period,
        },
        Op::Line {
            pts: vec![(LEFT, 808.0), (RIGHT, 808.0)],
            w: 0.5,
            color: RULE,
        },
        Op::Line {
            pts: vec![(LEFT, 56.0), (RIGHT, 56.0)],
            w: 0.5,
            color: RULE,
        },
    ];
    // Two runs: text with a non-ASCII dash is written as a hex string, and
    // the page numbers should stay searchable.
    let lead = "Latchkey evidence report — ";
    ops.push(Op::Text {
        x: LEFT,
        y: 44.0,
        size: 8.0,
        bold: false,
        color: MUTED,
        s: lead.into(),
    });
    ops.push(Op::Text {
        x: LEFT + width(lead, 8.0, false),
        y: 44.0,
        size: 8.0,
        bold: false,
        color: MUTED,
        s: format!("page {n} of {total}"),
    });
    let generated = format!("Generated {}", fmt_time(r.generated_at, false));
    ops.push(Op::Text {
        x: RIGHT - width(&generated, 8.0, false),
        y: 44.0,
        size: 8.0,
        bold: false,
        color: MUTED,
        s: generated,
    });
    ops.push(Op::Text {
        x: LEFT,
        y: 32.0,
        size: 7.0,
        bold: false,
        color: MUTED,
        s: format!("Audit head {}", r.audit_head_hash),
    });
    d.extend(ops);
}

pub(super) fn render(r: &Document) -> Vec<u8> {
    let mut d = Doc::new();
    title_page(&mut d, r);
    sections(&mut d, r);
    let total = d.pages.len();
    for (i, page) in d.pages.iter_mut().enumerate() {
        page_frame(page, r, i + 1, total);
    }

    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let info = Ref::new(5);
    let first_page = 10;
    let page_ids: Vec<Ref> = (0..total).map(|i| Ref::new(first_page + 2 * i as i32)).collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids(page_ids.iter().copied()).count(total as i32);
    pdf.type1_font(regular)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold)
        .base_font(Name(b"Helvetica-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.document_info(info)
        .title(TextStr("Latchkey MFA evidence report"))
        .producer(TextStr("Latchkey"));
    for (i, ops) in d.pages.iter().enumerate() {
        let id = page_ids[i];
        let content_id = Ref::new(id.get() + 1);
        let mut page = pdf.page(id);
        page.media_box(Rect::new(0.0, 0.0, W, H))
            .parent(tree)
            .contents(content_id);
        let mut res = page.resources();
        let mut fonts = res.fonts();
        fonts.pair(Name(b"F1"), regular);
        fonts.pair(Name(b"F2"), bold);
        fonts.finish();
        res.finish();
        page.finish();

        let mut c = Content::new();
        for op in ops {
            match op {
                Op::Rect { x, y, w, h, color } => {
                    c.set_fill_rgb(color.0, color.1, color.2);
                    c.rect(*x, *y, *w, *h);
                    c.fill_nonzero();
                }
                Op::Line { pts, w, color } => {
                    if let Some((first, rest)) = pts.split_first() {
                        c.set_stroke_rgb(color.0, color.1, color.2);
                        c.set_line_width(*w);
                        c.move_to(first.0, first.1);
                        for p in rest {
                            c.line_to(p.0, p.1);
                        }
                        c.stroke();
                    }
                }
                Op::Text {
                    x,
                    y,
                    size,
                    bold,
                    color,
                    s,
                } => {
                    c.set_fill_rgb(color.0, color.1, color.2);
                    c.begin_text();
                    c.set_font(Name(if *bold { b"F2" } else { b"F1" }), *size);
                    c.next_line(*x, *y);
                    c.show(Str(&win_ansi(s)));
                    c.end_text();
                }
            }
        }
        pdf.stream(content_id, &c.finish());
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_measured_with_helvetica_metrics() {
        // "Hi" = H (722) + i (222) at 10 pt.
        assert!((width("Hi", 10.0, false) - 9.44).abs() < 1e-3);
        assert!(width("Hi", 10.0, true) > width("Hi", 10.0, false));
        let cut = fit("a rather long reason that will not fit", 9.0, false, 60.0);
        assert!(cut.ends_with("...") && width(&cut, 9.0, false) <= 60.0, "{cut}");
        assert_eq!(wrap("one two three", 10.0, false, 40.0), vec!["one two", "three"]);
        assert_eq!(win_ansi("a—b€"), vec![b'a', 0x97, b'b', b'?']);
    }
}
