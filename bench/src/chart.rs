//! The summary's ratios as a chart: a hand-written SVG (no plotting dependency for one
//! picture), one horizontal bar per scenario on a log scale, from the line at 1.0 (as
//! good as the best peer) to tether's ratio, each labelled with its value.
//!
//! A log scale because ratios are symmetric there: twice as good and half as good are
//! bars of the same length on either side of 1.0.

use std::fmt::Write as _;

/// One bar: a scenario and tether's ratio to the best peer in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// The scenario, as in the tables.
    pub label: String,
    /// tether ÷ best peer (positive and finite; other values are left out).
    pub value: f64,
    /// Whether above 1.0 is better for tether (throughput) or below (memory).
    pub higher_is_better: bool,
}

/// Where the plot area starts, in pixels from the left (the labels are to its left).
const PLOT_X: f64 = 480.0;
/// The plot area's width.
const PLOT_WIDTH: f64 = 440.0;
/// The whole picture's width.
const WIDTH: f64 = 1000.0;
/// Height of one row, and of one bar in it.
const ROW: f64 = 26.0;
const BAR: f64 = 16.0;
/// Above the first row: the title.
const TOP: f64 = 44.0;
/// Below the last row: the axis' labels and the legend.
const BOTTOM: f64 = 56.0;
/// Colours: better for tether, worse, the 1.0 line, the grid.
const BETTER: &str = "#2e7d32";
const WORSE: &str = "#c62828";
const ONE: &str = "#222222";
const GRID: &str = "#dddddd";

/// A log scale from `lo` to `hi` onto the plot area.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    /// The smallest value shown (a 1, 2, 5 × 10ⁿ).
    pub lo: f64,
    /// The largest value shown (a 1, 2, 5 × 10ⁿ).
    pub hi: f64,
}

impl Scale {
    /// The scale that shows every value and 1.0, with some room at both ends for the
    /// labels, bounded by round numbers (1, 2, 5 × 10ⁿ).
    pub fn for_values(values: impl IntoIterator<Item = f64>) -> Scale {
        let (mut min, mut max) = (1.0f64, 1.0f64);
        for v in values.into_iter().filter(|v| v.is_finite() && *v > 0.0) {
            min = min.min(v);
            max = max.max(v);
        }
        // Room for a value's label beyond the end of its bar.
        Scale {
            lo: round_down(min / 1.6),
            hi: round_up(max * 1.6),
        }
    }

    /// The horizontal position of `value` (clamped to the plot area).
    pub fn x(&self, value: f64) -> f64 {
        let v = value.clamp(self.lo, self.hi);
        PLOT_X + (v / self.lo).ln() / (self.hi / self.lo).ln() * PLOT_WIDTH
    }

    /// The round values between `lo` and `hi`, for the grid.
    pub fn ticks(&self) -> Vec<f64> {
        let mut ticks = Vec::new();
        let mut decade = 10f64.powi(self.lo.log10().floor() as i32);
        while decade <= self.hi * 1.0001 {
            for m in [1.0, 2.0, 5.0] {
                let t = decade * m;
                if t >= self.lo * 0.9999 && t <= self.hi * 1.0001 {
                    ticks.push(t);
                }
            }
            decade *= 10.0;
        }
        ticks
    }
}

/// The largest 1, 2, 5 × 10ⁿ not above `x`.
fn round_down(x: f64) -> f64 {
    let decade = 10f64.powi(x.log10().floor() as i32);
    [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|v| *v <= x * 1.0001)
        .unwrap_or(decade)
}

/// The smallest 1, 2, 5 × 10ⁿ not below `x`.
fn round_up(x: f64) -> f64 {
    let decade = 10f64.powi(x.log10().floor() as i32);
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|v| *v >= x * 0.9999)
        .unwrap_or(10.0 * decade)
}

/// `text` with the five characters XML gives meaning to escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A tick's or a value's text: enough digits to tell values apart, no more.
fn number(v: f64) -> String {
    let s = if v >= 100.0 {
        return format!("{v:.0}");
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The chart: `title` above, one bar per element of `bars` whose value is positive and
/// finite, in the given order.
pub fn svg(title: &str, bars: &[Bar]) -> String {
    let bars: Vec<&Bar> = bars
        .iter()
        .filter(|b| b.value.is_finite() && b.value > 0.0)
        .collect();
    let scale = Scale::for_values(bars.iter().map(|b| b.value));
    let rows = bars.len().max(1) as f64;
    let height = TOP + rows * ROW + BOTTOM;
    let plot_bottom = TOP + rows * ROW;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, "<title>{}</title>", escape(title));
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    // The grid and its labels, then the line at 1.0 over it.
    for t in scale.ticks() {
        let x = scale.x(t);
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{plot_bottom}" stroke="{GRID}"/>"#
        );
        let _ = writeln!(
            s,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#555555">{}×</text>"##,
            plot_bottom + 16.0,
            number(t)
        );
    }
    if bars.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="10" y="{:.1}">no ratio in this run (no peer ran, or none took part in a tether row)</text>"#,
            TOP + ROW * 0.6
        );
    }
    let one = scale.x(1.0);
    for (i, bar) in bars.iter().enumerate() {
        let y = TOP + i as f64 * ROW + (ROW - BAR) / 2.0;
        let text_y = y + BAR / 2.0 + 4.0;
        let end = scale.x(bar.value);
        let (left, width) = if end >= one {
            (one, end - one)
        } else {
            (end, one - end)
        };
        let better = (bar.value >= 1.0) == bar.higher_is_better;
        let colour = if better { BETTER } else { WORSE };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{text_y:.1}" text-anchor="end">{}</text>"#,
            PLOT_X - 10.0,
            escape(&bar.label)
        );
        let _ = writeln!(
            s,
            r#"<rect class="bar" x="{left:.1}" y="{y:.1}" width="{width:.1}" height="{BAR}" fill="{colour}"/>"#
        );
        // The value just beyond the bar's end, on the side it grows to.
        let (x, anchor) = if end >= one {
            (end + 4.0, "start")
        } else {
            (end - 4.0, "end")
        };
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{text_y:.1}" text-anchor="{anchor}">{}×</text>"#,
            escape(&number(bar.value))
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{one:.1}" y1="{:.1}" x2="{one:.1}" y2="{plot_bottom}" stroke="{ONE}" stroke-width="1.5"/>"#,
        TOP - 4.0
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="{:.1}" fill="#555555">tether (tokio) ÷ best peer, log scale. <tspan fill="{BETTER}">Green</tspan>: better for tether (more messages per CPU-second, or less memory); <tspan fill="{WORSE}">red</tspan>: worse.</text>"##,
        plot_bottom + 40.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small well-formedness check: tags balanced and properly nested under one
    /// root, attribute values quoted, no `<` or bare `&` in text or attributes.
    fn check_well_formed(xml: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut roots = 0;
        let mut rest = xml;
        while !rest.is_empty() {
            let Some(open) = rest.find('<') else {
                check_text(rest)?;
                break;
            };
            check_text(&rest[..open])?;
            rest = &rest[open..];
            let close = rest.find('>').ok_or("unclosed tag")?;
            let tag = &rest[1..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack.pop().ok_or(format!("</{name}> without an opening tag"))?;
                if top != name.trim() {
                    return Err(format!("<{top}> closed by </{name}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name: String = body.chars().take_while(|c| !c.is_whitespace()).collect();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!("bad tag name in <{tag}>"));
            }
            // Attributes: name="value" pairs, nothing else.
            let mut attrs = body[name.len()..].trim();
            while !attrs.is_empty() {
                let eq = attrs
                    .find("=\"")
                    .ok_or(format!("attribute without a quoted value in <{tag}>"))?;
                let value_end = attrs[eq + 2..]
                    .find('"')
                    .ok_or(format!("unterminated value in <{tag}>"))?;
                check_text(&attrs[eq + 2..eq + 2 + value_end])?;
                attrs = attrs[eq + 2 + value_end + 1..].trim_start();
            }
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name);
            }
        }
        match (stack.is_empty(), roots) {
            (true, 1) => Ok(()),
            (false, _) => Err(format!("unclosed: {stack:?}")),
            (_, n) => Err(format!("{n} root elements")),
        }
    }

    fn check_text(text: &str) -> Result<(), String> {
        if text.contains('<') {
            return Err(format!("'<' in text {text:?}"));
        }
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            if !["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                .iter()
                .any(|e| entity.starts_with(e))
            {
                return Err(format!("bare '&' in {text:?}"));
            }
        }
        Ok(())
    }

    fn bars() -> Vec<Bar> {
        vec![
            Bar {
                label: "raw echo, 100 conns × 20 B".into(),
                value: 2.0,
                higher_is_better: true,
            },
            Bar {
                label: "session echo".into(),
                value: 0.5,
                higher_is_better: true,
            },
            Bar {
                label: "idle sessions <KB> & \"more\"".into(),
                value: 0.25,
                higher_is_better: false,
            },
        ]
    }

    /// The `width` and `fill` of every bar, in order.
    fn bar_rects(svg: &str) -> Vec<(f64, f64, String)> {
        svg.lines()
            .filter(|l| l.starts_with(r#"<rect class="bar""#))
            .map(|l| {
                let attr = |name: &str| {
                    let start = l.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
                    l[start..start + l[start..].find('"').unwrap()].to_owned()
                };
                (
                    attr("x").parse().unwrap(),
                    attr("width").parse().unwrap(),
                    attr("fill"),
                )
            })
            .collect()
    }

    #[test]
    fn the_chart_is_well_formed() {
        check_well_formed(&svg("tether ÷ best peer", &bars())).unwrap();
        check_well_formed(&svg("nothing & no one", &[])).unwrap();
        // The checker itself catches what it should.
        assert!(check_well_formed("<svg><g></svg></g>").is_err());
        assert!(check_well_formed("<svg><text>a & b</text></svg>").is_err());
        assert!(check_well_formed("<svg><text>a < b</text></svg>").is_err());
        assert!(check_well_formed("<svg/><svg/>").is_err());
        assert!(check_well_formed(r#"<svg x="1"><g/></svg>"#).is_ok());
    }

    #[test]
    fn labels_are_escaped() {
        let chart = svg("a <title> & more", &bars());
        assert!(chart.contains("idle sessions &lt;KB&gt; &amp; &quot;more&quot;"));
        assert!(chart.contains("a &lt;title&gt; &amp; more"));
        assert!(!chart.contains("<KB>"));
        assert_eq!(
            escape(r#"<a href='x'>&</a>"#),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn bars_scale_on_a_log_axis_from_one() {
        let chart = svg("t", &bars());
        let rects = bar_rects(&chart);
        assert_eq!(rects.len(), 3);
        let scale = Scale::for_values([2.0, 0.5, 0.25]);
        let one = scale.x(1.0);
        // 2.0 grows right from 1.0, 0.5 left by the same length, 0.25 twice that.
        let (x2, w2, _) = &rects[0];
        let (x05, w05, _) = &rects[1];
        let (x025, w025, _) = &rects[2];
        assert!((x2 - one).abs() < 0.1, "{x2} vs {one}");
        assert!((w2 - w05).abs() < 0.2, "{w2} vs {w05}");
        assert!((x05 + w05 - one).abs() < 0.2);
        assert!((w025 - 2.0 * w05).abs() < 0.3, "{w025} vs {w05}");
        assert!((x025 - scale.x(0.25)).abs() < 0.1);
        // Colours: above 1 good for throughput, below 1 good for memory.
        assert_eq!(rects[0].2, BETTER);
        assert_eq!(rects[1].2, WORSE);
        assert_eq!(rects[2].2, BETTER);
        // Every value labelled.
        for label in ["2×", "0.5×", "0.25×"] {
            assert!(chart.contains(&format!(">{label}</text>")), "{label}");
        }
    }

    #[test]
    fn the_scale_holds_every_value_and_one_between_round_bounds() {
        let scale = Scale::for_values([0.8, 1.3]);
        assert!(scale.lo <= 0.8 / 1.6 && scale.hi >= 1.3 * 1.6, "{scale:?}");
        assert_eq!((scale.lo, scale.hi), (0.5, 5.0));
        assert!((scale.x(scale.lo) - PLOT_X).abs() < 1e-9);
        assert!((scale.x(scale.hi) - (PLOT_X + PLOT_WIDTH)).abs() < 1e-9);
        assert!(scale.x(0.9) < scale.x(1.0) && scale.x(1.0) < scale.x(1.1));
        // Out of range: clamped to the plot area.
        assert!((scale.x(1e-9) - PLOT_X).abs() < 1e-9);
        assert_eq!(scale.ticks(), vec![0.5, 1.0, 2.0, 5.0]);
        // Values far apart, and none at all.
        let wide = Scale::for_values([0.02, 40.0]);
        assert!(wide.lo <= 0.02 / 1.6 && wide.hi >= 64.0, "{wide:?}");
        let none = Scale::for_values([]);
        assert!(none.lo < 1.0 && none.hi > 1.0);
        assert_eq!((round_down(0.7), round_up(0.7)), (0.5, 1.0));
        assert_eq!((round_down(3.0), round_up(3.0)), (2.0, 5.0));
        assert_eq!((round_down(20.0), round_up(20.0)), (20.0, 20.0));
    }

    #[test]
    fn numbers_keep_three_significant_digits_at_most() {
        let cases = [
            (14.63, "14.6"),
            (10.0, "10"),
            (250.4, "250"),
            (1.0, "1"),
            (0.925, "0.93"),
            (0.5, "0.5"),
            (0.0125, "0.013"),
        ];
        for (v, text) in cases {
            assert_eq!(number(v), text, "{v}");
        }
    }
}
