//! HTML: a self-contained, print-friendly document (inline stylesheet, SVG
//! charts, no script) rendered from the [model](super::model). The admin
//! console shows the same [`body`] inside its own frame with [`CSS`] served
//! as a file, which its Content-Security-Policy (`style-src 'self'`) allows;
//! the charts use SVG presentation attributes, not style attributes, for the
//! same reason.
//!
//! Written by hand rather than with a template engine (this crate knows no
//! web framework): every string that reaches the output goes through
//! [`escape`], the only way text is added.

use std::fmt::Write;

use super::model::{Bar, Block, Cell, Chart, Document, Figure, LinePoint, Plot, Span, Table, WhenEmpty};
use super::{fmt_opt, fmt_pct, fmt_time};

pub const CSS: &str = r#"
.evidence { font-family: "Helvetica Neue", Helvetica, Arial, sans-serif; color: #1a1f2b; max-width: 60rem; margin: 0 auto; line-height: 1.45; }
.evidence h1 { font-size: 1.7rem; margin: 0 0 .2rem; }
.evidence h2 { font-size: 1.2rem; margin: 2rem 0 .5rem; padding-bottom: .2rem; border-bottom: 2px solid #1f4e8c; break-after: avoid; page-break-after: avoid; }
.evidence h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; break-after: avoid; }
.evidence .meta { color: #4a5468; margin: 0 0 1rem; }
.evidence .note { color: #4a5468; font-size: .9rem; }
.evidence .figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(13rem, 1fr)); gap: .6rem; margin: 1rem 0; padding: 0; }
.evidence .figure { border: 1px solid #c9d2e0; border-radius: 4px; padding: .6rem .8rem; break-inside: avoid; }
.evidence .figure dt { font-size: .8rem; color: #4a5468; }
.evidence .figure dd { margin: .1rem 0 0; font-size: 1.5rem; font-weight: 700; }
.evidence .figure dd small { display: block; font-size: .8rem; font-weight: 400; color: #4a5468; }
.evidence table { border-collapse: collapse; width: 100%; margin: .4rem 0 1rem; font-size: .88rem; }
.evidence thead { display: table-header-group; }
.evidence tr { break-inside: avoid; page-break-inside: avoid; }
.evidence th, .evidence td { border: 1px solid #c9d2e0; padding: .3rem .5rem; text-align: left; vertical-align: top; }
.evidence th { background: #eef2f8; }
.evidence td.num, .evidence th.num { text-align: right; font-variant-numeric: tabular-nums; }
.evidence .hash { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .8rem; word-break: break-all; }
.evidence .ok { color: #1c6b36; font-weight: 700; }
.evidence .bad { color: #a3222b; font-weight: 700; }
.evidence .chart { margin: .5rem 0 1rem; break-inside: avoid; }
.evidence .chart svg { max-width: 100%; height: auto; }
.evidence .empty { color: #4a5468; font-style: italic; }
@media print {
  @page { size: A4; margin: 16mm 14mm; }
  body { margin: 0; }
  .evidence { max-width: none; font-size: 10pt; }
  .evidence section { break-inside: auto; }
  .no-print { display: none; }
}
"#;

/// `s` made safe as HTML text and as a double- or single-quoted attribute
/// value: the five characters that could end either are replaced by entities.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out.into()
}

/// Markup being written: `tag` for fixed markup, `text` for anything else.
struct Html(String);

impl Html {
    fn tag(&mut self, markup: &str) -> &mut Self {
        self.0.push_str(markup);
        self
    }
    fn text(&mut self, s: &str) -> &mut Self {
        self.0.push_str(&escape(s));
        self
    }
    /// `<name class="class">text</name>`
    fn el(&mut self, name: &str, class: &str, s: &str) -> &mut Self {
        if class.is_empty() {
            let _ = write!(self.0, "<{name}>");
        } else {
            let _ = write!(self.0, "<{name} class=\"{class}\">");
        }
        self.text(s);
        let _ = write!(self.0, "</{name}>");
        self
    }
}

/// The report as a standalone HTML file.
pub(super) fn document(d: &Document) -> String {
    let mut h = Html(String::with_capacity(16 * 1024));
    h.tag("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">")
        .tag("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>")
        .text(&format!(
            "Latchkey evidence report {} to {}",
            fmt_time(d.period.from, true),
            fmt_time(d.period.to, true)
        ))
        .tag("</title><style>")
        .tag(CSS)
        .tag("</style></head><body>");
    write_body(&mut h, d);
    h.tag("</body></html>");
    h.0
}

/// The report itself (no page frame), as markup to place in a page.
pub(super) fn body(d: &Document) -> String {
    let mut h = Html(String::with_capacity(16 * 1024));
    write_body(&mut h, d);
    h.0
}

fn write_body(h: &mut Html, d: &Document) {
    h.tag("<article class=\"evidence\"><header>")
        .el("h1", "", d.title)
        .tag("<p class=\"meta\">Period ")
        .el("strong", "", &fmt_time(d.period.from, false))
        .tag(" to ")
        .el("strong", "", &fmt_time(d.period.to, false))
        .text(&format!(" · generated {} by Latchkey", fmt_time(d.generated_at, false)))
        .tag("</p>")
        .el("p", "note", d.scope_note)
        .tag("</header>");
    for s in &d.sections {
        let _ = write!(h.0, "<section id=\"{}\">", escape(s.id));
        h.el("h2", "", s.title);
        for b in &s.blocks {
            block(h, b);
        }
        h.tag("</section>");
    }
    h.tag("</article>");
}

fn block(h: &mut Html, b: &Block) {
    match b {
        Block::Heading(t) => {
            h.el("h3", "", t);
        }
        Block::Note(t) => {
            h.el("p", "note", t);
        }
        Block::Para(spans) => {
            h.tag("<p>");
            for s in spans {
                match s {
                    Span::Text(t) => h.text(t),
                    Span::Strong(t) => h.el("strong", "", t),
                    Span::Hash(t) => h.el("span", "hash", t),
                    Span::Verdict { text, good } => h.el("span", if *good { "ok" } else { "bad" }, text),
                };
            }
            h.tag("</p>");
        }
        Block::Figures(f) => figures(h, f),
        Block::Table(t) if t.in_documents() => table(h, t),
        Block::Table(_) => {}
        Block::Chart(c) => chart(h, c),
    }
}

fn figures(h: &mut Html, figures: &[Figure]) {
    h.tag("<dl class=\"figures\">");
    for f in figures {
        h.tag("<div class=\"figure\">")
            .el("dt", "", f.label)
            .tag("<dd>")
            .text(&f.value)
            .el("small", "", &f.detail)
            .tag("</dd></div>");
    }
    h.tag("</dl>");
}

fn cell(h: &mut Html, c: &Cell) {
    match c {
        Cell::Text(s) => h.text(s),
        Cell::Label { shown, .. } => h.text(shown),
        Cell::List(l) => h.text(&l.join(", ")),
        Cell::Number(n) => h.text(&n.to_string()),
        Cell::Percent(p) => h.text(&fmt_pct(*p)),
        Cell::Time(t) => h.text(&fmt_opt(*t)),
        Cell::Hash(s) => h.el("span", "hash", s),
        Cell::Flag { shown, good, .. } => h.el("span", if *good { "ok" } else { "bad" }, shown),
    };
}

fn table(h: &mut Html, t: &Table) {
    if t.rows.is_empty() {
        match t.when_empty {
            WhenEmpty::Omit => return,
            WhenEmpty::Say(s) => {
                h.el("p", "empty", s);
                return;
            }
            WhenEmpty::Header => {}
        }
    }
    let cols = t.doc_columns();
    let num = |numeric: bool| if numeric { " class=\"num\"" } else { "" };
    h.tag("<table><thead><tr>");
    for c in &cols {
        let _ = write!(h.0, "<th{}>", num(c.column.numeric()));
        h.text(c.column.title).tag("</th>");
    }
    h.tag("</tr></thead><tbody>");
    for r in t.doc_rows() {
        h.tag("<tr>");
        for c in &cols {
            let _ = write!(h.0, "<td{}>", num(c.column.numeric()));
            cell(h, &r[c.index]);
            if let Some(b) = c.beneath.filter(|b| !r[*b].is_empty()) {
                h.tag("<br><small>");
                cell(h, &r[b]);
                h.tag("</small>");
            }
            h.tag("</td>");
        }
        h.tag("</tr>");
    }
    h.tag("</tbody></table>");
    if let Some(n) = t.cut_note() {
        h.el("p", "note", &n);
    }
}

fn chart(h: &mut Html, c: &Chart) {
    if c.plot.is_empty() {
        h.el("p", "empty", c.empty);
        return;
    }
    h.tag("<div class=\"chart\">");
    match &c.plot {
        Plot::Line { description, points } => line_chart(h, description, points),
        Plot::Bars(bars) => bar_chart(h, bars),
    }
    h.tag("</div>");
}

/// A share over time as a line on a 0–100% grid.
fn line_chart(h: &mut Html, description: &str, points: &[LinePoint]) {
    let (w, ht, left, top, bottom) = (640.0, 220.0, 44.0, 12.0, 30.0);
    let pw = w - left - 12.0;
    let ph = ht - top - bottom;
    let (first, last) = (&points[0], &points[points.len() - 1]);
    let (t0, t1) = (first.at, last.at);
    let x = |t: i64| {
        left + if t1 > t0 {
            (t - t0) as f64 / (t1 - t0) as f64 * pw
        } else {
            pw
        }
    };
    let y = |p: f64| top + ph - p / 100.0 * ph;
    let line: Vec<String> = points
        .iter()
        .filter(|p| p.counted)
        .map(|p| format!("{:.1},{:.1}", x(p.at), y(p.pct)))
        .collect();
    let mid = &points[points.len() / 2];
    let _ = write!(
        h.0,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\" \
         role=\"img\" aria-labelledby=\"cov-title\"><title id=\"cov-title\">"
    );
    h.text(description).tag("</title>");
    for g in [0.0, 25.0, 50.0, 75.0, 100.0] {
        let _ = write!(
            h.0,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#d5dbe5\" stroke-width=\"1\"></line>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\" fill=\"#4a5468\">{g}%</text>",
            left + pw,
            y(g),
            y(g),
            left - 6.0,
            y(g) + 4.0
        );
    }
    let _ = write!(
        h.0,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f4e8c\" stroke-width=\"2.5\"></polyline>\
         <circle cx=\"{}\" cy=\"{}\" r=\"4\" fill=\"#1f4e8c\"></circle>",
        line.join(" "),
        x(last.at),
        y(last.pct)
    );
    // Above the point, or below it when the point is at the top edge.
    let label_y = if y(last.pct) - 8.0 < top + 10.0 {
        y(last.pct) + 16.0
    } else {
        y(last.pct) - 8.0
    };
    let _ = write!(
        h.0,
        "<text x=\"{}\" y=\"{label_y}\" text-anchor=\"end\" font-size=\"12\" font-weight=\"bold\" fill=\"#1a1f2b\">",
        x(last.at) - 6.0
    );
    h.text(&fmt_pct(last.pct)).tag("</text>");
    for (p, anchor) in [(first, "start"), (mid, "middle"), (last, "end")] {
        let _ = write!(
            h.0,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" font-size=\"11\" fill=\"#4a5468\">",
            x(p.at),
            ht - 10.0
        );
        h.text(&fmt_time(p.at, true)).tag("</text>");
    }
    h.tag("</svg>");
}

/// Horizontal bars, scaled to the largest value.
fn bar_chart(h: &mut Html, bars: &[Bar]) {
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1) as f64;
    let (w, row, label_w, value_w) = (640.0, 26.0, 200.0, 110.0);
    let ht = row * bars.len() as f64 + 6.0;
    let bw = w - label_w - value_w;
    let _ = write!(
        h.0,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\" role=\"img\">"
    );
    for (i, b) in bars.iter().enumerate() {
        let y = 3.0 + i as f64 * row;
        let _ = write!(
            h.0,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"12\" fill=\"#1a1f2b\">",
            label_w - 8.0,
            y + 16.0
        );
        h.text(&b.label).tag("</text>");
        let _ = write!(
            h.0,
            "<rect x=\"{label_w}\" y=\"{}\" width=\"{bw}\" height=\"16\" fill=\"#eef2f8\"></rect>\
             <rect x=\"{label_w}\" y=\"{}\" width=\"{:.1}\" height=\"16\" fill=\"#1f4e8c\"></rect>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#1a1f2b\">",
            y + 3.0,
            y + 3.0,
            b.value as f64 / max * bw,
            label_w + bw + 8.0,
            y + 16.0
        );
        h.text(&b.text).tag("</text>");
    }
    h.tag("</svg>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_core::evidence::{EvidenceInput, EvidenceReport, MethodRow, Period, UserRow};

    #[test]
    fn escape_covers_text_and_quoted_attributes() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(
            escape(r#"<a href="x" title='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn user_controlled_strings_come_out_escaped() {
        let evil = r#"<script>alert("x")</script>' onmouseover="alert(1)"#;
        let input = EvidenceInput {
            users: vec![UserRow {
                username: "mallory".into(),
                display_name: evil.into(),
                department: Some(format!("{evil} dept")),
                active: true,
                ..Default::default()
            }],
            methods: vec![MethodRow {
                id: "m1".into(),
                username: "mallory".into(),
                kind: "sms".into(),
                active: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let r = EvidenceReport::build(&input, Period::new(0, 86_400).unwrap(), 86_400);
        let html = document(&super::super::model::build(&r));
        assert!(html.contains("mallory"), "the user is listed");
        assert!(!html.contains("<script") && !html.contains("\"alert(") && !html.contains("' onmouseover"));
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39; onmouseover=&quot;alert(1)"));
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39; onmouseover=&quot;alert(1) dept"));
    }
}
