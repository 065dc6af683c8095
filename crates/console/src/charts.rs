//! Bar charts as SVG, built on the server (no script, no inline style: presentation
//! attributes only, so the console's CSP holds). Every label is escaped here; the numbers are
//! also shown as a table beside each chart for those who cannot see it.

/// Escapes text for SVG/XML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A vertical bar chart of `bars` (label, value), `title` read out by screen readers.
pub fn bar_chart(title: &str, bars: &[(String, f64)], unit: &str) -> String {
    const W: f64 = 640.0;
    const H: f64 = 220.0;
    const LEFT: f64 = 48.0;
    const BOTTOM: f64 = 40.0;
    const TOP: f64 = 12.0;
    let max = bars.iter().map(|b| b.1).fold(0.0f64, f64::max).max(1.0);
    let n = bars.len().max(1) as f64;
    let slot = (W - LEFT - 8.0) / n;
    let bar_w = (slot * 0.7).max(1.0);
    let plot_h = H - BOTTOM - TOP;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"{t}\" class=\"chart\"><title>{t}</title>",
        t = esc(title)
    );
    // Axis and the maximum, for scale.
    svg.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{y}\" stroke=\"#6e7781\"/>\
         <line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{W}\" y2=\"{y}\" stroke=\"#6e7781\"/>\
         <text x=\"{x}\" y=\"{ty}\" font-size=\"11\" text-anchor=\"end\" fill=\"#1b1f24\">{m}{u}</text>",
        y = H - BOTTOM,
        x = LEFT - 4.0,
        ty = TOP + 10.0,
        m = trim_number(max),
        u = esc(unit),
    ));
    // Label every bar when there is room, else about ten of them.
    let every = (bars.len() / 10).max(1);
    for (i, (label, v)) in bars.iter().enumerate() {
        let h = plot_h * v / max;
        let x = LEFT + 4.0 + slot * i as f64;
        let y = H - BOTTOM - h;
        svg.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\" fill=\"#0b57d0\">\
             <title>{l}: {v}{u}</title></rect>",
            l = esc(label),
            v = trim_number(*v),
            u = esc(unit),
        ));
        if i % every == 0 {
            svg.push_str(&format!(
                "<text x=\"{tx:.1}\" y=\"{ty:.1}\" font-size=\"10\" text-anchor=\"middle\" \
                 fill=\"#1b1f24\">{l}</text>",
                tx = x + bar_w / 2.0,
                ty = H - BOTTOM + 14.0,
                l = esc(label),
            ));
        }
    }
    svg.push_str("</svg>");
    svg
}

fn trim_number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_bars_scale_to_the_largest() {
        let svg = bar_chart(
            "per <target>",
            &[("a\"b<script>".into(), 2.0), ("web1".into(), 4.0)],
            " x",
        );
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("a&quot;b&lt;script&gt;"), "{svg}");
        assert!(svg.contains("<title>per &lt;target&gt;</title>"));
        // The largest bar spans the plot (168 = 220 - 40 - 12), the other half of it.
        assert!(svg.contains("height=\"168.0\""), "{svg}");
        assert!(svg.contains("height=\"84.0\""), "{svg}");
    }
}
