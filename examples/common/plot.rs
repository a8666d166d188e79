//! A line chart as a standalone SVG file, written by hand (a few polylines, axes with tick labels and a
//! legend), so the examples need no plotting crate.

use std::fmt::Write;

/// One line of the chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// The legend entry.
    pub label: String,
    /// Any SVG color (`"#1f77b4"`, `"teal"`).
    pub color: String,
    /// Line width in pixels (draw overlapping series wider first, so that each stays visible).
    pub width: f64,
    /// Dashed instead of solid.
    pub dashed: bool,
    /// A dot at every point (for sparse series, such as evaluations).
    pub markers: bool,
    /// (x, y) points in order of x; non-finite points are left out.
    pub points: Vec<(f64, f64)>,
}

/// A horizontal reference line across the chart (a baseline), labeled at its right end.
#[derive(Clone, Debug)]
pub struct Reference {
    /// The text next to the line.
    pub label: String,
    /// Its height.
    pub y: f64,
}

/// A chart: titles, lines and reference lines.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    /// Above the plot.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Along the y axis.
    pub y_label: String,
    /// The lines, drawn in order (later ones on top).
    pub series: Vec<Series>,
    /// Horizontal lines in gray.
    pub references: Vec<Reference>,
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 540.0;
/// Margins around the plot area: left, right, top, bottom (room for tick labels and titles).
const MARGIN: [f64; 4] = [70.0, 30.0, 50.0, 60.0];

impl Chart {
    /// The chart as an SVG document.
    pub fn to_svg(&self) -> String {
        let points = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter().copied())
                .filter(|(x, y)| x.is_finite() && y.is_finite())
        };
        let xs = Range::of(points().map(|p| p.0)).unwrap_or(Range { lo: 0.0, hi: 1.0 });
        let ys = Range::of(
            points()
                .map(|p| p.1)
                .chain(self.references.iter().map(|r| r.y)),
        )
        .unwrap_or(Range { lo: 0.0, hi: 1.0 });
        let x_ticks = ticks(xs, 8);
        let y_ticks = ticks(ys.padded(0.03), 6);
        let frame = Frame {
            x: Range {
                lo: x_ticks[0].min(xs.lo),
                hi: x_ticks[x_ticks.len() - 1].max(xs.hi),
            },
            y: Range {
                lo: y_ticks[0],
                hi: y_ticks[y_ticks.len() - 1],
            },
        };
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             font-family=\"sans-serif\" font-size=\"13\">\n"
        );
        let _ = writeln!(
            svg,
            r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
        );
        self.axes(&mut svg, &frame, &x_ticks, &y_ticks);
        let (left, right) = (MARGIN[0], WIDTH - MARGIN[1]);
        for r in &self.references {
            let y = frame.py(r.y);
            line(
                &mut svg,
                (left, y),
                (right, y),
                "#888",
                r#"stroke-dasharray="2 4""#,
            );
            let label = escape(&r.label);
            text(
                &mut svg,
                (right - 4.0, y - 5.0),
                "end",
                r##"fill="#555""##,
                &label,
            );
        }
        for s in &self.series {
            let pixels: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| (frame.px(x), frame.py(y)))
                .collect();
            let path: Vec<String> = pixels
                .iter()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{}" stroke-width="{}" {} points="{}"/>"#,
                escape(&s.color),
                s.width,
                s.dash(),
                path.join(" ")
            );
            for (x, y) in pixels.iter().filter(|_| s.markers) {
                let color = escape(&s.color);
                let r = s.width + 1.5;
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{color}"/>"#
                );
            }
        }
        self.legend(&mut svg);
        svg.push_str("</svg>\n");
        svg
    }

    /// Grid lines with tick labels, the frame, the title and the axis labels.
    fn axes(&self, svg: &mut String, frame: &Frame, x_ticks: &[f64], y_ticks: &[f64]) {
        let (left, right) = (MARGIN[0], WIDTH - MARGIN[1]);
        let (top, bottom) = (MARGIN[2], HEIGHT - MARGIN[3]);
        for &t in x_ticks {
            let x = frame.px(t);
            line(svg, (x, top), (x, bottom), "#eee", "");
            text(svg, (x, bottom + 18.0), "middle", "", &number(t));
        }
        for &t in y_ticks {
            let y = frame.py(t);
            line(svg, (left, y), (right, y), "#eee", "");
            text(svg, (left - 6.0, y + 4.0), "end", "", &number(t));
        }
        let _ = writeln!(
            svg,
            r#"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="black"/>"#,
            right - left,
            bottom - top
        );
        let center = (left + right) / 2.0;
        let title = escape(&self.title);
        text(svg, (center, 28.0), "middle", r#"font-size="16""#, &title);
        let x_label = escape(&self.x_label);
        text(svg, (center, HEIGHT - 15.0), "middle", "", &x_label);
        let middle = (top + bottom) / 2.0;
        let rotate = format!(r#"transform="rotate(-90 20 {middle:.1})""#);
        text(
            svg,
            (20.0, middle),
            "middle",
            &rotate,
            &escape(&self.y_label),
        );
    }

    /// A box of swatches and labels in the top right corner, where loss curves have come down.
    fn legend(&self, svg: &mut String) {
        let row = 20.0;
        let longest = self.series.iter().map(|s| s.label.len()).max().unwrap_or(0);
        // About 7.5 pixels per character at font size 13, after a 30-pixel swatch.
        let width = 56.0 + 7.5 * longest as f64;
        let (x, y) = (WIDTH - MARGIN[1] - width - 10.0, MARGIN[2] + 10.0);
        let _ = writeln!(
            svg,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{:.1}" fill="white" stroke="#999"/>"##,
            row * self.series.len() as f64 + 8.0
        );
        for (i, s) in self.series.iter().enumerate() {
            let line_y = y + 14.0 + row * i as f64;
            let style = format!(r#"stroke-width="2" {}"#, s.dash());
            line(svg, (x + 8.0, line_y), (x + 38.0, line_y), &s.color, &style);
            text(
                svg,
                (x + 44.0, line_y + 4.5),
                "start",
                "",
                &escape(&s.label),
            );
        }
    }
}

impl Series {
    /// The stroke attribute of a dashed line, or nothing.
    fn dash(&self) -> &'static str {
        if self.dashed {
            r#"stroke-dasharray="7 4""#
        } else {
            ""
        }
    }
}

/// A straight line from `a` to `b` (pixels) with extra attributes.
fn line(svg: &mut String, a: (f64, f64), b: (f64, f64), color: &str, attributes: &str) {
    let _ = writeln!(
        svg,
        r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" {attributes}/>"#,
        a.0,
        a.1,
        b.0,
        b.1,
        escape(color)
    );
}

/// Escaped `content` at `at` (pixels), anchored `start`, `middle` or `end`, with extra attributes.
fn text(svg: &mut String, at: (f64, f64), anchor: &str, attributes: &str, content: &str) {
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}" {attributes}>{content}</text>"#,
        at.0, at.1
    );
}

/// A closed interval.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Range {
    lo: f64,
    hi: f64,
}

impl Range {
    /// The smallest interval holding all `values`; widened around a single value.
    fn of(values: impl Iterator<Item = f64>) -> Option<Range> {
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if lo > hi {
            return None;
        }
        let pad = if lo == hi {
            lo.abs().max(1.0) * 0.5
        } else {
            0.0
        };
        Some(Range {
            lo: lo - pad,
            hi: hi + pad,
        })
    }

    fn padded(self, fraction: f64) -> Range {
        let pad = (self.hi - self.lo) * fraction;
        Range {
            lo: self.lo - pad,
            hi: self.hi + pad,
        }
    }
}

/// The data ranges shown and how they map to pixels.
struct Frame {
    x: Range,
    y: Range,
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        let span = WIDTH - MARGIN[0] - MARGIN[1];
        MARGIN[0] + (x - self.x.lo) / (self.x.hi - self.x.lo) * span
    }

    fn py(&self, y: f64) -> f64 {
        let span = HEIGHT - MARGIN[2] - MARGIN[3];
        HEIGHT - MARGIN[3] - (y - self.y.lo) / (self.y.hi - self.y.lo) * span
    }
}

/// About `count` round tick values (steps of 1, 2 or 5 times a power of ten) covering `range`.
fn ticks(range: Range, count: usize) -> Vec<f64> {
    let raw = (range.hi - range.lo) / count as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (range.lo / step).floor() as i64;
    let last = (range.hi / step).ceil() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A tick label: no trailing zeros, no `-0`.
fn number(v: f64) -> String {
    let v = if v.abs() < 1e-9 { 0.0 } else { v };
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Text safe inside SVG elements and attributes.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
